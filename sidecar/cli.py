"""`gpu-sidecar`: the command line. The start-up wiring of the server lives here.

    gpu-sidecar serve  [--config FILE] [-D key=value ...] [--batch-max-size 32 ...]
    gpu-sidecar config --print [same options as serve]
    gpu-sidecar infer  [--endpoint 127.0.0.1:7651] [--input '[1, 2, ...]']

Every key of docs/configuration.md is a flag: `sidecar.batch.max-size` is
`--batch-max-size`. SIGTERM or SIGINT drains (see docs/operations.md); a second
signal exits at once. A fatal fault (more hung backend instances than
`sidecar.backend.max-hung`, or every instance given up after
`sidecar.backend.reload-attempts` failed loads) answers what is in flight
UNAVAILABLE and exits 4, so that the orchestrator restarts the sidecar.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from sidecar import __version__
from sidecar.backends.base import BackendError
from sidecar.config import KEYS, SidecarConfig
from sidecar.config_loader import ConfigError, Loaded, flag_name, load, parse_assignment
from sidecar.logs import event, setup

log = logging.getLogger("sidecar")

EXIT_USAGE = 2
EXIT_SECOND_SIGNAL = 1
EXIT_LOAD_FAILED = 3
EXIT_FATAL = 4  # the sidecar cannot recover in-process: restart it
# After a fatal fault, how long the UNAVAILABLE answers get to be written before the stop.
FATAL_DRAIN_S = 2.0


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Runs on uvloop where it is installed: the fastest Python stack measured here."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of configuration keys")
    parser.add_argument("-D", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="set any key, e.g. -D sidecar.batch.timeout='5 ms'")
    for k, spec in KEYS.items():
        parser.add_argument(flag_name(k), dest=f"key:{k}", metavar="VALUE",
                            help=f"{k} (default {spec.show(spec.default)!r}): {spec.doc}")


def _load(args: argparse.Namespace) -> Loaded:
    flags: list[tuple[str, Any, str]] = []
    for text in args.assignments:
        k, v = parse_assignment(text)
        flags.append((k, v, f"-D {k}"))
    for k in KEYS:
        value = getattr(args, f"key:{k}")
        if value is not None:
            flags.append((k, value, flag_name(k)))
    return load(args.config, os.environ, flags)


async def _serve(loaded: Loaded) -> int:
    from sidecar.server.app import SidecarServer

    config = loaded.config
    event(log, "starting", version=__version__, **{k: v for k, v, _ in loaded.describe()})
    server = SidecarServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            event(log, "second signal: exiting at once", level=logging.WARNING, signal=sig.name)
            os._exit(EXIT_SECOND_SIGNAL)
        event(log, "signal received: draining", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await server.listen()
    metrics = f", metrics http://0.0.0.0:{server.prometheus_port}/metrics" if server.prometheus_port else ""
    if server.kserve_http_port:
        metrics += f", KServe v2 http://{config.kserve_http_host}:{server.kserve_http_port}/v2"
    print(f"gpu-sidecar {__version__} serving {config.backend!r} on {server.address} "
          f"(health http://0.0.0.0:{server.health_port}/health{metrics})", flush=True)
    loading = asyncio.ensure_future(server.load())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is not None:
        stopping.cancel()
        await server.stop()
        raise loading.exception()  # type: ignore[misc]
    failing = asyncio.ensure_future(server.wait_fatal())
    await asyncio.wait([stopping, failing], return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        loading.cancel()
    if failing.done() and not stopping.done():
        stopping.cancel()
        reason = failing.result()
        await server.drain(FATAL_DRAIN_S)
        print(f"gpu-sidecar: fatal: {reason}; exiting with code {EXIT_FATAL} so that it is restarted", file=sys.stderr)
        return EXIT_FATAL
    failing.cancel()
    await server.drain()
    return 0


async def _infer(endpoint: str, values: list[Any] | None, timeout_s: float | None) -> int:
    import grpc

    from sidecar.client import InferError, SidecarClient

    async with SidecarClient(endpoint) as client:
        try:
            info = await client.model_info()
        except grpc.aio.AioRpcError as e:
            print(f"gpu-sidecar: cannot reach the sidecar at {endpoint}: {e.code().name}: {e.details()}", file=sys.stderr)
            return EXIT_USAGE
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


def _print_config(loaded: Loaded) -> int:
    rows = loaded.describe()
    width = max(len(k) for k, _, _ in rows)
    for k, value, source in rows:
        print(f"{k:<{width}}  {value!r:<24}  {source}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-sidecar", description="Batched inference sidecar for Flink.")
    parser.add_argument("--version", action="version", version=f"gpu-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the sidecar (mock backend by default)")
    _add_config_options(serve)

    config = sub.add_parser("config", help="show the effective configuration and where each value came from")
    config.add_argument("--print", action="store_true", required=True, help="print it")
    _add_config_options(config)

    sub.add_parser("soak", add_help=False, help="soak the sidecar with tracemalloc reports (gpu-sidecar soak --help)")
    sub.add_parser("bench", add_help=False, help="throughput and latency against its ceilings (gpu-sidecar bench --help)")

    infer = sub.add_parser("infer", help="send one request and print the result as JSON")
    infer.add_argument("--endpoint", default=SidecarConfig().endpoint, help="host:port or unix:///path")
    infer.add_argument("--input", help="JSON list of values for the (single) input; random if omitted")
    infer.add_argument("--timeout", dest="timeout", help="per-request timeout, e.g. '500 ms'")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:  # its own options: see soak/cli.py
        from soak.cli import main as soak_main

        return soak_main(argv[1:])
    if argv[:1] == ["bench"]:  # its own options: see sidecar/bench/cli.py
        from sidecar.bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "infer":
            from sidecar.units import parse_duration

            setup()
            timeout_s = parse_duration(args.timeout) if args.timeout else None
            values = json.loads(args.input) if args.input else None
            return _run(lambda: _infer(args.endpoint, values, timeout_s))
        loaded = _load(args)
        if args.command == "config":
            return _print_config(loaded)
        setup(loaded.config.log_format, loaded.config.log_level)
        return _run(lambda: _serve(loaded))
    except (ConfigError, ValueError, OSError) as e:
        print(f"gpu-sidecar: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as e:
        print(f"gpu-sidecar: the backend failed to load: {e}", file=sys.stderr)
        return EXIT_LOAD_FAILED


if __name__ == "__main__":
    sys.exit(main())
