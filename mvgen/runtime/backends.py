"""How the gateway reaches model servers over HTTP, and the interface every backend has.

`HttpBackend` forwards to OpenAI-compatible servers (vLLM on localhost in legacy mode,
any URL for `mvgen gateway`); `PoolServer` (vllm_process.py) uses `HttpUpstream` to reach
its local vLLM. gpu mode's `ModalBackend`, which calls container pools through Modal, is
in modal_backend.py.
"""

from __future__ import annotations

import asyncio
import json
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from .errors import (
    ModelNotDeployed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .models import ServedModel

# Upstream response headers worth relaying; everything else (hop-by-hop headers,
# content-length/encoding that no longer match, server identity) is dropped.
RELAYED_RESPONSE_HEADERS = frozenset({"content-type", "retry-after", "x-request-id"})

# vLLM refuses connections while it loads, so a refused connection is retried this often.
CONNECT_RETRY_INTERVAL = 0.25

# Below uvicorn's 5 s keep-alive timeout (vLLM runs uvicorn), so the gateway never
# reuses a connection the server is about to close.
KEEPALIVE_EXPIRY = 2.0

# A non-streamed answer is held whole in memory, so it is capped. vLLM's largest real
# answers are echoed prompts with logprobs (20 alternatives a token at most): ~600 bytes
# a token, so a 100k-token prompt is ~60 MB.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# A header value may hold visible ASCII, spaces and tabs; any other control byte makes
# the response malformed (it could split the head the gateway writes).
_CONTROL_BYTES = frozenset(range(0x20)) - {0x09} | {0x7F}


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]  # filtered to RELAYED_RESPONSE_HEADERS
    content: bytes
    # The request waited for the model server to start (None: the backend cannot tell).
    cold_start: bool | None = None


