"""What a gpu-mode stream costs by going through Modal: gateway -> spawned pool call ->
vLLM, the chunks coming back through the request's modal.Queue ("Modal queue"), against
the same gateway forwarding to vLLM over HTTP, and against the generator method mvgen used
before (`remote_gen`, which Modal cannot cancel). All on loopback, with stand-ins:

    uv run python benchmarks/bench_modal_stream.py [--streams 1,8,32] [--chunks 100] [--quick]

Processes, each started here and stopped at the end: the vLLM stand-in
(tests/standin_vllm.py, paced chunks, records when it sent each), the Modal stand-in
(tests/modal_standin.py, a recording stand-in for Modal's server side, not Modal, whose
"container" runs the pool's real PoolServer and send_stream), and the gateway (real
modal client inside for the Modal rows). The client here records when each SSE event
arrives. A chunk's latency is its arrival minus the moment the vLLM stand-in sent it,
so what is shown is what the relay adds. Modal's own network and servers are not in
it: on Modal each queue put and get is also a round trip to Modal's servers.

Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

KEY = "bench-modal-key-0123456789"
SERVED = "bench/model"
MODELS = {"bench": {"served_name": SERVED, "aliases": ["bench"]}}
# Row name, gateway backend: HTTP to vLLM, Modal with the queue, Modal with a generator.
PATHS = (("HTTP", "http"), ("Modal queue", "queue"), ("Modal generator (before)", "generator"))


# --- child processes ---------------------------------------------------------------------


def run_modal_standin(port_file: Path, stats_file: Path, vllm_port: int) -> None:
    """The Modal stand-in, whose "container" runs what the generated pool class runs."""
    from modal_standin import ModalStandin, standin_client

    from mvgen.runtime.modal_backend import send_stream
    from mvgen.runtime.vllm_process import PoolServer

    server = ModalStandin(
        None, methods=("request", "stream", "stream_gen"), generators=("stream_gen",)
    )
    with server, standin_client(server) as container_client:
        pool = PoolServer(vllm_port)

        async def run_input(params: dict, method: str, args: tuple, kwargs: dict) -> object:
            if method == "request":
                return await pool.request(*args)
            if method == "stream_gen":
                return pool.stream(*args)  # the stand-in iterates it
            path, body, queue_id = args
            return await send_stream(pool.stream(path, body), queue_id, client=container_client)

        server.run_input = run_input
        port_file.write_text(str(server.port))
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop:
            partial = stats_file.with_suffix(".partial")
            partial.write_text(json.dumps(Counter(server.names())))
            partial.replace(stats_file)  # readers never see half a file
            time.sleep(0.2)


def generator_backend() -> type:
    """mvgen's gpu-mode streams before the queue: `stream.remote_gen.aio`, which Modal
    cannot cancel. For comparison only."""
    from mvgen.runtime.backends import UpstreamStream, relay_headers
    from mvgen.runtime.errors import ApiError
    from mvgen.runtime.modal_backend import ModalBackend

    class GeneratorBackend(ModalBackend):
        async def stream(self, model, path, body):  # type: ignore[no-untyped-def]
            items = self._pool(model).stream_gen.remote_gen.aio(path, body)
            first = await anext(items)

            async def chunks():  # type: ignore[no-untyped-def]
                async for item in items:
                    if isinstance(item, dict):
                        raise ApiError.from_wire(item["error"])
                    yield bytes(item)

            headers = relay_headers(first.get("headers") or {})
            return UpstreamStream(first["status"], headers, chunks(), items.aclose)

    return GeneratorBackend


def run_gateway(port: int, kind: str, url: str) -> None:
    import uvicorn

    from mvgen.runtime.backends import HttpBackend
    from mvgen.runtime.gateway import create_app
    from mvgen.runtime.models import models_from_literal

    if kind != "http":
        import modal
        from modal_standin import connect

        from mvgen.runtime.modal_backend import ModalBackend

        client = connect(url)
        pools = modal.Cls.from_name("standin-app", "Vllm", client=client)
        backend_class = generator_backend() if kind == "generator" else ModalBackend
        backend = backend_class(pools, client=client)
    else:
        backend = HttpBackend({"bench": url}, connect_wait=5)
    os.environ["API_KEY"] = KEY
    logging.getLogger("mvgen.gateway").setLevel(logging.WARNING)  # no line per stream
    app = create_app(models_from_literal(MODELS), backend)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- orchestration ---------------------------------------------------------------------


def free_port() -> int:
    from standin_vllm import free_port as pick

    return pick()


@contextlib.contextmanager
def process(*args: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, *args], start_new_session=True, cwd=ROOT)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_stream(client: httpx.AsyncClient, tag: str) -> tuple[float, list[float]]:
    # The client asks for vLLM's usage event, so every event the stand-in sends reaches it
    # (otherwise the gateway asks for it and drops it: one event fewer than sent).
    body = {"model": "bench", "prompt": "x", "stream": True, "user": tag,
            "stream_options": {"include_usage": True}}  # fmt: skip
    started = time.monotonic()
    arrivals: list[float] = []
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    return started, arrivals


async def load(url: str, streams: int, rounds: int, prefix: str) -> dict[str, tuple]:
    limits = httpx.Limits(max_connections=streams)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:
        results = {}
        for r in range(rounds):
            tags = [f"{prefix}-{r}-{i}" for i in range(streams)]
            done = await asyncio.gather(*(one_stream(c, tag) for tag in tags))
            results.update(zip(tags, done, strict=True))
        return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(gateway_url: str, gateway_pid: int, vllm_url: str, streams: int, rounds: int,
            prefix: str) -> dict[str, float]:  # fmt: skip
    cpu_before = cpu_seconds(gateway_pid)
    results = asyncio.run(load(gateway_url, streams, rounds, prefix))
    cpu = cpu_seconds(gateway_pid) - cpu_before
    sent = {
        r["body"]["user"]: r["chunk_times"]
        for r in httpx.get(vllm_url + "/_standin/requests").json()
        if isinstance(r["body"], dict) and str(r["body"].get("user", "")).startswith(prefix)
    }
    lags, first = [], []
    for tag, (started, arrivals) in results.items():
        assert len(arrivals) == len(sent[tag]), (tag, len(arrivals), len(sent[tag]))
        lags += [(a - s) * 1000 for a, s in zip(arrivals, sent[tag], strict=True)]
        first.append((arrivals[0] - started) * 1000)
    return {
        "chunks": len(lags),
        "p50": statistics.median(lags),
        "p99": percentile(lags, 0.99),
        "first": statistics.median(first),
        "cpu_us": cpu / len(lags) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,8,32", help="concurrent streams per row")
    parser.add_argument("--chunks", type=int, default=100, help="tokens per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between tokens")
    parser.add_argument("--rounds", type=int, default=2, help="streams per concurrent slot")
    parser.add_argument("--quick", action="store_true", help="1 and 8 streams, 1 round, 50 chunks")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.streams, args.rounds, args.chunks = "1,8", 1, 50
    if args.child:
        return child(args.child)

    tmp = Path(tempfile.mkdtemp(prefix="bench-modal-"))
    vllm_port = free_port()
    vllm_url = f"http://127.0.0.1:{vllm_port}"
    me = str(Path(__file__).resolve())
    standin = [str(ROOT / "tests/standin_vllm.py"), "--port", str(vllm_port),
               "--served-name", SERVED, "--chunks", str(args.chunks),
               "--chunk-delay", str(args.chunk_delay)]  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(*standin))
        modal_standin = stack.enter_context(
            process(me, "--child", "modal", str(tmp / "port"), str(tmp / "stats"), str(vllm_port))
        )
        deadline = time.monotonic() + 60
        while not (tmp / "port").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        modal_url = f"http://127.0.0.1:{(tmp / 'port').read_text()}"
        paths = []
        for name, kind in PATHS:
            port = free_port()
            target = vllm_url if kind == "http" else modal_url
            proc = stack.enter_context(process(me, "--child", kind, str(port), target))
            paths.append((name, port, proc))
        for _, port, _ in paths:
            wait_healthy(f"http://127.0.0.1:{port}")
        wait_healthy(vllm_url)
        print(f"{args.chunks} chunks {args.chunk_delay * 1000:g} ms apart per stream, "
              f"{args.rounds} rounds; latency = client arrival - vLLM stand-in send\n")  # fmt: skip
        print("| streams | path | chunks | chunk latency p50 ms | p99 ms | first chunk p50 ms "
              "| gateway CPU µs/chunk | Modal stand-in CPU % | queue puts/chunk "
              "| queue gets/chunk |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        for streams in [int(s) for s in args.streams.split(",")]:
            for name, port, proc in paths:
                before = json.loads((tmp / "stats").read_text())
                standin_cpu, started = cpu_seconds(modal_standin.pid), time.monotonic()
                row = measure(f"http://127.0.0.1:{port}", proc.pid, vllm_url, streams,
                              args.rounds, f"{name.replace(' ', '_')}-{streams}")  # fmt: skip
                standin_cpu = cpu_seconds(modal_standin.pid) - standin_cpu
                busy = standin_cpu / (time.monotonic() - started) * 100
                time.sleep(0.5)  # the stats file is rewritten every 0.2 s
                after = json.loads((tmp / "stats").read_text())
                puts = (after.get("QueuePut", 0) - before.get("QueuePut", 0)) / row["chunks"]
                gets = (after.get("QueueGet", 0) - before.get("QueueGet", 0)) / row["chunks"]
                extra = f"{puts:.2f} | {gets:.2f}" if name == "Modal queue" else "- | -"
                print(f"| {streams} | {name} | {row['chunks']} | {row['p50']:.1f} | "
                      f"{row['p99']:.1f} | {row['first']:.1f} | {row['cpu_us']:.0f} | "
                      f"{busy:.0f} | {extra} |",
                      flush=True)  # fmt: skip


def child(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "modal":
        run_modal_standin(Path(rest[0]), Path(rest[1]), int(rest[2]))
    else:
        run_gateway(int(rest[0]), kind, rest[1])


if __name__ == "__main__":
    main()
