"""`gpu-sidecar bench`: the load generator, its baselines (the echo server, the
backend alone) and `--check`, the documented cases (docs/benchmarks.md)."""
