"""Client side of the batch-major form: requests waiting to be sent that share
their inputs' names, dtypes and shapes and their settings go out as one
InferBatch (one tensor per input, a leading batch dimension, their ids), the
form the server takes in for a fraction of the per-item cost (docs/protocol.md).

A row is what `row_of` remembers of a request when it is submitted: its
signature and its inputs' bytes, so that packing need not read them back out of
the wire message (each read of a bytes field copies it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.core.tensors import DTYPES

# (per input: name, dtype, shape), timeout in seconds or None, return_timing
Signature = tuple[tuple[tuple[str, str, tuple[int, ...]], ...], float | None, bool]
Row = tuple[Signature, tuple[bytes, ...]]

# Fewer than this many alike go as plain requests: a batch of one saves nothing.
MIN_BATCH = 2


def encode(name: str, value: Any) -> tuple[str, tuple[int, ...], bytes]:
    """An input's dtype name, shape and little-endian C-order bytes, as the wire wants them."""
    arr = np.asarray(value)
    if arr.dtype.name not in DTYPES:
        raise TypeError(f"input {name!r}: dtype {arr.dtype} is not supported; use one of {sorted(DTYPES)}")
    return arr.dtype.name, arr.shape, np.ascontiguousarray(arr, dtype=DTYPES[arr.dtype.name]).tobytes()


def row_of(inputs: Mapping[str, Any], timeout_s: float | None, return_timing: bool) -> tuple[Row, list[pb.Tensor]]:
    """The request's row, and its wire tensors (built from the same bytes)."""
    spec, datas, tensors = [], [], []
    for name, value in inputs.items():
        dtype, shape, data = encode(name, value)
        spec.append((name, dtype, shape))
        datas.append(data)
        tensors.append(pb.Tensor(name=name, dtype=dtype, shape=shape, data=data))
    return ((tuple(spec), timeout_s, return_timing), tuple(datas)), tensors


def pack(
    ids: Sequence[int], requests: Sequence[pb.InferRequest], rows: Mapping[int, Row], duration: Any
) -> tuple[list[pb.InferRequest], list[pb.InferBatch]]:
    """Splits what goes out in one message into plain requests and batches of alike
    ones (each group keeps its submission order). `duration` makes a Duration."""
    groups: dict[Signature, list[int]] = {}
    plain: list[pb.InferRequest] = []
    for i, request_id in enumerate(ids):
        row = rows.get(request_id)
        if row is None:
            plain.append(requests[i])
        else:
            groups.setdefault(row[0], []).append(i)
    batches = []
    for signature, members in groups.items():
        if len(members) < MIN_BATCH:
            plain.extend(requests[i] for i in members)
            continue
        batches.append(_batch(signature, [ids[i] for i in members], [rows[ids[i]][1] for i in members], duration))
    return plain, batches


def _batch(signature: Signature, ids: list[int], datas: Iterable[tuple[bytes, ...]], duration: Any) -> pb.InferBatch:
    spec, timeout_s, return_timing = signature
    columns = list(zip(*datas))
    n = len(ids)
    batch = pb.InferBatch(
        request_ids=ids,
        inputs=[
            pb.Tensor(name=name, dtype=dtype, shape=(n, *shape), data=b"".join(column))
            for (name, dtype, shape), column in zip(spec, columns)
        ],
        return_timing=return_timing,
    )
    if timeout_s is not None:
        batch.timeout.CopyFrom(duration(timeout_s))
    return batch
