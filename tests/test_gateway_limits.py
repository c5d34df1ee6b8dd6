"""The gateway against misbehaving clients, over real sockets on 127.0.0.1: numbers JSON
cannot carry, bodies that never finish, many big uploads at once, and the limits of
`mvgen gateway`'s server (head deadline and size, idle connections, connection cap)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from gateway_fixtures import API_KEY, client, gateway_over, make_app, standin, wait_until
from standin_vllm import StandinServer, free_port

from mvgen import local_server
from mvgen.local_server import ServerLimits, fit_to_open_files, server_config
from mvgen.runtime.backends import HttpBackend

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandinServer]:
    with standin(chunks=3) as server:
        yield server


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def post_head(length: int | None, path: str = "/v1/chat/completions") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with Content-Length (what the gateway sends for errors)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, rest[:length]


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes `sock` (reading and discarding what it sends)."""
    sock.settimeout(seconds)
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass
    return time.monotonic() - started


def padded(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes."""
    base = json.dumps({**CHAT, "pad": ""}).encode()
    return json.dumps({**CHAT, "pad": "x" * (size - len(base))}).encode()


# --- request bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["1e999", "-1e999", "1E400", "NaN", "-Infinity", "[1, Infinity]"]
)
def test_numbers_json_cannot_carry_are_400_without_a_traceback(
    upstream: StandinServer, number: str, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.clear()
    caplog.set_level(logging.DEBUG)
    content = f'{{"model": "alpha", "messages": [], "temperature": {number}}}'
    with gateway_over({"alpha": upstream.url}) as url, client(url) as c:
        response = c.post("/v1/chat/completions", content=content)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert upstream.requests == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_lone_surrogate_in_a_string_is_forwarded(upstream: StandinServer) -> None:
    upstream.clear()
    content = b'{"model": "alpha", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    with gateway_over({"alpha": upstream.url}) as url, client(url) as c:
        assert c.post("/v1/chat/completions", content=content).status_code == 200
    assert upstream.completion_requests()[0].body["messages"][0]["content"] == "a\ud800b"


def test_a_body_shorter_than_its_content_length_is_408_not_a_hang(
    upstream: StandinServer,
) -> None:
    upstream.clear()
    with gateway_over({"alpha": upstream.url}, body_timeout=0.5) as url:
        with connect(url) as sock:
            started = time.monotonic()
            sock.sendall(post_head(1000) + b'{"model": "alpha"')
            status, headers, body = read_response(sock)
            elapsed = time.monotonic() - started
            assert closed_within(sock, 5) < 1  # and the connection is not kept
    assert status == 408 and 0.4 < elapsed < 3
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert headers["connection"] == "close"
    assert upstream.requests == []


def test_big_uploads_at_once_share_a_bounded_budget(upstream: StandinServer) -> None:
    """With 1 MB of budget, a second 600 kB upload waits its turn (503 gateway_busy,
    Retry-After) while the first is in flight; small requests still pass; the budget is
    whole again once the first is answered."""
    upstream.clear()
    limits = {"max_inflight_body_bytes": 1_000_000, "max_body_bytes": 900_000}
    first_body = padded(600_000)
    with gateway_over({"alpha": upstream.url}, **limits) as url, client(url) as c:
        with connect(url) as first:
            # The first upload: its head, and a sixth of its body, then nothing for now.
            first.sendall(post_head(600_000) + first_body[:100_000])
            time.sleep(0.2)  # the gateway has read the head and reserved the length
            busy = c.post("/v1/chat/completions", content=padded(600_000))
            assert busy.status_code == 503
            assert busy.json()["error"]["code"] == "gateway_busy"
            assert busy.headers["retry-after"] == "1"
            # Without Content-Length the budget is taken as the bytes arrive.
            parts = (padded(600_000)[i : i + 50_000] for i in range(0, 600_000, 50_000))
            chunked = c.post("/v1/chat/completions", content=parts)
            assert chunked.json()["error"]["code"] == "gateway_busy"
            assert c.post("/v1/chat/completions", content=padded(10_000)).status_code == 200
            first.sendall(first_body[100_000:])
            assert read_response(first)[0] == 200
        for _ in range(3):  # nothing was left reserved
            assert c.post("/v1/chat/completions", content=padded(900_000)).status_code == 200
    assert len(upstream.completion_requests()) == 5


def test_a_stream_gives_its_body_budget_back_once_the_upstream_has_it() -> None:
    with standin(chunks=40, chunk_delay=0.05) as slow:
        limits = {"max_inflight_body_bytes": 1_000_000, "max_body_bytes": 900_000}
        with gateway_over({"alpha": slow.url}, **limits) as url, client(url) as c:
            body = json.loads(padded(800_000)) | {"stream": True}
            with c.stream("POST", "/v1/chat/completions", json=body) as streaming:
                assert streaming.status_code == 200
                # While it streams (2 s), another 800 kB body fits in the budget.
                assert c.post("/v1/chat/completions", content=padded(800_000)).status_code == 200
                streaming.read()


# --- `mvgen gateway`'s server ----------------------------------------------------------------

FAST = ServerLimits(keep_alive_timeout=1, head_timeout=0.5, max_head_bytes=8192, max_connections=8)
# For "closed at once": no timer of the server's could close the socket within 2 s, so a
# close that quick is the check itself, even on a loaded machine.
SLOW_TIMERS = ServerLimits(
    keep_alive_timeout=5, head_timeout=5, max_head_bytes=8192, max_connections=8
)


@contextlib.contextmanager
def guarded_gateway(upstream: str, limits: ServerLimits = FAST) -> Iterator[str]:
    """The gateway under the server `mvgen gateway` runs, in a thread."""
    port = free_port()
    app = make_app(HttpBackend({"alpha": upstream}))
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_connection_that_sends_nothing_is_closed(upstream: StandinServer) -> None:
    with guarded_gateway(upstream.url) as url, connect(url) as sock:
        assert 0.3 < closed_within(sock, 5) < 2


def test_a_dripped_head_is_cut_at_the_deadline(upstream: StandinServer) -> None:
    with guarded_gateway(upstream.url) as url, connect(url) as sock:
        started = time.monotonic()
        sent = b""
        with contextlib.suppress(OSError):
            for byte in post_head(2):  # one byte every 50 ms: 7 s for the whole head
                sock.send(bytes([byte]))
                sent += bytes([byte])
                time.sleep(0.05)
                if time.monotonic() - started > 5:
                    break
        closed_after = time.monotonic() - started + closed_within(sock, 5)
    assert closed_after < 2
    assert len(sent) < len(post_head(2))


@pytest.mark.parametrize("finished", [True, False], ids=["whole head", "head still coming"])
def test_a_head_over_the_size_limit_is_400(upstream: StandinServer, finished: bool) -> None:
    pad = b"\r\nX-Pad: " + b"x" * 9000
    head = (
        post_head(2).replace(b"\r\n\r\n", pad + b"\r\n\r\n{}")
        if finished
        else post_head(2)[:-4] + pad
    )
    with guarded_gateway(upstream.url, SLOW_TIMERS) as url, connect(url) as sock:
        sock.sendall(head)
        assert read_response(sock)[0] == 400
        assert closed_within(sock, 10) < 2


def test_an_idle_kept_alive_connection_is_reaped(upstream: StandinServer) -> None:
    with guarded_gateway(upstream.url) as url, connect(url) as sock:
        sock.sendall(post_head(len(json.dumps(CHAT))) + json.dumps(CHAT).encode())
        assert read_response(sock)[0] == 200
        assert 0.7 < closed_within(sock, 5) < 2.5  # keep_alive_timeout is 1 s


def test_the_rest_of_an_unread_body_must_come_before_the_deadline(
    upstream: StandinServer,
) -> None:
    """A 404 is answered without reading the body; dripping the rest of it cannot keep
    the connection open."""
    with guarded_gateway(upstream.url) as url, connect(url) as sock:
        sock.sendall(post_head(10_000, path="/nope") + b"x")
        assert read_response(sock)[0] == 404
        started = time.monotonic()
        with contextlib.suppress(OSError):
            while time.monotonic() - started < 5:
                sock.send(b"x")
                time.sleep(0.05)
        assert time.monotonic() - started < 2


def test_connections_past_the_cap_are_closed_at_once(upstream: StandinServer) -> None:
    with guarded_gateway(upstream.url, SLOW_TIMERS) as url:
        idle = [connect(url) for _ in range(SLOW_TIMERS.max_connections)]
        time.sleep(0.1)
        with connect(url) as extra:
            assert closed_within(extra, 10) < 2
        for sock in idle:
            sock.close()
        time.sleep(0.1)
        with client(url) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_normal_clients_are_unaffected(upstream: StandinServer) -> None:
    with guarded_gateway(upstream.url) as url, client(url) as c:
        for _ in range(20):  # one kept-alive connection
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        stream = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert stream.text.rstrip().endswith("data: [DONE]")
        time.sleep(FAST.head_timeout + 0.3)  # idle, but within keep-alive: still usable
        assert c.get("/health").status_code == 200


def test_fit_to_open_files_raises_the_soft_limit_or_lowers_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []
    limits: dict[str, tuple[int, int]] = {}

    def getrlimit(_: int) -> tuple[int, int]:
        return limits["now"]

    monkeypatch.setattr(local_server.resource, "getrlimit", getrlimit)
    monkeypatch.setattr(local_server.resource, "setrlimit", lambda _, v: calls.append(v))
    wanted = ServerLimits().max_connections * 2 + 64
    limits["now"] = (1024, 1_048_576)
    assert fit_to_open_files(ServerLimits()) == ServerLimits()
    assert calls == [(wanted, 1_048_576)]
    calls.clear()
    limits["now"] = (1024, 1024)  # cannot be raised: fewer connections
    assert fit_to_open_files(ServerLimits()).max_connections == (1024 - 64) // 2
    assert calls == []


RUN = """
import sys
from mvgen.local_gateway import run_local_gateway
from mvgen.local_server import ServerLimits
from mvgen.runtime.models import models_from_literal
models = models_from_literal({"alpha": {"served_name": "org/Alpha-7B-it"}})
limits = ServerLimits(head_timeout=0.5)
run_local_gateway(models, {"alpha": sys.argv[1]}, port=int(sys.argv[2]), limits=limits)
"""


def test_run_local_gateway_serves_with_the_guarded_server(upstream: StandinServer) -> None:
    port = free_port()
    env: dict[str, Any] = {**os.environ, "API_KEY": API_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, upstream.url, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/health", timeout=1, trust_env=False).is_success
            return False

        wait_until(up, 20, "gateway did not start")
        with connect(url) as sock:
            assert closed_within(sock, 5) < 2
        with client(url) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
