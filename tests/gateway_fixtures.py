"""Helpers for the gateway tests: real servers on 127.0.0.1, always stopped afterwards.

Plain context managers rather than pytest fixtures, so test modules can import them
without pytest's fixture-import quirks (conftest.py belongs to other tests).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import uvicorn
from standin_vllm import StandinConfig, StandinServer
from starlette.applications import Starlette

from mvgen.runtime.backends import MAX_RESPONSE_BYTES, Backend, HttpBackend
from mvgen.runtime.gateway import GatewaySettings, create_app
from mvgen.runtime.models import ModelTable, models_from_literal

API_KEY = "test-key-0123456789"
OTHER_KEY = "rotated-key-abcdef"
KEY_ENV = "MVGEN_TEST_GATEWAY_API_KEY"  # never the real API_KEY of whoever runs the tests

# Two models, so routing can be told apart; served names are mixed-case like HF ids.
MODELS: ModelTable = models_from_literal(
    {
        "alpha": {"served_name": "org/Alpha-7B-it", "aliases": ["alpha", "alpha-chat"]},
        "beta": {"served_name": "org/beta-1b", "aliases": ["beta"], "command": ["ignored"]},
    }
)
ALPHA = "org/Alpha-7B-it"
BETA = "org/beta-1b"


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def temporary_env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def make_app(
    backend: Backend,
    *,
    models: ModelTable = MODELS,
    keys: str | None = API_KEY,
    **settings: Any,
) -> Starlette:
    """create_app with keys from a test-only env var (read once, at creation)."""
    with temporary_env(KEY_ENV, keys):
        return create_app(
            models, backend, settings=GatewaySettings(api_key_env=KEY_ENV, **settings)
        )


@contextlib.contextmanager
def serve_asgi(app: Any, *, start_timeout: float = 10.0) -> Iterator[str]:
    """Run `app` under uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, start_timeout, "uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def gateway_over(
    upstreams: Mapping[str, str],
    *,
    timeout: float = 30.0,
    connect_wait: float = 0.0,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    **settings: Any,
) -> Iterator[str]:
    """A gateway with an HttpBackend to `upstreams` (model key -> URL); yields its URL."""
    backend = HttpBackend(
        upstreams,
        timeout=timeout,
        connect_wait=connect_wait,
        max_response_bytes=max_response_bytes,
    )
    with serve_asgi(make_app(backend, **settings)) as url:
        yield url


@contextlib.contextmanager
def standin(**config: Any) -> Iterator[StandinServer]:
    """A stand-in serving both test models' served names."""
    config.setdefault("served_names", [ALPHA, BETA])
    server = StandinServer(StandinConfig(**config))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(url: str, key: str | None = API_KEY, timeout: float = 15.0) -> httpx.Client:
    headers = auth(key) if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=timeout, trust_env=False)


def raw_http(
    url: str, request_line: str, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> int:
    """Send a request line byte for byte (httpx would normalise the path) and return
    the response status."""
    host, port = url.removeprefix("http://").split(":")
    lines = [request_line, f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def wait_until(predicate: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.01)
