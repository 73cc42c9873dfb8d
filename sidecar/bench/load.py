"""One load process's part of a run: its streams, a closed or an open loop, and the
tally of what happened to every request it sent.

Closed loop: each stream keeps its share of the in-flight count outstanding and
sends a new request the moment one is answered. Open loop: requests arrive at
Poisson times and are sent whatever is outstanding; a request's latency counts
from its scheduled arrival, so time spent behind the load generator (when it
falls behind) or behind the client's window (when the stream already has
`max_in_flight` unanswered) is part of it, as a real caller would see it. Such
waits are counted too: `held` (arrived with the window full) and `lag` (how late
the generator sent it).

A request belongs to the measured interval if it started in it; throughput
counts the answers that came in it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sidecar.bench.schedule import poisson_arrivals
from sidecar.bench.spec import Share
from sidecar.client import InferError, SidecarClient

READY_TIMEOUT_S = 60.0
# After the stop, how long the answers to what is outstanding may take; the rest
# is counted `unfinished` and cancelled.
DRAIN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
STOP_POLL_S = 0.01
OK = "OK"
UNFINISHED = "unfinished"

# Slots of a process's shared counters, read by the parent for the progress bar.
SENT, ANSWERED, FAILED, MEASURED = range(4)
SLOTS = 4
# Slots of the shared control block the parent writes: the measured interval, and stop.
T_MEASURE, T_END, STOP = range(3)


@dataclass
class Tally:
    """One process's figures for the measured interval; merged by the parent."""

    started: int = 0  # requests that started in the interval
    ok_answers: int = 0  # OK answers that came in the interval
    answers: int = 0  # every answer that came in it, errors too (for CPU per request)
    held: int = 0  # started with the client's window full: they waited in the client
    latencies_us: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))  # OK requests
    codes: Counter[str] = field(default_factory=Counter)  # non-OK outcomes of the requests started in it
    lag_us: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))  # open loop: send - arrival


class Recorder:
    """Every request's start, end, outcome and whether it waited for the window."""

    def __init__(self, counters: Any, slot: int) -> None:
        self.start, self.end, self.held = array("d"), array("d"), array("b")
        self.code = array("h")
        self.lag_at, self.lag = array("d"), array("d")
        self._names: dict[str, int] = {OK: 0}
        self._counters, self._base = counters, slot * SLOTS
        self.t_measure = math.inf
        self.frozen = False  # past the drain: whatever settles now is `unfinished`

    def record(self, start: float, held: bool, error: BaseException | None) -> None:
        now = time.monotonic()
        if self.frozen:
            name = UNFINISHED
        elif error is None:
            name = OK
        else:
            name = error.code.name if isinstance(error, InferError) else type(error).__name__
        index = self._names.setdefault(name, len(self._names))
        self.start.append(start)
        self.end.append(now)
        self.code.append(index)
        self.held.append(held)
        c, b = self._counters, self._base
        c[b + (ANSWERED if index == 0 else FAILED)] += 1
        if start >= self.t_measure:
            c[b + MEASURED] += 1

    def sent(self) -> None:
        self._counters[self._base + SENT] += 1

    def tally(self, t_measure: float, t_end: float) -> Tally:
        start, end = np.frombuffer(self.start, np.float64), np.frombuffer(self.end, np.float64)
        code, held = np.frombuffer(self.code, np.int16), np.frombuffer(self.held, np.int8)
        started = (start >= t_measure) & (start < t_end)
        answered_in = (end >= t_measure) & (end < t_end)
        names = {i: n for n, i in self._names.items()}
        unfinished = self._names.get(UNFINISHED, -1)
        codes: Counter[str] = Counter()
        for i, n in zip(*np.unique(code[started & (code != 0)], return_counts=True)):
            codes[names[int(i)]] = int(n)
        lag_at, lag = np.frombuffer(self.lag_at, np.float64), np.frombuffer(self.lag, np.float64)
        return Tally(
            started=int(started.sum()),
            ok_answers=int((answered_in & (code == 0)).sum()),
            answers=int((answered_in & (code != unfinished)).sum()),
            held=int((started & (held != 0)).sum()),
            latencies_us=((end - start)[started & (code == 0)] * 1e6).astype(np.float32),
            codes=codes,
            lag_us=(lag[(lag_at >= t_measure) & (lag_at < t_end)] * 1e6).astype(np.float32),
        )


class Stream:
    """One SidecarClient and the requests it has out."""

    def __init__(self, client: SidecarClient, inputs: dict[str, np.ndarray], rec: Recorder) -> None:
        self.client, self.inputs, self.rec = client, inputs, rec
        self.outstanding = 0
        self.on_settled: Callable[[Stream], None] | None = None

    def send(self, start: float) -> None:
        # Counted from this stream's own tally, not the client's in_flight, which
        # lags until its sender task has run: past the window, a request waits.
        held = self.outstanding >= self.client.max_in_flight
        self.outstanding += 1
        self.rec.sent()
        # The client's own path, as a caller uses it: packed messages then go in
        # batch-major form wherever the server reads it (sidecar/packing.py).
        future = self.client.submit(self.inputs)
        future.add_done_callback(lambda f: self._settled(f, start, held))

    def _settled(self, future: asyncio.Future[Any], start: float, held: bool) -> None:
        self.outstanding -= 1
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        self.rec.record(start, held, error)
        if self.on_settled is not None:
            self.on_settled(self)


def _inputs(share: Share) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(share.seed)
    return {i.name: rng.standard_normal(i.shape).astype(i.dtype) for i in share.inputs}


async def connect(share: Share, rec: Recorder) -> list[Stream]:
    inputs = _inputs(share)
    streams = []
    for _ in share.in_flight:
        client = SidecarClient(share.address, max_pack=share.max_pack)
        await client.connect()
        streams.append(Stream(client, inputs, rec))
    await streams[0].client.wait_ready(timeout_s=READY_TIMEOUT_S)
    return streams


async def run(share: Share, streams: list[Stream], rec: Recorder, control: Any) -> Tally:
    """Drives the load from now until the parent says stop; then drains and tallies."""
    rec.t_measure = control[T_MEASURE]
    stopping = asyncio.Event()
    drained = asyncio.Event()

    def settled(stream: Stream) -> None:
        if not stopping.is_set():
            if share.rate is None:
                stream.send(time.monotonic())
        elif all(s.outstanding == 0 for s in streams):
            drained.set()

    for stream in streams:
        stream.on_settled = settled
    arrivals = None
    if share.rate is None:
        now = time.monotonic()
        for stream, n in zip(streams, share.in_flight):
            for _ in range(n):
                stream.send(now)
    else:
        arrivals = asyncio.ensure_future(_open_loop(share, streams, rec, stopping))
    while not control[STOP]:
        await asyncio.sleep(STOP_POLL_S)
    stopping.set()
    if arrivals is not None:
        await arrivals
    if any(s.outstanding for s in streams):
        try:
            await asyncio.wait_for(drained.wait(), DRAIN_TIMEOUT_S)
        except asyncio.TimeoutError:
            pass
    rec.frozen = True
    for stream in streams:
        await stream.client.close(timeout_s=CLOSE_TIMEOUT_S)
    await asyncio.sleep(0)  # the futures close() failed have run their callbacks
    return rec.tally(control[T_MEASURE], control[T_END])


async def _open_loop(share: Share, streams: list[Stream], rec: Recorder, stopping: asyncio.Event) -> None:
    assert share.rate is not None
    rng = np.random.default_rng([share.seed, share.proc])
    arrivals = poisson_arrivals(share.rate, rng, time.monotonic())
    due = next(arrivals)
    turn = itertools.cycle(streams)
    while not stopping.is_set():
        now = time.monotonic()
        # A timer wakes this loop about once a millisecond at best: everything due
        # by then goes out now, each counted from its own arrival time.
        while due <= now:
            next(turn).send(due)
            rec.lag_at.append(due)
            rec.lag.append(now - due)
            due = next(arrivals)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
