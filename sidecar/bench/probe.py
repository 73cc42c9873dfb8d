"""What the bench reads from the server it measures, over plain (blocking) gRPC:
readiness, the model and its limits, and the batch-size histogram."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.bench.spec import InputSpec

BATCH_SIZE_METRIC = "batchSize"  # docs/metrics.md: requests per batch, one value per batch
RPC_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram's all-time count and sum (not its sliding window)."""

    count: int
    sum: float


def mean_between(before: Histogram | None, after: Histogram | None) -> float | None:
    """The mean of the values recorded between two readings; None if none were."""
    if before is None or after is None or after.count <= before.count:
        return None
    return (after.sum - before.sum) / (after.count - before.count)


class Probe:
    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.GpuSidecarStub(self._channel)
        self.address = address

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout_s: float) -> None:
        """Until grpc.health.v1 says SERVING (the sidecar has loaded its model)."""
        health = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.address} not SERVING after {timeout_s:g} s")
            time.sleep(0.05)

    def model_info(self) -> pb.ModelInfo | None:
        """The model and limits; None from a server without GetModelInfo (the echo baseline)."""
        try:
            return self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            if e.code() is grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise

    def counters(self) -> dict[str, int]:
        """Every counter of the server's registry now, by name (docs/metrics.md)."""
        snapshot = self._stub.GetMetrics(pb.GetMetricsRequest(), timeout=RPC_TIMEOUT_S)
        return {m.name: int(m.counter) for m in snapshot.metrics if m.HasField("counter")}

    def batch_sizes(self) -> Histogram | None:
        """The server's batch-size histogram now; None if it has none (the echo baseline)."""
        try:
            snapshot = self._stub.GetMetrics(pb.GetMetricsRequest(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            return None
        for m in snapshot.metrics:
            if m.name == BATCH_SIZE_METRIC and m.HasField("histogram"):
                return Histogram(m.histogram.count, m.histogram.sum)
        return None


def inputs_of(info: pb.ModelInfo) -> tuple[InputSpec, ...]:
    return tuple(InputSpec(t.name, t.dtype, tuple(t.shape)) for t in info.inputs)


def seconds(d: object) -> float:
    """A google.protobuf.Duration in seconds."""
    return d.ToNanoseconds() / 1e9  # type: ignore[attr-defined]
