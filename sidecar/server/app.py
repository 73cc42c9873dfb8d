"""The sidecar server: backends, actors, gRPC and health, started and stopped together.

Start order: gRPC and health listen first (NOT_READY, requests answered
UNAVAILABLE), then the backends load, then READY. Drain order: NOT_READY, new
requests refused UNAVAILABLE, queued and running ones finished, bounded by the
drain timeout, after which whatever is left is answered UNAVAILABLE; then stop.

Readiness follows the last report: READY while loaded, some backend instance is
up, not draining and not failed. A fatal fault (the pipeline's `on_fatal`: too
many hung instances, or none left that can load) turns NOT_READY, answers what
is in flight UNAVAILABLE, and ends `wait_fatal()`, on which `gpu-sidecar serve`
waits to exit with code 4.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from actors.messages import AbandonAll, Drain, FlushMetrics, GetCounts, GetSnapshot
from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.backends import registry
from sidecar.backends.base import Backend
from sidecar.clock import Clock, MonotonicClock
from sidecar.config import SidecarConfig
from sidecar.kserve import grpc_service as kserve_grpc
from sidecar.kserve.types import Model
from sidecar.kserve.views import model_statistics
from sidecar.kserve.http_app import KServeHttp
from sidecar.logs import event
from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.metrics.reporters.base import MetricReporter
from sidecar.metrics.reporters.factory import create_reporters
from sidecar.metrics.reporters.prometheus import PrometheusReporter
from sidecar.endpoint import grpc_address, unix_socket_path
from sidecar.server.health import SERVICE, Health
from sidecar.server.ingress import Ingress
from sidecar.server.pipeline import Pipeline, start_pipeline
from sidecar.server.reflection import enable_reflection
from sidecar.server.servicer import GpuSidecarServicer, add_to_server, model_info_message

log = logging.getLogger("sidecar.server")

# After the drain timeout, how long the UNAVAILABLE answers get to be written.
ABANDON_GRACE_S = 5.0
# How long stopping waits for actors (a hung executor is left behind).
ACTOR_STOP_S = 0.5
# Stopping the KServe HTTP front end waits this long for handlers still running
# (after a drain there are none).
KSERVE_HTTP_SHUTDOWN_S = 1.0
# A GetMetrics snapshot waits at most this long for the metrics actor to catch up.
SNAPSHOT_FLUSH_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class DrainReport:
    seconds: float
    completed: bool  # everything answered within the drain timeout
    abandoned: int  # requests answered UNAVAILABLE when the timeout passed


class SidecarServer:
    """`await start()` listens and loads the model; `await drain()` or `await stop()` ends it.

    Pass `backends` to serve prepared instances (tests inject fault-injecting
    mocks this way), and `make_backend` to make instances: the first ones when
    `backends` is not given, and the fresh ones that replace hung or dead ones.
    Without either, instances come from the registry.
    """

    def __init__(
        self,
        config: SidecarConfig,
        *,
        clock: Clock | None = None,
        backends: Sequence[Backend] | None = None,
        make_backend: Callable[[], Backend] | None = None,
        reporters: Sequence[MetricReporter] = (),
    ) -> None:
        self.config = config
        self._clock = clock or MonotonicClock()
        self._backends = backends
        self._make_backend = make_backend
        self._draining = False
        self._executors_up: int | None = None  # the last capacity report (None: none yet, all up)
        self._readiness: asyncio.Future[None] | None = None  # applies the wanted readiness, one at a time
        self._fatal_reason: str | None = None
        self._failed = asyncio.Event()
        self.metric_registry = MetricRegistry(
            [
                *create_reporters(
                    config.metrics_reporters,
                    prometheus_port=config.prometheus_port,
                    prometheus_host=config.prometheus_host,
                    log_interval_s=config.metrics_log_interval_s,
                ),
                *reporters,
            ]
        )
        root = root_group(self.metric_registry, socket.gethostname(), config.tm_id or socket.gethostname())
        self.metric_group = root.add_group("gpuSidecar")
        self._server: grpc.aio.Server | None = None
        self._pipeline: Pipeline | None = None
        self._ingress: Ingress | None = None
        self.health = Health()
        self.port: int | None = None  # the bound gRPC TCP port (useful with port 0)
        self.health_port: int | None = None
        self.kserve_http_port: int | None = None  # the KServe HTTP front end's bound port, if it runs
        self._kserve_grpc: kserve_grpc.KServeGrpcServicer | None = None
        self._kserve_http: KServeHttp | None = None
        self._http_runner: web.AppRunner | None = None

    @property
    def pipeline(self) -> Pipeline:
        assert self._pipeline is not None, "not started"
        return self._pipeline

    @property
    def address(self) -> str:
        """Where a client connects: the endpoint, with port 0 replaced by the real port."""
        address = grpc_address(self.config.endpoint)
        if address.startswith("unix:"):
            return address
        return f"{address.rsplit(':', 1)[0]}:{self.port}"

    async def start(self) -> None:
        """Listens at once (NOT_READY), then loads the model and turns READY."""
        await self.listen()
        await self.load()

    async def listen(self) -> None:
        config = self.config
        self._ingress = Ingress(asyncio.get_running_loop(), self._clock, config.max_outstanding)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", config.max_concurrent_streams),
            ]
        )
        self._servicer = GpuSidecarServicer(self._ingress, config, self.metric_registry)
        add_to_server(self._servicer, server)
        ready = lambda: self.health.ready  # noqa: E731
        if "grpc" in config.kserve_protocols:
            self._kserve_grpc = kserve_grpc.KServeGrpcServicer(self._ingress, ready, self._model_statistics)
            kserve_grpc.add_to_server(self._kserve_grpc, server)
        if "http" in config.kserve_protocols:
            self._kserve_http = KServeHttp(
                self._ingress, ready, self._model_statistics,
                max_body_bytes=config.max_message_bytes, max_json_bytes=config.kserve_http_max_json,
                max_inflight=config.kserve_http_max_inflight,
                bearer_token=config.kserve_http_token,
            )
        self.health.add_to_server(server)
        enable_reflection(
            (pb.DESCRIPTOR.services_by_name["GpuSidecar"].full_name, "grpc.health.v1.Health"), server
        )
        await self.health.set_ready(False)
        self.port = server.add_insecure_port(grpc_address(config.endpoint))
        await server.start()
        self._server = server
        self.health_port = await self.health.start_http(config.health_port, config.health_host)
        if self._kserve_http is not None:
            await self._start_kserve_http()
        await asyncio.to_thread(self.metric_registry.start)
        event(
            log, "listening", endpoint=self.address, health_port=self.health_port, grpc_service=SERVICE,
            prometheus_port=self.prometheus_port, kserve=",".join(config.kserve_protocols) or "off",
            kserve_http_port=self.kserve_http_port,
        )

    async def _start_kserve_http(self) -> None:
        assert self._kserve_http is not None
        # No access log (one line per request); a client that goes away cancels its
        # handler, so its stream closes and its queued items are withdrawn.
        runner = web.AppRunner(self._kserve_http.app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=KSERVE_HTTP_SHUTDOWN_S)
        await runner.setup()
        site = web.TCPSite(runner, self.config.kserve_http_host, self.config.kserve_http_port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._http_runner = runner
        self.kserve_http_port = runner.addresses[0][1]

    async def _model_statistics(self, model: Model) -> dict[str, Any]:
        """KServe's ModelStatistics for `model`, from the metrics actor's exact counts
        (both front ends answer it alike)."""
        pipeline = self._pipeline
        counts: dict[str, Any] = {}
        if pipeline is not None:
            counts = await asyncio.to_thread(pipeline.peers.metrics.ask, GetCounts(), timeout=SNAPSHOT_FLUSH_TIMEOUT_S)
        at = counts.get("last_batch_at")  # when the last batch ran, on the clock; as ms since the epoch
        last_inference_ms = 0 if at is None else int((time.time() - (self._clock.now() - at)) * 1000)
        return model_statistics(model, counts, last_inference_ms)

    @property
    def prometheus_port(self) -> int | None:
        """The Prometheus endpoint's bound port, if that reporter runs."""
        for reporter in self.metric_registry.reporters:
            if isinstance(reporter, PrometheusReporter):
                return reporter.port
        return None

    async def load(self) -> None:
        config = self.config
        started = time.monotonic()
        options = config.options_for(config.backend)
        make_backend = self._make_backend or (lambda: registry.create(config.backend, config.model_uri, options))
        backends = self._backends or [make_backend() for _ in range(config.instances)]
        assert self._ingress is not None, "listen() first"
        # Loading can take minutes on a real model; the loop keeps serving meanwhile.
        loop = asyncio.get_running_loop()
        self._pipeline = await asyncio.to_thread(
            start_pipeline,
            config,
            self._clock,
            backends,
            self._ingress.deliver,
            self.metric_group,
            make_backend=make_backend,
            on_drained=self._drained,
            on_capacity=_on_loop(loop, self._capacity_changed),
            on_fatal=_on_loop(loop, self._fatal),
        )
        info = self._pipeline.info
        self._servicer.set_model(
            model_info_message(backends[0].name, info, self._pipeline.batch_size, config), info.spec.inputs,
            info.spec.outputs,
        )
        model = Model(config.model_name, str(config.model_version), backends[0].name, info.spec,
                      self._pipeline.batch_size, config.instances, config.batch_timeout_s,
                      max_items=min(config.max_outstanding, config.max_queue_length, config.max_per_stream or 1 << 62))
        for front in (self._kserve_grpc, self._kserve_http):
            if front is not None:
                front.model = model
        self._ingress.attach(self._pipeline.peers.session, self._pipeline.peers.metrics)
        metrics_ref = self._pipeline.peers.metrics
        self.metric_registry.before_snapshot = lambda: metrics_ref.ask(FlushMetrics(), timeout=SNAPSHOT_FLUSH_TIMEOUT_S)
        self._servicer.structures = self._structures
        event(
            log, "backend loaded", backend=backends[0].name, instances=config.instances,
            max_batch=self._pipeline.batch_size, load_s=round(time.monotonic() - started, 3),
        )
        await self._follow_readiness()
        if self.health.ready:
            event(log, "ready", endpoint=self.address)

    async def _structures(self) -> dict[str, int]:
        """Sizes of the long-lived structures of the ingress and of each actor."""
        assert self._ingress is not None
        sizes = {f"ingress.{k}": v for k, v in self._ingress.sizes().items()}
        pipeline = self._pipeline
        if pipeline is not None:
            peers = pipeline.peers
            for name, ref in (("session", peers.session), ("admission", peers.admission), ("batcher", peers.batcher)):
                try:
                    snapshot = await asyncio.to_thread(ref.ask, GetSnapshot(), timeout=5)
                except Exception:  # a stopping or wedged actor: report what can be read
                    continue
                sizes.update({f"{name}.{k}": v for k, v in snapshot.get("sizes", {}).items()})
        return sizes

    @property
    def fatal_reason(self) -> str | None:
        """Why the sidecar failed for good (see wait_fatal), or None."""
        return self._fatal_reason

    async def wait_fatal(self) -> str:
        """Returns, with the reason, once the pipeline has reported a fatal fault."""
        await self._failed.wait()
        assert self._fatal_reason is not None
        return self._fatal_reason

    def _capacity_changed(self, executors_up: int) -> None:
        """Ready only while some backend instance is up (and not draining). On the event
        loop; the last report wins, however many arrive in one loop pass."""
        self._executors_up = executors_up
        self._follow_readiness()

    def _fatal(self, reason: str) -> None:
        """The pipeline cannot recover in-process (on the event loop, once)."""
        if self._fatal_reason is not None:
            return
        self._fatal_reason = reason
        event(log, "fatal", level=logging.CRITICAL, reason=reason)
        try:
            self._follow_readiness()  # NOT_READY
            if self._pipeline is not None:  # what is in flight is answered now, not after a timeout
                self._pipeline.peers.session.tell(AbandonAll(f"the sidecar is exiting after a fatal fault: {reason}"))
        finally:
            self._failed.set()  # whatever happened above, the exit must not wait on it

    def _wants_ready(self) -> bool:
        up = self._executors_up
        return (
            self._pipeline is not None
            and (up is None or up > 0)
            and not self._draining
            and self._fatal_reason is None
        )

    def _follow_readiness(self) -> asyncio.Future[None]:
        """Brings health to what is wanted now; one applier at a time, so that reports
        in one loop pass cannot overtake each other (set_ready is a coroutine)."""
        if self._readiness is None or self._readiness.done():
            self._readiness = asyncio.ensure_future(self._apply_readiness())
        return self._readiness

    async def _apply_readiness(self) -> None:
        while (ready := self._wants_ready()) != self.health.ready:
            event(log, "readiness changed", ready=ready, executors_up=self._executors_up)
            await self.health.set_ready(ready)

    def _drained(self) -> None:
        event(log, "batcher drained")  # called on the batcher's thread

    async def drain(self, timeout_s: float | None = None) -> DrainReport:
        """Finishes what is in flight (bounded), refusing new work, then stops."""
        timeout_s = self.config.drain_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        ingress = self._ingress
        self._draining = True
        await self._follow_readiness()  # NOT_READY, through the one applier, so no report overtakes it
        abandoned = 0
        completed = True
        if ingress is not None:
            event(log, "drain started", open_streams=ingress.open_streams, outstanding=ingress.outstanding, timeout_s=timeout_s)
            ingress.start_draining()
            if self._pipeline is not None:
                peers = self._pipeline.peers
                peers.admission.tell(Drain())
                peers.batcher.tell(Drain())
            completed = await ingress.wait_idle(timeout_s)
            if not completed:
                abandoned = ingress.outstanding
                if self._pipeline is not None:
                    reason = f"the sidecar is shutting down and its drain timeout of {timeout_s:g} s passed"
                    self._pipeline.peers.session.tell(AbandonAll(reason))
                await ingress.wait_idle(ABANDON_GRACE_S)
        report = DrainReport(round(time.monotonic() - started, 3), completed, abandoned)
        event(log, "drain finished", seconds=report.seconds, completed=completed, abandoned=abandoned)
        await self.stop()
        return report

    async def stop(self, grace_s: float | None = 1.0) -> None:
        await self.health.set_ready(False)
        await self.health.stop_http()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
            _remove_unix_socket(self.config.endpoint)
        if self._pipeline is not None:
            stuck = await asyncio.to_thread(self._pipeline.stop, ACTOR_STOP_S)
            if stuck:
                event(log, "actors left running", level=logging.WARNING, actors=",".join(stuck))
            self._pipeline = None
        self.metric_registry.before_snapshot = None  # its metrics actor is gone
        await asyncio.to_thread(self.metric_registry.close)
        event(log, "stopped")


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None]) -> Callable[[Any], None]:
    """A callback for another thread that runs `callback` on the loop (dropped once the loop has closed)."""

    def call(arg: Any) -> None:
        try:
            loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:
            pass  # the loop is closed: the server has stopped

    return call


def _remove_unix_socket(endpoint: str) -> None:
    path = unix_socket_path(endpoint)
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
