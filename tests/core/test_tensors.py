"""Validation, joining and splitting of tensors."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest

from sidecar.core.request import TensorData
from sidecar.core.tensors import (
    MAX_DIMS,
    MAX_ELEMENTS,
    BadBackendOutput,
    InvalidTensors,
    TensorSpec,
    element_count,
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


# ---- hostile sizes: refused at once, in a short message -----------------------------------

MESSAGE_BOUND = 1024  # bytes (UTF-8) of any refusal's message, whatever the request


def refusal(inputs, specs=SPECS) -> tuple[str, float]:
    """The InvalidTensors message for `inputs`, and how long `input_bytes` took to raise it."""
    started = time.perf_counter()
    with pytest.raises(InvalidTensors) as err:
        input_bytes(inputs, specs)
    took = time.perf_counter() - started
    message = str(err.value)
    assert len(message.encode()) <= MESSAGE_BOUND, (len(message.encode()), message[:300])
    return message, took


def test_shape_of_300k_dims_is_refused_at_once_naming_the_count_and_the_limit():
    dims = (1000,) * 300_000  # math.prod over these took 8.3 s
    message, took = refusal([TensorData("a", "float32", dims, b""), tensor([7], "b", "int64")])
    print(f"300,000 dims refused in {took * 1e3:.2f} ms: {message}")
    assert took < 0.05
    assert message == f"input 'a': shape [{', '.join(['1000'] * 8)}, …] (300,000 dims) has more than {MAX_DIMS} dims"


def test_max_dims_is_the_most_a_shape_may_have():
    specs = (TensorSpec("a", "float32", (1,) * MAX_DIMS),)
    at_limit = TensorData("a", "float32", (1,) * MAX_DIMS, b"\0" * 4)
    assert input_bytes([at_limit], specs) == (at_limit.data,)
    assert order_inputs([at_limit], specs) == (at_limit,)
    over = TensorData("a", "float32", (1,) * (MAX_DIMS + 1), b"\0" * 4)
    message, _ = refusal([over], specs)
    assert f"({MAX_DIMS + 1} dims) has more than {MAX_DIMS} dims" in message


@pytest.mark.parametrize(
    "shape",
    [(MAX_ELEMENTS + 1,), (1 << 16, 1 << 16), (1 << 40, 1 << 40), (2**63 - 1,) * MAX_DIMS],
)
def test_element_counts_past_max_elements_are_refused(shape):
    message, took = refusal([TensorData("a", "float32", shape, b""), tensor([7], "b", "int64")])
    assert took < 0.05
    assert f"has more than {MAX_ELEMENTS} elements" in message


def test_element_count_stops_once_past_the_limit_and_sees_zeros():
    assert element_count(()) == 1
    assert element_count((2, 3, 4)) == 24
    assert element_count((MAX_ELEMENTS,)) == MAX_ELEMENTS
    assert element_count((MAX_ELEMENTS, 2)) is None
    assert element_count((2**63 - 1,) * MAX_DIMS) is None
    assert element_count((1 << 40, 1 << 40, 0)) == 0  # no elements: not too many
    message, _ = refusal([TensorData("a", "float32", (1 << 40, 1 << 40, 0), b""), tensor([7], "b", "int64")])
    assert "does not match the model's per-item shape [2]" in message


def test_at_most_max_elements_passes_the_count_and_is_refused_for_its_shape():
    message, _ = refusal([TensorData("a", "float32", (MAX_ELEMENTS,), b""), tensor([7], "b", "int64")])
    assert f"shape [{MAX_ELEMENTS}] does not match the model's per-item shape [2]" in message


@pytest.mark.parametrize("char", ["a", "\0", "\U0001f600"])  # \0 is 4 bytes in a repr (the 68 MB message), 😀 4
@pytest.mark.parametrize("where", ["unknown name", "duplicate name", "dtype"])
def test_17_mb_of_client_text_is_quoted_short_marking_the_cut_and_stating_its_length(where, char):
    huge = char * 17_000_000
    inputs = {
        "unknown name": [*good(), TensorData(huge, "float32", (2,), b"\0" * 8)],
        "duplicate name": [TensorData(huge, "float32", (2,), b""), TensorData(huge, "float32", (2,), b""), good()[1]],
        "dtype": [TensorData("a", huge, (2,), b"\0" * 8), good()[1]],
    }[where]
    message, took = refusal(inputs)
    print(f"17 MB {where} ({char!r}) refused in {took * 1e3:.1f} ms, {len(message)} chars: {message[:80]}…")
    assert took < 0.5
    assert f"{repr(char)[1:-1] * 10}'… (17,000,000 chars)" in message
    words = {"unknown name": "unknown input name(s) [", "duplicate name": "more than once", "dtype": "unknown dtype"}
    assert words[where] in message


class ManyInputs(Sequence[TensorData]):
    """The model's inputs, then `n` more named x0, x1, ...: made when read, and counted."""

    def __init__(self, n: int) -> None:
        self.head, self.n, self.read = good(), n, 0

    def __len__(self) -> int:
        return len(self.head) + self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not 0 <= i < len(self):
            raise IndexError(i)
        self.read += 1
        return self.head[i] if i < len(self.head) else TensorData(f"x{i - len(self.head)}", "float32", (2,), b"")


def test_a_million_input_names_are_refused_reading_only_the_first_few():
    inputs = ManyInputs(1_000_000)
    message, took = refusal(inputs)
    print(f"1,000,000 unknown names refused in {took * 1e3:.2f} ms, {inputs.read} read: {message}")
    assert took < 0.05 and inputs.read <= len(SPECS) + 6
    assert message == (
        "unknown input name(s) ['x0', 'x1', 'x2', 'x3', 'x4', …] (6 names) among the first 8 of 1,000,002 inputs;"
        " the model expects ['a', 'b']"
    )


def test_a_million_copies_of_one_name_are_refused_at_the_second():
    a = good()[0]
    message, took = refusal([a] * 1_000_000)
    assert took < 0.05 and message == "input 'a' appears more than once"


def test_unknown_names_are_listed_in_the_order_sent_and_capped_with_their_count():
    extra = [TensorData(n, "float32", (2,), b"") for n in "zyxwvu"]
    message, _ = refusal([*good(), *extra])
    assert message == "unknown input name(s) ['z', 'y', 'x', 'w', 'v', …] (6 names); the model expects ['a', 'b']"


def test_enormous_data_under_a_small_shape_is_refused_by_its_length():
    message, took = refusal([TensorData("a", "float32", (2,), b"\0" * 60_000_000), tensor([7], "b", "int64")])
    print(f"60 MB of data for [2] refused in {took * 1e3:.2f} ms")
    assert message == "input 'a': 60000000 bytes, but float32 x [2] needs 8"
