"""Validation, joining and splitting of tensors."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.core.request import TensorData
from sidecar.core.tensors import (
    BadBackendOutput,
    InvalidTensors,
    TensorSpec,
    input_bytes,
    join_inputs,
    order_inputs,
    split_outputs,
)
from tests.factories import tensor

SPECS = (TensorSpec("a", "float32", (2,)), TensorSpec("b", "int64", (1,)))


def good():
    return [tensor([1.0, 2.0], "a"), tensor([7], "b", "int64")]


def test_orders_inputs_by_spec():
    ordered = order_inputs(list(reversed(good())), SPECS)
    assert [t.name for t in ordered] == ["a", "b"]


def test_input_bytes_takes_fast_path_and_reorders_when_needed():
    a, b = good()
    assert input_bytes([a, b], SPECS) == (a.data, b.data)
    assert input_bytes([b, a], SPECS) == (a.data, b.data)
    with pytest.raises(InvalidTensors):
        input_bytes([a], SPECS)


def test_spec_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="unsupported dtype"):
        TensorSpec("x", "complex64", (2,))


@pytest.mark.parametrize(
    "inputs, words",
    [
        ([], "no inputs"),
        ([tensor([1.0, 2.0], "a")], "missing input(s) ['b']"),
        ([*good(), tensor([1.0], "c")], "unknown input name(s) ['c']"),
        ([*good(), tensor([1.0, 2.0], "a")], "'a' appears more than once"),
        ([TensorData("a", "complex64", (2,), b"\0" * 16), tensor([7], "b", "int64")], "unknown dtype 'complex64'"),
        ([tensor([1, 2], "a", "int32"), tensor([7], "b", "int64")], "does not match the model's float32"),
        ([tensor([1.0, 2.0, 3.0], "a"), tensor([7], "b", "int64")], "per-item shape [2]"),
        ([TensorData("a", "float32", (2,), b"\0" * 7), tensor([7], "b", "int64")], "7 bytes, but float32 x [2] needs 8"),
        ([TensorData("a", "float32", (-2,), b""), tensor([7], "b", "int64")], "negative dimension"),
        ([TensorData("a", "float32", (1 << 20, 1 << 20), b""), tensor([7], "b", "int64")], "more than"),
    ],
)
def test_invalid_inputs_are_named(inputs, words):
    with pytest.raises(InvalidTensors) as err:
        order_inputs(inputs, SPECS)
    assert words in str(err.value)


def test_join_then_split_round_trips_bytes():
    items = [input_bytes([tensor([i, -i], "a"), tensor([i], "b", "int64")], SPECS) for i in range(5)]
    batch = join_inputs(items, SPECS)
    assert batch["a"].shape == (5, 2) and batch["b"].shape == (5, 1)
    np.testing.assert_array_equal(batch["a"][3], [3.0, -3.0])
    back = split_outputs({"a": batch["a"] * 2, "b": batch["b"]}, SPECS, 5)
    assert len(back) == 5
    assert np.frombuffer(back[3][0], "<f4").tolist() == [6.0, -6.0]
    assert back[4][1] == tensor([4], "b", "int64").data


def test_split_writes_little_endian_whatever_backend_returns():
    big = np.array([[1.0, 2.0]], dtype=">f4")
    (item,) = split_outputs({"a": big, "b": np.zeros((1, 1), np.int64)}, SPECS, 1)
    assert item[0] == np.array([1.0, 2.0], "<f4").tobytes()


@pytest.mark.parametrize(
    "outputs, words",
    [
        ({"a": np.zeros((3, 2), np.float32)}, "expected ['a', 'b']"),
        ({"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 1))}, "expected [3, 2] for a batch of 3"),
        ({"a": np.zeros((3, 5), np.float32), "b": np.zeros((3, 1))}, "expected [3, 2]"),
    ],
)
def test_split_refuses_outputs_that_do_not_fit_the_batch(outputs, words):
    with pytest.raises(BadBackendOutput) as err:
        split_outputs(outputs, SPECS, 3)
    assert words in str(err.value)
