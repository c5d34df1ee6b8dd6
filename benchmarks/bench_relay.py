"""CPU per chunk of the gateway's stream relay alone, in one process: no network, no
server, no client. `StreamRelay` (mvgen/runtime/streaming.py) relays streams of
vLLM-shaped chunks from an upstream stand-in that yields them at once, to an ASGI `send`
that does nothing, so what is timed is the relay's own loop: what it does per chunk,
plus its per-stream work spread over the stream's chunks.

    .venv/bin/python benchmarks/bench_relay.py [--streams 2000] [--tokens 100,1000] [--repeat 3]

Prints a markdown table: process CPU time per relayed chunk, best of --repeat, for a
client that asked for the usage event and one that did not (the gateway then drops it).
To compare with another version of the code, run this script alternately as it is and
with `PYTHONPATH=/path/to/other/checkout` (then run from outside this checkout, so the
other's `mvgen` is imported; the first line printed says which code was measured).
The end-to-end figure, with the HTTP stack around the relay, is bench_gateway.py's paced
rows (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if "PYTHONPATH" not in os.environ:  # run from a checkout: measure that checkout's code
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mvgen.runtime.backends import UpstreamStream  # noqa: E402
from mvgen.runtime.streaming import StreamPolicy, StreamRelay  # noqa: E402

HEAD = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000}


def event(payload: dict[str, Any]) -> bytes:
    # Compact, in vLLM's field order (pydantic's model_dump_json).
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def stream_events(tokens: int) -> list[bytes]:
    """One chunk per token, the usage event, then [DONE], as vLLM 0.12 sends a chat stream."""
    events = []
    for i in range(tokens):
        delta = {"content": f"tok{i} "} if i else {"role": "assistant", "content": "tok0 "}
        finish = "length" if i == tokens - 1 else None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        events.append(event({**HEAD, "model": "bench", "choices": [choice]}))
    usage = {"prompt_tokens": 8, "total_tokens": 8 + tokens, "completion_tokens": tokens}
    events.append(event({**HEAD, "model": "bench", "choices": [], "usage": usage}))
    return [*events, b"data: [DONE]\n\n"]


async def relay_streams(streams: int, events: list[bytes], strip: bool) -> float:
    """Process CPU seconds to relay `streams` streams of `events`."""
    policy = StreamPolicy(
        commit_after=10, keepalive_interval=10, start_timeout=600, error_body_limit=65536
    )
    # Older code has no strip_usage: it relays every event and counts nothing.
    has_usage = "strip_usage" in inspect.signature(StreamRelay).parameters
    options = {"strip_usage": strip} if has_usage else {}
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in events:
            yield chunk

    async def open_stream() -> UpstreamStream:
        return UpstreamStream(200, {"content-type": "text/event-stream"}, chunks(), noop)

    async def noop() -> None:
        pass

    started = time.process_time()
    for _ in range(streams):
        relay = StreamRelay(open_stream, policy, "bench", **options)
        await relay({"type": "http", "state": {}}, receive, send)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000, help="streams per measurement")
    parser.add_argument("--tokens", default="100,1000", help="tokens per stream, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="measurements; the best is shown")
    args = parser.parse_args()
    import mvgen.runtime.streaming as streaming

    print(f"code: {Path(streaming.__file__).resolve().parent.parent.parent}")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, streams {args.streams}\n")
    best_of = f"best of {args.repeat}"
    print(f"| tokens per stream | client asked for usage | CPU ns per chunk ({best_of}) |")
    print("|---|---|---|")
    for tokens in (int(t) for t in args.tokens.split(",")):
        events = stream_events(tokens)
        streams = max(1, args.streams * 100 // tokens)  # about as many chunks per row
        for strip in (False, True):
            best = min(
                asyncio.run(relay_streams(streams, events, strip)) for _ in range(args.repeat)
            )
            per_chunk = best / (streams * len(events)) * 1e9
            print(f"| {tokens} | {'no' if strip else 'yes'} | {per_chunk:.0f} |")


if __name__ == "__main__":
    main()
