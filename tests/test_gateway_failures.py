"""Non-streaming cold starts and upstream failures, over real HTTP: every failure is a
clear 502/503/504 and no request can outlive the cold-start budget."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from gateway_fixtures import ALPHA, client, gateway_over, serve_asgi, standin, wait_until
from standin_vllm import free_port
from starlette.applications import Starlette

from mvgen.runtime.errors import relay_error_content

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]}


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return error


def test_cold_start_answers_503_with_retry_after_within_the_budget() -> None:
    """Legacy mode: vLLM refuses connections while it loads. The gateway keeps trying
    for cold_start_budget seconds, then says so; once loaded the same request works."""
    with standin(ready_after=3.0) as up:
        settings = {"cold_start_budget": 1.0, "retry_after": 7}
        with gateway_over({"alpha": up.url}, connect_wait=600, **settings) as url:
            with client(url) as c:
                started = time.monotonic()
                response = c.post("/v1/chat/completions", json=CHAT)
                elapsed = time.monotonic() - started
                error = error_of(response, 503, "model_not_ready")
                assert response.headers["retry-after"] == "7"
                assert "did not answer within 1 s" in error["message"]
                assert "retry in 7 s" in error["message"]
                assert 0.9 <= elapsed < 2.0
                assert up.wait_listening(10)
                assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert [r.body["model"] for r in up.completion_requests()] == [ALPHA]


def test_slow_answer_is_cut_at_the_budget_and_the_upstream_request_cancelled() -> None:
    with standin(response_delay=10.0) as up:
        with gateway_over({"alpha": up.url}, cold_start_budget=1.0) as url, client(url) as c:
            started = time.monotonic()
            error_of(c.post("/v1/chat/completions", json=CHAT), 503, "model_not_ready")
            assert time.monotonic() - started < 2.0
        [record] = up.completion_requests()
        wait_until(lambda: record.client_disconnected, 5, "upstream request not cancelled")


def test_client_disconnect_cancels_a_non_streaming_upstream_request() -> None:
    with standin(response_delay=10.0) as up, gateway_over({"alpha": up.url}) as url:
        with client(url, timeout=0.5) as c, pytest.raises(httpx.ReadTimeout):
            c.post("/v1/chat/completions", json=CHAT)
        wait_until(lambda: len(up.completion_requests()) == 1, 5, "request never arrived")
        [record] = up.completion_requests()
        wait_until(lambda: record.client_disconnected, 5, "upstream request not cancelled")
        assert not record.completed


def test_refused_connection_is_503_with_retry_after() -> None:
    with gateway_over({"alpha": f"http://127.0.0.1:{free_port()}"}) as url, client(url) as c:
        response = c.post("/v1/chat/completions", json=CHAT)
        error = error_of(response, 503, "upstream_unavailable")
        assert "not accepting connections" in error["message"]
        assert int(response.headers["retry-after"]) > 0
        stream = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        error_of(stream, 503, "upstream_unavailable")


@pytest.mark.parametrize(
    "upstream,message",
    [
        ("https", "TLS failed"),  # https:// to uvicorn speaking plain HTTP, as vLLM does
        ("http://does-not-exist.invalid:8000", "host name does not resolve"),  # RFC 2606
    ],
)
def test_a_wrong_scheme_or_host_is_502_at_once_not_a_wait_for_loading(
    upstream: str, message: str
) -> None:
    with serve_asgi(Starlette()) as plain:
        target = plain.replace("http://", "https://") if upstream == "https" else upstream
        with gateway_over({"alpha": target}, connect_wait=30.0) as url, client(url) as c:
            started = time.monotonic()
            response = c.post("/v1/chat/completions", json=CHAT)
            error = error_of(response, 502, "upstream_connection_error")
            assert message in error["message"]
            assert time.monotonic() - started < 10  # not retried for connect_wait (30 s)


@pytest.mark.parametrize(
    "mode,stream,code",
    [
        ("drop", False, "upstream_connection_error"),
        ("drop", True, "upstream_connection_error"),
        ("garbage", False, "bad_upstream_response"),
        ("garbage", True, "bad_upstream_response"),
        ("not_json", False, "bad_upstream_response"),  # a 200 whose body is not JSON
    ],
)
def test_broken_upstream_answers_are_502(mode: str, stream: bool, code: str) -> None:
    with standin(mode=mode) as up, gateway_over({"alpha": up.url}) as url, client(url) as c:
        response = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    error = error_of(response, 502, code)
    assert error["type"] == "server_error"


def test_upstream_that_hangs_is_504() -> None:
    with standin(mode="hang") as up, gateway_over({"alpha": up.url}, timeout=0.5) as url:
        with client(url) as c:
            started = time.monotonic()
            error = error_of(
                c.post("/v1/completions", json={"model": "alpha"}), 504, "upstream_timeout"
            )
            assert time.monotonic() - started < 3
    assert "did not answer in time" in error["message"]


def test_model_without_upstream_is_503_model_not_deployed() -> None:
    with standin() as up, gateway_over({"alpha": up.url}) as url, client(url) as c:
        error = error_of(
            c.post("/v1/completions", json={"model": "beta"}), 503, "model_not_deployed"
        )
        assert "org/beta-1b" in error["message"]
        stream = c.post("/v1/completions", json={"model": "beta", "stream": True})
        error_of(stream, 503, "model_not_deployed")
        assert up.requests == []


def test_non_json_upstream_error_is_wrapped_in_an_openai_error() -> None:
    wrapped = json.loads(relay_error_content(502, b"<html>Bad Gateway</html>"))
    assert wrapped["error"]["code"] == "upstream_error"
    assert (
        "HTTP 502" in wrapped["error"]["message"] and "Bad Gateway" in wrapped["error"]["message"]
    )
    original = b'{"error": {"message": "m", "type": "BadRequestError", "code": 400}}'
    assert relay_error_content(400, original) == original
