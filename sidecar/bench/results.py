"""One run's figures, merged from every load process's tally."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sidecar.bench.load import Tally
from sidecar.bench.spec import Load

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentiles(values: np.ndarray, qs: Sequence[float] = PERCENTILES) -> list[float | None]:
    """The `qs` percentiles of `values` (linear interpolation); None for each if it is empty."""
    if len(values) == 0:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(values, qs)]


@dataclass
class Result:
    case: str  # the load, e.g. "in-flight=64 packed"
    target: str  # "sidecar", "echo", or the --target address
    mode: str  # "closed" or "open"
    packed: bool
    in_flight: int | None
    rate: float | None  # the rate asked for (open loop)
    streams: int
    procs: int
    seconds: float  # the measured interval
    requests: int  # started in it
    offered_rps: float
    achieved_rps: float  # OK answers that came in it, per second
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)  # non-OK outcomes of the requests started in it
    held_in_client: int = 0  # started with the client's window full (open loop: they waited there)
    mean_batch: float | None = None  # the server's batchSize histogram over the interval
    cpu_us_per_req: float | None = None  # server CPU (all threads) per answer in the interval
    lag_p99_ms: float | None = None  # open loop: how late the generator sent, p99

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge(case: str, target: str, load: Load, tallies: Sequence[Tally], seconds: float,
          cpu_s: float | None, mean_batch: float | None) -> Result:
    started = sum(t.started for t in tallies)
    answers = sum(t.answers for t in tallies)
    latencies = np.concatenate([t.latencies_us for t in tallies]) / 1000.0
    lag = np.concatenate([t.lag_us for t in tallies]) / 1000.0
    errors: Counter[str] = Counter()
    for t in tallies:
        errors.update(t.codes)
    p50, p90, p99, p999 = percentiles(latencies)
    return Result(
        case=case, target=target, mode=load.mode, packed=load.packed, in_flight=load.in_flight, rate=load.rate,
        streams=load.streams, procs=load.procs, seconds=seconds, requests=started,
        offered_rps=started / seconds, achieved_rps=sum(t.ok_answers for t in tallies) / seconds,
        p50_ms=p50, p90_ms=p90, p99_ms=p99, p999_ms=p999, errors=dict(sorted(errors.items())),
        held_in_client=sum(t.held for t in tallies), mean_batch=mean_batch,
        cpu_us_per_req=cpu_s / answers * 1e6 if cpu_s is not None and answers else None,
        lag_p99_ms=percentiles(lag, (99.0,))[0] if load.mode == "open" else None,
    )


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
