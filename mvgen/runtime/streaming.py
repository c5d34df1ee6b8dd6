"""Relaying an upstream SSE stream to the client, including across a cold start.

Policy (docs/gateway.md explains why): if the upstream answers within `commit_after`
seconds, its real status is relayed (so a 400 from vLLM stays a 400). Otherwise the
model is probably starting, so the gateway sends `200 text/event-stream` at once and an
SSE comment every `keepalive_interval` seconds: Modal only redirects (303) a web
request whose response has not started within 150 s, and SSE comments are ignored by
OpenAI-compatible clients. A failure after that point arrives as an SSE `error` event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .backends import UpstreamStream, check_status, relay_headers
from .errors import ApiError, relay_error_content
from .stream_usage import PLAIN_ENDINGS, UsageTap

T = TypeVar("T")
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # tells nginx-style proxies not to buffer
}
# Scope key: (the server's send, the request log's counts), see RequestLogMiddleware.
DIRECT_SEND = "mvgen.direct_send"
WAITING_COMMENT = b": waiting for the model to start\n\n"
KEEPALIVE_COMMENT = b": keep-alive\n\n"
_ERROR_BODY_READ_TIMEOUT = 30.0


@dataclass(frozen=True)
class StreamPolicy:
    commit_after: float
    keepalive_interval: float
    start_timeout: float
    error_body_limit: int


async def wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client goes away (call only after the body was read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(work: Awaitable[T], receive: Receive) -> T | None:
    """Await `work` in this task, or cancel it and return None if the client disconnects
    first. The work runs here and one watcher task waits for the disconnect: per request
    that is one task, not two, and no asyncio.wait or gather."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    left = False

    def client_left(done: asyncio.Future[None]) -> None:
        nonlocal left
        if not done.cancelled():
            done.exception()  # a failed receive also means the client is gone
            left = True
            task.cancel()

    watcher.add_done_callback(client_left)
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # only our cancel, not a timeout's or a shutdown's
            return None
        raise
    finally:
        watcher.remove_done_callback(client_left)
        watcher.cancel()


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def sse_data(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    # Upstream values were checked by relay_headers (printable ASCII); ours are ASCII.
    return [(k.lower().encode("ascii"), v.encode("ascii")) for k, v in headers.items()]


class StreamRelay:
    """An ASGI response that opens the upstream stream and relays it chunk by chunk.

    A client disconnect cancels the relay, which closes the upstream stream, which
    makes vLLM abort the generation.
    """

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[UpstreamStream]],
        policy: StreamPolicy,
        model_name: str,
        *,
        on_opened: Callable[[], None] | None = None,
        strip_usage: bool = False,
    ) -> None:
        self._open_stream: Callable[[], Awaitable[UpstreamStream]] | None = open_stream
        self._on_opened = on_opened  # called once the upstream has the request
        self._policy = policy
        self._model_name = model_name
        self._state: dict[str, Any] = {}
        self._direct: tuple[Send, dict[str, int]] | None = None
        self._complete = False  # the whole response was sent
        self._usage = UsageTap(strip_usage)  # the token count; drops the usage event if asked

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self._state = scope.setdefault("state", {})
        self._direct = scope.get(DIRECT_SEND)
        # The relay gets a task of its own: each chunk then resumes a short chain of
        # coroutines, not one through every middleware of this request.
        relay = asyncio.ensure_future(self._relay(send))
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        watcher.add_done_callback(lambda done: done.cancelled() or relay.cancel())
        left = False
        try:
            await relay
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # this request is being cancelled
                raise
            left = True  # the watcher cancelled the relay: the client went away
        finally:
            watcher.cancel()
            self._opened()
        # A client may hang up right after the last byte, while the upstream closes.
        if left and not self._complete:
            self._state["client_disconnected"] = True

    def _opened(self, *_: object) -> None:
        if self._on_opened is not None:
            self._on_opened()
            self._on_opened = None

    async def _relay(self, send: Send) -> None:
        started = time.monotonic()
        assert self._open_stream is not None, "a relay runs once"
        opening = asyncio.ensure_future(self._open_stream())
        self._open_stream = None  # drops the request body once the upstream has it
        opening.add_done_callback(self._opened)
        try:
            await asyncio.wait({opening}, timeout=self._policy.commit_after)
            if opening.done():
                await self._answer_directly(opening, send)
            else:
                await self._answer_committed(opening, send, started)
            self._complete = True
        finally:
            await _discard(opening)

    async def _answer_directly(self, opening: asyncio.Future[UpstreamStream], send: Send) -> None:
        """The upstream answered quickly: relay its real status."""
        try:
            upstream = _checked(opening.result())
        except ApiError as exc:
            self._state["error"] = exc.code
            body = json.dumps(exc.body()).encode()
            headers = {"content-type": "application/json", **exc.headers()}
            await self._send_whole(send, exc.status, headers, body)
            return
        self._state["cold_start"] = upstream.cold_start
        if upstream.status != 200:
            self._state["error"] = f"upstream_{upstream.status}"
            content = relay_error_content(upstream.status, await self._read_error(upstream))
            headers = {**upstream.headers, "content-type": "application/json"}
            await self._send_whole(send, upstream.status, headers, content)
            return
        await send_start(send, 200, {**SSE_HEADERS, **_extra(upstream.headers)})
        await self._pump(upstream, send)

    async def _answer_committed(
        self, opening: asyncio.Future[UpstreamStream], send: Send, started: float
    ) -> None:
        """The upstream is slow to answer (cold start): start the response now and keep
        it alive until the upstream's first byte, bounded by start_timeout."""
        self._state["committed_early"] = True
        await send_start(send, 200, SSE_HEADERS)
        await send_body(send, WAITING_COMMENT)
        deadline = started + self._policy.start_timeout
        while not opening.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Stop the upstream call before answering, so a client's retry never
                # runs beside it.
                await _discard(opening)
                await self._fail(send, self._start_timeout_error())
                return
            await asyncio.wait({opening}, timeout=min(self._policy.keepalive_interval, remaining))
            if not opening.done():
                await send_body(send, KEEPALIVE_COMMENT)
        try:
            upstream = _checked(opening.result())
        except ApiError as exc:
            await self._fail(send, exc)
            return
        self._state["cold_start"] = upstream.cold_start
        if upstream.status != 200:
            content = relay_error_content(upstream.status, await self._read_error(upstream))
            await self._fail(send, None, content=content)
            return
        await self._pump(upstream, send)

    async def _pump(self, upstream: UpstreamStream, send: Send) -> None:
        """The hot loop: one read and one write per upstream piece, and a look at how the
        piece ends (stream_usage.py: only other endings need the usage tap)."""
        counts: dict[str, int] = {"bytes_out": 0}
        if self._direct is not None:
            send, counts = self._direct
        usage = self._usage
        plain = PLAIN_ENDINGS
        last = b"\n\n"
        first = True
        try:
            async for chunk in upstream.chunks:
                if not chunk:
                    continue
                if first:
                    first = False
                    self._state["first_token_at"] = time.perf_counter()
                if usage.held or not chunk.endswith(plain):
                    chunk = usage.feed(chunk)
                    if not chunk:
                        continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                counts["bytes_out"] += len(chunk)
                last = chunk
        except ApiError as exc:
            self._state["stream_error"] = exc.code
            last = await self._send_held(send, counts) or last
            # An error event is only well-formed between events; mid-event, just end.
            if last.endswith((b"\n\n", b"\r\n\r\n")):
                event = sse_data(exc.body())
                await send_body(send, event)
                counts["bytes_out"] += len(event)
        else:
            await self._send_held(send, counts)
        finally:
            self._state["tokens_out"] = usage.tokens
            if usage.upstream_error:
                self._state.setdefault("stream_error", "upstream_error")
        await send_body(send, b"", more_body=False)

    async def _send_held(self, send: Send, counts: dict[str, int]) -> bytes:
        """An unfinished event the usage tap still holds, relayed as it came."""
        rest = self._usage.flush()
        if rest:
            await send_body(send, rest)
            counts["bytes_out"] += len(rest)
        return rest

    async def _fail(
        self, send: Send, error: ApiError | None, *, content: bytes | None = None
    ) -> None:
        """Report a failure after the 200 was sent, as an SSE event OpenAI SDKs raise."""
        if error is not None:
            self._state["stream_error"] = error.code
            payload: Any = error.body()
        else:
            self._state["stream_error"] = "upstream_error"
            payload = json.loads(content or b"{}")
        await send_body(send, sse_data(payload))
        await send_body(send, b"", more_body=False)

    async def _read_error(self, upstream: UpstreamStream) -> bytes:
        try:
            async with asyncio.timeout(_ERROR_BODY_READ_TIMEOUT):
                return await upstream.read(self._policy.error_body_limit)
        except (ApiError, TimeoutError):
            return b""

    def _start_timeout_error(self) -> ApiError:
        return ApiError(
            504,
            "model_start_timeout",
            f"Model '{self._model_name}' did not start answering within "
            f"{self._policy.start_timeout:g} s.",
        )

    @staticmethod
    async def _send_whole(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
        await send_start(send, status, headers)
        await send_body(send, body, more_body=False)


def _checked(upstream: UpstreamStream) -> UpstreamStream:
    """The stream, if its status and headers can be relayed (else 502, and it is closed
    by _discard like any opened stream)."""
    check_status(upstream.status)
    upstream.headers = relay_headers(upstream.headers)
    return upstream


def _extra(headers: dict[str, str]) -> dict[str, str]:
    """Upstream headers to keep on a relayed stream (its content-type is normalised)."""
    return {k: v for k, v in headers.items() if k != "content-type"}


async def send_start(send: Send, status: int, headers: dict[str, str]) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _encode_headers(headers)}
    )


async def send_body(send: Send, body: bytes, *, more_body: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


async def _discard(opening: asyncio.Future[UpstreamStream]) -> None:
    """Cancel a pending open, or close the stream it produced."""
    if not opening.done():
        await cancel_and_wait(opening)
    if opening.cancelled() or opening.exception() is not None:
        return
    await opening.result().aclose()
