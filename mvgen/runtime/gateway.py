"""The public, OpenAI-compatible gateway in front of the vLLM servers of one app.

It authenticates with a Bearer key, resolves the requested model by any of its names,
forwards the JSON body with `model` rewritten (and, for streams, vLLM's usage event asked
for, then dropped again: docs/gateway.md, "Logs"), and relays answers and SSE streams.
Only the routes below exist, each served to the kinds of model that have it (chat, or
embeddings and rerank); vLLM's other (unauthenticated) routes are never reachable.
See docs/gateway.md for the behaviour and the reasons behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .backends import Backend, UpstreamResponse, check_status, relay_headers
from .errors import (
    ApiError,
    UpstreamProtocolError,
    embedded_error_status,
    error_body,
    relay_error_content,
)
from .models import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    KIND_NAMES,
    RERANK_PATH,
    SCORE_PATH,
    ModelTable,
    ServedModel,
    Target,
    routes_text,
)
from .request_log import format_line, request_record
from .start_failures import StartGate
from .stream_usage import ask_for_usage
from .streaming import DIRECT_SEND, StreamPolicy, StreamRelay, until_disconnected

log = logging.getLogger("mvgen.gateway")

T = TypeVar("T")

POOLING_PATHS = (EMBEDDINGS_PATH, RERANK_PATH, SCORE_PATH)
ROUTE_PATHS = frozenset({"/health", "/v1/models", CHAT_PATH, COMPLETIONS_PATH, *POOLING_PATHS})
# Where vLLM 0.12 serves each pooling route: /rerank and /score run the handlers of
# /v1/rerank and /v1/score without their deprecation warnings (a warning on every /v1/score
# call; vllm/entrypoints/pooling/score/api_router.py). The client never reaches these paths
# itself: vLLM's --api-key leaves every path outside /v1 open.
UPSTREAM_PATHS = {EMBEDDINGS_PATH: "/v1/embeddings", RERANK_PATH: "/rerank", SCORE_PATH: "/score"}
# encoding_format values the gateway relays: vLLM's "bytes" is a raw application/octet-stream
# body with its layout in a `metadata` header (vllm/entrypoints/pooling/embed/api_router.py),
# neither of which the gateway relays.
ENCODING_FORMATS = ("float", "base64")
CLIENT_CLOSED_REQUEST = 499  # nginx's convention; only ever seen in our log line


@dataclass(frozen=True)
class GatewaySettings:
    api_key_env: str = "API_KEY"  # comma-separated keys, read once at app creation
    require_auth: bool = True  # False only for `mvgen gateway --no-auth`
    max_body_bytes: int = 32 * 1024 * 1024  # room for a few base64 images
    # Bodies of all requests in flight, until each is handed to the upstream: bounds
    # the memory concurrent uploads take (each byte is held about three times while it
    # is parsed and re-serialised). Past it: 503 gateway_busy.
    max_inflight_body_bytes: int = 256 * 1024 * 1024
    body_timeout: float = 60.0  # the whole request body must arrive within this
    # Non-streaming: how long to wait for the upstream before 503 + Retry-After;
    # safely under Modal's 150 s web request limit (past it Modal answers 303).
    cold_start_budget: float = 120.0
    retry_after: int = 30
    # Streaming: wait this long for the upstream's status before committing to 200
    # and SSE keep-alive comments, then at most stream_start_timeout in total.
    stream_commit_after: float = 10.0
    keepalive_interval: float = 10.0
    stream_start_timeout: float = 600.0
    max_error_body_bytes: int = 64 * 1024
    gpu: str | None = None  # the GPU the app serves on, for the request log line

    def stream_policy(self) -> StreamPolicy:
        return StreamPolicy(
            commit_after=self.stream_commit_after,
            keepalive_interval=self.keepalive_interval,
            start_timeout=self.stream_start_timeout,
            error_body_limit=self.max_error_body_bytes,
        )


def create_app(
    models: ModelTable,
    backend: Backend,
    *,
    settings: GatewaySettings | None = None,
    gate: StartGate | None = None,
) -> RequestLogMiddleware:
    """The gateway as an ASGI app: Starlette inside the request log. `gate`, when given,
    answers models whose start failed (start_failures.py)."""
    settings = settings or GatewaySettings()
    keys = load_api_keys(settings.api_key_env)
    gateway = _Gateway(models, backend, settings, keys, gate)
    _ensure_log_output()
    app = Starlette(
        routes=gateway.routes(),
        middleware=[Middleware(CanonicalPathMiddleware)],
        exception_handlers={
            ApiError: _api_error_response,
            HTTPException: _http_error_response,
            ClientDisconnect: _client_gone_response,
            Exception: _internal_error_response,
        },
        lifespan=gateway.lifespan,
    )
    # "/v1/models/" must be a 404 like any other unknown path, not a redirect.
    app.router.redirect_slashes = False
    return RequestLogMiddleware(app, gpu=settings.gpu)


def load_api_keys(env_var: str) -> tuple[bytes, ...]:
    raw = os.environ.get(env_var, "")
    return tuple(key.strip().encode() for key in raw.split(",") if key.strip())


class _Gateway:
    def __init__(
        self,
        models: ModelTable,
        backend: Backend,
        settings: GatewaySettings,
        keys: tuple[bytes, ...],
        gate: StartGate | None = None,
    ) -> None:
        self._models = models
        self._backend = backend
        self._settings = settings
        self._keys = keys
        self._gate = gate
        self._budget = BodyBudget(settings.max_inflight_body_bytes)
        self._created = int(time.time())
        if settings.require_auth and not keys:
            log.error(
                "%s is empty: every authenticated route will answer 500 "
                "server_misconfigured until a key is configured",
                settings.api_key_env,
            )

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route(CHAT_PATH, self.chat_completions, methods=["POST"]),
            Route(COMPLETIONS_PATH, self.completions, methods=["POST"]),
            *(Route(path, self.pooling, methods=["POST"]) for path in POOLING_PATHS),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self._backend.aclose()

    async def health(self, request: Request) -> Response:
        # Never touches the backend: a health probe must not wake a GPU pool.
        return JSONResponse({"status": "ok"})

    async def list_models(self, request: Request) -> Response:
        self._authorize(request)
        data = [
            {
                "id": model.served_name,
                "object": "model",
                "created": self._created,
                "owned_by": "mvgen",
                "kind": model.kind,  # not OpenAI's; clients ignore keys they do not know
            }
            for model in sorted(self._models.models, key=lambda m: m.served_name)
        ]
        # LoRA adapters after the models, with their base as vLLM lists them: `root` is
        # where the adapter comes from, `parent` the base model's served name; an adapter
        # serves its base model's routes, so it has its kind.
        adapters = [(a, m) for m in self._models.models for a in m.adapters]
        data += [
            {
                "id": adapter.name,
                "object": "model",
                "created": self._created,
                "owned_by": "mvgen",
                "kind": model.kind,
                "root": adapter.root,
                "parent": model.served_name,
            }
            for adapter, model in sorted(adapters, key=lambda pair: pair[0].name)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, CHAT_PATH)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, COMPLETIONS_PATH)

    async def pooling(self, request: Request) -> Response:
        """/v1/embeddings, /v1/rerank, /v1/score: never streamed, forwarded to vLLM's own
        path for the route."""
        path = request.url.path
        self._authorize(request)
        held = BodyReservation(self._budget)
        try:
            body = await read_json_object(request, self._settings, held)
            model = self._target(request, body, path).model
            check_pooling_body(path, body)
            if self._gate is not None:
                await self._gate.check(model)
            return await self._forward(request, model, UPSTREAM_PATHS[path], body)
        finally:
            held.release()

    async def _generate(self, request: Request, path: str) -> Any:
        self._authorize(request)
        held = BodyReservation(self._budget)
        try:
            body = await read_json_object(request, self._settings, held)
            target = self._target(request, body, path)
            model = target.model  # an adapter's requests go to its base model's pool
            stream = stream_flag(body)
            request.state.stream = stream
            if self._gate is not None:
                await self._gate.check(model)  # a pool that keeps failing to start is not woken
            if stream:
                # The relay releases the reservation once the upstream has the body.
                relay = StreamRelay(
                    lambda: self._guarded(model, self._backend.stream(model, path, body)),
                    self._settings.stream_policy(),
                    target.upstream_name,
                    on_opened=held.release,
                    strip_usage=ask_for_usage(body),  # the log line's token count
                )
                held = None
                return relay
            return await self._forward(request, model, path, body)
        finally:
            if held is not None:
                held.release()

    def _target(self, request: Request, body: dict[str, Any], path: str) -> Target:
        """What the body's "model" names, checked against the route, noted for the request
        log, and renamed in the body to what vLLM knows it as (an adapter's name makes vLLM
        apply it)."""
        target = self._resolve(body)
        request.state.model = target.model.key
        if target.adapter is not None:
            request.state.adapter = target.adapter.name
        self._check_route(target, path)
        body["model"] = target.upstream_name
        return target

    def _guarded(self, model: ServedModel, work: Awaitable[T]) -> Awaitable[T]:
        return work if self._gate is None else self._gate.guard(model, work)

    async def _forward(
        self, request: Request, model: ServedModel, path: str, body: dict
    ) -> Response:
        try:
            async with asyncio.timeout(self._settings.cold_start_budget):
                upstream = await until_disconnected(
                    self._guarded(model, self._backend.request(model, path, body)),
                    request.receive,
                )
        except TimeoutError:
            raise self._not_ready(model) from None
        if upstream is None:
            request.state.client_disconnected = True
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        state = request.scope["state"]
        state["first_token_at"] = time.perf_counter()  # the whole answer, for the log
        state["cold_start"] = upstream.cold_start
        return relay_response(upstream, state)

    def _not_ready(self, model: ServedModel) -> ApiError:
        budget = self._settings.cold_start_budget
        return ApiError(
            503,
            "model_not_ready",
            f"Model '{model.served_name}' did not answer within {budget:g} s. It is "
            "probably starting (a cold start loads the model onto a GPU and can take "
            f"minutes): retry in {self._settings.retry_after} s. Generations longer "
            "than that should use stream=true.",
            retry_after=self._settings.retry_after,
        )

    def _authorize(self, request: Request) -> None:
        if not self._settings.require_auth:
            return
        if not self._keys:
            # A missing secret must never mean "open".
            raise ApiError(
                500,
                "server_misconfigured",
                "The gateway has no API key configured, so it refuses every request. "
                f"Set {self._settings.api_key_env} (e.g. in the Modal secret).",
            )
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise _unauthorized(
                "missing_api_key", "Missing API key: send 'Authorization: Bearer <key>'."
            )
        if not key_matches(token, self._keys):
            raise _unauthorized("invalid_api_key", "Invalid API key.")

    def _check_route(self, target: Target, path: str) -> None:
        """A route the model's kind does not serve is refused here, without waking a GPU:
        vLLM 0.12 would answer it with HTTP 200 and an error body. An adapter serves its
        base model's routes."""
        model = target.model
        if path in model.routes:
            return
        raise ApiError(
            400,
            "unsupported_route",
            f"Model '{target.upstream_name}' is {KIND_NAMES[model.kind]} (kind: {model.kind}): "
            f"it serves {routes_text(model.kind)}, not {path}.",
        )

    def _resolve(self, body: dict[str, Any]) -> Target:
        name = body.get("model")
        available = ", ".join(self._models.names())
        if name is None:
            raise ApiError(
                400,
                "missing_model",
                f"The request body must name a 'model'. Available models: {available}.",
            )
        if not isinstance(name, str) or not name:
            raise ApiError(400, "invalid_model", "'model' must be a non-empty string.")
        target = self._models.target(name)
        if target is None:
            raise ApiError(
                404,
                "model_not_found",
                f"The model {name[:100]!r} does not exist. Available models: {available}.",
            )
        return target


