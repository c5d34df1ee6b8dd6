"""How the gateway reaches model servers over HTTP, and the interface every backend has.

`HttpBackend` forwards to OpenAI-compatible servers (vLLM on localhost in legacy mode,
any URL for `mvgen gateway`); `PoolServer` (vllm_process.py) uses `HttpUpstream` to reach
its local vLLM. gpu mode's `ModalBackend`, which calls container pools through Modal, is
in modal_backend.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from .errors import (
    ModelNotDeployed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .models import ServedModel
from .transport import LeanTransport

# Upstream response headers worth relaying; everything else (hop-by-hop headers,
# content-length/encoding that no longer match, server identity) is dropped.
RELAYED_RESPONSE_HEADERS = frozenset({"content-type", "retry-after", "x-request-id"})

# vLLM refuses connections while it loads, so a refused connection is retried this often.
CONNECT_RETRY_INTERVAL = 0.25

# Below uvicorn's 5 s keep-alive timeout (vLLM runs uvicorn), so the gateway never
# reuses a connection the server is about to close.
KEEPALIVE_EXPIRY = 2.0
MAX_IDLE_CONNECTIONS = 512


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]  # filtered to RELAYED_RESPONSE_HEADERS
    content: bytes


@dataclass
class UpstreamStream:
    """An upstream response whose body is still arriving; always `aclose()` it."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    _close: Callable[[], Awaitable[Any]] = field(repr=False)

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

    async def ready(self, model: ServedModel) -> bool: ...

    async def aclose(self) -> None: ...


def relay_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() in RELAYED_RESPONSE_HEADERS}


# --- HTTP ---------------------------------------------------------------------------


class _UpstreamClient(httpx.AsyncClient):
    """An AsyncClient that keeps no cookies: one client serves every user, so a cookie
    an upstream set must not travel with the next user's request. (Extracting them was
    also a tenth of the gateway's CPU per request.)"""

    @property
    def cookies(self) -> httpx.Cookies:
        return httpx.Cookies()

    @cookies.setter
    def cookies(self, value: Any) -> None:
        pass  # AsyncClient.__init__ sets them; there is nothing to keep


def new_http_client(timeout: float) -> httpx.AsyncClient:
    """One pooled client per process: no pool limit (the gateway's concurrency is set
    by Modal), no proxy settings from the environment (upstreams are usually loopback).
    Plain-http upstreams go through LeanTransport: httpcore's pool cost more CPU per
    request than the rest of the gateway (transport.py says why)."""
    # httpx logs every request at INFO: under a root logger at INFO (`mvgen gateway`) that
    # was a second line per request, with the upstream URL. Ours is the one line.
    httpx_log = logging.getLogger("httpx")
    if httpx_log.level == logging.NOTSET:
        httpx_log.setLevel(logging.WARNING)
    limits = httpx.Limits(
        max_connections=None,
        max_keepalive_connections=MAX_IDLE_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    transport = LeanTransport(
        keepalive_expiry=KEEPALIVE_EXPIRY,
        max_idle_per_origin=MAX_IDLE_CONNECTIONS,
        fallback=httpx.AsyncHTTPTransport(limits=limits, trust_env=False),
    )
    return _UpstreamClient(
        timeout=httpx.Timeout(timeout, connect=5.0, pool=None),
        transport=transport,
        headers={"accept-encoding": "identity"},
        trust_env=False,
    )


def map_transport_error(exc: httpx.HTTPError, label: str) -> UpstreamError:
    """Turn an httpx failure into the status the client should see."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{label} did not answer in time ({type(exc).__name__}).")
    if isinstance(exc, httpx.RemoteProtocolError):
        return UpstreamProtocolError(
            f"{label} closed the connection or sent a malformed HTTP response."
        )
    if isinstance(exc, httpx.NetworkError):
        return UpstreamProtocolError(
            f"{label} connection failed ({type(exc).__name__}).",
            code="upstream_connection_error",
        )
    return UpstreamProtocolError(f"{label} request failed ({type(exc).__name__}).")


class HttpUpstream:
    """One OpenAI-compatible server at `base_url` (without /v1), on a shared client."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        label: str = "upstream",
        connect_wait: float = 0.0,
        retry_after: int = 30,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}  # parsed once: parsing cost more than sending
        self._label = label
        self._connect_wait = connect_wait
        self._retry_after = retry_after

    async def request(self, method: str, path: str, body: dict | None = None) -> UpstreamResponse:
        response = await self._send(method, path, body)
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._label) from exc
        finally:
            await response.aclose()
        return UpstreamResponse(response.status_code, relay_headers(response.headers), content)

    async def healthy(self, timeout: float = 5.0) -> bool:
        """One GET /health, no retries: a loading server simply is not healthy yet."""
        try:
            response = await self._client.get(self._base + "/health", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def stream(self, path: str, body: dict) -> UpstreamStream:
        response = await self._send("POST", path, body)
        return UpstreamStream(
            response.status_code,
            relay_headers(response.headers),
            self._chunks(response),
            response.aclose,
        )

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._label) from exc

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self._base + path)
            if len(self._urls) < 64:  # a handful of routes; never grow without bound
                self._urls[path] = url
        return url

    async def _send(self, method: str, path: str, body: dict | None) -> httpx.Response:
        deadline = time.monotonic() + self._connect_wait
        while True:
            request = self._client.build_request(method, self._url(path), json=body)
            try:
                return await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if time.monotonic() >= deadline:
                    raise UpstreamUnavailable(
                        f"{self._label} is not accepting connections "
                        "(it may still be loading the model).",
                        retry_after=self._retry_after,
                    ) from exc
                await asyncio.sleep(CONNECT_RETRY_INTERVAL)
            except httpx.HTTPError as exc:
                raise map_transport_error(exc, self._label) from exc


class HttpBackend:
    """Forwards to OpenAI-compatible servers: model key -> base URL without /v1.

    `timeout` bounds each read (between stream chunks, or for a whole non-streamed
    answer); `connect_wait` is how long refused connections are retried, because vLLM
    refuses them while it loads. The gateway's cold-start budget usually cuts both.
    """

    def __init__(
        self,
        upstreams: Mapping[str, str],
        *,
        timeout: float = 600.0,
        connect_wait: float = 600.0,
    ) -> None:
        self._client = new_http_client(timeout)
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

    async def ready(self, model: ServedModel) -> bool:
        """GET /health on the upstream, once, with a short deadline."""
        try:
            upstream = self._upstream(model)
        except ModelNotDeployed:
            return False
        return await upstream.healthy()

    async def aclose(self) -> None:
        await self._client.aclose()
