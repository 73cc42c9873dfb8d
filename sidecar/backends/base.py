"""The one interface every backend implements.

An executor owns one backend instance and calls it from its own thread, so
implementations need no locking. `infer` may block (a GPU call, a sleep): that
is what the executor's thread is for.

What a real engine may add (each has a default, so a backend implements only
`load` and `infer`):

- options: `self.options` (sidecar/backends/options.py) holds its
  `sidecar.backend.<name>.*` config keys over the model URI's query;
- `warm_up(spec, sizes)`: run at load, over the batch sizes it will see, before
  the sidecar turns READY;
- `input_buffers(n)`: writable arrays (pinned host memory, say) that the
  executor joins a batch of n straight into: the batch is copied once;
- `pipelined = True` with `submit` / `collect`: the executor joins and submits
  batch N+1 before it collects batch N, so host work overlaps the device's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sidecar.backends.base_errors import BackendError
from sidecar.backends.options import BackendOptions
from sidecar.core.tensors import DTYPES, ModelSpec

__all__ = ["Backend", "BackendError", "BackendInfo", "BackendOptions", "warm_up_sizes"]


@dataclass(frozen=True, slots=True)
class BackendInfo:
    spec: ModelSpec
    # The largest batch this model accepts (e.g. a TensorRT profile's max);
    # None when any size works. The server uses the smaller of this and its config.
    max_batch_size: int | None = None


def warm_up_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to max_batch, and max_batch itself: the sizes an engine
    should have seen (allocated, compiled, autotuned for) before traffic."""
    sizes, n = [], 1
    while n < max_batch:
        sizes.append(n)
        n *= 2
    sizes.append(max_batch)
    return sizes


class Backend(ABC):
    #: The registry name, e.g. "mock"; also what GetModelInfo reports.
    name: ClassVar[str]
    #: The package extra that installs what it imports, e.g. "onnx" for
    #: `pip install 'gpu-sidecar[onnx]'`; None for a backend that needs nothing more.
    extra: ClassVar[str | None] = None
    #: True when `submit` returns before the work is done (`collect` waits for it).
    pipelined: ClassVar[bool] = False

    def __init__(self, model_uri: str, options: BackendOptions | None = None) -> None:
        self.model_uri = model_uri
        self.options = options if options is not None else BackendOptions.of(self.name, model_uri)

    @abstractmethod
    def load(self) -> BackendInfo:
        """Load the model and warm it up; after this returns, `infer` is fast."""

    @abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run one batch: every array is [N, *per-item shape]; so must every output be."""

    def warm_up(self, spec: ModelSpec, sizes: Sequence[int]) -> None:
        """Runs a batch of zeros of each size once (after `load`, before READY), so
        that no client pays for first-call allocations or kernel selection."""
        for n in sizes:
            zeros = {s.name: np.zeros((n, *s.shape), DTYPES[s.dtype]) for s in spec.inputs}
            self.collect(self.submit(zeros))

    def input_buffers(self, n: int) -> Mapping[str, np.ndarray] | None:
        """Writable [n, *shape] arrays, one per model input, for the executor to join
        a batch of n into; None (the default) lets the executor make them. They
        must stay untouched by the backend until `submit` gets them back."""
        return None

    def submit(self, inputs: Mapping[str, np.ndarray]) -> Any:
        """Starts one batch; what it returns goes to `collect`. By default it runs
        the batch (`infer`) and returns the outputs."""
        return self.infer(inputs)

    def collect(self, handle: Any) -> Mapping[str, np.ndarray]:
        """The outputs of the batch `submit` started (waiting for them if need be)."""
        return handle

    def close(self) -> None:
        """Free what `load` took. Called once, from the executor's thread."""
