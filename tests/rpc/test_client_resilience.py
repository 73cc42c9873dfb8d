"""The client never leaves a caller waiting without a bound: a dead stream fails what it
held at once, a hung server cannot stall close(), a reconnect waits for SERVING, and the
in-flight window keeps a client that submits 10,000 at once inside the server's queue.

Servers that are killed, restarted or frozen run as real subprocesses (tests/rpc/process.py);
the rest run in this process. Every wait is bounded; the bounds are generous for a slow,
shared 2-core machine, and each test prints what it measured (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.backends.mock import MockBackend
from sidecar.client import SHUTDOWN_GRACE_S, InferError, SidecarClient
from sidecar.config import SidecarConfig
from sidecar.reconnect import ReconnectPolicy
from sidecar.server.app import SidecarServer
from sidecar.window import DEFAULT_MAX_IN_FLIGHT
from tests.rpc.helpers import Gate, eventually, run, server_counts, serving, settled_counts
from tests.rpc.process import ServerProcess, start_server

X = {"input": np.arange(16, dtype=np.float32)}
FAIL_BOUND_S = 5.0  # a dead stream's requests fail within this
RECONNECT_BOUND_S = 10.0  # a restarted, ready server is back in use within this
WAIT_S = 30.0  # the bound on waiting for work that does complete
FAST = ReconnectPolicy(initial_s=0.02, max_s=0.2)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: unix socket paths are limited to ~107 bytes, and tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stop(server: ServerProcess) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGCONT)  # in case the test froze it
        server.proc.kill()
    server.proc.wait(timeout=WAIT_S)


async def received_reaches(server: SidecarServer, n: int) -> int:
    """The server's count of requests read, once it is at least `n` (bounded wait)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (received := (await server_counts(server))["outcomes"].get("received", 0)) < n:
        assert asyncio.get_running_loop().time() < deadline, f"the server read {received}, never {n}"
        await asyncio.sleep(0.01)
    return received


async def outcomes(futures: list[asyncio.Future], bound_s: float) -> list[object]:
    """Every future's result or error, within `bound_s`."""
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), bound_s)


class RecordingMock(MockBackend):
    """A mock that remembers the size of every batch it computed."""

    def __init__(self, model_uri: str, sleep) -> None:
        super().__init__(model_uri, sleep=sleep)
        self.sizes: list[int] = []

    def infer(self, inputs):
        self.sizes.append(len(inputs["input"]))
        return super().infer(inputs)


def failed_with(result: object, code: grpc.StatusCode) -> bool:
    return isinstance(result, InferError) and result.code is code


# ---- the stream dies --------------------------------------------------------------------


def test_killed_server_fails_every_pending_request_unavailable_within_the_bound(tmp_path):
    """SIGKILL with 8 requests in flight and 12 waiting for the window: all 20 fail
    UNAVAILABLE at once, so does a later submit (already failed when returned), and
    close() returns within its bound."""
    server = start_server(
        tmp_path, "--rpc-endpoint", "127.0.0.1:0", "--model-uri", "mock:?base_ms=60000&per_item_ms=0",
        "--queue-max-wait", "1 min",  # nothing is answered before the kill, not even an expiry
    )

    async def go() -> None:
        client = SidecarClient(server.address, max_in_flight=8)
        await client.connect()
        await client.wait_ready(timeout_s=WAIT_S)
        assert client.alive and client.dead_reason is None
        pending = [client.submit(X) for _ in range(20)]
        await eventually(lambda: client.in_flight == 8, "the window's 8 to be written")

        killed_at = time.monotonic()
        server.proc.kill()
        reason = await asyncio.wait_for(client.wait_dead(), FAIL_BOUND_S)
        results = await outcomes(pending, FAIL_BOUND_S)
        took = time.monotonic() - killed_at

        late = client.submit(X)
        assert late.done() and failed_with(late.exception(), grpc.StatusCode.UNAVAILABLE)
        assert "not reconnecting" in late.exception().message
        closing_at = time.monotonic()
        await client.close(timeout_s=5.0)
        close_took = time.monotonic() - closing_at
        print(
            f"\nSIGKILL: 20 pending failed UNAVAILABLE {took * 1000:.0f} ms after the kill; "
            f"close() {close_took * 1000:.0f} ms"
        )

        assert took < FAIL_BOUND_S
        assert close_took < 5.0 + SHUTDOWN_GRACE_S
        assert all(failed_with(r, grpc.StatusCode.UNAVAILABLE) for r in results), results
        assert reason.code is grpc.StatusCode.UNAVAILABLE and "stream failed" in reason.message
        assert not client.alive
        assert client.counts["sent"] == client.counts["lost"] == 8
        assert client.counts["unsent"] == 12 + 1
        assert client.reconnects == 0

    try:
        asyncio.run(go())
    finally:
        stop(server)


