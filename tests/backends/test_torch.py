"""The PyTorch backend: TorchScript files and torch.export programs, on the CPU here
and on CUDA where a GPU exists (those tests skip elsewhere: nothing is faked)."""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

# The torch extra (in dev); the flink environment in CI goes without it.
torch = pytest.importorskip("torch", reason="needs the torch extra: pip install -e '.[torch]'")

import sidecar.backends.torch as torch_backend
from sidecar.backends import registry
from sidecar.backends.base import BackendError, BackendOptions
from sidecar.backends.torch import TorchBackend
from sidecar.core.tensors import ModelSpec, TensorSpec

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: unverified here")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")

URI_OPTIONS = "inputs=input:float32:16"

# torch 2.13 deprecates TorchScript (each jit call warns); serving existing files is the point here.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


def small_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    module = small_module()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    return path, module


class TwoHeads(torch.nn.Module):
    """Two inputs of two dtypes, a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = torch.nn.Linear(16, 8)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": torch.relu(self.linear(x)), "doubled": ids * 2}


def export(tmp_path: Path, module: torch.nn.Module, args: tuple, dynamic: dict | None, name: str = "model.pt2") -> Path:
    path = tmp_path / name
    torch.export.save(torch.export.export(module, args, dynamic_shapes=dynamic), str(path))
    return path


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    module = small_module()
    return export(tmp_path, module, (torch.zeros(4, 16),), {"input": {0: torch.export.Dim("batch")}}), module


def batch(n: int, width: int = 16, seed: int = 2) -> np.ndarray:
    """Read-only, as the executor's joined request bytes are."""
    x = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    return np.frombuffer(x.tobytes(), np.float32).reshape(n, width)


def reference(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.tensor(x)).numpy()


def loaded(uri: str, **configured: str) -> TorchBackend:
    backend = TorchBackend(uri, BackendOptions.of("torch", uri, configured)) if configured else TorchBackend(uri)
    backend.load()
    return backend


def refusal(uri: str, **configured: str) -> str:
    with pytest.raises(BackendError) as err:
        loaded(uri, **configured)
    return str(err.value)


# --- what load reports -------------------------------------------------------------


def test_module_named_torch_imports_the_real_torch():
    # sidecar/backends/torch.py shares the package's name: absolute imports must still find the package.
    assert torch_backend.torch is torch and torch.__name__ == "torch"
    assert Path(torch.__file__).parent != Path(torch_backend.__file__).parent and hasattr(torch, "jit")


def test_registry_maps_torch_to_this_backend(scripted):
    assert registry.backend_class("torch") is TorchBackend
    assert TorchBackend.extra == "torch"
    assert isinstance(registry.create("torch", f"{scripted[0]}?{URI_OPTIONS}"), TorchBackend)


def test_torchscript_spec_comes_from_the_inputs_option_and_a_batch_of_one(scripted):
    backend = TorchBackend(f"{scripted[0]}?{URI_OPTIONS}")
    info = backend.load()
    assert info.spec == ModelSpec(
        inputs=(TensorSpec("input", "float32", (16,)),), outputs=(TensorSpec("output", "float32", (8,)),)
    )
    assert info.max_batch_size is None
    assert backend.pipelined is False


def test_outputs_option_names_the_outputs(scripted):
    backend = TorchBackend(f"{scripted[0]}?{URI_OPTIONS}&outputs=probs:float32:8")
    assert backend.load().spec.outputs == (TensorSpec("probs", "float32", (8,)),)
    assert set(backend.infer({"input": batch(2)})) == {"probs"}


@pytest.mark.parametrize("how", ["path", "file-uri", "torch-scheme"])
def test_torchscript_outputs_match_the_module_run_directly(scripted, how):
    path, module = scripted
    uri = {"path": str(path), "file-uri": path.as_uri(), "torch-scheme": f"torch:{path}"}[how]
    backend = loaded(f"{uri}?{URI_OPTIONS}")
    x = batch(7)
    out = backend.infer({"input": x})["output"]
    assert out.shape == (7, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(module, x), rtol=1e-5, atol=1e-6)


