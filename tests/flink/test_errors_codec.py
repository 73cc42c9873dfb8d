"""What a Flink job sees when a record fails (errors.py), and how records become tensors (codec.py).

No PyFlink and no server: the two kinds of error, how a retry predicate tells them
apart (also when wrapped), that they survive pickling, and the default codec.
"""

from __future__ import annotations

import importlib.util
import pickle

import grpc
import numpy as np
import pytest

from sidecar.client import InferError
from sidecar.flink import (
    NumpyCodec,
    SidecarError,
    SidecarPermanentError,
    SidecarRetryableError,
    is_retryable,
)
from sidecar.flink.errors import RETRYABLE_CODES, from_infer_error
from tests.environment import need

# ---- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE])
def test_no_room_and_no_sidecar_are_retryable_and_keep_the_servers_hint(code):
    error = from_infer_error(InferError(code, "queue is full (64 of 64)", retry_after_s=0.125))
    assert type(error) is SidecarRetryableError
    assert (error.code, error.message, error.retry_after_s) == (code.name, "queue is full (64 of 64)", 0.125)
    assert str(error) == f"{code.name}: queue is full (64 of 64)"
    assert is_retryable(error)


@pytest.mark.parametrize(
    "code", sorted(set(grpc.StatusCode) - RETRYABLE_CODES - {grpc.StatusCode.OK}, key=lambda c: c.name)
)
def test_every_other_code_is_permanent(code):
    error = from_infer_error(InferError(code, "no"))
    assert type(error) is SidecarPermanentError and isinstance(error, SidecarError)
    assert error.code == code.name and error.retry_after_s is None
    assert not is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        SidecarRetryableError("RESOURCE_EXHAUSTED", "queue is full", 0.25),
        SidecarRetryableError("UNAVAILABLE", "draining"),
        SidecarPermanentError("INVALID_ARGUMENT", "input 'input' has shape (3,), expected (16,)"),
    ],
)
def test_errors_survive_pickling_with_their_type_and_every_field(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.code, back.message, back.retry_after_s, str(back)) == (
        error.code, error.message, error.retry_after_s, str(error))


def wrapped(inner: BaseException, explicit: bool) -> BaseException:
    """`inner` raised, and a RuntimeError raised while handling it (`from` it if explicit)."""
    try:
        try:
            raise inner
        except BaseException as error:
            if explicit:
                raise RuntimeError("the function failed") from error
            raise RuntimeError("the function failed")  # an implicit __context__
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("explicit", [True, False], ids=["cause", "context"])
def test_a_retryable_error_wrapped_by_another_is_still_retryable(explicit):
    assert is_retryable(wrapped(SidecarRetryableError("UNAVAILABLE", "restarting"), explicit))
    assert not is_retryable(wrapped(SidecarPermanentError("INTERNAL", "model failed"), explicit))
    assert not is_retryable(wrapped(ValueError("bad record"), explicit))


def test_nothing_and_foreign_errors_are_not_retryable():
    assert not is_retryable(None)
    assert not is_retryable(TimeoutError("flink's own timeout"))
    assert not is_retryable(InferError(grpc.StatusCode.UNAVAILABLE, "the client's own error, not mapped"))


def test_a_cycle_of_causes_ends_the_search():
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert not is_retryable(first)
    looped = SidecarPermanentError("INTERNAL", "x")
    looped.__context__ = looped
    assert not is_retryable(looped)


def test_a_permanent_error_raised_while_handling_a_retryable_one_is_not_retried():
    try:
        try:
            raise SidecarRetryableError("UNAVAILABLE", "restarting")
        except SidecarRetryableError:
            raise SidecarPermanentError("FAILED_PRECONDITION", "the job gave up on this record") from None
    except SidecarPermanentError as error:
        assert not is_retryable(error)


# ---- the codec --------------------------------------------------------------------------


def test_default_codec_sends_the_record_as_float32_and_emits_the_output_as_a_list():
    codec = NumpyCodec()
    inputs = codec.encode([1, 2, 3])
    assert list(inputs) == ["input"]
    assert inputs["input"].dtype == np.float32 and inputs["input"].tolist() == [1.0, 2.0, 3.0]
    assert codec.decode([1, 2, 3], {"output": np.array([2.0, 4.0], np.float32)}) == [[2.0, 4.0]]


def test_codec_names_dtype_select_and_emit_are_honoured():
    codec = NumpyCodec(
        input_name="x", output_name="y", dtype="int64",
        select=lambda record: record["features"],
        emit=lambda record, output: (record["id"], int(output.sum())),
    )
    record = {"id": "r7", "features": [1.9, 2.0]}
    inputs = codec.encode(record)
    assert list(inputs) == ["x"] and inputs["x"].dtype == np.int64 and inputs["x"].tolist() == [1, 2]
    assert codec.decode(record, {"y": np.array([3, 4]), "other": np.zeros(1)}) == [("r7", 7)]


def test_decode_of_a_missing_output_names_it_and_the_outputs_there_are():
    with pytest.raises(ValueError, match=r"no output 'output'; it gave \['a', 'b'\]"):
        NumpyCodec().decode(None, {"b": np.zeros(1), "a": np.zeros(1)})


def test_a_record_numpy_cannot_make_an_array_of_fails_to_encode():
    with pytest.raises(ValueError):
        NumpyCodec().encode([[1.0, 2.0], [3.0]])  # ragged
    with pytest.raises(ValueError):
        NumpyCodec().encode("not a number")


def test_default_codec_pickles_and_encodes_the_same_after():
    back = pickle.loads(pickle.dumps(NumpyCodec(input_name="x", dtype="float64")))
    assert back == NumpyCodec(input_name="x", dtype="float64")
    assert back.encode([1.5])["x"].dtype == np.float64


def test_a_codec_with_lambdas_survives_cloudpickle_as_flink_ships_it():
    need("flink", None if importlib.util.find_spec("cloudpickle") else "needs cloudpickle (comes with PyFlink)")
    import cloudpickle

    codec = NumpyCodec(select=lambda r: r[1], emit=lambda r, out: (r[0], out.tolist()))
    back = pickle.loads(cloudpickle.dumps(codec))
    record = ("k", [1, 2])
    assert back.encode(record)["input"].tolist() == [1.0, 2.0]
    assert back.decode(record, {"output": np.array([2.0, 4.0])}) == [("k", [2.0, 4.0])]