@dataclass
class UpstreamStream:
    """An upstream response whose body is still arriving; always `aclose()` it."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    _close: Callable[[], Awaitable[Any]] = field(repr=False)
    cold_start: bool | None = None  # as UpstreamResponse.cold_start

    async def aclose(self) -> None:
        await self._close()

    async def read(self, limit: int) -> bytes:
        """The body, for error responses; stops at `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(parts)[:limit]


class Backend(Protocol):
    async def request(self, model: ServedModel, path: str, body: dict) -> UpstreamResponse: ...

    async def stream(self, model: ServedModel, path: str, body: dict) -> UpstreamStream: ...

    async def aclose(self) -> None: ...


def relay_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream headers the client gets: only RELAYED_RESPONSE_HEADERS, lower-cased,
    with printable ASCII values. Any other value (say UTF-8 from a careless server) is
    dropped, never a 500. Never raises: HttpUpstream refuses control characters first."""
    relayed = {}
    for name, value in headers.items():
        name = name.lower()
        if name in RELAYED_RESPONSE_HEADERS and value.isascii() and _printable(value):
            relayed[name] = value
    return relayed


def _printable(value: str) -> bool:
    return not any(ord(char) in _CONTROL_BYTES for char in value)


def check_status(status: int) -> int:
    """A final status the gateway can relay: 200-599 (1xx cannot end an exchange)."""
    if not 200 <= status <= 599:
        raise UpstreamProtocolError(f"The model server answered with HTTP status {status}.")
    return status


# --- HTTP ---------------------------------------------------------------------------


class _StrictConnector(aiohttp.TCPConnector):
    """aiohttp's pool, except that an idle connection that received anything (a stray
    response: the server answered more than it was asked) is closed, never reused.
    aiohttp itself would hand that queued answer to the next request on the connection,
    i.e. to another user (https://github.com/aio-libs/aiohttp/issues/13656)."""

    async def _get(self, key: Any, traces: list[Any]) -> Any:
        while (connection := await super()._get(key, traces)) is not None:
            if not _received_while_idle(connection.protocol):
                return connection
            connection.close()
        return None


def _received_while_idle(protocol: Any) -> bool:
    """Bytes (or the end) arrived on an idle connection: aiohttp has queued them
    (`should_close`), or they wait in the socket for the event loop to read them."""
    transport = protocol.transport if protocol is not None else None
    if transport is None or protocol.should_close:
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class UpstreamClient:
    """One pooled aiohttp client per process, shared by every upstream and user.

    The session is made on first use, on the loop that serves requests. Settings and
    why: no cookie jar (one user's cookie must not travel with the next user's request),
    no proxy from the environment (upstreams are usually loopback), no redirects, and
    bodies as sent (`accept-encoding: identity`, no decompression: a compressed answer
    is refused, so a small gzip bomb cannot inflate in memory). `timeout` bounds each
    read from the upstream; connecting is bounded at 5 s.
    """

    def __init__(self, timeout: float, *, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.read_timeout = timeout
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=timeout)
        # aiohttp re-arms its read timer on every read: a timer per streamed token. Streams
        # bound their wait themselves instead (_Chunks), with one timer per quiet period.
        self.stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0)
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = _StrictConnector(
                limit=0,  # the gateway's concurrency is set by its host, not here
                keepalive_timeout=KEEPALIVE_EXPIRY,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"accept-encoding": "identity"},
                timeout=self.timeout,
                auto_decompress=False,
                trust_env=False,
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def new_http_client(timeout: float) -> UpstreamClient:
    return UpstreamClient(timeout)


def _failure(exc: BaseException, label: str) -> UpstreamError:
    """Turn an aiohttp failure into the status the client should see."""
    if isinstance(exc, TimeoutError):  # aiohttp's read and connect timeouts are these
        return UpstreamTimeout(f"{label} did not answer in time ({type(exc).__name__}).")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return UpstreamProtocolError(
            f"{label}'s host name does not resolve.", code="upstream_connection_error"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamProtocolError(
            f"{label}: TLS failed (is the URL's scheme right?).", code="upstream_connection_error"
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamProtocolError(f"{label} sent a malformed HTTP response.")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return UpstreamProtocolError(
            f"{label} closed the connection or broke off its answer.",
            code="upstream_connection_error",
        )
    return UpstreamProtocolError(
        f"{label} connection failed ({type(exc).__name__}).", code="upstream_connection_error"
    )


_FAILURES = (aiohttp.ClientError, OSError, TimeoutError)


def _may_be_loading(exc: aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError) -> bool:
    """Refused (vLLM not listening yet) or slow to connect: worth retrying. A name that
    does not resolve or a TLS failure is not."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return True
    return isinstance(exc.os_error, ConnectionRefusedError)


class _Chunks:
    """A response body as it arrives: whatever has been received, one piece per read,
    so a relay that falls behind catches up in fewer, larger writes.

    With `timeout`, a body that stays quiet that long fails as a read timeout. Its timer
    is lazy: each piece only notes the time, and the timer, when it fires early, moves
    itself to the new deadline; so a stream costs one timer per quiet period."""

    __slots__ = ("_content", "_label", "_timeout", "_loop", "_last", "_timer")

    def __init__(
        self, response: aiohttp.ClientResponse, label: str, timeout: float | None = None
    ) -> None:
        self._content = response.content
        self._label = label
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        if timeout:
            self._timer = self._loop.call_at(self._last + timeout, self._check)

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except _FAILURES as exc:
            self.stop()
            raise _failure(exc, self._label) from None
        if not chunk:
            self.stop()
            raise StopAsyncIteration
        self._last = self._loop.time()
        return chunk

    def _check(self) -> None:
        deadline = self._last + (self._timeout or 0)
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check)
            return
        self._timer = None
        self._content.set_exception(aiohttp.SocketTimeoutError("no data from the upstream"))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class HttpUpstream:
    """One OpenAI-compatible server at `base_url` (without /v1), on a shared client."""

    def __init__(
        self,
        client: UpstreamClient,
        base_url: str,
        *,
        label: str = "upstream",
        connect_wait: float = 0.0,
        retry_after: int = 30,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._label = label
        self._connect_wait = connect_wait
        self._retry_after = retry_after

    async def request(self, method: str, path: str, body: dict | None = None) -> UpstreamResponse:
        response, waited = await self._send(method, path, body)
        try:
            status, headers = self._head(response)
            content = await self._read_whole(response)
        except BaseException:
            response.close()  # unfinished: the connection is closed, never reused
            raise
        response.release()
        return UpstreamResponse(status, headers, content, cold_start=waited)

    async def stream(self, path: str, body: dict) -> UpstreamStream:
        response, waited = await self._send("POST", path, body, stream=True)
        try:
            status, headers = self._head(response)
        except BaseException:
            response.close()
            raise
        chunks = _Chunks(response, self._label, self._client.read_timeout)

        async def close() -> None:
            chunks.stop()
            # Read whole: back to the pool. Cut short: closed, so vLLM aborts the request.
            if response.content.is_eof():
                response.release()
            else:
                response.close()

        return UpstreamStream(status, headers, chunks, close, cold_start=waited)

    def _head(self, response: aiohttp.ClientResponse) -> tuple[int, dict[str, str]]:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise UpstreamProtocolError(
                f"{self._label} sent a {encoding!r}-encoded answer; the gateway asks for "
                "identity and does not decompress."
            )
        for name, value in response.headers.items():
            if name.lower() in RELAYED_RESPONSE_HEADERS and not _printable(value):
                raise UpstreamProtocolError(
                    f"{self._label} sent a {name.lower()!r} header with control characters."
                )
        return check_status(response.status), relay_headers(response.headers)

    async def _read_whole(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._client.max_response_bytes
        if (response.content_length or 0) > limit:
            raise self._too_large(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in _Chunks(response, self._label):
            size += len(chunk)
            if size > limit:
                parts.clear()  # release what was read now, not when the error is freed
                raise self._too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    def _too_large(self, limit: int) -> UpstreamError:
        return UpstreamProtocolError(
            f"{self._label} answered with more than {limit} bytes; the gateway does not "
            "hold larger non-streamed answers (stream=true has no such limit).",
            code="upstream_response_too_large",
        )

    async def _send(
        self, method: str, path: str, body: dict | None, *, stream: bool = False
    ) -> tuple[aiohttp.ClientResponse, bool]:
        """The response, and whether connections were refused at first: the server was
        still starting (vLLM listens only once the model is loaded)."""
        url = self._base + path
        data = headers = None
        if body is not None:
            # ASCII escapes: a lone surrogate in a string (valid JSON) cannot be UTF-8.
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            headers = {"content-type": "application/json"}
        deadline = time.monotonic() + self._connect_wait
        waited = False
        while True:
            try:
                if not stream:
                    response = await self._client.session.request(
                        method, url, data=data, headers=headers, allow_redirects=False
                    )
                    return response, waited
                async with asyncio.timeout(self._client.read_timeout):  # until the head
                    response = await self._client.session.request(
                        method,
                        url,
                        data=data,
                        headers=headers,
                        allow_redirects=False,
                        timeout=self._client.stream_timeout,
                    )
                    return response, waited
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                if not _may_be_loading(exc):  # a wrong host or scheme does not heal
                    raise _failure(exc, self._label) from None
                if time.monotonic() >= deadline:
                    raise UpstreamUnavailable(
                        f"{self._label} is not accepting connections "
                        "(it may still be loading the model).",
                        retry_after=self._retry_after,
                    ) from exc
                waited = True
                await asyncio.sleep(CONNECT_RETRY_INTERVAL)
            except _FAILURES as exc:
                raise _failure(exc, self._label) from None


class HttpBackend:
    """Forwards to OpenAI-compatible servers: model key -> base URL without /v1.

    `timeout` bounds each read (between stream chunks, or for a whole non-streamed
    answer); `connect_wait` is how long refused connections are retried, because vLLM
    refuses them while it loads. The gateway's cold-start budget usually cuts both.
    `max_response_bytes` caps a non-streamed answer (502 past it).
    """

    def __init__(
        self,
        upstreams: Mapping[str, str],
        *,
        timeout: float = 600.0,
        connect_wait: float = 600.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._client = UpstreamClient(timeout, max_response_bytes=max_response_bytes)
        self._upstreams = {
            key: HttpUpstream(
                self._client, url, label=f"Model server for '{key}'", connect_wait=connect_wait
            )
            for key, url in upstreams.items()
        }

    def _upstream(self, model: ServedModel) -> HttpUpstream:
        upstream = self._upstreams.get(model.key)
        if upstream is None:
            raise ModelNotDeployed(model.served_name)
        return upstream

    async def request(self, model: ServedModel, path: str, body: dict) -> UpstreamResponse:
        return await self._upstream(model).request("POST", path, body)

    async def stream(self, model: ServedModel, path: str, body: dict) -> UpstreamStream:
        return await self._upstream(model).stream(path, body)

    async def aclose(self) -> None:
        await self._client.aclose()
