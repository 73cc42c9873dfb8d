"""SidecarAsyncFunction: a PyFlink AsyncFunction that sends each record through the sidecar.

    fn = SidecarAsyncFunction("unix:///run/gpu-sidecar/sock", NumpyCodec(), timeout_s=10)
    out = AsyncDataStream.unordered_wait_with_retry(
        ds, fn, Time.seconds(60), fn.retry_strategy(), capacity=256, output_type=...)

Each subtask's copy opens its own client, on a thread of its own
(sidecar/flink/client_thread.py): one stream per subtask, so the sidecar
batches across subtasks. `open()` waits for the sidecar to be SERVING (at most
`connect_timeout_s`); a stream that dies is reopened with backoff once the
sidecar is SERVING again (a `ReconnectPolicy`). Meanwhile records wait for it,
each within its own timeout, and are sent again (`ride_out`); with
`ride_out=False` they fail at once with SidecarRetryableError, for Flink's retry
mode to send again.

Timeouts: every record carries `timeout_s` to the sidecar, which answers
DEADLINE_EXCEEDED past it, so Flink's own timeout can be 0 (no retry) or long
(retry mode needs one): PyFlink starts an OS thread per record for each timeout
it arms (docs/flink.md has the measured cost).

Metrics: gauges in the subtask's metric group, under `metric_group`
(sidecar/flink/stats.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

from pyflink.datastream.functions import AsyncFunction, RuntimeContext

from sidecar.flink.client_thread import ClientThread
from sidecar.flink.codec import Codec, NumpyCodec
from sidecar.flink.errors import SidecarPermanentError
from sidecar.flink.retry import SidecarRetryStrategy
from sidecar.flink.stats import FunctionStats
from sidecar.reconnect import ReconnectPolicy
from sidecar.retry import RetryPolicy

DEFAULT_RECONNECT = ReconnectPolicy(initial_s=0.1, max_s=2.0)


class SidecarAsyncFunction(AsyncFunction):
    def __init__(
        self,
        target: str,
        codec: Codec | None = None,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 60.0,
        close_timeout_s: float = 10.0,
        reconnect: ReconnectPolicy | None = DEFAULT_RECONNECT,
        retry: RetryPolicy | None = None,
        max_pack: int = 64,
        max_in_flight: int | None = None,
        ride_out: bool = True,
        metric_group: str = "sidecar",
    ) -> None:
        """`target`: "host:port" or "unix:///path". `retry`: retries of RESOURCE_EXHAUSTED
        inside the client, within `timeout_s` (for jobs without Flink's retry mode);
        `reconnect=None` leaves a dead stream dead. `max_in_flight=None` takes the
        window from the sidecar's limits, so one subtask never overruns its queue
        (several still can: see docs/flink.md on sizing). `ride_out`: a record that
        finds the sidecar away (restarting, draining, unreachable) waits for it within
        its `timeout_s` and is sent again, rather than failing at once; so a restart
        costs no record even without Flink's retry mode."""
        if timeout_s <= 0 or connect_timeout_s <= 0 or close_timeout_s < 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0, close_timeout_s >= 0")
        self.target = target
        self.codec: Codec = codec or NumpyCodec()
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.close_timeout_s = close_timeout_s
        self.reconnect = reconnect
        self.retry = retry
        self.max_pack = max_pack
        self.max_in_flight = max_in_flight
        self.ride_out = ride_out
        self.metric_group = metric_group
        self.stats: FunctionStats | None = None
        self._client: ClientThread | None = None

    def retry_strategy(self, **options: Any) -> SidecarRetryStrategy:
        """A SidecarRetryStrategy (options as its constructor's) whose retries this
        function's metrics count. Flink pickles the function and its strategy together,
        so the link survives the trip to the workers."""
        return SidecarRetryStrategy(**options).bind(self)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.stats = FunctionStats()
        name = f"sidecar-client-{runtime_context.get_task_name()}-{runtime_context.get_index_of_this_subtask()}"
        # Every subtask unpickles the same random state: without a fresh one, all of
        # them would reconnect (and retry) at the same moments after a restart.
        reconnect = None if self.reconnect is None else dataclasses.replace(self.reconnect, rng=random.Random())
        retry = None if self.retry is None else dataclasses.replace(self.retry, rng=random.Random())
        self._client = ClientThread(
            self.target,
            timeout_s=self.timeout_s,
            reconnect=reconnect,
            retry=retry,
            max_pack=self.max_pack,
            max_in_flight=self.max_in_flight,
            ride_out=self.ride_out,
            stats=self.stats,
            name=name,
        )
        self._client.start(self.connect_timeout_s)
        group = runtime_context.get_metrics_group()
        if group is not None:  # None where the job turned Python metrics off
            self.stats.register(group.add_group(self.metric_group))

    async def async_invoke(self, value: Any) -> list[Any]:
        client = self._client
        if client is None:
            raise RuntimeError("SidecarAsyncFunction.async_invoke before open()")
        try:
            inputs = self.codec.encode(value)
        except Exception as error:
            raise SidecarPermanentError("INVALID_ARGUMENT", f"the codec could not encode the record: {error}") from error
        outputs = await asyncio.wrap_future(client.submit(inputs))
        return self.codec.decode(value, outputs)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close(self.close_timeout_s)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # a thread and a channel: made anew by open() on the worker
        state["stats"] = None
        return state
