"""Inside the GPU container: run vLLM as a child process and answer the gateway's calls.

`VllmProcess` starts `vllm serve` with the environment it should see, relays its output
to the container's logs while keeping the last lines, waits for its /health and watches
it: when vLLM dies after it was ready, the generated app's callback ends the container,
so Modal replaces it instead of the pool serving errors until scale-down. A failed start
is not the watchdog's business: `wait_ready` raises it with the cause in words.
`PoolServer` is what the generated Modal class's methods delegate to; it speaks the
plain-data wire format of modal_backend.py (`FailedPool` stands in for it after a failed start).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import httpx

from . import start_causes
from .adapters import AdapterDownloadError, download_adapters
from .backends import HttpUpstream, new_http_client
from .errors import ApiError
from .modal_backend import (
    error_response,
    response_to_wire,
    stream_error_to_wire,
    stream_start_to_wire,
)

log = logging.getLogger("mvgen.vllm")

# The only vLLM routes a pool forwards; vLLM's other open routes stay unreachable even
# from inside the app. The gateway sends /v1/rerank and /v1/score to vLLM's /rerank and
# /score (gateway.py UPSTREAM_PATHS); /pooling, /classify and /v2/rerank are never forwarded.
FORWARDED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/rerank", "/score"}
)

TAIL_LINES = 200  # vLLM output kept for explaining a failed start (a traceback fits)
DRAIN_TIMEOUT = 5.0  # seconds to read what vLLM printed before it exited

# vLLM serves with this key when it is set (vllm/envs.py, api_server.py in 0.12.0); behind
# the gateway it must never see one, whatever the secret's variable is called.
VLLM_API_KEY_ENV = "VLLM_API_KEY"
# vLLM passes only this variable to huggingface_hub (vllm/transformers_utils/repo_utils.py).
HF_TOKEN_ENV = "HF_TOKEN"


class VllmStartupError(RuntimeError):
    """vLLM exited or stayed unhealthy while the container was starting.

    `cause` says why in words (see start_causes.py); it is also the message."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def vllm_environment(
    parent: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    *,
    hf_token_env: str = HF_TOKEN_ENV,
    hidden_env: Iterable[str] = (),
) -> dict[str, str]:
    """The environment vLLM runs with: the container's, without the API key (the
    gateway checks keys; vLLM would demand its own), with the Hugging Face token as
    HF_TOKEN whatever the secret calls it, and unbuffered output so logs keep order."""
    hidden = {VLLM_API_KEY_ENV, *hidden_env}
    env = {k: v for k, v in parent.items() if k not in hidden}
    token = parent.get(hf_token_env)
    if token:
        env[HF_TOKEN_ENV] = token
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class VllmOutput:
    """vLLM's merged stdout/stderr: relayed to the container's logs as it comes, the
    last TAIL_LINES lines kept, and the start-up phase followed."""

    def __init__(self, sink: IO[bytes] | None = None) -> None:
        self._sink = sink
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._partial = b""
        self._lock = threading.Lock()
        self.phase = start_causes.PHASE_STARTING
        self.closed = threading.Event()

    def tail(self) -> list[str]:
        with self._lock:
            return list(self._tail)

    def pump(self, pipe: IO[bytes]) -> None:
        """Read `pipe` until EOF (run in a thread)."""
        sink = self._sink or sys.stdout.buffer
        try:
            while chunk := os.read(pipe.fileno(), 65536):
                try:
                    sink.write(chunk)
                    sink.flush()
                except (OSError, ValueError):
                    pass  # logs are best effort; the tail still needs the bytes
                self.feed(chunk)
            self.feed(b"", final=True)
        finally:
            pipe.close()
            self.closed.set()

    def feed(self, chunk: bytes, *, final: bool = False) -> None:
        data = self._partial + chunk
        # Progress bars redraw with \r: each redraw is a line for the tail.
        lines = data.replace(b"\r", b"\n").split(b"\n")
        self._partial = b"" if final else lines.pop()
        with self._lock:
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line:
                    self._tail.append(line)
                    self.phase = start_causes.next_phase(line, self.phase)


