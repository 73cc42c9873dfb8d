"""Server CPU per item for full messages: K stream messages of N items each kept
outstanding, sent as N InferRequests (`items`) or as one batch-major InferBatch
(`batch`), from prebuilt frames, so the load generator costs next to nothing.

    python -m sidecar.bench.frames HOST:PORT SERVER_PID [--form items|batch] [--items 64] [--messages 4] [--seconds 4]

The echo server (sidecar/bench/echo.py) reads only the `items` form. This is the
measurement behind docs/benchmarks.md's "batch-major form" figures; `gpu-sidecar
bench` drives the sidecar through its client instead, as a caller does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import dataclass

import grpc
import numpy as np

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.bench.servers import cpu_seconds

WARMUP_S = 1.0


@dataclass(frozen=True, slots=True)
class Figures:
    items_per_s: float
    cpu_us_per_item: float
    errors: int


def frame(form: str, ids: list[int], data: bytes, dim: int) -> pb.InferStreamRequest:
    if form == "batch":
        tensor = pb.Tensor(name="input", dtype="float32", shape=[len(ids), dim], data=data * len(ids))
        return pb.InferStreamRequest(batches=[pb.InferBatch(request_ids=ids, inputs=[tensor])])
    tensor = pb.Tensor(name="input", dtype="float32", shape=[dim], data=data)
    return pb.InferStreamRequest(requests=[pb.InferRequest(request_id=i, inputs=[tensor]) for i in ids])


async def measure(address: str, pid: int, form: str, items: int, messages: int, seconds: float, dim: int = 16) -> Figures:
    data = np.arange(dim, dtype=np.float32).tobytes()
    ids = itertools.count()
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.GpuSidecarStub(channel).Infer()
        credit = asyncio.Semaphore(messages)
        answered = errors = 0

        async def send() -> None:
            while True:
                await credit.acquire()
                await call.write(frame(form, [next(ids) for _ in range(items)], data, dim))

        async def receive() -> None:
            nonlocal answered, errors
            owed = 0
            async for message in call:
                errors += sum(1 for r in message.responses if r.HasField("error"))
                answered += len(message.responses)
                owed += len(message.responses)
                while owed >= items:  # a message's worth answered: send another
                    owed -= items
                    credit.release()

        tasks = [asyncio.ensure_future(send()), asyncio.ensure_future(receive())]
        try:
            await asyncio.sleep(WARMUP_S)
            a0, c0, t0 = answered, cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(seconds)
            a1, c1, t1 = answered, cpu_seconds(pid), time.perf_counter()
        finally:
            for t in tasks:
                t.cancel()
            call.cancel()
    n = max(1, a1 - a0)
    cpu = float("nan") if c0 is None or c1 is None else (c1 - c0) / n * 1e6
    return Figures((a1 - a0) / (t1 - t0), cpu, errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("pid", type=int, help="the server's pid, for its CPU time")
    parser.add_argument("--form", choices=("items", "batch"), default="items")
    parser.add_argument("--items", type=int, default=64, help="items per message")
    parser.add_argument("--messages", type=int, default=4, help="messages outstanding")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--dim", type=int, default=16, help="float32 elements per item (the model's input)")
    args = parser.parse_args(argv)
    f = asyncio.run(measure(args.address, args.pid, args.form, args.items, args.messages, args.seconds, args.dim))
    print(f"{args.form:5} {args.items} items x {args.messages} messages: {f.items_per_s:,.0f} items/s, "
          f"server CPU {f.cpu_us_per_item:.2f} µs/item, errors {f.errors}")
    return 1 if f.errors else 0


if __name__ == "__main__":
    sys.exit(main())
