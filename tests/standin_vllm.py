"""A stand-in for vLLM's OpenAI-compatible server, for tests and benchmarks only.

It is not vLLM and generates no text worth reading: it answers /health, /v1/models,
/v1/chat/completions and /v1/completions (JSON and SSE streams with a final usage
chunk; `echo` honoured on completions) with deterministic tokens `tok0 tok1 ...`, and
records every request it receives (path, headers, JSON body) for assertions.

It also answers vLLM 0.12's pooling routes, with fake numbers of the right shapes:
/v1/embeddings (a hashed bag-of-words vector per input, so similar texts get similar
vectors; `encoding_format` float or base64), /rerank, /v1/rerank and /v2/rerank, /score
and /v1/score (cosine similarity of those vectors), and /pooling and /classify, which
vLLM leaves open. Like vLLM 0.12, a route the model's kind lacks (`kinds`) is answered
with HTTP 200 and an error object.

It is plain asyncio rather than a web framework so that it can misbehave the way real
servers do: refuse connections until "loaded", answer 503 on /health, delay each chunk,
return errors, drop the connection, hang, or send bytes that are not HTTP.

In-process (a background thread with its own event loop)::

    with StandinServer(StandinConfig(chunks=5)) as upstream:
        ...  # upstream.url, upstream.requests, upstream.config.mode = "error"

As a subprocess::

    python tests/standin_vllm.py --port 8001 --ready-after 5 --chunk-delay 0.05

A subprocess's recordings are at GET /_standin/requests, and POST /_standin/config
with a JSON object changes its configuration while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import math
import re
import socket
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

MODES = ("ok", "error", "drop", "garbage", "not_json", "hang", "drop_mid_stream")
NOT_READY_MODES = ("refuse", "503")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
_REASONS.update({503: "Service Unavailable", 429: "Too Many Requests"})


@dataclass
class StandinConfig:
    served_names: list[str] = field(default_factory=lambda: ["standin/model"])
    ready_after: float = 0.0  # seconds until "loaded"
    not_ready: str = "refuse"  # "refuse": not listening yet (like vLLM); "503": answer 503
    mode: str = "ok"  # see MODES; applies to the two completion routes
    error_status: int = 400  # status used by mode "error"
    chunks: int = 4  # content tokens per answer (capped by max_tokens)
    chunk_delay: float = 0.0  # seconds before each streamed chunk
    response_delay: float = 0.0  # seconds before the response starts
    # served name -> "chat", "embed" or "rerank" (chat when absent): which routes work
    kinds: dict[str, str] = field(default_factory=dict)
    embedding_dim: int = 64


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it is not JSON
    chunks_sent: int = 0
    chunk_times: list[float] = field(default_factory=list)  # time.monotonic() per chunk sent
    completed: bool = False
    client_disconnected: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandinServer:
    """The stand-in, run on its own event loop in a daemon thread."""

    def __init__(
        self, config: StandinConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or StandinConfig()
        self.host = host
        self.port = port or free_port()
        self._records: list[RecordedRequest] = []
        self._started_at = time.monotonic()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._records)

    def completion_requests(self) -> list[RecordedRequest]:
        return [r for r in self._records if r.path.endswith("completions")]

    def pooling_requests(self) -> list[RecordedRequest]:
        return [r for r in self._records if r.path in POOLING_ROUTES]

    def clear(self) -> None:
        self._records.clear()

    def is_ready(self) -> bool:
        return time.monotonic() - self._started_at >= self.config.ready_after

    # --- lifecycle ---

    def start(self, wait: bool | None = None) -> StandinServer:
        """Start the thread; waits until listening unless readiness is delayed by
        refusing connections (then the port opens `ready_after` seconds later)."""
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="standin-vllm", daemon=True)
        self._thread.start()
        delayed = self.config.ready_after > 0 and self.config.not_ready == "refuse"
        if wait if wait is not None else not delayed:
            if not self._listening.wait(10):
                raise RuntimeError("stand-in did not start listening within 10 s")
        return self

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self.serve())
        finally:
            self._loop.close()

    async def serve(self) -> None:
        """Serve until stop(); also the subprocess entry point."""
        self._stop = asyncio.Event()
        if self.config.not_ready == "refuse":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.ready_after)
            if self._stop.is_set():
                return
        server = await asyncio.start_server(self._connection, self.host, self.port, backlog=2048)
        self._listening.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await server.wait_closed()

    # --- HTTP ---

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one request; False when the connection must close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False
        method, path, headers = _parse_head(head)
        length = int(headers.get("content-length") or 0)
        raw = await reader.readexactly(length) if length else b""
        if path.startswith("/_standin/"):
            return await self._control(method, path, raw, writer)
        record = RecordedRequest(method, path, headers, _parse_body(raw))
        self._records.append(record)
        return await self._route(record, reader, writer)

    async def _route(
        self, record: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        ready = self.is_ready()
        if record.method == "GET" and record.path == "/health":
            await _send(writer, 200 if ready else 503, b"", content_type="text/plain")
            return True
        if record.method == "GET" and record.path == "/v1/models":
            await _send_json(writer, 200, self._models_body())
            return True
        if record.method == "POST" and record.path in ("/v1/chat/completions", "/v1/completions"):
            if not ready:
                await _send_json(writer, 503, _error("The stand-in is still loading.", 503))
                return True
            if self._kind(record.body) != "chat":
                await _send_json(writer, 200, _unsupported("Chat Completions API"))
                return True
            return await self._completion(record, reader, writer)
        if record.method == "POST" and record.path in POOLING_ROUTES:
            if not ready:
                await _send_json(writer, 503, _error("The stand-in is still loading.", 503))
                return True
            await asyncio.sleep(self.config.response_delay)
            status, payload = self.pooling_answer(record.path, record.body)
            await _send_json(writer, status, payload)
            record.completed = status == 200
            return True
        await _send_json(writer, 404, _error("Not Found", 404))
        return True

    async def _control(
        self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if path == "/_standin/requests":
            await _send_json(writer, 200, [r.as_dict() for r in self._records])
        elif path == "/_standin/config" and method == "POST":
            for key, value in json.loads(raw or b"{}").items():
                setattr(self.config, key, value)
            await _send_json(writer, 200, dataclasses.asdict(self.config))
        else:
            await _send_json(writer, 404, _error("Not Found", 404))
        return True

    # --- completions ---

    async def _completion(
        self, record: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        config = self.config
        body = record.body
        if not isinstance(body, dict):
            await _send_json(writer, 400, _error("Body must be a JSON object.", 400))
            return True
        if body.get("model") not in config.served_names:
            message = f"The model `{body.get('model')}` does not exist."
            await _send_json(writer, 404, _error(message, 404))
            return True
        # Resolves (to b"") when the client leaves. It is cancelled before a non-streamed
        # answer, so it never eats the first byte of the next keep-alive request.
        disconnected = asyncio.ensure_future(reader.read(1))
        try:
            if await _wait_or_disconnect(disconnected, config.response_delay):
                record.client_disconnected = True
                return False
            if config.mode == "hang":
                await _wait_or_disconnect(disconnected, None)
                record.client_disconnected = True
                return False
            if body.get("stream") is True and config.mode in ("ok", "drop_mid_stream"):
                await self._stream(record, body, writer, disconnected)
                return False
        finally:
            disconnected.cancel()
            await asyncio.gather(disconnected, return_exceptions=True)
        return await self._answer(record, body, writer)

    async def _answer(
        self, record: RecordedRequest, body: dict[str, Any], writer: asyncio.StreamWriter
    ) -> bool:
        mode = self.config.mode
        if mode == "error":
            status = self.config.error_status
            await _send_json(writer, status, _error("Stand-in error as configured.", status))
            return True
        if mode == "drop":
            _abort(writer)
            return False
        if mode == "garbage":
            writer.write(b"THIS IS NOT HTTP\r\n\r\n\x00\xff")
            await writer.drain()
            return False
        if mode == "not_json":
            await _send(writer, 200, b"<html>not json", content_type="application/json")
            return True
        await _send_json(writer, 200, _full_answer(record.path, body, self._pieces(body)))
        record.completed = True
        return True

    async def _stream(
        self,
        record: RecordedRequest,
        body: dict[str, Any],
        writer: asyncio.StreamWriter,
        disconnected: asyncio.Future[bytes],
    ) -> None:
        events = _stream_events(record.path, body, self._pieces(body))
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        await writer.drain()
        drop_at = len(events) // 2 if self.config.mode == "drop_mid_stream" else None
        for index, event in enumerate(events):
            if index == drop_at:
                # Let the client read what was sent: a reset can discard unread data.
                await asyncio.sleep(0.2)
                _abort(writer)
                return
            if await _wait_or_disconnect(disconnected, self.config.chunk_delay):
                record.client_disconnected = True
                return
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            record.chunks_sent += 1
            record.chunk_times.append(time.monotonic())
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        record.completed = True

    def _pieces(self, body: dict[str, Any]) -> list[str]:
        count = self.config.chunks
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens >= 0:
            count = min(count, max_tokens)
        return [f"tok{i} " for i in range(count)]

    # --- pooling routes ---

    def _kind(self, body: Any) -> str:
        name = body.get("model") if isinstance(body, dict) else None
        return self.config.kinds.get(str(name), "chat")

    def pooling_answer(self, path: str, body: Any) -> tuple[int, Any]:
        """(status, JSON) for a pooling route, as vLLM 0.12 shapes it."""
        if not isinstance(body, dict):
            return 400, _error("Body must be a JSON object.", 400)
        if body.get("model") not in self.config.served_names:
            return 404, _error(f"The model `{body.get('model')}` does not exist.", 404)
        if self.config.mode == "error":
            return self.config.error_status, _error("Stand-in error as configured.", 400)
        route = POOLING_ROUTES[path]
        kind = self._kind(body)
        if route not in ROUTES_OF_KIND[kind]:
            return 200, _unsupported(UNSUPPORTED_API[route])
        try:
            if route == "embed":
                return 200, self.embeddings(body)
            if route == "rerank":
                return 200, self.rerank(body)
            if route == "score":
                return 200, self.score(body)
            return 200, {"object": "list", "data": []}  # /pooling, /classify: open in vLLM
        except (KeyError, TypeError, ValueError) as exc:
            return 400, _error(f"Invalid request: {exc}", 400)

    def vector(self, text: Any) -> list[float]:
        """A unit vector from the text's words hashed into embedding_dim buckets."""
        dim = self.config.embedding_dim
        values = [0.0] * dim
        words = re.findall(r"\w+", str(text).lower()) if not isinstance(text, list) else text
        for word in words:
            values[zlib.crc32(str(word).encode()) % dim] += 1.0
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        return [v / norm for v in values]

    def similarity(self, a: Any, b: Any) -> float:
        return sum(x * y for x, y in zip(self.vector(a), self.vector(b), strict=True))

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body["input"]
        if isinstance(texts, str) or (texts and isinstance(texts[0], int)):
            texts = [texts]
        data = []
        for index, text in enumerate(texts):
            vector: Any = self.vector(text)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"index": index, "object": "embedding", "embedding": vector})
        tokens = sum(len(self.vector_words(t)) for t in texts)
        return {"id": "embd-standin", "object": "list", "created": int(time.time()),
                "model": body["model"], "data": data, "usage": _pool_usage(tokens)}  # fmt: skip

    def vector_words(self, text: Any) -> list[Any]:
        return text if isinstance(text, list) else str(text).split()

    def rerank(self, body: dict[str, Any]) -> dict[str, Any]:
        query, documents = body["query"], list(body["documents"])
        scored = [(self.similarity(query, doc), i, doc) for i, doc in enumerate(documents)]
        scored.sort(key=lambda item: (-item[0], item[1]))
        top_n = int(body.get("top_n") or 0)
        results = [
            {"index": i, "document": {"text": doc, "multi_modal": None}, "relevance_score": score}
            for score, i, doc in (scored[:top_n] if top_n > 0 else scored)
        ]
        tokens = sum(len(self.vector_words(t)) for t in [query, *documents])
        return {"id": "rerank-standin", "model": body["model"],
                "usage": {"total_tokens": tokens}, "results": results}  # fmt: skip

    def score(self, body: dict[str, Any]) -> dict[str, Any]:
        first, second = body["text_1"], body["text_2"]
        first = [first] if isinstance(first, str) else list(first)
        second = [second] if isinstance(second, str) else list(second)
        if len(first) == 1:
            first = first * len(second)
        if not second or len(first) != len(second):
            raise ValueError("Input lengths must be either 1:1, 1:N or N:N")
        data = [
            {"index": i, "object": "score", "score": self.similarity(a, b)}
            for i, (a, b) in enumerate(zip(first, second, strict=True))
        ]
        tokens = sum(len(self.vector_words(t)) for t in first + second)
        return {"id": "score-standin", "object": "list", "created": int(time.time()),
                "model": body["model"], "data": data, "usage": _pool_usage(tokens)}  # fmt: skip

    def _models_body(self) -> dict[str, Any]:
        cards = [
            {"id": name, "object": "model", "created": 0, "owned_by": "standin"}
            for name in self.config.served_names
        ]
        return {"object": "list", "data": cards}


