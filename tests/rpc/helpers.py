"""Start a real server (real gRPC, real actors) for a test, and stop it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
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
    overrides.setdefault("kserve_http_port", 0)
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


WAIT_S = 10.0  # the bound on every wait for the server to reach a state


class Gate:
    """A mock backend's sleep that blocks until the test opens the gate: it holds a
    batch in the backend (or a load) for as long as the test needs, without sleeping."""

    def __init__(self, opened: bool = True) -> None:
        self.open = threading.Event()
        if opened:
            self.open.set()

    def __call__(self, seconds: float) -> None:
        assert self.open.wait(WAIT_S), "gate never opened"


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Bounded wait for a condition the pipeline reaches asynchronously."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def settled_counts(server: SidecarServer, until: Callable[[dict], bool] = lambda counts: True) -> dict:
    """The server's counts once the metrics have caught up: nothing in flight, nothing queued.

    Metrics arrive after the fact (an answer can reach its client before the session's
    count reaches the metrics actor), so they are read with a bounded wait, never at once.
    """
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        counts = await server_counts(server)
        if counts["inflight"] == 0 and counts["queue_depth"] == 0 and until(counts):
            return counts
        assert asyncio.get_running_loop().time() < deadline, f"metrics never settled: {counts}"
        await asyncio.sleep(0.005)


async def queue_depth_reaches(server: SidecarServer, depth: int) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (counts := await server_counts(server))["queue_depth"] != depth:
        assert asyncio.get_running_loop().time() < deadline, f"queue depth {counts['queue_depth']}, not {depth}"
        await asyncio.sleep(0.005)
