"""A backend with a chosen latency and chosen faults, for tests and load experiments.

Everything is set in the model URI's query string, e.g.
`mock:?base_ms=2&per_item_ms=0.02&dim=16&fail_on_batch=3`:

    dim                   input/output width (float32, shape (dim,)); default 16
    base_ms, per_item_ms  a batch of N takes base_ms + per_item_ms * N; default 2 and 0.02
    max_batch             reported as BackendInfo.max_batch_size; default none
    load_ms               how long load() takes; default 0
    fail_on_batch=N       the N-th infer call (1-based) raises BackendError
    hang_on_batch=N       the N-th infer call blocks until close()
    wrong_count_on_batch=N  the N-th infer call returns one row too few
    fail_every=N          every N-th infer call raises BackendError (for soaks)
    stall_every=N, stall_ms=M  every N-th call takes M ms more: past the backend
                          timeout it is given up on as hung, and returns later
    hang_every=N          every N-th call blocks until close(): a hung call that
                          never returns, in every instance made with this URI
    leak_bytes=K          TEST ONLY: keeps K bytes per batch for the backend's
                          life, a planted leak that proves the soak's detector

The output is the input times 2, so a test can tell whose result it got.
Time passes through the injected `sleep`, so tests need not wait for it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from sidecar.backends.base import Backend, BackendError, BackendInfo
from sidecar.core.tensors import ModelSpec, TensorSpec


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _millis(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(text)
    return value


# option -> (parser, what a good value looks like)
_OPTIONS: dict[str, tuple[Callable[[str], int | float], str]] = {
    "dim": (_count, "an integer >= 1"),
    "base_ms": (_millis, "a finite number >= 0"),
    "per_item_ms": (_millis, "a finite number >= 0"),
    "max_batch": (_count, "an integer >= 1"),
    "load_ms": (_millis, "a finite number >= 0"),
    "fail_on_batch": (_count, "an integer >= 1"),
    "hang_on_batch": (_count, "an integer >= 1"),
    "wrong_count_on_batch": (_count, "an integer >= 1"),
    "fail_every": (_count, "an integer >= 1"),
    "stall_every": (_count, "an integer >= 1"),
    "stall_ms": (_millis, "a finite number >= 0"),
    "hang_every": (_count, "an integer >= 1"),
    "leak_bytes": (_count, "an integer >= 1"),
}


@dataclass(frozen=True, slots=True)
class MockOptions:
    dim: int = 16
    base_ms: float = 2.0
    per_item_ms: float = 0.02
    max_batch: int | None = None
    load_ms: float = 0.0
    fail_on_batch: int | None = None
    hang_on_batch: int | None = None
    wrong_count_on_batch: int | None = None
    fail_every: int | None = None
    stall_every: int | None = None
    stall_ms: float = 0.0
    hang_every: int | None = None
    leak_bytes: int | None = None


def parse_options(model_uri: str) -> MockOptions:
    """Reads MockOptions from a `mock:?...` URI; raises BackendError naming any bad option."""
    parts = urlsplit(model_uri)
    if parts.scheme not in ("", "mock"):
        raise BackendError(f"mock backend: model URI {model_uri!r} should look like 'mock:?dim=16&base_ms=2'")
    values: dict[str, int | float] = {}
    for key, text in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise BackendError(
                f"mock backend: unknown option {key!r} (value {text!r}); allowed: {', '.join(sorted(_OPTIONS))}"
            )
        parse, allowed = _OPTIONS[key]
        try:
            values[key] = parse(text)
        except ValueError:
            raise BackendError(f"mock backend: option {key}={text!r} is invalid; expected {allowed}") from None
    return MockOptions(**values)  # type: ignore[arg-type]


class MockBackend(Backend):
    name = "mock"

    def __init__(self, model_uri: str, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(model_uri)
        # Parsed here rather than in load(), so a typo fails at start-up, not at first use.
        self.options = parse_options(model_uri)
        self.batches = 0
        self._sleep = sleep
        self._closed = threading.Event()
        self._kept: list[bytes] = []  # leak_bytes: never released, on purpose

    def load(self) -> BackendInfo:
        if self.options.load_ms:
            self._sleep(self.options.load_ms / 1000)
        dim = (self.options.dim,)
        spec = ModelSpec(inputs=(TensorSpec("input", "float32", dim),), outputs=(TensorSpec("output", "float32", dim),))
        return BackendInfo(spec, max_batch_size=self.options.max_batch)

    def warm_up(self, spec: ModelSpec, sizes: Sequence[int]) -> None:
        """Nothing to warm; and its faults count the batches clients send (batch N
        of `fail_on_batch=N` is the N-th a test sends, not N minus the warm-up's)."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        self.batches += 1
        n, opts = self.batches, self.options
        if opts.leak_bytes:
            self._kept.append(bytes(opts.leak_bytes))  # the planted leak: one allocation per batch, kept
        if n == opts.fail_on_batch or (opts.fail_every and n % opts.fail_every == 0):
            raise BackendError(f"mock fault injected on batch {n}")
        if n == opts.hang_on_batch or (opts.hang_every and n % opts.hang_every == 0):
            self._closed.wait()
            raise BackendError(f"mock batch {n} hung until the backend was closed")
        if opts.stall_every and n % opts.stall_every == 0:
            self._sleep(opts.stall_ms / 1000)
        x = np.asarray(inputs["input"], dtype=np.float32)
        delay_ms = opts.base_ms + opts.per_item_ms * len(x)
        if delay_ms > 0:
            self._sleep(delay_ms / 1000)
        if n == opts.wrong_count_on_batch:
            x = x[:-1]
        return {"output": x * np.float32(2)}

    def close(self) -> None:
        self._closed.set()