# --- helpers ---------------------------------------------------------------------------

# vLLM 0.12's pooling paths and what each runs (vllm/entrypoints/pooling/*/api_router.py).
POOLING_ROUTES = {
    "/v1/embeddings": "embed",
    "/rerank": "rerank",
    "/v1/rerank": "rerank",
    "/v2/rerank": "rerank",
    "/score": "score",
    "/v1/score": "score",
    "/pooling": "pooling",
    "/classify": "classify",
}
# What each kind of model supports: an embedding model also scores and reranks by cosine
# similarity; a cross-encoder classifies and scores but has no embeddings.
ROUTES_OF_KIND = {
    "chat": (),
    "embed": ("embed", "rerank", "score", "pooling"),
    "rerank": ("rerank", "score", "pooling", "classify"),
}
UNSUPPORTED_API = {
    "embed": "Embeddings API",
    "rerank": "Rerank (Score) API",
    "score": "Score API",
    "pooling": "Pooling API",
    "classify": "Classification API",
}


def _unsupported(api: str) -> dict[str, Any]:
    """vLLM 0.12's answer, with HTTP 200, to a route whose handler the model lacks."""
    return _error(f"The model does not support {api}", 400)


def _pool_usage(tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
            "prompt_tokens_details": None}  # fmt: skip


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _error(message: str, status: int) -> dict[str, Any]:
    # vLLM's own error shape.
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