def test_stream_ended_by_a_draining_server_makes_later_submits_fail_at_once():
    async def go() -> None:
        config = SidecarConfig(endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, metrics_reporters=(), model_uri="mock:?base_ms=1")
        server = SidecarServer(config)
        await server.start()
        client = SidecarClient(server.address)
        await client.connect()
        try:
            assert isinstance(await client.infer(X), dict)
            await server.drain(timeout_s=WAIT_S)  # answers what is open, then ends every stream
            reason = await asyncio.wait_for(client.wait_dead(), FAIL_BOUND_S)
            assert reason.code is grpc.StatusCode.UNAVAILABLE, reason
            late = client.submit(X)
            assert late.done() and failed_with(late.exception(), grpc.StatusCode.UNAVAILABLE)
            assert client.counts["OK"] == 1 and client.counts["lost"] == 0 and client.counts["unsent"] == 1
        finally:
            await client.close(timeout_s=5.0)

    run(go())


def test_client_of_an_absent_server_is_dead_at_once_not_hanging(socket_dir):
    async def go() -> None:
        client = SidecarClient(f"unix://{socket_dir}/nobody.sock")
        started = time.monotonic()
        await asyncio.wait_for(client.connect(), FAIL_BOUND_S)
        reason = await asyncio.wait_for(client.wait_dead(), FAIL_BOUND_S)
        assert reason.code is grpc.StatusCode.UNAVAILABLE and not client.alive
        assert client.max_in_flight == DEFAULT_MAX_IN_FLIGHT  # GetModelInfo could not answer
        assert failed_with(client.submit(X).exception(), grpc.StatusCode.UNAVAILABLE)
        await client.close(timeout_s=5.0)
        assert time.monotonic() - started < FAIL_BOUND_S

    run(go())


# ---- reconnecting -----------------------------------------------------------------------


def test_reconnects_to_a_server_restarted_on_the_same_address_and_resumes(tmp_path, socket_dir):
    endpoint = f"unix://{socket_dir}/sidecar.sock"
    args = ("--rpc-endpoint", endpoint, "--model-uri", "mock:?base_ms=200&per_item_ms=0")
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    servers = [start_server(tmp_path / "first", *args)]

    async def go() -> None:
        client = SidecarClient(endpoint, reconnect=ReconnectPolicy(initial_s=0.05, max_s=0.5))
        await client.connect()
        await client.wait_ready(timeout_s=WAIT_S)
        assert isinstance(await asyncio.wait_for(client.infer(X), WAIT_S), dict)
        pending = [client.submit(X) for _ in range(5)]
        await eventually(lambda: client.in_flight == 5, "5 requests to be written")

        killed_at = time.monotonic()
        servers[0].proc.kill()
        results = await outcomes(pending, FAIL_BOUND_S)
        assert all(failed_with(r, grpc.StatusCode.UNAVAILABLE) for r in results), results
        refused = client.submit(X)  # while reconnecting: failed at once, not queued
        assert refused.done() and "reconnecting" in refused.exception().message

        servers.append(await asyncio.to_thread(start_server, tmp_path / "second", *args))
        listening_at = time.monotonic()
        await client.wait_alive(timeout_s=RECONNECT_BOUND_S)
        alive_at = time.monotonic()
        outputs = await asyncio.wait_for(asyncio.gather(*[client.submit(X) for _ in range(10)]), WAIT_S)
        await client.close(timeout_s=WAIT_S)
        print(
            f"\nreconnect: back {alive_at - killed_at:.2f} s after the kill, {alive_at - listening_at:.2f} s after "
            f"the new server listened; {client.reconnect_attempts} attempts"
        )
        assert all(out["output"][0] == 0.0 and out["output"][1] == 2.0 for out in outputs)
        assert client.reconnects == 1
        assert client.counts["lost"] == 5 and client.counts["OK"] == 11 and client.counts["unsent"] == 1

    try:
        asyncio.run(go())
    finally:
        for server in servers:
            stop(server)


