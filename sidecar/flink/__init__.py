"""Flink integration: a PyFlink AsyncFunction over the sidecar (docs/flink.md).

Needs the flink extra (`pip install 'gpu-sidecar[flink]'`). Only the function and
the retry strategy import PyFlink, and only when first asked for, so the codec,
the errors and the client thread work (and are tested) without it.
"""

from sidecar.flink.codec import Codec, NumpyCodec
from sidecar.flink.errors import SidecarError, SidecarPermanentError, SidecarRetryableError, is_retryable

_NEED_PYFLINK = {
    "SidecarAsyncFunction": "sidecar.flink.function",
    "SidecarRetryPredicate": "sidecar.flink.retry",
    "SidecarRetryStrategy": "sidecar.flink.retry",
}


def __getattr__(name: str):
    if name not in _NEED_PYFLINK:
        raise AttributeError(f"module 'sidecar.flink' has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(_NEED_PYFLINK[name])
    except ModuleNotFoundError as error:
        if error.name != "pyflink" and not (error.name or "").startswith("pyflink."):
            raise
        raise ModuleNotFoundError(
            f"sidecar.flink.{name} needs PyFlink: pip install 'apache-flink==2.3.0' 'gpu-sidecar[flink]'",
            name=error.name,
        ) from error
    return getattr(module, name)


__all__ = [
    "Codec",
    "NumpyCodec",
    "SidecarAsyncFunction",
    "SidecarError",
    "SidecarPermanentError",
    "SidecarRetryPredicate",
    "SidecarRetryStrategy",
    "SidecarRetryableError",
    "is_retryable",
]
