"""Small builders for core objects, shared by the tests."""

from __future__ import annotations

import math

import numpy as np

from sidecar.core.admission import Admitted
from sidecar.core.request import Request, TensorData


def tensor(values, name: str = "input", dtype: str = "float32") -> TensorData:
    arr = np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return TensorData(name, dtype, tuple(arr.shape), arr.tobytes())


def request(request_id: int, *, stream: int = 1, at: float = 0.0, timeout: float | None = None) -> Request:
    deadline = math.inf if timeout is None else at + timeout
    return Request(stream, request_id, (tensor([float(request_id)]).data,), at, deadline)


def admitted(requests, at: float, max_wait: float = 10.0) -> Admitted:
    return Admitted(tuple(requests), at, at + max_wait)
