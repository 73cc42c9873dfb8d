"""Metrics actor: the one place outcome counts and batch statistics add up.

For now it keeps plain counters and a batch-size tally; the Flink-style metric
registry will sit behind the same messages.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pykka

from actors.messages import BatchExecuted, Connect, GetCounts, OutcomesCounted

log = logging.getLogger(__name__)


class MetricsActor(pykka.ThreadingActor):
    # A hung backend call must not keep the process alive after shutdown.
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self._outcomes: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._batches_failed = 0

    def on_receive(self, message: Any) -> Any:
        match message:
            case OutcomesCounted(counts):
                self._outcomes.update(dict(counts))
            case BatchExecuted(_, size, _, ok):
                self._batch_sizes[size] += 1
                self._batches_failed += not ok
            case GetCounts():
                return {
                    "outcomes": dict(self._outcomes),
                    "batch_sizes": dict(self._batch_sizes),
                    "batches_failed": self._batches_failed,
                }
            case Connect():
                pass
            case _:
                log.error("metrics: unexpected message %r", message)
        return None
