"""Offered far more than the queue holds, the server answers everything, refuses fast, and stays healthy.

The backend is slow on purpose (20 ms a batch of at most 4, one batch at a time),
so the queue of 16 fills at once and most requests are refused RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections import Counter

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.backends.mock import MockBackend
from sidecar.client import InferError, SidecarClient
from tests.rpc.helpers import Gate, eventually, queue_depth_reaches, run, serving, settled_counts

X = np.arange(16, dtype=np.float32)
WAIT_S = 30.0
STREAMS = 4
PER_STREAM = 100
QUEUE = 16
BATCH = 4
SLOW = dict(
    model_uri="mock:?base_ms=20&per_item_ms=0", max_batch_size=BATCH, max_inflight_batches=1,
    max_queue_length=QUEUE, max_queue_wait_s=10.0,
)
# A rejection is decided in admission with no backend involved, so it comes back in
# the first pass (measured: ~20 ms for the whole burst of 400 on 2 cores), while an
# admitted request waits at least one 20 ms batch. The bound leaves room for slow CI.
REJECT_BOUND_S = 1.0


async def grpc_health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        return reply.status


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def timed(future: asyncio.Future, latencies: list[tuple[bool, float]]) -> None:
    """Records, when `future` resolves, whether it was rejected and how long after submit."""
    loop = asyncio.get_running_loop()
    submitted = loop.time()

    def done(f: asyncio.Future) -> None:
        error = f.exception()
        rejected = isinstance(error, InferError) and error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        latencies.append((rejected, loop.time() - submitted))

    future.add_done_callback(done)


def test_ten_times_capacity_is_answered_once_each_rejections_fast_and_server_stays_healthy():
    offered = STREAMS * PER_STREAM
    assert offered >= 10 * (QUEUE + BATCH)

    async def go():
        async with serving(**SLOW) as server:
            clients = [SidecarClient(server.address) for _ in range(STREAMS)]
            for c in clients:
                await c.connect()
            latencies: list[tuple[bool, float]] = []
            futures = []
            for c in clients:  # all submitted in one go, before any sender task runs
                for _ in range(PER_STREAM):
                    futures.append(c.submit({"input": X}))
                    timed(futures[-1], latencies)
            results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT_S)

            ok = [r for r in results if isinstance(r, dict)]
            errors = [r for r in results if not isinstance(r, dict)]
            for out in ok:
                np.testing.assert_array_equal(out["output"], X * 2)
            assert errors, "the queue never filled"
            for e in errors:
                assert isinstance(e, InferError), e
                assert e.code is grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert e.retry_after_s is not None and e.retry_after_s > 0, e
                m = re.search(r"queue is full: (\d+) queued, limit (\d+)", e.message)
                assert m, e.message
                assert (int(m.group(1)), int(m.group(2))) == (QUEUE, QUEUE), e.message

            # every request answered exactly once, nothing lost or unexpected
            total = sum((c.counts for c in clients), start=Counter())
            outcomes = {k: v for k, v in total.items() if k != "sent"}
            assert total["sent"] == offered == sum(outcomes.values())
            assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED"}, outcomes
            assert outcomes["OK"] == len(ok) and outcomes["RESOURCE_EXHAUSTED"] == len(errors)
            assert len(latencies) == offered

            rejected_s = [t for rejected, t in latencies if rejected]
            admitted_s = [t for rejected, t in latencies if not rejected]
            print(
                f"\nsaturation: offered={offered} answered={len(latencies)} ok={len(ok)} rejected={len(errors)}; "
                f"time to answer a rejected request: max {ms(max(rejected_s))}, "
                f"median {ms(statistics.median(rejected_s))}; "
                f"an admitted one: min {ms(min(admitted_s))}, median {ms(statistics.median(admitted_s))}, "
                f"max {ms(max(admitted_s))}"
            )
            assert max(rejected_s) < REJECT_BOUND_S
            # an admitted request waits for at least one 20 ms batch; rejections do not wait for the backend
            assert min(admitted_s) >= 0.019
            assert statistics.median(rejected_s) < statistics.median(admitted_s)

            # the server agrees, and has nothing left over
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": offered, "succeeded": len(ok), "rejected": len(errors)}
            assert counts["inflight"] == 0 and counts["queue_depth"] == 0

            # every stream is still usable, and the server healthy
            again = await asyncio.wait_for(asyncio.gather(*[c.infer({"input": X}) for c in clients]), WAIT_S)
            for out in again:
                np.testing.assert_array_equal(out["output"], X * 2)
            info = await clients[0].model_info()
            assert info.limits.max_queue_length == QUEUE
            assert await grpc_health(server.address) == health_pb2.HealthCheckResponse.SERVING
            for c in clients:
                await c.close()
                assert c.counts["lost"] == 0 and c.counts["unexpected"] == 0

    run(go())


def test_hot_stream_is_held_to_its_per_stream_limit_while_another_stream_is_admitted():
    async def go():
        gate = Gate()
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], max_per_stream=4, **{**SLOW, "model_uri": backend.model_uri}) as server:
            holder, hot, other = (SidecarClient(server.address, max_in_flight=100) for _ in range(3))  # no window: the server enforces
            for c in (holder, hot, other):
                await c.connect()
            try:
                # one request held in the backend: the single executor slot is taken, so the queue only fills
                gate.open.clear()
                held = holder.submit({"input": X})
                await eventually(lambda: backend.batches == 1, "the held batch to reach the backend")

                # the hot stream sends 20 in one message: 4 queued, 16 refused at once
                hot_futures = [hot.submit({"input": X}) for _ in range(20)]
                await eventually(lambda: hot.counts["RESOURCE_EXHAUSTED"] == 16, "the hot stream's refusals")
                refused = [f for f in hot_futures if f.done()]
                assert len(refused) == 16 and hot_futures[:4] == [f for f in hot_futures if not f.done()]
                for f in refused:
                    e = f.exception()
                    assert isinstance(e, InferError) and e.code is grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "this stream has 4 requests queued, per-stream limit 4" in e.message, e.message
                    assert e.retry_after_s is not None and e.retry_after_s > 0

                # with the hot stream at its limit, another stream is admitted (the queue has room) ...
                other_futures = [other.submit({"input": X}) for _ in range(4)]
                # ... and the hot stream is still refused
                one_more = hot.submit({"input": X})
                await eventually(one_more.done, "the hot stream's next request to be refused (the gate is closed)")
                e = one_more.exception()
                assert isinstance(e, InferError) and e.code is grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert "this stream has 4 requests queued, per-stream limit 4" in e.message, e.message
                # both streams' 4 wait in the queue: the other stream was admitted, nothing of it refused
                await queue_depth_reaches(server, 8)
                assert not any(f.done() for f in other_futures), "the other stream's requests were refused"

                gate.open.set()
                results = await asyncio.wait_for(asyncio.gather(held, *hot_futures[:4], *other_futures), WAIT_S)
                for out in results:
                    np.testing.assert_array_equal(out["output"], X * 2)
                assert other.counts["OK"] == 4 and other.counts["RESOURCE_EXHAUSTED"] == 0
                assert hot.counts["OK"] == 4 and hot.counts["RESOURCE_EXHAUSTED"] == 17
            finally:
                gate.open.set()
                for c in (holder, hot, other):
                    await c.close()
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 1 + 21 + 4, "succeeded": 9, "rejected": 17}

    run(go())
