"""The gateway's JSON log line per request, over real HTTP on 127.0.0.1: the app
`mvgen gateway` runs (build_local_app) in front of the vLLM stand-in
(tests/standin_vllm.py, not vLLM). Also the usage tap on hand-made streams."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_fixtures import (
    ALPHA,
    API_KEY,
    KEY_ENV,
    MODELS,
    client,
    serve_asgi,
    standin,
    temporary_env,
    wait_until,
)
from standin_vllm import StandinServer

from mvgen.local_gateway import build_local_app
from mvgen.runtime.request_log import MARKER, format_line, parse_line
from mvgen.runtime.stream_usage import MAX_HELD_BYTES, UsageTap, ask_for_usage

pytestmark = pytest.mark.timeout(60)

SECRET = "PROMPT-SECRET-5309"
CHAT = {"model": "alpha", "messages": [{"role": "user", "content": SECRET}]}
FIELDS = {
    "method", "route", "model", "adapter", "gpu", "stream", "status", "ttft_ms", "tokens_out",
    "duration_ms", "cold_start", "error", "stream_error", "client_disconnected",
    "bytes_in", "bytes_out",
}  # fmt: skip


@contextlib.contextmanager
def local_gateway(upstream: StandinServer, **options: Any) -> Iterator[str]:
    """What `mvgen gateway --gpu h100 --upstream alpha=URL --upstream beta=URL` serves."""
    upstreams = {"alpha": upstream.url, "beta": upstream.url}
    with temporary_env(KEY_ENV, API_KEY):
        app = build_local_app(MODELS, upstreams, api_key_env=KEY_ENV, gpu="h100", **options)
    with serve_asgi(app) as url:
        yield url


class LogLines:
    """The gateway's log lines as they were written (message text), and their records."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog
        caplog.set_level(logging.INFO, logger="mvgen.gateway")

    def texts(self) -> list[str]:
        return [r.getMessage() for r in self._caplog.records if r.name == "mvgen.gateway"]

    def records(self) -> list[dict[str, Any]]:
        return [r for r in map(parse_line, self.texts()) if r is not None]

    def wait(self, count: int) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.records()) >= count, 5, f"fewer than {count} log lines")
        return self.records()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> LogLines:
    return LogLines(caplog)


def sse_payloads(text: str) -> list[Any]:
    data = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]", text
    return [json.loads(d) for d in data[:-1]]


def stream(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    with client(url) as c:
        return c.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)


# --- the line over HTTP --------------------------------------------------------------------


def test_non_streamed_answer(lines: LogLines) -> None:
    with standin(chunks=3, response_delay=0.2) as up, local_gateway(up) as url, client(url) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    [record] = lines.wait(1)
    assert set(record) == FIELDS
    assert record["method"] == "POST" and record["route"] == "/v1/chat/completions"
    assert record["model"] == "alpha" and record["gpu"] == "h100"
    assert record["stream"] is False and record["status"] == 200
    assert record["tokens_out"] == 3  # usage.completion_tokens of the answer
    # Non-streamed: the first token arrives with the whole answer.
    assert 200 <= record["ttft_ms"] <= record["duration_ms"]
    assert record["cold_start"] is False
    assert record["error"] is None and record["client_disconnected"] is False
    assert record["bytes_in"] > 0 and record["bytes_out"] > 0


def test_stream_without_client_usage_gets_none_but_is_counted(lines: LogLines) -> None:
    with standin(chunks=3, chunk_delay=0.1) as up, local_gateway(up) as url:
        response = stream(url, CHAT)
        [forwarded] = up.completion_requests()
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert all(p["choices"] for p in payloads), "the usage event reached the client"
    assert "usage" not in response.text
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads) == (
        "tok0 tok1 tok2 "
    )
    # The gateway asked vLLM for the usage event, and counted from it.
    assert forwarded.body["stream_options"] == {"include_usage": True}
    [record] = lines.wait(1)
    assert record["stream"] is True and record["tokens_out"] == 3
    # First chunk after one 0.1 s delay; five more events follow (3 tokens, usage, DONE).
    assert 100 <= record["ttft_ms"] <= record["duration_ms"] - 300
    assert record["bytes_out"] == len(response.content)


@pytest.mark.parametrize(
    "options",
    [{"include_usage": True}, {}, {"include_usage": True, "continuous_usage_stats": True}],
)
def test_stream_with_client_usage_keeps_it(lines: LogLines, options: dict[str, Any]) -> None:
    with standin(chunks=3) as up, local_gateway(up) as url:
        response = stream(url, {**CHAT, "stream_options": options})
        [forwarded] = up.completion_requests()
    assert forwarded.body["stream_options"] == options  # unchanged: the client asked
    final = sse_payloads(response.text)[-1]
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 3
    [record] = lines.wait(1)
    assert record["tokens_out"] == 3


