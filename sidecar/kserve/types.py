"""What the KServe front ends share: the model as their clients see it, and a
request and its answer in a form neither protocol owns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.core.kserve_tensors import KTensor
from sidecar.core.quote import quote
from sidecar.core.status import Code, Failure
from sidecar.core.tensors import ModelSpec


@dataclass(frozen=True, slots=True)
class Model:
    """The one model a sidecar serves, as KServe clients name and see it."""

    name: str
    version: str
    platform: str  # the backend's name
    spec: ModelSpec
    max_batch_size: int
    instances: int
    batch_timeout_s: float
    # The most items one request may carry: more could never be admitted at once
    # (the stream's window, the queue, a stream's share of it), so it is refused
    # 400 rather than answered a retryable 503 for ever.
    max_items: int

    def resolve(self, name: str, version: str) -> Failure | None:
        """None if `name` / `version` ("" or "latest" meaning the one served) is this model."""
        if name != self.name:
            return Failure(Code.NOT_FOUND, f"unknown model {quote(name)}; this sidecar serves {self.name!r}")
        if version not in ("", "latest", self.version):
            return Failure(
                Code.NOT_FOUND,
                f"model {self.name!r} has no version {quote(version)}; it serves version {self.version!r} (or 'latest')",
            )
        return None


@dataclass(frozen=True, slots=True)
class KRequest:
    """One KServe infer request, whichever protocol carried it."""

    model_name: str
    model_version: str
    id: str
    inputs: Sequence[KTensor]
    outputs: Sequence[str]  # requested output names; empty: all
    timeout_s: float | None = None  # the request's own `timeout` parameter


@dataclass(frozen=True, slots=True)
class KResult:
    """A request's answer: the outputs asked for (all if none), in the model's order;
    or a failure."""

    id: str
    outputs: tuple[KTensor, ...] = ()
    failure: Failure | None = None
