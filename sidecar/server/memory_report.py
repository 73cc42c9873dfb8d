"""What the server's memory looks like now, for the soak (docs/soak.md).

Traced memory and its growth by allocation site come from tracemalloc, when the
process runs with it (PYTHONTRACEMALLOC=1 or -X tracemalloc); RSS, threads and
open fds from /proc. A garbage collection runs first, so that growth means
memory still reachable, not garbage not yet collected; and glibc's malloc_trim,
so that RSS counts memory in use rather than the free memory the allocator
keeps for reuse (which follows the highest load seen, not what is held).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

# Allocations of the snapshotting itself are not the server's.
_IGNORED = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<unknown>")


@dataclass(frozen=True, slots=True)
class Growth:
    site: str  # file:line
    size_diff_bytes: int
    count_diff: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Memory:
    tracing: bool
    traced_bytes: int
    traced_peak_bytes: int
    rss_bytes: int
    threads: int
    open_fds: int
    has_baseline: bool
    top_growth: list[Growth] = field(default_factory=list)


def _malloc_trim() -> None:
    """Hands free heap memory back to the OS, where the C library is glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS then includes the allocator's free memory


class MemoryProbe:
    """Takes the measurements; keeps the baseline snapshot growth is measured against."""

    def __init__(self) -> None:
        self._baseline: tracemalloc.Snapshot | None = None
        self._lock = threading.Lock()  # reports run off the event loop, perhaps two at once

    def measure(self, set_baseline: bool = False, top: int = 10) -> Memory:
        with self._lock:
            gc.collect()
            tracing = tracemalloc.is_tracing()
            traced = peak = 0
            growth: list[Growth] = []
            if tracing:
                snapshot = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, pattern) for pattern in _IGNORED]
                )
                # Counted from the snapshot, not get_traced_memory(): that total
                # includes the snapshots themselves (the baseline kept here is
                # a few MiB of tuples), which would read as growth.
                traced = sum(trace.size for trace in snapshot.traces)
                peak = tracemalloc.get_traced_memory()[1]
                if set_baseline:
                    self._baseline = snapshot
                elif self._baseline is not None:
                    growth = [
                        Growth(f"{s.traceback[0].filename}:{s.traceback[0].lineno}", s.size_diff, s.count_diff, s.size)
                        for s in snapshot.compare_to(self._baseline, "lineno")[:top]
                    ]
            _malloc_trim()
            return Memory(tracing, traced, peak, _rss_bytes(), _threads(), _open_fds(), self._baseline is not None, growth)


def _status_field(name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    kib = _status_field("VmRSS")
    return 0 if kib is None else kib * 1024


def _threads() -> int:
    """OS threads (C threads of gRPC included), else Python's count."""
    n = _status_field("Threads")
    return threading.active_count() if n is None else n


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0
