"""Throughput and latency of the sidecar against a bare gRPC echo server, same run.

    python -m benchmarks.bench_infer [--seconds 5] [--inflight 64] [--rounds 2]

Each server runs in its own process; the load generator (this process, uvloop)
keeps `--inflight` requests outstanding on one stream, replacing each answered
request at once (a closed loop). Every target is measured packed (up to 64
requests per stream message) and unpacked (one per message), in rounds that
alternate targets, so machine drift hits all of them alike. Ratios against the
echo server are the figures to compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sidecar.client import SidecarClient

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    target: str
    mode: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Server process CPU (user + system, all threads) per answered request: steadier
    # than throughput on a shared machine, and what the server itself spends.
    cpu_us_per_req: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    proc: subprocess.Popen[str]
    address: str
    metrics_url: str | None


def start_server(args: list[str]) -> Server:
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"(?:serving .* on|echo serving on) (\S+)", line)
        if match:
            metrics = re.search(r"metrics http://[^:]+:(\d+)/metrics", line)
            url = f"http://127.0.0.1:{metrics.group(1)}/metrics" if metrics else None
            return Server(proc, match.group(1), url)
    proc.kill()
    raise RuntimeError(f"server {args} did not start")


class Scraper(threading.Thread):
    """Scrapes a Prometheus endpoint once a second, as a Prometheus server would."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.scrapes, self.stopped = url, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            urllib.request.urlopen(self.url, timeout=5).read()
            self.scrapes += 1


async def load(
    address: str, inflight: int, seconds: float, max_pack: int, warmup: float, pid: int
) -> tuple[int, float, list[float], int, float]:
    payload = {"input": np.arange(16, dtype=np.float32)}
    latencies: list[float] = []
    errors = 0
    state = {"measuring": False, "stop": False, "done": 0}
    finished = asyncio.Event()
    outstanding = 0

    async with SidecarClient(address, max_pack=max_pack) as client:
        await client.wait_ready(timeout_s=60)

        def launch() -> None:
            nonlocal outstanding
            start = time.perf_counter()
            future = client.submit(payload)
            outstanding += 1

            def done(f: asyncio.Future, start: float = start) -> None:
                nonlocal outstanding, errors
                outstanding -= 1
                if state["measuring"]:
                    if f.exception() is None:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1
                elif f.exception() is not None:
                    f.exception()  # retrieved: keeps asyncio quiet
                if not state["stop"]:
                    launch()
                elif outstanding == 0:
                    finished.set()

            future.add_done_callback(done)

        for _ in range(inflight):
            launch()
        await asyncio.sleep(warmup)
        state["measuring"] = True
        begin, cpu_begin = time.perf_counter(), cpu_seconds(pid)
        await asyncio.sleep(seconds)
        state["measuring"] = False
        elapsed, cpu = time.perf_counter() - begin, cpu_seconds(pid) - cpu_begin
        state["stop"] = True
        await asyncio.wait_for(finished.wait(), timeout=30)
    return len(latencies), elapsed, latencies, errors, cpu


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "commit": commit + ("-dirty" if dirty else ""),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.bench_infer", *sys.argv[1:]]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model-uri", default="mock:?base_ms=2&per_item_ms=0.02")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for `gpu-sidecar serve`")
    parser.add_argument("--modes", default="packed,unpacked", help="comma-separated: packed, unpacked")
    parser.add_argument("--targets", help="comma-separated subset of: sidecar, sidecar0, sidecar0+rep (echo always runs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    def sidecar(model_uri: str, reporters: str = "") -> list[str]:
        return ["-m", "sidecar.cli", "serve", "--log-level", "WARNING", "--rpc-endpoint", "127.0.0.1:0",
                "--health-port", "0", "--metrics-prometheus-port", "0", "--metrics-reporters", reporters,
                "--metrics-log-interval", "1 s", "--model-uri", model_uri, *args.serve_arg]

    zero = "mock:?base_ms=0&per_item_ms=0"
    targets = {
        "echo": ["-m", "benchmarks.echo_server", "127.0.0.1:0"],
        "sidecar": sidecar(args.model_uri),
        # The same pipeline with a backend that takes no time: what the sidecar itself costs.
        "sidecar0": sidecar(zero),
        # ... with the Prometheus and log reporters on, scraped and logging once a second.
        "sidecar0+rep": sidecar(zero, "prom,log"),
    }
    if args.targets:
        targets = {k: v for k, v in targets.items() if k in args.targets.split(",") or k == "echo"}
    modes = {m: {"packed": 64, "unpacked": 1}[m] for m in args.modes.split(",")}
    info = machine()
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    results: list[Result] = []
    servers = {name: start_server(cmd) for name, cmd in targets.items()}
    for name, server in servers.items():
        print(f"{name}: pid {server.proc.pid} on {server.address}", flush=True)
    try:
        for rnd in range(1, args.rounds + 1):
            for mode, pack in modes.items():
                for name, server in servers.items():
                    scraper = Scraper(server.metrics_url) if server.metrics_url else None
                    if scraper:
                        scraper.start()
                    n, elapsed, lat, errors, cpu = asyncio.run(
                        load(server.address, args.inflight, args.seconds, pack, args.warmup, server.proc.pid)
                    )
                    if scraper:
                        scraper.stopped.set()
                    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
                    r = Result(name, mode, rnd, n, round(elapsed, 3), round(n / elapsed, 1),
                               round(float(np.percentile(ms, 50)), 3), round(float(np.percentile(ms, 99)), 3), errors,
                               round(cpu / max(n, 1) * 1e6, 1))
                    results.append(r)
                    print(f"round {rnd} {mode:8} {name:12} {r.rps:>10,.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                          f"p99 {r.p99_ms:7.2f} ms  cpu {r.cpu_us_per_req:6.1f} us/req  errors {errors}", flush=True)
    finally:
        for server in servers.values():
            server.proc.terminate()
            server.proc.wait(timeout=30)

    print(f"\nsummary over {args.rounds} round(s), {args.inflight} in flight, one stream; "
          f"sidecar: {args.model_uri}; sidecar0: zero-latency mock; +rep: Prometheus (scraped 1/s) and log reporters on")
    print(f"{'mode':8} {'target':12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs echo':>8} {'cpu us/req':>10}")
    for mode in modes:
        best = {}
        for name in targets:
            rows = [r for r in results if r.mode == mode and r.target == name]
            best[name] = tuple(float(np.median([getattr(r, f) for r in rows]))
                               for f in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"))
        for name, (rps, p50, p99, cpu) in best.items():
            print(f"{mode:8} {name:12} {rps:>10,.0f} {p50:>8.2f} {p99:>8.2f} {rps / best['echo'][0]:>8.2f} {cpu:>10.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "results": [asdict(r) for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
