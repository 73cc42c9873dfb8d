"""Run `gpu-sidecar serve` as a real subprocess, for tests of signals and exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    address: str
    health_port: int
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp_path: Path, *args: str) -> ServerProcess:
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "serve", "--health-port", "0", "--kserve-http-port", "0", "--metrics-prometheus-port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"serving .* on (\S+) \(health http://[^:]+:(\d+)/health", line)
        if match:
            return ServerProcess(proc, match.group(1), int(match.group(2)), log)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server did not start: {line!r}\n{log.read_text()}")
