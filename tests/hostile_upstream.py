"""A misbehaving upstream for tests: a raw asyncio server on 127.0.0.1 that writes
whatever bytes a test's handler chooses (stray responses, broken status lines, control
characters in headers, compressed bombs). A stand-in, not vLLM; in a background thread,
always stopped by the context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    index: int  # 0, 1, 2, ... across all connections

    def json(self) -> Any:
        return json.loads(self.body)


# handler(request, writer) -> keep the connection open for another request?
Handler = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class HostileUpstream:
    handler: Handler
    port: int = 0
    requests: list[RawRequest] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def response(status: int | str, body: bytes, *headers: str, reason: str = "OK") -> bytes:
    """A response with Content-Length; `headers` are raw lines written as given."""
    head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body


def json_response(payload: Any, *headers: str) -> bytes:
    return response(200, json.dumps(payload).encode(), "content-type: application/json", *headers)


@contextlib.contextmanager
def hostile_upstream(handler: Handler) -> Iterator[HostileUpstream]:
    upstream = HostileUpstream(handler)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                while request := await _read_request(reader, len(upstream.requests)):
                    upstream.requests.append(request)
                    if not await upstream.handler(request, writer):
                        break
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                tasks.discard(task)
                writer.close()

        server = await asyncio.start_server(connection, "127.0.0.1", 0)
        upstream.port = server.sockets[0].getsockname()[1]
        started.set()
        await stop.wait()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10), "hostile upstream did not start"
        yield upstream
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


async def _read_request(reader: asyncio.StreamReader, index: int) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length") or 0))
    return RawRequest(method, path, headers, body, index)