def test_reconnect_waits_until_the_server_says_serving(socket_dir):
    """A server that listens but is still loading answers health NOT_SERVING: the
    client keeps failing submits at once and does not open a stream until SERVING."""
    endpoint = f"unix://{socket_dir}/sidecar.sock"
    config = SidecarConfig(endpoint=endpoint, health_port=0, kserve_http_port=0, metrics_reporters=(), model_uri="mock:?base_ms=1")

    async def go() -> None:
        first = SidecarServer(config)
        await first.start()
        client = SidecarClient(endpoint, reconnect=FAST)
        await client.connect()
        assert isinstance(await client.infer(X), dict)
        await first.stop(grace_s=0)
        await asyncio.wait_for(client.wait_dead(), FAIL_BOUND_S)

        gate = Gate(opened=False)
        loading_backend = MockBackend("mock:?load_ms=1&base_ms=1&per_item_ms=0", sleep=gate)
        second = SidecarServer(config, backends=[loading_backend])
        await second.listen()  # NOT_SERVING until loaded
        loading = asyncio.ensure_future(second.load())
        try:
            seen = client.reconnect_attempts
            await eventually(lambda: client.reconnect_attempts >= seen + 3, "three health checks on the loading server")
            assert not client.alive
            refused = client.submit(X)
            assert refused.done() and failed_with(refused.exception(), grpc.StatusCode.UNAVAILABLE)

            gate.open.set()
            await asyncio.wait_for(loading, WAIT_S)
            await client.wait_alive(timeout_s=RECONNECT_BOUND_S)
            assert isinstance(await asyncio.wait_for(client.infer(X), WAIT_S), dict)
            assert client.reconnects == 1
            await client.close(timeout_s=WAIT_S)
        finally:
            gate.open.set()
            await second.stop()

    run(go())


def test_close_stops_reconnecting_at_once(socket_dir):
    async def go() -> None:
        # the first wait before reconnecting is a minute: close() must not sit it out
        client = SidecarClient(f"unix://{socket_dir}/nobody.sock", reconnect=ReconnectPolicy(initial_s=60, max_s=60))
        await client.connect()
        await asyncio.wait_for(client.wait_dead(), FAIL_BOUND_S)
        started = time.monotonic()
        await client.close(timeout_s=5.0)
        assert time.monotonic() - started < SHUTDOWN_GRACE_S
        assert not client.alive and client.reconnect_attempts == 0
        with pytest.raises(RuntimeError):
            await client.wait_alive(timeout_s=1.0)

    run(go())


# ---- close() against a hung server -------------------------------------------------------


@pytest.mark.parametrize("hang", ["backend never finishes", "server process stopped"])
def test_close_with_a_hung_server_returns_within_its_timeout_and_cancels_the_rest(tmp_path, hang):
    server = start_server(
        tmp_path, "--rpc-endpoint", "127.0.0.1:0", "--model-uri", "mock:?base_ms=600000&per_item_ms=0",
        "--queue-max-wait", "1 min",
    )
    close_timeout_s = 1.0

    async def go() -> None:
        client = SidecarClient(server.address)
        await client.connect()
        await client.wait_ready(timeout_s=WAIT_S)
        pending = [client.submit(X) for _ in range(5)]
        await eventually(lambda: client.in_flight == 5, "5 requests to be written")
        if hang == "server process stopped":
            server.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        await client.close(timeout_s=close_timeout_s)
        took = time.monotonic() - started
        print(f"\nclose() with a hung server ({hang}): returned after {took:.2f} s (timeout {close_timeout_s:g} s)")
        assert close_timeout_s <= took < close_timeout_s + SHUTDOWN_GRACE_S
        results = await outcomes(pending, FAIL_BOUND_S)
        assert all(failed_with(r, grpc.StatusCode.CANCELLED) for r in results), results
        assert client.counts["CANCELLED"] == 5 and client.counts["lost"] == 0
        assert not client.alive and client.dead_reason is not None

    try:
        asyncio.run(go())
    finally:
        stop(server)


