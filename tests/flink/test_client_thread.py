"""The client on a thread of its own (sidecar/flink/client_thread.py), against real servers.

The server runs on the test's loop; the ClientThread's blocking calls run in worker
threads (asyncio.to_thread), as PyFlink calls them from its own threads. Every wait
is bounded; a hung server is a real grpc.aio server whose Infer reads and never answers.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.client import SHUTDOWN_GRACE_S
from sidecar.config import SidecarConfig
from sidecar.flink import client_thread
from sidecar.flink.client_thread import STOP_GRACE_S, ClientThread
from sidecar.flink.errors import SidecarPermanentError, SidecarRetryableError
from sidecar.reconnect import ReconnectPolicy
from sidecar.server.app import SidecarServer
from tests.rpc.helpers import eventually, run, serving

X = np.arange(16, dtype=np.float32)
WAIT_S = 30.0  # the bound on work that does complete
CONNECT_S = 10.0
FAST = ReconnectPolicy(initial_s=0.02, max_s=0.2)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))  # short: unix socket paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def started(target: str, **options) -> ClientThread:
    client = ClientThread(target, **{"timeout_s": 10.0, **options})
    await asyncio.to_thread(client.start, CONNECT_S)
    return client


async def outcomes(futures, bound_s: float = WAIT_S) -> list[object]:
    """Each concurrent future's result or error, within `bound_s`."""
    waits = [asyncio.wrap_future(f) for f in futures]
    return await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), bound_s)


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


class Unanswering(pb_grpc.GpuSidecarServicer):
    """Reads every Infer message and never answers; GetModelInfo and health are served."""

    def __init__(self) -> None:
        self.received = 0
        self.read = asyncio.Event()

    async def Infer(self, request_iterator, context) -> None:
        async for message in request_iterator:
            self.received += len(message.requests)
            self.read.set()
        await asyncio.Event().wait()  # not even after the client half-closes

    async def GetModelInfo(self, request, context) -> pb.ModelInfo:
        return pb.ModelInfo(backend="unanswering", limits=pb.Limits(max_queue_length=64, max_outstanding_per_stream=64))


async def unanswering_server(endpoint: str) -> tuple[grpc.aio.Server, Unanswering]:
    server, servicer = grpc.aio.server(), Unanswering()
    pb_grpc.add_GpuSidecarServicer_to_server(servicer, server)
    checks = health.aio.HealthServicer()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(endpoint)
    await server.start()
    return server, servicer


# ---- answers ----------------------------------------------------------------------------


def test_requests_submitted_from_a_foreign_thread_resolve_with_the_models_outputs_and_are_tallied():
    n = 50

    async def go() -> None:
        async with serving(model_uri="mock:?base_ms=1&per_item_ms=0") as server:
            client = await started(server.address, name="sidecar-client-t1")
            try:

                def from_another_thread() -> tuple[list[np.ndarray], str]:
                    futures = [client.submit({"input": X + i}) for i in range(n)]
                    return [f.result(WAIT_S)["output"] for f in futures], threading.current_thread().name

                outputs, submitter = await asyncio.to_thread(from_another_thread)
            finally:
                await asyncio.to_thread(client.close, 5.0)
        assert submitter != "sidecar-client-t1"
        for i, output in enumerate(outputs):
            assert output.dtype == np.float32 and output.shape == (16,)
            np.testing.assert_array_equal(output, (X + i) * 2)
        stats = client.stats
        assert (stats.requests, stats.succeeded, stats.failed, stats.retryable, stats.in_flight) == (n, n, 0, 0, 0)
        latency = stats.latency_us.statistics()
        assert latency.size == n and latency.min > 0
        gauges = {name: read() for name, read in stats.gauges().items()}
        assert gauges["requests"] == gauges["succeeded"] == n and gauges["inflight"] == 0
        assert 0 < gauges["latencyP50Us"] <= gauges["latencyP99Us"] <= gauges["latencyMaxUs"]
        assert not threads_named("sidecar-client-t1")

    run(go())


def test_a_bad_input_fails_permanently_invalid_argument_and_its_neighbours_are_served():
    async def go() -> None:
        async with serving(model_uri="mock:?base_ms=1") as server:
            client = await started(server.address)
            try:
                futures = [client.submit({"input": v}) for v in (X, np.ones(3, np.float32), X + 1)]
                good, bad, after = await outcomes(futures)
            finally:
                await asyncio.to_thread(client.close, 5.0)
        assert isinstance(bad, SidecarPermanentError) and bad.code == "INVALID_ARGUMENT", bad
        np.testing.assert_array_equal(good["output"], X * 2)
        np.testing.assert_array_equal(after["output"], (X + 1) * 2)
        assert (client.stats.succeeded, client.stats.failed, client.stats.retryable) == (2, 1, 0)

    run(go())


