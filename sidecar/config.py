"""Every limit and default of the sidecar, in one frozen object.

docs/configuration.md explains each field. The Flink-style keys
(`sidecar.batch.max-size`, ...) and their sources (file, env, flags) are the
configuration loader's job; this object is what the rest of the code reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.core.admission import AdmissionLimits
from sidecar.core.batcher import BatchLimits


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    # Where to listen: "host:port" or "unix:///path/to.sock".
    endpoint: str = "127.0.0.1:7651"
    backend: str = "mock"
    model_uri: str = ""
    # Backend instances, each with its own executor actor and thread.
    instances: int = 1
    max_batch_size: int = 32
    # The batch window, counted from the oldest queued request.
    batch_timeout_s: float = 0.002
    # Batches handed to one executor before it finishes the first: >1 hides the
    # round trip between batches.
    max_inflight_batches: int = 2
    max_queue_length: int = 4096
    max_queue_wait_s: float = 1.0
    max_message_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        problems = []
        for name in ("instances", "max_batch_size", "max_inflight_batches", "max_queue_length", "max_message_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_s < 0:
            problems.append(f"batch_timeout_s must be >= 0, got {self.batch_timeout_s}")
        if self.max_queue_wait_s <= 0:
            problems.append(f"max_queue_wait_s must be > 0, got {self.max_queue_wait_s}")
        if self.batch_timeout_s > self.max_queue_wait_s:
            problems.append(
                f"batch_timeout_s ({self.batch_timeout_s}) must not exceed max_queue_wait_s "
                f"({self.max_queue_wait_s}): a batch could never fill before its requests expire"
            )
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))

    def admission_limits(self) -> AdmissionLimits:
        return AdmissionLimits(self.max_queue_length, self.max_queue_wait_s)

    def batch_limits(self, backend_max_batch: int | None = None) -> BatchLimits:
        size = self.max_batch_size if backend_max_batch is None else min(self.max_batch_size, backend_max_batch)
        return BatchLimits(size, self.batch_timeout_s, self.instances, self.max_inflight_batches)
