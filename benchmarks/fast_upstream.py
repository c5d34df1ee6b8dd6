"""A lean OpenAI-compatible upstream for benchmarks: the least work per request.

    python benchmarks/fast_upstream.py --port 8101

Unlike tests/standin_vllm.py it records nothing and parses only what it must (request
line, Content-Length or chunked body, the JSON body's `model`, `stream` and `max_tokens`),
on raw asyncio streams (uvloop when installed), so that "direct" rows measure the network
path and the load generator rather than the stand-in. Answers are shaped like vLLM's:
`chat.completion` JSON, or SSE `chat.completion.chunk` events, one per token, in chunked
transfer encoding, then a usage chunk and `data: [DONE]`.

Timing and size come from the model name, so one process serves every workload and the
name survives any proxy in between: `-d<ms>` holds the answer that long before its
headers (a model "thinking", so a realistic request rate can be offered), `-c<ms>` spaces
stream chunks (tokens paced as a model sends them), `-k<kB>` pads a non-streamed answer's
content to that many kilobytes. `org/bench-d50` answers after 50 ms.

HTTP is parsed here by hand, on purpose: this server is the ceiling of every "direct"
row, so it must cost as little as possible per request. A server on a library's parser
(aiohttp's low-level server) answered 6.7k req/s on one core where this one answers
14k, and a slower stand-in would make the gateway's added latency look smaller.

`--thread-burn-ms MS` makes every completion also spend MS ms of CPU in a new thread that
exits before the answer is sent: tests use it to check that the benchmark's CPU
accounting counts threads that no longer exist.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass

DEFAULT_TOKENS = 16
HEALTH = b'{"status":"ok"}'
NO_MODELS = b'{"object":"list","data":[]}'


@dataclass(frozen=True)
class Timing:
    delay: float = 0.0  # seconds before an answer starts
    chunk_delay: float = 0.0  # seconds between stream chunks (0: just yield to the loop)
    size: int = 0  # bytes of content in a non-streamed answer (0: from max_tokens)


@functools.lru_cache(maxsize=64)
def timing_of(model: str) -> Timing:
    """`org/bench-d50-c20`: 50 ms before the answer, 20 ms between stream chunks;
    `org/bench-k2000`: 2 MB of content."""

    def number(letter: str) -> int:
        found = re.search(rf"-{letter}(\d+)", model)
        return int(found.group(1)) if found else 0

    return Timing(number("d") / 1000, number("c") / 1000, number("k") * 1000)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    keep_alive: bool


# Answers are built once per (model, tokens) and reused: the stand-in should cost next to
# nothing per request, and 1000 SSE events take milliseconds to encode.
@functools.lru_cache(maxsize=256)
def chat_json(model: str, tokens: int, size: int = 0) -> bytes:
    text = "".join(f"tok{i} " for i in range(tokens))
    if size:
        text = (text * (size // max(1, len(text)) + 1))[:size]
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


BURN_BLOCK = bytes(64 * 1024)


def burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time, mostly in hashlib, which releases the
    GIL on large buffers: a pure-Python loop would stall the event loop meanwhile."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        hashlib.sha256(BURN_BLOCK).digest()


async def burn_in_exiting_thread(seconds: float) -> None:
    """Burn CPU in a new thread and wait until it has ended (the thread is gone from
    /proc/PID/task by the time the answer is sent)."""
    thread = threading.Thread(target=burn, args=(seconds,))
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.001)


class Upstream:
    def __init__(self, thread_burn: float = 0.0) -> None:
        self.thread_burn = thread_burn

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
        if self.thread_burn:
            await burn_in_exiting_thread(self.thread_burn)
        if timing.delay:
            await asyncio.sleep(timing.delay)
        if not data.get("stream"):
            body = chat_json(model, tokens, timing.size)
            writer.write(response_head(200, "application/json", len(body)) + body)
            return
        await self.stream(writer, sse_frames(model, tokens), timing.chunk_delay)

    async def stream(
        self, writer: asyncio.StreamWriter, frames: tuple[bytes, ...], chunk_delay: float
    ) -> None:
        writer.write(response_head(200, "text/event-stream; charset=utf-8", None))
        if chunk_delay:
            await paced(writer, frames, chunk_delay)
        else:
            for frame in frames:
                writer.write(frame)
                await writer.drain()
                await asyncio.sleep(0)  # as an engine step would: concurrent streams interleave
        if not writer.is_closing():
            writer.write(b"0\r\n\r\n")


def paced(
    writer: asyncio.StreamWriter, frames: tuple[bytes, ...], interval: float
) -> asyncio.Future:
    """Writes one frame every `interval` seconds from timer callbacks, without a task
    switch per frame: a paced stand-in must stay cheap at a thousand streams. The future
    completes after the last frame, or when the client has gone."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    pending = iter(frames)

    def send_next() -> None:
        frame = next(pending, None)
        if frame is None or writer.is_closing():
            done.set_result(None)
            return
        writer.write(frame)
        loop.call_later(interval, send_next)

    send_next()
    return done


async def serve(host: str, port: int, thread_burn: float = 0.0) -> None:
    server = await asyncio.start_server(Upstream(thread_burn).handle, host, port, backlog=4096)
    print(f"fast upstream on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--thread-burn-ms", type=float, default=0.0, help="CPU per completion, in a thread"
    )
    args = parser.parse_args()
    serving = serve(args.host, args.port, args.thread_burn_ms / 1000)
    try:
        import uvloop  # optional: a faster event loop, as vLLM itself uses
    except ImportError:
        asyncio.run(serving)
    else:
        uvloop.run(serving)


if __name__ == "__main__":
    main()
