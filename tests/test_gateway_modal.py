"""gpu mode without Modal: the gateway's ModalBackend calls a stand-in for the Modal
class whose methods delegate to a real PoolServer in front of the vLLM stand-in, and
every value crossing that boundary is pickled the way Modal would."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from gateway_fixtures import ALPHA, BETA, client, make_app, serve_asgi, standin
from standin_vllm import StandinServer, free_port

from mvgen.runtime.backends import ModalBackend
from mvgen.runtime.models import ServedModel
from mvgen.runtime.vllm_process import PoolServer

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]}
PLAIN = (int, str, bytes, bool, float, type(None))


def assert_plain(value: Any) -> None:
    """Only the plain data the pool's wire format promises."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert isinstance(value, PLAIN), type(value)


def over_the_wire(value: Any) -> Any:
    assert_plain(value)
    return pickle.loads(pickle.dumps(value))


class FakeModalClass:
    """Stands in for a modal.Cls: `FakeModalClass(model=key)` gives an object with
    `.request.remote.aio(...)` and `.stream.remote_gen.aio(...)`, like Modal's.

    `start_delay` models a cold start: the first call starts the "container", and every
    call waits until it is up, even if an earlier caller gave up (as on Modal)."""

    def __init__(self, vllm_port: int, *, start_delay: float = 0.0, fail: bool = False) -> None:
        self.pool = PoolServer(vllm_port)
        self.start_delay = start_delay
        self.fail = fail
        self.instances: list[str] = []
        self.calls: list[tuple[str, str, str]] = []
        self.wire_items: list[Any] = []
        self._ready_at: float | None = None

    def __call__(self, *, model: str) -> Any:
        self.instances.append(model)
        return SimpleNamespace(
            request=SimpleNamespace(remote=SimpleNamespace(aio=self._request_for(model))),
            stream=SimpleNamespace(remote_gen=SimpleNamespace(aio=self._stream_for(model))),
        )

    async def _container(self) -> None:
        if self._ready_at is None:
            self._ready_at = time.monotonic() + self.start_delay
        await asyncio.sleep(max(0.0, self._ready_at - time.monotonic()))
        if self.fail:
            raise RuntimeError("container crashed")

    def _request_for(self, model: str) -> Any:
        async def request(path: str, body: dict) -> dict:
            self.calls.append(("request", model, path))
            path, body = over_the_wire([path, body])
            await self._container()
            result = over_the_wire(await self.pool.request(path, body))
            self.wire_items.append(result)
            return result

        return request

    def _stream_for(self, model: str) -> Any:
        async def stream(path: str, body: dict) -> AsyncIterator[Any]:
            self.calls.append(("stream", model, path))
            path, body = over_the_wire([path, body])
            await self._container()
            async for item in self.pool.stream(path, body):
                item = over_the_wire(item)
                self.wire_items.append(item)
                yield item

        return stream


@pytest.fixture
def upstream() -> Iterator[StandinServer]:
    with standin(chunks=3) as server:
        yield server


def gateway(cls: Any, **settings: Any) -> Any:
    return serve_asgi(make_app(ModalBackend(cls), **settings))


def test_request_goes_through_the_models_pool(upstream: StandinServer) -> None:
    fake = FakeModalClass(upstream.port)
    with gateway(fake) as url, client(url) as c:
        for name in ("alpha", ALPHA.upper()):
            response = c.post("/v1/chat/completions", json={**CHAT, "model": name})
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    assert fake.instances == ["alpha"]  # one pool handle per model, reused
    assert fake.calls == [("request", "alpha", "/v1/chat/completions")] * 2
    assert [r.body["model"] for r in upstream.completion_requests()] == [ALPHA, ALPHA]
    assert all(set(item) == {"status", "headers", "content"} for item in fake.wire_items)


