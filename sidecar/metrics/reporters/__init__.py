"""Where metrics go: Prometheus, the log, or memory (for tests).

Import reporters from their modules; `create_reporters` in `factory` builds them
from the names on the command line.
"""

from sidecar.metrics.reporters.base import MetricReporter, ScheduledReporter

__all__ = ["MetricReporter", "ScheduledReporter"]
