"""PyTorch models: a TorchScript file (`torch.jit.save`) or a `torch.export` program
(`torch.export.save`, usually `.pt2`), on the CPU or one CUDA device.

Model URIs: "/path/model.pt", "file:///path/model.pt2" or "torch:/path/model.pt",
each with options in its query (or as `sidecar.backend.torch.<option>` config keys):

    device     cpu (default), cuda or cuda:N (only where torch sees a CUDA device)
    threads    intra-op threads for this instance; 0 (default) leaves torch's
    precision  float32 (default), float16 or bfloat16: floating-point parameters
               and inputs are cast to it, floating-point outputs come back float32
    inputs     the input tensors, name:dtype:dims,... with dims per item (no batch
               dim), "x" between them, empty for a scalar: image:float32:3x224x224
    outputs    the output tensors, same syntax: names them, and checks them

A TorchScript file records no shapes, so `inputs` is required for one, and its
names must be forward()'s argument names. A torch.export program records its
inputs (the first dim is the batch), so `inputs` is needed only for a non-batch
dim exported as dynamic. Outputs' dtypes and per-item shapes always come from
running a batch of 1 (zeros) at load: `outputs`, when given, names them in
order (by key for a model returning a dict) and must agree with what ran.
Without it they are "output", or "output_0", "output_1"... for a tuple, or the
dict's keys. Every input is passed positionally, as a tensor [N, *dims].

On CUDA the backend is pipelined: `submit` queues the host-to-device copies, the
model and the device-to-host copies on this instance's own stream and returns an
event; `collect` waits for it. (The CUDA path is not exercised by the CPU-only CI:
tests/backends/test_torch.py runs it where a GPU exists.)
"""

from __future__ import annotations

import math
import os
import re
import threading
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch  # the real package: absolute imports never find this module itself
from torch.export.passes import move_to_device_pass

from sidecar.backends.base import Backend, BackendError, BackendInfo
from sidecar.backends.options import BackendOptions
from sidecar.backends.uri import file_path
from sidecar.core.tensors import DTYPES, ModelSpec, TensorSpec

OPTIONS = {"device", "threads", "precision", "inputs", "outputs"}
PRECISIONS = ("float32", "float16", "bfloat16")

# The wire's dtypes, as torch spells them (every one of DTYPES exists in torch).
TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPES}
WIRE_DTYPES: dict[torch.dtype, str] = {t: name for name, t in TORCH_DTYPES.items()}

# How the model's return value maps to the output specs: one tensor, a tuple or
# list of this many, or a dict read by these keys.
Layout = int | tuple[str, ...] | None


@dataclass(slots=True)
class _Pending:
    """A batch queued on the CUDA stream: `done` fires once `host` holds its outputs."""

    done: Any  # torch.cuda.Event
    host: dict[str, torch.Tensor]


