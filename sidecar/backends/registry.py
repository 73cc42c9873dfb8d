"""Backends by name: the built-ins, plus whatever installed packages add.

A package adds a backend by declaring an entry point in the group
`gpu_sidecar.backends`, e.g. in its pyproject.toml:

    [project.entry-points."gpu_sidecar.backends"]
    mybackend = "my_package.module:MyBackend"

Built-ins win over an entry point of the same name, so installing a package can
never silently change what `mock` or `cpu` means. Nothing is imported until a
backend is asked for: a GPU backend's heavy imports cost nothing when unused.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

from sidecar.backends.base import Backend, BackendError
from sidecar.backends.options import BackendOptions

ENTRY_POINT_GROUP = "gpu_sidecar.backends"

_BUILTINS: dict[str, str] = {
    "mock": "sidecar.backends.mock:MockBackend",
    "cpu": "sidecar.backends.cpu:CpuBackend",
    "onnx": "sidecar.backends.onnx:OnnxBackend",
    "torch": "sidecar.backends.torch:TorchBackend",
    "tensorrt": "sidecar.backends.tensorrt:TensorRTBackend",
}
# The package extra that brings what a built-in imports: named when the import fails.
_EXTRAS: dict[str, str] = {"onnx": "onnx", "torch": "torch", "tensorrt": "tensorrt"}


class UnknownBackend(ValueError):
    """No backend is registered under the name asked for; the message lists those that are."""


def available() -> list[str]:
    """The names `create` accepts, sorted."""
    return sorted(_entry_points())


def backend_class(name: str) -> type[Backend]:
    """Imports and returns the backend class registered as `name`."""
    found = _entry_points().get(name)
    if found is None:
        raise UnknownBackend(f"unknown backend {name!r}; available: {', '.join(available())}")
    try:
        cls = found.load()
    except ImportError as e:
        if name in _EXTRAS:  # a built-in whose optional packages are not installed
            raise BackendError(
                f"backend {name!r} needs a package that is not installed ({e}); "
                f"install it with: pip install 'gpu-sidecar[{_EXTRAS[name]}]'"
            ) from e
        raise BackendError(f"backend {name!r} ({found.value}) failed to import: {e!r}") from e
    except Exception as e:  # a broken plugin must not look like a missing one
        raise BackendError(f"backend {name!r} ({found.value}) failed to import: {e!r}") from e
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"backend {name!r} ({found.value}) is not a subclass of sidecar.backends.base.Backend")
    return cls


def create(name: str, model_uri: str, options: Mapping[str, str] | None = None) -> Backend:
    """A new, not yet loaded, instance of the backend `name` for `model_uri`, with
    its configured options (`sidecar.backend.<name>.*`) over the URI's query."""
    cls = backend_class(name)
    if options is None or "options" not in inspect.signature(cls).parameters:
        return cls(model_uri)  # a backend written before options existed reads its URI itself
    return cls(model_uri, BackendOptions.of(name, model_uri, options))


def _entry_points() -> dict[str, EntryPoint]:
    # Read on every call, not cached: it is only consulted at start-up, and a
    # cache would hide packages installed (or test fixtures added) afterwards.
    # Reversed so that, as with imports, the earliest sys.path entry wins a clash.
    found = {ep.name: ep for ep in reversed(list(entry_points(group=ENTRY_POINT_GROUP)))}
    found.update({name: EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in _BUILTINS.items()})
    return found
