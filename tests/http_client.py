"""Raw HTTP/1.1 over asyncio sockets for the endpoint tests: one request per
connection, read to EOF, and connections that send nothing or half a head."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

WAIT_S = 10.0  # the bound on any single wait in these tests


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes; a reset after the answer counts as a close."""
    chunks = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


async def exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = WAIT_S) -> bytes:
    async def go() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(data)
            await writer.drain()
            return await read_to_eof(reader)
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)


async def get(port: int, path: str, method: str = "GET", host: str = "127.0.0.1", timeout: float = WAIT_S) -> Answer:
    return parse(await exchange(port, f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode(), host, timeout))


class Slow:
    """A connection that sent nothing, or a head with no end, and reads what comes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.closed_at: float | None = None  # time.monotonic() when the server closed it
        self.received = b""
        self.done = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            self.received = await read_to_eof(reader)
            self.closed_at = time.monotonic()
        finally:
            self.writer.close()

    def close(self) -> None:
        self.done.cancel()
        self.writer.close()


async def open_slow(port: int, n: int, path: str) -> list[Slow]:
    """n connections: even ones send nothing, odd ones half a request head."""

    async def one(i: int) -> Slow:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if i % 2:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: te".encode())
            await writer.drain()
        return Slow(reader, writer)

    return list(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), WAIT_S))


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Polls `condition` (state owned by the code under test) until true, bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


def allow_open_files(n: int) -> None:
    """Raises this process's open-files limit to n where the hard limit allows:
    these tests hold both ends of hundreds of connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n if hard == resource.RLIM_INFINITY else min(n, hard), hard))
