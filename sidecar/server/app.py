"""The sidecar server: backends, actors and the gRPC service, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from sidecar.backends import registry
from sidecar.backends.base import Backend
from sidecar.clock import Clock, MonotonicClock
from sidecar.config import SidecarConfig
from sidecar.server.endpoint import grpc_address
from sidecar.server.ingress import Ingress
from sidecar.server.pipeline import Pipeline, start_pipeline
from sidecar.server.servicer import GpuSidecarServicer, add_to_server, model_info_message

log = logging.getLogger(__name__)


class SidecarServer:
    """`await start()` loads the model and listens; `await stop()` shuts down.

    Pass `backends` to serve prepared instances (tests inject fault-injecting
    mocks this way); otherwise `config.instances` are made from the registry.
    """

    def __init__(
        self,
        config: SidecarConfig,
        *,
        clock: Clock | None = None,
        backends: Sequence[Backend] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock or MonotonicClock()
        self._backends = backends
        self._server: grpc.aio.Server | None = None
        self._pipeline: Pipeline | None = None
        self.port: int | None = None  # the bound TCP port (useful with port 0)

    @property
    def pipeline(self) -> Pipeline:
        assert self._pipeline is not None, "not started"
        return self._pipeline

    @property
    def address(self) -> str:
        """Where a client connects: the endpoint, with port 0 replaced by the real port."""
        address = grpc_address(self.config.endpoint)
        if address.startswith("unix:"):
            return address
        host = address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        backends = self._backends or [registry.create(config.backend, config.model_uri) for _ in range(config.instances)]
        ingress = Ingress(loop, self._clock)
        # Loading can take minutes on a real model; keep the loop free meanwhile.
        self._pipeline = await asyncio.to_thread(start_pipeline, config, self._clock, backends, ingress.deliver)
        ingress.attach(self._pipeline.peers.session)
        log.info("backend %r loaded: %d instance(s), max batch %d", config.backend, config.instances, self._pipeline.batch_size)

        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        info = model_info_message(backends[0].name, config.model_uri, self._pipeline.info, self._pipeline.batch_size, config)
        add_to_server(GpuSidecarServicer(ingress, info, config), server)
        try:
            self.port = server.add_insecure_port(grpc_address(config.endpoint))
            await server.start()
        except BaseException:
            await asyncio.to_thread(self._pipeline.stop)
            raise
        self._server = server
        log.info("serving on %s", self.address)

    async def stop(self, grace_s: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self._pipeline is not None:
            await asyncio.to_thread(self._pipeline.stop)
            self._pipeline = None

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
