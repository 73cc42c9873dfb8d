"""`gpu-sidecar`: the command line. The start-up wiring of the server lives here.

    gpu-sidecar serve [--endpoint 127.0.0.1:7651] [--backend mock] [...]
    gpu-sidecar infer --endpoint 127.0.0.1:7651 [--input '[1, 2, ...]']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import fields
from typing import Any

import numpy as np

from sidecar import __version__
from sidecar.config import SidecarConfig

log = logging.getLogger("sidecar")

_DEFAULTS = SidecarConfig()


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Runs on uvloop where it is installed: the fastest Python stack measured here."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def _config_from(args: argparse.Namespace) -> SidecarConfig:
    values = {f.name: getattr(args, f.name) for f in fields(SidecarConfig) if getattr(args, f.name, None) is not None}
    return SidecarConfig(**values)


async def _serve(config: SidecarConfig) -> int:
    from sidecar.server.app import SidecarServer

    server = SidecarServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"gpu-sidecar {__version__} serving {config.backend!r} on {server.address}", flush=True)
    await stop.wait()
    log.info("signal received: stopping")
    await server.stop()
    return 0


async def _infer(endpoint: str, values: list[Any] | None, timeout_s: float | None) -> int:
    import grpc

    from sidecar.client import InferError, SidecarClient

    async with SidecarClient(endpoint) as client:
        try:
            info = await client.model_info()
        except grpc.aio.AioRpcError as e:
            print(f"gpu-sidecar: cannot reach the sidecar at {endpoint}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 2
        inputs: dict[str, np.ndarray] = {}
        for spec in info.inputs:
            shape = tuple(spec.shape)
            if values is None:
                arr = np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)
            else:
                arr = np.asarray(values, dtype=spec.dtype).reshape(shape)
            inputs[spec.name] = arr
        try:
            outputs = await client.infer(inputs, timeout_s=timeout_s)
        except InferError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(json.dumps({name: arr.tolist() for name, arr in outputs.items()}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-sidecar", description="Batched inference sidecar for Flink.")
    parser.add_argument("--version", action="version", version=f"gpu-sidecar {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the sidecar (mock backend by default)")
    d = _DEFAULTS
    serve.add_argument("--endpoint", help=f"host:port or unix:///path (default {d.endpoint})")
    serve.add_argument("--backend", help=f"backend name (default {d.backend})")
    serve.add_argument("--model-uri", dest="model_uri", help="model location, backend specific")
    serve.add_argument("--instances", type=int, help=f"backend instances (default {d.instances})")
    serve.add_argument("--max-batch-size", dest="max_batch_size", type=int, help=f"default {d.max_batch_size}")
    serve.add_argument("--batch-timeout-ms", dest="batch_timeout_s", type=_ms, help=f"default {d.batch_timeout_s * 1e3:g}")
    serve.add_argument("--max-inflight-batches", dest="max_inflight_batches", type=int, help=f"default {d.max_inflight_batches}")
    serve.add_argument("--max-queue-length", dest="max_queue_length", type=int, help=f"default {d.max_queue_length}")
    serve.add_argument("--max-queue-wait-ms", dest="max_queue_wait_s", type=_ms, help=f"default {d.max_queue_wait_s * 1e3:g}")

    infer = sub.add_parser("infer", help="send one request and print the result as JSON")
    infer.add_argument("--endpoint", default=d.endpoint)
    infer.add_argument("--input", help="JSON list of values for the (single) input; random if omitted")
    infer.add_argument("--timeout-ms", dest="timeout_s", type=_ms)
    return parser


def _ms(text: str) -> float:
    return float(text) / 1000


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return _run(lambda: _serve(_config_from(args)))
        values = json.loads(args.input) if args.input else None
        return _run(lambda: _infer(args.endpoint, values, args.timeout_s))
    except (ValueError, OSError) as e:
        print(f"gpu-sidecar: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
