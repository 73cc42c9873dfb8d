"""A client that stops reading costs the server at most its stream's window.

The server runs as its own process so that its RSS is its own; the hostile
client is a raw stub that writes 200k requests and reads nothing until told.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.client import SidecarClient, to_tensor
from tests.rpc.process import start_server

TOTAL = 200_000
PER_MESSAGE = 100
WINDOW = 1024
# docs/reliability.md: the memory bound. Per open answer the server holds its
# response message and bookkeeping (~2 KB measured); the rest is slack for the
# allocator, gRPC's own buffers and a warm-up that cannot touch every path.
RSS_BOUND_BYTES = 40 * 1024 * 1024
SETTLE_S = 1.0
CLIENT_WINDOW_BYTES = 8 * 1024 * 1024  # what a grpc client's receive window may absorb
RESPONSE_BYTES = 90  # one float32[16] answer on the wire
WAIT_S = 60.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def received(stub: pb_grpc.GpuSidecarStub) -> int:
    snapshot = await stub.GetMetrics(pb.GetMetricsRequest(), timeout=5)
    return next(m.counter for m in snapshot.metrics if m.name == "requestsReceived")


async def until_stable(stub: pb_grpc.GpuSidecarStub) -> int:
    """requestsReceived once it has stopped moving for SETTLE_S."""
    deadline = time.monotonic() + WAIT_S
    last, since = await received(stub), time.monotonic()
    while time.monotonic() - since < SETTLE_S:
        assert time.monotonic() < deadline, "the server never stopped reading"
        await asyncio.sleep(0.1)
        now = await received(stub)
        if now != last:
            last, since = now, time.monotonic()
    return last


def message(first_id: int) -> pb.InferStreamRequest:
    data = to_tensor("input", np.ones(16, np.float32))
    return pb.InferStreamRequest(
        requests=[pb.InferRequest(request_id=i, inputs=[data]) for i in range(first_id, first_id + PER_MESSAGE)]
    )


async def one_at_a_time(client: SidecarClient, n: int = 200) -> list[float]:
    """Sorted latencies of n requests sent one after another, each checked."""
    latencies = []
    for i in range(n):
        t = time.perf_counter()
        out = await asyncio.wait_for(client.infer({"input": np.full(16, i, np.float32)}), 5)
        latencies.append(time.perf_counter() - t)
        assert out["output"][0] == 2 * i
    return sorted(latencies)


def test_non_reading_client_is_held_to_its_window_and_everything_is_answered_once_after(tmp_path):
    server = start_server(
        tmp_path, "--rpc-endpoint", "127.0.0.1:0", "--model-uri", "mock:?base_ms=0&per_item_ms=0",
        "--stream-max-outstanding", str(WINDOW),
    )
    try:
        asyncio.run(_scenario(server.address, server.proc.pid))
    finally:
        server.proc.kill()
        server.proc.wait(timeout=10)


async def _scenario(address: str, pid: int) -> None:
    async with SidecarClient(address) as neighbour:
        await neighbour.wait_ready(timeout_s=30)
        # Warm-up: every path the hostile stream will take, once at its size.
        await asyncio.gather(*[neighbour.submit({"input": np.ones(16, np.float32)}) for _ in range(3 * WINDOW)])
        usual = await one_at_a_time(neighbour)
        channel = grpc.aio.insecure_channel(address)
        stub = pb_grpc.GpuSidecarStub(channel)
        before_received = await until_stable(stub)
        rss_before = rss_bytes(pid)

        call = stub.Infer()
        sent = 0

        async def write_all() -> None:
            nonlocal sent
            for first in range(1, TOTAL + 1, PER_MESSAGE):
                await call.write(message(first))
                sent += PER_MESSAGE
            await call.done_writing()

        writer = asyncio.ensure_future(write_all())
        read_by_server = await until_stable(stub) - before_received
        rss_held = rss_bytes(pid)
        print(
            f"\nnon-reading client: wrote {sent} of {TOTAL} (flow control holds the rest); server read "
            f"{read_by_server}; RSS {rss_before / 2**20:.1f} -> {rss_held / 2**20:.1f} MiB "
            f"(+{(rss_held - rss_before) / 2**20:.1f} MiB)"
        )
        # Written answers leave the server: the client's HTTP/2 receive window (grpc
        # grows it to a few MiB) takes some before its reads are missed. Beyond
        # that the server holds at most the window and stops reading.
        assert read_by_server <= WINDOW + PER_MESSAGE + CLIENT_WINDOW_BYTES // RESPONSE_BYTES, read_by_server
        assert sent < TOTAL, "the client's writes were never held back"
        assert rss_held - rss_before < RSS_BOUND_BYTES

        # A neighbour stream is served meanwhile, one request at a time.
        held = await one_at_a_time(neighbour)
        print(f"neighbour while held: p50 {held[100] * 1e3:.2f} ms, max {held[-1] * 1e3:.2f} ms "
              f"(before: p50 {usual[100] * 1e3:.2f} ms, max {usual[-1] * 1e3:.2f} ms)")

        # Now the client reads: everything it sent is answered, exactly once.
        started = time.perf_counter()
        seen: set[int] = set()
        while len(seen) < TOTAL:
            reply = await asyncio.wait_for(call.read(), WAIT_S)
            assert reply is not grpc.aio.EOF, f"stream ended after {len(seen)} answers"
            for r in reply.responses:
                assert not r.HasField("error"), r.error
                assert r.request_id not in seen, f"{r.request_id} answered twice"
                seen.add(r.request_id)
        await writer
        assert await asyncio.wait_for(call.read(), WAIT_S) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        print(f"then read all {TOTAL} answers in {time.perf_counter() - started:.1f} s; RSS after {rss_bytes(pid) / 2**20:.1f} MiB")
        await channel.close()
