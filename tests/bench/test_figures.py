"""Percentiles, the merge of the load processes' tallies, the tables, the mock's bound:
pure code, on made-up figures."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

from sidecar.bench import table
from sidecar.bench.bound import MockModel, bound
from sidecar.bench.ceiling import Ceiling
from sidecar.bench.compare import Comparison
from sidecar.bench.load import Tally
from sidecar.bench.results import merge, percentiles
from sidecar.bench.spec import InputSpec, Load, split


def test_percentiles_interpolate_and_are_none_without_values():
    values = np.arange(1, 1001, dtype=np.float64)  # 1 .. 1000
    p50, p90, p99, p999 = percentiles(values)
    assert p50 == pytest.approx(500.5) and p90 == pytest.approx(900.1)
    assert p99 == pytest.approx(990.01) and p999 == pytest.approx(999.001)
    assert percentiles(np.empty(0)) == [None, None, None, None]


def tally(latencies_ms: list[float], *, started: int, ok: int, answers: int, codes: dict[str, int] | None = None,
          held: int = 0) -> Tally:
    return Tally(started=started, ok_answers=ok, answers=answers, held=held,
                 latencies_us=np.array(latencies_ms, np.float32) * 1000, codes=Counter(codes or {}))


def test_merge_adds_the_processes_and_divides_by_the_interval():
    load = Load(in_flight=None, rate=100.0, streams=2, procs=2, seconds=2.0)
    a = tally([1.0, 2.0], started=110, ok=100, answers=104, codes={"RESOURCE_EXHAUSTED": 4, "unfinished": 6}, held=3)
    b = tally([3.0, 4.0], started=90, ok=90, answers=90)
    r = merge("rate=100 packed", "sidecar", load, [a, b], 2.0, cpu_s=0.0194, mean_batch=7.5)
    assert (r.requests, r.offered_rps, r.achieved_rps) == (200, 100.0, 95.0)
    assert r.errors == {"RESOURCE_EXHAUSTED": 4, "unfinished": 6} and r.error_count == 10
    assert r.held_in_client == 3 and r.mean_batch == 7.5
    assert r.cpu_us_per_req == pytest.approx(0.0194 / 194 * 1e6)  # per answer the server gave
    assert r.p50_ms == pytest.approx(2.5) and r.mode == "open"
    assert r.lag_p99_ms is None  # no arrival lag recorded in these tallies


def test_merge_without_server_cpu_or_answers_leaves_cpu_per_request_unknown():
    load = Load(in_flight=4, seconds=1.0)
    r = merge("in-flight=4 packed", "10.0.0.7:7651", load, [tally([], started=0, ok=0, answers=0)], 1.0, None, None)
    assert r.cpu_us_per_req is None and r.p99_ms is None and r.lag_p99_ms is None


def test_the_load_is_spread_over_processes_and_streams():
    assert split(10, 4) == [3, 3, 2, 2]
    shares = Load(in_flight=10, streams=4, procs=2).shares("127.0.0.1:1", (InputSpec("input", "float32", (4,)),))
    assert [s.in_flight for s in shares] == [(3, 3), (2, 2)]
    open_shares = Load(in_flight=None, rate=900.0, streams=3, procs=2).shares("127.0.0.1:1", ())
    assert [len(s.in_flight) for s in open_shares] == [2, 1] and [s.rate for s in open_shares] == [450.0, 450.0]
    assert Load(packed=False).max_pack == 1 and Load().max_pack == 64


@pytest.mark.parametrize("kwargs, message", [
    ({"in_flight": 2, "streams": 4}, "must be at least --streams"),
    ({"streams": 1, "procs": 2}, "must be at least --procs"),
    ({"in_flight": None, "rate": 0.0}, "--rate must be positive"),
    ({"seconds": None, "count": None}, "either --seconds or --count"),
    ({"warmup_s": -1.0}, "--warmup must not be negative"),
])
def test_a_load_that_cannot_run_says_why(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Load(**kwargs)


def test_the_mock_bound_follows_the_batch_time():
    one = MockModel(base_ms=2.0, per_item_ms=0.02, max_batch=32, instances=1)
    assert bound(one, 1).rps == pytest.approx(1000 / 2.02) and bound(one, 1).floor_ms == pytest.approx(2.02)
    assert bound(one, 8).rps == pytest.approx(8000 / 2.16)
    assert bound(one, 64).rps == pytest.approx(32000 / 2.64) and bound(one, 64).floor_ms == pytest.approx(5.28)
    two = MockModel(base_ms=2.0, per_item_ms=0.02, max_batch=32, instances=2)
    assert bound(two, 256).rps == pytest.approx(2 * 32000 / 2.64)
    assert bound(two, 1).rps == pytest.approx(1000 / 2.02)  # one request uses one instance
    assert bound(MockModel(0.0, 0.0, 32, 1), 64).rps == float("inf")


def test_tables_show_every_figure_and_na_for_what_is_unknown():
    load = Load(in_flight=64, seconds=1.0)
    sidecar = merge("in-flight=64 packed", "sidecar", load, [tally([5.0] * 10, started=10, ok=10_000, answers=10_000)],
                    1.0, 0.3, 32.0)
    echo = merge("in-flight=64 packed", "echo", load, [tally([1.0] * 10, started=10, ok=40_000, answers=40_000)],
                 1.0, 0.2, None)
    comparison = Comparison("in-flight=64 packed", sidecar, echo, Ceiling(32, 1, 2.5, 20, 12_800.0))
    results = table.results_table([sidecar, echo])
    assert results.rows[0][:4] == ("in-flight=64 packed", "sidecar", "10", "10,000")
    assert results.rows[1][8] == "n/a"  # the echo server forms no batches
    ratios = table.ratios_table([comparison])
    assert ratios.rows[0][1:3] == ("0.25", "0.78") and ratios.rows[0][4] == "6.00"
    assert ratios.rows[0][5] == "n/a"  # no mock bound given
    text = table.plain(results)
    lines = text.splitlines()
    assert lines[0] == "results" and "achieved req/s" in lines[1] and len(lines) == 5
    assert len({len(line) for line in lines[1:3]}) == 1  # headers and rule line up


def test_without_rich_the_tables_print_as_plain_text(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails as if rich were absent
    load = Load(in_flight=1, seconds=1.0)
    r = merge("in-flight=1 packed", "sidecar", load, [tally([2.0], started=1, ok=1, answers=1)], 1.0, None, None)
    table.show(table.results_table([r]))
    assert capsys.readouterr().out == table.plain(table.results_table([r])) + "\n"
