"""The bounded HTTP/1.1 responder on its own, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from http import HTTPStatus

from sidecar.http_endpoint import HttpEndpoint, HttpLimits, Response
from tests.http_client import WAIT_S, exchange, get, open_slow, parse, read_to_eof, wait_until

BIG = b"x" * (32 << 20)  # more than loopback's socket buffers hold, so a write must wait for the reader


def _boom() -> Response:
    raise RuntimeError("boom")


async def _later() -> Response:
    await asyncio.sleep(0)
    return Response(HTTPStatus.OK, b"later\n")


ROUTES = {
    "/ok": lambda: Response(HTTPStatus.OK, b"fine\n"),
    "/later": _later,
    "/big": lambda: Response(HTTPStatus.OK, BIG),
    "/boom": _boom,
}


@contextlib.asynccontextmanager
async def serving(limits: HttpLimits = HttpLimits(), port: int = 0) -> AsyncIterator[tuple[HttpEndpoint, int]]:
    endpoint = HttpEndpoint(ROUTES, limits)
    bound = await endpoint.start("127.0.0.1", port)
    try:
        yield endpoint, bound
    finally:
        await endpoint.close()


def run(coro) -> None:
    asyncio.run(coro)


def test_get_and_head_answer_the_route_and_anything_else_gets_404_405_or_400():
    async def go():
        async with serving() as (_, port):
            ok = await get(port, "/ok")
            assert (ok.status, ok.body, ok.headers["content-length"], ok.headers["connection"]) == (200, b"fine\n", "5", "close")
            assert (await get(port, "/later?x=1")).body == b"later\n"
            head = await get(port, "/ok", "HEAD")
            assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "5")
            missing = await get(port, "/nope")
            assert missing.status == 404 and b"try GET /ok or /later" in missing.body
            post = await get(port, "/ok", "POST")
            assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")
            assert parse(await exchange(port, b"GARBAGE\r\n\r\n")).status == 400
            assert parse(await exchange(port, b"GET /ok SPDY/3\r\n\r\n")).status == 400

    run(go())


def test_route_that_raises_is_answered_500_and_the_endpoint_keeps_serving():
    async def go():
        async with serving() as (_, port):
            assert (await get(port, "/boom")).status == 500
            assert (await get(port, "/ok")).status == 200

    run(go())


def test_head_larger_than_the_cap_is_answered_431():
    async def go():
        async with serving(HttpLimits(max_head_bytes=1024)) as (endpoint, port):
            huge = b"GET /ok HTTP/1.1\r\nX-Pad: " + b"a" * 4096 + b"\r\n\r\n"
            assert parse(await exchange(port, huge)).status == 431
            assert (await get(port, "/ok")).status == 200
            await wait_until(lambda: endpoint.open_connections == 0, "connections closed")

    run(go())


def test_head_not_complete_within_the_timeout_is_closed_unanswered():
    async def go():
        async with serving(HttpLimits(head_timeout_s=0.3)) as (endpoint, port):
            begun = time.monotonic()
            slow = await open_slow(port, 2, "/ok")  # one silent, one with half a head
            await asyncio.wait_for(asyncio.gather(*(s.done for s in slow)), 0.3 + WAIT_S)
            for s in slow:
                assert s.received == b""
                assert s.closed_at is not None and s.closed_at - begun >= 0.3 * 0.9
            await wait_until(lambda: endpoint.open_connections == 0, "connections closed")
            assert (await get(port, "/ok")).status == 200

    run(go())


def test_connection_past_the_cap_is_answered_503_at_once_and_serving_resumes():
    async def go():
        async with serving(HttpLimits(max_connections=3, head_timeout_s=60)) as (endpoint, port):
            slow = await open_slow(port, 3, "/ok")
            await wait_until(lambda: endpoint.open_connections == 3, "3 connections open")
            started = time.monotonic()
            busy = await get(port, "/ok")
            assert busy.status == 503 and b"too many open connections" in busy.body
            assert time.monotonic() - started < 2.0  # at once: not queued behind the slow ones
            assert endpoint.refused == 1 and endpoint.open_connections == 3
            slow[0].close()
            await wait_until(lambda: endpoint.open_connections == 2, "a slot freed")
            assert (await get(port, "/ok")).status == 200
            for s in slow[1:]:
                s.close()

    run(go())


def test_client_that_stops_reading_is_dropped_after_the_write_timeout():
    async def go():
        async with serving(HttpLimits(write_timeout_s=0.3)) as (endpoint, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /big HTTP/1.1\r\n\r\n")  # and never read
            await writer.drain()
            await wait_until(lambda: endpoint.open_connections == 1, "the request taken")
            started = time.monotonic()
            await wait_until(lambda: endpoint.open_connections == 0, "the stalled writer dropped", 0.3 + WAIT_S)
            assert time.monotonic() - started >= 0.2
            received = await asyncio.wait_for(read_to_eof(reader), WAIT_S)
            assert len(received) < len(BIG)  # cut off, not finished
            writer.close()
            assert (await get(port, "/ok")).status == 200

    run(go())


def test_close_drops_open_connections_at_once_and_frees_the_port():
    async def go():
        endpoint = HttpEndpoint(ROUTES, HttpLimits(head_timeout_s=60))
        port = await endpoint.start("127.0.0.1", 0)
        slow = await open_slow(port, 20, "/ok")
        await wait_until(lambda: endpoint.open_connections == 20, "20 connections open")
        started = time.monotonic()
        await asyncio.wait_for(endpoint.close(), WAIT_S)
        await asyncio.wait_for(asyncio.gather(*(s.done for s in slow)), WAIT_S)
        assert time.monotonic() - started < 2.0
        async with serving(port=port) as (_, again):
            assert again == port and (await get(port, "/ok")).status == 200

    run(go())
