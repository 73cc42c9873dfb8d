"""Client text quoted into error messages: short text as repr shows it, long text cut,
the cut marked and the full size stated, within a bound whatever the text."""

from __future__ import annotations

import ast
import time

from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.quote import (
    CUT,
    MAX_LISTED_BYTES,
    MAX_QUOTED_BYTES,
    MAX_SHOWN_DIMS,
    MAX_SHOWN_NAMES,
    clip,
    quote,
    quote_names,
    quote_shape,
)

# The most a quote adds to its limit, in bytes: two quote marks, the cut, " (10,000,000,000 chars)".
QUOTE_OVERHEAD = 2 + len(f"{CUT} ({10**10:,} chars)".encode())


def size(text: str) -> int:
    return len(text.encode())


def test_short_text_is_quoted_as_repr_shows_it():
    for text in ("input", "", "it's", 'say "hi"', "tab\there", "a" * MAX_QUOTED_BYTES):
        assert quote(text) == repr(text)


def test_long_text_shows_its_start_marks_the_cut_and_states_its_length():
    text = "a" * 17_000_000
    started = time.perf_counter()
    quoted = quote(text)
    took = time.perf_counter() - started
    print(f"quote of 17,000,000 chars: {took * 1e6:.0f} us, {len(quoted)} chars")
    assert quoted == repr("a" * MAX_QUOTED_BYTES) + f"{CUT} (17,000,000 chars)"
    assert took < 0.01


def test_escapes_count_against_the_limit():
    for c in ("\0", "\n", "'", "é", "\U0001f600", "\udc80", "\u200b"):
        text = c * 17_000_000
        quoted = quote(text)
        assert size(quoted) <= MAX_QUOTED_BYTES + QUOTE_OVERHEAD, (c, size(quoted))
        assert quoted.endswith(f"{CUT} (17,000,000 chars)")
        shown = ast.literal_eval(quoted[: quoted.rindex(CUT)])  # before the cut: a literal of the text's start
        assert shown and text.startswith(shown)
    # text under the limit whose repr is over it is cut too
    assert quote("\0" * MAX_QUOTED_BYTES).endswith(f"{CUT} ({MAX_QUOTED_BYTES} chars)")


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_any_text_quotes_within_its_limit_and_shows_its_start(text, limit):
    quoted = quote(text, limit)
    assert size(quoted) <= limit + QUOTE_OVERHEAD
    if size(repr(text)) <= limit + 2:
        assert quoted == repr(text)
    else:
        assert quoted.endswith(f"{CUT} ({len(text):,} chars)")
        assert text.startswith(ast.literal_eval(quoted[: quoted.rindex(CUT)]))


def test_short_shape_is_shown_whole_and_a_long_one_by_its_first_dims_and_count():
    assert quote_shape((2, 3)) == "[2, 3]"
    assert quote_shape(()) == "[]"
    assert quote_shape([1] * MAX_SHOWN_DIMS) == str([1] * MAX_SHOWN_DIMS)
    dims = [2**63 - 1] * 300_000
    shown = quote_shape(dims)
    assert shown == f"[{', '.join([str(2**63 - 1)] * MAX_SHOWN_DIMS)}, {CUT}] (300,000 dims)"
    assert len(shown) < 250


def test_short_name_list_is_shown_as_repr_and_a_long_one_by_its_first_names_and_count():
    assert quote_names([]) == "[]"
    assert quote_names(["c", "it's"]) == repr(["c", "it's"])
    names = [f"x{i}" for i in range(1_000_000)]
    assert quote_names(names) == f"['x0', 'x1', 'x2', 'x3', 'x4', {CUT}] (1,000,000 names)"
    huge = ["\0" * 17_000_000] * MAX_SHOWN_NAMES * 2
    shown = quote_names(huge)
    assert size(shown) <= MAX_SHOWN_NAMES * (MAX_LISTED_BYTES + QUOTE_OVERHEAD + 2) + 30
    assert shown.count("(17,000,000 chars)") == MAX_SHOWN_NAMES and shown.endswith("(10 names)")


def test_clip_keeps_a_message_within_its_limit_and_says_how_long_it_was():
    assert clip("short", 10) == "short"
    clipped = clip("x" * 1_000_000, 100)
    assert len(clipped) == 100 and clipped.startswith("xxx") and clipped.endswith(f"{CUT} (1,000,000 chars)")
