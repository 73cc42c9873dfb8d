"""gpu-sidecar: a batched, back-pressured inference server beside a Flink TaskManager."""

__version__ = "0.1.0"
