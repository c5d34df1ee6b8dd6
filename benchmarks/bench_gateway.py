"""Gateway overhead, measured so that it cannot flatter the gateway: the same workloads sent
straight to a fast stand-in ("direct", the ceiling), through `mvgen gateway`, through the
LiteLLM proxy, and through both, all on loopback.

    uv run python benchmarks/bench_gateway.py [--quick] [--no-litellm] [--rows chat,stream]

Prints markdown tables (docs/benchmarks.md explains every row and column); asserts
nothing. Method, in short:

- Load: h2load (nghttp2-client, compiled) for closed-loop non-streamed rows, aiohttp
  clients in one or more processes (aiohttp_load.py) for streams and spread-out clients.
  Every row runs a warm-up (connections opened, caches warm) and then a timed window of
  --window seconds; only the window counts.
- Placement: with 2+ CPUs (taskset) the stand-in has a CPU of its own and the proxy under
  test another; the load generator takes the proxy's CPU in direct rows (so the stand-in's
  CPU is the only limit: it must show near 100 %) and shares the stand-in's in proxied rows.
- CPU: utime + stime from /proc/PID/stat of each process (exited threads and children
  included) at the window's edges; memory: VmRSS every 50 ms during the row.
- Every process is started here in its own session and stopped at the end; the whole run
  is bounded by --time-limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from aiohttp_load import LoadResult, LoadSpec  # noqa: E402
from gateway_report import (  # noqa: E402
    BIG_KB,
    PACE_MS,
    PACED_TOKENS,
    STREAM_TOKENS,
    Row,
    Workload,
    annotate,
    report,
    row_json,
)
from procstat import RssSampler, cpu_seconds, machine_cpu, wait_until  # noqa: E402

BIN = Path(sys.executable).parent  # the project venv: mvgen and litellm live here
GATEWAY_KEY = "bench-gateway-key-0123456789"  # what the gateway checks, LiteLLM sends
MASTER_KEY = "sk-bench-master-0123456789"
START_LIMIT = 120.0  # seconds for any process to become healthy (LiteLLM takes ~10)
LITELLM_WARMUP = 5.0  # seconds of warm-up at least, in LiteLLM's rows

# Model-name suffixes the stand-in reads its behaviour from (fast_upstream.py).
SUFFIXES = ("", "-d250", f"-c{PACE_MS}", f"-k{BIG_KB}")

# One model per behaviour, on two GPUs: LiteLLM's l40s routes go straight to the
# stand-in, its h100 routes to the gateway (which forwards every model to the stand-in).
BENCH_CONFIG = "mode: gpu\nworkspace: bench\nendpoint_limit: 8\n" + (
    "gpus:\n  l40s: {type: L40S}\n  h100: {type: H100}\nmodels:\n"
    + "".join(f"  bench{s}: {{hf_id: org/bench{s}, max_model_len: 8192}}\n" for s in SUFFIXES)
)


# --- workloads -----------------------------------------------------------------------


@dataclass(frozen=True)
class Durations:
    warmup: float  # seconds of load before the window
    window: float  # seconds measured


FAMILIES = ("chat", "steady", "stream", "paced", "big")


def workloads(quick: bool, paced_streams: Sequence[int]) -> list[Workload]:
    """Every row family; --quick keeps one size of each and drops the steady row."""
    chat = [Workload("chat", "chat", c) for c in (1, 16, 64)]
    # 64 clients of a model answering in 250 ms, their starts spread over that time:
    # about 250 req/s arriving evenly, the latency a user sees at a steady load.
    steady = [Workload("steady", "chat 250 ms", 64, "-d250", h2load=False, stagger=0.25)]
    stream = [
        Workload("stream", "stream", c, stream=True, tokens=STREAM_TOKENS, h2load=False)
        for c in (1, 16, 64)
    ]
    paced = [
        Workload(
            "paced", f"paced {PACE_MS} ms", c, f"-c{PACE_MS}", stream=True, tokens=PACED_TOKENS,
            h2load=False, gaps=True, litellm=False, fresh_gateway=True,
        )
        for c in paced_streams
    ]  # fmt: skip
    big = [
        Workload(
            "big", "2 MB", c, f"-k{BIG_KB}", litellm=False, fresh_gateway=True,
            expect_bytes=BIG_KB * 1000,
        )
        for c in (16, 64)
    ]  # fmt: skip
    if quick:
        return [chat[1], stream[1], *paced[:1], big[0]]
    return chat + steady + stream + paced + big


def durations(workload: Workload, route: str, args: argparse.Namespace) -> Durations:
    if workload.gaps:  # paced: streams start spread over 3/4 of the warm-up
        return Durations(max(args.warmup * 2, 1.0), max(args.window, 1.0))
    if route.startswith("litellm") and not args.quick:
        # LiteLLM answers tens of requests per second: its queue of 64 clients takes
        # seconds to reach a steady state (at 64 streams, its first chunks take ~10 s).
        return Durations(max(args.warmup, LITELLM_WARMUP), args.window)
    return Durations(args.warmup, args.window)


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cpus: Sequence[int] | None) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []


@dataclass(frozen=True)
class Layout:
    """Which CPUs each party may use (None: unpinned)."""

    standin: tuple[int, ...] | None = None
    proxy: tuple[int, ...] | None = None
    load_direct: tuple[int, ...] | None = None  # load generator in direct rows
    load_proxied: tuple[int, ...] | None = None  # ... and in rows through a proxy

    def load(self, direct: bool) -> tuple[int, ...] | None:
        return self.load_direct if direct else self.load_proxied

    def describe(self) -> str:
        if self.standin is None:
            return "none (every process may use every CPU)"
        return (
            f"stand-in on CPU {self.standin}, proxy under test on CPU {self.proxy}, load "
            f"generator on CPU {self.load_direct} in direct rows and {self.load_proxied} "
            "in proxied rows"
        )


def layout(pin: bool) -> Layout:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or not shutil.which("taskset"):
        return Layout()
    standin, proxy, rest = (cpus[0],), (cpus[1],), tuple(cpus[2:])
    if rest:  # a CPU (or more) of its own for the load
        return Layout(standin, proxy, rest, rest)
    return Layout(standin, proxy, proxy, standin)


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


# --- one row -------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A way to the stand-in: its URL, key, model name pattern and proxy processes."""

    name: str  # direct, gateway, litellm, litellm+gateway
    url: str
    key: str
    model: str  # a format string: "{}" takes the suffix, e.g. "bench{}-l40s"
    proxies: dict[str, int] = field(default_factory=dict)  # role -> pid
    exact_events: bool = True  # relays upstream events one for one (LiteLLM re-frames)


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        place: Layout,
        standin_pid: int,
        deadline: float,
        tmp: Path,
    ) -> None:
        self.args = args
        self.place = place
        self.standin_pid = standin_pid
        self.deadline = deadline
        self.tmp = tmp

    def row(self, workload: Workload, path: Route) -> Row:
        times = durations(workload, path.name, self.args)
        needed = times.warmup + times.window + 15
        if self.deadline - time.monotonic() < needed:
            raise TimeoutError("the time limit is used up")
        direct = path.name == "direct"
        cpus = self.place.load(direct)
        roles = {"stand-in": self.standin_pid, **path.proxies}
        sampler = RssSampler(roles.values()).start()
        try:
            if workload.h2load:
                row = self.h2load_row(workload, path, times, cpus, roles)
            else:
                row = self.aiohttp_row(workload, path, times, cpus, roles)
        finally:
            sampler.stop()
        row.rss = {r: (sampler.tracks[p].idle, sampler.tracks[p].peak) for r, p in roles.items()}
        self.settle(list(roles.values()))
        return row

    def spec(self, workload: Workload, path: Route, times: Durations, start: float) -> LoadSpec:
        usage = not self.args.no_client_usage
        events = workload.tokens + 1 if workload.stream and path.exact_events and usage else 0
        return LoadSpec(
            url=path.url,
            model=path.model.format(workload.suffix),
            key=path.key,
            clients=workload.clients,
            start=start,
            warmup=times.warmup,
            window=times.window,
            stream=workload.stream,
            tokens=workload.tokens,
            expect_events=events,
            expect_bytes=workload.expect_bytes,
            stagger=times.warmup * 0.75 if workload.gaps else workload.stagger,
            all_clients=workload.clients,
            gaps=workload.gaps,
            usage=usage,
        )

    def load_procs(self, clients: int, cpus: tuple[int, ...] | None) -> int:
        wanted = self.args.load_procs or (len(cpus) if cpus else os.cpu_count() or 1)
        return max(1, min(wanted, clients))

    def aiohttp_row(
        self,
        workload: Workload,
        path: Route,
        times: Durations,
        cpus: tuple[int, ...] | None,
        roles: dict[str, int],
    ) -> Row:
        spec = self.spec(workload, path, times, 0.0)
        procs = self.load_procs(workload.clients, cpus)
        shares = [workload.clients // procs + (i < workload.clients % procs) for i in range(procs)]
        processes = []
        first = 0
        for share in shares:
            part = replace(spec, clients=share, first_index=first)
            first += share
            argv = pinned(cpus) + [sys.executable, str(HERE / "aiohttp_load.py")]
            argv.append(json.dumps(asdict(part)))
            processes.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        start = start_together(processes)
        cpu = self.window_cpu(start, times, {**roles, **load_roles(processes)})
        results = [finish_aiohttp(p, start + times.warmup + times.window) for p in processes]
        return make_row(workload, path, times, merge(results), cpu)

    def h2load_row(
        self,
        workload: Workload,
        path: Route,
        times: Durations,
        cpus: tuple[int, ...] | None,
        roles: dict[str, int],
    ) -> Row:
        """h2load's main phase starts 0.2 s before the window and ends after it; its
        per-request log (start time, status, duration) is cut to the window here."""
        body = self.tmp / "body.json"
        spec = self.spec(workload, path, times, 0.0)
        body.write_text(json.dumps(json.loads(request_json(spec))))
        log = self.tmp / "h2load.log"
        log.unlink(missing_ok=True)
        threads = self.load_procs(workload.clients, cpus)
        warm = max(0.1, times.warmup - 0.2)
        argv = pinned(cpus) + ["h2load", "--h1", "-c", str(workload.clients), "-t", str(threads)]
        argv += ["--warm-up-time", f"{round(warm * 1000)}ms"]
        argv += ["-D", f"{round((times.window + times.warmup - warm + 0.3) * 1000)}ms"]
        argv += ["-d", str(body), "-H", "content-type: application/json", "--log-file", str(log)]
        if path.key:
            argv += ["-H", f"authorization: Bearer {path.key}"]
        argv.append(f"{path.url}/v1/chat/completions")
        start = time.monotonic()
        epoch = time.time() - start  # to place h2load's epoch timestamps on our clock
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        cpu = self.window_cpu(start, times, {**roles, "load generator": process.pid})
        output, _ = process.communicate(timeout=times.window + times.warmup + 60)
        if process.returncode != 0:
            raise RuntimeError(f"h2load failed ({process.returncode}):\n{output[-2000:]}")
        opens = epoch + start + times.warmup
        result = read_h2load_log(log, opens, opens + times.window)
        row = make_row(workload, path, times, result, cpu)
        starts = [int(line.split("\t")[0]) / 1e6 for line in log.open()]
        if not starts:
            row.notes.append("no request completed while h2load measured")
        elif min(starts) > opens:  # its main phase began inside the window, not before
            row.notes.append(f"load began {(min(starts) - opens) * 1000:.0f} ms into the window")
        return row

    def window_cpu(self, start: float, times: Durations, roles: dict[str, int]) -> dict[str, float]:
        """CPU seconds of each role between the window's edges, plus "others": what the
        rest of the machine used meanwhile (other users of a shared machine), and
        "steal": time the hypervisor gave to other machines."""

        def snapshot() -> dict[str, float]:
            busy, steal = machine_cpu()
            ours = {role: cpu_seconds(pid) for role, pid in roles.items()}
            harness = cpu_seconds(os.getpid(), descendants=False)
            return ours | {"others": busy - sum(ours.values()) - harness, "steal": steal}

        wait_until(start + times.warmup)
        before = snapshot()
        wait_until(start + times.warmup + times.window)
        after = snapshot()
        return {role: max(0.0, after[role] - before[role]) for role in before}

    def settle(self, pids: list[int], limit: float = 120.0) -> None:
        """Wait until the processes are idle, so one row's tail does not load the next:
        streams cut at the end of a row are being closed, and LiteLLM goes on reading
        an abandoned stream from its upstream for seconds."""
        give_up = time.monotonic() + limit
        while time.monotonic() < give_up:
            before = sum(cpu_seconds(pid) for pid in pids)
            time.sleep(0.3)
            if sum(cpu_seconds(pid) for pid in pids) - before < 0.03:
                return
        print(
            f"  still busy {limit:g} s after the row: the next row may be slowed", file=sys.stderr
        )


def load_roles(processes: list[subprocess.Popen]) -> dict[str, int]:
    if len(processes) == 1:
        return {"load generator": processes[0].pid}
    return {f"load generator {i}": p.pid for i, p in enumerate(processes)}


def request_json(spec: LoadSpec) -> str:
    from aiohttp_load import request_body

    return request_body(spec).decode()


def start_together(processes: list[subprocess.Popen]) -> float:
    """Wait for every load process to say "ready", then give them all one start time."""
    for process in processes:
        line = process.stdout.readline()  # blocks until it has imported aiohttp
        if line.strip() != "ready":
            process.kill()
            errors = process.communicate()[1]
            raise RuntimeError(f"aiohttp load process failed to start:\n{errors[-3000:]}")
    start = time.monotonic() + 0.05
    for process in processes:
        process.stdin.write(f"{start!r}\n")
        process.stdin.flush()
    return start


def finish_aiohttp(process: subprocess.Popen, closes: float) -> LoadResult:
    try:
        output, errors = process.communicate(timeout=max(5.0, closes - time.monotonic() + 60))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError("an aiohttp load process did not stop within 60 s") from None
    if process.returncode != 0:
        raise RuntimeError(f"aiohttp load process failed:\n{errors[-3000:]}")
    return LoadResult(**json.loads(output))


def merge(results: list[LoadResult]) -> LoadResult:
    total = LoadResult()
    for r in results:
        total.sent += r.sent
        total.completed += r.completed
        total.latencies += r.latencies
        total.first_chunk += r.first_chunk
        total.events += r.events
        total.gaps += r.gaps
        total.errors += r.errors
        total.error_sample = total.error_sample or r.error_sample
        total.unanswered += r.unanswered
        total.peak_in_flight += r.peak_in_flight
    return total


def read_h2load_log(log: Path, opens: float, closes: float) -> LoadResult:
    """h2load's log: start (µs since the epoch), status, duration (µs), one line per
    request of its main phase. Requests done inside the window count toward the rate and
    latency; a status other than 200 is an error."""
    result = LoadResult()
    for line in log.read_text().splitlines():
        start_us, status, duration_us = (int(v) for v in line.split("\t")[:3])
        sent, took = start_us / 1e6, duration_us / 1e6
        if not opens <= sent + took <= closes:
            continue
        if status != 200:
            result.errors += 1
            result.error_sample = result.error_sample or f"HTTP status {status} (h2load)"
            continue
        result.completed += 1
        result.latencies.append(took)
        result.sent += sent >= opens
    return result


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p99": math.nan}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    return {"p50": at(50), "p99": at(99)}


def make_row(
    workload: Workload, path: Route, times: Durations, result: LoadResult, cpu: dict[str, float]
) -> Row:
    loads = [r for r in cpu if r.startswith("load generator")]
    if len(loads) > 1:  # several load processes: one figure for them all
        total = sum(cpu[r] for r in loads)
        cpu = {r: v for r, v in cpu.items() if r not in loads} | {"load generator": total}
    latency = result.first_chunk if workload.stream else result.latencies
    return Row(
        workload=workload,
        path=path.name,
        window=times.window,
        clients=workload.clients,
        sent=result.sent,
        completed=result.completed,
        latency=percentiles(latency),
        events=result.events,
        gaps=percentiles(result.gaps),
        errors=result.errors,
        error_sample=result.error_sample,
        unanswered=result.unanswered,
        cpu=cpu,
        rss={},
    )


# --- orchestration -------------------------------------------------------------------


def render_litellm(config: Path, out: Path, bases: dict[str, str]) -> Path:
    args = [arg for gpu, url in bases.items() for arg in ("--api-base", f"{gpu}={url}")]
    argv = [str(BIN / "mvgen"), "render", "--config", str(config), "--output-dir", str(out)]
    subprocess.run(argv + args, check=True, capture_output=True, cwd=ROOT)
    return out / "litellm" / "config.yaml"


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    import aiohttp

    versions = f"h2load {h2load.split()[-1] if h2load else 'absent'}, aiohttp {aiohttp.__version__}"
    return f"{model}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {versions}"


def revision(repo: Path) -> str:
    """The checkout's commit, as `git rev-parse --short HEAD` prints it."""
    argv = ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip() or "no git"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def start_gateway(
    stack: contextlib.ExitStack,
    name: str,
    config: Path,
    upstream: str,
    cpus: Any,
    repo: Path | None,
) -> Server:
    """`mvgen gateway`, as a user runs it, forwarding every bench model to `upstream`: this
    checkout's, or the one in `repo`'s .venv (another commit's, for a before/after)."""
    port = free_port()
    mvgen = BIN / "mvgen" if repo is None else repo / ".venv" / "bin" / "mvgen"
    argv = pinned(cpus) + [str(mvgen), "gateway", "--config", str(config)]
    for suffix in SUFFIXES:
        argv += ["--upstream", f"bench{suffix}={upstream}"]
    argv += ["--port", str(port)]
    env = {**os.environ, "API_KEY": GATEWAY_KEY}
    return stack.enter_context(
        server(name, argv, port, "/health", config.parent, env=env, cwd=repo or ROOT)
    )


def start_litellm(
    stack: contextlib.ExitStack, config: Path, bases: dict[str, str], cpus: Any
) -> Server:
    """The real proxy through `mvgen proxy`, with the config `mvgen render` generates."""
    tmp = config.parent
    litellm_config = render_litellm(config, tmp / "render", bases)
    env_file = tmp / ".env"
    env_file.write_text(f"VLLM_API_KEY={GATEWAY_KEY}\nLITELLM_MASTER_KEY={MASTER_KEY}\n")
    port = free_port()
    argv = pinned(cpus) + [str(BIN / "mvgen"), "proxy", "--litellm-config", str(litellm_config)]
    argv += ["--env-file", str(env_file), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_API_KEY", "LITELLM_MASTER_KEY")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return stack.enter_context(
        server("litellm", argv, port, "/health/liveliness", tmp, env=env, cwd=ROOT)
    )


def check_route(route: Route) -> None:
    """One plain and one streamed request, so a broken path fails here, clearly."""
    import httpx

    headers = {"authorization": f"Bearer {route.key}"} if route.key else {}
    with httpx.Client(trust_env=False, timeout=60) as http:
        for stream in (False, True):
            body = {"model": route.model.format(""), "max_tokens": 4, "stream": stream}
            body["messages"] = [{"role": "user", "content": "Say hello"}]
            answer = http.post(f"{route.url}/v1/chat/completions", json=body, headers=headers)
            if answer.status_code != 200:
                raise RuntimeError(f"{route.name}: HTTP {answer.status_code}: {answer.text[:300]}")


@contextlib.contextmanager
def fresh_gateway(
    route: Route, config: Path, upstream: str, cpus: Any, repo: Path | None
) -> Iterator[Route]:
    with contextlib.ExitStack() as stack:
        gateway = start_gateway(stack, "gateway-fresh", config, upstream, cpus, repo)
        fresh = replace(route, url=gateway.url, proxies={"gateway": gateway.process.pid})
        check_route(fresh)
        yield fresh


@contextlib.contextmanager
def profiled(profile_dir: Path | None, workload: Workload, route: Route) -> Iterator[None]:
    """py-spy samples the gateway in its rows (raw collapsed stacks, one file per row);
    sampling slows it a little, so profiled runs are not the ones to quote."""
    if profile_dir is None or route.name != "gateway":
        yield
        return
    profile_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9=]+", "-", workload.name.lower()) + ".txt"
    argv = [str(BIN / "py-spy"), "record", "--pid", str(route.proxies["gateway"])]
    argv += ["--format", "raw", "--rate", "250", "--output", str(profile_dir / name)]
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


