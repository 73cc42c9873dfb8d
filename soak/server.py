"""The sidecar under soak: `gpu-sidecar serve` in a process of its own, tracemalloc on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
# The mix of faults the soak injects: a failing batch every 700, and every 3000th
# batch of an instance stalls past the backend timeout (so it is given up on as
# hung, replaced, and its call returns later). Latency: 1 ms + 10 us per item.
MODEL_URI = "mock:?base_ms=1&per_item_ms=0.01&fail_every=700&stall_every=3000&stall_ms=1500"
SERVE_ARGS = (
    "--model-instances", "2",
    "--backend-timeout", "1 s",
    "--queue-max-length", "512",
    "--queue-max-wait", "500 ms",
    "--drain-timeout", "10 s",
)


@dataclass
class SoakServer:
    proc: subprocess.Popen[str]
    address: str
    prometheus_port: int | None
    log: Path

    def stop(self) -> int:
        """SIGTERM (a drain), then the exit code; killed if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start(log: Path, model_uri: str = MODEL_URI, extra_args: tuple[str, ...] = ()) -> SoakServer:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONTRACEMALLOC": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "serve", "--rpc-endpoint", "127.0.0.1:0", "--health-port", "0", "--kserve-http-port", "0",
         "--metrics-prometheus-port", "0", "--model-uri", model_uri, *SERVE_ARGS, *extra_args],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"serving .* on (\S+) \(health", line)
        if match:
            prom = re.search(r"metrics http://[^:]+:(\d+)/metrics", line)
            return SoakServer(proc, match.group(1), int(prom.group(1)) if prom else None, log)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the sidecar did not start:\n{log.read_text(errors='replace')[-2000:]}")
