"""The compute ceiling: the backend called directly, in this process, with the
batch size the server formed. No gRPC, no actors, no queue: what the model
alone allows, so `achieved / ceiling` is the share of it the sidecar delivers.

    ceiling req/s = batch size / median infer() time x instances

The backend is made from the server's own backend name and model URI (as
GetModelInfo reports them) through the registry, and loaded here: a second
copy of the model, on this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sidecar.backends import registry
from sidecar.bench.spec import InputSpec

TIME_BUDGET_S = 0.5  # timing calls stop after this long, or after MAX_CALLS
MIN_CALLS, MAX_CALLS = 5, 200


@dataclass(frozen=True, slots=True)
class Ceiling:
    batch_size: int
    instances: int
    infer_ms: float  # median of the timed calls
    calls: int
    rps: float


def join(inputs: tuple[InputSpec, ...], batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch as the server forms one: `batch_size` single items stacked along a new axis 0."""
    rng = np.random.default_rng(seed)
    return {i.name: np.stack([rng.standard_normal(i.shape).astype(i.dtype) for _ in range(batch_size)])
            for i in inputs}


def measure(backend_name: str, model_uri: str, inputs: tuple[InputSpec, ...], batch_size: int,
            instances: int) -> Ceiling:
    backend = registry.create(backend_name, model_uri)
    backend.load()
    try:
        batch = join(inputs, batch_size)
        backend.infer(batch)  # the first call may pay for lazy set-up
        times: list[float] = []
        deadline = time.perf_counter() + TIME_BUDGET_S
        while len(times) < MAX_CALLS and (len(times) < MIN_CALLS or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            backend.infer(batch)
            times.append(time.perf_counter() - t0)
    finally:
        backend.close()
    median = float(np.median(times))
    return Ceiling(batch_size, instances, median * 1000, len(times), batch_size / median * instances)
