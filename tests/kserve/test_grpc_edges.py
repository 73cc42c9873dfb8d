"""ModelStreamInfer at the edges a deployment reaches, from raw stubs with default
options: a client that stops reading, and a stream held open across a drain."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from sidecar.backends.mock import MockBackend
from sidecar.client import SidecarClient
from tests.kserve.helpers import KServeGrpc, infer_request
from tests.rpc.helpers import Gate, WAIT_S, eventually, run, serving

X = np.arange(16, dtype=np.float32)[None]
WINDOW = 64
TOTAL = 30_000
SETTLE_S = 0.5
CLIENT_WINDOW_BYTES = 64 * 1024  # the client's HTTP/2 receive window, BDP probing off
RESPONSE_BYTES = 100  # one ModelStreamInferResponse of float32[1, 16] on the wire, at least


def test_a_stream_client_that_stops_reading_is_held_back_and_everything_is_answered_once_after():
    async def go() -> None:
        async with serving(max_outstanding=WINDOW) as server:
            # No BDP probing: the client's receive window stays at its initial 64 KiB,
            # so the bound below is tight enough to mean something.
            async with grpc.aio.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)]) as channel:
                call = KServeGrpc(channel).ModelStreamInfer()
                sent = 0

                async def flood() -> None:
                    nonlocal sent
                    for i in range(TOTAL):  # reads nothing: flow control must hold it back
                        await call.write(infer_request("model", {"input": X}, f"r{i}"))
                        sent += 1
                    await call.done_writing()

                writer = asyncio.ensure_future(flood())
                read = await _until_stable(lambda: server._ingress._streams and next(iter(server._ingress._streams.values())).life.read)
                print(f"\nnon-reading KServe stream: wrote {sent} of {TOTAL}, the server read {read}")
                # As on Infer (tests/rpc/test_backpressure.py): answers written leave the
                # server for the client's receive window; past that it holds its window.
                # A default channel grows that window to MiBs (BDP probing), hence the option.
                assert read <= WINDOW + CLIENT_WINDOW_BYTES // RESPONSE_BYTES, read
                assert sent < TOTAL, "the client's writes were never held back"
                assert server._ingress.outstanding <= WINDOW
                async with SidecarClient(server.address) as other:  # the rest of the sidecar goes on
                    out = await asyncio.wait_for(other.submit({"input": X[0]}), WAIT_S)
                    np.testing.assert_array_equal(out["output"], X[0] * 2)
                seen: set[str] = set()
                while len(seen) < TOTAL:  # now it reads: every request answered, once
                    m = await asyncio.wait_for(call.read(), WAIT_S)
                    assert not m.error_message and m.infer_response.id not in seen, m
                    seen.add(m.infer_response.id)
                await writer
                assert await asyncio.wait_for(call.code(), WAIT_S) is grpc.StatusCode.OK

    run(go())


async def _until_stable(read) -> int:
    """The value once it has not moved for SETTLE_S (bounded)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    last, since = read(), asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - since < SETTLE_S:
        assert asyncio.get_running_loop().time() < deadline, "the server never stopped reading"
        await asyncio.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, asyncio.get_running_loop().time()
    return last


def test_a_stream_open_across_a_drain_gets_its_answers_then_unavailable():
    gate = Gate(opened=False)

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], drain_timeout_s=5.0) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                call = KServeGrpc(channel).ModelStreamInfer()
                await call.write(infer_request("model", {"input": X}, "before"))
                await eventually(lambda: server._ingress.outstanding == 1, "the request in the backend")
                drained = asyncio.ensure_future(server.drain())
                await eventually(lambda: server._ingress.draining, "the drain to begin")
                gate.open.set()
                answer = await asyncio.wait_for(call.read(), WAIT_S)
                assert answer.infer_response.id == "before" and not answer.error_message
                assert await asyncio.wait_for(call.code(), WAIT_S) is grpc.StatusCode.UNAVAILABLE
                assert "draining" in await call.details()
                report = await asyncio.wait_for(drained, WAIT_S)
                assert report.completed and report.abandoned == 0

    run(go())
