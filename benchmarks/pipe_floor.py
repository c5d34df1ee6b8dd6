"""The floor under any Python gateway's paced-stream cost on this machine: CPU per chunk of
a bare uvloop TCP pipe, no HTTP, no ASGI, no parsing. One process (the "pipe") accepts N
connections and, for each, opens one to a sink and writes every byte it reads from one
to the other (asyncio Protocols, `transport.write` in `data_received`). A source process
writes a chunk of --size bytes on every connection every --pace ms (what a streaming
model does), the sink counts what arrives. A relaying gateway does at least this per
chunk: one read and one write syscall and two event-loop wake-ups, so its CPU per paced
chunk cannot go below the pipe's.

    .venv/bin/python benchmarks/pipe_floor.py [--streams 256,1024] [--window 3]

Pinned with taskset when there are 2+ CPUs: source and sink on CPU 0, the pipe on CPU 1
(as bench_gateway.py places the load, the stand-in and the gateway). Prints a markdown
table; asserts nothing; everything runs on 127.0.0.1 and stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import cpu_seconds  # noqa: E402


class Sink(asyncio.Protocol):
    received = 0

    def data_received(self, data: bytes) -> None:
        Sink.received += len(data)


class Pipe(asyncio.Protocol):
    """One client connection, piped to one sink connection, byte for byte."""

    def __init__(self, sink: tuple[str, int]) -> None:
        self.sink_address = sink
        self.peer: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.pause_reading()  # until the sink side is open
        asyncio.get_running_loop().create_task(self.open_sink())

    async def open_sink(self) -> None:
        loop = asyncio.get_running_loop()
        self.peer, _ = await loop.create_connection(asyncio.Protocol, *self.sink_address)
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)


async def serve(role: str, port: int, sink_port: int) -> None:
    loop = asyncio.get_running_loop()
    factory = Sink if role == "sink" else (lambda: Pipe(("127.0.0.1", sink_port)))
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        while True:
            await asyncio.sleep(0.01)
            if role == "sink":  # the parent reads the count from here, 10 ms old at most
                partial = Path(f"/tmp/pipe-floor-{os.getpid()}.partial")
                partial.write_text(str(Sink.received))
                partial.replace(partial.with_suffix(""))  # readers never see half a file


async def source(port: int, streams: int, size: int, pace: float, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    chunk = b"x" * size
    transports = []
    for _ in range(streams):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transports.append(transport)
    await asyncio.sleep(0.5)  # the pipe opens its sink connections

    async def stream(transport: asyncio.Transport, offset: float) -> None:
        await asyncio.sleep(offset)
        next_at = loop.time()
        while loop.time() < end:
            transport.write(chunk)
            next_at += pace
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    end = loop.time() + seconds
    await asyncio.gather(*(stream(t, i * pace / streams) for i, t in enumerate(transports)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cpu: int | None, *args: str) -> subprocess.Popen:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    argv = [*pin, sys.executable, __file__, "--child", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def received(sink: subprocess.Popen) -> int:
    path = Path(f"/tmp/pipe-floor-{sink.pid}")
    return int(path.read_text()) if path.exists() else 0


def row(streams: int, args: argparse.Namespace) -> str:
    pinned = (os.cpu_count() or 1) >= 2
    sink_port, pipe_port = free_port(), free_port()
    sink = start(0 if pinned else None, "sink", str(sink_port), "0")
    pipe = start(1 if pinned else None, "pipe", str(pipe_port), str(sink_port))
    seconds = args.warmup + args.window + 0.5
    src_argv = [str(pipe_port), str(streams), str(args.size), str(args.pace), str(seconds)]
    src = start(0 if pinned else None, "source", *src_argv)
    try:
        time.sleep(0.5 + args.warmup)
        cpu0, bytes0, t0 = cpu_seconds(pipe.pid), received(sink), time.monotonic()
        time.sleep(args.window)
        cpu1, bytes1, t1 = cpu_seconds(pipe.pid), received(sink), time.monotonic()
        src.wait(seconds + 30)
    finally:
        for proc in (src, pipe, sink):
            proc.kill()
            proc.wait(10)
        Path(f"/tmp/pipe-floor-{sink.pid}").unlink(missing_ok=True)
    chunks = (bytes1 - bytes0) / args.size
    offered = streams / (args.pace / 1000)
    busy = (cpu1 - cpu0) / (t1 - t0) * 100
    per_chunk = (cpu1 - cpu0) / chunks * 1e6 if chunks else float("nan")
    return (
        f"| {streams} | {chunks / (t1 - t0):.0f} of {offered:.0f} | {per_chunk:.1f} | {busy:.0f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="256,1024", help="paced connections per row")
    parser.add_argument("--pace", type=float, default=20.0, help="ms between chunks")
    parser.add_argument("--size", type=int, default=300, help="bytes per chunk (an SSE event)")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1024 streams: 2048 sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if args.child:
        role, *rest = args.child
        if role == "source":
            port, streams, size, pace, seconds = rest
            print("ready", flush=True)
            coro = source(int(port), int(streams), int(size), float(pace) / 1000, float(seconds))
        else:
            coro = serve(role, int(rest[0]), int(rest[1]))
        uvloop.run(coro)
        return
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"uvloop {uvloop.__version__}, {os.cpu_count()} CPUs, load average {load}; "
          f"{args.size}-byte chunks {args.pace:g} ms apart, "
          f"{args.window:g} s window\n")  # fmt: skip
    print("| streams | chunks/s (of offered) | pipe CPU µs/chunk | pipe CPU |")
    print("|---|---|---|---|")
    for streams in (int(s) for s in args.streams.split(",")):
        print(row(streams, args), flush=True)


if __name__ == "__main__":
    main()
