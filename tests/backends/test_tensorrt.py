"""The TensorRT backend on a real GPU: tiny ONNX models built into engines and
checked against numpy.

Every test that touches TensorRT asks for the `gpu` fixture, which skips it where
TensorRT, pycuda or a CUDA device is missing: on such a machine the backend is
unverified, and the skip says so. The registry's install hint and the test
models themselves are checked everywhere.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The test models are built with onnx (the onnx extra, in dev).
onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install -e '.[onnx]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from sidecar.backends import registry  # noqa: E402
from sidecar.backends.base import Backend, BackendError, BackendInfo, warm_up_sizes  # noqa: E402
from sidecar.core.tensors import ModelSpec, TensorSpec  # noqa: E402

REASON = "needs TensorRT, pycuda and a CUDA GPU: unverified here"

RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
# TensorRT may run float32 matmuls as TF32 (10-bit mantissa): outputs here are of
# order 1, so this still catches a wrong row, a wrong weight or stale memory.
TF32 = {"rtol": 1e-2, "atol": 1e-2}


# --- the models ---------------------------------------------------------------------


def reference_mlp(x: np.ndarray) -> np.ndarray:
    return np.maximum(x.astype(np.float32) @ W + B, 0)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    # Opset 17 and IR 8: what TensorRT 10's parser reads, whatever onnx writes by default.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp_onnx(path: Path, batch: str | int = "batch") -> Path:
    """y = relu(x @ W + B): x float32 [batch, 4], y float32 [batch, 3]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")],
    )
    return _save(graph, path)