def test_a_full_queue_is_retryable_resource_exhausted_with_the_servers_retry_hint():
    n = 300

    async def go() -> None:
        async with serving(model_uri="mock:?base_ms=20&per_item_ms=0", max_queue_length=4, max_batch_size=4) as server:
            client = await started(server.address, max_in_flight=10_000)  # past the queue: the server must refuse
            try:
                results = await outcomes([client.submit({"input": X}) for _ in range(n)])
            finally:
                await asyncio.to_thread(client.close, 5.0)
        refused = [r for r in results if isinstance(r, SidecarRetryableError)]
        assert refused, "the queue of 4 never overflowed"
        assert all(r.code == "RESOURCE_EXHAUSTED" and r.retry_after_s is not None and r.retry_after_s > 0
                   for r in refused), refused[:3]
        assert all(isinstance(r, dict) for r in results if not isinstance(r, SidecarRetryableError))
        stats = client.stats
        assert stats.retryable == len(refused) and stats.succeeded == n - len(refused) and stats.in_flight == 0

    run(go())


# ---- starting and closing ---------------------------------------------------------------


def test_start_against_a_socket_nobody_listens_on_fails_unavailable_in_time_leaving_no_thread(socket_dir):
    connect_timeout_s = 1.0
    client = ClientThread(f"unix://{socket_dir}/nobody.sock", timeout_s=5.0, name="sidecar-client-nobody")
    began = time.monotonic()
    with pytest.raises(SidecarRetryableError) as raised:
        client.start(connect_timeout_s)
    took = time.monotonic() - began
    assert raised.value.code == "UNAVAILABLE" and "nobody.sock" in raised.value.message
    assert connect_timeout_s <= took < connect_timeout_s + STOP_GRACE_S, took
    assert not threads_named("sidecar-client-nobody")
    assert not client.alive
    client.close()  # safe after a failed start
    with pytest.raises(RuntimeError):
        client.submit({"input": X})


def test_close_is_bounded_with_a_server_that_never_answers_and_the_unanswered_request_is_cancelled(socket_dir):
    close_timeout_s = 0.5

    async def go() -> None:
        endpoint = f"unix://{socket_dir}/hang.sock"
        server, servicer = await unanswering_server(endpoint)
        try:
            client = await started(endpoint, timeout_s=60.0)
            pending = client.submit({"input": X})
            await asyncio.wait_for(servicer.read.wait(), WAIT_S)
            began = time.monotonic()
            await asyncio.to_thread(client.close, close_timeout_s)
            took = time.monotonic() - began
            (result,) = await outcomes([pending], 5.0)
            await asyncio.to_thread(client.close, close_timeout_s)  # twice is fine
        finally:
            await server.stop(0)
        assert close_timeout_s <= took < close_timeout_s + SHUTDOWN_GRACE_S + 1.0, took
        assert isinstance(result, SidecarPermanentError) and result.code == "CANCELLED", result
        assert servicer.received == 1 and client.stats.failed == 1 and not client.alive
        with pytest.raises(RuntimeError, match="closed"):
            client.submit({"input": X})

    run(go())


def test_a_request_the_server_never_answers_fails_deadline_exceeded_once_its_timeout_and_the_guard_pass(
    socket_dir, monkeypatch
):
    timeout_s, guard_s = 0.3, 0.2
    monkeypatch.setattr(client_thread, "GUARD_S", guard_s)

    async def go() -> None:
        endpoint = f"unix://{socket_dir}/hang.sock"
        server, servicer = await unanswering_server(endpoint)
        try:
            client = await started(endpoint, timeout_s=timeout_s)
            began = time.monotonic()
            (result,) = await outcomes([client.submit({"input": X})], 10.0)
            took = time.monotonic() - began
            await asyncio.to_thread(client.close, 0.1)
        finally:
            await server.stop(0)
        assert isinstance(result, SidecarPermanentError) and result.code == "DEADLINE_EXCEEDED", result
        assert timeout_s + guard_s - 0.05 <= took < timeout_s + guard_s + 5.0, took
        assert servicer.received == 1
        assert (client.stats.failed, client.stats.succeeded, client.stats.in_flight) == (1, 0, 0)

    run(go())


def test_timeout_must_be_positive():
    with pytest.raises(ValueError):
        ClientThread("127.0.0.1:1", timeout_s=0)


# ---- reconnecting -----------------------------------------------------------------------


def quick_config(endpoint: str, **overrides) -> SidecarConfig:
    options = {"model_uri": "mock:?base_ms=1&per_item_ms=0", **overrides}
    return SidecarConfig(endpoint=endpoint, health_port=0, kserve_http_port=0, metrics_reporters=(), **options)