def test_every_batch_size_matches_and_warm_up_runs(scripted):
    path, module = scripted
    backend = TorchBackend(f"{path}?{URI_OPTIONS}")
    info = backend.load()
    backend.warm_up(info.spec, [1, 2, 4, 16])
    for n in (1, 3, 16, 33):
        x = batch(n, seed=n)
        np.testing.assert_allclose(backend.infer({"input": x})["output"], reference(module, x), rtol=1e-5, atol=1e-6)


def test_read_only_input_is_left_untouched_even_by_a_model_writing_in_place(tmp_path):
    class InPlace(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mul_(2)

    path = tmp_path / "inplace.pt"
    torch.jit.save(torch.jit.script(InPlace()), str(path))
    backend = loaded(f"{path}?inputs=x:float32:4")
    x = np.frombuffer(np.ones(8, np.float32).tobytes(), np.float32).reshape(2, 4)
    np.testing.assert_array_equal(backend.infer({"x": x})["output"], 2.0)
    np.testing.assert_array_equal(x, 1.0)


def test_cpu_input_buffers_are_writable_and_shared_with_no_copy(scripted):
    path, module = scripted
    backend = loaded(f"{path}?{URI_OPTIONS}")
    buffers = backend.input_buffers(3)
    assert set(buffers) == {"input"}
    buf = buffers["input"]
    assert buf.shape == (3, 16) and buf.dtype == np.float32 and buf.flags.writeable and buf.flags.c_contiguous
    buf[:] = batch(3)
    out = backend.collect(backend.submit(buffers))["output"]
    np.testing.assert_allclose(out, reference(module, buf), rtol=1e-5, atol=1e-6)


def test_tuple_outputs_are_numbered_and_scalar_items_allowed(tmp_path):
    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x + 1, x.sum(dim=1)

    path = tmp_path / "pair.pt"
    torch.jit.save(torch.jit.script(Pair()), str(path))
    backend = TorchBackend(f"{path}?inputs=x:float32:2x3")
    assert backend.load().spec.outputs == (
        TensorSpec("output_0", "float32", (2, 3)),
        TensorSpec("output_1", "float32", (3,)),
    )
    out = backend.infer({"x": np.ones((4, 2, 3), np.float32)})
    np.testing.assert_array_equal(out["output_0"], 2.0)
    np.testing.assert_array_equal(out["output_1"], 2.0)


# --- torch.export programs -----------------------------------------------------------


def test_exported_program_spec_is_read_from_the_program(exported):
    path, module = exported
    backend = TorchBackend(str(path))
    info = backend.load()
    assert info.spec == ModelSpec(
        inputs=(TensorSpec("input", "float32", (16,)),), outputs=(TensorSpec("output", "float32", (8,)),)
    )
    assert info.max_batch_size is None
    for n in (1, 5, 32):
        x = batch(n, seed=n)
        np.testing.assert_allclose(backend.infer({"input": x})["output"], reference(module, x), rtol=1e-5, atol=1e-6)


def test_exported_program_with_two_inputs_and_a_dict_and_a_batch_limit(tmp_path):
    dim = torch.export.Dim("batch", max=64)
    args = (torch.zeros(2, 16), torch.zeros(2, 3, dtype=torch.int64))
    path = export(tmp_path, TwoHeads().eval(), args, {"x": {0: dim}, "ids": {0: dim}}, name="heads.bin")
    backend = TorchBackend(str(path))  # not named .pt2: read from a file object
    info = backend.load()
    assert info.spec.inputs == (TensorSpec("x", "float32", (16,)), TensorSpec("ids", "int64", (3,)))
    assert info.spec.outputs == (TensorSpec("scores", "float32", (8,)), TensorSpec("doubled", "int64", (3,)))
    assert info.max_batch_size == 64
    x, ids = batch(5), np.arange(15, dtype=np.int64).reshape(5, 3)
    out = backend.infer({"x": x, "ids": ids})
    with torch.no_grad():
        want = TwoHeads().eval()(torch.tensor(x), torch.tensor(ids))
    np.testing.assert_allclose(out["scores"], want["scores"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["doubled"], ids * 2)

    # The outputs option orders a dict's outputs by key.
    reordered = TorchBackend(f"{path}?outputs=doubled:int64:3,scores:float32:8")
    assert [s.name for s in reordered.load().spec.outputs] == ["doubled", "scores"]


def test_exported_program_with_a_fixed_batch_of_one_limits_batches_to_one(tmp_path):
    path = export(tmp_path, small_module(), (torch.zeros(1, 16),), None)
    assert TorchBackend(str(path)).load().max_batch_size == 1


def test_exported_program_with_a_fixed_larger_batch_is_refused(tmp_path):
    path = export(tmp_path, small_module(), (torch.zeros(4, 16),), None)
    message = refusal(str(path))
    assert "fixed batch of 4" in message and "Dim('batch')" in message


def test_exported_program_dynamic_item_dim_needs_the_inputs_option(tmp_path):
    class Mean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=1)

    dynamic = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("length")}}
    path = export(tmp_path, Mean(), (torch.zeros(2, 5, 4),), dynamic)
    assert "sidecar.backend.torch.inputs: needed: input 'x' has dynamic dims" in refusal(str(path))
    backend = TorchBackend(f"{path}?inputs=x:float32:7x4")
    assert backend.load().spec.inputs == (TensorSpec("x", "float32", (7, 4)),)
    assert "the program takes 'x' as float32" in refusal(f"{path}?inputs=x:float32:7x5")
    assert "but the program takes ['x']" in refusal(f"{path}?inputs=y:float32:7x4")


