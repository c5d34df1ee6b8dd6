"""The gateway against a misbehaving upstream, over real sockets on 127.0.0.1: stray
responses never reach another caller, broken framing, status lines and headers become
a well-formed 502, odd header bytes are dropped, big and compressed answers are
refused with their memory released at once."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gateway_fixtures import client, gateway_over
from hostile_upstream import RawRequest, hostile_upstream, json_response, response

from mvgen.runtime.backends import check_status, relay_headers
from mvgen.runtime.errors import UpstreamProtocolError

pytestmark = pytest.mark.timeout(120)


def chat(marker: str, stream: bool = False) -> dict:
    body = {"model": "alpha", "messages": [{"role": "user", "content": marker}]}
    return {**body, "stream": True} if stream else body


def answer(marker: str) -> dict:
    return {"object": "chat.completion", "choices": [{"message": {"content": marker}}]}


def sse_answer(marker: str) -> bytes:
    event = b"data: " + json.dumps({"choices": [{"delta": {"content": marker}}]}).encode()
    events = [event + b"\n\n", b"data: [DONE]\n\n"]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked"
    return head + b"\r\n\r\n" + chunks + b"0\r\n\r\n"


def marker_of(request: RawRequest) -> str:
    return request.json()["messages"][0]["content"]


def stray_after_each_answer(sent: threading.Event | None = None):
    """Answers each request, then sends one more response nobody asked for: in the same
    write, or (with `sent`) 5 ms later, setting `sent` once it is on its way."""

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        marker = marker_of(request)
        stream = request.json().get("stream")
        reply = sse_answer(marker) if stream else json_response(answer(marker))
        stray = sse_answer("STRAY") if stream else json_response(answer("STRAY"))
        if sent is None:
            writer.write(reply + stray)
        else:
            writer.write(reply)
            await writer.drain()
            await asyncio.sleep(0.005)
            writer.write(stray)
            await writer.drain()
            sent.set()
        return True

    return handler


def received(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[6:] for line in response.text.split("\n") if line.startswith("data: {")]
        return "".join(json.loads(d)["choices"][0]["delta"]["content"] for d in data)
    return response.json()["choices"][0]["message"]["content"]


# --- stray responses --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_stray_response_never_reaches_the_next_caller(stream: bool) -> None:
    """300 requests one after another, each answer followed at once by a stray one."""
    with hostile_upstream(stray_after_each_answer()) as up:
        with gateway_over({"alpha": up.url}) as url, client(url) as c:
            got = [received(c.post("/v1/chat/completions", json=chat(f"m{i}", stream)))
                   for i in range(300)]  # fmt: skip
    assert got == [f"m{i}" for i in range(300)]
    assert len(up.requests) == 300


def test_a_stray_response_arriving_while_idle_never_reaches_the_next_caller() -> None:
    """The stray comes 5 ms after the answer, while the connection waits in the pool."""
    sent = threading.Event()
    with hostile_upstream(stray_after_each_answer(sent)) as up:
        with gateway_over({"alpha": up.url}) as url, client(url) as c:
            got = []
            for i in range(100):
                sent.clear()
                got.append(received(c.post("/v1/chat/completions", json=chat(f"m{i}", i % 2))))
                assert sent.wait(5)
                time.sleep(0.005)  # on loopback, long enough to arrive
    assert got == [f"m{i}" for i in range(100)]


def test_stray_responses_never_reach_concurrent_callers() -> None:
    """16 clients at once, 400 requests, half of them streams."""
    with hostile_upstream(stray_after_each_answer()) as up:
        with gateway_over({"alpha": up.url}) as url:

            def one(i: int) -> tuple[str, str]:
                with client(url) as c:
                    response = c.post("/v1/chat/completions", json=chat(f"m{i}", i % 2 == 1))
                    return f"m{i}", received(response)

            with ThreadPoolExecutor(16) as pool:
                pairs = list(pool.map(one, range(400)))
    leaked = [(sent, got) for sent, got in pairs if sent != got]
    assert leaked == []


# --- broken status lines, framing and headers ----------------------------------------------


def answering(raw: bytes):
    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return True

    return handler


def expect_502(url: str, code: str = "bad_upstream_response") -> None:
    """Both a plain and a streamed request get a well-formed 502 with `code`."""
    with client(url) as c:
        for stream in (False, True):
            response = c.post("/v1/chat/completions", json=chat("x", stream))
            assert response.status_code == 502, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == code


BROKEN = {
    # status outside 200-599 (a 1xx cannot end an exchange)
    "status 000": b"HTTP/1.1 000 Zero\r\ncontent-length: 2\r\n\r\n{}",
    "status 099": b"HTTP/1.1 099 Low\r\ncontent-length: 2\r\n\r\n{}",
    "status 101": b"HTTP/1.1 101 Switching\r\ncontent-length: 2\r\n\r\n{}",
    "status 600": b"HTTP/1.1 600 High\r\ncontent-length: 2\r\n\r\n{}",
    "status 999": b"HTTP/1.1 999 High\r\ncontent-length: 2\r\n\r\n{}",
    # control bytes in a relayed header
    "CR in a header": b"HTTP/1.1 200 OK\r\nx-request-id: a\rb\r\ncontent-length: 2\r\n\r\n{}",
    "NUL in a header": b"HTTP/1.1 200 OK\r\nx-request-id: a\x00b\r\ncontent-length: 2\r\n\r\n{}",
    "DEL in a header": b"HTTP/1.1 200 OK\r\nx-request-id: a\x7fb\r\ncontent-length: 2\r\n\r\n{}",
    "ESC in a header": b"HTTP/1.1 200 OK\r\ncontent-type: a\x1bb\r\ncontent-length: 2\r\n\r\n{}",
    # framing that cannot be trusted
    "two lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
    "negative length": b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\n{}",
    "length and chunked": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    ),
    "bad chunk size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "not HTTP": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
}


@pytest.mark.parametrize("raw", BROKEN.values(), ids=BROKEN.keys())
def test_broken_answers_are_a_well_formed_502(raw: bytes) -> None:
    with hostile_upstream(answering(raw)) as up, gateway_over({"alpha": up.url}) as url:
        expect_502(url)
        # ...and the gateway keeps serving: the next good answer goes through.
        up.handler = answering(json_response(answer("fine")))
        with client(url) as c:
            assert received(c.post("/v1/chat/completions", json=chat("x"))) == "fine"


@pytest.mark.parametrize(
    "value", ["1€".encode(), b"caf\xe9", "ü".encode() * 50], ids=["utf-8", "latin-1", "long"]
)
def test_non_ascii_header_values_are_dropped_not_a_500(value: bytes) -> None:
    raw = json.dumps(answer("ok")).encode()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: "
    head += value + b"\r\ncontent-length: %d\r\n\r\n" % len(raw)
    sse = sse_answer("ok").replace(b"\r\n\r\n", b"\r\nx-request-id: " + value + b"\r\n\r\n", 1)

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        writer.write(sse if request.json().get("stream") else head + raw)
        await writer.drain()
        return True

    with hostile_upstream(handler) as up, gateway_over({"alpha": up.url}) as url, client(url) as c:
        for stream in (False, True):
            response = c.post("/v1/chat/completions", json=chat("x", stream))
            assert response.status_code == 200
            assert received(response) == "ok"
            assert "x-request-id" not in response.headers


def test_a_bare_lf_in_a_header_ends_it_and_injects_nothing() -> None:
    """aiohttp's parser takes a bare LF as the end of a header line (RFC 9112 lets a
    recipient do so): the value stops there, and the 'header' after it is not relayed."""
    body = json.dumps(answer("ok")).encode()
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: a\nx-injected: b"
    raw += b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    with hostile_upstream(answering(raw)) as up, gateway_over({"alpha": up.url}) as url:
        with client(url) as c:
            response = c.post("/v1/chat/completions", json=chat("x"))
    assert response.status_code == 200 and received(response) == "ok"
    assert response.headers["x-request-id"] == "a"
    assert "x-injected" not in response.headers


def test_ascii_header_values_are_relayed() -> None:
    raw = json_response(answer("ok"), "x-request-id: req-42", "retry-after: 3", "server: x")
    with hostile_upstream(answering(raw)) as up, gateway_over({"alpha": up.url}) as url:
        with client(url) as c:
            response = c.post("/v1/chat/completions", json=chat("x"))
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["retry-after"] == "3"
    assert response.headers.get("server") != "x"


# --- big and compressed answers ------------------------------------------------------------


def test_the_upstream_is_asked_for_identity_encoding() -> None:
    with hostile_upstream(answering(json_response(answer("ok")))) as up:
        with gateway_over({"alpha": up.url}) as url, client(url) as c:
            c.post("/v1/chat/completions", json=chat("x"))
    assert up.requests[0].headers["accept-encoding"] == "identity"


def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(b"0" * inflated, compresslevel=9)


def test_a_compressed_answer_is_refused_not_inflated() -> None:
    """1 MB of gzip that would inflate to 1 GB: refused from its headers, unread."""
    bomb = gzip_bomb(1024**3)
    raw = response(200, bomb, "content-type: application/json", "content-encoding: gzip")
    with hostile_upstream(answering(raw)) as up, gateway_over({"alpha": up.url}) as url:
        expect_502(url)


def serve_bytes(size: int, *, chunked: bool):
    """A 200 JSON answer of `size` bytes, sized or chunked."""
    body = b'{"pad": "' + b"x" * (size - 11) + b'"}'

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
            writer.write(b"transfer-encoding: chunked\r\n\r\n")
            for start in range(0, len(body), 1 << 20):
                part = body[start : start + (1 << 20)]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(response(200, body, "content-type: application/json"))
        await writer.drain()
        return True

    return handler


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_a_non_streamed_answer_over_the_cap_is_a_502(chunked: bool) -> None:
    cap = 4 * 1024 * 1024
    with hostile_upstream(serve_bytes(cap + 1, chunked=chunked)) as up:
        with gateway_over({"alpha": up.url}, max_response_bytes=cap) as url, client(url) as c:
            response = c.post("/v1/chat/completions", json=chat("x"))
            assert response.status_code == 502
            error = response.json()["error"]
            assert error["code"] == "upstream_response_too_large"
            assert str(cap) in error["message"]
            up.handler = serve_bytes(cap, chunked=chunked)  # exactly the cap is fine
            assert len(c.post("/v1/chat/completions", json=chat("x")).content) == cap


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Memory must be freed by reference counting alone: a body kept alive by a cycle
    would only go at the next garbage collection."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.enable()


# The test's own client (httpx keeps a response in a cycle) and tracemalloc itself.
NOT_THE_GATEWAY = [
    tracemalloc.Filter(False, f"*/{package}/*") for package in ("httpx", "httpcore", "h11")
] + [tracemalloc.Filter(False, tracemalloc.__file__)]


def gateway_memory() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces(NOT_THE_GATEWAY)
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.parametrize("size,cap", [(24 << 20, 64 << 20), (24 << 20, 8 << 20)],
                         ids=["relayed", "over the cap"])  # fmt: skip
def test_a_big_answer_is_released_at_once(no_gc: None, size: int, cap: int) -> None:
    with hostile_upstream(answering(json_response(answer("small")))) as up:
        with gateway_over({"alpha": up.url}, max_response_bytes=cap) as url, client(url) as c:
            c.post("/v1/chat/completions", json=chat("warm-up"))
            up.handler = serve_bytes(size, chunked=True)
            before = gateway_memory()
            response = c.post("/v1/chat/completions", json=chat("x"))
            if size <= cap:
                assert response.status_code == 200 and len(response.content) == size
            else:
                assert response.json()["error"]["code"] == "upstream_response_too_large"
            del response
            time.sleep(0.2)  # the gateway's thread finishes the request
            after = gateway_memory()
    # A body kept alive would hold min(size, cap) bytes (at least 8 MiB); other growth with
    # the collector off (aiohttp's and asyncio's own objects) reached 2.1 MB under load.
    assert after - before < min(size, cap) // 2


# --- an upstream that goes quiet ----------------------------------------------------------------


def quiet_after(raw: bytes):
    """Sends `raw`, then nothing, without closing."""

    async def handler(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(30)
        return False

    return handler


def test_a_stream_that_goes_quiet_ends_with_a_timeout_event() -> None:
    first = b'data: {"choices": [{"delta": {"content": "tok0"}}]}\n\n'
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked"
    raw = head + b"\r\n\r\n" + b"%x\r\n%s\r\n" % (len(first), first)
    with (
        hostile_upstream(quiet_after(raw)) as up,
        gateway_over({"alpha": up.url}, timeout=0.5) as url,
    ):
        with client(url) as c:
            started = time.monotonic()
            response = c.post("/v1/chat/completions", json=chat("x", stream=True))
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    data = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert json.loads(data[0])["choices"][0]["delta"]["content"] == "tok0"
    assert json.loads(data[-1])["error"]["code"] == "upstream_timeout"
    assert 0.4 < elapsed < 3


def test_a_stream_whose_head_never_comes_is_504() -> None:
    with (
        hostile_upstream(quiet_after(b"")) as up,
        gateway_over({"alpha": up.url}, timeout=0.5) as url,
    ):
        with client(url) as c:
            started = time.monotonic()
            response = c.post("/v1/chat/completions", json=chat("x", stream=True))
            assert time.monotonic() - started < 3
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_headers_and_status_from_any_backend_are_checked_where_they_are_relayed() -> None:
    """The relay's own checks, whatever the backend (the Modal pool's answers too)."""
    headers = {"X-Request-Id": "a\rb", "Content-Type": "application/json",
               "retry-after": "1€", "server": "x"}  # fmt: skip
    assert relay_headers(headers) == {"content-type": "application/json"}
    for status in (200, 404, 599):
        assert check_status(status) == status
    for status in (0, 99, 101, 199, 600):
        with pytest.raises(UpstreamProtocolError):
            check_status(status)