async def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, content_type: str
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
    await _send(writer, status, json.dumps(payload).encode(), content_type="application/json")


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, like a crashed server."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.transport.abort()


async def _wait_or_disconnect(disconnected: asyncio.Future[bytes], delay: float | None) -> bool:
    """Sleep `delay` seconds (forever if None); True if the client left meanwhile."""
    if delay is not None and delay <= 0:
        return disconnected.done()
    await asyncio.wait({disconnected}, timeout=delay)
    return disconnected.done()


def _prompt_text(path: str, body: dict[str, Any]) -> str:
    if path.endswith("chat/completions"):
        parts = []
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        return " ".join(parts)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return " ".join(str(p) for p in prompt)
    return str(prompt)


def _usage(path: str, body: dict[str, Any], pieces: list[str]) -> dict[str, int]:
    prompt_tokens = len(_prompt_text(path, body).split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(pieces),
        "total_tokens": prompt_tokens + len(pieces),
    }


def _full_answer(path: str, body: dict[str, Any], pieces: list[str]) -> dict[str, Any]:
    text = "".join(pieces)
    base = {"created": int(time.time()), "model": body["model"]}
    usage = _usage(path, body, pieces)
    if path.endswith("chat/completions"):
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        return {"id": "chatcmpl-standin", "object": "chat.completion", **base,
                "choices": [choice], "usage": usage}  # fmt: skip
    if body.get("echo"):
        text = _prompt_text(path, body) + text
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
    return {"id": "cmpl-standin", "object": "text_completion", **base,
            "choices": [choice], "usage": usage}  # fmt: skip


