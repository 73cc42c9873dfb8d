"""batch_input_bytes: batch-major inputs checked against the model once per batch."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.core.request import TensorData
from sidecar.core.tensors import InvalidTensors, TensorSpec, batch_input_bytes

SPECS = (TensorSpec("a", "float32", (4,)), TensorSpec("b", "int64", (2, 2)))


def tensors(n: int) -> list[TensorData]:
    return [
        TensorData("a", "float32", (n, 4), np.ones((n, 4), np.float32).tobytes()),
        TensorData("b", "int64", (n, 2, 2), np.ones((n, 2, 2), np.int64).tobytes()),
    ]


def test_inputs_in_order_come_back_whole_in_spec_order():
    a, b = tensors(3)
    assert batch_input_bytes([a, b], SPECS, 3) == (a.data, b.data)
    assert batch_input_bytes([b, a], SPECS, 3) == (a.data, b.data)  # reordered by name


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: TensorData(t.name, t.dtype, (2, 4), t.data), "must lead with the batch's 3 item(s)"),
        (lambda t: TensorData(t.name, t.dtype, (), t.data), "must lead with the batch's 3 item(s)"),
        (lambda t: TensorData(t.name, t.dtype, (3, 5), t.data), "per-item shape"),
        (lambda t: TensorData(t.name, "float64", t.shape, t.data), "does not match the model's float32"),
        (lambda t: TensorData(t.name, t.dtype, t.shape, t.data + b"\0" * 3), "17 bytes, but float32 x [4] needs 16"),
        (lambda t: TensorData("c", t.dtype, t.shape, t.data), "unknown input name"),
        (lambda t: TensorData(t.name, t.dtype, (3, *[1] * 40), t.data), "has more than 33 dims"),
    ],
)
def test_a_batch_that_does_not_fit_is_refused_saying_why(change, message):
    a, b = tensors(3)
    with pytest.raises(InvalidTensors) as e:
        batch_input_bytes([change(a), b], SPECS, 3)
    assert message in str(e.value)


def test_a_missing_input_is_named():
    a, _ = tensors(2)
    with pytest.raises(InvalidTensors, match="missing input"):
        batch_input_bytes([a], SPECS, 2)
