"""Between wire messages (protobuf) and the core's types. Nothing else crosses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.core.quote import clip
from sidecar.core.answer import Answer
from sidecar.core.request import Arrival
from sidecar.core.status import Failure
from sidecar.core.tensors import InvalidTensors, TensorSpec, batch_input_bytes, input_bytes
from sidecar.metrics.registry import MetricValue
from sidecar.wire import duration

# The longest error message an answer carries. Messages that quote a client's text
# quote it short already (sidecar/core/quote.py: a few hundred characters whatever
# it sent); this bounds every other one too (a backend's exception text), so no
# error can grow an answer towards the send limit and take its neighbours with it.
MAX_MESSAGE_CHARS = 4096


def batch_items(b: pb.InferBatch, specs: Sequence[TensorSpec]) -> list[tuple[memoryview, ...]]:
    """The per-item input bytes of a batch-major InferBatch: zero-copy views of its
    tensors, row i for request_ids[i]. Raises InvalidTensors (for every item alike)
    naming what is wrong."""
    n = len(b.request_ids)
    whole = [memoryview(data) for data in batch_input_bytes(b.inputs, specs, n)]
    sizes = [s.nbytes for s in specs]
    columns = [[m[i * size : (i + 1) * size] for i in range(n)] for m, size in zip(whole, sizes)]
    return list(zip(*columns)) if columns else [() for _ in range(n)]


def arrivals(requests: Sequence[pb.InferRequest], batches: Sequence[pb.InferBatch],
             specs: Sequence[TensorSpec]) -> list[Arrival]:
    """The requests of one stream message, checked against the model's inputs:
    each a runnable Arrival, or one refused saying why (the session answers it
    INVALID_ARGUMENT). A batch that does not fit the model refuses every item."""
    out: list[Arrival] = []
    for p in requests:
        try:
            timeout = _timeout(p)  # first, as its message has always come first
            out.append(Arrival(p.request_id, input_bytes(p.inputs, specs), timeout, p.return_timing))
        except InvalidTensors as e:
            out.append(Arrival(p.request_id, (), refused=f"request {p.request_id}: {e}"))
    for b in batches:
        ids = b.request_ids
        if not ids:
            continue
        try:
            timeout = _timeout(b)
            rows = batch_items(b, specs)
        except InvalidTensors as e:
            why = f"batch of {len(ids)} item(s): {e}"
            out.extend(Arrival(i, (), refused=why) for i in ids)
            continue
        timing = b.return_timing
        out.extend(Arrival(i, row, timeout, timing) for i, row in zip(ids, rows))
    return out


def _timeout(p: pb.InferRequest | pb.InferBatch) -> float | None:
    if not p.HasField("timeout"):
        return None
    timeout = p.timeout.seconds + p.timeout.nanos / 1e9
    if timeout <= 0:
        raise InvalidTensors(f"timeout must be positive, got {timeout * 1000:g} ms")
    return timeout


# A Timing message at most: two Durations (tag, length, 11-byte seconds, 6-byte
# nanos) and a varint batch size, each with its tag.
_TIMING_BOUND = 64


def wire_size_bound(answer: Answer, template_sizes: Sequence[int]) -> int:
    """At least what to_wire(answer).ByteSize() is, without building it: the writer
    packs answers by this. Exact for the outputs; the id and timing are bounded."""
    if answer.failure is not None:  # rare: built and measured
        return error_response(answer.request_id, answer.failure).ByteSize()
    n = 11  # request_id: its tag and a varint of at most 10 bytes
    for size, data in zip(template_sizes, answer.outputs or ()):
        length = len(data)
        t = size + (1 + _varint_len(length) + length if length else 0)
        n += 1 + _varint_len(t) + t
    if answer.timing is not None:
        n += _TIMING_BOUND
    return n


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def to_wire(answer: Answer, templates: Sequence[pb.Tensor]) -> pb.InferResponse:
    """A core answer as the gpu-sidecar API's response."""
    if answer.failure is not None:
        return error_response(answer.request_id, answer.failure)
    response = ok_response(answer.request_id, answer.outputs or (), templates)
    t = answer.timing
    if t is not None:
        response.timing.CopyFrom(timing(t.queue_wait_s, t.compute_s, t.batch_size))
    return response


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
