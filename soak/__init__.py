"""The soak: the sidecar under a long, mixed, seeded load, its memory sampled with
tracemalloc and judged (docs/soak.md). `python -m soak` or `gpu-sidecar soak`."""