def test_stream_goes_through_the_pool_generator(upstream: StandinServer) -> None:
    fake = FakeModalClass(upstream.port)
    body = {"model": "beta", "prompt": "Say", "echo": True, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    with gateway(fake) as url, client(url) as c:
        response = c.post("/v1/completions", json=body)
    assert response.status_code == 200
    data = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    texts = [json.loads(d)["choices"][0]["text"] for d in data[:-2]]
    assert "".join(texts) == "Saytok0 tok1 tok2 "
    assert json.loads(data[-2])["usage"]["completion_tokens"] == 3
    assert data[-1] == "[DONE]"
    assert fake.calls == [("stream", "beta", "/v1/completions")]
    assert fake.wire_items[0]["status"] == 200
    assert all(isinstance(item, bytes) for item in fake.wire_items[1:])
    assert upstream.completion_requests()[0].body == {**body, "model": BETA}


def test_upstream_errors_come_back_through_the_pool(upstream: StandinServer) -> None:
    upstream.config.mode = "error"
    upstream.config.error_status = 422
    with gateway(FakeModalClass(upstream.port)) as url, client(url) as c:
        for stream in (False, True):
            response = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == 422
            assert response.json()["error"]["message"] == "Stand-in error as configured."


def test_pool_failure_mid_stream_becomes_an_sse_error_event(upstream: StandinServer) -> None:
    upstream.config.mode = "drop_mid_stream"
    fake = FakeModalClass(upstream.port)
    with gateway(fake) as url, client(url) as c:
        response = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    last = [line for line in response.text.split("\n") if line.startswith("data: ")][-1]
    assert json.loads(last[6:])["error"]["code"] == "upstream_connection_error"
    assert "error" in fake.wire_items[-1]  # sent as {"error": {...}}, not raised


def test_crashing_pool_is_a_502(upstream: StandinServer) -> None:
    with gateway(FakeModalClass(upstream.port, fail=True)) as url, client(url) as c:
        for stream in (False, True):
            response = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == 502
            error = response.json()["error"]
            assert error["code"] == "upstream_pool_error"
            assert "RuntimeError" in error["message"]


def test_cold_pool_answers_503_then_serves_once_started(upstream: StandinServer) -> None:
    fake = FakeModalClass(upstream.port, start_delay=2.0)
    with gateway(fake, cold_start_budget=0.5, retry_after=2) as url, client(url) as c:
        started = time.monotonic()
        response = c.post("/v1/chat/completions", json=CHAT)
        assert time.monotonic() - started < 1.5
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_not_ready"
        assert response.headers["retry-after"] == "2"
        time.sleep(2.0)  # the "container" kept starting after the request gave up
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_cold_pool_stream_is_kept_alive_until_the_first_chunk(upstream: StandinServer) -> None:
    fake = FakeModalClass(upstream.port, start_delay=1.5)
    settings = {"stream_commit_after": 0.2, "keepalive_interval": 0.2}
    with gateway(fake, **settings) as url, client(url) as c:
        response = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    lines = response.text.split("\n")
    assert lines[0] == ": waiting for the model to start"
    assert lines.count(": keep-alive") >= 3
    assert lines[-3] == "data: [DONE]"


def test_models_without_a_pool_are_not_deployed(upstream: StandinServer) -> None:
    fake = FakeModalClass(upstream.port)
    with gateway({"alpha": fake}) as url, client(url) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        response = c.post("/v1/completions", json={"model": "beta", "prompt": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_deployed"
    assert fake.instances == ["alpha"]


def test_health_never_touches_a_pool(upstream: StandinServer) -> None:
    fake = FakeModalClass(upstream.port)
    with gateway(fake) as url, client(url, key=None) as c:
        assert c.get("/health").status_code == 200
    assert fake.instances == [] and fake.calls == []


def test_backend_ready_asks_the_pool_for_vllm_health(upstream: StandinServer) -> None:
    fake = FakeModalClass(upstream.port)
    model = ServedModel("alpha", ALPHA)
    assert asyncio.run(ModalBackend(fake).ready(model)) is True
    assert fake.calls == [("request", "alpha", "/health")]
    dead = FakeModalClass(free_port())
    assert asyncio.run(ModalBackend(dead).ready(model)) is False


@pytest.mark.parametrize("path", ["/invocations", "/tokenize", "/metrics", "/v1/models", "/sleep"])
def test_pool_forwards_only_the_completion_routes(upstream: StandinServer, path: str) -> None:
    async def call() -> tuple[dict, list]:
        pool = PoolServer(upstream.port)
        try:
            result = await pool.request(path, {"model": ALPHA})
            items = [item async for item in pool.stream(path, {"model": ALPHA})]
            return result, items
        finally:
            await pool.aclose()

    result, items = asyncio.run(call())
    assert result["status"] == 404
    assert items[0]["status"] == 404
    assert upstream.requests == []


def test_pool_with_dead_vllm_answers_503_as_data() -> None:
    async def call() -> tuple[dict, list]:
        pool = PoolServer(free_port())
        try:
            result = await pool.request("/v1/completions", {"model": ALPHA})
            items = [item async for item in pool.stream("/v1/completions", {"model": ALPHA})]
            return result, items
        finally:
            await pool.aclose()

    result, items = asyncio.run(call())
    assert result["status"] == 503 and "retry-after" in result["headers"]
    assert json.loads(result["content"])["error"]["code"] == "upstream_unavailable"
    assert items[0]["status"] == 503 and json.loads(items[1])["error"]["message"]
    for value in (result, *items):
        assert_plain(value)
