"""`gpu-sidecar bench` / `python -m sidecar.bench`: throughput and latency of the
sidecar, beside the ceilings of its transport and of its model.

    gpu-sidecar bench                                   # 64 in flight, packed, 5 s, with baselines
    gpu-sidecar bench --sweep in-flight=1,8,64,256 --plot bench.png --json bench.json
    gpu-sidecar bench --rate 5000 --streams 4 --procs 2 --seconds 10
    gpu-sidecar bench --target 10.0.0.7:7651 --server-pid 4242 --unpacked
    gpu-sidecar bench --check                           # the documented cases, PASS/FAIL each

Exit code: 0 done (with --check: every case PASS), 1 a --check case FAILed,
2 bad arguments, 3 the bench could not run (a server did not start, no sidecar
at --target, a load process failed), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import grpc

from sidecar.bench import machine as machine_info
from sidecar.bench import report, table
from sidecar.bench.plot import plot
from sidecar.bench.pool import LoadError
from sidecar.bench.run import NotASidecar, Plan, run
from sidecar.bench.spec import Load
from sidecar.bench.sweep import parse_sweep
from sidecar.endpoint import grpc_address

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_COULD_NOT_RUN = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
DEFAULT_MODEL_URI = "mock:?base_ms=2&per_item_ms=0.02&dim=256"
DEFAULT_IN_FLIGHT = 64
DEFAULT_SECONDS = 5.0
PROG = "gpu-sidecar bench"
# Options that shape a load or pick a server: --check runs its own cases, so none apply.
_LOAD_OPTIONS = ("target", "server_pid", "model_uri", "serve_arg", "in_flight", "rate", "procs", "streams",
                 "unpacked", "seconds", "count", "warmup", "sweep", "baselines", "plot", "seed")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="docs/benchmarks.md explains every figure and the --check cases.")
    server = p.add_argument_group("the server")
    server.add_argument("--target", help="HOST:PORT of a running sidecar (default: start one on a free port)")
    server.add_argument("--server-pid", type=int, help="the running sidecar's pid, for its CPU per request")
    server.add_argument("--model-uri", help=f"model URI of the sidecar it starts (default {DEFAULT_MODEL_URI!r})")
    server.add_argument("--serve-arg", action="append", default=None, metavar="ARG",
                        help="extra `gpu-sidecar serve` argument (repeatable), e.g. --serve-arg=--model-instances=2")
    shape = p.add_argument_group("the load").add_mutually_exclusive_group()
    shape.add_argument("--in-flight", type=int, help=f"closed loop: requests outstanding in total (default {DEFAULT_IN_FLIGHT})")
    shape.add_argument("--rate", type=float, help="open loop: requests per second offered in total, Poisson arrivals")
    spread = p.add_argument_group("spread")
    spread.add_argument("--procs", type=int, help="load processes, each with its own event loop (default 1)")
    spread.add_argument("--streams", type=int, help="streams in total, one client each, spread over the processes (default 1)")
    pack = spread.add_mutually_exclusive_group()
    pack.add_argument("--packed", action="store_true", help="up to 64 requests per stream message (the default)")
    pack.add_argument("--unpacked", action="store_true", help="one request per stream message")
    length = p.add_argument_group("length").add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help=f"measured seconds (default {DEFAULT_SECONDS:g})")
    length.add_argument("--count", type=int, help="measure until this many requests have been answered")
    p.add_argument("--warmup", type=float, help="seconds of load before the measured interval (default 1)")
    p.add_argument("--sweep", help="one case per value: in-flight=1,8,64,256 or rate=1000,5000")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure the echo server and the backend alone (default: on when it starts the server)")
    p.add_argument("--seed", type=int, help="seed of the open loop's arrivals and of the inputs (default 0)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every figure here")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw p50 and p99 against throughput (needs matplotlib)")
    p.add_argument("--check", action="store_true", help="run the documented cases and judge each: PASS or FAIL")
    return p


class Usage(ValueError):
    """Arguments that do not make a bench; the message says why."""


def plan_from(args: argparse.Namespace) -> Plan:
    if args.server_pid is not None and args.target is None:
        raise Usage("--server-pid goes with --target (the pid of a sidecar it starts is known)")
    if args.target is not None:
        try:
            grpc_address(args.target)
        except ValueError as e:
            raise Usage(f"--target: {e}") from None
        if args.model_uri is not None or args.serve_arg:
            raise Usage("--model-uri and --serve-arg are for the sidecar it starts, not with --target")
    base = Load(
        in_flight=None if args.rate is not None else (args.in_flight or DEFAULT_IN_FLIGHT),
        rate=args.rate,
        streams=args.streams if args.streams is not None else 1,
        procs=args.procs if args.procs is not None else 1,
        packed=not args.unpacked,
        seconds=None if args.count is not None else (args.seconds if args.seconds is not None else DEFAULT_SECONDS),
        count=args.count,
        warmup_s=args.warmup if args.warmup is not None else 1.0,
        seed=args.seed or 0,
    )
    loads = [base]
    if args.sweep is not None:
        key, values = parse_sweep(args.sweep)
        if (key == "in-flight" and args.in_flight is not None) or (key == "rate" and args.rate is not None):
            raise Usage(f"--sweep {key}=... sets --{key}; give one or the other")
        loads = [base.with_value(key, v) for v in values]
    baselines = args.baselines if args.baselines is not None else args.target is None
    return Plan(tuple(loads), args.model_uri or DEFAULT_MODEL_URI, tuple(args.serve_arg or ()), args.target,
                args.server_pid, baselines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    command = f"{PROG} {shlex.join(argv)}".rstrip()
    if args.check:
        given = [f"--{name.replace('_', '-')}" for name in _LOAD_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            parser.error(f"--check runs its own cases: {', '.join(given)} does not apply")
        from sidecar.bench.check import main as check_main

        return check_main(args.json, command)
    try:
        plan = plan_from(args)
    except ValueError as e:
        parser.error(str(e))
    info = machine_info.machine()
    print(machine_info.line(info), flush=True)
    started_at = time.time()
    try:
        outcome = run(plan)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; servers and load processes stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, TimeoutError, OSError, grpc.RpcError) as e:
        kind = "" if isinstance(e, (LoadError, NotASidecar)) else f"{type(e).__name__}: "
        print(f"{PROG}: could not run: {kind}{e}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    table.show(table.results_table(outcome.results))
    if plan.baselines or any(c.bound for c in outcome.comparisons):
        table.show(table.ratios_table(outcome.comparisons))
    if args.json is not None:
        report.write(args.json, report.as_json(outcome, plan, info, command, started_at))
        print(f"results written to {args.json}")
    if args.plot is not None:
        title = f"gpu-sidecar bench: {outcome.info.backend} {outcome.info.model_uri} ({info['commit']})"
        if plot(outcome.results, args.plot, title):
            print(f"plot written to {args.plot}")
        else:
            print(f"{PROG}: no plot: matplotlib is not installed (pip install 'gpu-sidecar[bench]')", file=sys.stderr)
    return EXIT_OK
