"""Reporters by name, as the command line gives them."""

from __future__ import annotations

import pytest

from sidecar.metrics.reporters.factory import create_reporters
from sidecar.metrics.reporters.log import LogReporter
from sidecar.metrics.reporters.prometheus import PrometheusReporter


def test_creates_reporters_in_the_order_named():
    prom, log = create_reporters(["prom", "log"], prometheus_port=9300, log_interval_s=15)
    assert isinstance(prom, PrometheusReporter) and prom.port == 9300
    assert isinstance(log, LogReporter) and log.interval_s == 15


def test_no_names_no_reporters():
    assert create_reporters([], prometheus_port=9249, log_interval_s=60) == []


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"\['statsd'\]; known: \['log', 'prom'\]"):
        create_reporters(["log", "statsd"], prometheus_port=9249, log_interval_s=60)