def _stream_events(path: str, body: dict[str, Any], pieces: list[str]) -> list[bytes]:
    chat = path.endswith("chat/completions")
    base = {
        "id": "chatcmpl-standin" if chat else "cmpl-standin",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": body["model"],
    }
    choices: list[dict[str, Any]] = []
    if chat:
        choices.append({"index": 0, "delta": {"role": "assistant", "content": ""}})
    elif body.get("echo"):
        choices.append({"index": 0, "text": _prompt_text(path, body)})
    for i, piece in enumerate(pieces):
        key = {"delta": {"content": piece}} if chat else {"text": piece}
        last = i == len(pieces) - 1
        choices.append({"index": 0, **key, "finish_reason": "length" if last else None})
    payloads: list[dict[str, Any]] = [{**base, "choices": [c]} for c in choices]
    if _include_usage(body.get("stream_options")):
        payloads.append({**base, "choices": [], "usage": _usage(path, body, pieces)})
    # Compact, as vLLM's pydantic model_dump_json writes its events.
    events = [b"data: " + json.dumps(p, separators=(",", ":")).encode() + b"\n\n" for p in payloads]
    return [*events, b"data: [DONE]\n\n"]


def _include_usage(options: Any) -> bool:
    """vLLM 0.12's rule (entrypoints/utils.py should_include_usage): a stream_options
    object asks for the usage event unless its include_usage is false or null."""
    return isinstance(options, dict) and bool(options.get("include_usage", True))


# --- subprocess entry point ---------------------------------------------------------------


def _parse_args(argv: list[str]) -> tuple[StandinConfig, str, int]:
    parser = argparse.ArgumentParser(description="OpenAI-compatible stand-in for vLLM (tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-name", action="append", dest="served_names")
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--not-ready", choices=NOT_READY_MODES, default="refuse")
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--error-status", type=int, default=400)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--response-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    config = StandinConfig(
        served_names=args.served_names or ["standin/model"],
        ready_after=args.ready_after,
        not_ready=args.not_ready,
        mode=args.mode,
        error_status=args.error_status,
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        response_delay=args.response_delay,
    )
    return config, args.host, args.port


def main(argv: list[str] | None = None) -> None:
    config, host, port = _parse_args(sys.argv[1:] if argv is None else argv)
    server = StandinServer(config, host=host, port=port)
    print(f"stand-in vLLM (not vLLM) on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve())


if __name__ == "__main__":
    main()
