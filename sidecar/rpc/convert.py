"""Between wire messages (protobuf) and the core's types. Nothing else crosses."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.core.quote import clip
from sidecar.core.request import Request
from sidecar.core.status import Failure
from sidecar.core.tensors import InvalidTensors, TensorSpec, batch_input_bytes, input_bytes
from sidecar.metrics.registry import MetricValue
from sidecar.wire import duration

# The longest error message an answer carries. Messages that quote a client's text
# quote it short already (sidecar/core/quote.py: a few hundred characters whatever
# it sent); this bounds every other one too (a backend's exception text), so no
# error can grow an answer towards the send limit and take its neighbours with it.
MAX_MESSAGE_CHARS = 4096


def to_request(
    p: pb.InferRequest,
    stream: int,
    received_at: float,
    specs: Sequence[TensorSpec],
    *,
    uid: int = 0,
    stream_deadline: float = math.inf,
) -> Request:
    """Raises InvalidTensors (a ValueError) naming what is wrong with the request.

    Its deadline is the earlier of its own timeout and its stream's gRPC deadline.
    """
    deadline = _deadline(p, received_at, stream_deadline)
    return Request(stream, p.request_id, input_bytes(p.inputs, specs), received_at, deadline, p.return_timing, uid)


def batch_items(
    b: pb.InferBatch, received_at: float, specs: Sequence[TensorSpec], stream_deadline: float = math.inf
) -> tuple[list[tuple[memoryview, ...]], float]:
    """The per-item input bytes of a batch-major InferBatch (zero-copy views of
    its tensors, row i for request_ids[i]) and the items' deadline. Raises
    InvalidTensors (for every item alike) naming what is wrong."""
    n = len(b.request_ids)
    deadline = _deadline(b, received_at, stream_deadline)
    whole = [memoryview(data) for data in batch_input_bytes(b.inputs, specs, n)]
    sizes = [s.nbytes for s in specs]
    columns = [[m[i * size : (i + 1) * size] for i in range(n)] for m, size in zip(whole, sizes)]
    return list(zip(*columns)) if columns else [() for _ in range(n)], deadline


def _deadline(p: pb.InferRequest | pb.InferBatch, received_at: float, stream_deadline: float) -> float:
    if not p.HasField("timeout"):
        return stream_deadline
    timeout = p.timeout.seconds + p.timeout.nanos / 1e9
    if timeout <= 0:
        raise InvalidTensors(f"timeout must be positive, got {timeout * 1000:g} ms")
    return min(stream_deadline, received_at + timeout)


def output_templates(specs: Sequence[TensorSpec]) -> tuple[pb.Tensor, ...]:
    """Wire tensors with everything but the data, for `ok_response` to copy."""
    return tuple(pb.Tensor(name=s.name, dtype=s.dtype, shape=s.shape) for s in specs)


def ok_response(request_id: int, outputs: Sequence[bytes], templates: Sequence[pb.Tensor]) -> pb.InferResponse:
    # Copying a prepared template was ~1.8x cheaper than building each Tensor
    # from keyword arguments (measured here, per response).
    response = pb.InferResponse(request_id=request_id)
    for template, data in zip(templates, outputs):
        tensor = response.outputs.add()
        tensor.MergeFrom(template)
        tensor.data = data
    return response


def timing(queue_wait_s: float, compute_s: float, batch_size: int) -> pb.Timing:
    return pb.Timing(queue_wait=duration(queue_wait_s), compute=duration(compute_s), batch_size=batch_size)


def error_response(request_id: int, failure: Failure) -> pb.InferResponse:
    return pb.InferResponse(request_id=request_id, error=to_status(failure))


def to_status(failure: Failure) -> status_pb2.Status:
    status = status_pb2.Status(code=int(failure.code), message=clip(failure.message, MAX_MESSAGE_CHARS))
    if failure.retry_after_s is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration(failure.retry_after_s)))
        status.details.append(detail)
    return status


def metrics_snapshot(values: Iterable[MetricValue]) -> pb.MetricsSnapshot:
    snapshot = pb.MetricsSnapshot()
    for v in values:
        m = snapshot.metrics.add(identifier=v.identifier, name=v.name, scope=v.logical_scope, variables=v.variables)
        if v.kind == "counter":
            m.counter = v.count
        elif v.kind == "gauge":
            m.gauge = v.value
        elif v.kind == "meter":
            m.meter.rate, m.meter.count = v.rate, v.count
        else:
            h = m.histogram
            h.count, h.sum, h.min, h.max, h.mean, h.stddev = v.count, v.sum, v.min, v.max, v.mean, v.stddev
            h.quantiles.extend(pb.Quantile(quantile=q, value=x) for q, x in v.quantiles.items())
    return snapshot


def tensor_spec(spec: TensorSpec) -> pb.TensorSpec:
    return pb.TensorSpec(name=spec.name, dtype=spec.dtype, shape=spec.shape)
