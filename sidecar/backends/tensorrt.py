"""TensorRT engines on an NVIDIA GPU, driven through pycuda.

UNVERIFIED: written against the TensorRT 10 and pycuda documentation and never
run: the machine it was written on has no GPU, TensorRT or pycuda. Its checks and
arithmetic live in sidecar/backends/tensorrt_plan.py, which is tested anywhere;
tests/backends/test_tensorrt.py exercises this file where a GPU is present.

Model URI: a serialized engine (`/m.plan`, `/m.engine`), deserialized as it is,
or an ONNX model (`/m.onnx`), built into an engine at load with a profile for
batches 1..max_batch. Options (`sidecar.backend.tensorrt.<option>` or the URI's
query): device, max_batch, opt_batch, fp16, workspace_mb, preferred_batch_sizes.

How a batch runs. Two buffer sets (page-locked host + device memory, for the max
batch, allocated once) alternate per batch. The executor joins batch N+1 into the
host buffers of one set (`input_buffers`) while the device still runs batch N out
of the other; `submit` enqueues copy-in, execute_async_v3 and copy-out on the
instance's stream and records an event; `collect` waits on that event. One
execution context serves both sets, rebinding addresses per batch on one stream,
as Triton's TensorRT backend does with its alternating binding sets.

Threads: the CUDA context is made in `load` on the calling thread (the executor's)
and is current only there, so every call must come from that thread; a call from
another fails with a BackendError instead of a CUDA "invalid context".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from sidecar.backends import tensorrt_plan as plan
from sidecar.backends.base import Backend, BackendError, BackendInfo
from sidecar.backends.options import BackendOptions
from sidecar.core.tensors import DTYPES, ModelSpec

MIN_TENSORRT_MAJOR = 10  # the named-tensor API and execute_async_v3 throughout

# One logger for the process: TensorRT warns when builders and runtimes are given
# different ones.
_LOGGER = trt.Logger(trt.Logger.WARNING)


@dataclass(slots=True)
class _BufferSet:
    host: dict[str, np.ndarray] = field(default_factory=dict)  # page-locked, [max_batch, *shape]
    device: dict[str, Any] = field(default_factory=dict)  # pycuda DeviceAllocation, same bytes
    host_ptr: dict[str, int] = field(default_factory=dict)  # to tell our own views from other arrays
    done: Any = None  # pycuda Event, recorded after the batch's copy-out


@dataclass(frozen=True, slots=True)
class _Pending:
    """What `submit` hands to `collect`."""

    index: int  # the buffer set
    n: int  # rows the caller sent (the rest, if any, were padding)


class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "tensorrt"
    pipelined = True

    def __init__(self, model_uri: str, options: BackendOptions | None = None) -> None:
        super().__init__(model_uri, options)
        # Parsed here, not in load(), so a bad option or URI fails at start-up.
        self.settings = plan.parse_options(self.options)
        self.path, self.kind = plan.model_path(model_uri)
        self._thread: int | None = None
        self._cuda_context: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._sets: list[_BufferSet] = []
        self._rotation = plan.BufferRotation()
        self._spec: ModelSpec | None = None
        self._min_batch = 1
        self._max_batch = 0
        self._preferred: tuple[int, ...] = ()

    # --- load and close -------------------------------------------------------------

    def load(self) -> BackendInfo:
        if not self.path.is_file():
            raise BackendError(f"tensorrt backend: model file {str(self.path)!r} does not exist")
        major = int(trt.__version__.split(".")[0])
        if major < MIN_TENSORRT_MAJOR:
            raise BackendError(f"tensorrt backend: needs TensorRT {MIN_TENSORRT_MAJOR} or newer; found {trt.__version__}")
        self._cuda_context = _make_context(self.settings.device)
        self._thread = threading.get_ident()
        try:
            return self._load_in_context()
        except cuda.Error as e:
            self.close()
            raise BackendError(f"tensorrt backend: CUDA error while loading {str(self.path)!r}: {e}") from e
        except BaseException:
            self.close()
            raise

    def _load_in_context(self) -> BackendInfo:
        self._runtime = trt.Runtime(_LOGGER)
        serialized = self.path.read_bytes() if self.kind == "engine" else self._build()
        self._engine = self._runtime.deserialize_cuda_engine(serialized)
        if self._engine is None:
            raise BackendError(
                f"tensorrt backend: cannot deserialize {str(self.path)!r}; an engine runs only on the TensorRT version"
                f" and GPU model it was built for (this is TensorRT {trt.__version__}); TensorRT's log above says more"
            )
        spec = plan.model_spec(_io_tensors(self._engine))
        ranges = {s.name: _profile_range(self._engine, s.name, s.shape) for s in spec.inputs}
        self._min_batch, self._max_batch = plan.batch_limits(ranges, self.settings.max_batch)
        self._preferred = plan.check_preferred(self.settings.preferred_batch_sizes, self._min_batch, self._max_batch)
        self._spec = spec
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError("tensorrt backend: cannot create an execution context (out of device memory?)")
        self._stream = cuda.Stream()
        for _ in range(plan.BUFFER_SETS):
            self._allocate_set()
        return BackendInfo(spec, max_batch_size=self._max_batch)

    def _build(self) -> Any:
        """An engine built from the ONNX file, serialized: a profile for batches
        1..max_batch on every input, tuned for opt_batch."""
        builder = trt.Builder(_LOGGER)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, _LOGGER)
        if not parser.parse_from_file(str(self.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"tensorrt backend: cannot parse ONNX model {str(self.path)!r}: {errors}")
        max_batch = plan.build_max_batch(self.settings)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shapes = plan.profile_shapes(
                plan.per_item_shape(tensor.name, tuple(tensor.shape)), max_batch, self.settings.opt_batch
            )
            profile.set_shape(tensor.name, shapes.min, shapes.opt, shapes.max)
        config = builder.create_builder_config()
        config.add_optimization_profile(profile)
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.settings.workspace_mb << 20)
        if self.settings.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(
                f"tensorrt backend: building an engine from {str(self.path)!r} failed; TensorRT's log above says why"
            )
        return serialized

    def _allocate_set(self) -> None:
        # Appended before it is filled, so that close() frees a set half made.
        buffers = _BufferSet()
        self._sets.append(buffers)
        assert self._spec is not None
        sizes = plan.buffer_sizes(self._spec, self._max_batch)
        for spec in (*self._spec.inputs, *self._spec.outputs):
            host = cuda.pagelocked_empty((self._max_batch, *spec.shape), DTYPES[spec.dtype])
            buffers.host[spec.name] = host
            buffers.host_ptr[spec.name] = host.__array_interface__["data"][0]
            buffers.device[spec.name] = cuda.mem_alloc(sizes[spec.name])
        # Blocking sync: the executor's thread sleeps in collect() instead of spinning
        # a core that the host's other work could use; no timing is needed.
        buffers.done = cuda.Event(cuda.event_flags.BLOCKING_SYNC | cuda.event_flags.DISABLE_TIMING)

    def close(self) -> None:
        if self._cuda_context is None:
            return
        self._check_thread("close")
        try:
            if self._stream is not None:
                with suppress(cuda.Error):  # a failed batch must not keep the memory from being freed
                    self._stream.synchronize()
            for buffers in self._sets:
                for allocation in buffers.device.values():
                    with suppress(cuda.Error):
                        allocation.free()
                for host in buffers.host.values():
                    with suppress(cuda.Error):
                        host.base.free()  # the PagelockedHostAllocation behind the array
            self._sets = []
            # TensorRT objects free device memory as they go, which needs this
            # context current: dropped here, before it is popped.
            self._context = None
            self._engine = None
            self._runtime = None
            self._stream = None
        finally:
            context, self._cuda_context = self._cuda_context, None
            context.pop()
            context.detach()

    # --- batches ----------------------------------------------------------------------

    def input_buffers(self, n: int) -> Mapping[str, np.ndarray] | None:
        self._check_thread("input_buffers")
        spec = self._loaded()
        if not 1 <= n <= self._max_batch:
            raise BackendError(f"tensorrt backend: a batch of {n} is outside 1..{self._max_batch}")
        host = self._sets[self._rotation.current()].host
        return {s.name: host[s.name][:n] for s in spec.inputs}

    def submit(self, inputs: Mapping[str, np.ndarray]) -> _Pending:
        self._check_thread("submit")
        spec = self._loaded()
        n = _batch_size(inputs, spec)
        rows = plan.padded_batch(n, self._preferred, self._min_batch, self._max_batch)
        index = self._rotation.current()
        buffers = self._sets[index]
        for s in spec.inputs:
            host, given = buffers.host[s.name], np.asarray(inputs[s.name])
            if given.__array_interface__["data"][0] != buffers.host_ptr[s.name]:
                np.copyto(host[:n], given)  # not joined into our buffers (e.g. warm_up's zeros)
            if rows > n:
                host[n:rows] = 0  # rows left from an earlier batch: zeros keep padded runs deterministic
        try:
            for s in spec.inputs:
                if not self._context.set_input_shape(s.name, (rows, *s.shape)):
                    raise BackendError(f"tensorrt backend: the engine refused shape {[rows, *s.shape]} for {s.name!r}")
                cuda.memcpy_htod_async(buffers.device[s.name], buffers.host[s.name][:rows], self._stream)
            for s in (*spec.inputs, *spec.outputs):
                if not self._context.set_tensor_address(s.name, int(buffers.device[s.name])):
                    raise BackendError(f"tensorrt backend: the engine refused an address for {s.name!r}")
            if not self._context.execute_async_v3(self._stream.handle):
                raise BackendError(f"tensorrt backend: execute_async_v3 refused a batch of {rows}; see TensorRT's log")
            for s in spec.outputs:
                # Only the n rows someone asked for come back.
                cuda.memcpy_dtoh_async(buffers.host[s.name][:n], buffers.device[s.name], self._stream)
            buffers.done.record(self._stream)
        except BaseException as e:
            # Whatever was enqueued still reads these host buffers: let it finish
            # before anyone joins into them again.
            with suppress(cuda.Error):
                self._stream.synchronize()
            if isinstance(e, cuda.Error):
                raise BackendError(f"tensorrt backend: CUDA error submitting a batch of {n}: {e}") from e
            raise
        self._rotation.claim()
        return _Pending(index, n)

    def collect(self, handle: Any) -> Mapping[str, np.ndarray]:  # handle: the _Pending from submit
        self._check_thread("collect")
        spec = self._loaded()
        buffers = self._sets[handle.index]
        try:
            buffers.done.synchronize()
            rows = plan.unpad({s.name: buffers.host[s.name] for s in spec.outputs}, handle.n)
            # Copied: this set's host buffers take the batch after next, whose
            # copy-out may be enqueued before the caller is done with these rows.
            return {name: arr.copy() for name, arr in rows.items()}
        except cuda.Error as e:
            raise BackendError(f"tensorrt backend: CUDA error running a batch of {handle.n}: {e}") from e
        finally:
            self._rotation.release(handle.index)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self.collect(self.submit(inputs))

    # --- checks -------------------------------------------------------------------------

    def _loaded(self) -> ModelSpec:
        if self._spec is None or self._cuda_context is None:
            raise BackendError("tensorrt backend: not loaded (or already closed)")
        return self._spec

    def _check_thread(self, call: str) -> None:
        if self._thread is not None and threading.get_ident() != self._thread:
            raise BackendError(
                f"tensorrt backend: {call}() called from a thread other than the one that loaded it; its CUDA context"
                " is current only there"
            )


def _make_context(device: int) -> Any:
    try:
        cuda.init()
        count = cuda.Device.count()
        if device >= count:
            raise BackendError(f"{plan.PREFIX}.device: {device}, but this machine has {count} CUDA device(s)")
        return cuda.Device(device).make_context()
    except cuda.Error as e:
        raise BackendError(f"tensorrt backend: cannot open CUDA device {device}: {e}") from e


def _io_tensors(engine: Any) -> list[plan.EngineTensor]:
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
            raise BackendError(f"tensorrt backend: tensor {name!r} lives in host memory (a shape tensor); not supported")
        if engine.get_tensor_format(name) != trt.TensorFormat.LINEAR:
            raise BackendError(
                f"tensorrt backend: tensor {name!r} has a vectorized I/O format; rebuild with linear (default) I/O formats"
            )
        tensors.append(
            plan.EngineTensor(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                trt_dtype=engine.get_tensor_dtype(name).name,
                shape=tuple(engine.get_tensor_shape(name)),
            )
        )
    return tensors


def _profile_range(engine: Any, name: str, per_item: tuple[int, ...]) -> tuple[int, int]:
    # Profile 0: the one a new execution context selects.
    min_shape, _opt, max_shape = engine.get_tensor_profile_shape(name, 0)
    return plan.profile_batch_range(name, per_item, tuple(min_shape), tuple(max_shape))


def _batch_size(inputs: Mapping[str, np.ndarray], spec: ModelSpec) -> int:
    """The batch's n, once every input is there with shape [n, *per-item shape]."""
    names = [s.name for s in spec.inputs]
    if set(inputs) != set(names):
        raise BackendError(f"tensorrt backend: got inputs {sorted(inputs)}, expected {sorted(names)}")
    n = None
    for s in spec.inputs:
        shape = tuple(np.shape(inputs[s.name]))
        if len(shape) != len(s.shape) + 1 or shape[1:] != s.shape or (n is not None and shape[0] != n):
            expected = ", ".join(str(d) for d in (n if n is not None else "n", *s.shape))
            raise BackendError(f"tensorrt backend: input {s.name!r} has shape {list(shape)}, expected [{expected}]")
        n = shape[0]
    assert n is not None
    return n
