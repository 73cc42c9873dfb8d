"""Readiness, shown two ways: the standard grpc.health.v1 service, and HTTP
`GET /health` answering `READY` (200) or `NOT_READY` (503) for Kubernetes and
Flink probes. Ready means: backend loaded and warmed up, and not draining.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "gpusidecar.v1.GpuSidecar"
# An HTTP request head larger than this, or slower than this, is dropped.
_MAX_HEAD_BYTES = 8192
_READ_TIMEOUT_S = 5.0


class Health:
    def __init__(self) -> None:
        self._ready = False
        self._grpc = health.aio.HealthServicer()
        self._http: asyncio.Server | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    async def set_ready(self, ready: bool) -> None:
        self._ready = ready
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE):
            await self._grpc.set(service, status)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._grpc, server)

    async def start_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Serves GET /health; returns the bound port (useful with port 0)."""
        self._http = await asyncio.start_server(self._answer, host, port, limit=_MAX_HEAD_BYTES)
        return self._http.sockets[0].getsockname()[1]

    async def stop_http(self) -> None:
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()
            self._http = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if path.split("?", 1)[0] != "/health":
                status, body = "404 Not Found", "not found: try GET /health\n"
            elif method not in ("GET", "HEAD"):
                status, body = "405 Method Not Allowed", "use GET\n"
            elif self._ready:
                status, body = "200 OK", "READY\n"
            else:
                status, body = "503 Service Unavailable", "NOT_READY\n"
            payload = body.encode() if method != "HEAD" else b""
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode() + payload
            )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass  # a broken or slow probe gets no answer; the next one will
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
