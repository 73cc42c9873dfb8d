"""The soak's load: one asyncio task per scenario, each covering a path that
allocates per request or per stream, all seeded.

Every scenario loops over short iterations and checks in with `Pace` between
them, so the sampler can pause the whole load at a point where nothing is in
flight: memory is then measured without the noise of requests under way.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.client import InferError, SidecarClient, to_tensor
from sidecar.retry import RetryPolicy

DIM = 16
# An iteration that takes longer than this is a hang: the soak records it as a failure.
ITERATION_TIMEOUT_S = 60.0


class Pace:
    """Lets the sampler pause every scenario between two of its iterations."""

    def __init__(self, scenarios: int) -> None:
        self._n = scenarios
        self._go = asyncio.Event()
        self._go.set()
        self._parked = 0
        self._all_parked = asyncio.Event()
        self.stopping = False

    async def step(self) -> None:
        if self._go.is_set():
            return
        self._parked += 1
        if self._parked >= self._n:
            self._all_parked.set()
        await self._go.wait()
        self._parked -= 1

    async def pause(self, timeout_s: float) -> bool:
        """True once every scenario is parked (nothing in flight); False on timeout."""
        self._go.clear()
        if self._parked >= self._n:
            return True
        self._all_parked.clear()
        try:
            await asyncio.wait_for(self._all_parked.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def resume(self) -> None:
        self._go.set()

    def retire(self) -> None:
        """A scenario ended for good: the others need not wait for it."""
        self._n -= 1
        if self._parked >= self._n:
            self._all_parked.set()


@dataclass
class Tally:
    """What the clients counted, summed, and what went wrong on their side."""

    counts: Counter[str] = field(default_factory=Counter)
    killed_lost: int = 0  # requests sent by clients killed mid-stream and never answered to them
    problems: list[str] = field(default_factory=list)
    iterations: Counter[str] = field(default_factory=Counter)

    def add(self, counts: Counter[str]) -> None:
        self.counts.update(counts)

    def problem(self, what: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(what)


def _vector(rng: random.Random) -> np.ndarray:
    return np.full(DIM, rng.randrange(1000), np.float32)


def _message(first_id: int, n: int, rng: random.Random) -> pb.InferStreamRequest:
    data = to_tensor("input", _vector(rng))
    return pb.InferStreamRequest(requests=[pb.InferRequest(request_id=i, inputs=[data]) for i in range(first_id, first_id + n)])


async def _gather(futures: list[asyncio.Future], tally: Tally, where: str) -> None:
    for result in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(result, BaseException) and not isinstance(result, InferError):
            tally.problem(f"{where}: {type(result).__name__}: {result}")


Scenario = Callable[[str, Tally, Pace, random.Random], Awaitable[None]]


async def _loop(name: str, body: Callable[[], Awaitable[None]], tally: Tally, pace: Pace, pause_s: float = 0.0) -> None:
    try:
        while True:
            await pace.step()
            if pace.stopping:
                return
            try:
                await asyncio.wait_for(body(), ITERATION_TIMEOUT_S)
                tally.iterations[name] += 1
            except asyncio.TimeoutError:
                tally.problem(f"{name}: an iteration hung past {ITERATION_TIMEOUT_S:g} s")
            except Exception as e:  # noqa: BLE001 - the soak reports it and goes on
                tally.problem(f"{name}: {type(e).__name__}: {e}")
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        pace.retire()


async def steady(address: str, tally: Tally, pace: Pace, rng: random.Random, *, pack: int, inflight: int, name: str) -> None:
    """A long-lived stream pipelining `inflight` requests at a time."""
    client = SidecarClient(address, max_pack=pack)
    await client.connect()

    async def body() -> None:
        await _gather([client.submit({"input": _vector(rng)}) for _ in range(inflight)], tally, name)

    try:
        await _loop(name, body, tally, pace)
    finally:
        await client.close(timeout_s=10)
        tally.add(client.counts)


async def churn(address: str, tally: Tally, pace: Pace, rng: random.Random) -> None:
    """Reconnect cycle: a new connection and stream, a few requests, a clean close."""

    async def body() -> None:
        async with SidecarClient(address, max_pack=rng.choice([1, 8, 64])) as client:
            await _gather([client.submit({"input": _vector(rng)}) for _ in range(20)], tally, "churn")
        tally.add(client.counts)

    await _loop("churn", body, tally, pace, pause_s=0.2)


async def killed(address: str, tally: Tally, pace: Pace, rng: random.Random) -> None:
    """A client killed mid-stream: its connection drops with requests unanswered."""

    async def body() -> None:
        channel = grpc.aio.insecure_channel(address)
        call = pb_grpc.GpuSidecarStub(channel).Infer()
        n = 40
        answered = 0
        try:
            await call.write(_message(1, n, rng))
            tally.counts["sent"] += n
            reply = await asyncio.wait_for(call.read(), 10)
            if reply is not grpc.aio.EOF:
                for r in reply.responses:
                    tally.counts[_outcome(r)] += 1
                    answered += 1
        finally:
            await channel.close(grace=None)  # abrupt, as a killed process's socket
            tally.counts["lost"] += n - answered
            tally.killed_lost += n - answered

    await _loop("killed", body, tally, pace, pause_s=0.5)


async def burst(address: str, tally: Tally, pace: Pace, rng: random.Random) -> None:
    """Saturation: more at once than the queue holds; one client retries."""

    async def body() -> None:
        clients = [
            SidecarClient(address, max_in_flight=400),
            SidecarClient(address, max_in_flight=400),
            SidecarClient(address, max_in_flight=400, retry=RetryPolicy(max_attempts=5)),
        ]
        for c in clients:
            await c.connect()
        try:
            await _gather([c.submit({"input": _vector(rng)}) for c in clients for _ in range(400)], tally, "burst")
        finally:
            for c in clients:
                await c.close(timeout_s=10)
                tally.add(c.counts)

    await _loop("burst", body, tally, pace, pause_s=2.0)


async def edge_cases(address: str, tally: Tally, pace: Pace, rng: random.Random) -> None:
    """Requests that expire, cancels (known and unknown ids), invalid requests."""
    client = SidecarClient(address)
    await client.connect()
    next_id = 1_000_000_000  # far from the client's own ids

    def raw(**fields) -> pb.InferRequest:
        nonlocal next_id
        next_id += 1
        return pb.InferRequest(request_id=next_id, **fields)

    good = to_tensor("input", np.ones(DIM, np.float32))

    async def body() -> None:
        futures = [client.submit({"input": _vector(rng)}, timeout_s=0.0005) for _ in range(10)]
        cancelled = [raw(inputs=[good]) for _ in range(10)]
        futures += [client.submit_raw(r) for r in cancelled]
        await asyncio.sleep(0.002)  # sent by now: the cancels reach the server
        for r in cancelled[::2]:
            client.cancel_request(r.request_id)  # known: CANCELLED, or its result if already done
        for _ in range(3):
            client.cancel_request(next_id + 10_000 + rng.randrange(1000))  # unknown: reported back
        futures += [
            client.submit_raw(raw(inputs=[to_tensor("input", np.ones(DIM // 2, np.float32))])),  # wrong shape
            client.submit_raw(raw(inputs=[to_tensor("input", np.ones(DIM, np.float64))])),  # wrong dtype
            client.submit_raw(raw(inputs=[to_tensor("nope", np.ones(DIM, np.float32))])),  # unknown name
            client.submit_raw(raw()),  # no inputs
        ]
        await _gather(futures, tally, "edge_cases")

    try:
        await _loop("edge_cases", body, tally, pace, pause_s=0.1)
    finally:
        await client.close(timeout_s=10)
        tally.add(client.counts)


async def stop_reading(address: str, tally: Tally, pace: Pace, rng: random.Random) -> None:
    """A client that stops reading for a while, then reads everything: each answered once."""

    async def body() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            call = pb_grpc.GpuSidecarStub(channel).Infer()
            n, per = 300, 50
            for first in range(1, n + 1, per):
                await call.write(_message(first, per, rng))
            tally.counts["sent"] += n
            await asyncio.sleep(2.0)  # reading nothing meanwhile
            await call.done_writing()
            seen: Counter[int] = Counter()
            async for reply in call:
                for r in reply.responses:
                    seen[r.request_id] += 1
                    tally.counts[_outcome(r)] += 1
            twice = [i for i, k in seen.items() if k > 1]
            missing = n - len(seen)
            if twice or missing:
                tally.problem(f"stop_reading: {missing} unanswered, {len(twice)} answered twice")
                tally.counts["lost"] += missing

    await _loop("stop_reading", body, tally, pace, pause_s=1.0)


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _outcome(response: pb.InferResponse) -> str:
    """The status code name a response counts under, as SidecarClient counts it."""
    return _CODE_NAMES.get(response.error.code, "UNKNOWN") if response.HasField("error") else "OK"


def scenarios() -> dict[str, Scenario]:
    """Every scenario by name, as the soak runs them."""
    return {
        "steady_packed_1": lambda a, t, p, r: steady(a, t, p, r, pack=64, inflight=128, name="steady_packed_1"),
        "steady_packed_2": lambda a, t, p, r: steady(a, t, p, r, pack=64, inflight=64, name="steady_packed_2"),
        "steady_unpacked": lambda a, t, p, r: steady(a, t, p, r, pack=1, inflight=16, name="steady_unpacked"),
        "churn": churn,
        "killed": killed,
        "burst": burst,
        "edge_cases": edge_cases,
        "stop_reading": stop_reading,
    }
