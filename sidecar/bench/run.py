"""A bench: each case's load against the sidecar, then (with baselines) the same load
against the echo server, and the backend timed alone at the batch size the
sidecar formed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.bench import ceiling as compute
from sidecar.bench.bound import bound, mock_model
from sidecar.bench.compare import Comparison
from sidecar.bench.probe import inputs_of
from sidecar.bench.results import Result
from sidecar.bench.session import Session, Target
from sidecar.bench.spec import Load


@dataclass(frozen=True, slots=True)
class Plan:
    loads: tuple[Load, ...]  # one per case
    model_uri: str
    serve_args: tuple[str, ...] = ()
    target: str | None = None  # a running server; None: start one
    server_pid: int | None = None  # the running server's pid, for its CPU time
    baselines: bool = True


@dataclass
class Outcome:
    info: pb.ModelInfo
    target: dict[str, object]
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def results(self) -> list[Result]:
        out = []
        for c in self.comparisons:
            out += [c.sidecar] + ([c.echo] if c.echo else [])
        return out


class NotASidecar(RuntimeError):
    """The target answers, but not as a gpu-sidecar does (no GetModelInfo)."""


def run(plan: Plan, announce: Callable[[str], None] = print) -> Outcome:
    with Session(plan.loads[0].procs) as session:
        if plan.target is not None:
            sidecar = session.attach(plan.target, plan.server_pid)
        else:
            sidecar = session.start_sidecar(plan.model_uri, plan.serve_args)
        info = sidecar.probe.model_info()
        if info is None:
            raise NotASidecar(f"{sidecar.address} has no GetModelInfo: not a gpu-sidecar")
        inputs = inputs_of(info)
        echo = session.start_echo() if plan.baselines else None
        announce(_describe(sidecar, info) + (f"; echo pid {echo.pid} on {echo.address}" if echo else ""))
        outcome = Outcome(info, {"address": sidecar.address, "pid": sidecar.pid, "started": plan.target is None,
                                 "model_uri": info.model_uri, "backend": info.backend,
                                 "serve_args": list(plan.serve_args)})
        model = mock_model(info)
        ceilings: dict[int, compute.Ceiling | str] = {}
        for load in plan.loads:
            case = load.label()
            result = session.measure(sidecar, load, inputs, case)
            announce(summary_line(result))
            comparison = Comparison(case, result)
            if echo is not None:
                comparison.echo = session.measure(echo, load, inputs, case)
                announce(summary_line(comparison.echo))
                _add_ceiling(comparison, info, inputs, ceilings)
            if model is not None and load.in_flight is not None:
                comparison.bound = bound(model, load.in_flight)
            outcome.comparisons.append(comparison)
        return outcome


def _add_ceiling(comparison: Comparison, info: pb.ModelInfo, inputs: tuple, cache: dict) -> None:
    batch = comparison.sidecar.mean_batch
    if batch is None:
        comparison.ceiling_note = "no batches seen"
        return
    size = max(1, round(batch))
    if size not in cache:
        try:
            cache[size] = compute.measure(info.backend, info.model_uri, inputs, size, max(1, info.limits.instances))
        except Exception as e:  # noqa: BLE001 - a backend that cannot run here leaves the rest standing
            cache[size] = f"backend not runnable here: {type(e).__name__}: {e}"
    found = cache[size]
    if isinstance(found, str):
        comparison.ceiling_note = found
    else:
        comparison.ceiling = found


def _describe(target: Target, info: pb.ModelInfo) -> str:
    started = "started" if target.server is not None else "running"
    pid = f"pid {target.pid}" if target.pid is not None else "pid unknown (CPU per request n/a)"
    limits = info.limits
    return (f"sidecar ({started}, {pid}) on {target.address}: {info.backend} {info.model_uri!r}, "
            f"max batch {limits.max_batch_size}, window {limits.batch_timeout.ToNanoseconds() / 1e6:g} ms, "
            f"{limits.instances} instance(s)")


def summary_line(r: Result) -> str:
    def f(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    errors = ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "none"
    return (f"{r.target:>8} {r.case:<24} offered {r.offered_rps:>9,.0f}  achieved {r.achieved_rps:>9,.0f} req/s  "
            f"p50 {f(r.p50_ms, '.2f')}  p99 {f(r.p99_ms, '.2f')} ms  batch {f(r.mean_batch, '.1f')}  "
            f"CPU {f(r.cpu_us_per_req, '.1f')} µs/req  errors {errors}")
