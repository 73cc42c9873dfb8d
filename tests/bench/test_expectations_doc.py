"""docs/benchmarks.md shows the --check cases exactly as sidecar/bench/expectations.py
holds them; and every case names runs, servers and a ratio that exist."""

from __future__ import annotations

from pathlib import Path

from sidecar.bench.check import RATIO_FNS
from sidecar.bench.expectations import EXPECTATIONS, RATIOS, RUNS, SERVERS, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
START, END = "<!-- expectations:start -->", "<!-- expectations:end -->"


def test_the_doc_table_is_what_the_module_renders():
    text = DOC.read_text()
    assert text.count(START) == 1 and text.count(END) == 1, f"{DOC} needs one {START} ... {END} block"
    block = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render_markdown(), (
        "docs/benchmarks.md's expectations block differs from sidecar/bench/expectations.py; paste in "
        "the output of: python -c 'from sidecar.bench.expectations import render_markdown; print(render_markdown())'"
    )


def test_every_case_refers_to_what_exists():
    keys = [r.key for r in RUNS]
    assert len(keys) == len(set(keys))
    assert set(RATIOS) == set(RATIO_FNS)
    for r in RUNS:
        assert r.server in SERVERS
        assert (r.in_flight is None) != (r.rate_of is None)
        if r.rate_of is not None:  # an open loop's rate comes from a run made before it
            assert keys.index(r.rate_of[0]) < keys.index(r.key)
    for s in SERVERS.values():
        if s.model_uri is None:  # the echo server takes another server's inputs, measured first
            first_echo = min(i for i, r in enumerate(RUNS) if SERVERS[r.server] is s)
            assert any(r.server == s.inputs_like for r in RUNS[:first_echo])
    for e in EXPECTATIONS:
        assert e.ratio in RATIOS and e.op in (">=", "<=") and all(k in keys for k in e.runs)
        assert RATIO_FNS[e.ratio].__code__.co_argcount == len(e.runs)
