"""A PyFlink job through the sidecar: N records, parallelism P, every result checked.

With `--start-sidecar` it starts its own sidecar (default mock backend: output =
input * 2) on a unix socket, and stops it at the end:

    .venv-flink/bin/python examples/pyflink_job.py --start-sidecar
    .venv-flink/bin/python examples/pyflink_job.py --start-sidecar --sidecar-setting sidecar.batch.max-size=1

or it uses one already running:

    .venv-flink/bin/gpu-sidecar serve -D sidecar.rpc.endpoint=unix:///tmp/gpu-sidecar.sock &
    .venv-flink/bin/python examples/pyflink_job.py --target unix:///tmp/gpu-sidecar.sock

The records go through `SidecarAsyncFunction` with `unordered_wait_with_retry`
(or `unordered_wait` with `--no-flink-retry`), each answer is checked against
the mock's function, and a keyed reduce in BATCH mode brings back one line: how
many records came back and how many were wrong, so nothing per record is
collected. Meanwhile the driver reads the sidecar's metrics, and prints its
records/s (first request to last answer, so Flink's start-up is not counted)
and the batch sizes the sidecar formed. Exit status 0 only if every record came
back right. `--json` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import grpc
import numpy as np
from pyflink.common import Configuration, Time, Types
from pyflink.datastream import AsyncDataStream, RuntimeExecutionMode, StreamExecutionEnvironment

from sidecar.bench import servers
from sidecar.bench.probe import Probe, mean_between
from sidecar.flink import NumpyCodec, SidecarAsyncFunction

DIM = 16  # the mock backend's default width


def features(i: int) -> list[float]:
    return [float((i * 31 + k) % 1000) for k in range(DIM)]


def check(record: tuple[int, list[float]]) -> tuple[int, int, int]:
    """(key, 1, 1 if wrong): the mock answers input * 2."""
    i, output = record
    wrong = not np.array_equal(np.asarray(output, np.float32), np.asarray(features(i), np.float32) * 2)
    return (0, 1, int(wrong))


@dataclass
class Outcome:
    records: int
    returned: int
    wrong: int
    seconds: float  # first request seen by the sidecar to the last answer
    records_per_s: float
    mean_batch: float | None
    sidecar_succeeded: int
    sidecar_rejected: int
    job_seconds: float  # env.execute, Flink's start-up included


class SidecarWatch(threading.Thread):
    """Polls the sidecar's counters while the job runs: when the first request came and the last answer left."""

    def __init__(self, probe: Probe, expected: int) -> None:
        super().__init__(daemon=True)
        self.probe, self.expected = probe, expected
        self.first: float | None = None
        self.last: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        base = self.probe.counters()
        while not self.done.wait(0.02):
            try:
                now, seen = time.monotonic(), self.probe.counters()
            except grpc.RpcError:
                continue  # the sidecar is restarting
            if seen.get("requestsReceived", 0) < base.get("requestsReceived", 0):
                base = {}  # a new sidecar: its counters start again from 0
            received = seen.get("requestsReceived", 0) - base.get("requestsReceived", 0)
            succeeded = seen.get("requestsSucceeded", 0) - base.get("requestsSucceeded", 0)
            if received and self.first is None:
                self.first = now
            if succeeded >= self.expected and self.last is None:
                self.last = now


def build(env: StreamExecutionEnvironment, args: argparse.Namespace):
    records = [(i, features(i)) for i in range(args.records)]
    row = Types.TUPLE([Types.INT(), Types.PRIMITIVE_ARRAY(Types.FLOAT())])
    source = env.from_collection(records, type_info=row).rebalance()
    codec = NumpyCodec(select=lambda r: r[1], emit=lambda r, out: (r[0], out.tolist()))
    fn = SidecarAsyncFunction(
        args.target,
        codec,
        timeout_s=args.sidecar_timeout_s,
        max_in_flight=args.max_in_flight,
        ride_out=args.ride_out,
    )
    if args.flink_retry:
        strategy = fn.retry_strategy(max_attempts=args.retries, initial_delay_ms=20, max_delay_ms=1000)
        results = AsyncDataStream.unordered_wait_with_retry(
            source, fn, Time.seconds(args.flink_timeout_s), strategy, args.capacity, row
        )
    else:
        results = AsyncDataStream.unordered_wait(source, fn, Time.seconds(args.flink_timeout_s), args.capacity, row)
    counted = results.map(check, output_type=Types.TUPLE([Types.INT(), Types.INT(), Types.INT()]))
    return counted.key_by(lambda c: c[0]).reduce(lambda a, b: (0, a[1] + b[1], a[2] + b[2]))


