"""The JSON a bench writes with `--json`: where and how it ran, and every figure."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from sidecar.bench.run import Outcome, Plan


def as_json(outcome: Outcome, plan: Plan, machine: dict[str, str], command: str, started_at: float) -> dict[str, Any]:
    return {
        "machine": machine,
        "command": command,
        "commit": machine["commit"],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "plan": {**asdict(plan), "loads": [asdict(load) for load in plan.loads]},
        "target": outcome.target,
        "limits": MessageToDict(outcome.info.limits, preserving_proto_field_name=True),
        "results": [r.as_dict() for r in outcome.results],
        "comparisons": [c.as_dict() for c in outcome.comparisons],
    }


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(document), indent=2, allow_nan=False) + "\n")


def finite(value: Any) -> Any:
    """`value` with every infinite or NaN float as None (a zero-latency mock's bound is
    infinite), so that the file is strict JSON any reader takes."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