# --- request parsing ---------------------------------------------------------------


def bearer_token(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token.encode("utf-8", errors="surrogateescape")


def key_matches(token: bytes, keys: tuple[bytes, ...]) -> bool:
    """Constant-time comparison against every key (no early exit reveals which)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return matched


class BodyBudget:
    """How many request-body bytes the gateway holds at once, across all requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise ApiError(
                503,
                "gateway_busy",
                "The gateway is receiving too many large request bodies at once; retry "
                "in a second.",
                retry_after=1,
                headers={"Connection": "close"},  # the rest of this body is not read
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


class BodyReservation:
    """One request's share of the BodyBudget; release() is safe to call twice."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def grow_to(self, size: int) -> None:
        if size > self.size:
            self._budget.take(size - self.size)
            self.size = size

    def release(self) -> None:
        self._budget.give(self.size)
        self.size = 0


async def read_body(
    request: Request, limit: int, held: BodyReservation, timeout: float
) -> bytearray:
    """The body, refused with 413 past `limit` whatever Content-Length claims, and 408
    unless it all arrives within `timeout` (a Content-Length larger than the body sent
    must not hold the request forever). The bytes are reserved in `held` as they come;
    a declared length is reserved up front, so an upload that cannot fit fails at once."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        if int(declared) > limit:
            raise _too_large(limit)
        held.grow_to(int(declared))
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                if len(body) + len(chunk) > limit:
                    raise _too_large(limit)
                held.grow_to(len(body) + len(chunk))
                body += chunk
    except TimeoutError:
        raise ApiError(
            408,
            "request_timeout",
            f"The request body did not arrive within {timeout:g} s ({len(body)} bytes received).",
            headers={"Connection": "close"},
        ) from None
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity, which JSON cannot carry
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


async def read_json_object(
    request: Request, settings: GatewaySettings, held: BodyReservation
) -> dict[str, Any]:
    raw = await read_body(request, settings.max_body_bytes, held, settings.body_timeout)
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}).",
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400, "invalid_json", f"The request body is not valid JSON ({exc})."
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    return data


def stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid_stream", "'stream' must be true or false.")
    return stream


def check_pooling_body(path: str, body: dict[str, Any]) -> None:
    """What a pooling route refuses before the model sees it: streams, and embeddings as raw
    bytes (ENCODING_FORMATS)."""
    if body.get("stream") not in (None, False):
        raise ApiError(
            400, "invalid_stream", f"{path} does not stream: leave out 'stream' or set it false."
        )
    encoding = body.get("encoding_format")
    if path == EMBEDDINGS_PATH and encoding is not None and encoding not in ENCODING_FORMATS:
        raise ApiError(
            400,
            "unsupported_encoding_format",
            f"encoding_format {str(encoding)[:40]!r} is not relayed by this gateway: use "
            "'float' (the default) or 'base64'.",
        )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"The request body is larger than {limit} bytes.")


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


# --- upstream answers ----------------------------------------------------------------


def relay_response(upstream: UpstreamResponse, state: dict[str, Any] | None = None) -> Response:
    """The upstream's status and body; a success must be JSON, an error becomes JSON.
    Status and headers are checked here, whatever the backend, so the client always
    gets a well-formed answer. `state` (the request's) gets what the log line needs."""
    check_status(upstream.status)
    headers = relay_headers(upstream.headers)
    headers.setdefault("content-type", "application/json")
    state = {} if state is None else state
    if 200 <= upstream.status < 300:
        try:
            answer = json.loads(upstream.content)
        except (ValueError, RecursionError):
            raise UpstreamProtocolError(
                "The model server answered with a body that is not JSON.",
                code="bad_upstream_response",
            ) from None
        status = embedded_error_status(answer) or upstream.status  # vLLM's 200 + error object
        if status != upstream.status:
            state["error"] = f"upstream_{status}"
        state["tokens_out"] = completion_tokens(answer)
        return Response(upstream.content, status, headers=headers)
    state["error"] = f"upstream_{upstream.status}"
    content = relay_error_content(upstream.status, upstream.content)
    headers["content-type"] = "application/json"
    return Response(content, upstream.status, headers=headers)


