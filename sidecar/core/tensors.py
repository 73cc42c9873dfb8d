"""Tensor specs, request validation, and batching of per-item bytes.

Joining is one `bytes.join` plus one `np.frombuffer` per input: measured here, that
was 20x cheaper than `frombuffer` per request followed by `np.stack`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Names as numpy spells them; the wire format is little-endian whatever the host.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
}

# Guards the size arithmetic against absurd shapes before any allocation.
MAX_ELEMENTS = 1 << 31


class TensorLike(Protocol):
    """Anything with these four attributes: a wire Tensor, or a TensorData."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> Sequence[int]: ...
    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # per item, no batch dimension
    nbytes: int = field(init=False, compare=False, repr=False)  # of one item
    # The shape as a list: protobuf's repeated fields compare equal to lists, not tuples.
    shape_list: list[int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r}; supported: {sorted(DTYPES)}")
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "shape_list", list(self.shape))
        object.__setattr__(self, "nbytes", DTYPES[self.dtype].itemsize * math.prod(self.shape))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class InvalidTensors(ValueError):
    """A request's tensors do not fit the model; the message says how."""


class BadBackendOutput(RuntimeError):
    """The backend returned outputs that cannot be split back into the batch."""


def input_bytes(inputs: Sequence[TensorLike], specs: Sequence[TensorSpec]) -> tuple[bytes, ...]:
    """Checks one request's inputs against the model; returns their bytes in spec order.

    The common case (every input present, in order, matching) is checked in one
    cheap pass; anything else goes through `order_inputs`, which reorders or
    raises InvalidTensors naming the problem.
    """
    if len(inputs) == len(specs):
        for t, s in zip(inputs, specs):
            if not (
                t.name == s.name
                and t.dtype == s.dtype
                and len(t.data) == s.nbytes
                and (t.shape == s.shape_list or t.shape == s.shape)
            ):
                break
        else:
            return tuple([t.data for t in inputs])
    return tuple([t.data for t in order_inputs(inputs, specs)])


def order_inputs(inputs: Sequence[TensorLike], specs: Sequence[TensorSpec]) -> tuple[TensorLike, ...]:
    """Checks `inputs` against the model's input specs; returns them in spec order.

    Raises InvalidTensors naming the first problem found.
    """
    if not inputs:
        raise InvalidTensors(f"request has no inputs; the model expects {_names(specs)}")
    by_name: dict[str, TensorLike] = {}
    for t in inputs:
        if t.name in by_name:
            raise InvalidTensors(f"input {t.name!r} appears more than once")
        by_name[t.name] = t
    expected = {s.name for s in specs}
    unknown = sorted(by_name.keys() - expected)
    if unknown:
        raise InvalidTensors(f"unknown input name(s) {unknown}; the model expects {_names(specs)}")
    missing = [s.name for s in specs if s.name not in by_name]
    if missing:
        raise InvalidTensors(f"missing input(s) {missing}; the model expects {_names(specs)}")
    ordered = tuple(by_name[s.name] for s in specs)
    for t, spec in zip(ordered, specs):
        _check_tensor(t, spec)
    return ordered


def _check_tensor(t: TensorLike, spec: TensorSpec) -> None:
    dtype = DTYPES.get(t.dtype)
    if dtype is None:
        raise InvalidTensors(f"input {t.name!r}: unknown dtype {t.dtype!r}; supported: {sorted(DTYPES)}")
    if t.dtype != spec.dtype:
        raise InvalidTensors(f"input {t.name!r}: dtype {t.dtype} does not match the model's {spec.dtype}")
    shape = tuple(t.shape)
    if any(d < 0 for d in shape):
        raise InvalidTensors(f"input {t.name!r}: negative dimension in shape {list(t.shape)}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise InvalidTensors(f"input {t.name!r}: shape {list(shape)} has more than {MAX_ELEMENTS} elements")
    if shape != spec.shape:
        raise InvalidTensors(
            f"input {t.name!r}: shape {list(shape)} does not match the model's per-item shape {list(spec.shape)}"
        )
    expected = dtype.itemsize * math.prod(shape)
    if len(t.data) != expected:
        raise InvalidTensors(f"input {t.name!r}: {len(t.data)} bytes, but {t.dtype} x {list(shape)} needs {expected}")


def _names(specs: Sequence[TensorSpec]) -> list[str]:
    return [s.name for s in specs]


def join_inputs(items: Sequence[tuple[bytes, ...]], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Stacks validated per-item input bytes (spec order) into one [N, *shape] array per input."""
    n = len(items)
    batch: dict[str, np.ndarray] = {}
    for i, spec in enumerate(specs):
        joined = b"".join([item[i] for item in items])
        batch[spec.name] = np.frombuffer(joined, dtype=DTYPES[spec.dtype]).reshape((n, *spec.shape))
    return batch


def split_outputs(outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], n: int) -> list[tuple[bytes, ...]]:
    """Cuts [N, *shape] backend outputs into N per-item tuples of bytes, in spec order.

    Raises BadBackendOutput rather than guess when the backend's answer does not
    have exactly one row per request: a mis-assigned result is worse than an error.
    """
    names = {s.name for s in specs}
    if set(outputs) != names:
        raise BadBackendOutput(f"backend returned outputs {sorted(outputs)}, expected {sorted(names)}")
    columns: list[list[bytes]] = []
    for spec in specs:
        arr = np.asarray(outputs[spec.name])
        if arr.shape != (n, *spec.shape):
            raise BadBackendOutput(
                f"output {spec.name!r} has shape {list(arr.shape)}, expected {[n, *spec.shape]} for a batch of {n}"
            )
        raw = np.ascontiguousarray(arr, dtype=DTYPES[spec.dtype]).tobytes()
        size = spec.nbytes
        columns.append([raw[i * size : (i + 1) * size] for i in range(n)])
    return list(zip(*columns)) if columns else [() for _ in range(n)]
