"""Readiness, shown two ways: the standard grpc.health.v1 service, and HTTP
`GET /health` answering `READY` (200) or `NOT_READY` (503) for Kubernetes and
Flink probes. Ready means: backend loaded and warmed up, and not draining.

The HTTP side is a bounded `HttpEndpoint` (sidecar/http_endpoint.py) on the
server's event loop: slow or idle probes are closed after its head timeout, and
a flood past its connection cap is answered 503 at once.
"""

from __future__ import annotations

from http import HTTPStatus

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidecar.http_endpoint import HttpEndpoint, HttpLimits, Response

SERVICE = "gpusidecar.v1.GpuSidecar"
PATH = "/health"
_READY = Response(HTTPStatus.OK, b"READY\n")
_NOT_READY = Response(HTTPStatus.SERVICE_UNAVAILABLE, b"NOT_READY\n")


class Health:
    def __init__(self, http_limits: HttpLimits = HttpLimits()) -> None:
        self._ready = False
        self._grpc = health.aio.HealthServicer()
        self._http_limits = http_limits
        self._http: HttpEndpoint | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def http(self) -> HttpEndpoint | None:
        """The HTTP endpoint while it listens."""
        return self._http

    async def set_ready(self, ready: bool) -> None:
        self._ready = ready
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE):
            await self._grpc.set(service, status)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._grpc, server)

    async def start_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Serves GET /health on `host`; returns the bound port (useful with port 0)."""
        endpoint = HttpEndpoint({PATH: self._answer}, self._http_limits, name="health")
        bound = await endpoint.start(host, port)
        self._http = endpoint
        return bound

    async def stop_http(self) -> None:
        endpoint, self._http = self._http, None
        if endpoint is not None:
            await endpoint.close()

    def _answer(self) -> Response:
        return _READY if self._ready else _NOT_READY