def run(args: argparse.Namespace) -> Outcome:
    config = Configuration()
    config.set_string("python.executable", sys.executable)  # else workers look for `python`
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)  # the reduce emits once, at the end
    env.set_parallelism(args.parallelism)
    probe = Probe(args.target)
    try:
        probe.wait_ready(30.0)
        before = probe.batch_sizes()
        watch = SidecarWatch(probe, args.records)
        counts_before = probe.counters()
        watch.start()
        started = time.monotonic()
        with build(env, args).execute_and_collect("gpu-sidecar example") as rows:
            totals = list(rows)
        job_seconds = time.monotonic() - started
        time.sleep(0.1)
        watch.done.set()
        watch.join()
        counts_after = probe.counters()
        mean_batch = mean_between(before, probe.batch_sizes())
    finally:
        probe.close()
    returned = sum(t[1] for t in totals)
    wrong = sum(t[2] for t in totals)
    span = (watch.last or time.monotonic()) - (watch.first or started)
    delta = {k: v - counts_before.get(k, 0) for k, v in counts_after.items()}
    return Outcome(
        records=args.records,
        returned=returned,
        wrong=wrong,
        seconds=round(span, 3),
        records_per_s=round(args.records / span, 1) if span > 0 else 0.0,
        mean_batch=None if mean_batch is None else round(mean_batch, 2),
        sidecar_succeeded=delta.get("requestsSucceeded", 0),
        sidecar_rejected=delta.get("requestsRejected", 0),
        job_seconds=round(job_seconds, 2),
    )


@contextlib.contextmanager
def own_sidecar(settings: Sequence[str]) -> Iterator[str]:
    """`gpu-sidecar serve` on a fresh unix socket, for the job's length; yields its target."""
    folder = tempfile.mkdtemp(prefix="gs-", dir="/tmp")  # unix socket paths are short
    command = [sys.executable, "-m", "sidecar.cli", "serve", "--health-port", "0", "--kserve-http-port", "0", "--metrics-prometheus-port", "0"]
    for setting in (f"sidecar.rpc.endpoint=unix://{folder}/sidecar.sock", *settings):
        command += ["-D", setting]
    try:
        server = servers.start("sidecar", command)  # returns once it serves; its log shown if it cannot
        try:
            yield server.address
        finally:
            code = server.stop()
            if code not in (0, -signal.SIGTERM):
                print(f"the sidecar exited with code {code}", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="127.0.0.1:7651", help="the sidecar: host:port or unix:///path")
    p.add_argument("--start-sidecar", action="store_true", help="start a sidecar of its own (ignores --target)")
    p.add_argument(
        "--sidecar-setting", action="append", default=[], metavar="KEY=VALUE", help="for --start-sidecar, as -D"
    )
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--capacity", type=int, default=100, help="records in flight per subtask")
    p.add_argument(
        "--max-in-flight", type=int, default=None, help="per subtask's stream (default: from the sidecar's limits)"
    )
    p.add_argument("--sidecar-timeout-s", type=float, default=30.0, help="each record's timeout, in the sidecar")
    p.add_argument(
        "--flink-timeout-s", type=float, default=120.0, help="Flink's timeout (0: none; retry mode needs one)"
    )
    p.add_argument("--no-flink-retry", dest="flink_retry", action="store_false", help="unordered_wait, no retries")
    p.add_argument("--retries", type=int, default=20, help="Flink retries per record")
    p.add_argument(
        "--no-ride-out", dest="ride_out", action="store_false", help="records fail at once while the sidecar is away"
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.flink_retry and args.flink_timeout_s <= 0:
        p.error("Flink's retry mode needs --flink-timeout-s > 0 (or pass --no-flink-retry)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.start_sidecar:
        with own_sidecar(args.sidecar_setting) as target:
            args.target = target
            outcome = run(args)
    else:
        outcome = run(args)
    if args.json:
        print(json.dumps(asdict(outcome)))
    else:
        for key, value in asdict(outcome).items():
            print(f"{key:>18}: {value}")
    ok = outcome.returned == outcome.records and outcome.wrong == 0
    if not ok:
        print(f"FAILED: {outcome.returned} of {outcome.records} records came back, {outcome.wrong} wrong", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
