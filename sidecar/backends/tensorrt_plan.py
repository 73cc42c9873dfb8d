"""The TensorRT backend's arithmetic and checks, apart from TensorRT and CUDA.

Everything here is plain Python on plain values (names, shapes, DataType names),
so it is tested on any machine; sidecar/backends/tensorrt.py feeds it what the
engine reports and does only the device calls. Decided here:

- options: `sidecar.backend.tensorrt.*` parsed and checked before anything loads;
- which I/O an engine may have: a dynamic first (batch) dim, static per-item
  dims, a dtype the wire format has;
- the optimization profile an ONNX model is built with (batch 1 .. max_batch);
- buffer sizes for the max batch, allocated once;
- padding a batch of n up to a preferred size, and cutting outputs back to n;
- which of the two buffer sets a batch uses, so that the next batch is joined
  into host memory while the device still works on this one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from sidecar.backends.base_errors import BackendError
from sidecar.backends.options import BackendOptions
from sidecar.backends.uri import file_path
from sidecar.core.tensors import DTYPES, ModelSpec, TensorSpec

PREFIX = "sidecar.backend.tensorrt"

# TensorRT DataType names -> the wire's dtype names (sidecar/core/tensors.py).
# The rest (BF16, FP8, INT4, FP4, E8M0) have no numpy dtype and no wire name: an
# engine with such I/O is refused at load, with the fix, rather than fed bytes it
# would misread.
TRT_DTYPES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
}

ENGINE_SUFFIXES = (".engine", ".plan")
ONNX_SUFFIXES = (".onnx",)

# The batches a caller may have in flight: the executor joins and submits batch
# N+1 before it collects batch N (sidecar/backends/base.py), so two sets suffice.
BUFFER_SETS = 2

DEFAULT_MAX_BATCH = 32  # only for building from ONNX: a serialized engine has its own
DEFAULT_WORKSPACE_MB = 1024


# --- options ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorRTOptions:
    device: int = 0
    # None: a serialized engine's profile max; DEFAULT_MAX_BATCH when building.
    max_batch: int | None = None
    # The batch size the ONNX build tunes for; None: max_batch.
    opt_batch: int | None = None
    fp16: bool = False
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    preferred_batch_sizes: tuple[int, ...] = ()


KNOWN_OPTIONS = frozenset(f.name for f in fields(TensorRTOptions))


def parse_options(options: BackendOptions) -> TensorRTOptions:
    """Reads and checks every option at once, so a typo fails at start-up."""
    unknown = options.unknown(set(KNOWN_OPTIONS))
    if unknown:
        names = ", ".join(f"{PREFIX}.{k}" for k in unknown)
        raise BackendError(f"tensorrt backend: unknown option(s) {names}; known: {', '.join(sorted(KNOWN_OPTIONS))}")
    max_batch = _optional_int(options, "max_batch")
    opt_batch = _optional_int(options, "opt_batch")
    if max_batch is not None and opt_batch is not None and opt_batch > max_batch:
        raise BackendError(f"{PREFIX}.opt_batch: {opt_batch} is above {PREFIX}.max_batch, {max_batch}")
    return TensorRTOptions(
        device=options.integer("device", 0, minimum=0),
        max_batch=max_batch,
        opt_batch=opt_batch,
        fp16=options.flag("fp16", False),
        workspace_mb=options.integer("workspace_mb", DEFAULT_WORKSPACE_MB, minimum=1),
        preferred_batch_sizes=_sizes(options.items_list("preferred_batch_sizes")),
    )


def _optional_int(options: BackendOptions, option: str) -> int | None:
    if options.text(option) is None:
        return None
    return options.integer(option, 0, minimum=1)


def _sizes(texts: tuple[str, ...]) -> tuple[int, ...]:
    sizes = set()
    for text in texts:
        try:
            size = int(text)
        except ValueError:
            size = 0
        if size < 1:
            raise BackendError(
                f"{PREFIX}.preferred_batch_sizes: {text!r} is not a batch size; expected integers >= 1, e.g. 8,16,32"
            )
        sizes.add(size)
    return tuple(sorted(sizes))


# --- the model URI ----------------------------------------------------------------


def model_path(model_uri: str) -> tuple[Path, str]:
    """The file a model URI names, and what it is: "engine" (deserialized as it
    is) or "onnx" (built into an engine at load). Accepts `/m.plan`, `m.onnx`,
    `tensorrt:/m.engine?...` and `file:///m.plan`."""
    path = file_path(model_uri, "tensorrt")
    if path is None:
        raise BackendError(
            f"tensorrt backend: model URI {model_uri!r} should be a path to a .engine, .plan or .onnx file"
            " (optionally 'tensorrt:' or 'file://' before it)"
        )
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return Path(path), "engine"
    if suffix in ONNX_SUFFIXES:
        return Path(path), "onnx"
    raise BackendError(
        f"tensorrt backend: model URI {model_uri!r} names neither a serialized engine"
        f" ({', '.join(ENGINE_SUFFIXES)}) nor an ONNX model (.onnx)"
    )


# --- engine I/O ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineTensor:
    """One I/O tensor as TensorRT reports it: shape with -1 for a dynamic dim."""

    name: str
    is_input: bool
    trt_dtype: str  # a DataType's name, "FLOAT"; "DataType.FLOAT" is accepted too
    shape: tuple[int, ...]


def wire_dtype(tensor: str, trt_dtype: str) -> str:
    """The wire's dtype name for a TensorRT DataType name, or a refusal naming it."""
    name = trt_dtype.rsplit(".", 1)[-1].upper()
    if name not in TRT_DTYPES:
        supported = ", ".join(f"{k} ({v})" for k, v in TRT_DTYPES.items())
        raise BackendError(
            f"tensorrt backend: tensor {tensor!r} is {name}, which the sidecar cannot carry; supported: {supported}."
            " Convert it in the model (a Cast to float32/float16 at the graph's edge) and rebuild the engine"
        )
    return TRT_DTYPES[name]


