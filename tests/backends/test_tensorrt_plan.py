"""The TensorRT backend's pure part: options, URIs, I/O checks, profiles, buffer
sizes, padding and buffer sets. No TensorRT, CUDA or GPU needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sidecar.backends import tensorrt_plan as plan
from sidecar.backends.base import BackendError
from sidecar.backends.options import BackendOptions
from sidecar.backends.tensorrt_plan import EngineTensor
from sidecar.core.tensors import ModelSpec, TensorSpec


def options(uri: str = "/m.plan", **configured: str) -> plan.TensorRTOptions:
    return plan.parse_options(BackendOptions.of("tensorrt", uri, configured))


# --- options ----------------------------------------------------------------------


def test_defaults():
    assert options() == plan.TensorRTOptions(
        device=0, max_batch=None, opt_batch=None, fp16=False, workspace_mb=1024, preferred_batch_sizes=()
    )


def test_reads_every_option_from_config_over_the_uri_query():
    got = options(
        "/m.onnx?max_batch=4&device=3",
        max_batch="16",
        opt_batch="8",
        fp16="true",
        workspace_mb="256",
        preferred_batch_sizes="16, 8,8",
    )
    assert got == plan.TensorRTOptions(
        device=3, max_batch=16, opt_batch=8, fp16=True, workspace_mb=256, preferred_batch_sizes=(8, 16)
    )


def test_an_unknown_option_is_named_with_its_full_key():
    with pytest.raises(BackendError, match=r"unknown option\(s\) sidecar\.backend\.tensorrt\.max_batches"):
        options(max_batches="8")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_batch", "0", r"sidecar\.backend\.tensorrt\.max_batch: 0 is below the least allowed, 1"),
        ("max_batch", "lots", r"sidecar\.backend\.tensorrt\.max_batch: 'lots' is not an integer"),
        ("device", "-1", r"sidecar\.backend\.tensorrt\.device: -1 is below"),
        ("fp16", "maybe", r"sidecar\.backend\.tensorrt\.fp16: 'maybe' is not true or false"),
        ("workspace_mb", "0", r"workspace_mb: 0 is below"),
        ("preferred_batch_sizes", "8,x", r"preferred_batch_sizes: 'x' is not a batch size"),
        ("preferred_batch_sizes", "0,8", r"preferred_batch_sizes: '0' is not a batch size"),
    ],
)
def test_bad_values_are_refused_naming_option_and_value(option: str, value: str, message: str):
    with pytest.raises(BackendError, match=message):
        options(**{option: value})


def test_opt_batch_above_max_batch_is_refused():
    with pytest.raises(BackendError, match=r"opt_batch: 9 is above sidecar\.backend\.tensorrt\.max_batch, 8"):
        options(max_batch="8", opt_batch="9")


# --- the model URI ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "path", "kind"),
    [
        ("/models/m.plan", "/models/m.plan", "engine"),
        ("/models/m.engine?max_batch=8", "/models/m.engine", "engine"),
        ("tensorrt:/models/m.PLAN", "/models/m.PLAN", "engine"),
        ("models/m.onnx", "models/m.onnx", "onnx"),
        ("file:///models/m.onnx?fp16=1", "/models/m.onnx", "onnx"),
    ],
)
def test_model_path_and_kind(uri: str, path: str, kind: str):
    assert plan.model_path(uri) == (Path(path), kind)


def test_a_file_of_another_kind_is_refused_naming_the_kinds():
    with pytest.raises(BackendError, match=r"neither a serialized engine \(\.engine, \.plan\) nor an ONNX model"):
        plan.model_path("/models/m.pt")


def test_another_scheme_is_refused():
    with pytest.raises(BackendError, match="should be a path to a .engine, .plan or .onnx file"):
        plan.model_path("s3://bucket/m.plan")


# --- engine I/O ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trt_name", "wire"),
    [
        ("FLOAT", "float32"),
        ("HALF", "float16"),
        ("INT8", "int8"),
        ("INT32", "int32"),
        ("INT64", "int64"),
        ("UINT8", "uint8"),
        ("BOOL", "bool"),
        ("DataType.FLOAT", "float32"),  # str() of the enum, as well as its .name
    ],
)
def test_dtype_mapping(trt_name: str, wire: str):
    assert plan.wire_dtype("x", trt_name) == wire


@pytest.mark.parametrize("trt_name", ["BF16", "FP8", "INT4", "FP4", "E8M0"])
def test_dtypes_the_wire_cannot_carry_are_refused_with_the_fix(trt_name: str):
    with pytest.raises(BackendError) as err:
        plan.wire_dtype("logits", trt_name)
    message = str(err.value)
    assert f"tensor 'logits' is {trt_name}" in message
    assert "FLOAT (float32)" in message and "Cast" in message


def test_per_item_shape_drops_the_dynamic_batch_dim():
    assert plan.per_item_shape("x", (-1, 3, 224, 224)) == (3, 224, 224)
    assert plan.per_item_shape("x", [-1]) == ()


def test_a_static_batch_dim_is_refused_with_the_export_fix():
    with pytest.raises(BackendError, match=r"first \(batch\) dim must be dynamic \(-1\).*dynamic_axes=\{'x'"):
        plan.per_item_shape("x", (8, 3))


@pytest.mark.parametrize("shape", [(-1, -1), (-1, 3, -1), (-1, 0)])
def test_dynamic_or_empty_per_item_dims_are_refused(shape: tuple[int, ...]):
    with pytest.raises(BackendError, match="every dim after the batch dim must be static"):
        plan.per_item_shape("x", shape)


def test_a_scalar_is_refused():
    with pytest.raises(BackendError, match="is a scalar"):
        plan.per_item_shape("x", ())


def test_model_spec_keeps_engine_order_and_splits_inputs_from_outputs():
    spec = plan.model_spec(
        [
            EngineTensor("b", True, "HALF", (-1, 2)),
            EngineTensor("out", False, "FLOAT", (-1, 5)),
            EngineTensor("a", True, "INT32", (-1,)),
        ]
    )
    assert spec == ModelSpec(
        inputs=(TensorSpec("b", "float16", (2,)), TensorSpec("a", "int32", ())),
        outputs=(TensorSpec("out", "float32", (5,)),),
    )


def test_model_spec_needs_an_input_and_an_output():
    with pytest.raises(BackendError, match=r"1 input\(s\) and 0 output\(s\)"):
        plan.model_spec([EngineTensor("x", True, "FLOAT", (-1, 2))])


# --- profiles -----------------------------------------------------------------------


def test_profile_covers_one_to_max_and_tunes_for_max_by_default():
    assert plan.profile_shapes((3, 8), 32) == plan.ProfileShapes(min=(1, 3, 8), opt=(32, 3, 8), max=(32, 3, 8))


def test_profile_opt_is_configurable():
    assert plan.profile_shapes((4,), 16, opt_batch=4).opt == (4, 4)


@pytest.mark.parametrize("opt", [0, 17])
def test_profile_opt_outside_the_range_is_refused(opt: int):
    with pytest.raises(BackendError, match=rf"opt_batch: {opt} is outside 1\.\.16"):
        plan.profile_shapes((4,), 16, opt_batch=opt)


def test_build_max_batch_defaults_to_32():
    assert plan.build_max_batch(plan.TensorRTOptions()) == 32
    assert plan.build_max_batch(plan.TensorRTOptions(max_batch=6)) == 6


def test_profile_batch_range_of_a_serialized_engine():
    assert plan.profile_batch_range("x", (3,), (2, 3), (64, 3)) == (2, 64)


def test_profile_shapes_must_match_the_per_item_shape():
    with pytest.raises(BackendError, match=r"profile max shape \[64, 4\] does not match its per-item shape \[3\]"):
        plan.profile_batch_range("x", (3,), (1, 3), (64, 4))


def test_batch_limits_take_the_tightest_profile():
    assert plan.batch_limits({"a": (1, 64), "b": (2, 32)}, None) == (2, 32)


def test_batch_limits_are_capped_by_the_option():
    assert plan.batch_limits({"a": (1, 64)}, 16) == (1, 16)


def test_max_batch_option_above_the_engines_profile_is_refused():
    with pytest.raises(BackendError, match=r"max_batch: 128 is above the engine's profile max, 64"):
        plan.batch_limits({"a": (1, 64)}, 128)


def test_max_batch_option_below_the_engines_min_is_refused():
    with pytest.raises(BackendError, match=r"max_batch: 2 is below the engine's profile min, 4"):
        plan.batch_limits({"a": (4, 64)}, 2)


def test_profiles_that_share_no_batch_size_are_refused():
    with pytest.raises(BackendError, match="share no batch size"):
        plan.batch_limits({"a": (1, 4), "b": (8, 16)}, None)


# --- buffers and padding -------------------------------------------------------------


def test_buffer_bytes_are_itemsize_times_max_batch_times_the_per_item_elements():
    spec = ModelSpec(
        inputs=(TensorSpec("img", "float16", (3, 4, 5)), TensorSpec("ids", "int64", ())),
        outputs=(TensorSpec("out", "float32", (10,)),),
    )
    assert plan.buffer_sizes(spec, 8) == {"img": 2 * 8 * 60, "ids": 8 * 8 * 1, "out": 4 * 8 * 10}
    assert plan.buffer_nbytes(spec.inputs[0], 3) == 2 * 3 * 60


@pytest.mark.parametrize(
    ("n", "padded"),
    [(1, 8), (7, 8), (8, 8), (9, 16), (16, 16), (17, 32), (32, 32), (33, 33), (64, 64)],
)
def test_pads_to_the_smallest_preferred_size_or_not_at_all(n: int, padded: int):
    assert plan.padded_batch(n, (8, 16, 32), 1, 64) == padded


def test_no_preferred_sizes_means_no_padding():
    assert [plan.padded_batch(n, (), 1, 64) for n in (1, 5, 64)] == [1, 5, 64]


def test_padding_never_goes_below_the_profiles_min():
    assert plan.padded_batch(1, (), 4, 64) == 4
    assert plan.padded_batch(1, (2, 8), 4, 64) == 8


@pytest.mark.parametrize("n", [0, 65])
def test_a_batch_outside_the_engines_range_is_refused(n: int):
    with pytest.raises(BackendError, match=rf"a batch of {n} is outside 1\.\.64"):
        plan.padded_batch(n, (), 1, 64)


def test_preferred_sizes_outside_the_engine_are_refused():
    with pytest.raises(BackendError, match=r"\[2, 128\] outside the engine's batch range 4\.\.64"):
        plan.check_preferred((2, 8, 128), 4, 64)
    assert plan.check_preferred((16, 8), 1, 64) == (8, 16)


def test_unpad_keeps_the_first_n_rows_as_views():
    padded = {"y": np.arange(8 * 3).reshape(8, 3), "z": np.arange(8)}
    out = plan.unpad(padded, 5)
    assert out["y"].shape == (5, 3) and out["z"].tolist() == [0, 1, 2, 3, 4]
    assert np.shares_memory(out["y"], padded["y"])


# --- buffer sets ---------------------------------------------------------------------


def test_batches_alternate_between_two_sets():
    rotation = plan.BufferRotation()
    used = []
    for _ in range(5):
        index = rotation.claim()
        used.append(index)
        rotation.release(index)
    assert used == [0, 1, 0, 1, 0]


def test_the_pipelined_order_joins_into_the_free_set():
    # What the executor does: join and submit N+1, then collect N.
    rotation = plan.BufferRotation()
    assert rotation.current() == 0
    first = rotation.claim()
    assert rotation.current() == 1  # where batch 2 is joined, while batch 1 runs from set 0
    second = rotation.claim()
    assert rotation.in_flight() == 2
    rotation.release(first)
    assert rotation.current() == 0
    third = rotation.claim()
    rotation.release(second)
    rotation.release(third)
    assert (first, second, third) == (0, 1, 0) and rotation.in_flight() == 0


def test_a_third_batch_in_flight_is_refused_before_it_touches_a_busy_set():
    rotation = plan.BufferRotation()
    rotation.claim()
    rotation.claim()
    with pytest.raises(BackendError, match="all 2 buffer sets hold batches not yet collected"):
        rotation.current()
    with pytest.raises(BackendError, match="all 2 buffer sets"):
        rotation.claim()


def test_a_set_collected_twice_is_an_error():
    rotation = plan.BufferRotation()
    index = rotation.claim()
    rotation.release(index)
    with pytest.raises(BackendError, match="collected twice"):
        rotation.release(index)


def test_current_does_not_advance_until_a_batch_is_claimed():
    rotation = plan.BufferRotation()
    assert [rotation.current(), rotation.current()] == [0, 0]
