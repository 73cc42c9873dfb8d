"""The analytic bound of a closed loop against the mock backend, whose batch of b
takes exactly c(b) = base_ms + per_item_ms x b.

n requests in flight, a largest batch B, I backend instances, each computing
one batch at a time. A request is in one batch per round trip, so at best the
instances compute back to back, each on an equal share of the n (b/c(b) grows
with b and is concave, so an equal split is the best split):

    b = min(B, max(1, n / I))          the batch each instance computes
    throughput bound = min(n, I x b) / c(b)
    latency floor    = n / bound       (Little's law; c(b) while n <= I x B)

This holds whatever the dispatch policy: it charges no wait for the batch
window. A policy that holds a partial batch for the window beside an idle
backend (sidecar.batch.dispatch=window) adds w to every round trip while
n < I x B, and so reaches at most c(b) / (w + c(b)) of this: about 0.5 at 1 in
flight with the default 2 ms window. The transport and the server's own work
only add to it too; `achieved / bound` is the share of the model's limit the
whole path delivers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.backends.base import BackendError
from sidecar.backends.mock import parse_options


@dataclass(frozen=True, slots=True)
class MockModel:
    base_ms: float
    per_item_ms: float
    max_batch: int
    instances: int

    def batch_ms(self, b: float) -> float:
        return self.base_ms + self.per_item_ms * b


@dataclass(frozen=True, slots=True)
class Bound:
    rps: float
    floor_ms: float


def bound(model: MockModel, in_flight: int) -> Bound:
    n = in_flight
    b = min(float(model.max_batch), max(1.0, n / model.instances))
    batch_ms = model.batch_ms(b)  
    if not batch_ms:
        return Bound(math.inf, 0.0)  # a model that takes no time bounds nothing
    rps = min(n, model.instances * b) / batch_ms * 1000
    return Bound(rps, n / rps * 1000)


def mock_model(info: pb.ModelInfo) -> MockModel | None:
    """The mock's timing and the server's limits, from GetModelInfo; None for another backend."""
    if info.backend != "mock":
        return None
    try:
        options = parse_options(info.model_uri)
    except BackendError:
        return None
    limits = info.limits
    largest = limits.max_batch_size
    if options.max_batch:
        largest = min(largest, options.max_batch)
    return MockModel(options.base_ms, options.per_item_ms, largest, max(1, limits.instances))
