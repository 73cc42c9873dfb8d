"""docs/configuration.md lists exactly the keys of the code, in the same order, with the same defaults."""

from __future__ import annotations

import re
from pathlib import Path

from sidecar.config import KEYS

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
HEADER = "| key | default | meaning |"
EMPTY = "(empty)"  # how the table writes an empty default, which backticks cannot show


def documented_keys() -> list[tuple[str, str]]:
    """(key, default) for each row of the one table whose header is HEADER."""
    lines = DOC.read_text().splitlines()
    assert lines.count(HEADER) == 1, f"{DOC} must hold exactly one table headed {HEADER!r}"
    start = lines.index(HEADER) + 2  # skip the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = re.fullmatch(r"`([^`]+)`", cells[0])
        default = re.fullmatch(r"`([^`]*)`", cells[1])
        assert key, f"key cell must be `in backticks`: {line}"
        assert default or cells[1] == EMPTY, f"default cell must be `in backticks` or {EMPTY}: {line}"
        rows.append((key.group(1), default.group(1) if default else ""))
    return rows


def test_documents_every_key_in_code_order():
    assert [k for k, _ in documented_keys()] == list(KEYS)


def test_documents_each_default_as_the_code_shows_it():
    shown = {k: spec.show(spec.default) for k, spec in KEYS.items()}
    wrong = {k: (doc, shown.get(k)) for k, doc in documented_keys() if doc != shown.get(k)}
    assert not wrong, f"docs/configuration.md defaults differ from the code (doc, code): {wrong}"
