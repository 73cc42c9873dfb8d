"""Tensor values as KServe carries them outside raw bytes: JSON `data` lists and
gRPC typed `contents`, to and from raw little-endian row-major bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sidecar.core.kserve_tensors import DATATYPES, check_datatype
from sidecar.core.quote import quote, quote_shape
from sidecar.core.tensors import DTYPES, MAX_DIMS, InvalidTensors, element_count

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


def element_total(name: str, shape: Sequence[int]) -> int:
    """prod(shape) for a tensor the protocol describes; InvalidTensors if absurd."""
    if len(shape) > MAX_DIMS + 1:
        raise InvalidTensors(f"input {quote(name)}: shape {quote_shape(shape)} has more than {MAX_DIMS + 1} dims")
    if any(d < 0 for d in shape):
        raise InvalidTensors(f"input {quote(name)}: negative dimension in shape {quote_shape(shape)}")
    n = element_count(shape)
    if n is None:
        raise InvalidTensors(f"input {quote(name)}: shape {quote_shape(shape)} is too large")
    return n


def raw_from_values(name: str, datatype: str, shape: Sequence[int], values: Any) -> bytes:
    """JSON `data` (flat or nested, row-major) or typed contents -> raw bytes.
    Raises InvalidTensors when they do not fit the datatype or the shape."""
    target = DTYPES[check_datatype(name, datatype)]
    expected = element_total(name, shape)
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise InvalidTensors(f"input {quote(name)}: data is not a regular array: {quote(str(e))}") from None
    if array.size != expected:
        raise InvalidTensors(f"input {quote(name)}: {array.size} value(s), but shape {quote_shape(shape)} holds {expected}")
    kind = array.dtype.kind if array.size else target.kind
    if target.kind == "b":
        if kind != "b":
            raise InvalidTensors(f"input {quote(name)}: BOOL data must be true or false")
    elif kind not in "iuf":
        raise InvalidTensors(f"input {quote(name)}: {datatype} data must be numbers (found {_found(array)})")
    elif target.kind in "iu":
        if kind == "f" and not np.all(np.mod(array, 1) == 0):
            raise InvalidTensors(f"input {quote(name)}: {datatype} data must be whole numbers")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidTensors(f"input {quote(name)}: {datatype} data must lie in [{info.min}, {info.max}]")
    return array.astype(target).tobytes()


def _found(array: np.ndarray) -> str:
    if array.dtype == object:
        kinds = sorted({type(v).__name__ for v in array.ravel()[:100].tolist()})
        return ", ".join("null" if k == "NoneType" else k for k in kinds)
    return {"U": "strings", "b": "booleans"}.get(array.dtype.kind, str(array.dtype))


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


def has_contents(contents: Any) -> bool:
    return any(len(getattr(contents, f)) for f in set(CONTENTS_FIELD.values()) | {"uint64_contents", "bytes_contents"})
