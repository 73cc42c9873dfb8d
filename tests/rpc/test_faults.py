"""Backend faults: each fails exactly its own batch, and the sidecar carries on."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from actors.executor import ExecutorActor
from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.backends.mock import MockBackend
from sidecar.client import InferError, SidecarClient
from sidecar.config import SidecarConfig
from sidecar.server.app import SidecarServer
from tests.rpc.helpers import Gate, eventually, run, serving
from tests.rpc.test_health import http_health

WAIT_S = 10.0
X = {"input": np.arange(16, dtype=np.float32)}


async def outcomes(futures) -> list:
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT_S)


def one_batch_at_a_time(**overrides) -> dict:
    return dict(max_batch_size=4, max_inflight_batches=1, batch_timeout_s=0.0, **overrides)


def test_backend_exception_fails_only_its_batch_with_internal():
    async def go():
        async with serving(model_uri="mock:?base_ms=1&fail_on_batch=2", **one_batch_at_a_time()) as server:
            async with SidecarClient(server.address) as client:
                first = await outcomes([client.submit(X) for _ in range(4)])
                second = await outcomes([client.submit(X) for _ in range(4)])
                third = await outcomes([client.submit(X) for _ in range(4)])
        assert all(isinstance(r, dict) for r in first + third)
        assert all(isinstance(e, InferError) and e.code is grpc.StatusCode.INTERNAL for e in second)
        assert "backend 'mock' failed: BackendError: mock fault injected on batch 2" in second[0].message

    run(go())


def test_wrong_output_count_fails_the_batch_and_never_misassigns():
    async def go():
        async with serving(model_uri="mock:?base_ms=1&wrong_count_on_batch=1", **one_batch_at_a_time()) as server:
            async with SidecarClient(server.address) as client:
                values = [np.full(16, i, np.float32) for i in range(8)]
                results = await outcomes([client.submit({"input": v}) for v in values])
        bad, good = results[:4], results[4:]
        assert all(isinstance(e, InferError) and e.code is grpc.StatusCode.INTERNAL for e in bad)
        assert "shape [3, 16], expected [4, 16]" in bad[0].message
        for v, out in zip(values[4:], good):
            np.testing.assert_array_equal(out["output"], v * 2)

    run(go())


def test_hung_backend_times_out_is_replaced_and_health_follows():
    async def go():
        gate = Gate(opened=False)
        fresh = []

        def make_backend():
            fresh.append(MockBackend("mock:?base_ms=1&load_ms=1", sleep=gate))  # its load waits for the gate
            return fresh[-1]

        hung = MockBackend("mock:?base_ms=1&hang_on_batch=2")
        config = SidecarConfig(
            endpoint="127.0.0.1:0", health_port=0, kserve_http_port=0, metrics_reporters=(), backend_timeout_s=0.3,
            **one_batch_at_a_time(),
        )
        server = SidecarServer(config, backends=[hung], make_backend=make_backend)
        await server.start()
        try:
            async with SidecarClient(server.address) as client:
                assert isinstance(await client.infer(X), dict)  # batch 1 runs
                stuck = await outcomes([client.submit(X) for _ in range(4)])  # batch 2 hangs
                assert all(isinstance(e, InferError) and e.code is grpc.StatusCode.DEADLINE_EXCEEDED for e in stuck)
                assert "backend timeout of 0.3 s" in stuck[0].message and "being replaced" in stuck[0].message
                # no instance is up while the replacement loads: NOT_READY, and requests are
                # answered UNAVAILABLE at once with a retry hint, not queued to expire
                assert await http_health(server.health_port) == (503, "NOT_READY\n")
                refused = await outcomes([client.submit(X)])
                assert isinstance(refused[0], InferError) and refused[0].code is grpc.StatusCode.UNAVAILABLE
                assert "no backend instance is up" in refused[0].message and refused[0].retry_after_s is not None
                gate.open.set()
                await eventually(lambda: server.health.ready, "the replacement to be up")
                assert await http_health(server.health_port) == (200, "READY\n")
                assert isinstance(await asyncio.wait_for(client.infer(X), WAIT_S), dict)
            assert len(fresh) == 1 and fresh[0].batches >= 1
        finally:
            gate.open.set()
            hung.close()  # releases the hung call so its thread ends
            await server.stop()

    run(go())


def test_executor_that_dies_is_replaced_and_its_requests_answered(monkeypatch):
    deaths = []
    original = ExecutorActor._run

    def dies_once(self, batch):
        if not deaths:
            deaths.append(batch.batch_id)
            raise RuntimeError("executor bug")  # outside the backend call: the actor itself fails
        original(self, batch)

    monkeypatch.setattr(ExecutorActor, "_run", dies_once)

    async def go():
        async with serving(model_uri="mock:?base_ms=1", **one_batch_at_a_time()) as server:
            async with SidecarClient(server.address) as client:
                lost = await outcomes([client.submit(X) for _ in range(4)])
                assert all(isinstance(e, InferError) and e.code is grpc.StatusCode.INTERNAL for e in lost)
                assert "stopped unexpectedly" in lost[0].message
                await eventually(lambda: server.health.ready, "the replacement to be up")
                later = await outcomes([client.submit(X) for _ in range(8)])
                assert all(isinstance(r, dict) for r in later)

    run(go())


def test_requests_that_cannot_meet_the_stream_deadline_fail_early():
    async def go():
        async with serving(model_uri="mock:?base_ms=200&per_item_ms=0", max_batch_size=1, max_inflight_batches=1,
                           batch_timeout_s=0.0) as server:
            async with SidecarClient(server.address) as warm:
                await warm.infer(X)  # the batcher learns that a batch takes ~200 ms
                await warm.infer(X)
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer(timeout=1.0)  # the stream's own deadline
                tensor = pb.Tensor(name="input", dtype="float32", shape=[16], data=X["input"].tobytes())
                await call.write(pb.InferStreamRequest(requests=[pb.InferRequest(request_id=i, inputs=[tensor]) for i in range(8)]))
                responses = []
                try:
                    while len(responses) < 8:
                        message = await call.read()
                        responses.extend(message.responses)
                except grpc.aio.AioRpcError as e:
                    assert e.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # the last one ran into the call's end
                call.cancel()
        # 200 ms a batch, one at a time: 4 fit in the second, a 5th only just (it is
        # on the edge: 200 ms left, a batch takes about 200 ms); the rest are told
        # that they cannot make it, instead of running into the deadline
        ok = [r for r in responses if not r.HasField("error")]
        late = [r for r in responses if r.HasField("error")]
        assert 4 <= len(ok) <= 5 and 3 <= len(late) <= 4 and len(ok) + len(late) >= 7, (len(ok), len(late))
        assert all(r.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] for r in late)
        assert all("can no longer finish by its deadline" in r.error.message for r in late)

    run(go())
