"""The GpuSidecar gRPC service (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from actors.session import Outgoing
from sidecar import __version__
from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.backends.base import BackendInfo
from sidecar.config import SidecarConfig
from sidecar.metrics.registry import MetricRegistry
from sidecar.rpc.convert import duration, metrics_snapshot, tensor_spec
from sidecar.server.ingress import Ingress, Stream

log = logging.getLogger(__name__)


class GpuSidecarServicer(pb_grpc.GpuSidecarServicer):
    def __init__(self, ingress: Ingress, config: SidecarConfig, registry: MetricRegistry) -> None:
        self._ingress = ingress
        self._registry = registry
        self.model_info: pb.ModelInfo | None = None  # set once the backend has loaded
        # Responses are packed up to half the message limit, leaving room for framing.
        self._pack_bytes = config.max_message_bytes // 2
        self._started = time.monotonic()

    async def Infer(self, request_iterator: AsyncIterator[pb.InferStreamRequest], context: Any) -> None:
        stream = self._ingress.open_stream(context.time_remaining())
        reader = asyncio.ensure_future(self._read(request_iterator, stream))
        reason = "client went away"
        try:
            while not stream.finished:
                if not stream.outbox and not stream.unknown_cancels:
                    stream.wakeup.clear()
                    await stream.wakeup.wait()
                    continue
                taken = self._take(stream)
                cancels, stream.unknown_cancels = stream.unknown_cancels, []
                await context.write(
                    pb.InferStreamResponse(responses=[response for response, *_ in taken], unknown_cancels=cancels)
                )
                self._ingress.written(taken)
            reason = "stream ended"
            await reader  # surfaces a read error, if any
        finally:
            reader.cancel()
            self._ingress.close_stream(stream, reason)

    async def _read(self, request_iterator: AsyncIterator[pb.InferStreamRequest], stream: Stream) -> None:
        try:
            async for message in request_iterator:
                if message.requests or message.cancel:
                    self._ingress.submit(stream, message.requests, message.cancel)
        finally:
            stream.reading_done = True
            stream.wakeup.set()

    def _take(self, stream: Stream) -> list[Outgoing]:
        """Takes as many responses as fit in one message."""
        outbox, budget = stream.outbox, self._pack_bytes
        n = 0
        while n < len(outbox):
            budget -= outbox[n][0].ByteSize()
            if budget < 0 and n > 0:
                break
            n += 1
        taken, stream.outbox = outbox[:n], outbox[n:]
        return taken

    async def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingResponse:
        return pb.PingResponse(version=__version__, uptime=duration(time.monotonic() - self._started))

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Any) -> pb.ModelInfo:
        if self.model_info is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        return self.model_info

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
        ),
    )


def add_to_server(servicer: GpuSidecarServicer, server: grpc.aio.Server) -> None:
    pb_grpc.add_GpuSidecarServicer_to_server(servicer, server)
