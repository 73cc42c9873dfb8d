"""SIGTERM on a real `gpu-sidecar serve` process: every request answered once, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import time

import grpc
import numpy as np
import pytest

from sidecar.client import InferError, SidecarClient
from tests.rpc.process import start_server

STREAMS = 5
PER_STREAM = 100  # 500 in flight in all
EXIT_TIMEOUT_S = 60


async def _load_then_signal(address: str, pid: int, answered_before_signal: int):
    """Puts 500 requests in flight over several streams, signals once some are answered."""
    clients = [SidecarClient(address) for _ in range(STREAMS)]
    for c in clients:
        await c.connect()
    await clients[0].wait_ready(timeout_s=30)
    futures = [c.submit({"input": np.full(16, i, np.float32)}) for c in clients for i in range(PER_STREAM)]
    signalled_at = None
    while signalled_at is None:
        if sum(f.done() for f in futures) >= answered_before_signal:
            os.kill(pid, signal.SIGTERM)
            signalled_at = time.monotonic()
        await asyncio.sleep(0.005)
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    for c in clients:
        await c.close()
    counts = sum((c.counts for c in clients), start=__import__("collections").Counter())
    return outcomes, counts, signalled_at


def _assert_closed(address: str, health_port: int) -> None:
    for host, port in [tuple(address.rsplit(":", 1)), ("127.0.0.1", health_port)]:
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect((host, int(port)))


def test_sigterm_finishes_everything_in_flight_and_exits_zero(tmp_path):
    server = start_server(
        tmp_path, "--rpc-endpoint", "127.0.0.1:0", "--model-uri", "mock:?base_ms=10&per_item_ms=0",
        "--batch-max-size", "8", "--drain-timeout", "30 s",
    )
    outcomes, counts, _ = asyncio.run(_load_then_signal(server.address, server.proc.pid, answered_before_signal=40))
    assert server.proc.wait(timeout=EXIT_TIMEOUT_S) == 0, server.logs()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, errors[:3]  # the drain had time for all of them
    assert counts["OK"] == STREAMS * PER_STREAM and counts["lost"] == 0
    logs = server.logs()
    assert "event=\"drain started\"" in logs and "completed=True" in logs
    _assert_closed(server.address, server.health_port)


def test_sigterm_with_hung_backend_answers_unavailable_within_drain_timeout(tmp_path):
    server = start_server(
        tmp_path, "--rpc-endpoint", "127.0.0.1:0", "--model-uri", "mock:?base_ms=5&per_item_ms=0&hang_on_batch=3",
        "--batch-max-size", "8", "--batch-max-inflight", "1", "--drain-timeout", "1 s", "--queue-max-wait", "1 min",
    )
    outcomes, counts, signalled_at = asyncio.run(
        _load_then_signal(server.address, server.proc.pid, answered_before_signal=16)
    )
    assert server.proc.wait(timeout=EXIT_TIMEOUT_S) == 0, server.logs()
    exited_after = time.monotonic() - signalled_at
    ok = [o for o in outcomes if isinstance(o, dict)]
    unavailable = [o for o in outcomes if isinstance(o, InferError) and o.code is grpc.StatusCode.UNAVAILABLE]
    assert len(ok) == 16 and len(ok) + len(unavailable) == STREAMS * PER_STREAM
    assert counts["lost"] == 0, "every request must be answered by the server, not given up by the client"
    assert all("drain timeout of 1 s passed" in e.message for e in unavailable)
    # the drain timeout, plus a little for writing the last answers and stopping
    assert exited_after < 1 + 4, f"took {exited_after:.1f} s\n{server.logs()}"
    _assert_closed(server.address, server.health_port)


def test_sigterm_on_unix_socket_removes_the_socket(tmp_path):
    socket_dir = tempfile.mkdtemp(prefix="gs-", dir="/tmp")
    path = f"{socket_dir}/sidecar.sock"
    server = start_server(tmp_path, "--rpc-endpoint", f"unix://{path}", "--model-uri", "mock:?base_ms=1")

    async def one_request():
        async with SidecarClient(server.address) as client:
            await client.wait_ready()
            return await client.infer({"input": np.ones(16, np.float32)})

    assert asyncio.run(one_request())["output"][0] == 2.0
    assert os.path.exists(path)
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=EXIT_TIMEOUT_S) == 0, server.logs()
    assert not os.path.exists(path)
    os.rmdir(socket_dir)


def test_second_signal_exits_at_once(tmp_path):
    server = start_server(
        tmp_path, "--rpc-endpoint", "127.0.0.1:0", "--model-uri", "mock:?base_ms=5&hang_on_batch=1",
        "--drain-timeout", "10 min",
    )

    async def stuck_request():
        client = SidecarClient(server.address)
        await client.connect()
        await client.wait_ready()
        future = client.submit({"input": np.ones(16, np.float32)})
        await asyncio.sleep(0.2)  # let it reach the hung backend
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert server.proc.poll() is None, "the first signal must drain, not exit"
        server.proc.send_signal(signal.SIGTERM)
        future.cancel()

    asyncio.run(stuck_request())
    assert server.proc.wait(timeout=EXIT_TIMEOUT_S) == 1
    assert "second signal" in server.logs()