def test_a_stream_lost_with_its_server_comes_back_when_a_new_one_listens_on_the_same_socket(socket_dir):
    endpoint = f"unix://{socket_dir}/sidecar.sock"
    config = quick_config(endpoint)

    async def go() -> None:
        first = SidecarServer(config)
        await first.start()
        client = await started(endpoint, reconnect=FAST, ride_out=False)
        second = None
        try:
            (before,) = await outcomes([client.submit({"input": X})])
            await first.stop(grace_s=0)
            await eventually(lambda: not client.alive, "the client to see its stream die")
            (down,) = await outcomes([client.submit({"input": X})], 5.0)  # failed at once, not queued

            second = SidecarServer(config)
            await second.start()
            await eventually(lambda: client.alive, "the client's stream to come back")
            (after,) = await outcomes([client.submit({"input": X + 1})])
        finally:
            await asyncio.to_thread(client.close, 5.0)
            if second is not None:
                await second.stop()
        np.testing.assert_array_equal(before["output"], X * 2)
        assert isinstance(down, SidecarRetryableError) and down.code == "UNAVAILABLE", down
        np.testing.assert_array_equal(after["output"], (X + 1) * 2)
        stats = client.stats
        assert stats.reconnects >= 1
        # The one submitted while the stream was down was never sent: unsent, not a request.
        assert (stats.requests, stats.succeeded, stats.retryable, stats.failed, stats.unsent) == (2, 2, 0, 0, 1)

    run(go())


def test_with_ride_out_a_record_sent_while_the_sidecar_is_away_is_answered_once_it_is_back(socket_dir):
    endpoint = f"unix://{socket_dir}/sidecar.sock"
    config = quick_config(endpoint)

    async def go() -> None:
        first = SidecarServer(config)
        await first.start()
        client = await started(endpoint, reconnect=FAST)
        second = None
        try:
            await outcomes([client.submit({"input": X})])
            await first.stop(grace_s=0)
            await eventually(lambda: not client.alive, "the client to see its stream die")
            waiting = client.submit({"input": X + 3})  # held: no sidecar to send it to
            second = SidecarServer(config)
            await second.start()
            (answer,) = await outcomes([waiting])
        finally:
            await asyncio.to_thread(client.close, 5.0)
            if second is not None:
                await second.stop()
        np.testing.assert_array_equal(answer["output"], (X + 3) * 2)
        stats = client.stats
        assert (stats.requests, stats.succeeded, stats.retryable, stats.failed, stats.unsent) == (2, 2, 0, 0, 0)

    run(go())


def test_with_ride_out_records_lost_in_flight_are_sent_again_to_the_next_sidecar(socket_dir):
    # A slow mock keeps records in flight when the first server goes: their stream dies
    # under them (UNAVAILABLE), and ride_out sends each again once the second is up.
    endpoint = f"unix://{socket_dir}/sidecar.sock"
    slow = quick_config(endpoint, model_uri="mock:?base_ms=200&per_item_ms=0")

    async def go() -> None:
        first = SidecarServer(slow)
        await first.start()
        client = await started(endpoint, reconnect=FAST)
        second = None
        try:
            futures = [client.submit({"input": X + i}) for i in range(8)]
            await eventually(lambda: client.stats.requests == 8, "all eight to be sent")
            await first.stop(grace_s=0)
            second = SidecarServer(quick_config(endpoint))
            await second.start()
            answers = await outcomes(futures)
        finally:
            await asyncio.to_thread(client.close, 5.0)
            if second is not None:
                await second.stop()
        for i, answer in enumerate(answers):
            assert not isinstance(answer, BaseException), answer
            np.testing.assert_array_equal(answer["output"], (X + i) * 2)
        stats = client.stats
        assert stats.resent >= 1 and stats.retryable == stats.resent
        assert stats.succeeded == 8 and stats.failed == stats.unsent == 0
        assert stats.in_flight == 0

    run(go())


def test_with_ride_out_a_record_fails_unavailable_when_no_sidecar_comes_back_in_its_timeout(socket_dir):
    endpoint = f"unix://{socket_dir}/sidecar.sock"

    async def go() -> None:
        first = SidecarServer(quick_config(endpoint))
        await first.start()
        client = await started(endpoint, reconnect=FAST, timeout_s=0.5)
        try:
            await first.stop(grace_s=0)
            await eventually(lambda: not client.alive, "the client to see its stream die")
            (lost,) = await outcomes([client.submit({"input": X})], 10.0)
        finally:
            await asyncio.to_thread(client.close, 5.0)
        assert isinstance(lost, SidecarRetryableError) and lost.code == "UNAVAILABLE", lost
        assert client.stats.unsent == 1 and client.stats.requests == 0

    run(go())


def test_close_fails_the_records_still_waiting_for_the_sidecar_at_once(socket_dir):
    endpoint = f"unix://{socket_dir}/sidecar.sock"

    async def go() -> None:
        first = SidecarServer(quick_config(endpoint))
        await first.start()
        client = await started(endpoint, reconnect=FAST, timeout_s=60.0)
        await first.stop(grace_s=0)
        await eventually(lambda: not client.alive, "the client to see its stream die")
        waiting = client.submit({"input": X})
        await eventually(lambda: client.stats.unsent == 0 and not waiting.done(), "the record to be held")
        began = time.monotonic()
        await asyncio.to_thread(client.close, 5.0)
        (closed,) = await outcomes([waiting], 5.0)
        assert time.monotonic() - began < 5.0 + STOP_GRACE_S  # not the record's 60 s
        assert isinstance(closed, SidecarPermanentError) and closed.code == "CANCELLED", closed

    run(go())
