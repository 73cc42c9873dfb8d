"""A real PyFlink job on a local mini-cluster (no mocks) through a real `gpu-sidecar serve`
on a unix socket: examples/pyflink_job.py, parallelism 2, 2,000 records, every result
checked by the job itself. Each job takes 7-15 s here, most of it Flink starting."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.bench.probe import Probe
from tests.environment import need
from tests.rpc.process import ROOT, ServerProcess, start_server

need(
    "flink",
    None
    if importlib.util.find_spec("pyflink") and shutil.which("java")
    else "needs PyFlink and Java: pip install 'apache-flink==2.3.0' -e '.[flink]'",
)

pytestmark = pytest.mark.timeout(300)

RECORDS = 2000
JOB_TIMEOUT_S = 240
SLOW_MOCK = "sidecar.model.uri=mock:?base_ms=5"  # slow enough that a job lasts a few seconds


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gsf-", dir="/tmp"))  # unix socket paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sidecar(tmp_path: Path, socket_dir: Path, *settings: str, name: str = "server") -> ServerProcess:
    log_dir = tmp_path / name
    log_dir.mkdir()
    args = ["-D", f"sidecar.rpc.endpoint=unix://{socket_dir}/sidecar.sock"]
    for setting in settings:
        args += ["-D", setting]
    return start_server(log_dir, *args)


def stop(server: ServerProcess, sig: signal.Signals = signal.SIGTERM) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(60)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def job_command(target: str, *args: str) -> list[str]:
    script = ROOT / "examples" / "pyflink_job.py"
    return [sys.executable, str(script), "--target", target, "--records", str(RECORDS), "--json", *args]


def outcome_of(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, f"job failed ({done.returncode}):\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_job(target: str, *args: str) -> dict:
    done = subprocess.run(job_command(target, *args), cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    return outcome_of(done)


def test_job_gets_every_record_right_and_the_sidecar_batches_across_subtasks(tmp_path, socket_dir):
    server = sidecar(tmp_path, socket_dir)
    try:
        outcome = run_job(server.address, "--parallelism", "2")
    finally:
        stop(server)
    assert outcome["returned"] == RECORDS and outcome["wrong"] == 0
    assert outcome["sidecar_succeeded"] == RECORDS
    assert outcome["sidecar_rejected"] == 0
    assert outcome["mean_batch"] > 1


def test_rejections_from_a_tiny_queue_are_retried_until_every_record_is_right(tmp_path, socket_dir):
    # Each subtask's stream may have 100 in flight, against a queue of 4: RESOURCE_EXHAUSTED
    # comes back often, as SidecarRetryableError, and Flink's retry strategy sends it again.
    server = sidecar(tmp_path, socket_dir, "sidecar.queue.max-length=4", SLOW_MOCK)
    try:
        outcome = run_job(server.address, "--parallelism", "2", "--max-in-flight", "100")
    finally:
        stop(server)
    assert outcome["returned"] == RECORDS and outcome["wrong"] == 0
    assert outcome["sidecar_rejected"] > 0
    assert outcome["sidecar_succeeded"] == RECORDS  # every rejection was retried to success


RESTARTS = [
    # Flink's retry strategy sends again what fails UNAVAILABLE while the sidecar drains and restarts.
    pytest.param(signal.SIGTERM, ["--no-ride-out"], id="drained-flink-retries"),
    # No Flink timers at all: the function holds each record until a sidecar is back (ride_out).
    pytest.param(signal.SIGKILL, ["--no-flink-retry", "--flink-timeout-s", "0"], id="killed-function-rides-out"),
]


@pytest.mark.parametrize(("how", "flags"), RESTARTS)
def test_job_completes_right_across_a_sidecar_restart_midway(tmp_path, socket_dir, how, flags):
    settings = (SLOW_MOCK, "sidecar.drain.timeout=2 s")
    first = sidecar(tmp_path, socket_dir, *settings, name="first")
    # To files, not pipes: nothing reads a pipe until the job ends, and a full one would stall it.
    out, err = (tmp_path / "job.out").open("w+"), (tmp_path / "job.err").open("w+")
    job = subprocess.Popen(job_command(first.address, "--parallelism", "2", *flags), cwd=ROOT, stdout=out, stderr=err)
    second = None
    try:
        probe = Probe(first.address)
        try:
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while probe.counters().get("requestsSucceeded", 0) < RECORDS // 4:
                assert job.poll() is None, "the job ended before the sidecar was restarted"
                assert time.monotonic() < deadline, "the job never got a quarter of the way"
                time.sleep(0.05)
        finally:
            probe.close()
        stop(first, how)
        second = sidecar(tmp_path, socket_dir, *settings, name="second")
        job.wait(timeout=JOB_TIMEOUT_S)
        out.seek(0)
        err.seek(0)
        outcome = outcome_of(subprocess.CompletedProcess(job.args, job.returncode, out.read(), err.read()))
        probe = Probe(second.address)
        try:
            served_after = probe.counters().get("requestsSucceeded", 0)
        finally:
            probe.close()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        out.close()
        err.close()
        stop(first)
        if second is not None:
            stop(second)
    assert outcome["returned"] == RECORDS and outcome["wrong"] == 0
    assert 0 < served_after < RECORDS  # the second sidecar served the rest, not all