# ---- the in-flight window ---------------------------------------------------------------


def test_ten_thousand_at_once_from_a_packed_client_fit_the_default_window_none_refused():
    n = 10_000

    async def go() -> None:
        async with serving() as server:  # the default queue
            async with SidecarClient(server.address) as client:
                started = time.monotonic()
                results = await outcomes([client.submit(X) for _ in range(n)], 120)
                took = time.monotonic() - started
            refused = [r for r in results if failed_with(r, grpc.StatusCode.RESOURCE_EXHAUSTED)]
            print(
                f"\nwindow: {n} submitted at once, window {client.max_in_flight} (from GetModelInfo), "
                f"peak in flight {client.peak_in_flight}, {len(refused)} RESOURCE_EXHAUSTED, {took:.2f} s"
            )
            assert not refused
            assert all(isinstance(r, dict) for r in results), [r for r in results if not isinstance(r, dict)][:3]
            limits = SidecarConfig()
            assert client.max_in_flight == min(limits.max_outstanding, limits.max_queue_length)
            assert client.peak_in_flight <= client.max_in_flight
            assert client.counts["OK"] == client.counts["sent"] == n
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": n, "succeeded": n}

    run(go())


def test_an_explicit_window_is_never_exceeded_and_a_waiting_request_is_cancelled_unsent():
    window, n = 5, 100

    async def go() -> None:
        gate = Gate(opened=False)
        backend = RecordingMock("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], model_uri=backend.model_uri) as server:
            async with SidecarClient(server.address, max_in_flight=window) as client:
                futures = [client.submit(X) for _ in range(n)]
                await eventually(lambda: client.in_flight == window, "the window to fill")
                # the server holds exactly the window, the rest waits in the client
                assert await received_reaches(server, window) == window
                assert client.counts["sent"] == window

                with pytest.raises(ValueError):  # an id still waiting is in flight too: refused, not overwritten
                    client.submit_raw(pb.InferRequest(request_id=n - 1))
                last = futures[-1]
                client.cancel_request(n)  # ids count from 1: the last one, still waiting in the client
                assert last.done() and failed_with(last.exception(), grpc.StatusCode.CANCELLED)

                gate.open.set()
                results = await asyncio.wait_for(asyncio.gather(*futures[:-1]), WAIT_S)
            assert all(isinstance(r, dict) for r in results)
            print(f"\nexplicit window {window}: peak in flight {client.peak_in_flight}, "
                  f"largest batch {max(backend.sizes)}")
            assert client.peak_in_flight == window
            assert max(backend.sizes) <= window
            assert client.counts["OK"] == client.counts["sent"] == n - 1 and client.counts["unsent"] == 1
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": n - 1, "succeeded": n - 1}

    run(go())


def test_default_window_follows_a_servers_smaller_limits_so_they_are_never_overrun():
    """Against a queue of 64 with a per-stream cap of 16, the default window is 16: 1,000
    submitted at once all succeed. A client that opens its window past the limits is refused."""
    n = 1000
    small = dict(model_uri="mock:?base_ms=2&per_item_ms=0", max_batch_size=8, max_queue_length=64, max_per_stream=16)

    async def go() -> None:
        async with serving(**small) as server:
            windowed, greedy = SidecarClient(server.address), SidecarClient(server.address, max_in_flight=n)
            async with windowed, greedy:
                assert windowed.max_in_flight == 16 and greedy.max_in_flight == n
                ok = await outcomes([windowed.submit(X) for _ in range(n)], WAIT_S)
                over = await outcomes([greedy.submit(X) for _ in range(n)], WAIT_S)
            refused = sum(failed_with(r, grpc.StatusCode.RESOURCE_EXHAUSTED) for r in over)
            print(f"\nsmall limits (queue 64, per stream 16): default window {windowed.max_in_flight}: "
                  f"{windowed.counts['OK']}/{n} OK; window {n}: {refused}/{n} RESOURCE_EXHAUSTED")
            assert all(isinstance(r, dict) for r in ok) and windowed.peak_in_flight == 16
            assert refused > 0

    run(go())