def per_item_shape(tensor: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The dims after the batch dim; the batch dim must be dynamic (-1) and the
    rest static, since the batcher stacks items along the first dim only."""
    shape = tuple(int(d) for d in shape)
    if not shape:
        raise BackendError(f"tensorrt backend: tensor {tensor!r} is a scalar; it needs a leading batch dim")
    if shape[0] != -1:
        raise BackendError(
            f"tensorrt backend: tensor {tensor!r} has shape {list(shape)}: its first (batch) dim must be dynamic (-1)."
            f" Export the model with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={{{tensor!r}: {{0: 'batch'}}}}))"
        )
    rest = shape[1:]
    if any(d < 1 for d in rest):
        raise BackendError(
            f"tensorrt backend: tensor {tensor!r} has shape {list(shape)}: every dim after the batch dim must be"
            " static (>= 1); only the batch dim may vary"
        )
    return rest


def model_spec(tensors: Iterable[EngineTensor]) -> ModelSpec:
    """The ModelSpec of an engine's I/O, in the engine's order; refuses I/O that
    the sidecar cannot batch or carry."""
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for t in tensors:
        spec = TensorSpec(t.name, wire_dtype(t.name, t.trt_dtype), per_item_shape(t.name, t.shape))
        (inputs if t.is_input else outputs).append(spec)
    if not inputs or not outputs:
        raise BackendError(
            f"tensorrt backend: the engine has {len(inputs)} input(s) and {len(outputs)} output(s); it needs one of each"
        )
    return ModelSpec(inputs=tuple(inputs), outputs=tuple(outputs))


# --- optimization profiles ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileShapes:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def build_max_batch(options: TensorRTOptions) -> int:
    return options.max_batch if options.max_batch is not None else DEFAULT_MAX_BATCH


def profile_shapes(per_item: Sequence[int], max_batch: int, opt_batch: int | None = None) -> ProfileShapes:
    """The profile an input is built with: any batch from 1 to max_batch, tuned
    for opt_batch (default max_batch: a busy sidecar sends full batches)."""
    opt = max_batch if opt_batch is None else opt_batch
    if not 1 <= opt <= max_batch:
        raise BackendError(f"{PREFIX}.opt_batch: {opt} is outside 1..{max_batch} (max_batch)")
    item = tuple(per_item)
    return ProfileShapes(min=(1, *item), opt=(opt, *item), max=(max_batch, *item))


def profile_batch_range(
    tensor: str, per_item: Sequence[int], min_shape: Sequence[int], max_shape: Sequence[int]
) -> tuple[int, int]:
    """The batch sizes a serialized engine's profile allows for one input."""
    item = tuple(per_item)
    for label, shape in (("min", tuple(min_shape)), ("max", tuple(max_shape))):
        if len(shape) != len(item) + 1 or shape[1:] != item:
            raise BackendError(
                f"tensorrt backend: input {tensor!r}: profile {label} shape {list(shape)} does not match its"
                f" per-item shape {list(item)}"
            )
    lo, hi = int(min_shape[0]), int(max_shape[0])
    if not 1 <= lo <= hi:
        raise BackendError(f"tensorrt backend: input {tensor!r}: profile batch range {lo}..{hi} is empty")
    return lo, hi


def batch_limits(ranges: Mapping[str, tuple[int, int]], max_batch: int | None) -> tuple[int, int]:
    """The batch sizes every input accepts (the tightest profile), capped by the
    max_batch option; an option above what the engine was built for is refused."""
    lo = max(r[0] for r in ranges.values())
    hi = min(r[1] for r in ranges.values())
    if lo > hi:
        raise BackendError(f"tensorrt backend: the inputs' profiles share no batch size ({dict(ranges)})")
    if max_batch is not None:
        if max_batch > hi:
            raise BackendError(
                f"{PREFIX}.max_batch: {max_batch} is above the engine's profile max, {hi}; rebuild the engine"
                f" or lower the option"
            )
        if max_batch < lo:
            raise BackendError(f"{PREFIX}.max_batch: {max_batch} is below the engine's profile min, {lo}")
        hi = max_batch
    return lo, hi


# --- buffers and padding -------------------------------------------------------------


def buffer_nbytes(spec: TensorSpec, rows: int) -> int:
    """Bytes for `rows` items: itemsize x rows x prod(per-item shape)."""
    return DTYPES[spec.dtype].itemsize * rows * math.prod(spec.shape)


def buffer_sizes(spec: ModelSpec, max_batch: int) -> dict[str, int]:
    """Bytes per I/O tensor for the max batch: what each buffer set allocates once."""
    return {s.name: buffer_nbytes(s, max_batch) for s in (*spec.inputs, *spec.outputs)}


def check_preferred(preferred: Sequence[int], min_batch: int, max_batch: int) -> tuple[int, ...]:
    """Preferred sizes must be sizes the engine runs."""
    outside = [p for p in preferred if not min_batch <= p <= max_batch]
    if outside:
        raise BackendError(
            f"{PREFIX}.preferred_batch_sizes: {outside} outside the engine's batch range {min_batch}..{max_batch}"
        )
    return tuple(sorted(set(preferred)))


def padded_batch(n: int, preferred: Sequence[int], min_batch: int, max_batch: int) -> int:
    """The batch size to run n items as: the smallest preferred size >= n (the
    sizes an engine was tuned for, or whose kernels are known to be fast), n
    itself when it exceeds them all or none is set, and never below the
    profile's min."""
    if not 1 <= n <= max_batch:
        raise BackendError(f"tensorrt backend: a batch of {n} is outside 1..{max_batch} (the engine's max batch)")
    n = max(n, min_batch)
    return min((p for p in preferred if p >= n), default=n)


def unpad(outputs: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first n rows of each output: the padding rows answer nobody."""
    return {name: arr[:n] for name, arr in outputs.items()}


# --- buffer sets ---------------------------------------------------------------------


class BufferRotation:
    """Which buffer set each batch uses: batch k uses set k mod `sets`.

    A set is busy from `claim` (its batch is submitted) to `release` (collected).
    `current` is the set the next batch will use, where the executor joins it;
    joining into a busy set would overwrite a batch whose copy to the device may
    not have run yet, so it is refused, as is a claim of a busy set.
    """

    def __init__(self, sets: int = BUFFER_SETS) -> None:
        self.sets = sets
        self._next = 0
        self._busy = [False] * sets

    def current(self) -> int:
        index = self._next % self.sets
        if self._busy[index]:
            raise BackendError(
                f"tensorrt backend: all {self.sets} buffer sets hold batches not yet collected; collect one"
                f" before joining or submitting another"
            )
        return index

    def claim(self) -> int:
        index = self.current()
        self._busy[index] = True
        self._next += 1
        return index

    def release(self, index: int) -> None:
        if not self._busy[index]:
            raise BackendError(f"tensorrt backend: buffer set {index} was collected twice")
        self._busy[index] = False

    def in_flight(self) -> int:
        return sum(self._busy)
