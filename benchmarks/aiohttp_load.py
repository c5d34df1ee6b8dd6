"""Load generator for the rows h2load cannot measure: streams (time to first chunk, chunk
rate, the gap between chunks) and clients whose requests are spread in time.

    python benchmarks/aiohttp_load.py SPEC_JSON

prints "ready" once imported, reads the start time (time.monotonic()) from a line of
stdin, runs, and prints one LoadResult as JSON. bench_gateway.py starts one or more of
these processes per row, each with a share of the clients, and starts them all at once
when every one is ready (importing aiohttp can take a second on a busy machine). A
process runs aiohttp's client (its C HTTP parser decodes the chunked SSE
bodies) on uvloop, one keep-alive connection per client, closed loop, until the end of
the timed window. Timing is in time.monotonic(), which is system-wide on Linux, so every
process and the orchestrator agree on when the warm-up ends and the window starts.
Connections are opened during the warm-up. A request counts toward the rate and latency
when it completes inside the window, a stream's first chunk toward time to first chunk
when it arrives inside it (so a slow path's long waits are not left out because they
began before the window), and a chunk toward the rate and the gaps when it (and, for a
gap, the chunk before it) arrived inside it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp

DONE = b"data: [DONE]"


@dataclass(frozen=True)
class LoadSpec:
    url: str  # base URL, without /v1
    model: str
    key: str
    clients: int  # connections (and streams or requests in flight) of this process
    start: float  # time.monotonic() when the first client starts (0: read from stdin)
    warmup: float  # seconds of load before the window
    window: float  # seconds measured
    tail: float = 0.3  # seconds of load kept up after the window, so it ends under load
    stream: bool = False
    tokens: int = 16
    expect_events: int = 0  # exact SSE data events per stream (0: do not check)
    expect_bytes: int = 0  # a non-streamed body at least this long (0: do not check)
    stagger: float = 0.0  # clients start evenly spread over this many seconds
    first_index: int = 0  # this process's first client among all processes' clients
    all_clients: int = 0  # clients over all processes (for the stagger), 0: just these
    gaps: bool = False  # record the time between consecutive chunks of each stream
    usage: bool = True  # streams ask for the usage event (stream_options.include_usage)


@dataclass
class LoadResult:
    sent: int = 0  # requests sent inside the window
    completed: int = 0  # requests completed inside the window
    latencies: list[float] = field(default_factory=list)  # seconds, of requests done inside
    first_chunk: list[float] = field(default_factory=list)  # seconds, first chunks inside
    events: int = 0  # SSE data events ([DONE] excluded) that arrived inside the window
    gaps: list[float] = field(default_factory=list)  # seconds between chunks, inside
    errors: int = 0
    error_sample: str = ""
    unanswered: int = 0  # streams sent inside the window without a chunk when load stopped
    peak_in_flight: int = 0
    in_flight: int = 0


class Window:
    def __init__(self, spec: LoadSpec) -> None:
        self.opens = spec.start + spec.warmup
        self.closes = self.opens + spec.window
        self.stop = self.closes + spec.tail

    def inside(self, moment: float) -> bool:
        return self.opens <= moment <= self.closes


def request_body(spec: LoadSpec) -> bytes:
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": spec.tokens,
    }
    if spec.stream:
        body["stream"] = True
    if spec.stream and spec.usage:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def note_error(result: LoadResult, problem: str) -> None:
    result.errors += 1
    result.error_sample = result.error_sample or problem


async def one_request(
    session: aiohttp.ClientSession, spec: LoadSpec, window: Window, result: LoadResult
) -> None:
    headers = {"content-type": "application/json"}
    if spec.key:
        headers["authorization"] = f"Bearer {spec.key}"
    sent = time.monotonic()
    answered: list[float] = []  # read_stream notes the first chunk's arrival here
    if window.inside(sent):
        result.sent += 1
    result.in_flight += 1
    result.peak_in_flight = max(result.peak_in_flight, result.in_flight)
    try:
        async with session.post(
            f"{spec.url}/v1/chat/completions", data=request_body(spec), headers=headers
        ) as response:
            if response.status != 200:
                body = await response.read()
                note_error(result, f"HTTP {response.status}: {body[:200]!r}")
                return
            if spec.stream:
                await read_stream(response, spec, window, result, sent, answered)
            else:
                body = await response.read()
                if b'"choices"' not in body[:4096] + body[-4096:]:
                    note_error(result, f"not a completion: {body[:200]!r}")
                    return
                if len(body) < spec.expect_bytes:
                    note_error(result, f"{len(body)} bytes, expected {spec.expect_bytes}+")
                    return
    except asyncio.CancelledError:  # the load stopped: was this stream still waiting?
        if spec.stream and window.inside(sent) and not answered:
            result.unanswered += 1
        raise
    finally:
        result.in_flight -= 1
    done = time.monotonic()
    if window.inside(done):
        result.completed += 1
        result.latencies.append(done - sent)


async def read_stream(
    response: aiohttp.ClientResponse,
    spec: LoadSpec,
    window: Window,
    result: LoadResult,
    sent: float,
    answered: list[float],
) -> None:
    """Counts events as their terminating blank line arrives ("\\n\\n", which may be split
    across two reads, hence the one byte carried over), and the time since the previous
    read that completed an event: several events completed by one read get gaps of 0."""
    events = 0
    carry = b""
    tail = b""
    previous: float | None = None
    async for data in response.content.iter_any():
        now = time.monotonic()
        complete = (carry + data).count(b"\n\n")
        carry, tail = data[-1:], (tail + data)[-64:]
        if not complete:
            continue
        if events == 0:
            answered.append(now)
            if window.inside(now):
                result.first_chunk.append(now - sent)
        events += complete
        if window.inside(now):
            result.events += complete
            if spec.gaps and previous is not None and window.inside(previous):
                result.gaps.append(now - previous)
                result.gaps.extend([0.0] * (complete - 1))
        previous = now
    finished = tail.rstrip().endswith(DONE)
    if finished and previous is not None and window.inside(previous):
        result.events -= 1  # the [DONE] line (in the last read) is not a chunk of the answer
    if not finished:
        note_error(result, f"stream without [DONE]: {tail!r}")
    elif spec.expect_events and events - 1 != spec.expect_events:
        note_error(result, f"{events - 1} events instead of {spec.expect_events}")


async def client(
    session: aiohttp.ClientSession, spec: LoadSpec, index: int, result: LoadResult
) -> None:
    window = Window(spec)
    everyone = spec.all_clients or spec.clients
    # Started together, clients that wait equally long would arrive in bursts forever.
    await asyncio.sleep(max(0.0, spec.start + spec.stagger * index / everyone - time.monotonic()))
    while time.monotonic() < window.stop:
        try:
            async with asyncio.timeout(window.stop - time.monotonic()):
                await one_request(session, spec, window, result)
        except TimeoutError:
            return  # the load is over: an unfinished request is not counted
        except (aiohttp.ClientError, OSError) as exc:
            note_error(result, repr(exc))
            await asyncio.sleep(0.01)  # a refused connection must not spin


async def run(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=spec.clients, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=None)  # run() ends every request at the window's end
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clients = [client(session, spec, spec.first_index + i, result) for i in range(spec.clients)]
        await asyncio.gather(*clients)
    return result


def main() -> None:
    import uvloop

    spec = LoadSpec(**json.loads(sys.argv[1]))
    if not spec.start:
        print("ready", flush=True)
        spec = replace(spec, start=float(sys.stdin.readline()))
    result = uvloop.run(run(spec))
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