def measure(
    bench: Bench, routes: list[Route], plan: list[Workload], config: Path, upstream: str
) -> list[Row]:
    """Every workload on every route in turn, so drift affects all alike."""
    rows: list[Row] = []
    try:
        for workload in plan:
            for route in routes:
                if route.name.startswith("litellm") and not workload.litellm:
                    continue
                with contextlib.ExitStack() as stack:
                    if workload.fresh_gateway and route.name == "gateway":
                        cpus = bench.place.proxy
                        fresh = fresh_gateway(
                            route, config, upstream, cpus, bench.args.gateway_repo
                        )
                        route = stack.enter_context(fresh)
                    stack.enter_context(profiled(bench.args.profile, workload, route))
                    rows.append(bench.row(workload, route))
                print(f"  done: {workload.name} {route.name}", file=sys.stderr, flush=True)
    except TimeoutError as exc:
        print(f"stopped early: {exc}", file=sys.stderr)
    return rows


def raise_fd_limit() -> None:
    """1024 streams through the gateway hold over 2048 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(args: argparse.Namespace) -> list[Row]:
    plan = [w for w in workloads(args.quick, args.paced) if w.family in args.rows]
    if any(w.h2load for w in plan) and not shutil.which("h2load"):
        sys.exit(
            "h2load not found: it is the load generator of the non-streamed rows. Install it "
            "with `apt-get install nghttp2-client` (Debian), or pick other rows with --rows."
        )
    raise_fd_limit()
    deadline = time.monotonic() + args.time_limit
    place = layout(not args.no_pin)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gateway-")))
        config = tmp / "deployments.yaml"
        config.write_text(BENCH_CONFIG)
        port = free_port()
        argv = pinned(place.standin) + [sys.executable, str(HERE / "fast_upstream.py")]
        argv += ["--port", str(port), "--thread-burn-ms", str(args.standin_thread_burn_ms)]
        standin = stack.enter_context(server("standin", argv, port, "/health", tmp))
        gateway = start_gateway(
            stack, "gateway", config, standin.url, place.proxy, args.gateway_repo
        )
        gw_pid = gateway.process.pid
        routes = [
            Route("direct", standin.url, "", "org/bench{}"),
            Route("gateway", gateway.url, GATEWAY_KEY, "bench{}", {"gateway": gw_pid}),
        ]
        if not args.no_litellm and any(w.litellm for w in plan):
            bases = {"l40s": standin.url, "h100": gateway.url}
            litellm = start_litellm(stack, config, bases, place.proxy)
            ll = {"LiteLLM": litellm.process.pid}
            routes += [
                Route("litellm", litellm.url, MASTER_KEY, "bench{}-l40s", ll, False),
                Route(
                    "litellm+gateway", litellm.url, MASTER_KEY, "bench{}-h100",
                    ll | {"gateway": gw_pid}, False,
                ),
            ]  # fmt: skip
        for route in routes:
            check_route(route)
        print(f"machine: {machine()}")
        if args.gateway_repo is not None:
            repo = args.gateway_repo
            print(f"gateway: {repo / '.venv/bin/mvgen'} at {revision(repo)}")
        print(f"load average at start: {load_average()} (1, 5, 15 min)")
        print(f"pinning: {place.describe()}")
        print(f"rows: warm-up {args.warmup:g} s, then a {args.window:g} s window")
        bench = Bench(args, place, standin.process.pid, deadline, tmp)
        rows = measure(bench, routes, plan, config, standin.url)
        print(f"load average at end: {load_average()}")
    annotate(rows, place.standin is not None and place.load_proxied == place.standin)
    report(rows)
    if args.json:
        args.json.write_text(json.dumps([row_json(r) for r in rows], indent=1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rows, one size per family")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM paths")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--rows", default=",".join(FAMILIES), help=f"families to run, of {','.join(FAMILIES)}"
    )
    parser.add_argument(
        "--paced", default="256,1024", help="paced-stream rows: streams, comma-separated"
    )
    parser.add_argument("--warmup", type=float, help="seconds of load before each window")
    parser.add_argument("--window", type=float, help="seconds measured per row")
    parser.add_argument("--load-procs", type=int, default=0, help="aiohttp processes per row")
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds, whole run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway's rows into this dir")
    parser.add_argument(
        "--no-client-usage",
        action="store_true",
        help="streams do not ask for the usage event, so the gateway asks for it and drops "
        "it (event counts are then not checked: the stand-in sends it anyway)",
    )
    parser.add_argument(
        "--gateway-repo",
        type=Path,
        help="measure the `mvgen gateway` of this checkout (its .venv, from `make env`) "
        "instead of this one's, e.g. an older commit's for a before/after",
    )
    parser.add_argument(
        "--standin-thread-burn-ms",
        type=float,
        default=0.0,
        help="the stand-in spends this much CPU per completion in a thread that exits "
        "(checks that CPU accounting counts exited threads)",
    )
    args = parser.parse_args()
    args.rows = [f.strip() for f in args.rows.split(",") if f.strip()]
    args.paced = [int(n) for n in args.paced.split(",") if n.strip()]
    if args.gateway_repo is not None:
        args.gateway_repo = args.gateway_repo.resolve()
        if not (args.gateway_repo / ".venv" / "bin" / "mvgen").exists():
            parser.error(f"--gateway-repo: no .venv/bin/mvgen in {args.gateway_repo}; "
                         "run `make env` there first")  # fmt: skip
    unknown = sorted(set(args.rows) - set(FAMILIES))
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 1.0
    if args.window is None:
        args.window = 0.7 if args.quick else 3.0
    run(args)


if __name__ == "__main__":
    main()
