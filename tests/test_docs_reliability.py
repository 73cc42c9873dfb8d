"""docs/reliability.md names, for each guarantee, the tests that prove it: they must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_the_reliability_doc_names_exists():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    sources = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "tests").rglob("test_*.py")}
    missing = []
    for path, name, star in re.findall(r"`(?:(tests/[\w/]+\.py)|[\w.]+\.py)?::(test_\w+?)(\*)?`", doc):
        pattern = rf"def {name}" + ("" if star else r"\b")
        if not any(re.search(pattern, text) for p, text in sources.items() if not path or p == path):
            missing.append(f"{path}::{name}")
    for path in re.findall(r"`(tests/[\w/]+\.py)`", doc):
        if path not in sources:
            missing.append(path)
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
