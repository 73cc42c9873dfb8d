"""`gpu-sidecar bench` end to end: real servers on free localhost ports (started by the
tool, or by the test for --target), real load processes, tiny and slow loads. What
is asserted is what was measured and written, never how fast it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.bench import servers

ROOT = Path(__file__).resolve().parents[2]
FAST_MOCK = "mock:?base_ms=0.5&per_item_ms=0.01&dim=8"
SHORT = ("--seconds", "1", "--warmup", "0.2")


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SIDECAR_")}
    done = subprocess.run([sys.executable, "-m", "sidecar.cli", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    print(done.stdout, done.stderr)
    return done


def test_closed_loop_with_baselines_writes_every_figure_to_json(tmp_path):
    out = tmp_path / "run.json"
    done = bench("--model-uri", FAST_MOCK, "--in-flight", "4", *SHORT, "--json", str(out))
    assert done.returncode == 0
    assert done.stdout.startswith("machine: ") and "commit " in done.stdout.splitlines()[0]
    assert "the sidecar against its ceilings" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("gpu-sidecar bench --model-uri") and doc["commit"] == doc["machine"]["commit"]
    assert {"cpu", "cores", "python", "grpcio"} <= set(doc["machine"])
    assert doc["target"]["started"] and doc["target"]["model_uri"] == FAST_MOCK
    sidecar, echo = doc["results"]
    assert (sidecar["target"], echo["target"]) == ("sidecar", "echo")
    for r in (sidecar, echo):
        assert r["mode"] == "closed" and r["in_flight"] == 4 and r["requests"] > 0 and r["errors"] == {}
        assert r["achieved_rps"] > 0 and r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["p999_ms"]
        assert r["cpu_us_per_req"] > 0  # both servers were started here: their pids are known
    assert sidecar["mean_batch"] >= 1 and echo["mean_batch"] is None
    (comparison,) = doc["comparisons"]
    ratios = comparison["ratios"]
    assert all(ratios[k] > 0 for k in ("throughput_vs_echo", "throughput_vs_compute_ceiling",
                                       "cpu_per_request_vs_echo", "throughput_vs_mock_bound"))
    ceiling = comparison["compute_ceiling"]
    assert ceiling["batch_size"] == max(1, round(sidecar["mean_batch"])) and ceiling["calls"] >= 5
    assert comparison["mock_bound"]["rps"] > 0


def test_open_loop_over_two_processes_and_streams(tmp_path):
    out = tmp_path / "open.json"
    done = bench("--model-uri", FAST_MOCK, "--rate", "200", "--procs", "2", "--streams", "2", "--unpacked",
                 "--no-baselines", *SHORT, "--json", str(out))
    assert done.returncode == 0
    (r,) = json.loads(out.read_text())["results"]
    assert (r["mode"], r["rate"], r["procs"], r["streams"], r["packed"]) == ("open", 200.0, 2, 2, False)
    assert r["requests"] > 0 and r["offered_rps"] > 0 and r["lag_p99_ms"] is not None
    assert sum(r["errors"].values()) <= r["requests"]
    assert "rate=200 unpacked" in done.stdout


@pytest.fixture
def running_sidecar(tmp_path):
    server = servers.start("sidecar", servers.sidecar_command(FAST_MOCK))
    yield server
    assert server.stop() == 0  # drained and exited cleanly after the bench


def test_a_sweep_against_a_running_sidecar_with_count_and_plot(tmp_path, running_sidecar):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    done = bench("--target", running_sidecar.address, "--server-pid", str(running_sidecar.pid),
                 "--sweep", "in-flight=1,4", "--count", "50", "--warmup", "0.2",
                 "--json", str(out), "--plot", str(png))
    assert done.returncode == 0
    doc = json.loads(out.read_text())
    assert not doc["target"]["started"] and doc["plan"]["baselines"] is False
    assert [r["in_flight"] for r in doc["results"]] == [1, 4]
    assert all(r["requests"] >= 50 and r["cpu_us_per_req"] is not None for r in doc["results"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
