"""The GpuSidecar gRPC service (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from actors.session import Outgoing
from sidecar.core.answer import Answer
from sidecar.core.request import Arrival
from sidecar.core.tensors import TensorSpec
from sidecar import __version__
from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.backends.base import BackendInfo
from sidecar.config import SidecarConfig
from sidecar.metrics.registry import MetricRegistry
from sidecar.rpc.convert import arrivals, metrics_snapshot, output_templates, tensor_spec, to_wire, wire_size_bound
from sidecar.wire import duration
from sidecar.core.stream import Phase
from sidecar.logs import Throttle, event
from sidecar.server.ingress import Ingress, Stream, batch_item_count
from sidecar.server.memory_report import MemoryProbe
from sidecar.server.registration import Unparsable, add_service

log = logging.getLogger(__name__)

# A packed response costs its field tag and a length varint besides its own bytes.
RESPONSE_FRAMING_BYTES = 6
BAD_FRAME_LOG_INTERVAL_S = 10.0
DRAINING_REFUSAL = "the sidecar is draining (shutting down) and takes no new streams; connect to another instance or retry after it restarts"
# google.rpc codes and grpc.StatusCode agree on numbers.
_GRPC_CODES = {c.value[0]: c for c in grpc.StatusCode}


async def stop_reading(iterator: Any) -> None:
    """Ends the call's request generator now, not when the garbage collector finds it.
    A reader that stops early (a bad frame, a refusal, a drain) leaves it suspended,
    in a reference cycle; grpcio 1.65 counts the call's HTTP/2 stream against the
    connection's max-concurrent-streams until the generator is finalized, so ~256
    calls ended early on one connection made it refuse new streams (REFUSED_STREAM)."""
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception as e:  # closing a broken call's reader: nothing left to save
        log.debug("infer: closing the request reader failed: %r", e)


# One log line per interval for bad frames, however many a client sends.
_bad_frames = Throttle(BAD_FRAME_LOG_INTERVAL_S)


class GpuSidecarServicer(pb_grpc.GpuSidecarServicer):
    def __init__(self, ingress: Ingress, config: SidecarConfig, registry: MetricRegistry) -> None:
        self._ingress = ingress
        self._registry = registry
        self.model_info: pb.ModelInfo | None = None  # set once the backend has loaded (set_model)
        self._inputs: tuple[TensorSpec, ...] | None = None  # the model's, for checking requests
        self._templates: tuple[pb.Tensor, ...] = ()  # its outputs, for building responses
        self._template_sizes: tuple[int, ...] = ()
        self._ok_size = 0
        # Sizes of the server's long-lived structures, by name (set by the server).
        self.structures: Callable[[], Awaitable[dict[str, int]]] | None = None
        self._memory = MemoryProbe()
        # Framing per packed response (field tag and length) is counted with each one.
        self._pack_bytes = config.pack_bytes - RESPONSE_FRAMING_BYTES
        self._started = time.monotonic()

    def set_model(self, info: pb.ModelInfo, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self._inputs, self._templates = inputs, output_templates(outputs)
        self._template_sizes = tuple(t.ByteSize() for t in self._templates)
        # Every successful answer's outputs are exactly the model's per-item bytes
        # (sidecar/core/tensors.py split_outputs), so its size is one number.
        full = Answer(0, tuple(bytes(s.nbytes) for s in outputs))
        self._ok_size = wire_size_bound(full, self._template_sizes) + RESPONSE_FRAMING_BYTES
        self.model_info = info

    def _packed_size(self, o: Outgoing) -> int:
        a = o.answer
        if a.failure is None and a.timing is None:
            return self._ok_size
        return wire_size_bound(a, self._template_sizes) + RESPONSE_FRAMING_BYTES

    def _arrivals(self, message: pb.InferStreamRequest) -> list[Arrival]:
        inputs = self._inputs
        if inputs is None:  # still loading: each is answered UNAVAILABLE by its id
            return [Arrival(r.request_id, ()) for r in message.requests] + [
                Arrival(i, ()) for b in message.batches for i in b.request_ids
            ]
        return arrivals(message.requests, message.batches, inputs)

    async def Infer(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
        stream = self._ingress.open_stream(context.time_remaining())
        if stream is None:
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details(DRAINING_REFUSAL)
            return
        reader = asyncio.ensure_future(self._read(request_iterator, stream))
        reason, end = "client went away", None
        try:
            await self._write(stream, context)
            reason = "stream ended"
            if stream.life.phase is not Phase.GONE:
                end = stream.life.end_status()
        finally:
            reader.cancel()
            self._ingress.close_stream(stream, reason)
        if end is not None:
            context.set_code(_GRPC_CODES[int(end.code)])
            context.set_details(end.message)

    async def _write(self, stream: Stream, context: Any) -> None:
        life, budget = stream.life, self._pack_bytes
        while not life.finished:
            if not life.has_output:
                stream.wakeup.clear()
                await stream.wakeup.wait()
                continue
            taken = life.take(budget, self._packed_size)
            templates = self._templates  # the gRPC edge turns core answers into this API's responses
            message = pb.InferStreamResponse(
                responses=[to_wire(a.answer, templates) for a in taken.answers], unknown_cancels=taken.cancels
            )
            try:
                await context.write(message)
            except BaseException as e:
                # Not written: those answers move from their outcome to dropped.
                self._ingress.write_failed(stream, taken.answers)
                if isinstance(e, asyncio.CancelledError):
                    raise
                log.debug("infer: write failed on stream %d: %r", stream.id, e)
                return
            self._ingress.written(stream, taken.answers)

    async def _read(self, request_iterator: AsyncIterator[Any], stream: Stream) -> None:
        life, ingress = stream.life, self._ingress
        frames = 0
        iterator = request_iterator.__aiter__()
        try:
            while True:
                while not life.may_read:
                    if life.phase is not Phase.OPEN:
                        return
                    # At the window: read nothing more until answers are written,
                    # so HTTP/2 flow control holds the client back.
                    stream.readable.clear()
                    await stream.readable.wait()
                try:
                    message = await iterator.__anext__()
                except StopAsyncIteration:
                    ingress.read_ended(stream)
                    return
                frames += 1
                if isinstance(message, Unparsable):
                    held = _bad_frames.allow()
                    if held is not None:
                        event(log, "bad frame", level=logging.WARNING, stream=stream.id, bytes=message.size, held_back=held)
                    _refuse(ingress, stream, frames, f"is not an InferStreamRequest ({message.size} bytes: {message.error})")
                    return
                batches = message.batches
                # Batches are counted before their ids are: each one costs a loop
                # step to walk, ids or none, so a message of millions of empty ones
                # must not get past the window as a message of none.
                n = len(message.requests) + len(batches)
                if n <= life.window and batches:
                    n = len(message.requests) + batch_item_count(batches)
                if n > life.window:
                    # Each request costs the session a few microseconds with the
                    # GIL held: a message of a million tiny requests would stall
                    # every stream for seconds, and no client within its window
                    # can pack more than the window.
                    _refuse(ingress, stream, frames, (
                        f"carries {n} requests, more than the stream's window of {life.window} "
                        "(sidecar.stream.max-outstanding)"
                    ))
                    return
                if n or message.cancel:
                    ingress.submit(stream, n, self._arrivals(message), message.cancel)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the call broke under the read; the writer finds out on its own
            log.debug("infer: read failed on stream %d: %r", stream.id, e)
            if life.phase is Phase.OPEN:
                ingress.read_ended(stream)
        finally:
            await stop_reading(iterator)

    async def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingResponse:
        return pb.PingResponse(version=__version__, uptime=duration(time.monotonic() - self._started))

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Any) -> pb.ModelInfo:
        if self.model_info is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        return self.model_info

    async def GetMemoryReport(self, request: pb.MemoryReportRequest, context: Any) -> pb.MemoryReport:
        structures = await self.structures() if self.structures is not None else self._ingress.sizes()
        # A snapshot of a big heap takes a while: off the loop, so streams keep moving.
        m = await asyncio.to_thread(self._memory.measure, request.set_baseline, request.top or 10)
        return pb.MemoryReport(
            tracing=m.tracing, traced_bytes=m.traced_bytes, traced_peak_bytes=m.traced_peak_bytes,
            rss_bytes=m.rss_bytes, threads=m.threads, open_fds=m.open_fds, has_baseline=m.has_baseline,
            top_growth=[pb.GrowthSite(site=g.site, size_diff_bytes=g.size_diff_bytes, count_diff=g.count_diff,
                                      size_bytes=g.size_bytes) for g in m.top_growth],
            structures=structures, uptime=duration(time.monotonic() - self._started),
        )

    async def GetMetrics(self, request: pb.GetMetricsRequest, context: Any) -> pb.MetricsSnapshot:
        # Quantiles are computed here; off the loop, so streams keep moving meanwhile.
        return metrics_snapshot(await asyncio.to_thread(self._registry.snapshot))


def model_info_message(backend: str, info: BackendInfo, batch_size: int, config: SidecarConfig) -> pb.ModelInfo:
    return pb.ModelInfo(
        backend=backend,
        model_uri=config.model_uri,
        inputs=[tensor_spec(s) for s in info.spec.inputs],
        outputs=[tensor_spec(s) for s in info.spec.outputs],
        limits=pb.Limits(
            max_batch_size=batch_size,
            batch_timeout=duration(config.batch_timeout_s),
            max_queue_length=config.max_queue_length,
            max_queue_wait=duration(config.max_queue_wait_s),
            instances=config.instances,
            max_inflight_batches_per_instance=config.max_inflight_batches,
            max_message_bytes=config.max_message_bytes,
            max_outstanding_per_stream=config.max_outstanding,
            max_queued_per_stream=config.max_per_stream,
            response_pack_bytes=config.response_pack_bytes,
            batch_major_requests=True,
        ),
    )


def add_to_server(servicer: GpuSidecarServicer, server: grpc.aio.Server) -> None:
    """As the generated add_GpuSidecarServicer_to_server, but Infer reads frames
    with the lenient parser (a bad frame ends reading, and the call ends
    INVALID_ARGUMENT once what was read before it is answered)."""
    add_service(server, servicer, pb, "GpuSidecar")


def _refuse(ingress: Ingress, stream: Stream, frame: int, why: str) -> None:
    """Ends reading at a message the stream cannot take; the call then ends
    INVALID_ARGUMENT, saying why, once what was read before it is answered."""
    ingress.bad_frame(stream, (
        f"message {frame} of this stream {why}; the stream was ended after answering the "
        f"{stream.life.read} request(s) read before it"
    ))