def completion_tokens(answer: Any) -> int | None:
    """`usage.completion_tokens` of an OpenAI-style answer, when it has one."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


# --- error responses -----------------------------------------------------------------


async def _api_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    request.state.error = exc.code
    return JSONResponse(exc.body(), exc.status, headers=exc.headers())


async def _http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        message = f"Method {request.method} is not allowed on this route."
        code = "method_not_allowed"
    elif exc.status_code == 404:
        message, code = "Unknown route.", "not_found"
    else:
        message, code = str(exc.detail), "http_error"
    request.state.error = code
    return JSONResponse(
        error_body(message, code, exc.status_code), exc.status_code, headers=exc.headers
    )


async def _client_gone_response(request: Request, exc: Exception) -> Response:
    request.state.client_disconnected = True
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _internal_error_response(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    request.state.error = "internal_error"
    return JSONResponse(
        error_body("Internal gateway error.", "internal_error", 500), status_code=500
    )


# --- middleware ----------------------------------------------------------------------


class CanonicalPathMiddleware:
    """404 for any path that only matches a route after percent-decoding, e.g.
    `/v1/chat%2Fcompletions`: only the canonical spelling of a route exists."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _is_canonical(scope):
            scope.setdefault("state", {})["error"] = "not_found"
            response = JSONResponse(error_body("Unknown route.", "not_found", 404), 404)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_canonical(scope: dict) -> bool:
    raw_path = scope.get("raw_path")
    if raw_path is None:  # servers may omit it; the decoded path is then all we have
        return True
    return raw_path.split(b"?", 1)[0] == scope["path"].encode("utf-8", "surrogateescape")


