"""A small, bounded HTTP/1.1 responder on asyncio, for probes and scrapes.

Serves `GET`/`HEAD` on a few fixed paths (health's `/health`, Prometheus's
`/metrics`) and nothing else. Everything a client can make it hold is bounded:

    accept queue      BACKLOG connections wait in the kernel for the loop
    open connections  MAX_CONNECTIONS; one more is answered 503 and closed at once
    request head      MAX_HEAD_BYTES, all of it within HEAD_TIMEOUT_S (else closed)
    response          written within WRITE_TIMEOUT_S (else the connection is dropped)

One request per connection (`Connection: close`): probes and scrapers open a
connection per request anyway, and a connection is never idle. A request body
is never read. Routing, for every path given:

    unknown path                      404
    known path, not GET or HEAD       405 (Allow: GET, HEAD)
    known path, GET or HEAD           the route's answer (HEAD: headers only)
    head too large / unparseable      431 / 400
    head not complete in time         closed, no answer

This module knows nothing of the server or the metrics: both use it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from sidecar.logs import event

log = logging.getLogger(__name__)

# The kernel's accept queue. asyncio's default is 100 and wsgiref's 5, which
# made a burst of scrapes time out in SYN retries; 1024 holds a burst of a
# thousand connections while the loop accepts (Linux caps it at
# net.core.somaxconn, 4096 on current kernels).
BACKLOG = 1024
# The whole request head must arrive within this. A probe or scraper sends it in
# one packet within milliseconds; a slowloris connection holds a slot no longer.
HEAD_TIMEOUT_S = 5.0
# Writing the answer may wait this long for the client to read. Prometheus gives
# up on a scrape after its scrape_timeout (10 s by default) anyway.
WRITE_TIMEOUT_S = 10.0
# A request line plus headers from a probe or scraper is well under 1 KiB; 8 KiB
# is the usual server limit (nginx's header buffer), and bounds the buffer per
# connection.
MAX_HEAD_BYTES = 8192
# Connections served at once, per endpoint: bounds sockets, tasks and buffers
# (each holds at most 2 x MAX_HEAD_BYTES unread, where the stream reader pauses).
# Above every real number of probers and scrapers, and above a 500-scrape burst;
# past it a connection is told 503 at once rather than queued. Both endpoints
# together stay well under a 4096 open-files limit.
MAX_CONNECTIONS = 512

_HEAD_END = b"\r\n\r\n"
_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds above; tests pass smaller timeouts and caps."""

    backlog: int = BACKLOG
    head_timeout_s: float = HEAD_TIMEOUT_S
    write_timeout_s: float = WRITE_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES
    max_connections: int = MAX_CONNECTIONS


@dataclass(frozen=True, slots=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


# A route answers a GET (or HEAD) of its path, at once or by awaiting; it is not
# timed, so it must answer promptly (health reads a flag, Prometheus renders).
Route = Callable[[], Response | Awaitable[Response]]


def encode(response: Response, *, head_only: bool = False, extra: str = "") -> bytes:
    """The whole HTTP/1.1 answer; `head_only` leaves out the body (for HEAD)."""
    head = (
        f"HTTP/1.1 {response.status.value} {response.status.phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + response.body


_BUSY = encode(
    Response(HTTPStatus.SERVICE_UNAVAILABLE, b"busy: too many open connections, try again\n"), extra="Retry-After: 1\r\n"
)


class HttpEndpoint:
    """`await start(host, port)` listens; `await close()` stops listening and drops
    every open connection. Both on the loop that serves it."""

    def __init__(self, routes: Mapping[str, Route], limits: HttpLimits = HttpLimits(), *, name: str = "http") -> None:
        self._routes = dict(routes)
        self._limits = limits
        self._name = name
        self._not_found = Response(HTTPStatus.NOT_FOUND, f"not found: try GET {' or '.join(self._routes)}\n".encode())
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); with port 0, the port picked."""
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    @property
    def refused(self) -> int:
        """Connections answered 503 because MAX_CONNECTIONS were open."""
        return self._refused

    async def start(self, host: str, port: int) -> int:
        """Listens; returns the bound port. An error (port in use) propagates."""
        self._server = await asyncio.start_server(
            self._accepted, host, port, limit=self._limits.max_head_bytes, backlog=self._limits.backlog
        )
        return self.address[1]

    async def close(self) -> None:
        """Stops accepting and drops the connections still open; prompt."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._limits.write_timeout_s)
        if server is not None:
            # 3.12+ waits here for connections; every one is gone by now.
            await server.wait_closed()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called synchronously by the stream protocol on accept, so the cap is
        # checked (and a refusal written) before any task exists.
        if len(self._tasks) >= self._limits.max_connections:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                event(log, "http connection refused", logging.WARNING, endpoint=self._name,
                      open=len(self._tasks), limit=self._limits.max_connections, refused=self._refused)
            writer.write(_BUSY)  # a fresh socket's kernel buffer takes it whole
            writer.close()
            return
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        clean = False
        try:
            try:
                async with asyncio.timeout(self._limits.head_timeout_s):
                    head = await reader.readuntil(_HEAD_END)
            except (TimeoutError, asyncio.IncompleteReadError):
                return  # too slow, or gone before asking: no answer
            except asyncio.LimitOverrunError:
                answer = encode(Response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request head too large\n"))
            else:
                answer = await self._answer(head)
            # Drain until all of it is with the kernel, so close() below is immediate.
            transport.set_write_buffer_limits(high=0)
            writer.write(answer)
            async with asyncio.timeout(self._limits.write_timeout_s):
                await writer.drain()
            clean = True
        except (TimeoutError, OSError):
            pass  # a client that stops reading or resets: dropped
        finally:
            if clean:
                writer.close()
            else:
                transport.abort()

    async def _answer(self, head: bytes) -> bytes:
        try:
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            path = urlsplit(target).path
        except ValueError:
            return encode(Response(HTTPStatus.BAD_REQUEST, b"bad request line\n"))
        route = self._routes.get(path)
        if route is None:
            return encode(self._not_found, head_only=method == "HEAD")
        if method not in _METHODS:
            return encode(Response(HTTPStatus.METHOD_NOT_ALLOWED, b"use GET\n"), extra="Allow: GET, HEAD\r\n")
        try:
            response = route()
            if inspect.isawaitable(response):
                response = await response
        except Exception as e:  # noqa: BLE001 - one failed answer must not stop the endpoint
            event(log, "http route failed", logging.WARNING, endpoint=self._name, path=path, error=repr(e))
            response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
        return encode(response, head_only=method == "HEAD")