@pytest.mark.parametrize(
    "options", [{"include_usage": False}, {"include_usage": None, "continuous_usage_stats": True}]
)
def test_client_that_declined_usage_does_not_get_it(lines: LogLines, options: dict) -> None:
    with standin(chunks=2) as up, local_gateway(up) as url:
        response = stream(url, {**CHAT, "stream_options": options})
        [forwarded] = up.completion_requests()
    assert forwarded.body["stream_options"] == {
        **options,
        "include_usage": True,
        "continuous_usage_stats": False,
    }
    assert all(p["choices"] for p in sse_payloads(response.text))
    [record] = lines.wait(1)
    assert record["tokens_out"] == 2


def test_streamed_completions_are_counted_too(lines: LogLines) -> None:
    with standin(chunks=4) as up, local_gateway(up) as url, client(url) as c:
        body = {"model": "beta", "prompt": SECRET, "stream": True}
        response = c.post("/v1/completions", json=body)
    assert all(p["choices"] for p in sse_payloads(response.text))
    [record] = lines.wait(1)
    assert record["route"] == "/v1/completions" and record["tokens_out"] == 4


@pytest.mark.parametrize("streamed", [False, True])
def test_upstream_error(lines: LogLines, streamed: bool) -> None:
    with standin(mode="error", error_status=400) as up, local_gateway(up) as url:
        with client(url) as c:
            response = c.post("/v1/chat/completions", json={**CHAT, "stream": streamed})
    assert response.status_code == 400
    [record] = lines.wait(1)
    assert record["status"] == 400 and record["error"] == "upstream_400"
    assert record["tokens_out"] is None and record["stream"] is streamed


def test_gateway_errors_carry_their_code(lines: LogLines) -> None:
    with standin() as up, local_gateway(up) as url:
        with client(url, key=f"wrong-{SECRET}") as c:
            c.get("/v1/models")
        with client(url) as c:
            c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-x"})
            c.post("/v1/chat/completions", content=b"{", headers={"content-type": "x"})
            c.get("/v1/models", params={"api_key": API_KEY})
    records = lines.wait(4)
    assert [(r["status"], r["error"]) for r in records] == [
        (401, "invalid_api_key"),
        (404, "model_not_found"),
        (400, "invalid_json"),
        (200, None),
    ]
    assert [r["model"] for r in records] == [None] * 4  # no model was resolved


def test_client_disconnect_mid_stream(lines: LogLines) -> None:
    with standin(chunks=100, chunk_delay=0.05) as up, local_gateway(up) as url:
        with client(url) as c, c.stream("POST", "/v1/chat/completions",
                                        json={**CHAT, "stream": True}) as r:  # fmt: skip
            lines_in = r.iter_lines()
            for _ in range(3):
                next(line for line in lines_in if line.startswith("data: "))
        [record] = lines.wait(1)
    assert record["client_disconnected"] is True
    assert record["error"] == "client_disconnected"
    assert record["status"] == 200 and record["tokens_out"] is None
    assert record["ttft_ms"] is not None


def test_waiting_for_a_starting_server_is_a_cold_start(lines: LogLines) -> None:
    # The stand-in refuses connections for 1 s, as vLLM does while it loads.
    with standin(ready_after=1.0) as up, local_gateway(up) as url, client(url) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert stream(url, CHAT).status_code == 200
    first, second, third = lines.wait(3)
    assert first["cold_start"] is True and first["ttft_ms"] >= 900
    assert second["cold_start"] is False and third["cold_start"] is False


def test_no_prompt_key_or_header_text_in_any_line(lines: LogLines) -> None:
    headers = {"X-Custom": SECRET, "Cookie": f"s={SECRET}"}
    with standin(chunks=2) as up, local_gateway(up) as url:
        with client(url) as c:
            c.post("/v1/chat/completions", json=CHAT, headers=headers)
            c.post("/v1/completions", json={"model": "beta", "prompt": SECRET}, headers=headers)
            c.post(f"/v1/{SECRET}", json=CHAT)
            c.request("PROPFIND", "/v1/models")  # a method outside the known set
        stream(url, CHAT, **headers)
        with client(url, key=SECRET) as c:
            c.get("/v1/models")
    records = lines.wait(6)
    assert len(records) == 6
    assert records[3]["method"] == "(other)" and records[2]["route"] == "(unknown)"
    text = "\n".join(lines.texts())
    for secret in (SECRET, API_KEY, ALPHA, "PROPFIND"):
        assert secret not in text


# --- the line's format -----------------------------------------------------------------


