"""A lean OpenAI-compatible upstream for benchmarks: the least work per request.

    python benchmarks/fast_upstream.py --port 8101

Unlike tests/standin_vllm.py it records nothing and parses only what it must (request
line, Content-Length or chunked body, the JSON body's `model`, `stream` and `max_tokens`),
on raw asyncio streams (uvloop when installed), so that "direct" rows measure the network
path and the load generator rather than the stand-in. Answers are shaped like vLLM's:
`chat.completion` JSON, or SSE `chat.completion.chunk` events, one per token, in chunked
transfer encoding, then a usage chunk and `data: [DONE]`.

Timing comes from the model name, so one process serves every workload and the name
survives any proxy in between: `-d<ms>` holds the answer that long before its headers (a
model "thinking", so a realistic request rate can be offered), `-c<ms>` spaces stream
chunks (to hold many streams open at once). `org/bench-d50` answers after 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import time
from dataclasses import dataclass

DEFAULT_TOKENS = 16
HEALTH = b'{"status":"ok"}'
NO_MODELS = b'{"object":"list","data":[]}'


@dataclass(frozen=True)
class Timing:
    delay: float = 0.0  # seconds before an answer starts
    chunk_delay: float = 0.0  # seconds between stream chunks (0: just yield to the loop)


@functools.lru_cache(maxsize=64)
def timing_of(model: str) -> Timing:
    """`org/bench-d50-c20`: 50 ms before the answer, 20 ms between stream chunks."""
    delay = re.search(r"-d(\d+)", model)
    chunk = re.search(r"-c(\d+)", model)
    return Timing(
        int(delay.group(1)) / 1000 if delay else 0.0,
        int(chunk.group(1)) / 1000 if chunk else 0.0,
    )


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    keep_alive: bool


# Answers are built once per (model, tokens) and reused: the stand-in should cost next to
# nothing per request, and 1000 SSE events take milliseconds to encode.
@functools.lru_cache(maxsize=256)
def chat_json(model: str, tokens: int) -> bytes:
    text = "".join(f"tok{i} " for i in range(tokens))
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "length",
                }
            ],
            "usage": usage(tokens),
        },
        separators=(",", ":"),
    ).encode()


def usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}


@functools.lru_cache(maxsize=256)
def sse_frames(model: str, tokens: int) -> tuple[bytes, ...]:
    """Every SSE event of one streamed answer, one per token, each framed as an HTTP chunk."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time())}
    events = []
    for i in range(tokens):
        delta = {"content": f"tok{i} "} if i else {"role": "assistant", "content": "tok0 "}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        if i == tokens - 1:
            choice["finish_reason"] = "length"
        events.append(_event({**head, "model": model, "choices": [choice]}))
    events.append(_event({**head, "model": model, "choices": [], "usage": usage(tokens)}))
    events.append(b"data: [DONE]\n\n")
    return tuple(chunk_frame(event) for event in events)


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One HTTP/1.1 request, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    keep_alive = headers.get("connection", "").lower() != "close"
    return Request(method, path.split("?", 1)[0], body, keep_alive)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


def response_head(status: int, content_type: str, length: int | None) -> bytes:
    framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"content-type: {content_type}\r\n{framing}\r\n\r\n"
    ).encode()


class Upstream:
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await read_request(reader)) is not None:
                await self.answer(request, writer)
                if not request.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: nothing to clean up
        finally:
            writer.close()

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.method == "GET":
            body = HEALTH if request.path == "/health" else NO_MODELS
            writer.write(response_head(200, "application/json", len(body)) + body)
            return
        data = json.loads(request.body or b"{}")
        model = str(data.get("model", "bench"))
        tokens = int(data.get("max_tokens") or DEFAULT_TOKENS)
        timing = timing_of(model)
        if timing.delay:
            await asyncio.sleep(timing.delay)
        if not data.get("stream"):
            body = chat_json(model, tokens)
            writer.write(response_head(200, "application/json", len(body)) + body)
            return
        await self.stream(writer, sse_frames(model, tokens), timing.chunk_delay)

    async def stream(
        self, writer: asyncio.StreamWriter, frames: tuple[bytes, ...], chunk_delay: float
    ) -> None:
        writer.write(response_head(200, "text/event-stream; charset=utf-8", None))
        for frame in frames:
            writer.write(frame)
            await writer.drain()
            # Yield between tokens, as an engine step would, so concurrent streams interleave.
            await asyncio.sleep(chunk_delay)
        writer.write(b"0\r\n\r\n")


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(Upstream().handle, host, port, backlog=1024)
    print(f"fast upstream on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop  # optional: a faster event loop, as vLLM itself uses
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
