"""Tensor values as KServe carries them outside raw bytes: JSON `data` lists and
gRPC typed `contents`, to and from raw little-endian row-major bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sidecar.core.kserve_tensors import DATATYPES, check_datatype, element_total
from sidecar.core.quote import quote, quote_shape
from sidecar.core.tensors import DTYPES, InvalidTensors

# gRPC InferTensorContents field per datatype (the protocol's table).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def raw_from_values(name: str, datatype: str, shape: Sequence[int], values: Any) -> bytes:
    """JSON `data` (flat or nested, row-major) or typed contents -> raw bytes.
    Raises InvalidTensors when they do not fit the datatype or the shape.

    JSON lists are checked value by value, not through numpy's guess at their
    type: that guess takes `true` among numbers for 1, and holds ints beside
    floats as float64 (2**63 then passes a range check, 2**53 + 1 loses a digit).
    """
    target = DTYPES[check_datatype(name, datatype)]
    expected = element_total(name, shape)
    try:
        leaves = list(_leaves(values)) if isinstance(values, list) else list(values)
    except _Ragged:
        raise InvalidTensors(
            f"input {quote(name)}: data is not a regular array (nested lists differ in length or depth)"
        ) from None
    if len(leaves) != expected:
        raise InvalidTensors(f"input {quote(name)}: {len(leaves)} value(s), but shape {quote_shape(shape)} holds {expected}")
    kinds = {type(v) for v in leaves}
    if target.kind == "b":
        if not kinds <= {bool}:
            raise InvalidTensors(f"input {quote(name)}: BOOL data must be true or false (found {_names(kinds)})")
        return np.array(leaves, dtype=target).tobytes()
    if not kinds <= {int, float}:
        raise InvalidTensors(f"input {quote(name)}: {datatype} data must be numbers (found {_names(kinds - {int, float})})")
    if target.kind in "iu":
        if float in kinds:
            if not all(v.is_integer() for v in leaves if type(v) is float):
                raise InvalidTensors(f"input {quote(name)}: {datatype} data must be whole numbers")
            leaves = [int(v) for v in leaves]
        info = np.iinfo(target)
        if leaves and (min(leaves) < info.min or max(leaves) > info.max):
            raise InvalidTensors(f"input {quote(name)}: {datatype} data must lie in [{info.min}, {info.max}]")
        return np.array(leaves, dtype=target).tobytes()
    wide = np.array(leaves, dtype=np.float64)
    with np.errstate(over="ignore"):
        narrow = wide.astype(target)
    if np.any(np.isinf(narrow) & np.isfinite(wide)):
        raise InvalidTensors(f"input {quote(name)}: {datatype} data must lie within {datatype}'s range")
    return narrow.tobytes()


def _leaves(values: list[Any]) -> Any:
    """The scalars of nested lists, row-major (without recursion: JSON nests deep).
    Raises InvalidTensors for ragged nesting: lists of one depth of unequal length,
    or scalars at more than one depth."""
    lengths: dict[int, int] = {}
    leaf_depth: int | None = None
    stack = [iter(values)]
    lengths[0] = len(values)
    while stack:
        depth = len(stack)
        for v in stack[-1]:
            if isinstance(v, list):
                if lengths.setdefault(depth, len(v)) != len(v):
                    raise _Ragged()
                stack.append(iter(v))
                break
            if leaf_depth is None:
                leaf_depth = depth
            elif leaf_depth != depth:
                raise _Ragged()
            yield v
        else:
            stack.pop()


class _Ragged(ValueError):
    pass


_KIND_NAMES = {type(None): "null", bool: "booleans", str: "strings", dict: "objects", int: "numbers", float: "numbers"}


def _names(kinds: set[type]) -> str:
    return ", ".join(sorted({_KIND_NAMES.get(k, k.__name__) for k in kinds}))


def values_from_raw(datatype: str, data: bytes) -> list[Any]:
    """Raw bytes -> a flat JSON-ready list."""
    return np.frombuffer(data, dtype=DTYPES[DATATYPES[datatype]]).tolist()


def typed_contents(contents: Any, datatype: str) -> Any | None:
    """The typed-contents list that carries `datatype`, or None if that field is empty."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        return None
    values = getattr(contents, field)
    return values if len(values) else None


# Every typed-contents field, those no datatype here uses included.
_ALL_CONTENTS = tuple(sorted(set(CONTENTS_FIELD.values()) | {"uint64_contents", "bytes_contents"}))


def has_contents(contents: Any) -> bool:
    return any(len(getattr(contents, f)) for f in _ALL_CONTENTS)
