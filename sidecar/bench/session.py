"""One bench invocation's means: the load processes, the servers it started (or the
one it was pointed at), the progress bar, and `measure`, which runs one load
against one server and reads the server at both ends of the measured interval:
its CPU time (/proc/<pid>/stat) and its batch-size histogram (GetMetrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecar.bench import load as load_process
from sidecar.bench import servers
from sidecar.bench.pool import Pool
from sidecar.bench.probe import Probe, mean_between
from sidecar.bench.progress import Display
from sidecar.bench.results import Result, merge
from sidecar.bench.spec import InputSpec, Load

READY_TIMEOUT_S = 60.0


@dataclass
class Target:
    name: str  # "sidecar", "echo", or the address it was pointed at
    address: str
    pid: int | None  # for its CPU time; None: not known, CPU per request is n/a
    probe: Probe
    echo: bool = False  # the baseline: no metrics, no model
    server: servers.Server | None = field(default=None, repr=False)  # set when this tool started it


class Session:
    def __init__(self, procs: int) -> None:
        self.display = Display()
        self.pool = Pool(procs)
        self._targets: list[Target] = []

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_sidecar(self, model_uri: str, serve_args: tuple[str, ...] = (), name: str = "sidecar") -> Target:
        server = servers.start(name, servers.sidecar_command(model_uri, serve_args))
        return self._add(Target(name, server.address, server.pid, Probe(server.address), server=server))

    def start_echo(self, name: str = "echo") -> Target:
        server = servers.start(name, servers.echo_command())
        return self._add(Target(name, server.address, server.pid, Probe(server.address), echo=True, server=server))

    def attach(self, address: str, pid: int | None) -> Target:
        return self._add(Target(address, address, pid, Probe(address)))

    def _add(self, target: Target) -> Target:
        self._targets.append(target)
        try:
            target.probe.wait_ready(READY_TIMEOUT_S)
        except BaseException:
            self.stop(target)
            raise
        return target

    def stop(self, target: Target) -> None:
        target.probe.close()
        if target.server is not None:
            target.server.stop()
        if target in self._targets:
            self._targets.remove(target)

    def close(self) -> None:
        self.display.close()
        self.pool.close()
        for target in list(self._targets):
            self.stop(target)

    def measure(self, target: Target, load: Load, inputs: tuple[InputSpec, ...], case: str) -> Result:
        if load.procs != self.pool.procs:
            raise ValueError(f"this session runs {self.pool.procs} load processes, not {load.procs}")
        readings: dict[str, Any] = {}

        def read(at: str) -> None:
            readings[f"cpu_{at}"] = servers.cpu_seconds(target.pid) if target.pid is not None else None
            readings[f"batch_{at}"] = None if target.echo else target.probe.batch_sizes()

        def until(t: float) -> bool:
            if load.seconds is not None:
                return t >= load.seconds
            return self.pool.totals()[load_process.MEASURED] >= (load.count or 0)

        total, unit = (load.seconds, "seconds") if load.seconds is not None else (float(load.count or 0), "requests")
        self.display.begin(f"{target.name} {case}", load.warmup_s, total, unit)
        tallies, t_measure, t_end = self.pool.run(
            load.shares(target.address, inputs), load.warmup_s, until,
            lambda t: self.display.update(t, self.pool.totals()), lambda: read("start"), lambda: read("end"),
        )
        cpu = None
        if readings["cpu_start"] is not None and readings["cpu_end"] is not None:
            cpu = readings["cpu_end"] - readings["cpu_start"]
        return merge(case, target.name, load, tallies, t_end - t_measure, cpu,
                     mean_between(readings["batch_start"], readings["batch_end"]))
