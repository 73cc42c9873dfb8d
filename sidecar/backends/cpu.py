"""A real model on the CPU: a numpy MLP, ReLU between layers, softmax on the output.

Model URIs:
    "" or "cpu:"                      seeded weights, seed 0, layer sizes 16,64,16
    "cpu:?seed=7&sizes=16,64,16"      seeded weights, He-scaled normal, zero biases
    "/path/model.npz", "file:///...npz"  arrays w0,b0,w1,b1,... (w_i (in,out), b_i (out,))

Input "input" float32 (in,); output "output" float32 (out,). Computed in float32,
so results match what a float32 GPU model would give, not a float64 reference.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit
from urllib.request import url2pathname

import numpy as np

from sidecar.backends.base import Backend, BackendError, BackendInfo, BackendOptions
from sidecar.core.tensors import ModelSpec, TensorSpec

DEFAULT_SIZES = (16, 64, 16)

Layers = list[tuple[np.ndarray, np.ndarray]]


class CpuBackend(Backend):
    name = "cpu"

    def __init__(self, model_uri: str, options: BackendOptions | None = None) -> None:
        super().__init__(model_uri, options)
        self._layers: Layers = []

    def load(self) -> BackendInfo:
        path = _npz_path(self.model_uri)
        self._layers = _read_npz(path) if path is not None else _seeded(*_seeded_options(self.model_uri))
        n_in, n_out = self._layers[0][0].shape[0], self._layers[-1][0].shape[1]
        return BackendInfo(
            ModelSpec(
                inputs=(TensorSpec("input", "float32", (n_in,)),),
                outputs=(TensorSpec("output", "float32", (n_out,)),),
            )
        )

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = np.asarray(inputs["input"], dtype=np.float32)
        for i, (w, b) in enumerate(self._layers):
            x = x @ w + b
            if i < len(self._layers) - 1:
                np.maximum(x, 0, out=x)
        x -= x.max(axis=1, keepdims=True)  # exp of large logits would overflow
        np.exp(x, out=x)
        x /= x.sum(axis=1, keepdims=True)
        return {"output": x}

    def close(self) -> None:
        self._layers = []


def _npz_path(model_uri: str) -> str | None:
    if model_uri.startswith("file://"):
        return url2pathname(urlsplit(model_uri).path)
    return model_uri if model_uri.endswith(".npz") else None


def _seeded_options(model_uri: str) -> tuple[int, tuple[int, ...]]:
    parts = urlsplit(model_uri)
    if parts.scheme not in ("", "cpu") or parts.path:
        raise BackendError(
            f"cpu backend: model URI {model_uri!r} is neither 'cpu:?seed=0&sizes=16,64,16' nor a path to a .npz file"
        )
    seed, sizes = 0, DEFAULT_SIZES
    for key, text in parse_qsl(parts.query, keep_blank_values=True):
        try:
            if key == "seed":
                seed = int(text)
                if seed < 0:
                    raise ValueError
            elif key == "sizes":
                sizes = tuple(int(s) for s in text.split(","))
                if len(sizes) < 2 or min(sizes) < 1:
                    raise ValueError
            else:
                raise BackendError(f"cpu backend: unknown option {key!r} (value {text!r}); allowed: seed, sizes")
        except ValueError:
            allowed = "an integer >= 0" if key == "seed" else "two or more comma-separated integers >= 1"
            raise BackendError(f"cpu backend: option {key}={text!r} is invalid; expected {allowed}") from None
    return seed, sizes


def _seeded(seed: int, sizes: tuple[int, ...]) -> Layers:
    rng = np.random.default_rng(seed)
    return [
        ((rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32), np.zeros(n_out, np.float32))
        for n_in, n_out in zip(sizes, sizes[1:])
    ]


def _read_npz(path: str) -> Layers:
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise BackendError(f"cpu backend: model file {path!r} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise BackendError(f"cpu backend: cannot read model file {path!r}: {e}") from None
    layers: Layers = []
    while f"w{len(layers)}" in arrays:
        i = len(layers)
        w, b = arrays.pop(f"w{i}"), arrays.pop(f"b{i}", None)
        if b is None:
            raise BackendError(f"cpu backend: {path!r} has w{i} but no b{i}")
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise BackendError(
                f"cpu backend: {path!r}: w{i} {list(w.shape)} and b{i} {list(b.shape)} do not form a layer;"
                f" expected w{i} (in, out) and b{i} (out,)"
            )
        if layers and layers[-1][0].shape[1] != w.shape[0]:
            raise BackendError(
                f"cpu backend: {path!r}: w{i-1} outputs {layers[-1][0].shape[1]} values but w{i} takes {w.shape[0]}"
            )
        if not (np.issubdtype(w.dtype, np.number) and np.issubdtype(b.dtype, np.number)):
            raise BackendError(f"cpu backend: {path!r}: w{i}/b{i} are {w.dtype}/{b.dtype}, not numbers")
        layers.append((w.astype(np.float32), b.astype(np.float32)))
    if not layers:
        raise BackendError(f"cpu backend: {path!r} has no array 'w0'; expected w0,b0,w1,b1,...")
    if arrays:
        extra = sorted(arrays)
        raise BackendError(f"cpu backend: {path!r} has unexpected arrays {extra} after layer {len(layers) - 1}")
    return layers
