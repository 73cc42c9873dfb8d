"""`python -m soak` / `gpu-sidecar soak`: a soak of the sidecar with tracemalloc reports.

    python -m soak                      # 30 minutes, a sample every 30 s (docs/soak.md)
    python -m soak --short              # about 2 minutes, the same load and verdict (CI runs it)
    python -m soak --duration '10 min' --interval '15 s' --out soak-reports/today

Exit code: 0 PASS, 1 FAIL, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path

from sidecar.units import parse_duration
from soak import report as soak_report
from soak.run import Result, Settings, soak
from soak.verdict import OUTCOMES

# The CI size. RSS climbs for the first minute (the allocator and gRPC's buffers
# reaching their working size; measured: 127 -> 145 MiB, flat after), so the
# warm-up covers it.
SHORT = {"duration_s": 150.0, "interval_s": 5.0, "warmup_s": 60.0}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu-sidecar soak", description="Soak the sidecar and judge its memory.")
    p.add_argument("--duration", help="how long the load runs (default 30 min; --short: 2 min)")
    p.add_argument("--interval", help="time between samples (default 30 s; --short: 5 s)")
    p.add_argument("--warmup", help="samples before this are not judged (default 2 min, at most a third of the run)")
    p.add_argument("--short", action="store_true", help="the CI size: 150 s, a sample every 5 s, 60 s warm-up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-uri", help="mock URI of the server (default: the soak's fault mix)")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `gpu-sidecar serve` argument (repeatable)")
    p.add_argument("--out", type=Path, help="report folder (default soak-reports/<UTC time>)")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    values: dict[str, float] = dict(SHORT) if args.short else {}
    if args.duration:
        values["duration_s"] = parse_duration(args.duration)
    if args.interval:
        values["interval_s"] = parse_duration(args.interval)
    defaults = Settings()
    duration = values.get("duration_s", defaults.duration_s)
    if args.warmup:
        values["warmup_s"] = parse_duration(args.warmup)
    elif "warmup_s" not in values:
        values["warmup_s"] = min(defaults.warmup_s, duration / 3)
    extra = {"model_uri": args.model_uri} if args.model_uri else {}
    settings = Settings(seed=args.seed, serve_args=tuple(args.serve_arg), **values, **extra)  # type: ignore[arg-type]
    if settings.duration_s <= 0 or settings.interval_s <= 0 or settings.warmup_s >= settings.duration_s:
        raise ValueError("need a positive duration and interval, and a warm-up shorter than the duration")
    return settings


class Display:
    """A rich progress bar on a terminal; one line per sample elsewhere (CI logs)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._started = time.monotonic()
        self._live = None
        if sys.stdout.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._live = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                      TextColumn("{task.fields[figures]}"))
                self._task = self._live.add_task("soak", total=settings.duration_s, figures="starting")
                self._live.start()
            except ImportError:
                self._live = None

    def tick(self) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=min(self._settings.duration_s, time.monotonic() - self._started))

    def __call__(self, result: Result, phase: str) -> None:
        if not result.points:
            return
        p = result.points[-1]
        s, c = p.sample, p.counters
        outcomes = " ".join(f"{o}={c.get(o, 0):,}" for o in OUTCOMES if c.get(o))
        figures = (f"{phase}: {s.requests:,} requests ({outcomes}); traced {s.traced_bytes / 2**20:.2f} MiB, "
                   f"RSS {s.rss_bytes / 2**20:.1f} MiB, {s.threads} threads, {s.open_fds} fds")
        if self._live is not None:
            self._live.update(self._task, description=phase, figures=figures)
            self.tick()
        else:
            print(f"[{s.t_s:7.1f} s] {figures}", flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


async def _run(settings: Settings, log: Path, display: Display) -> Result:
    async def ticker() -> None:
        while True:
            display.tick()
            await asyncio.sleep(1)

    ticking = asyncio.ensure_future(ticker())
    try:
        return await soak(settings, log, display)
    finally:
        ticking.cancel()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as e:
        print(f"gpu-sidecar soak: {e}", file=sys.stderr)
        return 2
    out = args.out or Path("soak-reports") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    print(f"soak: {settings.duration_s:g} s of load, a sample every {settings.interval_s:g} s after a "
          f"{settings.warmup_s:g} s warm-up; reports in {out}", flush=True)
    display = Display(settings)
    try:
        result = asyncio.run(_run(settings, out / "server.log", display))
    finally:
        display.close()
    report = soak_report.write(result, out, "python -m soak " + shlex.join(argv))
    verdict = result.verdict
    assert verdict is not None
    s = verdict.slopes
    print(f"soak: {'PASS' if verdict.passed else 'FAIL'}: traced {s.traced_per_s * 60:+,.0f} B/min, "
          f"{s.traced_per_request:+.4f} B/request, RSS {s.rss_per_s * 60 / 2**20:+.2f} MiB/min; "
          f"report {out / 'soak-report.md'}" + ("" if report["plot"] else " (no plot: matplotlib is not installed)"))
    for reason in verdict.reasons:
        print(f"  - {reason}")
    return 0 if verdict.passed else 1
