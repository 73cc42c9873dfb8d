"""The real server and the real client over TCP and a unix socket."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.client import SidecarClient
from tests.rpc.helpers import run, server_counts, serving

STREAMS = 4
PER_STREAM = 500


async def _pipeline_many(transport: str, max_pack: int) -> None:
    # A histogram window above the batch count keeps every batch size in view.
    async with serving(transport, max_batch_size=32, histogram_window=4096) as server:

        async def one_stream(s: int) -> None:
            async with SidecarClient(server.address, max_pack=max_pack) as client:
                values = [np.full(16, s * 10_000 + i, np.float32) for i in range(PER_STREAM)]
                futures = [client.submit({"input": v}) for v in values]
                results = await asyncio.gather(*futures)
                for v, out in zip(values, results):
                    np.testing.assert_array_equal(out["output"], v * 2)
                assert client.counts == {"sent": PER_STREAM, "OK": PER_STREAM}

        await asyncio.wait_for(asyncio.gather(*(one_stream(s) for s in range(STREAMS))), timeout=60)
        counts = await server_counts(server)
        assert counts["outcomes"] == {"received": STREAMS * PER_STREAM, "succeeded": STREAMS * PER_STREAM}
        sizes = server.metric_registry.snapshot()
        (batch_size,) = [m for m in sizes if m.identifier.endswith("gpuSidecar.batchSize")]
        assert batch_size.sum == STREAMS * PER_STREAM
        assert batch_size.count < 4096
        assert 1 < batch_size.max <= 32, f"no batching under concurrent load, or too much: {batch_size}"


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("max_pack", [64, 1], ids=["packed", "unpacked"])
def test_pipelined_requests_over_several_streams_each_answered_once(transport, max_pack):
    run(_pipeline_many(transport, max_pack))


def test_ping_and_model_info():
    async def go():
        async with serving(max_batch_size=8, instances=2) as server:
            async with SidecarClient(server.address) as client:
                ping = await client.ping()
                assert ping.version and ping.uptime.ToNanoseconds() >= 0
                info = await client.model_info()
                assert info.backend == "mock"
                assert [(s.name, s.dtype, list(s.shape)) for s in info.inputs] == [("input", "float32", [16])]
                assert [(s.name, s.dtype, list(s.shape)) for s in info.outputs] == [("output", "float32", [16])]
                assert info.limits.max_batch_size == 8 and info.limits.instances == 2
                assert info.limits.max_queue_wait.ToMilliseconds() == 1000

    run(go())


def test_responses_come_back_in_completion_order_not_request_order():
    # A batch of 8 takes 8 x 25 ms on one instance; a later single request takes
    # 25 ms on the other instance and must be answered first (FIFO: the first 8
    # queued form the first batch, whichever message they came in).
    async def go():
        async with serving(
            model_uri="mock:?base_ms=0&per_item_ms=25", max_batch_size=8, batch_timeout_s=0.0, instances=2
        ) as server:
            async with SidecarClient(server.address) as client:
                order: list[int] = []
                slow = [client.submit({"input": np.full(16, i, np.float32)}) for i in range(8)]
                fast = client.submit({"input": np.full(16, 99, np.float32)})
                for i, f in enumerate([*slow, fast]):
                    f.add_done_callback(lambda _f, i=i: order.append(i))
                await asyncio.gather(*slow, fast)
                assert order[0] == 8, f"the fast request was answered after the slow batch: {order}"

    run(go())


def test_one_response_message_may_carry_many_answers():
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                call = client.stub.Infer()
                tensor = pb.Tensor(name="input", dtype="float32", shape=[16], data=np.ones(16, np.float32).tobytes())
                await call.write(pb.InferStreamRequest(requests=[pb.InferRequest(request_id=i, inputs=[tensor]) for i in range(100)]))
                await call.done_writing()
                ids = []
                async for message in call:
                    ids.extend(r.request_id for r in message.responses)
                assert sorted(ids) == list(range(100))

    run(go())