def pair_onnx(path: Path, elem: int) -> Path:
    """Two inputs, two outputs, told apart only by name: sum = a + b, prod = a * b."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "pair",
        [helper.make_tensor_value_info(n, elem, ["batch", 2, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, elem, ["batch", 2, 3]) for n in ("sum", "prod")],
    )
    return _save(graph, path)


def test_the_test_models_compute_what_the_gpu_tests_expect(tmp_path: Path):
    # Runs everywhere: the GPU tests compare against these references, so the
    # models must be what the references say (onnx's own reference evaluator).
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    (y,) = ReferenceEvaluator(str(mlp_onnx(tmp_path / "mlp.onnx"))).run(None, {"x": x})
    np.testing.assert_allclose(y, reference_mlp(x), rtol=1e-6, atol=1e-6)
    a, b = (RNG.integers(-9, 9, (2, 2, 3)).astype(np.int32) for _ in range(2))
    total, product = ReferenceEvaluator(str(pair_onnx(tmp_path / "pair.onnx", TensorProto.INT32))).run(
        None, {"a": a, "b": b}
    )
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(product, a * b)


# --- the registry, with and without TensorRT ----------------------------------------


def test_without_tensorrt_the_registry_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    # None in sys.modules makes `import tensorrt` raise ImportError, as on a
    # machine without it, whether or not this one has it.
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.delitem(sys.modules, "sidecar.backends.tensorrt", raising=False)
    with pytest.raises(BackendError) as err:
        registry.backend_class("tensorrt")
    assert "pip install 'gpu-sidecar[tensorrt]'" in str(err.value)
    assert "backend 'tensorrt' needs a package that is not installed" in str(err.value)


_INSTALLED = all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "pycuda"))


@pytest.mark.skipif(_INSTALLED, reason="TensorRT and pycuda are installed here")
def test_here_the_tensorrt_backend_is_an_install_hint():
    with pytest.raises(BackendError, match=r"pip install 'gpu-sidecar\[tensorrt\]'"):
        registry.backend_class("tensorrt")


# --- on the GPU -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu() -> Any:
    """tensorrt, once TensorRT, pycuda and a CUDA device are all there; else a skip."""
    trt = pytest.importorskip("tensorrt", reason=REASON)
    # A missing libcuda is an ImportError that is not ModuleNotFoundError.
    cuda = pytest.importorskip("pycuda.driver", reason=REASON, exc_type=ImportError)
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error:
        count = 0
    if count < 1:
        pytest.skip(REASON)
    return trt


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, gpu: Any) -> dict[str, Path]:
    """The ONNX models, and the MLP as a serialized engine built here, not by the
    backend (profile batch 1..8, opt 4)."""
    root = tmp_path_factory.mktemp("tensorrt")
    paths = {
        "mlp": mlp_onnx(root / "mlp.onnx"),
        "static": mlp_onnx(root / "static.onnx", batch=2),
        "pair_f32": pair_onnx(root / "pair_f32.onnx", TensorProto.FLOAT),
        "pair_i32": pair_onnx(root / "pair_i32.onnx", TensorProto.INT32),
    }
    paths["mlp_plan"] = build_plan(gpu, paths["mlp"], root / "mlp.plan", lo=1, opt=4, hi=8)
    return paths


def build_plan(trt: Any, onnx_path: Path, plan_path: Path, lo: int, opt: int, hi: int) -> Path:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        item = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (lo, *item), (opt, *item), (hi, *item))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None
    with open(plan_path, "wb") as f:
        f.write(serialized)
    return plan_path


@contextmanager
def loaded(path: Path, **options: str) -> Iterator[tuple[Backend, BackendInfo]]:
    backend = registry.create("tensorrt", str(path), options)
    info = backend.load()
    try:
        yield backend, info
    finally:
        backend.close()


def xs(n: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal((n, 4)) * scale).astype(np.float32)


def test_an_onnx_model_is_built_with_a_profile_up_to_max_batch(models: dict[str, Path]):
    with loaded(models["mlp"], max_batch="8") as (backend, info):
        assert info.max_batch_size == 8
        assert info.spec == ModelSpec(
            inputs=(TensorSpec("x", "float32", (4,)),), outputs=(TensorSpec("y", "float32", (3,)),)
        )
        for n in (1, 5, 8):
            x = xs(n)
            out = backend.infer({"x": x})
            assert set(out) == {"y"} and out["y"].shape == (n, 3)
            np.testing.assert_allclose(out["y"], reference_mlp(x), **TF32)


def test_a_serialized_engine_reports_its_profiles_max(models: dict[str, Path]):
    with loaded(models["mlp_plan"]) as (backend, info):
        assert info.max_batch_size == 8
        x = xs(8)
        np.testing.assert_allclose(backend.infer({"x": x})["y"], reference_mlp(x), **TF32)
        with pytest.raises(BackendError, match=r"a batch of 9 is outside 1\.\.8"):
            backend.infer({"x": xs(9)})


def test_max_batch_caps_a_serialized_engine_and_cannot_exceed_it(models: dict[str, Path]):
    with loaded(models["mlp_plan"], max_batch="4") as (_, info):
        assert info.max_batch_size == 4
    backend = registry.create("tensorrt", str(models["mlp_plan"]), {"max_batch": "9"})
    with pytest.raises(BackendError, match=r"max_batch: 9 is above the engine's profile max, 8"):
        backend.load()
    backend.close()  # a failed load already freed everything; closing again is harmless


@pytest.mark.parametrize("model", ["pair_f32", "pair_i32"])
def test_several_inputs_and_outputs_are_matched_by_name(models: dict[str, Path], model: str):
    dtype = np.float32 if model == "pair_f32" else np.int32
    with loaded(models[model], max_batch="4") as (backend, info):
        assert [s.name for s in info.spec.inputs] == ["a", "b"]
        assert {s.name for s in info.spec.outputs} == {"sum", "prod"}
        assert {s.dtype for s in (*info.spec.inputs, *info.spec.outputs)} == {np.dtype(dtype).name}
        a = RNG.integers(-50, 50, (3, 2, 3)).astype(dtype)
        b = RNG.integers(-50, 50, (3, 2, 3)).astype(dtype)
        out = backend.infer({"b": b, "a": a})
        np.testing.assert_array_equal(out["sum"], a + b)
        np.testing.assert_array_equal(out["prod"], a * b)


def test_pipelined_batches_join_into_alternating_pinned_buffers(models: dict[str, Path]):
    with loaded(models["mlp_plan"]) as (backend, _):
        sizes = [3, 8, 1, 5, 8, 2]
        sent, pending, views = [], [], []
        for n in sizes:
            buffers = backend.input_buffers(n)
            assert buffers is not None and buffers["x"].shape == (n, 4)
            x = xs(n)
            buffers["x"][:] = x  # what the executor's join does
            sent.append(x)
            views.append(buffers["x"])
            pending.append(backend.submit(buffers))
            if len(pending) == 2:  # batch N+1 is in flight before batch N is collected
                np.testing.assert_allclose(backend.collect(pending.pop(0))["y"], reference_mlp(sent[-2]), **TF32)
        np.testing.assert_allclose(backend.collect(pending.pop())["y"], reference_mlp(sent[-1]), **TF32)
        assert np.shares_memory(views[0], views[2]) and not np.shares_memory(views[0], views[1])


def test_a_third_batch_in_flight_is_refused(models: dict[str, Path]):
    with loaded(models["mlp_plan"]) as (backend, _):
        first, second = xs(2), xs(3)
        handles = [backend.submit({"x": first}), backend.submit({"x": second})]
        with pytest.raises(BackendError, match="all 2 buffer sets hold batches not yet collected"):
            backend.input_buffers(1)
        with pytest.raises(BackendError, match="all 2 buffer sets"):
            backend.submit({"x": xs(1)})
        np.testing.assert_allclose(backend.collect(handles[0])["y"], reference_mlp(first), **TF32)
        np.testing.assert_allclose(backend.collect(handles[1])["y"], reference_mlp(second), **TF32)


def test_padded_batches_answer_only_the_rows_sent(models: dict[str, Path]):
    with loaded(models["mlp_plan"], preferred_batch_sizes="4,8") as (backend, _):
        # Large rows first, so that stale rows in a padded batch would show.
        for n in (8, 3, 5, 1, 8, 4):
            x = xs(n, scale=100.0 if n == 8 else 1.0)
            out = backend.infer({"x": x})["y"]
            assert out.shape == (n, 3)
            np.testing.assert_allclose(out, reference_mlp(x), rtol=1e-2, atol=1e-2 * (100.0 if n == 8 else 1.0))


def test_fp16_builds_run_in_half_precision(models: dict[str, Path]):
    with loaded(models["mlp"], max_batch="4", fp16="true", workspace_mb="64") as (backend, info):
        assert info.spec.outputs[0].dtype == "float32"  # I/O stays as the model declares it
        x = xs(4)
        np.testing.assert_allclose(backend.infer({"x": x})["y"], reference_mlp(x), rtol=3e-2, atol=3e-2)


def test_warm_up_runs_every_size(models: dict[str, Path]):
    with loaded(models["mlp_plan"]) as (backend, info):
        backend.warm_up(info.spec, warm_up_sizes(8))
        x = xs(6)
        np.testing.assert_allclose(backend.infer({"x": x})["y"], reference_mlp(x), **TF32)


def test_a_static_batch_dim_is_refused_at_load(models: dict[str, Path]):
    backend = registry.create("tensorrt", str(models["static"]), {})
    with pytest.raises(BackendError, match=r"tensor 'x' has shape \[2, 4\]: its first \(batch\) dim must be dynamic"):
        backend.load()


def test_the_backend_lives_on_the_thread_that_loaded_it(models: dict[str, Path]):
    # As under the executor: load, batches and close all on one thread of its own.
    x = xs(5)
    backend = registry.create("tensorrt", str(models["mlp_plan"]), {})
    with ThreadPoolExecutor(max_workers=1) as own_thread:
        own_thread.submit(backend.load).result(timeout=120)
        try:
            y = own_thread.submit(backend.infer, {"x": x}).result(timeout=60)
            np.testing.assert_allclose(y["y"], reference_mlp(x), **TF32)
            with pytest.raises(BackendError, match="from a thread other than the one that loaded it"):
                backend.infer({"x": x})
        finally:
            own_thread.submit(backend.close).result(timeout=60)


def test_close_gives_the_device_memory_back(models: dict[str, Path]):
    import pycuda.driver as cuda

    # A context of the test's own, to read the device's free memory; each
    # backend's context goes on top of it in load() and comes off in close().
    probe = cuda.Device(0).make_context()
    try:
        free_before, _ = cuda.mem_get_info()
        for _ in range(3):
            backend = registry.create("tensorrt", str(models["mlp_plan"]), {})
            backend.load()
            x = xs(2)
            np.testing.assert_allclose(backend.infer({"x": x})["y"], reference_mlp(x), **TF32)
            backend.close()
            backend.close()  # twice is harmless
            with pytest.raises(BackendError, match="not loaded"):
                backend.infer({"x": x})
        free_after, _ = cuda.mem_get_info()
    finally:
        probe.pop()
        probe.detach()
    # A context left behind holds hundreds of MB; the buffers here are tiny.
    assert free_after >= free_before - (64 << 20), (free_before, free_after)


def test_a_device_that_is_not_there_is_refused(models: dict[str, Path]):
    import pycuda.driver as cuda

    count = cuda.Device.count()
    backend = registry.create("tensorrt", str(models["mlp_plan"]), {"device": str(count)})
    with pytest.raises(BackendError, match=rf"device: {count}, but this machine has {count} CUDA device"):
        backend.load()


def test_a_missing_model_file_is_named(gpu: Any, tmp_path: Path):
    backend = registry.create("tensorrt", str(tmp_path / "absent.plan"), {})
    with pytest.raises(BackendError, match=r"model file '.*absent\.plan' does not exist"):
        backend.load()
