"""`gpu-sidecar bench --check`: the runs of sidecar/bench/expectations.py, then one
PASS or FAIL line per case. Each server is started when its first run comes and
stopped after its last, so at most one sidecar runs at a time."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.bench import machine as machine_info
from sidecar.bench import report
from sidecar.bench.cli import EXIT_COULD_NOT_RUN, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK
from sidecar.bench.bound import Bound, bound, mock_model
from sidecar.bench.expectations import (
    meets,
    EXPECTATIONS,
    RUNS,
    SECONDS,
    SERVERS,
    SYMBOL,
    WARMUP_S,
    Expectation,
    Run,
    describe_ratio,
)
from sidecar.bench.pool import LoadError
from sidecar.bench.probe import inputs_of
from sidecar.bench.results import Result, ratio
from sidecar.bench.run import summary_line
from sidecar.bench.session import Session, Target
from sidecar.bench.spec import InputSpec, Load



@dataclass
class Measured:
    result: Result
    info: pb.ModelInfo | None  # the sidecar's model and limits; None for the echo server
    bound: Bound | None  # the mock's analytic bound for this run's in-flight count


@dataclass(frozen=True, slots=True)
class Verdict:
    expectation: Expectation
    value: float | None
    passed: bool

    def line(self) -> str:
        e = self.expectation
        value = "n/a" if self.value is None else f"{self.value:.3g}"
        seen = "" if e.seen is None else f"; seen here {e.seen:.3g}"
        goal = ""
        if e.goal is not None:
            met = self.value is not None and meets(e.op, self.value, e.goal)
            goal = f"; goal {SYMBOL[e.op]} {e.goal:g} {'met' if met else 'not met'}"
        return (f"{'PASS' if self.passed else 'FAIL'}  {e.name}: {describe_ratio(e)} = {value} "
                f"(expected {SYMBOL[e.op]} {e.bound:g}{goal}{seen})")


def _ratio_fns() -> dict[str, Callable[..., float | None]]:
    def cpu_vs(a: Measured, b: Measured) -> float | None:
        return ratio(a.result.cpu_us_per_req, b.result.cpu_us_per_req)

    def rps_vs(a: Measured, b: Measured) -> float | None:
        return ratio(a.result.achieved_rps, b.result.achieved_rps)

    def rps_vs_bound(a: Measured) -> float | None:
        return ratio(a.result.achieved_rps, a.bound.rps if a.bound and math.isfinite(a.bound.rps) else None)

    def p50_vs_floor(a: Measured) -> float | None:
        return ratio(a.result.p50_ms, a.bound.floor_ms if a.bound else None)

    def achieved_vs_offered(a: Measured) -> float | None:
        return ratio(a.result.achieved_rps, a.result.offered_rps)

    def error_share(a: Measured) -> float | None:
        return a.result.error_count / a.result.requests if a.result.requests else None

    def refused_share(a: Measured) -> float | None:
        failed = a.result.error_count
        return a.result.errors.get("RESOURCE_EXHAUSTED", 0) / failed if failed else None

    def p99_vs_queue_wait(a: Measured) -> float | None:
        wait_ms = a.info.limits.max_queue_wait.ToNanoseconds() / 1e6 if a.info else None
        return ratio(a.result.p99_ms, wait_ms)

    return {f.__name__: f for f in (cpu_vs, rps_vs, rps_vs_bound, p50_vs_floor, achieved_vs_offered, error_share,
                                    refused_share, p99_vs_queue_wait)}


RATIO_FNS = _ratio_fns()


def judge(e: Expectation, measured: dict[str, Measured]) -> Verdict:
    value = RATIO_FNS[e.ratio](*(measured[k] for k in e.runs))
    passed = value is not None and meets(e.op, value, e.bound)
    return Verdict(e, value, passed)


def _load(run: Run, measured: dict[str, Measured]) -> Load:
    if run.rate_of is None:
        return Load(in_flight=run.in_flight, streams=run.streams, packed=run.packed, seconds=SECONDS, warmup_s=WARMUP_S)
    base, fraction = run.rate_of
    return Load(in_flight=None, rate=measured[base].result.achieved_rps * fraction, streams=run.streams,
                packed=run.packed, seconds=SECONDS, warmup_s=WARMUP_S)


def measure_all(session: Session, announce: Callable[[str], None]) -> dict[str, Measured]:
    last_use = {run.server: i for i, run in enumerate(RUNS)}
    targets: dict[str, Target] = {}
    infos: dict[str, pb.ModelInfo | None] = {}
    inputs: dict[str, tuple[InputSpec, ...]] = {}
    measured: dict[str, Measured] = {}
    for i, run in enumerate(RUNS):
        spec = SERVERS[run.server]
        if run.server not in targets:
            if spec.model_uri is None:
                targets[run.server] = session.start_echo(run.server)
                infos[run.server], inputs[run.server] = None, inputs[spec.inputs_like or ""]
            else:
                target = targets[run.server] = session.start_sidecar(spec.model_uri, spec.serve_args, run.server)
                info = target.probe.model_info()
                if info is None:
                    raise LoadError(f"{run.server} answers no GetModelInfo")
                infos[run.server], inputs[run.server] = info, inputs_of(info)
        load = _load(run, measured)
        result = session.measure(targets[run.server], load, inputs[run.server], run.key)
        info = infos[run.server]
        model = mock_model(info) if info is not None else None
        measured[run.key] = Measured(result, info, bound(model, run.in_flight) if model and run.in_flight else None)
        announce(summary_line(result))
        if last_use[run.server] == i:
            session.stop(targets.pop(run.server))
    return measured


def main(json_path: Path | None, command: str) -> int:
    info = machine_info.machine()
    print(machine_info.line(info), flush=True)
    started = time.monotonic()
    try:
        with Session(1) as session:
            measured = measure_all(session, print)
    except KeyboardInterrupt:
        print("gpu-sidecar bench --check: interrupted; servers and load processes stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, TimeoutError, OSError, grpc.RpcError) as e:
        print(f"gpu-sidecar bench --check: could not run: {e}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    verdicts = [judge(e, measured) for e in EXPECTATIONS]
    print()
    print(machine_info.line(info))
    for v in verdicts:
        print(v.line())
    passed = sum(v.passed for v in verdicts)
    print(f"check: {passed} of {len(verdicts)} PASS in {time.monotonic() - started:.0f} s")
    if json_path is not None:
        report.write(json_path, as_json(info, command, measured, verdicts))
        print(f"results written to {json_path}")
    return EXIT_OK if passed == len(verdicts) else EXIT_FAIL


def as_json(machine: dict[str, str], command: str, measured: dict[str, Measured], verdicts: list[Verdict]) -> dict[str, Any]:
    return {
        "machine": machine,
        "command": command,
        "commit": machine["commit"],
        "runs": {k: {**m.result.as_dict(), "mock_bound": None if m.bound is None else
                     {"rps": m.bound.rps, "floor_ms": m.bound.floor_ms}} for k, m in measured.items()},
        "cases": [{"name": v.expectation.name, "ratio": v.expectation.ratio, "runs": list(v.expectation.runs),
                   "op": v.expectation.op, "bound": v.expectation.bound, "goal": v.expectation.goal,
                   "seen": v.expectation.seen, "value": v.value, "passed": v.passed} for v in verdicts],
    }