# --- options ---------------------------------------------------------------------------


def test_threads_option_sets_the_count_in_the_thread_that_runs_batches(scripted):
    path, module = scripted
    before, seen = torch.get_num_threads(), {}

    def executor_thread() -> None:
        backend = loaded(f"{path}?{URI_OPTIONS}&threads=1")
        x = batch(4)
        seen["out"] = backend.infer({"input": x})["output"]
        seen["threads"] = torch.get_num_threads()

    t = threading.Thread(target=executor_thread)
    t.start()
    t.join()
    assert seen["threads"] == 1
    assert torch.get_num_threads() == before  # torch's count is per thread: the test's own is untouched
    np.testing.assert_allclose(seen["out"], reference(module, batch(4)), rtol=1e-5, atol=1e-6)


def test_configured_options_override_the_uri(scripted):
    path, _ = scripted
    message = refusal(f"{path}?{URI_OPTIONS}&threads=2", threads="-1")
    assert message == "sidecar.backend.torch.threads: -1 is below the least allowed, 0"


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_device_is_refused_clearly_without_a_gpu(scripted, device):
    message = refusal(f"{scripted[0]}?{URI_OPTIONS}&device={device}")
    assert message.startswith(f"sidecar.backend.torch.device: '{device}' asked for, but torch")
    assert "sees no CUDA device" in message