def test_format_and_parse_round_trip() -> None:
    record = {"model": "m", "ttft_ms": 12.5, "error": None, "note": 'a "quoted"\nline'}
    line = format_line(record)
    assert line.startswith(MARKER + " {") and "\n" not in line
    # What Modal's log output shows: the container's formatter puts time and logger first.
    assert parse_line(f"2026-03-01 10:00:00,123 mvgen.gateway {line}") == record
    assert parse_line(f"{line}   \r") == record
    assert parse_line(line[:-5]) is None  # cut short
    assert parse_line("INFO mvgen.request started") is None
    assert parse_line(f"{MARKER} [1, 2]") is None


# --- the usage tap -----------------------------------------------------------------------


def event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


CONTENT = [
    event({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": f"t{i}"}, "finish_reason": None}]})
    for i in range(3)
]  # fmt: skip
USAGE = event(
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
     "usage": {"prompt_tokens": 5, "total_tokens": 12, "completion_tokens": 7}}
)  # fmt: skip
DONE = b"data: [DONE]\n\n"
STREAM = b"".join([*CONTENT, USAGE, DONE])


def relay(tap: UsageTap, pieces: list[bytes]) -> bytes:
    """What StreamRelay._pump sends: plain endings pass, the rest goes through the tap."""
    sent = []
    for piece in pieces:
        if tap.held or not piece.endswith((b"]}\n\n", b"l}\n\n")):
            piece = tap.feed(piece)
        sent.append(piece)
    return b"".join(sent) + tap.flush()


@pytest.mark.parametrize("strip", [False, True])
def test_usage_event_is_found_however_the_stream_is_cut(strip: bool) -> None:
    expected = STREAM.replace(USAGE, b"") if strip else STREAM
    for cut in range(1, len(STREAM)):
        tap = UsageTap(strip)
        assert relay(tap, [STREAM[:cut], STREAM[cut:]]) == expected, cut
        assert tap.tokens == 7, cut
    tap = UsageTap(strip)
    assert relay(tap, [bytes([b]) for b in STREAM]) == expected  # a byte at a time
    assert tap.tokens == 7


def test_each_plain_content_event_skips_the_tap() -> None:
    assert all(e.endswith((b"]}\n\n", b"l}\n\n")) for e in CONTENT)
    assert not USAGE.endswith((b"]}\n\n", b"l}\n\n"))


def test_other_framings_and_payloads() -> None:
    crlf = STREAM.replace(b"\n\n", b"\r\n\r\n")
    crlf_usage = USAGE.replace(b"\n\n", b"\r\n\r\n")
    tap = UsageTap(True)
    assert relay(tap, [crlf[:50], crlf[50:]]) == crlf.replace(crlf_usage, b"")
    assert tap.tokens == 7
    # A usage-shaped text inside content is not the usage event (JSON escapes its quotes).
    quoted = event({"choices": [{"delta": {"content": '"choices":[],"usage":{}'}}]})
    tap = UsageTap(True)
    assert relay(tap, [quoted, DONE]) == quoted + DONE and tap.tokens is None
    error = b'data: {"error": {"message": "boom", "code": 500}}\n\n'
    tap = UsageTap(True)
    assert relay(tap, [CONTENT[0], error, DONE]) == CONTENT[0] + error + DONE
    assert tap.upstream_error and tap.tokens is None


def test_an_unfinished_event_is_held_only_so_far() -> None:
    tap = UsageTap(True)
    big = b"data: " + b"x" * (MAX_HELD_BYTES + 10)
    assert tap.feed(CONTENT[0] + big[:100]) == CONTENT[0]
    assert tap.feed(big[100:]) == big  # too long to hold: relayed as it comes
    assert tap.held == b"" and tap.feed(b"\n\n" + DONE) == b"\n\n" + DONE


@pytest.mark.parametrize(
    "body,asked,sent",
    [
        ({}, True, {"include_usage": True}),
        ({"stream_options": None}, True, {"include_usage": True}),
        ({"stream_options": {}}, False, {}),
        ({"stream_options": {"include_usage": True}}, False, {"include_usage": True}),
        (
            {"stream_options": {"include_usage": False, "continuous_usage_stats": True}},
            True,
            {"include_usage": True, "continuous_usage_stats": False},
        ),
        ({"stream_options": "yes"}, False, "yes"),  # vLLM refuses it; left alone
    ],
)
def test_ask_for_usage(body: dict, asked: bool, sent: Any) -> None:
    clients = body.get("stream_options")
    before = json.dumps(clients)
    assert ask_for_usage(body) is asked
    assert body["stream_options"] == sent
    assert json.dumps(clients) == before  # a copy is changed, never the client's object
