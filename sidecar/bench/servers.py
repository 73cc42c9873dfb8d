"""The servers a bench run starts: `gpu-sidecar serve` and the echo baseline, each a
subprocess of its own on a free localhost port, stopped when the run ends."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_SERVING = re.compile(r"(?:serving .* on|echo serving on) (\S+)")


@dataclass
class Server:
    """A server this tool started: its process, the address it serves, its log."""

    name: str
    proc: subprocess.Popen[str]
    address: str
    log: IO[str] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        """SIGTERM (the sidecar drains), then the exit code; killed if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def sidecar_command(model_uri: str, serve_args: tuple[str, ...] = ()) -> list[str]:
    # No metric reporters by default: nothing scrapes them during a bench, and the
    # metrics the tool reads come over GetMetrics. A --serve-arg comes later, so it wins.
    return [sys.executable, "-m", "sidecar.cli", "serve", "--log-level", "WARNING",
            "--rpc-endpoint", "127.0.0.1:0", "--health-port", "0", "--kserve-http-port", "0", "--metrics-prometheus-port", "0",
            "--metrics-reporters", "", "--model-uri", model_uri, *serve_args]


def echo_command() -> list[str]:
    return [sys.executable, "-m", "sidecar.bench.echo", "127.0.0.1:0"]


def start(name: str, command: list[str]) -> Server:
    """Starts `command` and returns once it printed the address it serves on."""
    log = tempfile.TemporaryFile("w+")  # the server's stderr: shown if it fails to start
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    # Waits on the pipe with a timeout, so that a server that hangs before its
    # first line cannot hang the bench with it.
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            break
        line = proc.stdout.readline()
        match = _SERVING.search(line)
        if match:
            return Server(name, proc, match.group(1), log)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    log.seek(0)
    tail = log.read()[-2000:]
    log.close()
    raise RuntimeError(f"{name} did not start ({' '.join(command)}):\n{tail}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, all threads (Linux /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
