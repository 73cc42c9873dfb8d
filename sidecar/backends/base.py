"""The one interface every backend implements.

An executor owns one backend instance and calls it from its own thread, one batch
at a time, so implementations need no locking. `infer` may block (a GPU call, a
sleep): that is what the executor's thread is for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sidecar.core.tensors import ModelSpec


@dataclass(frozen=True, slots=True)
class BackendInfo:
    spec: ModelSpec
    # The largest batch this model accepts (e.g. a TensorRT profile's max);
    # None when any size works. The server uses the smaller of this and its config.
    max_batch_size: int | None = None


class BackendError(RuntimeError):
    """A backend could not load or run; the message is shown to operators and clients."""


class Backend(ABC):
    #: The registry name, e.g. "mock"; also what GetModelInfo reports.
    name: ClassVar[str]

    def __init__(self, model_uri: str) -> None:
        self.model_uri = model_uri

    @abstractmethod
    def load(self) -> BackendInfo:
        """Load the model and warm it up; after this returns, `infer` is fast."""

    @abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run one batch: every array is [N, *per-item shape]; so must every output be."""

    def close(self) -> None:
        """Free what `load` took. Called once, from the executor's thread."""
