"""--check's judging, on made-up figures: each ratio, each direction, and a ratio
that cannot be formed failing rather than passing."""

from __future__ import annotations

import pytest

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.bench.bound import Bound
from sidecar.bench.check import Measured, judge
from sidecar.bench.expectations import Expectation
from sidecar.bench.results import Result


def result(**figures) -> Result:
    base = dict(case="c", target="t", mode="closed", packed=True, in_flight=64, rate=None, streams=1, procs=1,
                seconds=2.0, requests=1000, offered_rps=500.0, achieved_rps=500.0, p50_ms=3.0, p90_ms=4.0,
                p99_ms=5.0, p999_ms=6.0, cpu_us_per_req=20.0)
    return Result(**{**base, **figures})


def measured(bound: Bound | None = None, info: pb.ModelInfo | None = None, **figures) -> Measured:
    return Measured(result(**figures), info, bound)


def expect(ratio: str, runs: tuple[str, ...], op: str, limit: float) -> Expectation:
    return Expectation("a case", ratio, runs, op, limit, seen=None)


def test_cpu_against_another_run_passes_below_and_fails_above_its_bound():
    runs = {"a": measured(cpu_us_per_req=30.0), "b": measured(cpu_us_per_req=10.0)}
    assert judge(expect("cpu_vs", ("a", "b"), "<=", 3.0), runs).passed
    failed = judge(expect("cpu_vs", ("a", "b"), "<=", 2.0), runs)
    assert not failed.passed and failed.value == pytest.approx(3.0)
    assert failed.line().startswith("FAIL  a case: server CPU per request ÷ `b`'s = 3 (expected ≤ 2")


def test_throughput_against_the_bound_and_the_floor():
    runs = {"m": measured(Bound(rps=1000.0, floor_ms=2.0), achieved_rps=800.0, p50_ms=2.5)}
    assert judge(expect("rps_vs_bound", ("m",), ">=", 0.8), runs).passed
    assert not judge(expect("rps_vs_bound", ("m",), ">=", 0.9), runs).passed
    assert judge(expect("p50_vs_floor", ("m",), "<=", 1.25), runs).value == pytest.approx(1.25)


def test_open_loop_shares():
    info = pb.ModelInfo(limits=pb.Limits(max_queue_wait={"nanos": 100_000_000}))
    runs = {"o": measured(info=info, requests=1000, offered_rps=1100.0, achieved_rps=1000.0, p99_ms=40.0,
                          errors={"RESOURCE_EXHAUSTED": 90, "DEADLINE_EXCEEDED": 10})}
    assert judge(expect("refused_share", ("o",), ">=", 0.9), runs).value == pytest.approx(0.9)
    assert judge(expect("error_share", ("o",), "<=", 0.1), runs).value == pytest.approx(0.1)
    assert judge(expect("achieved_vs_offered", ("o",), ">=", 0.9), runs).value == pytest.approx(1000 / 1100)
    assert judge(expect("p99_vs_queue_wait", ("o",), "<=", 1.0), runs).value == pytest.approx(0.4)


def test_a_ratio_that_cannot_be_formed_fails():
    runs = {"a": measured(cpu_us_per_req=None), "b": measured(), "o": measured(errors={})}
    assert not judge(expect("cpu_vs", ("a", "b"), "<=", 100.0), runs).passed
    # no refusals at all where an overload should have brought them: nothing to pass on
    verdict = judge(expect("refused_share", ("o",), ">=", 0.9), runs)
    assert not verdict.passed and verdict.value is None and " = n/a " in verdict.line()
    assert not judge(expect("rps_vs_bound", ("b",), ">=", 0.0), runs).passed  # no bound: not a mock
