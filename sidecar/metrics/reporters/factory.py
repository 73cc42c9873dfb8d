"""Reporters by the names the command line uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sidecar.metrics.reporters.base import MetricReporter
from sidecar.metrics.reporters.log import LogReporter
from sidecar.metrics.reporters.prometheus import PrometheusReporter


def create_reporters(
    names: Sequence[str], *, prometheus_port: int, log_interval_s: float, prometheus_host: str = "0.0.0.0"
) -> list[MetricReporter]:
    makers: dict[str, Callable[[], MetricReporter]] = {
        "prom": lambda: PrometheusReporter(port=prometheus_port, host=prometheus_host),
        "log": lambda: LogReporter(interval_s=log_interval_s),
    }
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ValueError(f"unknown metric reporter(s) {unknown}; known: {sorted(makers)}")
    return [makers[n]() for n in names]
