"""KServe v2 (Open Inference Protocol) tensors against the model.

Rules (everything that decides whether a KServe request fits the model lives here):
- Datatypes map one to one onto the model's dtypes (`DATATYPES`). A datatype the
  protocol names but no model here can take (BYTES, BF16, UINT16..UINT64) is
  refused saying so; an unknown name is refused listing the known ones.
- A request's first dimension is its batch: inputs of shape [N, *item shape] are
  N items. Every input must agree on N, 1 <= N <= the caller's limit. An input of
  exactly the model's item shape (one dimension fewer) is one item: clients that
  send a single record without a batch dimension (Flink's Triton provider sends
  [1, n] but others send [n]) are served rather than refused.
- Each input's raw bytes must be exactly N x the item's bytes.
- Requested outputs must name model outputs; none requested means all of them,
  in the model's order.
- Names match exactly, or else ignoring case where that names one model tensor:
  Flink's Triton provider sends its SQL column names upper-cased (INPUT for a
  model's `input`); answers carry the model's spelling.

The first problem found is raised as InvalidTensors, named in the protocol's
terms (FP32, not float32), with client text quoted short (sidecar/core/quote.py).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.core.quote import MAX_SHOWN_NAMES, quote, quote_names, quote_shape
from sidecar.core.tensors import MAX_DIMS, InvalidTensors, ModelSpec, TensorSpec, element_count

# KServe datatype name -> the model's dtype name (sidecar/core/tensors.py DTYPES).
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
DATATYPE_OF: dict[str, str] = {v: k for k, v in DATATYPES.items()}
# Named by the protocol, taken by no model this sidecar serves.
UNSERVED = ("BYTES", "BF16", "UINT16", "UINT32", "UINT64")
# Requested outputs may repeat a name; more than this many per model output is
# garbage, refused before it is walked.
MAX_REQUESTED_PER_OUTPUT = 4


@dataclass(frozen=True, slots=True)
class KTensor:
    """One tensor of a KServe request or response, whichever protocol carried it:
    raw little-endian row-major bytes (JSON and typed contents are converted first)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Items:
    """A request that fits: N items, each model input's bytes for all N (spec order),
    and the outputs to send back (spec order)."""

    n: int
    inputs: tuple[bytes, ...]
    outputs: tuple[TensorSpec, ...]


def datatype_of(spec: TensorSpec) -> str:
    return DATATYPE_OF[spec.dtype]


