"""The load processes: started once per bench invocation (spawned, so each has a
clean interpreter and its own uvloop event loop) and reused for every run of it.

Per run the parent sends each process its Share; each connects its streams and
says ready; the parent writes the measured interval's start into the shared
control block and says go; the processes drive the load, counting into their
slots of a shared counter array (the progress bar reads it), until the parent
sets stop; then each drains, tallies and sends its Tally back.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from sidecar.bench import load
from sidecar.bench.spec import Share

READY_TIMEOUT_S = 90.0
TICK_S = 0.05  # how often the parent reads the counters
# The parent's wait for the tallies after the stop: the drain and close, and then some.
DONE_TIMEOUT_S = load.DRAIN_TIMEOUT_S + load.CLOSE_TIMEOUT_S + 30.0


class LoadError(RuntimeError):
    """A load process could not run its share (no server there, a crash)."""


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _worker(conn: Connection, counters: Any, control: Any) -> None:
    """A load process's life: one run per Share received, until None comes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the run
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        while (share := conn.recv()) is not None:
            try:
                tally = runner.run(_one_run(share, conn, counters, control))
            except Exception as e:  # noqa: BLE001 - the parent reports it
                conn.send(("error", f"{type(e).__name__}: {e}"))
                continue
            if tally is None:
                return  # told to end instead of go: another process failed to start its share
            conn.send(("done", tally))


async def _one_run(share: Share, conn: Connection, counters: Any, control: Any) -> load.Tally | None:
    rec = load.Recorder(counters, share.proc)
    streams = await load.connect(share, rec)
    try:
        conn.send(("ready", None))
        if await asyncio.to_thread(conn.recv) != "go":
            return None
        return await load.run(share, streams, rec, control)
    finally:
        for stream in streams:
            await stream.client.close(timeout_s=load.CLOSE_TIMEOUT_S)


class Pool:
    def __init__(self, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs = procs
        self.counters = ctx.RawArray("q", procs * load.SLOTS)
        self.control = ctx.RawArray("d", 3)
        self._conns: list[Connection] = []
        self._processes = []
        for i in range(procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, self.counters, self.control), name=f"bench-load-{i}", daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(p)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def totals(self) -> list[int]:
        """Sent, answered OK, failed, and settled since the measured interval began: all processes."""
        c = self.counters
        return [sum(c[p * load.SLOTS + s] for p in range(self.procs)) for s in range(load.SLOTS)]

    def run(self, shares: list[Share], warmup_s: float, until: Callable[[float], bool],
            tick: Callable[[float], None], on_start: Callable[[], None],
            on_end: Callable[[], None]) -> tuple[list[load.Tally], float, float]:
        """One run: returns the tallies and the measured interval (monotonic seconds).

        `tick(t)` runs every 50 ms (t: seconds since the interval began, negative in the
        warm-up); `until(t)`, asked once it began, ends it with True. `on_start` and
        `on_end` take the caller's readings at the interval's two ends."""
        for i in range(len(self.counters)):
            self.counters[i] = 0
        self.control[load.T_MEASURE], self.control[load.T_END], self.control[load.STOP] = 0.0, float("inf"), 0.0
        for conn, share in zip(self._conns, shares):
            conn.send(share)
        self._expect("ready", READY_TIMEOUT_S)
        t_measure = time.monotonic() + warmup_s
        self.control[load.T_MEASURE] = t_measure
        for conn in self._conns:
            conn.send("go")
        started = False
        try:
            while True:
                now = time.monotonic()
                if not started and now >= t_measure:
                    on_start()
                    started = True
                tick(now - t_measure)
                if started and until(now - t_measure):
                    break
                time.sleep(max(0.0, min(TICK_S, t_measure - now)) if not started else TICK_S)
        finally:
            t_end = time.monotonic()
            self.control[load.T_END] = t_end
            if started:
                on_end()
            self.control[load.STOP] = 1.0
        return self._expect("done", DONE_TIMEOUT_S), t_measure, t_end

    def _expect(self, what: str, timeout_s: float) -> list[Any]:
        out, errors = [], []
        deadline = time.monotonic() + timeout_s
        for i, conn in enumerate(self._conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise LoadError(f"load process {i} sent no {what!r} within {timeout_s:g} s")
            try:
                kind, value = conn.recv()
            except EOFError:
                raise LoadError(f"load process {i} exited (code {self._processes[i].exitcode})") from None
            if kind == "error":
                errors.append(f"load process {i}: {value}")
            else:
                out.append(value)
        if errors:
            raise LoadError("; ".join(errors))
        return out

    def close(self) -> None:
        self.control[load.STOP] = 1.0  # a run cut short (Ctrl-C) ends too
        for conn, p in zip(self._conns, self._processes):
            if p.is_alive():
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for p in self._processes:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self._conns:
            conn.close()