@pytest.mark.parametrize(
    "query, words",
    [
        ("device=tpu", "sidecar.backend.torch.device: 'tpu' is not cpu, cuda or cuda:N"),
        ("device=cuda:x", "sidecar.backend.torch.device: 'cuda:x' is not cpu, cuda or cuda:N"),
        ("threads=two", "sidecar.backend.torch.threads: 'two' is not an integer"),
        ("precision=float8", "sidecar.backend.torch.precision: 'float8' is not one of float32, float16, bfloat16"),
        ("batch=4", "unknown option(s) sidecar.backend.torch.batch; known: device, inputs, outputs, precision"),
        ("inputs=input:float32", "sidecar.backend.torch.inputs: 'input:float32' is not name:dtype:dims"),
        ("inputs=:float32:16", "sidecar.backend.torch.inputs: ':float32:16' is not name:dtype:dims"),
        ("inputs=input:float:16", "dtype 'float' is not one of bool, float16, float32"),
        ("inputs=input:float32:16,8", "'8' is not name:dtype:dims"),
        ("inputs=input:float32:0", "dims '0' are not integers >= 1 joined by 'x'"),
        ("inputs=input:float32:4xa", "dims '4xa' are not integers >= 1"),
        ("inputs=input:float32:16,input:float32:16", "sidecar.backend.torch.inputs: 'input' appears more than once"),
        ("inputs=x:float32:16", "sidecar.backend.torch.inputs: names ['x'], but forward takes ['input']"),
        ("inputs=input:float32:15", "failed on a batch of 1 (zeros) of input:float32:15: RuntimeError: mat1 and mat2"),
        (
            f"{URI_OPTIONS}&outputs=output:float32:9",
            "outputs: says output:float32:9, but on a batch of 1 the model returned output:float32:8",
        ),
        (f"{URI_OPTIONS}&outputs=a:float32:8,b:float32:8", "names 2 output(s), but the model returned 1"),
    ],
)
def test_bad_options_are_refused_naming_the_key(scripted, query, words):
    assert words in refusal(f"{scripted[0]}?{query}")


def test_torchscript_without_inputs_option_says_what_forward_takes(scripted):
    message = refusal(str(scripted[0]))
    assert message.startswith("sidecar.backend.torch.inputs: required for a TorchScript file")
    assert "forward takes ['input'], e.g. inputs=input:float32:16" in message


@pytest.mark.parametrize("precision, tolerance", [("bfloat16", 3e-2), ("float16", 3e-3)])
def test_reduced_precision_runs_in_it_and_answers_float32(scripted, precision, tolerance):
    path, module = scripted
    backend = TorchBackend(f"{path}?{URI_OPTIONS}&precision={precision}")
    assert backend.load().spec.outputs == (TensorSpec("output", "float32", (8,)),)
    assert next(backend._model.parameters()).dtype == getattr(torch, precision)
    x = batch(6)
    out = backend.infer({"input": x})["output"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(module, x), rtol=tolerance, atol=tolerance)


# --- files and models that cannot be served -----------------------------------------------


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "absent.pt"
    assert refusal(f"{path}?{URI_OPTIONS}") == f"torch backend: model file {str(path)!r} does not exist"


@pytest.mark.parametrize(
    "write, words",
    [
        (lambda p: p.write_bytes(b"not a model"), "it is not a zip archive"),
        (lambda p: torch.save({"weight": torch.zeros(2)}, str(p)), "it is a torch.save checkpoint"),
        (lambda p: zipfile.ZipFile(p, "w").writestr("a/readme.txt", "hi"), "a zip archive of neither kind"),
    ],
    ids=["junk", "state-dict", "other-zip"],
)
def test_a_file_that_is_no_program_is_refused_naming_it(tmp_path, write, words):
    path = tmp_path / "model.pt"
    write(path)
    message = refusal(f"{path}?{URI_OPTIONS}")
    assert message.startswith(
        f"torch backend: {str(path)!r} is neither a TorchScript file (torch.jit.save) nor a torch.export program: "
    )
    assert words in message


def test_a_truncated_torchscript_file_is_refused_briefly(scripted, tmp_path):
    data = scripted[0].read_bytes()
    cut = tmp_path / "cut.pt"
    with zipfile.ZipFile(scripted[0]) as whole, zipfile.ZipFile(cut, "w") as part:
        for info in whole.infolist():
            if not info.filename.endswith("data.pkl"):
                part.writestr(info, whole.read(info))
    assert len(cut.read_bytes()) < len(data)
    message = refusal(f"{cut}?{URI_OPTIONS}")
    assert message == (
        f"torch backend: cannot load TorchScript file {str(cut)!r}:"
        " PytorchStreamReader failed locating file data.pkl: file not found."
    )


