"""The HTTP server under `mvgen gateway`: uvicorn, with the limits a public endpoint needs.

uvicorn runs its httptools protocol on uvloop, its fastest pair (the gateway relays every
streamed token, so per-chunk cost matters). Of the limits below uvicorn itself has only
one, `timeout_keep_alive`: it closes a connection idle *between* requests, and its timer
starts when a response ends and stops at the next byte received. Nothing bounds a
connection that never completes a request head (or sends nothing at all), how large a
head may grow (httptools keeps every header), how many connections are open, or a body
that stops arriving after the app has answered. `GuardedProtocol` adds those. The
deployed gateway runs under Modal's own web server instead, and keeps only the limits
the app enforces itself (body size and time, the in-flight body budget).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("mvgen.gateway")

FDS_PER_CONNECTION = 2  # the client's, and the upstream connection it may hold
FDS_RESERVED = 64  # listening socket, logs, DNS, ...


@dataclass(frozen=True)
class ServerLimits:
    keep_alive_timeout: int = 5  # idle between requests (uvicorn's timeout_keep_alive)
    head_timeout: float = 10.0  # from a connection's first byte (or its opening) to a full head
    max_head_bytes: int = 64 * 1024  # request line and headers, as h11's default limit
    max_connections: int = 2048  # more are closed as soon as they are accepted


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a head deadline, a head size limit and a
    connection cap. One timer per connection: armed when the connection opens, when a
    following request starts, and when a response ends before its request body did;
    stopped when a request head is complete. When it fires the connection is closed."""

    limits = ServerLimits()
    _cap_warned_at = 0.0  # class-wide: one warning a minute while at the cap

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_bytes = 0  # reads while the head is incomplete
        self._head_parsed = 0  # target and header fields parsed so far
        self._arms = 0
        if len(self.connections) > self.limits.max_connections:
            _warn_at_cap(self.limits.max_connections)
            transport.close()
            return
        self._arm(head=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        arms = self._arms
        super().data_received(data)
        if self._in_head and self._arms == arms and not self.transport.is_closing():
            # The same head is still incomplete: all of `data` belongs to it.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._disarm()
                self.send_400_response("Request head too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_parsed = 0
        if not self._in_head:  # a following request on a kept-alive connection
            self._arm(head=True)

    # A whole head can also arrive in one read: count what the parser finds. Raising here
    # makes httptools stop, and uvicorn answer 400 and close.
    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_parsed(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.limits.max_head_bytes:
            raise ValueError("request head too large")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # The app answered before the body was read (401, 404, 413, ...): uvicorn then
        # discards the rest as it arrives, and each byte would postpone its keep-alive
        # timeout. The rest must arrive before the deadline instead.
        unread_body = not self.pipeline and self.cycle is not None and self.cycle.more_body
        super().on_response_complete()
        if unread_body and self._deadline is None and not self.transport.is_closing():
            self._arm(head=False)

    def _arm(self, *, head: bool) -> None:
        self._disarm()
        self._in_head = head
        self._head_bytes = 0
        self._arms += 1
        self._deadline = self.loop.call_later(self.limits.head_timeout, self._expired)

    def _disarm(self) -> None:
        self._in_head = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def _warn_at_cap(cap: int) -> None:
    now = time.monotonic()
    if now - GuardedProtocol._cap_warned_at >= 60:
        GuardedProtocol._cap_warned_at = now
        log.warning("%d connections open: closing new ones until some end", cap)


def protocol_with(limits: ServerLimits) -> type[GuardedProtocol]:
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


def fit_to_open_files(limits: ServerLimits) -> ServerLimits:
    """Raise the soft open-files limit toward the hard one, and lower the connection
    cap to what it allows: past the limit, accept() fails and every request gets an
    empty reply."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections * FDS_PER_CONNECTION + FDS_RESERVED
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return limits
    cap = max(1, (soft - FDS_RESERVED) // FDS_PER_CONNECTION)
    if cap >= limits.max_connections:
        return limits
    log.warning("open-files limit %d allows %d connections, not %d", soft, cap,
                limits.max_connections)  # fmt: skip
    return ServerLimits(limits.keep_alive_timeout, limits.head_timeout, limits.max_head_bytes, cap)


def server_config(app: Any, host: str, port: int, limits: ServerLimits) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=protocol_with(limits),
        timeout_keep_alive=limits.keep_alive_timeout,
        backlog=2048,
        # uvicorn's access log would add a second line per request, with the query string.
        access_log=False,
        log_level="info",
    )
