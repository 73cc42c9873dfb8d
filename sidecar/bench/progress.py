"""The progress bar while a run goes: rich on a terminal, silent elsewhere (CI logs
get one line per run from the caller instead)."""

from __future__ import annotations

import sys
from typing import Any


class Display:
    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._last: tuple[float, int] | None = None
        if sys.stdout.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                      TextColumn("{task.fields[figures]}"), transient=True)
            self._progress.start()

    def begin(self, title: str, warmup_s: float, total: float, unit: str) -> None:
        """A new bar: `total` seconds of measuring, or `total` requests when `unit` is 'requests'."""
        self._warmup_s, self._unit, self._last = warmup_s, unit, None
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(title, total=total, figures="warming up")

    def update(self, t: float, totals: list[int]) -> None:
        """`t`: seconds since the measured interval began (negative in the warm-up);
        `totals`: sent, answered OK, failed, settled since the interval began."""
        if self._progress is None or self._task is None:
            return
        sent, ok, failed, measured = totals
        rate = ""
        if self._last is not None and t > self._last[0]:
            rate = f"{(ok - self._last[1]) / (t - self._last[0]):>9,.0f} req/s  "
        if self._last is None or t - self._last[0] >= 0.5:
            self._last = (t, ok)
        phase = "warming up" if t < 0 else "measuring"
        figures = f"{phase}: {rate}sent {sent:,}  ok {ok:,}  failed {failed:,}"
        done = max(0.0, t) if self._unit == "seconds" else measured
        self._progress.update(self._task, completed=done, figures=figures)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