def test_a_uri_of_another_scheme_is_refused():
    assert "is not a path, a file:// URI or torch:/path" in refusal("http://example.com/model.pt")


def test_a_model_returning_something_else_is_refused(tmp_path):
    class Odd(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
            return x, 3

    path = tmp_path / "odd.pt"
    torch.jit.save(torch.jit.script(Odd()), str(path))
    assert "returned a tuple of 2; expected a tensor, a tuple or list of tensors" in refusal(
        f"{path}?inputs=x:float32:2"
    )


def test_an_output_without_a_batch_dim_is_refused(tmp_path):
    class Total(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum()

    path = tmp_path / "total.pt"
    torch.jit.save(torch.jit.script(Total()), str(path))
    assert "output 'output' has shape [] for a batch of 1; its first dim must be the batch" in refusal(
        f"{path}?inputs=x:float32:2"
    )


def test_non_tensor_forward_arguments_are_refused(tmp_path):
    class Scaled(torch.nn.Module):
        def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
            return x * k

    path = tmp_path / "scaled.pt"
    torch.jit.save(torch.jit.script(Scaled()), str(path))
    assert "forward's argument 'k' is int; the sidecar passes tensors only" in refusal(f"{path}?inputs=x:float32:2")


def test_close_drops_the_model(scripted):
    backend = loaded(f"{scripted[0]}?{URI_OPTIONS}")
    backend.close()
    assert backend._model is None


# --- CUDA: run where a GPU exists, skipped (never faked) elsewhere ----------------------------


@NEEDS_CUDA
def test_cuda_outputs_match_the_module_and_batches_overlap(scripted):
    path, module = scripted
    backend = TorchBackend(f"{path}?{URI_OPTIONS}&device=cuda")
    info = backend.load()
    assert backend.pipelined is True and backend._device.type == "cuda"
    assert next(backend._model.parameters()).is_cuda
    backend.warm_up(info.spec, [1, 2, 4, 8])
    # Two batches in flight at once, as the executor runs a pipelined backend: submit
    # N+1 (into fresh pinned buffers) before collecting N.
    handles, inputs = [], []
    for n in (8, 8, 3, 8):
        buffers = backend.input_buffers(n)
        assert torch.from_numpy(buffers["input"]).is_pinned()
        buffers["input"][:] = batch(n, seed=len(inputs))
        inputs.append(buffers["input"].copy())
        handles.append(backend.submit(buffers))
        if len(handles) > 1:
            n_done = len(inputs) - 2
            out = backend.collect(handles[n_done])["output"]
            np.testing.assert_allclose(out, reference(module, inputs[n_done]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        backend.collect(handles[-1])["output"], reference(module, inputs[-1]), rtol=1e-5, atol=1e-5
    )
    # Read-only arrays (the executor's own) are staged through pinned memory.
    x = batch(5)
    np.testing.assert_allclose(backend.infer({"input": x})["output"], reference(module, x), rtol=1e-5, atol=1e-5)
    backend.close()
    assert backend._stream is None and backend._model is None


@NEEDS_CUDA
def test_cuda_exported_program_and_half_precision(exported):
    path, module = exported
    backend = loaded(f"{path}?device=cuda:0")
    x = batch(9)
    np.testing.assert_allclose(backend.infer({"input": x})["output"], reference(module, x), rtol=1e-5, atol=1e-5)
    backend.close()
    half = loaded(f"{path}?device=cuda&precision=float16")
    out = half.infer({"input": x})["output"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(module, x), rtol=3e-3, atol=3e-3)
    half.close()


@NEEDS_CUDA
def test_cuda_index_past_the_devices_is_refused(scripted):
    count = torch.cuda.device_count()
    message = refusal(f"{scripted[0]}?{URI_OPTIONS}&device=cuda:{count}")
    assert f"but this machine has {count} CUDA device(s)" in message