class TorchBackend(Backend):
    name = "torch"
    extra = "torch"

    def __init__(self, model_uri: str, options: BackendOptions | None = None) -> None:
        super().__init__(model_uri, options)
        self._model: Any = None
        self._device = torch.device("cpu")
        self._cast: torch.dtype | None = None  # precision, when not float32
        self._threads = 0
        self._threads_set_in: int | None = None  # the thread they were set in
        self._spec: ModelSpec | None = None
        self._layout: Layout = None
        self._stream: Any = None  # torch.cuda.Stream, on CUDA only
        self._handed: dict[str, torch.Tensor] = {}  # pinned inputs from input_buffers, until submit

    def load(self) -> BackendInfo:
        opts = self.options
        unknown = opts.unknown(OPTIONS)
        if unknown:
            keys = ", ".join(f"sidecar.backend.torch.{k}" for k in unknown)
            raise BackendError(f"unknown option(s) {keys}; known: {', '.join(sorted(OPTIONS))}")
        self._device = _device(opts)
        self._threads = opts.integer("threads", 0, minimum=0)
        precision = opts.choice("precision", "float32", PRECISIONS)
        self._cast = None if precision == "float32" else getattr(torch, precision)
        given_inputs, given_outputs = _tensor_list(opts, "inputs"), _tensor_list(opts, "outputs")
        self._apply_threads()

        path = _model_path(self.model_uri)
        kind = _program_kind(path)
        model, inputs, max_batch = (
            _load_script(path, self._device, given_inputs)
            if kind == "torchscript"
            else _load_export(path, self._device, given_inputs)
        )
        if self._cast is not None:
            model = model.to(self._cast)  # floating-point parameters and buffers only
        self._model = model
        if self._device.type == "cuda":
            self._stream = torch.cuda.Stream(device=self._device)
            # An instance attribute over the class's False: only a CUDA instance overlaps batches.
            self.pipelined = True  # type: ignore[misc]

        self._layout, outputs = self._trial(path, inputs, given_outputs)
        self._spec = ModelSpec(inputs=inputs, outputs=outputs)
        if self._stream is not None:
            # The weights were copied (and cast) on the default stream; ours is a
            # non-blocking stream that would not wait for them.
            torch.cuda.synchronize(self._device)
        return BackendInfo(self._spec, max_batch_size=max_batch)

    def _trial(
        self, path: str, inputs: tuple[TensorSpec, ...], given: tuple[TensorSpec, ...] | None
    ) -> tuple[Layout, tuple[TensorSpec, ...]]:
        """Runs a batch of 1 (zeros): the outputs' structure, dtypes and shapes."""
        zeros = [torch.zeros((1, *s.shape), dtype=TORCH_DTYPES[s.dtype], device=self._device) for s in inputs]
        try:
            with torch.inference_mode():
                raw = self._model(*[self._cast_in(t) for t in zeros])
        except Exception as e:
            raise BackendError(
                f"torch backend: {path!r} failed on a batch of 1 (zeros) of {_specs_text(inputs)}: {_short(e)}"
            ) from e
        layout, found = _outputs_of(path, raw)
        names = (
            list(found)
            if isinstance(layout, tuple)
            else (["output"] if layout is None else [f"output_{i}" for i in range(layout)])
        )
        if given is not None:
            if len(given) != len(found):
                raise BackendError(
                    f"sidecar.backend.torch.outputs: names {len(given)} output(s), but the model returned {len(found)}"
                )
            if isinstance(layout, tuple):
                if {s.name for s in given} != set(found):
                    raise BackendError(
                        f"sidecar.backend.torch.outputs: {[s.name for s in given]} are not the names the model"
                        f" returns, {list(found)}"
                    )
                layout = tuple(s.name for s in given)  # the option's order is the spec's
                found = {name: found[name] for name in layout}
            names = [s.name for s in given]
        specs = []
        for name, t in zip(names, found.values()):
            if t.dim() == 0 or t.shape[0] != 1:
                raise BackendError(
                    f"torch backend: {path!r}: output {name!r} has shape {list(t.shape)} for a batch of 1;"
                    " its first dim must be the batch"
                )
            dtype = torch.float32 if self._cast is not None and t.is_floating_point() else t.dtype
            if dtype not in WIRE_DTYPES:
                raise BackendError(
                    f"torch backend: {path!r}: output {name!r} is {dtype}, which the wire does not carry"
                    f" ({', '.join(sorted(DTYPES))}); cast it in the model, or set precision"
                )
            specs.append(TensorSpec(name, WIRE_DTYPES[dtype], tuple(t.shape[1:])))
        if given is not None:
            for want, got in zip(given, specs):
                if want != got:
                    raise BackendError(
                        f"sidecar.backend.torch.outputs: says {_specs_text([want])}, but on a batch of 1"
                        f" the model returned {_specs_text([got])}"
                    )
        return layout, tuple(specs)

    def input_buffers(self, n: int) -> Mapping[str, np.ndarray] | None:
        assert self._spec is not None, "load first"
        if self._stream is None:
            # Fresh writable arrays: torch.from_numpy shares them with no copy, and a
            # model that writes into its inputs writes into memory that is its own.
            return {s.name: np.empty((n, *s.shape), DTYPES[s.dtype]) for s in self._spec.inputs}
        # Pinned host memory, from torch's caching host allocator: it hands freed
        # blocks out again only once the copies that read them are done (it records
        # an event per copy), so reuse across batches needs no bookkeeping here.
        self._handed = {
            s.name: torch.empty((n, *s.shape), dtype=TORCH_DTYPES[s.dtype], pin_memory=True) for s in self._spec.inputs
        }
        return {name: t.numpy() for name, t in self._handed.items()}

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        if self._stream is not None:
            return self.collect(self.submit(inputs))
        assert self._spec is not None, "load first"
        self._apply_threads()
        # The executor's own arrays are read-only views of request bytes: torch would
        # warn and share them, and a model writing in place would write into them.
        tensors = [
            torch.from_numpy(a if (a := inputs[s.name]).flags.writeable else a.copy()) for s in self._spec.inputs
        ]
        with torch.inference_mode():
            raw = self._model(*[self._cast_in(t) for t in tensors])
            return {s.name: self._cast_out(t).numpy() for s, t in zip(self._spec.outputs, self._ordered(raw))}

    def submit(self, inputs: Mapping[str, np.ndarray]) -> Any:
        if self._stream is None:
            return self.infer(inputs)
        assert self._spec is not None, "load first"
        handed, self._handed = self._handed, {}
        with torch.inference_mode(), torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            on_device = [
                _pinned(inputs[s.name], handed.get(s.name), s).to(self._device, non_blocking=True)
                for s in self._spec.inputs
            ]
            raw = self._model(*[self._cast_in(t) for t in on_device])
            host = {}
            for s, t in zip(self._spec.outputs, self._ordered(raw)):
                t = self._cast_out(t)
                host[s.name] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                host[s.name].copy_(t, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        return _Pending(done, host)

    def collect(self, handle: Any) -> Mapping[str, np.ndarray]:
        if not isinstance(handle, _Pending):
            return handle
        handle.done.synchronize()
        # Each array keeps its pinned tensor alive; freed, the block goes back to the cache.
        return {name: t.numpy() for name, t in handle.host.items()}

    def close(self) -> None:
        self._model, self._handed, self._spec = None, {}, None
        if self._stream is not None:
            self._stream.synchronize()  # nothing of ours may still be queued
            self._stream = None
            torch.cuda.empty_cache()

    def _apply_threads(self) -> None:
        # torch's intra-op thread count (OpenMP's, MKL's) is per calling thread:
        # set in the thread that runs the batches, it is this instance's alone.
        if self._threads and self._threads_set_in != threading.get_ident():
            torch.set_num_threads(self._threads)
            self._threads_set_in = threading.get_ident()

    def _cast_in(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self._cast) if self._cast is not None and t.is_floating_point() else t

    def _cast_out(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float32) if self._cast is not None and t.is_floating_point() else t

    def _ordered(self, raw: Any) -> list[torch.Tensor]:
        """The model's outputs in spec order, shaped as they were at load."""
        layout = self._layout
        if layout is None and isinstance(raw, torch.Tensor):
            return [raw]
        if isinstance(layout, int) and isinstance(raw, (tuple, list)) and len(raw) == layout:
            return list(raw)
        if isinstance(layout, tuple) and isinstance(raw, dict) and all(k in raw for k in layout):
            return [raw[k] for k in layout]
        raise BackendError(f"the model returned {_describe(raw)}, unlike at load")


def _device(opts: BackendOptions) -> torch.device:
    raw = opts.text("device", "cpu")
    assert raw is not None
    if raw == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", raw)
    if match is None:
        raise BackendError(f"sidecar.backend.torch.device: {raw!r} is not cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise BackendError(
            f"sidecar.backend.torch.device: {raw!r} asked for, but torch {torch.__version__} sees no CUDA device"
            " (a CPU-only build, or no GPU or driver on this machine); use device=cpu"
        )
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise BackendError(f"sidecar.backend.torch.device: {raw!r}, but this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


def _tensor_list(opts: BackendOptions, option: str) -> tuple[TensorSpec, ...] | None:
    """`name:dtype:dims,...`, e.g. `image:float32:3x224x224,mask:bool:224x224,label:int64:`."""
    raw = opts.text(option)
    if raw is None:
        return None
    key, specs = f"sidecar.backend.torch.{option}", []
    for entry in raw.split(","):
        parts = entry.strip().split(":")
        if len(parts) != 3 or not parts[0]:
            raise BackendError(
                f"{key}: {entry.strip()!r} is not name:dtype:dims (e.g. input:float32:3x224x224; dims per item,"
                " 'x' between them, empty for a scalar)"
            )
        name, dtype, dims = parts
        if dtype not in DTYPES:
            raise BackendError(f"{key}: {entry.strip()!r}: dtype {dtype!r} is not one of {', '.join(sorted(DTYPES))}")
        try:
            shape = tuple(int(d) for d in dims.split("x")) if dims else ()
            if any(d < 1 for d in shape):
                raise ValueError
        except ValueError:
            raise BackendError(f"{key}: {entry.strip()!r}: dims {dims!r} are not integers >= 1 joined by 'x'") from None
        if any(s.name == name for s in specs):
            raise BackendError(f"{key}: {name!r} appears more than once")
        specs.append(TensorSpec(name, dtype, shape))
    return tuple(specs)


def _model_path(model_uri: str) -> str:
    path = file_path(model_uri, "torch")
    if not path:
        raise BackendError(
            f"torch backend: model URI {model_uri!r} is not a path, a file:// URI or torch:/path"
            " (to a torch.jit.save or torch.export.save file)"
        )
    return path


def _program_kind(path: str) -> str:
    """Tells "torchscript" from "export" by the zip archive's entries (both are zips),
    before torch reads it: torch.export.load on anything else logs a traceback."""
    neither = f"torch backend: {path!r} is neither a TorchScript file (torch.jit.save) nor a torch.export program"
    if not os.path.exists(path):
        raise BackendError(f"torch backend: model file {path!r} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [name.split("/") for name in archive.namelist()]
    except zipfile.BadZipFile:
        raise BackendError(f"{neither}: it is not a zip archive") from None
    except OSError as e:
        raise BackendError(f"torch backend: cannot read model file {path!r}: {e.strerror or e}") from None
    # archive_format: the .pt2 package; serialized_exported_program.json: the older layout torch.export.load still reads.
    if any(parts[-1] in ("archive_format", "serialized_exported_program.json") for parts in entries):
        return "export"
    if any(len(parts) > 2 and parts[1] == "code" for parts in entries):
        return "torchscript"
    if any(parts[-1] == "data.pkl" for parts in entries):
        raise BackendError(f"{neither}: it is a torch.save checkpoint (tensors or a state dict), not a program")
    raise BackendError(f"{neither}: a zip archive of neither kind")


def _load_script(
    path: str, device: torch.device, given: tuple[TensorSpec, ...] | None
) -> tuple[Any, tuple[TensorSpec, ...], int | None]:
    try:
        module = torch.jit.load(path, map_location=device)
    except Exception as e:
        raise BackendError(f"torch backend: cannot load TorchScript file {path!r}: {_short(e)}") from e
    module.eval()
    args = module.forward.schema.arguments[1:]  # [0] is self
    names = [a.name for a in args]
    for a in args:
        if str(a.type) != "Tensor":
            raise BackendError(
                f"torch backend: {path!r}: forward's argument {a.name!r} is {a.type}; the sidecar passes tensors only"
            )
    if given is None:
        raise BackendError(
            f"sidecar.backend.torch.inputs: required for a TorchScript file (it records no shapes): forward takes"
            f" {names}, e.g. inputs={names[0] if names else 'input'}:float32:16"
        )
    required = sum(1 for a in args if not a.has_default_value())
    given_names = [s.name for s in given]
    if not (required <= len(given) <= len(names)) or given_names != names[: len(given)]:
        raise BackendError(
            f"sidecar.backend.torch.inputs: names {given_names}, but forward takes {names}"
            f" ({required} without a default), in that order"
        )
    return module, given, None


def _load_export(
    path: str, device: torch.device, given: tuple[TensorSpec, ...] | None
) -> tuple[Any, tuple[TensorSpec, ...], int | None]:
    try:
        with open(path, "rb") as f:  # a file object: torch.export.load wants a path ending .pt2
            program = torch.export.load(f)
        program = move_to_device_pass(program, device)  # weights and any device baked into the graph
    except Exception as e:
        raise BackendError(f"torch backend: cannot load torch.export program {path!r}: {_short(e)}") from e
    example = program.example_inputs
    if example is not None and (example[1] or not all(isinstance(a, torch.Tensor) for a in example[0])):
        raise BackendError(
            f"torch backend: {path!r} was exported with keyword or non-tensor arguments;"
            " the sidecar passes tensors, positionally"
        )
    by_name = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    names = list(program.graph_signature.user_inputs)
    if given is not None and [s.name for s in given] != names:
        raise BackendError(
            f"sidecar.backend.torch.inputs: names {[s.name for s in given]}, but the program takes {names}"
        )
    specs, max_batch = [], None
    for i, name in enumerate(names):
        val = by_name.get(name)
        if not isinstance(val, torch.Tensor) or val.dim() == 0:
            raise BackendError(f"torch backend: {path!r}: input {name!r} is not a tensor with a batch dim")
        if val.dtype not in WIRE_DTYPES:
            raise BackendError(f"torch backend: {path!r}: input {name!r} is {val.dtype}, which the wire does not carry")
        batch = val.shape[0]
        if isinstance(batch, int):  # exported without a dynamic batch dim: that size only
            if batch != 1:
                raise BackendError(
                    f"torch backend: {path!r}: input {name!r} has a fixed batch of {batch}; export it with"
                    " dynamic_shapes={...: {0: torch.export.Dim('batch')}}"
                )
            max_batch = 1
        else:
            low, high = _batch_range(program, batch)
            if low > 1:
                raise BackendError(
                    f"torch backend: {path!r}: input {name!r}'s batch dim must be at least {low}; export it with"
                    " torch.export.Dim('batch', min=1)"
                )
            if high is not None:
                max_batch = high if max_batch is None else min(max_batch, high)
        dims = list(val.shape[1:])
        want = given[i] if given is not None else None
        if want is not None:
            if (
                want.dtype != WIRE_DTYPES[val.dtype]
                or len(want.shape) != len(dims)
                or any(isinstance(d, int) and d != w for d, w in zip(dims, want.shape))
            ):
                raise BackendError(
                    f"sidecar.backend.torch.inputs: says {_specs_text([want])}, but the program takes {name!r} as"
                    f" {WIRE_DTYPES[val.dtype]} {[str(d) for d in dims]} per item"
                )
            specs.append(want)
            continue
        if not all(isinstance(d, int) for d in dims):
            raise BackendError(
                f"sidecar.backend.torch.inputs: needed: input {name!r} has dynamic dims {[str(d) for d in dims]}"
                f" per item; give them, e.g. inputs={name}:{WIRE_DTYPES[val.dtype]}:"
                + "x".join(str(d) if isinstance(d, int) else "16" for d in dims)
            )
        specs.append(TensorSpec(name, WIRE_DTYPES[val.dtype], tuple(int(d) for d in dims)))
    # ep.module() refuses eval(): train or eval mode was fixed when the program was exported.
    return program.module(), tuple(specs), max_batch


def _batch_range(program: Any, dim: Any) -> tuple[int, int | None]:
    """The least and greatest batch a dynamic batch dim admits (None: no limit)."""
    found = program.range_constraints.get(dim.node.expr)
    if found is None:
        return 0, None
    low = int(found.lower) if math.isfinite(float(found.lower)) else 0
    high = int(found.upper) if math.isfinite(float(found.upper)) else None
    return low, high


def _pinned(array: np.ndarray, handed: torch.Tensor | None, spec: TensorSpec) -> torch.Tensor:
    """The pinned host tensor behind `array`: the one input_buffers handed out if it
    is that, else a pinned copy (a copy from pageable memory could not be async)."""
    if handed is not None and handed.data_ptr() == array.__array_interface__["data"][0] and handed.shape == array.shape:
        return handed
    staged = torch.empty(array.shape, dtype=TORCH_DTYPES[spec.dtype], pin_memory=True)
    np.copyto(staged.numpy(), array)
    return staged


def _outputs_of(path: str, raw: Any) -> tuple[Layout, dict[str, torch.Tensor]]:
    if isinstance(raw, torch.Tensor):
        return None, {"output": raw}
    if isinstance(raw, (tuple, list)) and raw and all(isinstance(t, torch.Tensor) for t in raw):
        return len(raw), {f"output_{i}": t for i, t in enumerate(raw)}
    if (
        isinstance(raw, dict)
        and raw
        and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in raw.items())
    ):
        return tuple(raw), dict(raw)
    raise BackendError(
        f"torch backend: {path!r} returned {_describe(raw)}; expected a tensor, a tuple or list of tensors,"
        " or a dict of name to tensor"
    )


def _describe(raw: Any) -> str:
    if isinstance(raw, (tuple, list, dict)):
        return f"a {type(raw).__name__} of {len(raw)}"
    return f"a {type(raw).__name__}"


def _specs_text(specs: Sequence[TensorSpec]) -> str:
    return ",".join(f"{s.name}:{s.dtype}:{'x'.join(map(str, s.shape))}" for s in specs)


def _short(e: Exception) -> str:
    """torch's messages run to paragraphs: their first line. TorchScript's open with
    a traceback of the scripted code and end with the error itself: that last line."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
    text = lines[-1] if lines[0].startswith("The following operation failed in the TorchScript") else lines[0]
    text = text.split(" This is an internal miniz error.")[0]  # a corrupt zip: the rest is boilerplate
    return text if len(text) <= 300 else text[:297] + "..."
