"""The command line's exits: a backend that cannot load, a sidecar that is not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gpu_sidecar(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_serve_exits_3_naming_the_problem_when_the_backend_cannot_load(tmp_path):
    missing = tmp_path / "weights.npz"
    done = gpu_sidecar(
        "serve", "--rpc-endpoint", "127.0.0.1:0", "--health-port", "0", "--kserve-http-port", "0", "--metrics-reporters", "",
        "--model-backend", "cpu", "--model-uri", str(missing),
    )
    assert done.returncode == 3
    assert f"the backend failed to load: cpu backend: model file '{missing}' does not exist" in done.stderr


def test_infer_exits_2_when_no_sidecar_answers():
    done = gpu_sidecar("infer", "--endpoint", "127.0.0.1:1")
    assert done.returncode == 2
    assert "cannot reach the sidecar at 127.0.0.1:1: UNAVAILABLE" in done.stderr


def test_every_exit_code_of_the_cli_is_in_the_operations_table():
    from sidecar import cli

    codes = {name: value for name, value in vars(cli).items() if name.startswith("EXIT_")}
    assert codes["EXIT_FATAL"] == 4
    table = (ROOT / "docs" / "operations.md").read_text().split("## Exit codes", 1)[1]
    documented = {int(line.split("|")[1]) for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert set(codes.values()) <= documented, (codes, documented)
