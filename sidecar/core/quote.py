"""Client text in error messages, cut to a size that cannot hurt.

An error that echoes what a client sent is as big as what it sent: a 17 MB tensor
name came back through `repr()` as a 68 MB message, over the send limit, and the
call died with every request on it. So client text (names, dtypes, shapes, lists of
them) reaches a message only through these functions. Each shows a bounded prefix,
marks the cut with `…` outside the quotes (so it cannot be mistaken for the client's
own text) and states the full size:

    quote("a" * 17_000_000)         'aaaaaaaa'… (17,000,000 chars), with the first 200 a's
    quote_shape([1] * 300_000)      [1, 1, 1, 1, 1, 1, 1, 1, …] (300,000 dims)
    quote_names(["x1", ..., "x9"])  ['x1', 'x2', 'x3', 'x4', 'x5', …] (9 names)

Short text comes out exactly as `repr()` / `list()` would show it. Each function reads
only the first few characters, dims or names (and the length of the rest), so it is
cheap whatever it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

# Bytes (UTF-8, as the message travels) of one piece of client text shown, escapes
# included: a quote is at most this + 2 quote marks + the cut and the count (~27).
MAX_QUOTED_BYTES = 200
# Dims of a shape shown: an int64 is at most 20 characters, so 8 stay under 200.
MAX_SHOWN_DIMS = 8
# Names of a list shown, and bytes of each shown: a list stays under ~350 bytes.
MAX_SHOWN_NAMES = 5
MAX_LISTED_BYTES = 40

CUT = "…"


def quote(text: str, limit: int = MAX_QUOTED_BYTES) -> str:
    """`repr(text)` if that is at most `limit` + 2 bytes in UTF-8; else the repr of the
    longest prefix that fits, the cut marked and the full length (in characters) stated."""
    if len(text) <= limit:
        shown = repr(text)
        if len(shown.encode()) <= limit + 2:
            return shown
    kept = width = 0
    for c in text[:limit]:
        # What `c` costs inside a repr: `'` may be escaped; others as repr shows them
        # (\x00 is 4 bytes, é 2, 😀 4). An overestimate, so the prefix's repr always fits.
        w = 2 if c == "'" else len(repr(c).encode()) - 2
        if width + w > limit:
            break
        kept += 1
        width += w
    return f"{text[:kept]!r}{CUT} ({len(text):,} chars)"


def quote_shape(shape: Sequence[int]) -> str:
    """`[2, 3]`, or the first MAX_SHOWN_DIMS dims, the cut, and how many there are."""
    n = len(shape)
    if n <= MAX_SHOWN_DIMS:
        return str(list(shape))
    return f"[{', '.join(map(str, shape[:MAX_SHOWN_DIMS]))}, {CUT}] ({n:,} dims)"


def quote_names(names: Sequence[str]) -> str:
    """`['a', 'b']`, or the first MAX_SHOWN_NAMES (each quoted to MAX_LISTED_BYTES),
    the cut, and how many there are."""
    shown = ", ".join([quote(name, MAX_LISTED_BYTES) for name in names[:MAX_SHOWN_NAMES]])
    if len(names) <= MAX_SHOWN_NAMES:
        return f"[{shown}]"
    return f"[{shown}, {CUT}] ({len(names):,} names)"


def clip(message: str, limit: int) -> str:
    """`message` if it is at most `limit` characters; else as much of its start as fits
    in `limit` with the cut and its full length. A last bound on a whole message
    (see `sidecar.rpc.convert.to_status`), not a way to quote client text."""
    if len(message) <= limit:
        return message
    tail = f"{CUT} ({len(message):,} chars)"
    return message[: max(0, limit - len(tail))] + tail
