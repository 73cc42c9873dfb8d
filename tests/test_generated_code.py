"""The committed protobuf code is what scripts/gen_protos.py generates today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ["gpu_sidecar_pb2.py", "gpu_sidecar_pb2.pyi", "gpu_sidecar_pb2_grpc.py"]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_protobuf_code_is_current(tmp_path):
    _load_generator().generate(tmp_path)
    stale = [
        name
        for name in GENERATED
        if (tmp_path / "sidecar/api/v1" / name).read_bytes() != (ROOT / "sidecar/api/v1" / name).read_bytes()
    ]
    assert not stale, f"regenerate with `python scripts/gen_protos.py`: {stale} differ from proto/"
