"""The CPU backend: a numpy MLP from seeded weights or an .npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sidecar.backends.base import BackendError
from sidecar.backends.cpu import CpuBackend
from sidecar.core.tensors import TensorSpec


def forward(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The reference: the textbook MLP, written out independently of the backend."""
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float32) + b.astype(np.float32)
        if i < len(layers) - 1:
            h = np.where(h > 0, h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_npz(path: Path, layers: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    arrays = {}
    for i, (w, b) in enumerate(layers):
        arrays[f"w{i}"], arrays[f"b{i}"] = w, b
    np.savez(path, **arrays)
    return path


def random_layers(sizes: list[int], seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((a, b)), rng.standard_normal(b)) for a, b in zip(sizes, sizes[1:])]


def inputs(n: int, width: int, seed: int = 2) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)}


@pytest.mark.parametrize("uri", ["", "cpu:"])
def test_default_model_maps_16_inputs_to_16_probabilities(uri):
    backend = CpuBackend(uri)
    info = backend.load()
    assert info.spec.inputs == (TensorSpec("input", "float32", (16,)),)
    assert info.spec.outputs == (TensorSpec("output", "float32", (16,)),)
    out = backend.infer(inputs(8, 16))["output"]
    assert out.shape == (8, 16) and out.dtype == np.float32
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_sizes_option_sets_the_layer_widths():
    info = CpuBackend("cpu:?sizes=5,7,3,2").load()
    assert info.spec.inputs[0].shape == (5,) and info.spec.outputs[0].shape == (2,)


def test_same_seed_gives_same_outputs_across_instances():
    a, b = CpuBackend("cpu:?seed=7"), CpuBackend("cpu:?seed=7")
    a.load(), b.load()
    x = inputs(4, 16)
    np.testing.assert_array_equal(a.infer(x)["output"], b.infer(x)["output"])


def test_different_seeds_give_different_outputs():
    a, b = CpuBackend("cpu:?seed=1"), CpuBackend("cpu:?seed=2")
    a.load(), b.load()
    x = inputs(4, 16)
    assert not np.allclose(a.infer(x)["output"], b.infer(x)["output"])


def test_npz_model_matches_a_hand_written_forward_pass(tmp_path):
    layers = random_layers([6, 10, 8, 4])
    backend = CpuBackend(str(write_npz(tmp_path / "m.npz", layers)))
    info = backend.load()
    assert info.spec.inputs[0].shape == (6,) and info.spec.outputs[0].shape == (4,)
    x = inputs(5, 6)
    np.testing.assert_allclose(backend.infer(x)["output"], forward(x["input"], layers), rtol=1e-5, atol=1e-7)


def test_single_layer_npz_is_plain_softmax_regression(tmp_path):
    layers = random_layers([3, 2])
    backend = CpuBackend(str(write_npz(tmp_path / "m.npz", layers)))
    backend.load()
    x = inputs(2, 3)
    np.testing.assert_allclose(backend.infer(x)["output"], forward(x["input"], layers), rtol=1e-5, atol=1e-7)


def test_file_uri_loads_the_same_model_as_the_path(tmp_path):
    path = write_npz(tmp_path / "m.npz", random_layers([4, 3]))
    by_path, by_uri = CpuBackend(str(path)), CpuBackend(path.as_uri())
    by_path.load(), by_uri.load()
    x = inputs(3, 4)
    np.testing.assert_array_equal(by_path.infer(x)["output"], by_uri.infer(x)["output"])


def test_large_logits_do_not_overflow(tmp_path):
    layers = [(np.full((2, 3), 1000.0), np.array([0.0, 1.0, 2.0]))]
    backend = CpuBackend(str(write_npz(tmp_path / "m.npz", layers)))
    backend.load()
    out = backend.infer({"input": np.ones((1, 2), np.float32)})["output"]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_read_only_input_is_not_modified():
    backend = CpuBackend("cpu:")
    backend.load()
    x = np.frombuffer(np.ones(16, np.float32).tobytes(), np.float32).reshape(1, 16)
    backend.infer({"input": x})
    np.testing.assert_array_equal(x, 1.0)


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"b0": np.zeros(2)}, "no array 'w0'"),
        ({"w0": np.zeros((2, 3))}, "w0 but no b0"),
        ({"w0": np.zeros((2, 3)), "b0": np.zeros(2)}, "w0 [2, 3] and b0 [2] do not form a layer"),
        ({"w0": np.zeros(3), "b0": np.zeros(3)}, "expected w0 (in, out)"),
        (
            {"w0": np.zeros((2, 3)), "b0": np.zeros(3), "w1": np.zeros((4, 1)), "b1": np.zeros(1)},
            "w0 outputs 3 values but w1 takes 4",
        ),
        ({"w0": np.zeros((2, 3)), "b0": np.zeros(3), "w2": np.zeros((3, 1))}, "unexpected arrays ['w2']"),
        ({"w0": np.array([["a"]]), "b0": np.zeros(1)}, "not numbers"),
    ],
)
def test_bad_npz_files_are_explained(tmp_path, arrays, words):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(BackendError) as err:
        CpuBackend(str(path)).load()
    assert words in str(err.value)


def test_missing_npz_file_is_named(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(BackendError, match="does not exist") as err:
        CpuBackend(str(path)).load()
    assert str(path) in str(err.value)


def test_corrupt_npz_file_is_reported(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(BackendError, match="cannot read model file"):
        CpuBackend(str(path)).load()


@pytest.mark.parametrize(
    "uri, words",
    [
        ("cpu:?depth=3", "unknown option 'depth' (value '3'); allowed: seed, sizes"),
        ("cpu:?seed=-1", "seed='-1' is invalid; expected an integer >= 0"),
        ("cpu:?seed=x", "seed='x' is invalid"),
        ("cpu:?sizes=16", "sizes='16' is invalid; expected two or more comma-separated integers >= 1"),
        ("cpu:?sizes=16,0", "sizes='16,0' is invalid"),
        ("model.onnx", "neither 'cpu:?seed=0&sizes=16,64,16' nor a path to a .npz file"),
    ],
)
def test_bad_uris_are_explained(uri, words):
    with pytest.raises(BackendError) as err:
        CpuBackend(uri).load()
    assert words in str(err.value)
