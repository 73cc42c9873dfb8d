"""What the KServe front ends say about the server and its model, as plain dicts:
the HTTP front end sends them as JSON, the gRPC one parses them into its
messages (json_format.ParseDict), so both say the same thing."""

from __future__ import annotations

from typing import Any

from sidecar import __version__
from sidecar.core.kserve_tensors import datatype_of
from sidecar.kserve.types import Model

SERVER_NAME = "gpu-sidecar"
# Triton's extension names for what is served: perf_analyzer reads server-side
# statistics only when `statistics` is listed.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics", "parameters")
NS = 1e9


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(model: Model) -> dict[str, Any]:
    def tensors(specs: Any) -> list[dict[str, Any]]:
        # -1: the batch dimension, any size (perf_analyzer drops it when batching).
        return [{"name": s.name, "datatype": datatype_of(s), "shape": [-1, *s.shape]} for s in specs]

    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": tensors(model.spec.inputs),
        "outputs": tensors(model.spec.outputs),
    }


def model_config(model: Model) -> dict[str, Any]:
    """Triton's ModelConfig, the part that describes this model: per-item dims (the
    batch dimension is implied by max_batch_size > 0) and the batcher's window."""

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": "TYPE_" + datatype_of(s), "dims": list(s.shape)} for s in specs]

    return {
        "name": model.name,
        "platform": model.platform,
        "backend": model.platform,
        "max_batch_size": model.max_batch_size,
        "input": tensors(model.spec.inputs),
        "output": tensors(model.spec.outputs),
        "instance_group": [{"name": model.name, "count": model.instances, "kind": "KIND_AUTO"}],
        "dynamic_batching": {
            "preferred_batch_size": [model.max_batch_size],
            "max_queue_delay_microseconds": round(model.batch_timeout_s * 1e6),
        },
    }


def model_statistics(model: Model, counts: dict[str, Any], last_inference_ms: int) -> dict[str, Any]:
    """Triton's ModelStatistics from the metrics actor's counts, since start.

    Items count as Triton's "inferences": success = items answered OK, fail = items
    answered with an error, queue and compute_infer = items that ran in a batch,
    with their summed queue wait and their batch's compute time (durations in ns,
    cumulative). Nothing is cached and input/output copying is not timed apart.
    """
    outcomes, totals = counts.get("outcomes", {}), counts.get("totals", {})
    succeeded = int(outcomes.get("succeeded", 0))
    failed = sum(int(v) for k, v in outcomes.items() if k not in ("received", "succeeded"))
    ran = int(totals.get("items_executed", 0))

    def duration(count: int, seconds: float = 0.0) -> dict[str, int]:
        return {"count": count, "ns": round(seconds * NS)}

    return {
        "name": model.name,
        "version": model.version,
        "last_inference": last_inference_ms,
        "inference_count": succeeded,
        "execution_count": int(counts.get("batches", 0)),
        "inference_stats": {
            "success": duration(succeeded, float(totals.get("end_to_end_s", 0.0)) * _share(succeeded, totals)),
            "fail": duration(failed),
            "queue": duration(ran, float(totals.get("queue_wait_s", 0.0))),
            "compute_input": duration(ran),
            "compute_infer": duration(ran, float(totals.get("compute_item_s", 0.0))),
            "compute_output": duration(ran),
            "cache_hit": duration(0),
            "cache_miss": duration(0),
        },
        "batch_stats": [],
    }


def _share(succeeded: int, totals: dict[str, Any]) -> float:
    """End-to-end time is summed over every answer written, errors too: the share of
    it that successes stand for, taking their mean as the mean of all."""
    written = int(totals.get("written", 0))
    return succeeded / written if written else 0.0
