"""Starts the actors, connects them, and stops them in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import time
from dataclasses import dataclass

import pykka

from actors.admission import AdmissionActor
from actors.batcher import BatcherActor
from actors.messages import Connect, LoadBackend, Peers, ServiceRate
from actors.metrics import MetricsActor
from actors.session import Deliver, SessionActor
from sidecar.backends.base import Backend, BackendInfo
from sidecar.clock import Clock
from sidecar.config import SidecarConfig
from sidecar.core.batcher import estimated_service_rate
from sidecar.metrics.group import MetricGroup
from sidecar.server.executor_pool import ExecutorPool

# Bounds every wait the wiring does on an actor (a backend load included).
LOAD_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Pipeline:
    peers: Peers
    info: BackendInfo
    batch_size: int  # the smaller of the config's and the backend's limit
    pool: ExecutorPool  # the same executors as peers.executors, with the wiring's own calls

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Asks every actor to stop and waits up to `timeout_s` in all.

        Returns the actors that did not stop in time (an executor stuck in a hung
        backend call, say); their threads are daemons and end with the process.
        """
        p = self.peers
        refs = {"session": p.session, "admission": p.admission, "batcher": p.batcher, "metrics": p.metrics}
        self.pool.retire_all()  # what they finish from now on is dropped
        refs.update({f"executor {i}": ref for i, ref in enumerate(self.pool.refs())})
        futures = {name: ref.stop(block=False) for name, ref in refs.items()}
        deadline = time.monotonic() + timeout_s
        stuck = []
        for name, future in futures.items():
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                stuck.append(name)
        return stuck


def start_pipeline(
    config: SidecarConfig,
    clock: Clock,
    backends: Sequence[Backend],
    deliver: Deliver,
    metrics: MetricGroup,
    *,
    make_backend: Callable[[], Backend] | None = None,
    on_drained: Callable[[], None] = lambda: None,
    on_capacity: Callable[[int], None] = lambda up: None,
    on_fatal: Callable[[str], None] = lambda reason: None,
) -> Pipeline:
    """Loads every backend (each in its executor's thread) and wires the actors.

    `metrics` is the group the metrics actor registers its metrics in (gpuSidecar);
    `make_backend` makes the fresh instance that replaces a hung or dead one (it is
    called in the new executor's thread). The callbacks are called on the batcher's
    thread: `on_capacity` with the executors up whenever that changes, `on_fatal`
    once, with the reason, when the pipeline cannot recover in-process (too many
    hung instances, or none left that can load) and the process should exit.
    """
    if len(backends) != config.instances:
        raise ValueError(f"{config.instances} instances configured but {len(backends)} backends given")
    pool = ExecutorPool(make_backend or _cannot_replace, clock, max_batch=config.max_batch_size)
    executors = [pool.start(i, backend=b) for i, b in enumerate(backends)]
    started: list[pykka.ActorRef] = list(executors)
    try:
        infos = [ref.ask(LoadBackend(), timeout=LOAD_TIMEOUT_S) for ref in executors]
        info = infos[0]
        if any(i.spec != info.spec for i in infos):
            raise ValueError("backend instances disagree on the model's inputs and outputs")
        limits = config.batch_limits(info.max_batch_size)
        metrics_actor = MetricsActor.start(metrics, clock, config.instances, config.histogram_window)
        started.append(metrics_actor)
        batcher = BatcherActor.start(limits, clock, info, on_drained, on_capacity, on_fatal)
        started.append(batcher)
        admission = AdmissionActor.start(config.admission_limits(), clock)
        started.append(admission)
        # Before any traffic: a cold server's retry hints come from this, not the ceiling.
        admission.tell(ServiceRate(estimated_service_rate(limits, config.instances, None)))
        session = SessionActor.start(deliver, clock)
        started.append(session)
    except BaseException:
        for ref in started:
            ref.stop(block=False)
        raise
    peers = Peers(session, admission, batcher, pool, metrics_actor)
    pool.peers = peers
    for ref in started:
        ref.tell(Connect(peers))
    return Pipeline(peers, info, limits.max_batch_size, pool)


def _cannot_replace() -> Backend:
    raise RuntimeError("no backend factory was given, so a failed instance cannot be replaced")
