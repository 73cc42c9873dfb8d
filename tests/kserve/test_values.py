"""Tensor values outside raw bytes: JSON `data` lists and gRPC typed contents, to and from raw."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.api.kserve.v2.inference_pb2 import InferTensorContents
from sidecar.core.tensors import InvalidTensors
from sidecar.kserve.values import has_contents, raw_from_values, typed_contents, values_from_raw

NUMPY = {
    "BOOL": "?",
    "UINT8": "<u1",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
SAMPLES = {
    "BOOL": [True, False, True, True, False, False],
    "UINT8": [0, 1, 2, 128, 254, 255],
    "INT8": [-128, -1, 0, 1, 2, 127],
    "INT16": [-32768, -1, 0, 1, 2, 32767],
    "INT32": [-(2**31), -1, 0, 1, 2, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 1, 2, 2**63 - 1],
    "FP16": [-2.5, -1.0, 0.0, 0.5, 1.0, 65504.0],
    "FP32": [-2.5, -1.0, 0.0, 0.25, 1.0, 2.0**127],
    "FP64": [-2.5, -1.0, 0.0, 0.1, 1.0, 1.0e300],
}


def refusal(datatype: str, shape, values) -> str:
    with pytest.raises(InvalidTensors) as err:
        raw_from_values("x", datatype, shape, values)
    return str(err.value)


# ---- JSON data -> raw ---------------------------------------------------------------------


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_flat_data_becomes_little_endian_raw_bytes(datatype):
    values = SAMPLES[datatype]
    assert raw_from_values("x", datatype, [6], values) == np.asarray(values, dtype=NUMPY[datatype]).tobytes()


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_nested_data_is_read_row_major(datatype):
    values = SAMPLES[datatype]
    nested = [values[0:3], values[3:6]]
    flat = raw_from_values("x", datatype, [6], values)
    assert raw_from_values("x", datatype, [2, 3], nested) == flat
    assert raw_from_values("x", datatype, [1, 2, 3], [nested]) == flat


def test_whole_floats_are_taken_for_integer_datatypes():
    assert raw_from_values("x", "INT32", [3], [1.0, -2.0, 0.0]) == np.asarray([1, -2, 0], "<i4").tobytes()


def test_no_values_fit_a_shape_of_no_elements():
    assert raw_from_values("x", "FP32", [0, 16], []) == b""


@pytest.mark.parametrize(
    "shape, values, words",
    [
        ([3], [1.0, 2.0], "2 value(s), but shape [3] holds 3"),
        ([2, 2], [[1.0, 2.0]], "2 value(s), but shape [2, 2] holds 4"),
        ([1], [], "0 value(s), but shape [1] holds 1"),
    ],
)
def test_a_count_that_does_not_fill_the_shape_is_refused(shape, values, words):
    assert words in refusal("FP32", shape, values)


@pytest.mark.parametrize(
    "datatype, values, words",
    [
        ("FP32", [1.0, None], "FP32 data must be numbers (found null)"),
        ("INT64", [None, None], "INT64 data must be numbers (found null)"),
        ("FP32", ["1.0", "2.0"], "FP32 data must be numbers (found strings)"),
        ("INT32", [1, "2"], "INT32 data must be numbers (found strings)"),
        ("FP32", [True, False], "FP32 data must be numbers (found booleans)"),
        ("INT8", [[True], [False]], "INT8 data must be numbers (found booleans)"),
        ("FP64", [{"a": 1}, 2.0], "FP64 data must be numbers"),
    ],
)
def test_non_numbers_in_numeric_data_are_refused_saying_what_was_found(datatype, values, words):
    assert words in refusal(datatype, [len(values)], values)


@pytest.mark.parametrize("datatype", ["INT32", "FP32"])
def test_a_boolean_among_numbers_is_refused(datatype):
    # JSON `true` is not a number: [1, true] must not arrive as [1, 1].
    assert "must be numbers" in refusal(datatype, [2], [1, True])


@pytest.mark.parametrize("values", [[1.5, 2.0], [0.0, float("nan")], [float("inf"), 1.0]])
def test_floats_that_are_not_whole_are_refused_for_integer_datatypes(values):
    assert "INT32 data must be whole numbers" in refusal("INT32", [2], values)


@pytest.mark.parametrize(
    "datatype, values",
    [
        ("UINT8", [256, 0]),
        ("UINT8", [-1, 0]),
        ("INT8", [128, 0]),
        ("INT16", [-32769, 0]),
        ("INT32", [2**31, 0]),
        ("INT32", [1e20, 0]),
        ("INT64", [2**63]),
    ],
)
def test_integers_out_of_the_datatypes_range_are_refused_naming_the_range(datatype, values):
    info = np.iinfo(NUMPY[datatype])
    assert f"{datatype} data must lie in [{info.min}, {info.max}]" in refusal(datatype, [len(values)], values)


@pytest.mark.parametrize("values", [[-(2**63) - 1], [2**64]])
def test_integers_too_big_for_numpy_are_refused_naming_the_range_not_as_non_numbers(values):
    assert "INT64 data must lie in" in refusal("INT64", [1], values)


@pytest.mark.parametrize("values", [[-1, 2**63], [2**63, 0], [2.0**63, 0.0]])
def test_int64_values_just_past_the_range_are_refused_not_wrapped(values):
    # Each reaches numpy as float64, where 2**63 compares equal to the largest int64.
    assert "INT64 data must lie in" in refusal("INT64", [2], values)


def test_int64_values_beside_floats_keep_every_digit():
    # [1.0, 2**53 + 1] reaches numpy as float64, which cannot hold 2**53 + 1.
    values = [1.0, 2**53 + 1]
    assert values_from_raw("INT64", raw_from_values("x", "INT64", [2], values)) == [1, 2**53 + 1]


@pytest.mark.parametrize("values", [[0, 1], [1.0, 0.0], ["true", "false"], [True, None]])
def test_bool_data_must_be_true_or_false(values):
    assert refusal("BOOL", [2], values).startswith("input 'x': BOOL data must be true or false (found ")


@pytest.mark.parametrize("values", [[[1.0, 2.0], [3.0]], [[1.0, 2.0], 3.0], [[[1.0]], [2.0]]])
def test_ragged_nesting_is_refused(values):
    assert "data is not a regular array" in refusal("FP32", [3], values)


@pytest.mark.parametrize("datatype", ["BYTES", "BF16", "UINT64"])
def test_datatypes_no_model_takes_are_refused(datatype):
    assert refusal(datatype, [1], [1]) == f"input 'x': datatype {datatype} is not taken by this model"


def test_an_unknown_datatype_is_refused_listing_the_known_ones():
    message = refusal("FLOAT", [1], [1.0])
    assert "unknown datatype 'FLOAT'" in message and "'FP32'" in message


@pytest.mark.parametrize(
    "shape, words",
    [([-1], "negative dimension"), ([1] * 34, "has more than 33 dims"), ([2**40, 2**40], "is too large")],
)
def test_absurd_shapes_are_refused_before_the_values_are_read(shape, words):
    assert words in refusal("FP32", shape, object())  # values that would not convert


# ---- raw -> JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_raw_bytes_read_back_as_the_values_sent(datatype):
    values = SAMPLES[datatype]
    assert values_from_raw(datatype, raw_from_values("x", datatype, [2, 3], [values[:3], values[3:]])) == values


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["INT8", "INT16", "INT32", "INT64", "UINT8"]).flatmap(
        lambda dt: st.tuples(
            st.just(dt),
            st.lists(st.integers(int(np.iinfo(NUMPY[dt]).min), int(np.iinfo(NUMPY[dt]).max)), max_size=20),
        )
    )
)
def test_integers_in_range_survive_the_round_trip(case):
    datatype, values = case
    assert values_from_raw(datatype, raw_from_values("x", datatype, [len(values)], values)) == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), max_size=20))
def test_fp32_values_survive_the_round_trip(values):
    assert values_from_raw("FP32", raw_from_values("x", "FP32", [len(values)], values)) == values


# ---- gRPC typed contents ------------------------------------------------------------------

FIELDS = [
    ("BOOL", "bool_contents", [True, False]),
    ("UINT8", "uint_contents", [1, 255]),
    ("INT8", "int_contents", [-1, 2]),
    ("INT16", "int_contents", [-1, 2]),
    ("INT32", "int_contents", [-1, 2]),
    ("INT64", "int64_contents", [-1, 2]),
    ("FP32", "fp32_contents", [1.5, -2.0]),
    ("FP64", "fp64_contents", [1.5, -2.0]),
]


@pytest.mark.parametrize("datatype, field, values", FIELDS)
def test_typed_contents_reads_the_field_that_carries_the_datatype(datatype, field, values):
    contents = InferTensorContents(**{field: values})
    found = typed_contents(contents, datatype)
    assert found is not None and list(found) == values
    assert raw_from_values("x", datatype, [2], found) == np.asarray(values, NUMPY[datatype]).tobytes()


@pytest.mark.parametrize("datatype, field, values", FIELDS)
def test_typed_contents_is_none_when_the_datatypes_field_is_empty(datatype, field, values):
    assert typed_contents(InferTensorContents(), datatype) is None
    other = "fp64_contents" if field != "fp64_contents" else "fp32_contents"
    assert typed_contents(InferTensorContents(**{other: [1.0]}), datatype) is None


@pytest.mark.parametrize("datatype", ["FP16", "BYTES", "BF16", "UINT64", "NOPE"])
def test_typed_contents_is_none_for_datatypes_without_a_field(datatype):
    full = InferTensorContents(uint64_contents=[1], bytes_contents=[b"a"], fp32_contents=[1.0], uint_contents=[1])
    assert typed_contents(full, datatype) is None


@pytest.mark.parametrize(
    "field, values", [(f, v) for _, f, v in FIELDS] + [("uint64_contents", [1]), ("bytes_contents", [b"a"])]
)
def test_has_contents_sees_any_field_with_values(field, values):
    assert has_contents(InferTensorContents(**{field: values}))


def test_empty_contents_have_none():
    assert not has_contents(InferTensorContents())
