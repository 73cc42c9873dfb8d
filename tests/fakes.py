"""A clock whose time moves only when the test says so, and its manual timers."""

from __future__ import annotations

import threading

from sidecar.clock import TimerCallback


# Timers due within this much of the target time fire: sums of float steps
# (0.006 + 0.003 + 0.001) land a rounding error short of the sum written at once.
RESOLUTION_S = 1e-9


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[ManualTimer] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def timer(self, callback: TimerCallback) -> ManualTimer:
        t = ManualTimer(callback)
        with self._lock:
            self._timers.append(t)
        return t

    def advance(self, seconds: float) -> None:
        """Moves time forward, firing (in this thread) every timer that comes due."""
        target = self._now + seconds
        while True:
            due = [t for t in self._timers if t.at is not None and t.at <= target + RESOLUTION_S]
            if not due:
                break
            first = min(due, key=lambda t: t.at)
            self._now = max(self._now, first.at)
            first.fire()
        self._now = target


class ManualTimer:
    def __init__(self, callback: TimerCallback) -> None:
        self._callback = callback
        self.at: float | None = None
        self.closed = False

    def arm(self, at: float | None) -> None:
        self.at = at

    def close(self) -> None:
        self.closed = True
        self.at = None

    def fire(self) -> None:
        at, self.at = self.at, None
        if at is not None:
            self._callback(at)