class VllmProcess:
    def __init__(
        self,
        command: Sequence[str],
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        hf_token_env: str = HF_TOKEN_ENV,
        hidden_env: Iterable[str] = (),
        log_sink: IO[bytes] | None = None,
        adapters: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """`adapters`: the pool's LoRA adapters as the MODELS literal lists them; those
        from the Hub are fetched before vLLM starts (adapters.py)."""
        self.command = list(command)
        self.adapters = list(adapters)
        self.port = port
        self._env = dict(env or {})
        self._hf_token_env = hf_token_env
        self._hidden_env = tuple(hidden_env)
        self.output = VllmOutput(log_sink)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        """Start vLLM in its own process group, so stop() also ends its workers. Its
        output goes through a pipe to the container's stdout, i.e. to Modal's logs."""
        if self._proc is not None:
            raise RuntimeError("vLLM process already started")
        try:
            download_adapters(self.adapters, os.environ.get(self._hf_token_env))
        except AdapterDownloadError as exc:
            raise VllmStartupError(str(exc)) from exc
        log.info("starting vLLM: %s", " ".join(self.command))
        env = vllm_environment(
            os.environ, self._env, hf_token_env=self._hf_token_env, hidden_env=self._hidden_env
        )
        try:
            self._proc = subprocess.Popen(
                self.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise VllmStartupError(f"could not run {self.command[0]!r}: {exc.strerror}") from exc
        assert self._proc.stdout is not None
        threading.Thread(
            target=self.output.pump, args=(self._proc.stdout,), name="vllm-output", daemon=True
        ).start()

    def wait_ready(self, timeout: float, *, poll_interval: float = 1.0) -> None:
        """Return when /health answers 200; raise VllmStartupError with the cause when
        vLLM exits first or is not ready within `timeout` seconds."""
        proc = self._require_started()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                returncode = proc.poll()
                if returncode is not None:
                    self.output.closed.wait(DRAIN_TIMEOUT)  # its last words explain it
                    raise VllmStartupError(
                        start_causes.explain_exit(
                            self.output.tail(), returncode, phase=self.output.phase
                        )
                    )
                if _healthy(client, self.health_url):
                    self._ready.set()
                    log.info("vLLM is ready on port %d", self.port)
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise VllmStartupError(
                        start_causes.explain_timeout(
                            self.output.tail(), timeout, phase=self.output.phase
                        )
                    )
                time.sleep(min(poll_interval, remaining))

    def sleep(self, level: int = 1, timeout: float = 300.0) -> None:
        """Before a GPU snapshot: level 1 moves the weights to CPU memory and drops the
        KV cache, so the snapshot holds a ready engine (needs --enable-sleep-mode and
        VLLM_SERVER_DEV_MODE=1)."""
        self._control("POST", f"/sleep?level={level}", timeout)
        if not self._is_sleeping(timeout):
            raise VllmStartupError("vLLM did not report sleeping after POST /sleep")

    def wake_up(self, timeout: float = 300.0) -> None:
        """After a restore (and harmless when vLLM is awake): weights back to the GPU."""
        self._control("POST", "/wake_up", timeout)
        if self._is_sleeping(timeout):
            raise VllmStartupError("vLLM still reports sleeping after POST /wake_up")

    def _control(self, method: str, path: str, timeout: float) -> httpx.Response:
        self._require_started()
        url = f"http://127.0.0.1:{self.port}{path}"
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.request(method, url)
        if response.status_code != 200:
            raise VllmStartupError(f"vLLM answered {response.status_code} to {method} {path}")
        return response

    def _is_sleeping(self, timeout: float) -> bool:
        return bool(self._control("GET", "/is_sleeping", timeout).json().get("is_sleeping"))

    def watch(self, on_exit: Callable[[int], None]) -> None:
        """Call `on_exit(returncode)` from a daemon thread if vLLM exits unasked after it
        was ready. An exit during start-up is wait_ready's to report, with its cause:
        the watchdog never races it."""
        proc = self._require_started()
        thread = threading.Thread(
            target=self._watch, args=(proc, on_exit), name="vllm-watchdog", daemon=True
        )
        thread.start()

    def _watch(self, proc: subprocess.Popen[bytes], on_exit: Callable[[int], None]) -> None:
        returncode = proc.wait()
        if self._stopping.is_set() or not self._ready.is_set():
            return
        log.error("vLLM exited unexpectedly with code %d", returncode)
        on_exit(returncode)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL after `timeout`; the watchdog stays quiet."""
        self._stopping.set()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is not None:
            _signal_group(proc.pid, signal.SIGKILL)  # workers that outlived vLLM's server
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("call start() first")
        return self._proc


def _healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False  # refused while loading, or a slow answer: keep polling


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class PoolServer:
    """Answers `request` / `stream` calls from the gateway with the local vLLM's
    response, as plain picklable data (see the wire helpers in modal_backend.py)."""

    def __init__(self, port: int, *, timeout: float = 600.0) -> None:
        # Made once vLLM is ready: each answer says how long ago (modal_backend.py
        # waited_for_start tells a cold start by it).
        self._ready_at = time.monotonic()
        self._client = new_http_client(timeout)
        # vLLM is ready before the pool takes calls, so refused connections are not
        # retried here: they mean vLLM died, and the watchdog is replacing the container.
        self._vllm = HttpUpstream(
            self._client, f"http://127.0.0.1:{port}", label="vLLM", connect_wait=0.0
        )

    async def request(self, path: str, body: dict) -> dict[str, Any]:
        try:
            if path == "/health":
                response = await self._vllm.request("GET", "/health")
            else:
                _check_path(path)
                response = await self._vllm.request("POST", path, body)
        except ApiError as exc:
            response = error_response(exc)
        return response_to_wire(response, ready_age=self.ready_age())

    def ready_age(self) -> float:
        return time.monotonic() - self._ready_at

    async def stream(self, path: str, body: dict) -> AsyncIterator[Any]:
        """Yields one start item `{"status", "headers", "ready_age"}`, then body chunks
        as bytes; a failure after the start is yielded as `{"error": {...}}`."""
        try:
            _check_path(path)
            upstream = await self._vllm.stream(path, body)
        except ApiError as exc:
            response = error_response(exc)
            yield stream_start_to_wire(
                response.status, response.headers, ready_age=self.ready_age()
            )
            yield response.content
            return
        try:
            yield stream_start_to_wire(
                upstream.status, upstream.headers, ready_age=self.ready_age()
            )
            async for chunk in upstream.chunks:
                yield chunk
        except ApiError as exc:
            yield stream_error_to_wire(exc)
        finally:
            await upstream.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


def _check_path(path: str) -> None:
    if path not in FORWARDED_PATHS:
        raise ApiError(404, "not_found", f"Route {path!r} is not forwarded to vLLM.")


class FailedPool:
    """Where PoolServer would be after vLLM failed to start: every call is answered with
    `error` (503 model_failed_to_start and the cause), so callers learn why at once."""

    def __init__(self, error: ApiError) -> None:
        self.error = error

    async def request(self, path: str, body: dict) -> dict[str, Any]:
        return response_to_wire(error_response(self.error))

    async def stream(self, path: str, body: dict) -> AsyncIterator[Any]:
        response = error_response(self.error)
        yield stream_start_to_wire(response.status, response.headers)
        yield response.content

    async def aclose(self) -> None:
        pass
