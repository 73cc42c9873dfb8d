"""A SidecarClient on a thread and event loop of its own, used from any other thread or loop.

PyFlink runs `async_invoke` on an event loop it starts only after `open()` and
stops before `close()` (docs/flink.md), so the client cannot live on that loop:
`open()` could not connect and `close()` could not close. It lives here instead,
and callers hand requests over with `submit()`, which is thread-safe and returns
a concurrent.futures.Future (await it with asyncio.wrap_future).

Every wait is bounded:
    start(connect_timeout_s)  waits for health SERVING and the stream, at most that long
    submit()                  the sidecar answers within the request's timeout; a guard
                              GUARD_S later fails it locally (a hung or partitioned server)
    close(timeout_s)          waits for the answers at most that long, then cancels the rest
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from sidecar.backoff import capped_exponential
from sidecar.client import InferError, SidecarClient
from sidecar.flink.errors import SidecarPermanentError, SidecarRetryableError, from_infer_error
from sidecar.flink.stats import FunctionStats
from sidecar.reconnect import ReconnectPolicy
from sidecar.retry import RetryPolicy

GUARD_S = 5.0  # past the request's own timeout, how long before it fails here
# With ride_out: the pause before sending again a record the sidecar itself answered
# UNAVAILABLE (no hint given) while its stream stayed open, doubling per try.
HOLD_BACKOFF_S = 0.05
HOLD_BACKOFF_MAX_S = 1.0
STOP_GRACE_S = 5.0  # close(): how long the loop gets to wind down after the client closed


class ClientThread:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float,
        reconnect: ReconnectPolicy | None = None,
        retry: RetryPolicy | None = None,
        max_pack: int = 64,
        max_in_flight: int | None = None,
        stats: FunctionStats | None = None,
        name: str = "sidecar-client",
        ride_out: bool = True,
    ) -> None:
        """`ride_out` (with a `reconnect` policy): a record that finds no stream, or
        whose stream dies under it, or that the sidecar answers UNAVAILABLE, waits for
        the sidecar within its own `timeout_s` and is sent again, instead of failing
        at once."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.target = target
        self.timeout_s = timeout_s
        self.stats = stats or FunctionStats()
        self.reconnect = reconnect
        self._client_args: dict[str, Any] = {
            "max_pack": max_pack,
            "max_in_flight": max_in_flight,
            "retry": retry,
            "reconnect": reconnect,
        }
        self._name = name
        self._rides_out = ride_out and reconnect is not None
        self._held: dict[asyncio.Future[None], concurrent.futures.Future[Any]] = {}  # waiting for the sidecar
        self._failed: BaseException | None = None  # why the thread could not start its loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: SidecarClient | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- life ---------------------------------------------------------------------------

    def start(self, connect_timeout_s: float) -> None:
        """Starts the thread and connects: waits for health SERVING, then opens the stream.
        Raises SidecarRetryableError (UNAVAILABLE) if that takes over `connect_timeout_s`,
        leaving no thread behind."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._name, daemon=True)
        self._thread.start()
        if not ready.wait(STOP_GRACE_S) or self._loop is None:
            raise SidecarPermanentError("INTERNAL", f"the client thread could not start an event loop: {self._failed!r}")
        connecting = asyncio.run_coroutine_threadsafe(self._connect(connect_timeout_s), self._loop)
        try:
            connecting.result(connect_timeout_s + STOP_GRACE_S)
        except BaseException as error:
            connecting.cancel()
            self._stop_loop()
            if isinstance(error, (TimeoutError, concurrent.futures.TimeoutError, OSError)):
                raise SidecarRetryableError(
                    "UNAVAILABLE", f"no ready sidecar at {self.target} after {connect_timeout_s:g} s: {error}"
                ) from error
            raise

    def close(self, timeout_s: float = 10.0) -> None:
        """Waits at most `timeout_s` for the answers still due, fails the rest CANCELLED,
        and stops the thread. Safe to call twice, and after a failed start."""
        if self._closed:
            return
        self._closed = True
        if self._loop is None or self._client is None:
            self._stop_loop()
            return
        closing = asyncio.run_coroutine_threadsafe(self._close(timeout_s), self._loop)
        try:
            closing.result(timeout_s + STOP_GRACE_S)
        except concurrent.futures.TimeoutError:
            closing.cancel()
        finally:
            self._stop_loop()

    async def _close(self, timeout_s: float) -> None:
        for held, answer in list(self._held.items()):  # waiting for a sidecar that is away
            held.cancel()  # one not started yet never runs its handler: fail it here
            self._unsent(answer, SidecarPermanentError("CANCELLED", "the function closed while the record waited"))
        assert self._client is not None
        await self._client.close(timeout_s)

    @property
    def alive(self) -> bool:
        return self._client is not None and self._client.alive

    # ---- requests -----------------------------------------------------------------------

    def submit(self, inputs: Mapping[str, np.ndarray]) -> concurrent.futures.Future[dict[str, np.ndarray]]:
        """Sends one request (from any thread). The future gets the outputs, or a
        SidecarRetryableError / SidecarPermanentError."""
        if self._closed or self._loop is None:
            raise RuntimeError("the sidecar client is closed" if self._closed else "the sidecar client is not started")
        answer: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._submit, inputs, answer)
        return answer

    def _submit(self, inputs: Mapping[str, np.ndarray], answer: concurrent.futures.Future[Any]) -> None:
        assert self._loop is not None
        self._send(inputs, answer, time.perf_counter(), self._loop.time() + self.timeout_s, 0)

    def _send(
        self, inputs: Mapping[str, np.ndarray], answer: concurrent.futures.Future[Any], started: float,
        deadline: float, tries: int,
    ) -> None:
        """One attempt, with what is left of the record's timeout. `started` is the record's
        first attempt (perf_counter), `tries` the attempts before this one."""
        client, loop, stats = self._client, self._loop, self.stats
        assert client is not None and loop is not None
        if not client.alive:
            if self._rides_out:
                self._hold(inputs, answer, started, deadline, tries, 0.0)
            else:
                why = client.dead_reason.message if client.dead_reason is not None else "closed"
                self._unsent(answer, SidecarRetryableError("UNAVAILABLE", f"no stream to {self.target}: {why}"))
            return
        left = max(deadline - loop.time(), 1e-3)
        try:
            pending = client.submit(inputs, timeout_s=left)
        except Exception as error:  # an input the client cannot encode, or a client closing
            code = "CANCELLED" if isinstance(error, RuntimeError) else "INVALID_ARGUMENT"
            self._unsent(answer, SidecarPermanentError(code, f"{type(error).__name__}: {error}"))
            return
        stats.requests += 1
        guard = loop.call_later(left + GUARD_S, self._expire, pending, answer)

        def settle(done: asyncio.Future[dict[str, np.ndarray]]) -> None:
            guard.cancel()
            if done.cancelled() or answer.done():
                return  # the guard failed it already (and cancelled it)
            error = done.exception()
            if error is None:
                stats.succeeded += 1
                stats.latency_us.update((time.perf_counter() - started) * 1e6)
                answer.set_result(done.result())
                return
            mapped = from_infer_error(error) if isinstance(error, InferError) else None
            if isinstance(mapped, SidecarRetryableError):
                stats.retryable += 1
                if self._rides_out and mapped.code == "UNAVAILABLE" and loop.time() < deadline and not self._closed:
                    # No sidecar for now: wait for one within the record's own timeout.
                    pause = mapped.retry_after_s or capped_exponential(HOLD_BACKOFF_S, 2.0, tries, HOLD_BACKOFF_MAX_S)
                    self._hold(inputs, answer, started, deadline, tries + 1, pause)
                    return
            else:
                stats.failed += 1
            answer.set_exception(mapped or SidecarPermanentError("INTERNAL", f"{type(error).__name__}: {error}"))

        pending.add_done_callback(settle)

    def _hold(
        self, inputs: Mapping[str, np.ndarray], answer: concurrent.futures.Future[Any], started: float,
        deadline: float, tries: int, pause_s: float,
    ) -> None:
        """Sends the record again once a stream is open (after `pause_s`), or fails it
        UNAVAILABLE when its timeout comes first."""
        client, loop = self._client, self._loop
        assert client is not None and loop is not None

        async def wait_then_send() -> None:
            try:
                if pause_s > 0:
                    await asyncio.sleep(min(pause_s, max(deadline - loop.time(), 0.0)))
                await client.wait_alive(max(deadline - loop.time(), 0.0))
                if loop.time() >= deadline:
                    raise TimeoutError
            except TimeoutError:
                self._unsent(answer, SidecarRetryableError(
                    "UNAVAILABLE", f"no sidecar at {self.target} within the record's {self.timeout_s:g} s timeout"
                ))
            except (RuntimeError, asyncio.CancelledError):  # the client closed meanwhile
                self._unsent(answer, SidecarPermanentError("CANCELLED", "the function closed while the record waited"))
            else:
                if tries and client.alive:
                    self.stats.resent += 1
                self._send(inputs, answer, started, deadline, tries)

        task = asyncio.ensure_future(wait_then_send())
        self._held[task] = answer
        task.add_done_callback(self._held.pop)

    def _unsent(self, answer: concurrent.futures.Future[Any], error: Exception) -> None:
        if not answer.done():
            self.stats.unsent += 1
            answer.set_exception(error)

    def _expire(self, pending: asyncio.Future[Any], answer: concurrent.futures.Future[Any]) -> None:
        if answer.done():
            return
        # Cancelled, the client's future no longer holds close() up; the client drops
        # the request's entry when the sidecar answers it at last (its own deadline).
        pending.cancel()
        self.stats.failed += 1
        answer.set_exception(
            SidecarPermanentError(
                "DEADLINE_EXCEEDED",
                f"no answer from {self.target} within the request's {self.timeout_s:g} s timeout plus {GUARD_S:g} s",
            )
        )

    # ---- the thread ---------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        try:
            loop = asyncio.new_event_loop()  # fails with no file descriptors left, say
        except BaseException as error:
            self._failed = error
            ready.set()
            return
        self._loop = loop
        asyncio.set_event_loop(loop)
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _connect(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = SidecarClient(self.target, **self._client_args)
        try:
            await client.wait_ready(timeout_s)
            await asyncio.wait_for(client.connect(), max(deadline - time.monotonic(), 0.1))
        except BaseException:
            await client.close(0)
            raise
        self._client = client
        self.stats.client = client

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_GRACE_S)
