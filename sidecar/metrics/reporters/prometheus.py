"""Prometheus exposition, named as Flink's PrometheusReporter names things.

A metric `queueDepth` in group `<host>.taskmanager.<tm_id>.gpuSidecar` becomes

    flink_taskmanager_gpuSidecar_queueDepth{host="h1",tm_id="tm1"} 3.0

i.e. `flink_` + logical scope ('.' -> '_') + '_' + name, with every character
outside [a-zA-Z0-9_:] replaced by '_', and the group's variables as labels.
Counters and gauges are Prometheus gauges (Flink counters may go down), meters
a gauge of their rate, histograms summaries with quantiles, `_count`, `_sum`.
Metrics that differ only in labels (one per instance) share one family.

Values are read at scrape time by a custom collector in the reporter's own
CollectorRegistry, so nothing is copied between scrapes and the process-wide
prometheus_client registry stays untouched.

The endpoint (`GET /metrics`, and `/` as prometheus_client serves it) is a
bounded `HttpEndpoint` (sidecar/http_endpoint.py) on the reporter's own event
loop in its own daemon thread, so a scrape never runs on the gRPC loop.
Scrapes whose requests arrive together share one render: each waits for the
next render to start, so every scrape still reads values taken after it
arrived, and a burst of 500 scrapes costs a few renders instead of 500.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric as PromFamily

from sidecar.http_endpoint import HttpEndpoint, HttpLimits, Response
from sidecar.logs import event
from sidecar.metrics.registry import MetricValue, TrackedMetrics, read_value
from sidecar.metrics.reporters.tracking import TrackingReporter
from sidecar.metrics.types import QUANTILES

log = logging.getLogger(__name__)

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
PREFIX = "flink_"


def prometheus_name(logical_scope: str, name: str) -> str:
    return PREFIX + _INVALID.sub("_", logical_scope.replace(".", "_") + "_" + name)


def label_name(variable: str) -> str:
    return _INVALID.sub("_", variable)


# How long open() waits for the endpoint's thread to bind, and close() for it to
# stop: both take milliseconds; a thread that takes longer is left behind (daemon).
_THREAD_WAIT_S = 5.0
PATHS = ("/metrics", "/")
# What generate_latest writes (the text format 0.0.4), as prometheus_client's own server says.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PrometheusReporter(TrackingReporter):
    def __init__(self, port: int = 9249, host: str = "0.0.0.0", http_limits: HttpLimits = HttpLimits()) -> None:
        self._requested_port = port
        self._host = host
        self._http_limits = http_limits
        super().__init__()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self._tracked))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._endpoint: HttpEndpoint | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._next: asyncio.Future[Response] | None = None  # the render the waiting scrapes share
        self._renders = 0

    @property
    def port(self) -> int:
        """The bound port (the real one when asked for port 0); the requested one before open()."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def endpoint(self) -> HttpEndpoint | None:
        """The HTTP endpoint while open (runs on the reporter's thread)."""
        return self._endpoint

    def open(self, config: Mapping[str, str]) -> None:
        """Binds and starts serving; an error (port in use) propagates."""
        started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, HttpEndpoint]] = concurrent.futures.Future()
        thread = threading.Thread(target=self._serve, args=(started,), name="metrics-prometheus-http", daemon=True)
        thread.start()
        self._loop, self._endpoint = started.result(_THREAD_WAIT_S)
        self._bound_port = self._endpoint.address[1]
        self._thread = thread
        event(log, "prometheus reporter listening", host=self._host, port=self.port)

    def close(self) -> None:
        """Stops the endpoint and frees the port; prompt, and harmless twice."""
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its thread has ended already
                loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(_THREAD_WAIT_S)
        self._endpoint = self._bound_port = None

    def _serve(self, started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, HttpEndpoint]]) -> None:
        loop = asyncio.new_event_loop()
        self._next = None  # a render of a previous open()'s loop is never run
        endpoint = HttpEndpoint(dict.fromkeys(PATHS, self._exposition), self._http_limits, name="prometheus")
        try:
            loop.run_until_complete(endpoint.start(self._host, self._requested_port))
        except BaseException as e:  # noqa: BLE001 - handed to open()
            loop.close()
            started.set_exception(e)
            return
        started.set_result((loop, endpoint))
        try:
            loop.run_forever()  # until close() stops it
        finally:
            loop.run_until_complete(endpoint.close())  # releases the port
            loop.close()

    @property
    def renders(self) -> int:
        """Expositions rendered so far (fewer than scrapes when scrapes arrive together)."""
        return self._renders

    async def _exposition(self) -> Response:
        # The render runs on the loop's next turn: every scrape whose request is
        # read before then joins it.
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
            loop.call_soon(self._render)
        return await asyncio.shield(self._next)

    def _render(self) -> None:
        shared, self._next = self._next, None
        assert shared is not None
        self._renders += 1
        try:
            shared.set_result(Response(HTTPStatus.OK, generate_latest(self._registry), CONTENT_TYPE))
        except Exception as e:  # noqa: BLE001 - every waiting scrape answers 500
            shared.set_exception(e)


class _Collector:
    def __init__(self, tracked: TrackedMetrics) -> None:
        self._tracked = tracked

    def collect(self) -> Iterable[PromFamily]:
        families: dict[str, PromFamily] = {}
        seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        for v in map(read_value, self._tracked.all()):
            if v is None:  # a gauge that is not a number
                continue
            name = prometheus_name(v.logical_scope, v.name)
            typ = "summary" if v.kind == "histogram" else "gauge"
            family = families.get(name)
            if family is None:
                family = families[name] = PromFamily(name, f"{v.name} (scope: {v.logical_scope})", typ)
            labels = {label_name(k): value for k, value in v.variables.items()}
            series = (name, frozenset(labels.items()))
            if family.type != typ or series in seen:
                # Two metrics that collapse to one series: exposing both would make
                # the whole scrape invalid, so the first one wins.
                event(log, "prometheus series clash", logging.DEBUG, identifier=v.identifier, name=name)
                continue
            seen.add(series)
            _add_samples(family, labels, v)
        return list(families.values())


def _add_samples(family: PromFamily, labels: dict[str, str], v: MetricValue) -> None:
    match v.kind:
        case "counter":
            family.add_sample(family.name, labels, float(v.count))
        case "gauge":
            family.add_sample(family.name, labels, v.value)
        case "meter":
            family.add_sample(family.name, labels, v.rate)
        case "histogram":
            for q in QUANTILES:
                family.add_sample(family.name, {**labels, "quantile": str(q)}, v.quantiles[q])
            family.add_sample(family.name + "_count", labels, float(v.count))
            family.add_sample(family.name + "_sum", labels, v.sum)
