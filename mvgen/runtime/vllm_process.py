"""Inside the GPU container: run vLLM as a child process and answer the gateway's calls.

`VllmProcess` starts `vllm serve`, waits for its /health and watches it: when vLLM dies
the generated app's callback ends the container, so Modal replaces it instead of the
pool serving errors until scale-down. `PoolServer` is what the generated Modal class's
methods delegate to; it speaks the plain-data wire format of modal_backend.py.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

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
# from inside the app.
FORWARDED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class VllmStartupError(RuntimeError):
    """vLLM exited or stayed unhealthy while the container was starting."""


class VllmProcess:
    def __init__(
        self, command: Sequence[str], port: int, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.command = list(command)
        self.port = port
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        """Start vLLM in its own process group, so stop() also ends its workers.
        Output goes to the container's stdout/stderr, i.e. to Modal's logs."""
        if self._proc is not None:
            raise RuntimeError("vLLM process already started")
        log.info("starting vLLM: %s", " ".join(self.command))
        self._proc = subprocess.Popen(
            self.command, env={**os.environ, **self._env}, start_new_session=True
        )

    def wait_ready(self, timeout: float, *, poll_interval: float = 1.0) -> None:
        proc = self._require_started()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                returncode = proc.poll()
                if returncode is not None:
                    raise VllmStartupError(
                        f"vLLM exited with code {returncode} before it became ready "
                        "(see the log lines above for its error)."
                    )
                if _healthy(client, self.health_url):
                    log.info("vLLM is ready on port %d", self.port)
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise VllmStartupError(
                        f"vLLM did not answer {self.health_url} with 200 within {timeout:.0f} s."
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
        """Call `on_exit(returncode)` from a daemon thread if vLLM exits unasked."""
        proc = self._require_started()
        thread = threading.Thread(
            target=self._watch, args=(proc, on_exit), name="vllm-watchdog", daemon=True
        )
        thread.start()

    def _watch(self, proc: subprocess.Popen[bytes], on_exit: Callable[[int], None]) -> None:
        returncode = proc.wait()
        if self._stopping.is_set():
            return
        log.error("vLLM exited unexpectedly with code %d", returncode)
        on_exit(returncode)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL after `timeout`; the watchdog stays quiet."""
        self._stopping.set()
        proc = self._proc
        if proc is None or proc.poll() is not None:
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
        return response_to_wire(response)

    async def stream(self, path: str, body: dict) -> AsyncIterator[Any]:
        """Yields one start item `{"status", "headers"}`, then body chunks as bytes;
        a failure after the start is yielded as `{"error": {...}}`."""
        try:
            _check_path(path)
            upstream = await self._vllm.stream(path, body)
        except ApiError as exc:
            response = error_response(exc)
            yield stream_start_to_wire(response.status, response.headers)
            yield response.content
            return
        try:
            yield stream_start_to_wire(upstream.status, upstream.headers)
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
