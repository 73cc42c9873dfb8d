"""The clock and the one-shot timer the actors are given.

Only actor constructors and the server wiring see a clock; the core is handed
`now` as a number. Production uses the monotonic clock below; tests use
tests/fakes.py, whose time moves only when the test says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

TimerCallback = Callable[[float], None]  # called with the time the timer was armed for


class Timer(Protocol):
    def arm(self, at: float | None) -> None:
        """Fire once at `at` (clock time), replacing any earlier arming; None disarms."""

    def close(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""

    def timer(self, callback: TimerCallback) -> Timer: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def timer(self, callback: TimerCallback) -> Timer:
        return ThreadTimer(self, callback)


class ThreadTimer:
    """One long-lived thread per timer: re-arming, which happens per batch, is a
    condition notify rather than a thread start."""

    def __init__(self, clock: Clock, callback: TimerCallback) -> None:
        self._clock = clock
        self._callback = callback
        self._cond = threading.Condition()
        self._at: float | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sidecar-timer", daemon=True)
        self._thread.start()

    def arm(self, at: float | None) -> None:
        with self._cond:
            earlier = at is not None and (self._at is None or at < self._at)
            self._at = at
            # Later or disarmed: the thread finds out when it wakes for the old
            # time and waits on. Re-arming happens per batch; a wake-up each
            # time was a thread hand-off on the hot path.
            if earlier:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._at is None:
                        self._cond.wait()
                        continue
                    delay = self._at - self._clock.now()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._closed:
                    return
                at, self._at = self._at, None
            self._callback(at)
