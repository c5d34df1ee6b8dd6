"""Gateway overhead: one workload sent straight to a fast stand-in, through `mvgen gateway`,
and through the LiteLLM proxy with the generated config, all on loopback.

    uv run python benchmarks/bench_gateway.py [--quick] [--no-litellm] [--no-pin]

Prints markdown tables (docs/benchmarks.md explains every row); asserts nothing. Every
process is started here in its own session and stopped at the end, and the whole run is
bounded by --time-limit. With 2+ CPUs and taskset, CPU 0 runs "the world" (load
generator and stand-ins) and CPU 1 the proxy under test (gateway and/or LiteLLM), so a
proxy's cost shows as latency and throughput rather than as CPU stolen from the client.

The load generator is this script's `loadgen` subcommand, run as a separate process: a
minimal keep-alive HTTP/1.1 client on raw asyncio streams (uvloop), one connection per
concurrent worker, closed loop, a fixed number of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent  # the project venv: mvgen and litellm live here
GATEWAY_KEY = "bench-gateway-key-0123456789"  # what the gateway checks, LiteLLM sends
MASTER_KEY = "sk-bench-master-0123456789"
START_LIMIT = 120.0  # seconds for any process to become healthy (LiteLLM takes ~10)
# Model name suffixes the stand-in reads its timing from (fast_upstream.py): -d<ms> before
# the answer, -c<ms> between stream chunks. "" is the zero-delay model.
SUFFIXES = ("", "-d50", "-d250", "-c20")
HOLD_SUFFIX, HOLD_SECONDS = "-c20", 2.0  # memory test: 100 chunks 20 ms apart
STREAM_TOKENS = 1000

# One model per timing, on two GPUs: LiteLLM's l40s routes go straight to the stand-in,
# its h100 routes to the gateway (which forwards every model to the stand-in).
BENCH_CONFIG = "mode: gpu\nworkspace: bench\nendpoint_limit: 8\n" + (
    "gpus:\n  l40s: {type: L40S}\n  h100: {type: H100}\nmodels:\n"
    + "".join(f"  bench{s}: {{hf_id: org/bench{s}, max_model_len: 8192}}\n" for s in SUFFIXES)
)


# --- load generator (runs in its own process) ----------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    url: str  # base URL, without /v1
    model: str
    key: str
    concurrency: int
    requests: int
    stream: bool = False
    tokens: int = 16
    expect_events: int = 0  # exact SSE data events per stream (0: do not check)
    stagger: float = 0.0  # workers start evenly spread over this many seconds
    time_limit: float = 120.0


@dataclass
class LoadResult:
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds per completed request
    first_chunk: list[float] = field(default_factory=list)  # seconds to the first SSE event
    events: int = 0  # SSE data events received, [DONE] excluded
    errors: int = 0
    error_sample: str = ""
    in_flight: int = 0
    peak_open_streams: int = 0  # most requests in flight at once
    cpu: float = 0.0  # this process's CPU seconds
    timed_out: bool = False  # stopped by the time limit before every request was sent


def request_bytes(spec: LoadSpec) -> bytes:
    host = spec.url.removeprefix("http://")
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": spec.tokens,
    }
    if spec.stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    raw = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
        f"authorization: Bearer {spec.key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


async def read_response(
    reader: asyncio.StreamReader, sent: float
) -> tuple[int, bytes, float | None, bool]:
    """Status, body, seconds to the first SSE data event (if any), and keep-alive."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lowered = head.lower()
    first: float | None = None
    if b"transfer-encoding: chunked" in lowered:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
            data = (await reader.readexactly(size + 2))[:-2]
            if first is None and b"data:" in data:
                first = time.perf_counter() - sent
            parts.append(data)
        await reader.readuntil(b"\r\n")
        body = b"".join(parts)
    else:
        length = int(lowered.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        body = await reader.readexactly(length)
    return status, body, first, b"connection: close" not in lowered


async def worker(
    spec: LoadSpec, payload: bytes, todo: list[int], result: LoadResult, index: int
) -> None:
    host, port = spec.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    # Spread out, clients that wait equally long stay spread out; started together they
    # would arrive in bursts of `concurrency` requests forever (lockstep).
    await asyncio.sleep(spec.stagger * index / spec.concurrency)
    try:
        while todo:
            todo.pop()
            sent = time.perf_counter()
            writer.write(payload)
            result.in_flight += 1
            result.peak_open_streams = max(result.peak_open_streams, result.in_flight)
            status, body, first, keep_alive = await read_response(reader, sent)
            result.in_flight -= 1
            result.latencies.append(time.perf_counter() - sent)
            check_answer(spec, status, body, first, result)
            if not keep_alive:
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
    finally:
        writer.close()


def check_answer(
    spec: LoadSpec, status: int, body: bytes, first: float | None, result: LoadResult
) -> None:
    """Counts an error for a wrong answer; for streams, notes events and the first one."""
    problem = ""
    if status != 200:
        problem = f"HTTP {status}: {body[:200]!r}"
    elif spec.stream:
        events = body.count(b"data: ") - body.count(b"data: [DONE]")
        result.events += events
        if first is not None:
            result.first_chunk.append(first)
        if not body.rstrip().endswith(b"data: [DONE]"):
            problem = f"stream without [DONE]: {body[-200:]!r}"
        elif spec.expect_events and events != spec.expect_events:
            problem = f"{events} events instead of {spec.expect_events}"
    elif b'"choices"' not in body:
        problem = f"not a completion: {body[:200]!r}"
    if problem:
        result.errors += 1
        result.error_sample = result.error_sample or problem


async def run_load(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    payload = request_bytes(spec)
    todo = list(range(spec.requests))
    cpu_before = process_cpu()
    started = time.perf_counter()
    workers = [worker(spec, payload, todo, result, i) for i in range(spec.concurrency)]
    outcomes: list[Any] = []
    try:
        async with asyncio.timeout(spec.time_limit):
            outcomes = await asyncio.gather(*workers, return_exceptions=True)
    except TimeoutError:  # report what was done; the orchestrator stops there
        result.timed_out = True
    result.wall = time.perf_counter() - started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.errors += 1
            result.error_sample = result.error_sample or repr(outcome)
    result.cpu = process_cpu() - cpu_before
    return result


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loadgen_main(argv: Sequence[str]) -> None:
    spec = LoadSpec(**json.loads(argv[0]))
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run_load(spec))
    else:
        result = uvloop.run(run_load(spec))
    print(json.dumps(asdict(result)))


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinning(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str
    log: Path


@contextlib.contextmanager
def server(
    name: str, argv: list[str], port: int, health: str, log_dir: Path, **popen: Any
) -> Iterator[Server]:
    """Start argv in its own session, wait for GET health, always stop it (the group)."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
    running = Server(name, process, f"http://127.0.0.1:{port}", log)
    try:
        wait_healthy(running, health)
        yield running
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # its own session: only what it started
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def wait_healthy(running: Server, path: str) -> None:
    import httpx

    deadline = time.monotonic() + START_LIMIT
    with httpx.Client(trust_env=False, timeout=2) as http:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                tail = running.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{running.name} exited ({running.process.returncode}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(running.url + path).status_code == 200:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"{running.name} did not become healthy within {START_LIMIT} s")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads, in nanoseconds from schedstat (the clock
    ticks of /proc/PID/stat are too coarse for rows that last a fraction of a second)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def memory_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


# --- the run -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    key: str
    model: str  # a format string: "{}" takes the timing suffix, e.g. "bench{}-l40s"
    pids: tuple[int, ...]  # proxy processes whose CPU is charged to this target
    exact_events: bool  # relays upstream events one for one (LiteLLM re-frames them)


@dataclass(frozen=True)
class Workload:
    label: str
    concurrency: int
    requests: int
    stream: bool = False
    tokens: int = 16
    suffix: str = ""  # the stand-in's timing, see SUFFIXES

    @property
    def model_delay(self) -> float:
        return int(self.suffix.removeprefix("-d")) / 1000 if self.suffix.startswith("-d") else 0.0


@dataclass
class Row:
    workload: Workload
    target: str
    result: LoadResult
    proxy_cpu: float  # CPU seconds of the target's proxy processes during the row
    world_cpu: float  # CPU seconds of the stand-ins during the row


def workloads(quick: bool) -> list[Workload]:
    scale = 0.25 if quick else 1.0

    def n(count: int) -> int:
        return max(1, int(count * scale))

    rows = [Workload("chat", c, n(r)) for c, r in ((1, 400), (16, 2000), (64, 4000))]
    # 64 clients that each wait for a model answering in 50 or 250 ms, their starts spread
    # over that time: a steady offered load (about 1200 and 250 req/s, evenly spaced)
    # instead of as fast as the proxy can go.
    rows += [Workload("chat 50 ms", 64, n(2560), suffix="-d50")]
    rows += [Workload("chat 250 ms", 64, n(1024), suffix="-d250")]
    # Long streams, so the rate is the relay's rather than that of setting streams up
    # (the stand-in makes 1000 tokens in about 10 ms; TTFC shows the set-up).
    rows += [
        Workload("stream", c, n(r), stream=True, tokens=STREAM_TOKENS)
        for c, r in ((1, 16), (16, 48), (64, 128))
    ]
    return rows


class Bench:
    def __init__(
        self,
        deadline: float,
        world_cpu: int | None,
        world_pids: tuple[int, ...],
        profile_dir: Path | None = None,
    ) -> None:
        self.deadline = deadline
        self.world_cpu = world_cpu
        self.world_pids = world_pids
        self.profile_dir = profile_dir

    def load(self, spec: LoadSpec) -> LoadResult:
        remaining = self.deadline - time.monotonic()
        if remaining < 5:
            raise TimeoutError("the global time limit is used up")
        spec = LoadSpec(**{**asdict(spec), "time_limit": remaining - 2})
        argv = [sys.executable, __file__, "loadgen", json.dumps(asdict(spec))]
        try:
            done = subprocess.run(
                pinning(self.world_cpu) + argv, capture_output=True, text=True, timeout=remaining
            )
        except subprocess.TimeoutExpired:  # run() has killed it
            raise TimeoutError("the load generator overran the global time limit") from None
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
        return LoadResult(**json.loads(done.stdout))

    def row(self, workload: Workload, target: Target) -> Row:
        spec = LoadSpec(
            url=target.url,
            model=target.model.format(workload.suffix),
            key=target.key,
            concurrency=workload.concurrency,
            requests=workload.requests,
            stream=workload.stream,
            tokens=workload.tokens,
            expect_events=workload.tokens + 1 if workload.stream and target.exact_events else 0,
            stagger=workload.model_delay,
        )
        proxy_before = sum(cpu_seconds(pid) for pid in target.pids)
        world_before = sum(cpu_seconds(pid) for pid in self.world_pids)
        with self.profiled(workload, target):
            result = self.load(spec)
        if result.timed_out:
            raise TimeoutError(f"the time limit ran out during {workload.label} {target.name}")
        proxy = sum(cpu_seconds(pid) for pid in target.pids) - proxy_before
        world = sum(cpu_seconds(pid) for pid in self.world_pids) - world_before
        return Row(workload, target.name, result, proxy, world)

    @contextlib.contextmanager
    def profiled(self, workload: Workload, target: Target) -> Iterator[None]:
        """py-spy samples the gateway during its c=64 rows (collapsed stacks, one file per
        row); sampling slows it a little, so profiled runs are not the ones to quote."""
        if self.profile_dir is None or target.name != "gateway" or workload.concurrency != 64:
            yield
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        name = f"gateway-{workload.label.replace(' ', '-')}-c{workload.concurrency}.txt"
        argv = [str(BIN / "py-spy"), "record", "--pid", str(target.pids[0]), "--format", "raw"]
        argv += ["--rate", "250", "--output", str(self.profile_dir / name)]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach before the load starts
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(10)

    def warm_up(self, target: Target) -> None:
        for stream in (False, True):
            spec = LoadSpec(target.url, target.model.format(""), target.key, 16, 200, stream=stream)
            self.load(spec)


# --- statistics and tables -----------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def chat_table(rows: list[Row]) -> str:
    out = []
    for row in rows:
        r, base = row.result, baseline(rows, row)
        p50, p99 = percentile(r.latencies, 50), percentile(r.latencies, 99)
        b50, b99 = percentile(base.latencies, 50), percentile(base.latencies, 99)
        rps, brps = len(r.latencies) / r.wall, len(base.latencies) / base.wall
        per_request = f"{row.proxy_cpu / len(r.latencies) * 1e6:.0f}" if row.proxy_cpu else "-"
        out.append(
            [
                row.workload.label,
                str(row.workload.concurrency),
                row.target,
                f"{rps:.0f}",
                ms(p50),
                ms(p99),
                ms(p50 - b50),
                ms(p99 - b99),
                ratio(p50, b50),
                ratio(rps, brps),
                per_request,
                str(r.errors),
            ]
        )
    headers = ["workload", "conc", "path", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms"]
    headers += ["p50 vs direct", "req/s vs direct", "proxy CPU µs/req", "errors"]
    return table(headers, out)


def chunk_rate(result: LoadResult) -> float:
    """All streams together: events received per second of the row's wall time."""
    return result.events / result.wall


def stream_table(rows: list[Row]) -> str:
    out = []
    for row in rows:
        r, base = row.result, baseline(rows, row)
        rate, brate = chunk_rate(r), chunk_rate(base)
        t50, t99 = percentile(r.first_chunk, 50), percentile(r.first_chunk, 99)
        per_chunk = f"{row.proxy_cpu / r.events * 1e6:.1f}" if row.proxy_cpu and r.events else "-"
        out.append(
            [
                str(row.workload.concurrency),
                row.target,
                str(len(r.latencies)),
                f"{r.events / max(1, len(r.latencies)):.0f}",
                ms(t50),
                ms(t99),
                ms(t50 - percentile(base.first_chunk, 50)),
                f"{rate:.0f}",
                ratio(rate, brate),
                per_chunk,
                str(r.errors),
            ]
        )
    headers = ["conc", "path", "streams", "events/stream", "TTFC p50 ms", "TTFC p99 ms"]
    headers += ["+TTFC p50 ms", "chunks/s", "chunks/s vs direct", "proxy CPU µs/chunk"]
    return table(headers + ["errors"], out)


def baseline(rows: list[Row], row: Row) -> LoadResult:
    for other in rows:
        if other.workload == row.workload and other.target == "direct":
            return other.result
    raise KeyError(row.workload)


def comparison_table(rows: list[Row]) -> str:
    """gateway vs LiteLLM on every row: > 1 means the gateway is ahead."""
    out = []
    by_key = {(r.workload, r.target): r.result for r in rows}
    for workload in dict.fromkeys(r.workload for r in rows):
        gw, ll = by_key.get((workload, "gateway")), by_key.get((workload, "litellm"))
        if gw is None or ll is None:
            continue
        if workload.stream:
            latency = percentile(ll.first_chunk, 50) / percentile(gw.first_chunk, 50)
            tail = percentile(ll.first_chunk, 99) / percentile(gw.first_chunk, 99)
            rate = chunk_rate(gw) / chunk_rate(ll)
            measure = "TTFC; chunks/s"
        else:
            latency = percentile(ll.latencies, 50) / percentile(gw.latencies, 50)
            tail = percentile(ll.latencies, 99) / percentile(gw.latencies, 99)
            rate = (len(gw.latencies) / gw.wall) / (len(ll.latencies) / ll.wall)
            measure = "latency; req/s"
        ahead = "yes" if min(latency, tail, rate) > 1 else "NO"
        label = f"{workload.label} c={workload.concurrency}"
        out.append([label, measure, f"{latency:.1f}x", f"{tail:.1f}x", f"{rate:.1f}x", ahead])
    headers = ["row", "compares", "LiteLLM/gateway p50", "LiteLLM/gateway p99"]
    return table(headers + ["gateway/LiteLLM rate", "gateway ahead"], out)


def target_table(rows: list[Row]) -> str:
    by_key = {(r.workload, r.target): r.result for r in rows}
    out = []
    for workload in dict.fromkeys(r.workload for r in rows):
        gw, direct = by_key.get((workload, "gateway")), by_key.get((workload, "direct"))
        if gw is None or direct is None:
            continue
        label = f"{workload.label} c={workload.concurrency}"
        if workload.stream:
            rate = chunk_rate(gw) / chunk_rate(direct)
            out.append([label, "chunks/s >= 0.9x direct", f"{rate:.2f}x", met(rate >= 0.9)])
            continue
        if workload.concurrency != 64:
            continue
        add50 = percentile(gw.latencies, 50) - percentile(direct.latencies, 50)
        add99 = percentile(gw.latencies, 99) - percentile(direct.latencies, 99)
        out.append([label, "+p50 <= 1 ms", f"{ms(add50)} ms", met(add50 <= 0.001)])
        out.append([label, "+p99 <= 5 ms", f"{ms(add99)} ms", met(add99 <= 0.005)])
    return table(["row", "target", "measured", "met"], out)


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def cpu_table(rows: list[Row]) -> str:
    """Who used the CPU: if the load generator or the stand-ins are near 100 % of their
    core in the proxied rows, they (not the proxy) were the bottleneck."""
    out = []
    for row in rows:
        r = row.result
        out.append(
            [
                f"{row.workload.label} c={row.workload.concurrency}",
                row.target,
                f"{r.wall:.2f}",
                f"{r.cpu / r.wall:.0%}",
                f"{row.world_cpu / r.wall:.0%}",
                f"{row.proxy_cpu / r.wall:.0%}" if row.proxy_cpu else "-",
            ]
        )
    headers = ["row", "path", "wall s", "load generator CPU", "stand-ins CPU", "proxy CPU"]
    return table(headers, out)


# --- orchestration -------------------------------------------------------------------


def render_litellm(config: Path, out: Path, bases: dict[str, str]) -> Path:
    args = [arg for gpu, url in bases.items() for arg in ("--api-base", f"{gpu}={url}")]
    argv = [str(BIN / "mvgen"), "render", "--config", str(config), "--output-dir", str(out)]
    subprocess.run(argv + args, check=True, capture_output=True, cwd=ROOT)
    return out / "litellm" / "config.yaml"


def layout(pin: bool) -> tuple[int | None, int | None]:
    """(world CPU, proxy CPU): split across two CPUs when taskset and 2+ CPUs exist."""
    if pin and shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        return cpus[0], cpus[1]
    return None, None


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


def gateway_argv(config: Path, upstream: str, port: int, cpu: int | None) -> list[str]:
    """`mvgen gateway`, as a user runs it, forwarding every bench model to `upstream`."""
    argv = pinning(cpu) + [str(BIN / "mvgen"), "gateway", "--config", str(config)]
    for suffix in SUFFIXES:
        argv += ["--upstream", f"bench{suffix}={upstream}"]
    return argv + ["--port", str(port)]


def start_gateway(
    stack: contextlib.ExitStack, name: str, config: Path, upstream: str, cpu: int | None
) -> Server:
    port = free_port()
    env = {**os.environ, "API_KEY": GATEWAY_KEY}
    argv = gateway_argv(config, upstream, port, cpu)
    return stack.enter_context(
        server(name, argv, port, "/health", config.parent, env=env, cwd=ROOT)
    )


def start_litellm(
    stack: contextlib.ExitStack, config: Path, bases: dict[str, str], cpu: int | None
) -> Server:
    """The real proxy through `mvgen proxy`, with the config `mvgen render` generates."""
    tmp = config.parent
    litellm_config = render_litellm(config, tmp / "render", bases)
    env_file = tmp / ".env"
    env_file.write_text(f"VLLM_API_KEY={GATEWAY_KEY}\nLITELLM_MASTER_KEY={MASTER_KEY}\n")
    port = free_port()
    argv = pinning(cpu) + [str(BIN / "mvgen"), "proxy", "--litellm-config", str(litellm_config)]
    argv += ["--env-file", str(env_file), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_API_KEY", "LITELLM_MASTER_KEY")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return stack.enter_context(
        server("litellm", argv, port, "/health/liveliness", tmp, env=env, cwd=ROOT)
    )


def memory_test(
    streams: int, config: Path, upstream: str, cpu: int | None, deadline: float
) -> list[str]:
    """A fresh gateway: RSS when idle, then its peak (VmHWM) holding `streams` at once."""
    with contextlib.ExitStack() as stack:
        gateway = start_gateway(stack, "gateway-memory", config, upstream, cpu)
        pid = gateway.process.pid
        idle = memory_kib(pid, "VmRSS")
        model = f"bench{HOLD_SUFFIX}"
        spec = LoadSpec(gateway.url, model, GATEWAY_KEY, streams, streams, stream=True, tokens=100)
        result = Bench(deadline, None, ()).load(spec)
        peak = memory_kib(pid, "VmHWM")
    grown = peak - idle
    return [
        f"gateway idle RSS: {idle / 1024:.1f} MiB",
        f"gateway peak RSS (VmHWM) with {result.peak_open_streams} streams open at once "
        f"({streams} streams of 100 chunks over {HOLD_SECONDS:g} s): {peak / 1024:.1f} MiB "
        f"(+{grown / 1024:.1f} MiB, {grown / streams:.0f} KiB per stream); "
        f"errors: {result.errors}",
    ]


def run(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.time_limit
    world_cpu, proxy_cpu = layout(not args.no_pin)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gateway-")))
        config = tmp / "deployments.yaml"
        config.write_text(BENCH_CONFIG)
        port = free_port()
        argv = pinning(world_cpu) + [sys.executable, str(HERE / "fast_upstream.py")]
        standin = stack.enter_context(
            server("standin", argv + ["--port", str(port)], port, "/health", tmp)
        )
        gateway = start_gateway(stack, "gateway", config, standin.url, proxy_cpu)
        gw_pid = gateway.process.pid
        targets = [
            Target("direct", standin.url, "", "org/bench{}", (), True),
            Target("gateway", gateway.url, GATEWAY_KEY, "bench{}", (gw_pid,), True),
        ]
        if not args.no_litellm:
            bases = {"l40s": standin.url, "h100": gateway.url}
            litellm = start_litellm(stack, config, bases, proxy_cpu)
            ll_pid = litellm.process.pid
            targets += [
                Target("litellm", litellm.url, MASTER_KEY, "bench{}-l40s", (ll_pid,), False),
                Target(
                    "litellm+gateway", litellm.url, MASTER_KEY, "bench{}-h100",
                    (ll_pid, gw_pid), False,
                ),
            ]  # fmt: skip
        print(f"machine: {machine()}")
        where = f"load generator and stand-in on CPU {world_cpu}, proxies on CPU {proxy_cpu}"
        print(f"pinning: {where if world_cpu is not None else 'none (all share every CPU)'}")
        bench = Bench(deadline, world_cpu, (standin.process.pid,), args.profile)
        rows = measure(bench, targets, workloads(args.quick))
        report(rows)
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in rows]))
        if not args.no_memory:
            print("\n### Memory\n")
            try:
                for line in memory_test(args.streams, config, standin.url, proxy_cpu, deadline):
                    print(f"- {line}")
            except TimeoutError as exc:
                print(f"- skipped: {exc}")


