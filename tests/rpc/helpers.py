"""Start a real server (real gRPC, real actors) for a test, and stop it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from actors.messages import GetCounts
from sidecar.config import SidecarConfig
from sidecar.server.app import SidecarServer


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def serving(transport: str = "tcp", **overrides: Any) -> AsyncIterator[SidecarServer]:
    backends = overrides.pop("backends", None)
    socket_dir = None
    if transport == "unix":
        # Short path: unix socket paths are limited to ~107 bytes.
        socket_dir = tempfile.mkdtemp(prefix="gs-", dir="/tmp")
        endpoint = f"unix://{socket_dir}/sidecar.sock"
    else:
        endpoint = "127.0.0.1:0"
    overrides.setdefault("health_port", 0)
    overrides.setdefault("prometheus_port", 0)
    server = SidecarServer(SidecarConfig(endpoint=endpoint, **overrides), backends=backends)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)


async def server_counts(server: SidecarServer) -> dict[str, Any]:
    return await asyncio.to_thread(server.pipeline.peers.metrics.ask, GetCounts(), timeout=5)
