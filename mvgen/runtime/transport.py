"""A lean HTTP/1.1 transport for httpx, used for plain-http upstreams (vLLM, stand-ins).

Why not httpx's own: on every request, httpcore's pool walks all its connections, probes
each idle socket with select() and takes several anyio locks and cancel scopes. With 64
requests in flight that cost the gateway about 2 ms of CPU per request, more than all of
its other work together (docs/benchmarks.md has the profile). Here, idle keep-alive
connections wait on a LIFO stack per origin, a request takes the top one in O(1), and the
response is parsed on asyncio streams.

Callers see no difference: it raises the httpx exceptions httpcore's transport would
(ConnectError, ReadTimeout, RemoteProtocolError, ...), bodies arrive chunk by chunk as
the server sends them, and an unfinished response closes its connection (so vLLM aborts
the generation). https URLs are handed to httpx's default transport.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

MAX_HEAD_BYTES = 64 * 1024  # status line and headers, as h11's default limit
MAX_CHUNK_LINE = 4096
READ_SIZE = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})

Origin = tuple[str, int]


class _Connection:
    """One keep-alive connection to an origin."""

    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def reusable(self, now: float, expiry: float) -> bool:
        # at_eof: the server closed it while idle (the loop has already read the FIN).
        return (
            now - self.idle_since < expiry
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        keepalive_expiry: float,
        max_idle_per_origin: int,
        fallback: httpx.AsyncBaseTransport,
    ) -> None:
        self._expiry = keepalive_expiry
        self._max_idle = max_idle_per_origin
        self._fallback = fallback
        self._idle: dict[Origin, collections.deque[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Bodies of unknown length (sent chunked) are rare enough to leave to httpcore.
        if request.url.scheme != "http" or "transfer-encoding" in request.headers:
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        origin = (request.url.host, request.url.port or 80)
        payload = _request_head(request) + await request.aread()
        connection = self._checkout(origin) or await _connect(
            origin, timeouts.get("connect"), request
        )
        try:
            await _write(connection, payload, timeouts.get("write"), request)
            status, reason, headers, keep_alive = await _read_head(
                connection.reader, timeouts.get("read"), request
            )
            framing = _framing(request, status, headers)
        except BaseException:
            connection.close()
            raise
        body = _Body(self, origin, connection, request, framing, keep_alive)
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: least likely to be closed
            if connection.reusable(now, self._expiry):
                return connection
            connection.close()
        return None

    def checkin(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, collections.deque())
        now = time.monotonic()
        connection.idle_since = now
        idle.append(connection)
        # The oldest sit at the left: drop the expired ones and any beyond the limit.
        while idle and (len(idle) > self._max_idle or now - idle[0].idle_since >= self._expiry):
            idle.popleft().close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        await self._fallback.aclose()


class _Body(httpx.AsyncByteStream):
    """A response body as the server sends it; back to the pool only when read whole."""

    def __init__(
        self,
        transport: LeanTransport,
        origin: Origin,
        connection: _Connection,
        request: httpx.Request,
        framing: tuple[str, int],
        keep_alive: bool,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._request = request
        self._read_timeout = request.extensions.get("timeout", {}).get("read")
        self._framing = framing
        self._keep_alive = keep_alive and framing[0] != "close"
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._connection is not None, "a response body can be read once"
        reader = self._connection.reader
        kind, length = self._framing
        decoder = _ChunkDecoder()
        if kind == "chunked":
            parts = _chunked(reader, decoder, self._read_timeout, self._request)
        elif kind == "length":
            parts = _sized(reader, length, self._read_timeout, self._request)
        elif kind == "close":
            parts = _until_eof(reader, self._read_timeout, self._request)
        else:
            parts = _nothing()
        async for part in parts:
            yield part
        self._complete = not decoder.leftover

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._complete and self._keep_alive:
            self._transport.checkin(self._origin, connection)
        else:
            connection.close()


# --- request -------------------------------------------------------------------------


def _request_head(request: httpx.Request) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in request.headers.raw]
    lines.append(b"\r\n")
    return b"".join(lines)


async def _connect(origin: Origin, timeout: float | None, request: httpx.Request) -> _Connection:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(*origin, limit=MAX_HEAD_BYTES)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except OSError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    return _Connection(reader, writer)


async def _write(
    connection: _Connection, payload: bytes, timeout: float | None, request: httpx.Request
) -> None:
    try:
        connection.writer.write(payload)
        async with asyncio.timeout(timeout):
            await connection.writer.drain()
    except TimeoutError as exc:
        raise httpx.WriteTimeout("write timed out", request=request) from exc
    except OSError as exc:
        raise httpx.WriteError(str(exc), request=request) from exc


# --- response ------------------------------------------------------------------------


async def _read(awaitable: Any, timeout: float | None, request: httpx.Request) -> Any:
    """One read from the server, with httpx's exceptions for every way it can fail."""
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError as exc:
        raise httpx.ReadTimeout("read timed out", request=request) from exc
    except asyncio.IncompleteReadError as exc:
        message = "peer closed connection without sending complete message body"
        raise httpx.RemoteProtocolError(message, request=request) from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError("response head too long", request=request) from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


