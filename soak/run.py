"""One soak: start the sidecar, drive the load, sample its memory at paused
points, judge, and hand back everything the report needs."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from soak import server as soak_server
from soak.load import Pace, Tally, scenarios
from soak.verdict import OUTCOMES, Sample, Verdict, judge, reconcile

# How long the load may take to pause, the counters to settle, stalled calls to return.
PAUSE_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 20.0
COUNTERS = {"requestsReceived": "received", **{f"requests{o.capitalize()}": o for o in OUTCOMES}}


@dataclass(frozen=True, slots=True)
class Settings:
    duration_s: float = 30 * 60
    interval_s: float = 30.0
    warmup_s: float = 120.0
    seed: int = 0
    model_uri: str = soak_server.MODEL_URI
    serve_args: tuple[str, ...] = ()


@dataclass
class Point:
    """One paused measurement."""

    sample: Sample
    warmup: bool
    counters: dict[str, int]
    growth: list[tuple[str, int, int]]  # (site, size diff, count diff) against the baseline


@dataclass
class Result:
    settings: Settings
    points: list[Point] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    counters: dict[str, int] = field(default_factory=dict)
    verdict: Verdict | None = None
    server_exit: int | None = None
    started_at: float = field(default_factory=time.time)
    elapsed_s: float = 0.0

    @property
    def measured(self) -> list[Sample]:
        return [p.sample for p in self.points if not p.warmup]


Progress = Callable[[Result, str], None]


async def _counters(stub: pb_grpc.GpuSidecarStub) -> tuple[dict[str, int], float]:
    snapshot = await stub.GetMetrics(pb.GetMetricsRequest(), timeout=30)
    counters = {COUNTERS[m.name]: m.counter for m in snapshot.metrics if m.name in COUNTERS}
    inflight = next((m.gauge for m in snapshot.metrics if m.name == "inflightRequests"), 0.0)
    return counters, inflight


async def _settled(stub: pb_grpc.GpuSidecarStub, tally: Tally, *, stuck: bool = False) -> dict[str, int]:
    """Counters once nothing is in flight (and, if asked, no hung call is still out)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        counters, inflight = await _counters(stub)
        report = await stub.GetMemoryReport(pb.MemoryReportRequest(), timeout=60) if stuck else None
        if inflight == 0 and (report is None or report.structures.get("batcher.stuck_hung", 0) == 0):
            return counters
        if time.monotonic() > deadline:
            tally.problem(f"server never settled: {inflight:g} in flight" + (
                f", {report.structures.get('batcher.stuck_hung', 0)} hung calls out" if report else ""))
            return counters
        # A memory report is a garbage collection and a heap snapshot: not every 0.1 s.
        await asyncio.sleep(1.0 if stuck else 0.1)


def _scrape(port: int | None) -> None:
    if port is not None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            reply.read()


async def _measure(stub: pb_grpc.GpuSidecarStub, t0: float, *, baseline: bool) -> tuple[Sample, list[tuple[str, int, int]]]:
    report = await stub.GetMemoryReport(pb.MemoryReportRequest(set_baseline=baseline, top=10), timeout=300)
    counters, _ = await _counters(stub)
    sample = Sample(
        time.monotonic() - t0, report.traced_bytes, report.rss_bytes, report.threads, report.open_fds,
        counters.get("received", 0), dict(report.structures),
    )
    return sample, [(g.site, g.size_diff_bytes, g.count_diff) for g in report.top_growth]


async def soak(settings: Settings, log: Path, progress: Progress) -> Result:
    result = Result(settings)
    tally = result.tally
    server = soak_server.start(log, settings.model_uri, settings.serve_args)
    t0 = time.monotonic()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GpuSidecarStub(channel)
            await _wait_ready(stub)
            await _drive(result, server, stub, t0, progress)
    finally:
        result.server_exit = server.stop()
        result.elapsed_s = time.monotonic() - t0
    if result.server_exit != 0:
        tally.problem(f"the sidecar exited {result.server_exit} after its drain, not 0")
    _judge(result)
    progress(result, "done")
    return result


async def _wait_ready(stub: pb_grpc.GpuSidecarStub) -> None:
    deadline = time.monotonic() + soak_server.START_TIMEOUT_S
    while True:
        try:
            await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _drive(result: Result, server: soak_server.SoakServer, stub: pb_grpc.GpuSidecarStub, t0: float,
                 progress: Progress) -> None:
    settings, tally = result.settings, result.tally
    chosen = scenarios()
    pace = Pace(len(chosen))
    tasks = [
        asyncio.ensure_future(run(server.address, tally, pace, random.Random(settings.seed * 1000 + i)))
        for i, run in enumerate(chosen.values())
    ]
    baseline_taken = False
    next_at = t0 + settings.interval_s
    try:
        while True:
            end = t0 + settings.duration_s
            await asyncio.sleep(max(0.0, min(next_at, end) - time.monotonic()))
            final = time.monotonic() >= end
            if not await pace.pause(PAUSE_TIMEOUT_S):
                tally.problem(f"the load did not pause within {PAUSE_TIMEOUT_S:g} s")
            counters = await _settled(stub, tally, stuck=final)
            warmup = time.monotonic() - t0 < settings.warmup_s
            sample, growth = await _measure(stub, t0, baseline=not warmup and not baseline_taken)
            baseline_taken = baseline_taken or not warmup
            await asyncio.to_thread(_scrape, server.prometheus_port)
            result.points.append(Point(sample, warmup, counters, growth))
            progress(result, "warm-up" if warmup else "measuring")
            if final:
                break
            pace.resume()
            next_at = time.monotonic() + settings.interval_s
    finally:
        pace.stopping = True
        pace.resume()
        done, pending = await asyncio.wait(tasks, timeout=PAUSE_TIMEOUT_S)
        for task in pending:
            task.cancel()
            tally.problem("a scenario did not stop")
        for task in done:
            if task.exception() is not None:
                tally.problem(f"a scenario failed: {task.exception()!r}")
    result.counters = await _settled(stub, tally)


def _judge(result: Result) -> None:
    tally = result.tally
    answered_once = list(tally.problems)
    if tally.counts["unexpected"]:
        answered_once.append(f"{tally.counts['unexpected']} answers came for requests not in flight")
    if tally.counts["lost"] > tally.killed_lost:
        answered_once.append(f"{tally.counts['lost'] - tally.killed_lost} requests lost by clients that were not killed")
    last_growth = result.points[-1].growth if result.points else []
    result.verdict = judge(
        result.measured,
        result.settings.duration_s,
        answered_once=answered_once,
        counter_problems=reconcile(result.counters, tally.counts, tally.killed_lost),
        growth_sites=[f"{site} {size:+,} B ({count:+,} blocks)" for site, size, count in last_growth if size > 0][:10],
    )