def measure(bench: Bench, targets: list[Target], plan: list[Workload]) -> list[Row]:
    """Every workload against every target in turn, so drift affects all alike."""
    rows: list[Row] = []
    try:
        for target in targets:
            bench.warm_up(target)
        for workload in plan:
            for target in targets:
                rows.append(bench.row(workload, target))
                label = f"{workload.label} c={workload.concurrency} {target.name}"
                print(f"  done: {label}", file=sys.stderr, flush=True)
    except TimeoutError as exc:
        print(f"stopped early: {exc}", file=sys.stderr)
    return rows


def report(rows: list[Row]) -> None:
    chat = [r for r in rows if not r.workload.stream]
    streams = [r for r in rows if r.workload.stream]
    sections = [
        ("Non-streaming chat (closed loop)", chat_table(chat)),
        (f"Streaming ({STREAM_TOKENS} tokens per stream)", stream_table(streams)),
        ("Gateway vs LiteLLM (above 1 = gateway ahead)", comparison_table(rows)),
        ("Targets", target_table(rows)),
        ("CPU use per process (share of one CPU)", cpu_table(rows)),
    ]
    for title, text in sections:
        print(f"\n### {title}\n\n{text}")
    for row in rows:
        if row.result.error_sample:
            label = f"{row.workload.label} c={row.workload.concurrency} {row.target}"
            print(f"\nfirst error, {label}: {row.result.error_sample}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        loadgen_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM rows")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory test")
    parser.add_argument("--streams", type=int, default=256, help="streams in the memory test")
    parser.add_argument("--time-limit", type=float, default=1500.0, help="seconds, whole run")
    parser.add_argument("--json", type=Path, help="also write the raw rows here")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the gateway's c=64 rows into this directory"
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