class RequestLogMiddleware:
    """One log line per request (request_log.py): model, GPU, status, time to first
    token, tokens out, duration, cold start, error code, bytes. Never headers, query
    strings or bodies, so never a key or prompt text.

    Outermost, so it sees every answer (Starlette's own 500 too). It also leaves the
    server's `send` in the scope for StreamRelay: relayed chunks go straight to it,
    past the layers between (which only watch for the response start), and are counted
    here. Per streamed token that saves four calls."""

    def __init__(self, app: Any, *, gpu: str | None = None) -> None:
        self.app = app
        self.gpu = gpu

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        counts = {"status": 0, "bytes_in": 0, "bytes_out": 0}

        async def counting_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                counts["bytes_in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
            elif message["type"] == "http.response.body":
                counts["bytes_out"] += len(message.get("body", b""))
            await send(message)

        scope[DIRECT_SEND] = (send, counts)
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self._log(scope, counts, started)

    def _log(self, scope: dict, counts: dict[str, int], started: float) -> None:
        record = request_record(
            scope,
            route=scope["path"] if scope["path"] in ROUTE_PATHS else "(unknown)",
            status=counts["status"] or 500,
            bytes_in=counts["bytes_in"],
            bytes_out=counts["bytes_out"],
            started=started,
            ended=time.perf_counter(),
            gpu=self.gpu,
        )
        log.info("%s", format_line(record))


def _ensure_log_output() -> None:
    """Inside a Modal container nothing configures logging; make the request lines
    visible there without duplicating them where logging is already set up."""
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        log.addHandler(handler)
