"""The committed protobuf code is what scripts/gen_protos.py generates today."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from tests.environment import need

ROOT = Path(__file__).resolve().parent.parent
GENERATED = [
    "sidecar/api/v1/gpu_sidecar_pb2.py",
    "sidecar/api/v1/gpu_sidecar_pb2.pyi",
    "sidecar/api/v1/gpu_sidecar_pb2_grpc.py",
    "sidecar/api/kserve/v2/inference_pb2.py",
    "sidecar/api/kserve/v2/inference_pb2.pyi",
]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pinned_generator() -> str:
    return re.search(r'"grpcio-tools==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)


def _generator_missing(pinned: str) -> str | None:
    try:
        have = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        have = None
    if have == pinned:
        return None
    found = f"grpcio-tools {have} is installed" if have else "grpcio-tools is not installed"
    return f"needs grpcio-tools=={pinned} (the protos extra; CI's flink environment has it): {found}"


def test_generated_protobuf_code_is_current(tmp_path):
    need("protos", _generator_missing(_pinned_generator()))
    _load_generator().generate(tmp_path)
    stale = [
        name
        for name in GENERATED
        if (tmp_path / name).read_bytes() != (ROOT / name).read_bytes()
    ]
    assert not stale, f"regenerate with `python scripts/gen_protos.py`: {stale} differ from proto/"
    made = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*_pb2*.py*")}
    assert made == set(GENERATED), f"the generator makes {sorted(made)}; GENERATED lists {GENERATED}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _declared_minimum(package: str) -> tuple[int, ...]:
    return _version(re.search(rf'"{package}>=([\d.]+)', (ROOT / "pyproject.toml").read_text()).group(1))


def test_declared_minimums_are_what_the_committed_stubs_need():
    # The stubs refuse (protobuf) or warn about (grpc) a runtime older than their generator:
    # the package must not admit one, or an install beside PyFlink could break on import.
    generated = ROOT / "sidecar/api/v1"
    gencode = re.search(r"Protobuf Python Version: ([\d.]+)", (generated / "gpu_sidecar_pb2.py").read_text())
    kserve = re.search(r"Protobuf Python Version: ([\d.]+)", (ROOT / "sidecar/api/kserve/v2/inference_pb2.py").read_text())
    assert kserve.group(1) == gencode.group(1), "every stub comes from the one generator"
    grpc_gen = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", (generated / "gpu_sidecar_pb2_grpc.py").read_text())
    assert _declared_minimum("protobuf") >= _version(gencode.group(1))
    for package in ("grpcio", "grpcio-health-checking", "grpcio-reflection"):
        assert _declared_minimum(package) >= _version(grpc_gen.group(1)), package


def test_stubs_import_cleanly_on_this_runtime():
    # In a fresh interpreter, with warnings as errors: a gencode/runtime mismatch warns or raises.
    import subprocess
    import sys

    code = "import sidecar.api.v1.gpu_sidecar_pb2_grpc, sidecar.api.kserve.v2.inference_pb2, sidecar.client"
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
