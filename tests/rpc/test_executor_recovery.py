"""Executors that hang, fail to reload or run out: readiness, retries and the fatal exit.

Real server, real gRPC. Waits are bounded (`eventually`, `WAIT_S`); where a test
needs the watchdog to fire at a chosen moment it runs the server on a FakeClock and
moves time itself, rather than sleeping.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np

from actors.messages import GetSnapshot
from sidecar.backends.base import BackendError, BackendInfo
from sidecar.backends.mock import MockBackend
from sidecar.client import InferError, SidecarClient
from sidecar.config import SidecarConfig
from sidecar.server.app import SidecarServer
from tests.fakes import FakeClock
from tests.rpc.helpers import WAIT_S, Gate, eventually, run, serving
from tests.rpc.process import start_server
from tests.rpc.test_health import NOT_SERVING, SERVING, grpc_health, http_health

X = {"input": np.arange(16, dtype=np.float32)}


async def outcomes(futures) -> list:
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT_S)


def config(**overrides) -> SidecarConfig:
    base = dict(
        endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, metrics_reporters=(), max_batch_size=4, max_inflight_batches=1,
        batch_timeout_s=0.0, backend_timeout_s=0.2,
    )
    return SidecarConfig(**{**base, **overrides})


async def snapshot(server: SidecarServer) -> dict:
    return await asyncio.to_thread(server.pipeline.peers.batcher.ask, GetSnapshot(), timeout=WAIT_S)


def is_error(result, code: grpc.StatusCode) -> bool:
    return isinstance(result, InferError) and result.code is code


class RecordingMock(MockBackend):
    """Notes the thread it was made on and the thread it loaded on."""

    def __init__(self, model_uri: str, **kwargs) -> None:
        super().__init__(model_uri, **kwargs)
        self.made_on = threading.current_thread().name
        self.loaded_on: str | None = None

    def load(self) -> BackendInfo:
        self.loaded_on = threading.current_thread().name
        return super().load()


# ---- readiness: the last capacity report wins ----------------------------------------------


def test_capacity_down_and_up_in_one_loop_pass_leaves_health_ready():
    async def go():
        async with serving(model_uri="mock:?base_ms=1") as server:
            loop = asyncio.get_running_loop()

            def report(*ups: int) -> None:  # as the batcher's thread does: one callback per report
                for up in ups:
                    loop.call_soon_threadsafe(server._capacity_changed, up)

            # both callbacks run in one pass of the loop, before this coroutine resumes
            await asyncio.to_thread(report, 0, 1)
            assert await http_health(server.health_port) == (200, "READY\n")
            assert await grpc_health(server.address) == SERVING
            assert server.health.ready
            # the other way round, the last report wins too
            await asyncio.to_thread(report, 1, 0)
            assert await http_health(server.health_port) == (503, "NOT_READY\n")
            assert await grpc_health(server.address) == NOT_SERVING
            await asyncio.to_thread(report, 0, 1, 0, 1)
            assert await http_health(server.health_port) == (200, "READY\n")

    run(go())


# ---- a replacement that fails to load is retried -------------------------------------------


def test_failing_replacement_load_is_retried_with_backoff_and_the_instance_comes_back():
    async def go():
        calls: list[float] = []
        made: list[RecordingMock] = []

        def make_backend():  # fails the first two times it is called
            calls.append(time.monotonic())
            if len(calls) <= 2:
                raise BackendError(f"CUDA out of memory (attempt {len(calls)})")
            made.append(RecordingMock("mock:?base_ms=1"))
            return made[-1]

        hung = MockBackend("mock:?base_ms=1&hang_on_batch=1")
        server = SidecarServer(config(reload_attempts=5), backends=[hung], make_backend=make_backend)
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                stuck = await outcomes([client.submit(X)])
                assert is_error(stuck[0], grpc.StatusCode.DEADLINE_EXCEEDED)
                # while no instance is up: UNAVAILABLE at once, with a retry hint
                asked = time.monotonic()
                refused = await outcomes([client.submit(X)])
                answered_in = time.monotonic() - asked
                assert is_error(refused[0], grpc.StatusCode.UNAVAILABLE), refused
                assert "no backend instance is up" in refused[0].message
                assert 0.001 <= refused[0].retry_after_s <= 30.0
                await eventually(lambda: len(made) == 1 and server.health.ready, "the third load to bring it back")
                made_up = time.monotonic()
                assert isinstance(await asyncio.wait_for(client.infer(X), WAIT_S), dict)
            gaps = [b - a for a, b in zip(calls, calls[1:])]
            print(
                f"\nload attempts after the hang at +{[round((c - calls[0]) * 1000) for c in calls]} ms "
                f"(backoff 500, then 1000); up again {round((made_up - calls[0]) * 1000)} ms after the hang; "
                f"UNAVAILABLE while down answered in {answered_in * 1000:.1f} ms"
            )
            assert len(calls) == 3
            assert gaps[0] >= 0.5 - 0.01 and gaps[1] >= 1.0 - 0.01  # the backoff, never sooner
            assert gaps[0] < 0.5 + 1.0 and gaps[1] < 1.0 + 1.0
            # made and loaded on the new executor's own thread, not the batcher's
            assert made[0].made_on == made[0].loaded_on and made[0].made_on.startswith("ExecutorActor-")
            assert (await snapshot(server))["executor_phases"] == ("UP",)
            assert server.fatal_reason is None
        finally:
            hung.close()
            await server.stop()

    run(go())


def test_every_instance_given_up_after_its_reload_attempts_is_fatal():
    async def go():
        attempts: list[float] = []

        def make_backend():
            attempts.append(time.monotonic())
            raise BackendError("no GPU visible")

        hung = MockBackend("mock:?base_ms=1&hang_on_batch=1")
        server = SidecarServer(config(reload_attempts=2), backends=[hung], make_backend=make_backend)
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                assert is_error((await outcomes([client.submit(X)]))[0], grpc.StatusCode.DEADLINE_EXCEEDED)
                reason = await asyncio.wait_for(server.wait_fatal(), WAIT_S)
                assert "no backend instance is up and none can come back" in reason
                assert "no GPU visible" in reason and len(attempts) == 2
                assert await http_health(server.health_port) == (503, "NOT_READY\n")
                after = await outcomes([client.submit(X)])
                assert is_error(after[0], grpc.StatusCode.UNAVAILABLE)
                assert "exiting after a fatal fault" in after[0].message
        finally:
            hung.close()
            await server.stop()

    run(go())


# ---- hung instances: the cap, and the fatal path ---------------------------------------------


def test_past_the_hung_cap_the_fatal_path_fires_and_what_is_in_flight_is_answered_unavailable():
    async def go():
        clock = FakeClock()
        gate = Gate(opened=False)
        hung = MockBackend("mock:?base_ms=1&hang_on_batch=1")  # instance 0: hangs
        slow = MockBackend("mock:?base_ms=1", sleep=gate)  # instance 1: busy until the gate opens
        server = SidecarServer(
            config(instances=2, max_hung=0), clock=clock, backends=[hung, slow],
            make_backend=lambda: MockBackend("mock:?base_ms=1"),
        )
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                first = client.submit(X)  # to instance 0 (least loaded, lowest index): hangs
                await eventually(lambda: server.pipeline.peers.batcher.ask(GetSnapshot(), timeout=WAIT_S)
                                 ["inflight_batches"] == (1, 0), "the first batch to run")
                clock.advance(0.1)
                second = client.submit(X)  # to instance 1, 100 ms later: in flight when the end comes
                await eventually(lambda: server.pipeline.peers.batcher.ask(GetSnapshot(), timeout=WAIT_S)
                                 ["inflight_batches"] == (1, 1), "the second batch to run")
                assert server.fatal_reason is None and server.health.ready
                clock.advance(0.1)  # instance 0 has run 200 ms: given up on as hung, one more than max-hung 0
                reason = await asyncio.wait_for(server.wait_fatal(), WAIT_S)
                assert reason.startswith("1 backend instance(s) given up on as hung have not returned")
                assert "sidecar.backend.max-hung (0)" in reason
                done = await outcomes([first, second])
                assert is_error(done[0], grpc.StatusCode.DEADLINE_EXCEEDED)
                assert is_error(done[1], grpc.StatusCode.UNAVAILABLE)  # answered now, not when it finishes
                assert "exiting after a fatal fault" in done[1].message
                assert await http_health(server.health_port) == (503, "NOT_READY\n")
                assert await grpc_health(server.address) == NOT_SERVING
                later = await outcomes([client.submit(X)])
                assert is_error(later[0], grpc.StatusCode.UNAVAILABLE)
                snap = await snapshot(server)
                assert snap["state"] == "FAILED" and snap["stuck_hung"] == 1
        finally:
            gate.open.set()
            hung.close()
            await server.stop()

    run(go())


def test_hung_instances_up_to_the_cap_are_replaced_and_one_more_is_fatal():
    async def go():
        made: list[MockBackend] = []

        def make_backend():  # every replacement hangs on its first batch too
            made.append(MockBackend("mock:?base_ms=1&hang_on_batch=1"))
            return made[-1]

        hung = MockBackend("mock:?base_ms=1&hang_on_batch=1")
        server = SidecarServer(config(max_hung=1), backends=[hung], make_backend=make_backend)
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                assert is_error((await outcomes([client.submit(X)]))[0], grpc.StatusCode.DEADLINE_EXCEEDED)
                await eventually(lambda: server.health.ready, "the first replacement")
                assert server.fatal_reason is None and (await snapshot(server))["stuck_hung"] == 1
                second_hang = time.monotonic()
                assert is_error((await outcomes([client.submit(X)]))[0], grpc.StatusCode.DEADLINE_EXCEEDED)
                reason = await asyncio.wait_for(server.wait_fatal(), WAIT_S)
                print(f"\nsecond hang -> fatal in {(time.monotonic() - second_hang) * 1000:.0f} ms (backend timeout 200 ms)")
                assert reason.startswith("2 backend instance(s) given up on as hung")
                assert not server.health.ready
                assert len(made) == 1  # no replacement is started once it is fatal
        finally:
            hung.close()
            for m in made:
                m.close()
            await server.stop()

    run(go())


def test_a_hung_call_that_returns_frees_its_place_under_the_cap():
    async def go():
        made: list[MockBackend] = []

        def make_backend():
            made.append(MockBackend("mock:?base_ms=1&hang_on_batch=1"))
            return made[-1]

        hung = MockBackend("mock:?base_ms=1&hang_on_batch=1")
        server = SidecarServer(config(max_hung=1), backends=[hung], make_backend=make_backend)
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                assert is_error((await outcomes([client.submit(X)]))[0], grpc.StatusCode.DEADLINE_EXCEEDED)
                await eventually(lambda: server.health.ready, "the replacement")
                hung.close()  # the hung call returns; its executor stops and says so
                stuck = {}

                async def released() -> bool:
                    stuck.update(await snapshot(server))
                    return stuck["stuck_hung"] == 0

                deadline = asyncio.get_running_loop().time() + WAIT_S
                while not await released():
                    assert asyncio.get_running_loop().time() < deadline, stuck
                    await asyncio.sleep(0.005)
                # the replacement hangs too: one stuck, within the cap of 1
                assert is_error((await outcomes([client.submit(X)]))[0], grpc.StatusCode.DEADLINE_EXCEEDED)
                await eventually(lambda: server.health.ready, "the second replacement")
                assert server.fatal_reason is None and (await snapshot(server))["stuck_hung"] == 1
        finally:
            hung.close()
            for m in made:
                m.close()
            await server.stop()

    run(go())


# ---- through the CLI: exit code 4 --------------------------------------------------------------


def test_serve_exits_4_when_more_instances_hang_than_max_hung(tmp_path):
    server = start_server(
        tmp_path, "--rpc-endpoint", "127.0.0.1:0", "--metrics-reporters", "",
        "--model-uri", "mock:?base_ms=1&hang_on_batch=1", "--backend-timeout", "200 ms", "--backend-max-hung", "0",
    )
    try:
        async def hang_one() -> tuple[float, InferError]:
            async with SidecarClient(server.address) as client:
                await client.wait_ready(timeout_s=WAIT_S)
                sent = time.monotonic()
                return sent, (await outcomes([client.submit(X)]))[0]

        sent, answer = asyncio.run(hang_one())
        answered = time.monotonic()
        assert is_error(answer, grpc.StatusCode.DEADLINE_EXCEEDED), answer
        code = server.proc.wait(timeout=WAIT_S)
        exited = time.monotonic()
        print(
            f"\nrequest sent -> DEADLINE_EXCEEDED in {(answered - sent) * 1000:.0f} ms (backend timeout 200 ms) "
            f"-> exit {code} {(exited - answered) * 1000:.0f} ms later; {(exited - sent) * 1000:.0f} ms in all"
        )
        assert code == 4, server.logs()
        logs = server.logs()
        assert "event=fatal" in logs and "sidecar.backend.max-hung (0)" in logs
        assert "exiting with code 4" in logs
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=WAIT_S)