def check_datatype(name: str, datatype: str, spec: TensorSpec | None = None) -> str:
    """The model dtype for a KServe datatype; raises InvalidTensors naming the problem."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        if datatype in UNSERVED:
            wants = f"; it takes {datatype_of(spec)}" if spec is not None else ""
            raise InvalidTensors(f"input {quote(name)}: datatype {datatype} is not taken by this model{wants}")
        raise InvalidTensors(f"input {quote(name)}: unknown datatype {quote(datatype)}; known: {sorted(DATATYPES)}")
    if spec is not None and dtype != spec.dtype:
        raise InvalidTensors(f"input {quote(name)}: datatype {datatype} does not match the model's {datatype_of(spec)}")
    return dtype


def as_items(inputs: Sequence[KTensor], requested: Sequence[str], spec: ModelSpec, max_items: int) -> Items:
    """Checks a request against the model (the rules above); returns its items."""
    specs = spec.inputs
    if not inputs:
        raise InvalidTensors(f"request has no inputs; the model expects {_names(specs)}")
    by_name = _by_name(inputs, specs)
    n: int | None = None
    data: list[bytes] = []
    for s in specs:
        t = by_name[s.name]
        check_datatype(s.name, t.datatype, s)
        items = _item_count(t, s)
        if n is None:
            n = items
        elif items != n:
            raise InvalidTensors(
                f"input {quote(s.name)}: shape {quote_shape(t.shape)} has {items} item(s), but "
                f"input {quote(specs[0].name)} has {n}; every input's first dimension is the batch"
            )
        if len(t.data) != items * s.nbytes:
            raise InvalidTensors(
                f"input {quote(s.name)}: {len(t.data)} bytes, but {items} x {datatype_of(s)} x "
                f"{quote_shape(s.shape)} needs {items * s.nbytes}"
            )
        data.append(t.data)
    assert n is not None
    if n > max_items:
        raise InvalidTensors(
            f"request carries {n} items, more than the {max_items} one request may carry "
            "(sidecar.stream.max-outstanding); send them as several requests"
        )
    return Items(n, tuple(data), _outputs(requested, spec.outputs))


def _by_name(inputs: Sequence[KTensor], specs: Sequence[TensorSpec]) -> dict[str, KTensor]:
    """The inputs by name, reading no more of them than it takes to find a problem."""
    spelled = _spellings(tuple(specs))
    scan = len(specs) + MAX_SHOWN_NAMES + 1
    by_name: dict[str, KTensor] = {}
    unknown: list[str] = []
    for t in itertools.islice(inputs, scan):
        name = spelled(t.name)
        if not name:
            unknown.append(t.name)
            continue
        if name in by_name:
            raise InvalidTensors(f"input {quote(t.name)} appears more than once")
        by_name[name] = t
    if unknown:
        raise InvalidTensors(f"unknown input name(s) {quote_names(unknown)}; the model expects {_names(specs)}")
    missing = [s.name for s in specs if s.name not in by_name]
    if missing:
        raise InvalidTensors(f"missing input(s) {missing}; the model expects {_names(specs)}")
    return by_name


def element_total(name: str, shape: Sequence[int]) -> int:
    """prod(shape) of a request's tensor (a batch dimension and at most MAX_DIMS
    more); InvalidTensors if the shape is absurd. Checks dims before walking them."""
    if len(shape) > MAX_DIMS + 1:
        raise InvalidTensors(f"input {quote(name)}: shape {quote_shape(shape)} has more than {MAX_DIMS + 1} dims")
    if any(d < 0 for d in shape):
        raise InvalidTensors(f"input {quote(name)}: negative dimension in shape {quote_shape(shape)}")
    n = element_count(shape)
    if n is None:
        raise InvalidTensors(f"input {quote(name)}: shape {quote_shape(shape)} is too large")
    return n


def _item_count(t: KTensor, s: TensorSpec) -> int:
    shape, name = t.shape, quote(s.name)
    element_total(s.name, shape)
    item = list(s.shape)
    if list(shape) == item:
        return 1
    if len(shape) == len(item) + 1 and list(shape[1:]) == item:
        if shape[0] == 0:
            raise InvalidTensors(f"input {name}: shape {quote_shape(shape)} holds no items")
        return shape[0]
    raise InvalidTensors(
        f"input {name}: shape {quote_shape(shape)} is not [N, {', '.join(map(str, item))}] "
        f"(N items of the model's shape {quote_shape(s.shape)})"
    )


def _outputs(requested: Sequence[str], specs: Sequence[TensorSpec]) -> tuple[TensorSpec, ...]:
    if not requested:
        return tuple(specs)
    if len(requested) > MAX_REQUESTED_PER_OUTPUT * len(specs):
        raise InvalidTensors(f"request names {len(requested):,} outputs; the model has {len(specs)}: {_names(specs)}")
    spelled = _spellings(tuple(specs))
    wanted = {spelled(r) for r in requested}
    if "" in wanted:
        unknown = [r for r in requested if not spelled(r)]
        raise InvalidTensors(f"unknown output name(s) {quote_names(unknown)}; the model has {_names(specs)}")
    return tuple(s for s in specs if s.name in wanted)


@functools.lru_cache(maxsize=16)
def _spellings(specs: tuple[TensorSpec, ...]) -> _Spellings:
    """Made once per model, not per request (a model's specs are hashable and few)."""
    return _Spellings(specs)


class _Spellings:
    """A name as a client may write it -> the model's name ("" if none): exact, or
    else ignoring case where just one model name has that lower-case form."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self._exact = {s.name for s in specs}
        lowered: dict[str, list[str]] = {}
        for s in specs:
            lowered.setdefault(s.name.lower(), []).append(s.name)
        self._lowered = {low: names[0] for low, names in lowered.items() if len(names) == 1}

    def __call__(self, name: str) -> str:
        if name in self._exact:
            return name
        return self._lowered.get(name.lower(), "")


def _names(specs: Sequence[TensorSpec]) -> list[str]:
    return [s.name for s in specs]
