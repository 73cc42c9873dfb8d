"""KServe tensors against the model: batches of items, names, datatypes, and hostile sizes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from sidecar.core.kserve_tensors import DATATYPES, KTensor, as_items, check_datatype
from sidecar.core.tensors import InvalidTensors, ModelSpec, TensorSpec

ONE = ModelSpec(inputs=(TensorSpec("input", "float32", (16,)),), outputs=(TensorSpec("output", "float32", (16,)),))
TWO = ModelSpec(
    inputs=(TensorSpec("a", "float32", (2,)), TensorSpec("b", "int64", (3,))),
    outputs=(TensorSpec("x", "float32", (1,)), TensorSpec("y", "int64", (1,)), TensorSpec("z", "float32", (1,))),
)
MAX = 8
MESSAGE_BOUND = 2000  # characters of any refusal, whatever the request


def fp32(n: int, name: str = "input", item: tuple[int, ...] = (16,), batch: bool = True) -> KTensor:
    data = np.arange(n * int(np.prod(item)), dtype="<f4").tobytes()
    return KTensor(name, "FP32", ((n,) if batch else ()) + item, data)


def pair(n: int) -> list[KTensor]:
    a = KTensor("a", "FP32", (n, 2), np.arange(n * 2, dtype="<f4").tobytes())
    b = KTensor("b", "INT64", (n, 3), np.arange(n * 3, dtype="<i8").tobytes())
    return [a, b]


def refusal(inputs, requested=(), spec=ONE, max_items=MAX) -> str:
    with pytest.raises(InvalidTensors) as err:
        as_items(inputs, requested, spec, max_items)
    message = str(err.value)
    assert len(message) < MESSAGE_BOUND, message[:300]
    return message


# ---- items --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, MAX])
def test_n_items_come_from_a_leading_batch_dimension(n):
    t = fp32(n)
    items = as_items([t], [], ONE, MAX)
    assert items.n == n and items.inputs == (t.data,)


def test_the_item_shape_alone_is_one_item():
    t = fp32(1, batch=False)
    items = as_items([t], [], ONE, MAX)
    assert items.n == 1 and items.inputs == (t.data,)


def test_a_scalar_model_takes_a_bare_scalar_as_one_item_and_a_vector_as_n():
    spec = ModelSpec(inputs=(TensorSpec("s", "int32", ()),), outputs=ONE.outputs)
    assert as_items([KTensor("s", "INT32", (), b"\1\0\0\0")], [], spec, MAX).n == 1
    assert as_items([KTensor("s", "INT32", (3,), b"\0" * 12)], [], spec, MAX).n == 3


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_inputs_in_any_order_come_back_in_spec_order(order):
    sent = pair(3)
    items = as_items([sent[i] for i in order], [], TWO, MAX)
    assert items.n == 3 and items.inputs == (sent[0].data, sent[1].data)


def test_upper_cased_names_match_and_answers_carry_the_models_spelling():
    t = fp32(2, name="INPUT")
    items = as_items([t], ["OUTPUT"], ONE, MAX)
    assert items.inputs == (t.data,) and [s.name for s in items.outputs] == ["output"]


CASED = ModelSpec(
    inputs=(TensorSpec("input", "float32", (16,)), TensorSpec("Input", "float32", (16,))),
    outputs=(TensorSpec("output", "float32", (1,)), TensorSpec("Output", "float32", (1,))),
)


def test_names_differing_only_by_case_are_matched_exactly():
    x, y = fp32(1, name="input"), fp32(1, name="Input")
    items = as_items([y, x], ["Output"], CASED, MAX)
    assert items.inputs == (x.data, y.data) and [s.name for s in items.outputs] == ["Output"]


def test_names_differing_only_by_case_refuse_any_other_spelling():
    # "INPUT" ignoring case names two model tensors, so it names none.
    message = refusal([fp32(1, name="INPUT"), fp32(1, name="Input")], spec=CASED)
    assert message.startswith("unknown input name(s) ['INPUT']")
    message = refusal([fp32(1, name="input"), fp32(1, name="Input")], ["OUTPUT"], spec=CASED)
    assert message.startswith("unknown output name(s) ['OUTPUT']")


def test_inputs_disagreeing_on_n_are_refused_with_both_counts():
    a, _ = pair(2)
    _, b = pair(3)
    message = refusal([a, b], spec=TWO)
    assert "input 'b'" in message and "3 item(s)" in message and "input 'a' has 2" in message


def test_wrong_byte_count_is_refused_with_what_it_needs():
    t = KTensor("input", "FP32", (2, 16), b"\0" * 64)
    assert refusal([t]) == "input 'input': 64 bytes, but 2 x FP32 x [16] needs 128"


def test_wrong_item_shape_is_refused_naming_the_models_shape():
    message = refusal([fp32(2, item=(15,))])
    assert "is not [N, 16]" in message and "[2, 15]" in message


def test_zero_items_are_refused():
    assert refusal([KTensor("input", "FP32", (0, 16), b"")]) == "input 'input': shape [0, 16] holds no items"


def test_more_items_than_the_limit_are_refused_naming_the_setting():
    message = refusal([fp32(MAX + 1)])
    assert f"{MAX + 1} items" in message and str(MAX) in message and "sidecar.stream.max-outstanding" in message


# ---- datatypes ----------------------------------------------------------------------------


def test_datatype_mismatch_is_named_in_kserve_terms():
    t = KTensor("input", "INT32", (16,), b"\0" * 64)
    message = refusal([t])
    assert message == "input 'input': datatype INT32 does not match the model's FP32"
    assert "float32" not in message and "int32" not in message


@pytest.mark.parametrize("datatype", ["BYTES", "BF16", "UINT16", "UINT32", "UINT64"])
def test_protocol_datatypes_no_model_takes_are_refused_saying_what_the_model_takes(datatype):
    message = refusal([KTensor("input", datatype, (16,), b"\0" * 64)])
    assert message == f"input 'input': datatype {datatype} is not taken by this model; it takes FP32"


def test_unknown_datatype_is_refused_listing_the_known_ones():
    message = refusal([KTensor("input", "FLOAT", (16,), b"\0" * 64)])
    assert "unknown datatype 'FLOAT'" in message
    assert all(name in message for name in DATATYPES)


@pytest.mark.parametrize("datatype, dtype", sorted(DATATYPES.items()))
def test_check_datatype_maps_each_kserve_name_to_the_models_dtype(datatype, dtype):
    assert check_datatype("x", datatype) == dtype
    assert check_datatype("x", datatype, TensorSpec("x", dtype, (1,))) == dtype


def test_check_datatype_without_a_spec_refuses_bytes_without_naming_a_wanted_type():
    with pytest.raises(InvalidTensors) as err:
        check_datatype("x", "BYTES")
    assert str(err.value) == "input 'x': datatype BYTES is not taken by this model"


# ---- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, words",
    [
        ([], "request has no inputs; the model expects ['a', 'b']"),
        (pair(1)[:1], "missing input(s) ['b']; the model expects ['a', 'b']"),
        ([*pair(1), pair(1)[0]], "input 'a' appears more than once"),
        ([*pair(1), KTensor("A", "FP32", (1, 2), b"\0" * 8)], "input 'A' appears more than once"),
        ([*pair(1), fp32(1, name="c")], "unknown input name(s) ['c']; the model expects ['a', 'b']"),
    ],
)
def test_input_names_must_be_the_models_each_once(inputs, words):
    assert refusal(inputs, spec=TWO) == words


def test_no_outputs_requested_means_all_in_spec_order():
    assert [s.name for s in as_items(pair(1), [], TWO, MAX).outputs] == ["x", "y", "z"]


def test_requested_outputs_come_back_in_spec_order_each_once():
    items = as_items(pair(1), ["z", "X", "z"], TWO, MAX)
    assert [s.name for s in items.outputs] == ["x", "z"]


def test_unknown_requested_output_is_refused_naming_the_models_outputs():
    message = refusal(pair(1), ["x", "w"], spec=TWO)
    assert message == "unknown output name(s) ['w']; the model has ['x', 'y', 'z']"


def test_too_many_requested_names_are_refused_by_their_count():
    message = refusal(pair(1), ["x"] * 13, spec=TWO)
    assert message == "request names 13 outputs; the model has 3: ['x', 'y', 'z']"


# ---- hostile sizes: refused at once, in a short message ----------------------------------


class ManyInputs(Sequence[KTensor]):
    """`n` inputs named x0, x1, ...: made when read, and counted."""

    def __init__(self, n: int) -> None:
        self.n, self.read = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.read += 1
        return fp32(1, name=f"x{i}")


# Speed is for benchmarks: these check the structure that keeps a hostile request
# cheap (what is read, what is quoted), not the time it took.


def test_a_million_unknown_inputs_are_refused_reading_only_the_first_few():
    inputs = ManyInputs(1_000_000)
    message = refusal(inputs)
    assert inputs.read <= len(ONE.inputs) + 6
    assert message.startswith("unknown input name(s) ['x0', 'x1', 'x2', 'x3', 'x4', …]")


def test_a_million_copies_of_one_input_are_refused_at_the_second():
    message = refusal([fp32(1)] * 1_000_000)
    assert message == "input 'input' appears more than once"


@pytest.mark.parametrize("where", ["input", "datatype", "output"])
def test_a_17_mb_name_is_refused_quickly_quoting_a_prefix(where):
    huge = "a" * 17_000_000
    t = fp32(1)
    inputs = [KTensor(huge if where == "input" else t.name, huge if where == "datatype" else "FP32", t.shape, t.data)]
    message = refusal(inputs, [huge] if where == "output" else [])
    assert len(message) < 2000 and "17,000,000 chars" in message


@pytest.mark.parametrize(
    "shape, words",
    [
        ((-1, 16), "negative dimension in shape [-1, 16]"),
        ((1,) * 34, "(34 dims) has more than 33 dims"),
        ((1,) * 1_000_000, "(1,000,000 dims) has more than 33 dims"),
        ((2**40, 2**40, 16), "shape [1099511627776, 1099511627776, 16] is too large"),
    ],
)
def test_absurd_shapes_are_refused_cheaply(shape, words):
    message = refusal([KTensor("input", "FP32", shape, b"")])
    assert words in message


def test_a_million_requested_outputs_are_refused_by_their_count():
    message = refusal([fp32(1)], ["output"] * 1_000_000)
    assert message == "request names 1,000,000 outputs; the model has 1: ['output']"