async def _read_head(
    reader: asyncio.StreamReader, timeout: float | None, request: httpx.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
    """Status, reason, headers and keep-alive of the final (non-1xx) response head."""
    while True:
        try:
            head = await _read(reader.readuntil(b"\r\n\r\n"), timeout, request)
        except httpx.RemoteProtocolError as exc:
            if isinstance(exc.__cause__, asyncio.IncompleteReadError):
                if not exc.__cause__.partial:
                    message = "Server disconnected without sending a response."
                    raise httpx.RemoteProtocolError(message, request=request) from None
            raise
        status, reason, headers, keep_alive = _parse_head(head, request)
        if not 100 <= status < 200:
            return status, reason, headers, keep_alive


def _parse_head(
    head: bytes, request: httpx.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise httpx.RemoteProtocolError("malformed response status line", request=request)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError("malformed response header", request=request)
        headers.append((name, value.strip()))
    connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
    if parts[0] == b"HTTP/1.0":
        keep_alive = b"keep-alive" in connection
    else:
        keep_alive = b"close" not in connection
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers, keep_alive


def _framing(
    request: httpx.Request, status: int, headers: list[tuple[bytes, bytes]]
) -> tuple[str, int]:
    """How the body ends: ("none"|"chunked"|"length"|"close", content length)."""
    if request.method == "HEAD" or status in _NO_BODY_STATUSES:
        return "none", 0
    encoding = b",".join(v for n, v in headers if n.lower() == b"transfer-encoding")
    if encoding:
        if encoding.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
            return "close", 0
        return "chunked", 0
    lengths = {v for n, v in headers if n.lower() == b"content-length"}
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise httpx.RemoteProtocolError("malformed Content-Length", request=request)
        return "length", int(next(iter(lengths)))
    return "close", 0


class _ChunkDecoder:
    """Chunked transfer coding, decoded incrementally from whatever bytes have arrived."""

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0  # data bytes left in the current chunk
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer -> done

    @property
    def done(self) -> bool:
        return self._state == "done"

    @property
    def leftover(self) -> bool:
        """Bytes after the end of the body: the connection cannot be reused."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> bytes:
        """The chunk data in `data` (and what was held back before), joined. Parses by
        offset: slicing the buffer after every chunk made a 64 KiB read of small SSE
        chunks quadratic."""
        buffer = self._buffer + data if self._buffer else data
        pos, end, out = 0, len(buffer), []
        while pos < end and self._state != "done":
            if self._state == "data":
                take = min(self._remaining, end - pos)
                out.append(buffer[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = "crlf"
            elif self._state == "crlf":
                if end - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise ValueError("malformed chunk")
                pos += 2
                self._state = "size"
            else:
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    if end - pos > MAX_CHUNK_LINE:
                        raise ValueError("chunk size line too long")
                    break
                line, pos = buffer[pos:line_end], line_end + 2
                self._next_after(line)
                stop = pos + self._remaining
                if self._state == "data" and stop + 2 <= end:  # the whole chunk is here
                    if buffer[stop : stop + 2] != b"\r\n":
                        raise ValueError("malformed chunk")
                    out.append(buffer[pos:stop])
                    pos, self._remaining, self._state = stop + 2, 0, "size"
        self._buffer = buffer[pos:]
        return b"".join(out)

    def _next_after(self, line: bytes) -> None:
        """The state after a chunk size line, or a trailer line."""
        if self._state == "trailer":
            self._state = "trailer" if line else "done"
            return
        self._remaining = int(line.split(b";", 1)[0].strip(), 16)  # ValueError if bad
        if self._remaining < 0:
            raise ValueError("negative chunk size")
        self._state = "data" if self._remaining else "trailer"


async def _chunked(
    reader: asyncio.StreamReader,
    decoder: _ChunkDecoder,
    timeout: float | None,
    request: httpx.Request,
) -> AsyncIterator[bytes]:
    """One piece per read from the socket, holding every chunk that arrived with it: a
    relay that falls behind catches up in fewer, larger writes, and never waits."""
    while not decoder.done:
        data = await _read(reader.read(READ_SIZE), timeout, request)
        if not data:
            message = "peer closed connection without sending complete message body"
            raise httpx.RemoteProtocolError(message, request=request)
        try:
            payload = decoder.feed(data)
        except ValueError as exc:
            raise httpx.RemoteProtocolError(f"{exc} in chunked body", request=request) from None
        if payload:
            yield payload


async def _sized(
    reader: asyncio.StreamReader, length: int, timeout: float | None, request: httpx.Request
) -> AsyncIterator[bytes]:
    remaining = length
    while remaining:
        data = await _read(reader.read(min(remaining, READ_SIZE)), timeout, request)
        if not data:
            message = "peer closed connection without sending complete message body"
            raise httpx.RemoteProtocolError(message, request=request)
        remaining -= len(data)
        yield data


async def _until_eof(
    reader: asyncio.StreamReader, timeout: float | None, request: httpx.Request
) -> AsyncIterator[bytes]:
    while data := await _read(reader.read(READ_SIZE), timeout, request):
        yield data


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing
