"""SSE streaming through the gateway over real HTTP: relayed chunk by chunk, cancelled
when the client leaves, kept alive across a cold start, and 256 streams at once."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import openai
import pytest
from gateway_fixtures import ALPHA, API_KEY, BETA, auth, client, gateway_over, standin, wait_until

from mvgen.runtime.request_log import parse_line

pytestmark = pytest.mark.timeout(90)


def chat(stream: bool = True, **extra: object) -> dict:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    return {**body, **extra}


def sse_events(text: str) -> tuple[list[str], list[str]]:
    """(data payloads, comment lines) of an SSE body."""
    data, comments = [], []
    for line in text.split("\n"):
        if line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line.startswith(":"):
            comments.append(line)
    return data, comments


def contents(payloads: list[str]) -> str:
    """The streamed text of chat or completion chunks, in order."""
    out = []
    for payload in payloads:
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload)["choices"]:
            out.append(choice.get("text") or choice.get("delta", {}).get("content") or "")
    return "".join(out)


def test_stream_is_relayed_unchanged_with_final_usage_chunk() -> None:
    with standin(chunks=4) as up, gateway_over({"alpha": up.url}) as url, client(url) as c:
        body = chat(stream_options={"include_usage": True})
        response = c.post("/v1/chat/completions", json=body)
        direct = httpx.post(f"{up.url}/v1/chat/completions", json={**body, "model": ALPHA})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    data, comments = sse_events(response.text)
    assert comments == []
    assert contents(data) == "tok0 tok1 tok2 tok3 "
    assert data[-1] == "[DONE]"
    usage = json.loads(data[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    # Byte for byte what the upstream sent, apart from the `created` clock.
    strip = [json.loads(d) | {"created": 0} for d in data[:-1]]
    assert strip == [json.loads(d) | {"created": 0} for d in sse_events(direct.text)[0][:-1]]


def test_first_chunk_reaches_the_client_before_the_upstream_finishes() -> None:
    with standin(chunks=6, chunk_delay=0.3) as up, gateway_over({"alpha": up.url}) as url:
        with client(url) as c, c.stream("POST", "/v1/chat/completions", json=chat()) as r:
            started = time.monotonic()
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            first_at = time.monotonic() - started
            [record] = up.completion_requests()
            upstream_done_when_first_seen = record.completed
            chunks_sent_then = record.chunks_sent
            rest = [line for line in lines if line.startswith("data: ")]
    assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    assert not upstream_done_when_first_seen
    assert chunks_sent_then < 8
    assert first_at < 1.0  # six more chunks take 1.8 s upstream
    assert rest[-1] == "data: [DONE]" and len(rest) == 7


def test_client_disconnect_cancels_the_upstream_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mvgen.gateway")
    with standin(chunks=100, chunk_delay=0.05) as up, gateway_over({"alpha": up.url}) as url:
        with client(url) as c, c.stream("POST", "/v1/chat/completions", json=chat()) as r:
            lines = r.iter_lines()
            for _ in range(3):
                next(line for line in lines if line.startswith("data: "))
        # Leaving the `with` closed the connection mid-stream.
        [record] = up.completion_requests()
        wait_until(lambda: record.client_disconnected, 5, "upstream never saw the disconnect")
        assert not record.completed
        assert record.chunks_sent < 100

    def logged() -> list[dict]:
        records = [parse_line(r.getMessage()) for r in caplog.records]
        return [r for r in records if r and r["route"] == "/v1/chat/completions"]

    wait_until(lambda: len(logged()) == 1, 5, "no log line for the cancelled stream")
    assert logged()[0]["client_disconnected"] is True
    assert logged()[0]["error"] == "client_disconnected"


def test_openai_sdk_streams_chat_and_completions_with_usage() -> None:
    with standin(chunks=3) as up, gateway_over({"alpha": up.url, "beta": up.url}) as url:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=15)
        chunks = list(
            api.chat.completions.create(
                model="alpha",
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "tok0 tok1 tok2 "
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        completion = api.completions.create(model="beta", prompt="Say", echo=True, stream=True)
        assert "".join(c.choices[0].text for c in completion) == "Saytok0 tok1 tok2 "
        assert [r.body["model"] for r in up.completion_requests()] == [ALPHA, BETA]


def test_fast_upstream_error_keeps_its_status_on_a_stream() -> None:
    with standin(mode="error", error_status=400) as up, gateway_over({"alpha": up.url}) as url:
        with client(url) as c:
            response = c.post("/v1/chat/completions", json=chat())
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Stand-in error as configured."


def test_stream_waits_through_a_cold_start_with_keepalives() -> None:
    """The upstream refuses connections for 3 s: headers and SSE comments go out at
    once, so a proxy with a response deadline (Modal's 150 s) never fires."""
    # The upstream is ready 3 s after it starts, so no earlier than `ready_at`; what
    # starting the gateway takes (slow on a busy machine) comes out of those 3 s.
    ready_at = time.monotonic() + 3.0
    with standin(chunks=3, ready_after=3.0) as up:
        settings = {"stream_commit_after": 0.2, "keepalive_interval": 0.3}
        with gateway_over({"alpha": up.url}, connect_wait=30, **settings) as url, client(url) as c:
            started = time.monotonic()
            with c.stream("POST", "/v1/chat/completions", json=chat()) as r:
                headers_at = time.monotonic()
                status = r.status_code
                text = r.read().decode()
            ended = time.monotonic()
    assert status == 200
    assert headers_at - started < 1.0 and headers_at < ready_at <= ended
    data, comments = sse_events(text)
    assert comments[0] == ": waiting for the model to start"
    assert comments.count(": keep-alive") >= 3
    assert contents(data) == "tok0 tok1 tok2 " and data[-1] == "[DONE]"


def test_openai_sdk_ignores_keepalive_comments() -> None:
    with standin(chunks=2, ready_after=1.0) as up:
        settings = {"stream_commit_after": 0.1, "keepalive_interval": 0.1}
        with gateway_over({"alpha": up.url}, connect_wait=30, **settings) as url:
            api = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=15)
            stream = api.chat.completions.create(
                model="alpha", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tok0 tok1 "


def test_stream_that_never_starts_ends_with_an_error_event() -> None:
    with standin(ready_after=60.0) as up:
        settings = {"stream_commit_after": 0.1, "keepalive_interval": 0.2,
                    "stream_start_timeout": 1.0}  # fmt: skip
        with gateway_over({"alpha": up.url}, connect_wait=60, **settings) as url:
            with client(url) as c:
                started = time.monotonic()
                response = c.post("/v1/chat/completions", json=chat())
                elapsed = time.monotonic() - started
            api = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=15)
            with pytest.raises(openai.APIError, match="did not start answering within 1 s"):
                list(api.chat.completions.create(model="alpha", messages=[], stream=True))
    assert response.status_code == 200
    assert 0.9 < elapsed < 5
    data, comments = sse_events(response.text)
    assert comments and json.loads(data[-1])["error"]["code"] == "model_start_timeout"
    assert "[DONE]" not in data


def test_upstream_error_after_commit_arrives_as_an_error_event() -> None:
    with standin(ready_after=1.0, mode="error", error_status=400) as up:
        with gateway_over({"alpha": up.url}, connect_wait=30, stream_commit_after=0.1) as url:
            with client(url) as c:
                response = c.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    data, _ = sse_events(response.text)
    assert json.loads(data[-1])["error"]["message"] == "Stand-in error as configured."


def test_connection_dropped_mid_stream_ends_with_an_error_event() -> None:
    with standin(chunks=6, mode="drop_mid_stream") as up, gateway_over({"alpha": up.url}) as url:
        with client(url) as c:
            response = c.post("/v1/chat/completions", json=chat())
        [record] = up.completion_requests()
    assert response.status_code == 200
    data, _ = sse_events(response.text)
    assert record.chunks_sent == 4  # role chunk, tok0..tok2, then the reset
    assert len(data) == record.chunks_sent + 1
    assert contents(data[:-1]) == "tok0 tok1 tok2 "
    error = json.loads(data[-1])["error"]
    assert error["code"] in ("upstream_connection_error", "bad_upstream_response")
    assert "[DONE]" not in data


def test_unknown_model_on_a_stream_is_a_plain_404() -> None:
    with standin() as up, gateway_over({"alpha": up.url}) as url, client(url) as c:
        response = c.post("/v1/chat/completions", json=chat(model="nope"))
        assert response.status_code == 404
        assert BETA in response.json()["error"]["message"]
        assert up.requests == []


async def _one_stream(c: httpx.AsyncClient, index: int) -> list[str]:
    body = {"model": "alpha", "prompt": f"request {index}", "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    async with c.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        text = (await response.aread()).decode()
    return sse_events(text)[0]


def test_256_concurrent_streams_lose_and_reorder_nothing() -> None:
    chunks = 20
    with standin(chunks=chunks, chunk_delay=0.005) as up, gateway_over({"alpha": up.url}) as url:

        async def run() -> list[list[str]]:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            async with httpx.AsyncClient(
                base_url=url, headers=auth(), timeout=60, limits=limits, trust_env=False
            ) as c:
                return await asyncio.gather(*(_one_stream(c, i) for i in range(256)))

        started = time.monotonic()
        results = asyncio.run(run())
        elapsed = time.monotonic() - started
        assert len(up.completion_requests()) == 256
    expected = "".join(f"tok{i} " for i in range(chunks))
    for data in results:
        assert contents(data) == expected
        assert json.loads(data[-2])["usage"]["completion_tokens"] == chunks
        assert data[-1] == "[DONE]"
    assert elapsed < 60
