"""ONNX models through ONNX Runtime.

Model URI: a path or file:// URI to a model file, optionally with options as a
query: "/models/m.onnx?intra_op_threads=2&graph_optimization=basic". The same
options may be set as `sidecar.backend.onnx.<option>` config keys (which win):

    providers           comma list, default CPUExecutionProvider; also cpu, cuda, tensorrt
    intra_op_threads    threads within an operator; 0 (default) lets ORT choose
    inter_op_threads    threads across independent operators; above 1 it turns on
                        ORT's parallel execution mode (without that ORT ignores it)
    graph_optimization  disable, basic, extended or all (default)
    io_binding          run through an IOBinding (default false; see _IO_BINDING_DEFAULT)

Every input and output must lead with a dynamic batch dimension (the sidecar
batches along it) and have a fixed per-item shape after it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np

# At module level on purpose: the registry imports this module only when "onnx" is
# asked for, and turns the ImportError into `pip install 'gpu-sidecar[onnx]'`.
import onnxruntime as ort

from sidecar.backends.base import Backend, BackendError, BackendInfo, BackendOptions
from sidecar.backends.uri import file_path
from sidecar.core.tensors import ModelSpec, TensorSpec

# ORT's element type names -> the sidecar's (sidecar.core.tensors.DTYPES).
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

OPTIONS = ("graph_optimization", "inter_op_threads", "intra_op_threads", "io_binding", "providers")

# Off on every provider, because in this pipeline (numpy in, numpy out) it saves
# no copy. Measured on the CPU provider (ORT 1.32, one thread, median per call):
# session.run() reads a numpy input in place (a 64 MB read-only input cost 5 us, its
# np.copy 5 ms) and returns outputs that wrap ORT's own buffer, so there is nothing
# to save; an IOBinding made per call only adds ~2 us (16->8 MLP: 3.5 vs 5.4 us;
# 256->256->256 at batch 32: 39.7 vs 42.3 us). On CUDA/TensorRT it was not measured
# here (no GPU build of ORT): with host inputs and host outputs, run() and an
# IOBinding make the same one host-to-device and one device-to-host copy per tensor
# (microsoft/onnxruntime#18475 reports no gain in that case). Left as an option so
# that a GPU host can measure it with `gpu-sidecar bench`.
_IO_BINDING_DEFAULT = False


class OnnxBackend(Backend):
    name = "onnx"
    extra = "onnx"

    def __init__(self, model_uri: str, options: BackendOptions | None = None) -> None:
        super().__init__(model_uri, options)
        self._session: ort.InferenceSession | None = None
        self._io_binding = _IO_BINDING_DEFAULT
        self._input_names: list[str] = []
        self._output_names: list[str] = []

    def load(self) -> BackendInfo:
        unknown = self.options.unknown(set(OPTIONS))
        if unknown:
            raise BackendError(
                f"onnx backend: unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(OPTIONS)}"
                " (set as sidecar.backend.onnx.<option> or in the model URI's query)"
            )
        providers = self._providers()
        session_options = self._session_options()
        self._io_binding = self.options.flag("io_binding", _IO_BINDING_DEFAULT)
        path = model_path(self.model_uri)
        if not os.path.exists(path):
            raise BackendError(f"onnx backend: model file {path!r} does not exist")
        if not os.path.isfile(path):
            raise BackendError(f"onnx backend: model path {path!r} is not a file")
        try:
            session = ort.InferenceSession(path, session_options, providers=list(providers))
        except Exception as e:  # noqa: BLE001 - ORT's errors (InvalidProtobuf, Fail, ...) share no narrower base
            raise BackendError(f"onnx backend: cannot load model file {path!r}: {_reason(e, path)}") from None
        # ORT falls back to the CPU, with only a log line, when a device provider
        # fails to start (a missing CUDA library, say): refuse rather than run slowly.
        missing = [p for p in providers if p not in session.get_providers()]
        if missing:
            raise BackendError(
                f"onnx backend: provider(s) {', '.join(missing)} failed to start (see onnxruntime's log above);"
                f" the session would run on {', '.join(session.get_providers())}"
            )
        spec = ModelSpec(
            inputs=tuple(_tensor_spec("input", a) for a in session.get_inputs()),
            outputs=tuple(_tensor_spec("output", a) for a in session.get_outputs()),
        )
        if not spec.inputs:
            raise BackendError(f"onnx backend: model {path!r} has no inputs; there is nothing to batch along")
        self._session = session
        self._input_names = [s.name for s in spec.inputs]
        self._output_names = [s.name for s in spec.outputs]
        return BackendInfo(spec, max_batch_size=None)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        session = self._session
        if session is None:
            raise BackendError("onnx backend: infer called before load (or after close)")
        feeds = {name: inputs[name] for name in self._input_names}
        try:
            if self._io_binding:
                outputs = self._run_bound(session, feeds)
            else:
                outputs = session.run(self._output_names, feeds)
        except Exception as e:  # noqa: BLE001 - as above; a run failure (out of memory, say) is the batch's error
            raise BackendError(f"onnx backend: run failed: {_reason(e)}") from None
        return dict(zip(self._output_names, outputs))

    def _run_bound(self, session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self._output_names:
            binding.bind_output(name, "cpu")  # a device provider copies its result straight to the host
        session.run_with_iobinding(binding)
        # OrtValue.numpy() wraps a host output in place; copy_outputs_to_cpu() would copy it.
        return [value.numpy() for value in binding.get_outputs()]

    def close(self) -> None:
        self._session = None  # ORT frees the session (and its device memory) with the last reference

    def _providers(self) -> tuple[str, ...]:
        asked = self.options.items_list("providers", ("CPUExecutionProvider",))
        if not asked:
            raise BackendError("sidecar.backend.onnx.providers: empty; name at least one, e.g. CPUExecutionProvider")
        providers = tuple(_PROVIDER_ALIASES.get(p.lower(), p) for p in asked)
        available = ort.get_available_providers()
        absent = [p for p in providers if p not in available]
        if absent:
            gpu = any(p in _GPU_PROVIDERS for p in absent)
            raise BackendError(
                f"sidecar.backend.onnx.providers: {', '.join(absent)} not available in this onnxruntime"
                f" ({ort.__version__}, {ort.get_device()}); available: {', '.join(available)}"
                + (" (CUDA and TensorRT need the onnxruntime-gpu package in place of onnxruntime)" if gpu else "")
            )
        return providers

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.options.integer("intra_op_threads", 0, minimum=0)
        inter = self.options.integer("inter_op_threads", 0, minimum=0)
        options.inter_op_num_threads = inter
        if inter > 1:
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        level = self.options.choice("graph_optimization", "all", tuple(_OPTIMIZATION))
        options.graph_optimization_level = _OPTIMIZATION[level]
        return options


def model_path(model_uri: str) -> str:
    """The file a model URI names: a plain path, `file://` or `onnx:`, its query dropped."""
    path = file_path(model_uri, "onnx")
    if path is None:
        raise BackendError(f"onnx backend: model URI {model_uri!r} is neither a path nor a file:// URI")
    return path


def _tensor_spec(kind: str, arg: ort.NodeArg) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise BackendError(
            f"onnx backend: {kind} {arg.name!r} has type {arg.type}, which the sidecar does not carry;"
            f" supported: {', '.join(_DTYPES)}"
        )
    shape = list(arg.shape or [])
    if not shape:
        raise BackendError(
            f"onnx backend: {kind} {arg.name!r} has shape {shape}: no leading batch dimension to batch along"
        )
    if not _dynamic(shape[0]):
        raise BackendError(
            f"onnx backend: {kind} {arg.name!r} has a fixed batch dimension, shape {shape}; the sidecar"
            f" batches along the first dimension, so it must be dynamic: re-export the model with a dynamic"
            f" first axis (torch.onnx.export(..., dynamic_axes={{{arg.name!r}: {{0: 'batch'}}}}))"
        )
    per_item = shape[1:]
    if any(_dynamic(d) for d in per_item):
        raise BackendError(
            f"onnx backend: {kind} {arg.name!r} has shape {shape}; every dimension after the batch must be"
            " fixed (requests are checked and joined by their per-item shape): re-export with a static shape"
        )
    return TensorSpec(arg.name, dtype, tuple(per_item))


def _dynamic(dim: object) -> bool:
    # ORT reports a symbolic dimension by its name, an unnamed one as None (or, from
    # some exporters, -1).
    return dim is None or isinstance(dim, str) or (isinstance(dim, int) and dim < 0)


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def _reason(e: Exception, path: str | None = None) -> str:
    """ORT's message without its error-code prefix and its echo of the path, cut short."""
    text = _ORT_PREFIX.sub("", str(e).strip())
    if path is not None:
        text = text.replace(f"Load model from {path} failed:", "")
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
