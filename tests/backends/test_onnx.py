"""The ONNX Runtime backend, on the CPU provider, with models built here by onnx.helper."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

# The onnx extra (in dev); the flink environment in CI goes without it.
onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install -e '.[onnx]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sidecar.backends import registry  # noqa: E402
from sidecar.backends.base import BackendError  # noqa: E402
from sidecar.backends.onnx import OPTIONS, OnnxBackend  # noqa: E402
from sidecar.backends.options import BackendOptions  # noqa: E402
from sidecar.core.tensors import TensorSpec  # noqa: E402

Layers = list[tuple[np.ndarray, np.ndarray]]


def random_layers(sizes: Sequence[int], seed: int = 0) -> Layers:
    rng = np.random.default_rng(seed)
    return [
        ((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), rng.standard_normal(b).astype(np.float32))
        for a, b in pairwise(sizes)
    ]


def save(path: Path, graph: onnx.GraphProto) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime of some years back still reads
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def write_mlp(path: Path, layers: Layers, input_shape: Sequence[int | str] | None = None) -> Path:
    """MatMul + Add + Relu per layer, input "input" [batch, in], output "output" [batch, out]."""
    nodes, weights, previous = [], [], "input"
    for i, (w, b) in enumerate(layers):
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "output" if i == len(layers) - 1 else f"h{i}"
        nodes += [
            helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [out]),
        ]
        previous = out
    n_in, n_out = layers[0][0].shape[0], layers[-1][0].shape[1]
    lead = input_shape[0] if input_shape else "batch"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape or ["batch", n_in]))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [lead, n_out])],
        weights,
    )
    return save(path, graph)


def forward(x: np.ndarray, layers: Layers) -> np.ndarray:
    """The reference, in numpy: relu(x @ w + b) per layer."""
    h = x.astype(np.float32)
    for w, b in layers:
        h = np.maximum(h @ w + b, 0)
    return h


def batch(n: int, width: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


@pytest.fixture
def layers() -> Layers:
    return random_layers([16, 8])


@pytest.fixture
def model(tmp_path: Path, layers: Layers) -> Path:
    return write_mlp(tmp_path / "mlp.onnx", layers)


def loaded(uri: str, **configured: str) -> OnnxBackend:
    backend = OnnxBackend(uri, BackendOptions.of("onnx", uri, configured) if configured else None)
    backend.load()
    return backend


# ---- the model's spec and its answers ------------------------------------------------------------


def test_load_reads_the_spec_from_the_session(model):
    info = OnnxBackend(str(model)).load()
    assert info.spec.inputs == (TensorSpec("input", "float32", (16,)),)
    assert info.spec.outputs == (TensorSpec("output", "float32", (8,)),)
    assert info.max_batch_size is None  # a dynamic batch dimension takes any size


@pytest.mark.parametrize("n", [1, 7, 64])
def test_infer_matches_numpy(model, layers, n):
    backend = loaded(str(model))
    x = batch(n)
    out = backend.infer({"input": x})
    assert set(out) == {"output"}
    assert out["output"].shape == (n, 8) and out["output"].dtype == np.float32
    np.testing.assert_allclose(out["output"], forward(x, layers), rtol=1e-5, atol=1e-5)


def test_a_deeper_model_matches_numpy(tmp_path):
    layers = random_layers([16, 32, 32, 4], seed=3)
    backend = loaded(str(write_mlp(tmp_path / "deep.onnx", layers)))
    x = batch(5)
    np.testing.assert_allclose(backend.infer({"input": x})["output"], forward(x, layers), rtol=1e-5, atol=1e-5)


def test_read_only_input_as_the_executor_joins_it(model, layers):
    # The executor hands over np.frombuffer views of the joined request bytes.
    x = batch(3)
    view = np.frombuffer(x.tobytes(), np.float32).reshape(3, 16)
    assert not view.flags.writeable
    out = loaded(str(model)).infer({"input": view})["output"]
    np.testing.assert_allclose(out, forward(x, layers), rtol=1e-5, atol=1e-5)


def test_default_warm_up_runs_through_the_session(model):
    backend = OnnxBackend(str(model))
    info = backend.load()
    backend.warm_up(info.spec, [1, 2, 4])  # the base class's: zeros through submit/collect


def test_io_binding_gives_the_same_answers(model, layers):
    x = batch(9)
    out = loaded(f"{model}?io_binding=true").infer({"input": x})["output"]
    np.testing.assert_allclose(out, forward(x, layers), rtol=1e-5, atol=1e-5)


def test_several_inputs_and_outputs_keep_their_names_and_dtypes(tmp_path):
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "a"], ["twice"]),
            helper.make_node("Cast", ["ids"], ["wide"], to=TensorProto.INT64),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT16, ["n", 3]),
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["n", 2, 2]),
        ],
        [
            helper.make_tensor_value_info("twice", TensorProto.FLOAT16, ["n", 3]),
            helper.make_tensor_value_info("wide", TensorProto.INT64, ["n", 2, 2]),
        ],
    )
    backend = OnnxBackend(str(save(tmp_path / "two.onnx", graph)))
    info = backend.load()
    assert info.spec.inputs == (TensorSpec("a", "float16", (3,)), TensorSpec("ids", "int32", (2, 2)))
    assert info.spec.outputs == (TensorSpec("twice", "float16", (3,)), TensorSpec("wide", "int64", (2, 2)))
    a, ids = np.ones((2, 3), np.float16), np.arange(8, dtype=np.int32).reshape(2, 2, 2)
    out = backend.infer({"ids": ids, "a": a})
    np.testing.assert_array_equal(out["twice"], a * 2)
    assert out["wide"].dtype == np.int64
    np.testing.assert_array_equal(out["wide"], ids)


@pytest.mark.parametrize("form", ["path", "file", "onnx"])
def test_a_path_a_file_uri_and_an_onnx_uri_name_the_same_model(model, layers, form):
    uri = {"path": str(model), "file": model.as_uri(), "onnx": f"onnx:{model}"}[form]
    x = batch(2)
    out = loaded(f"{uri}?intra_op_threads=1").infer({"input": x})["output"]
    np.testing.assert_allclose(out, forward(x, layers), rtol=1e-5, atol=1e-5)


def test_close_releases_the_session(model):
    backend = loaded(str(model))
    backend.close()
    with pytest.raises(BackendError, match="before load \\(or after close\\)"):
        backend.infer({"input": batch(1)})


# ---- options -------------------------------------------------------------------------------------


def session_options(backend: OnnxBackend) -> ort.SessionOptions:
    assert backend._session is not None  # what ORT was given is only readable from its session
    return backend._session.get_session_options()


def test_defaults_leave_threads_to_ort_and_optimize_everything(model):
    options = session_options(loaded(str(model)))
    assert options.intra_op_num_threads == 0 and options.inter_op_num_threads == 0
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_uri_options_reach_the_session(model):
    backend = loaded(f"{model}?intra_op_threads=2&inter_op_threads=2&graph_optimization=basic")
    options = session_options(backend)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL  # inter-op threads need it
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_configured_options_win_over_the_uri(model):
    backend = loaded(f"{model}?intra_op_threads=2", intra_op_threads="1", graph_optimization="disable")
    options = session_options(backend)
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


@pytest.mark.parametrize("providers", ["CPUExecutionProvider", "cpu", " CPUExecutionProvider , "])
def test_the_cpu_provider_by_name_or_alias(model, providers):
    backend = loaded(str(model), providers=providers)
    assert backend._session is not None and backend._session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    "query, words",
    [
        ("intra_op_threads=two", "sidecar.backend.onnx.intra_op_threads: 'two' is not an integer"),
        ("intra_op_threads=-1", "sidecar.backend.onnx.intra_op_threads: -1 is below the least allowed, 0"),
        ("inter_op_threads=1.5", "sidecar.backend.onnx.inter_op_threads: '1.5' is not an integer"),
        ("graph_optimization=max", "sidecar.backend.onnx.graph_optimization: 'max' is not one of disable, basic"),
        ("io_binding=maybe", "sidecar.backend.onnx.io_binding: 'maybe' is not true or false"),
        ("providers=", "sidecar.backend.onnx.providers: empty"),
        ("threads=2", "unknown option(s) 'threads'; known: " + ", ".join(OPTIONS)),
    ],
)
def test_bad_options_name_the_key(model, query, words):
    with pytest.raises(BackendError) as err:
        OnnxBackend(f"{model}?{query}").load()
    assert words in str(err.value)


def test_an_unknown_provider_lists_those_available(model):
    with pytest.raises(BackendError) as err:
        loaded(str(model), providers="NoSuchExecutionProvider,cpu")
    message = str(err.value)
    assert message.startswith("sidecar.backend.onnx.providers: NoSuchExecutionProvider not available")
    assert f"available: {', '.join(ort.get_available_providers())}" in message
    assert "onnxruntime-gpu" not in message


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a GPU build of onnxruntime")
def test_cuda_on_a_cpu_only_onnxruntime_names_the_gpu_package(model):
    with pytest.raises(BackendError) as err:
        loaded(str(model), providers="cuda,cpu")
    message = str(err.value)
    assert "sidecar.backend.onnx.providers: CUDAExecutionProvider not available" in message
    assert "CPUExecutionProvider" in message and "onnxruntime-gpu" in message


# ---- models and files it refuses -----------------------------------------------------------------


def test_a_fixed_batch_dimension_is_refused_with_a_fix(tmp_path):
    path = write_mlp(tmp_path / "fixed.onnx", random_layers([16, 8]), input_shape=[4, 16])
    with pytest.raises(BackendError) as err:
        OnnxBackend(str(path)).load()
    message = str(err.value)
    assert "input 'input' has a fixed batch dimension, shape [4, 16]" in message
    assert "re-export the model with a dynamic first axis" in message


def test_a_dynamic_per_item_dimension_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["tokens"], ["out"])],
        "seq",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq"])],
    )
    with pytest.raises(BackendError) as err:
        OnnxBackend(str(save(tmp_path / "seq.onnx", graph))).load()
    assert "input 'tokens' has shape ['batch', 'seq']; every dimension after the batch must be fixed" in str(err.value)


def test_a_scalar_input_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    with pytest.raises(BackendError, match="input 'x' has shape \\[\\]: no leading batch dimension"):
        OnnxBackend(str(save(tmp_path / "scalar.onnx", graph))).load()


def test_an_unsupported_element_type_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["words"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("words", TensorProto.STRING, ["batch", 2])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch", 2])],
    )
    with pytest.raises(BackendError) as err:
        OnnxBackend(str(save(tmp_path / "strings.onnx", graph))).load()
    assert "input 'words' has type tensor(string), which the sidecar does not carry" in str(err.value)
    assert "supported: tensor(float), tensor(float16)" in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(BackendError) as err:
        OnnxBackend(f"{path}?intra_op_threads=1").load()
    assert str(err.value) == f"onnx backend: model file {str(path)!r} does not exist"


def test_a_directory_is_not_a_model(tmp_path):
    with pytest.raises(BackendError, match="is not a file"):
        OnnxBackend(str(tmp_path)).load()


def test_a_corrupt_file_is_named_with_the_reason(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(BackendError) as err:
        OnnxBackend(str(path)).load()
    message = str(err.value)
    assert message.startswith(f"onnx backend: cannot load model file {str(path)!r}: ")
    assert "Protobuf parsing failed" in message
    assert "[ONNXRuntimeError]" not in message and message.count(str(path)) == 1  # ORT's prefix and echo cut
    assert len(message) < 400


def test_a_remote_uri_is_refused():
    with pytest.raises(BackendError, match="'https://example.com/m.onnx' is neither a path nor a file:// URI"):
        OnnxBackend("https://example.com/m.onnx").load()


def test_without_onnxruntime_the_registry_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    monkeypatch.delitem(sys.modules, "sidecar.backends.onnx")
    with pytest.raises(BackendError) as err:
        registry.backend_class("onnx")
    assert "install it with: pip install 'gpu-sidecar[onnx]'" in str(err.value)
