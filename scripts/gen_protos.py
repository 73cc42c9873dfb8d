"""Regenerate the committed Python code for proto/ (run from anywhere).

    python scripts/gen_protos.py            # rewrite sidecar/api/**/*_pb2*.py
    python scripts/gen_protos.py --out DIR  # write into DIR instead (the staleness test uses this)

The output depends on the grpcio-tools version, which is pinned in pyproject.toml's
protos extra so that everyone generates the same bytes. That version is old on
purpose (its code loads on Beam's protobuf 5 and grpcio 1.65 as well as on the
newest), and it needs protobuf < 6, so run this where that extra is installed:

    python3 -m venv .venv-flink && .venv-flink/bin/pip install -e '.[protos]'
    .venv-flink/bin/python scripts/gen_protos.py
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
# proto file -> whether it gets a grpc stub. The KServe service is registered by
# hand under the name its clients call (sidecar/kserve/grpc_service.py), so a
# stub under the file's own package name would only mislead.
PROTO_FILES = {
    "sidecar/api/v1/gpu_sidecar.proto": True,
    "sidecar/api/kserve/v2/inference.proto": False,
}


def _include_dirs() -> list[str]:
    import google.rpc  # googleapis-common-protos ships status.proto
    import grpc_tools

    well_known = resources.files(grpc_tools) / "_proto"
    googleapis = Path(google.rpc.__path__[0]).parent.parent
    return [str(PROTO_ROOT), str(well_known), str(googleapis)]


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    for proto, with_grpc in PROTO_FILES.items():
        args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
        args += [f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
        if with_grpc:
            args.append(f"--grpc_python_out={out_dir}")
        if protoc.main([*args, proto]) != 0:
            raise SystemExit(f"protoc failed on {proto}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: repository root)")
    args = parser.parse_args(argv)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
