"""gpu mode without Modal's cloud: the gateway's ModalBackend calls its pools through the
real modal client, whose server is a recording stand-in for Modal's server side
(tests/modal_standin.py). The stand-in's "containers" run what the generated pool class
runs (a PoolServer in front of the vLLM stand-in, streams sent into the gateway's queue),
and FunctionCallCancel cancels their task as Modal's container runtime does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import modal
import pytest
from gateway_fixtures import ALPHA, BETA, client, make_app, serve_asgi, standin, wait_until
from modal_proto import api_pb2
from modal_standin import ModalStandin, RunInput, standin_client
from standin_vllm import StandinServer, free_port

from mvgen.runtime.modal_backend import (
    MAX_ITEM_BYTES,
    MAX_PUT_BYTES,
    STREAM_END,
    ModalBackend,
    put_batches,
    response_from_wire,
    send_stream,
    waited_for_start,
)
from mvgen.runtime.models import ServedModel
from mvgen.runtime.request_log import parse_line
from mvgen.runtime.vllm_process import PoolServer

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]}
PLAIN = (int, str, bytes, bool, float, type(None))


def pool_methods(vllm_port: int, container_client: modal.Client) -> tuple[RunInput, dict]:
    """What the generated pool class runs (templates/gpu_app.py.j2): one PoolServer per
    model; `request` answers, `stream` sends into the gateway's queue."""
    pools: dict[str, PoolServer] = {}

    async def run_input(params: dict[str, str], method: str, args: tuple, kwargs: dict) -> Any:
        pool = pools.setdefault(params["model"], PoolServer(vllm_port))
        if method == "request":
            return await pool.request(*args, **kwargs)
        assert method == "stream", method
        path, body, queue_id = args
        return await send_stream(pool.stream(path, body), queue_id, client=container_client)

    return run_input, pools


@contextlib.contextmanager
def modal_pools(vllm: StandinServer, **options: Any) -> Iterator[tuple[ModalStandin, Any]]:
    """The Modal stand-in with one app `standin-app` and its class `Vllm`; yields it and
    the gateway's modal client."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ModalStandin(None, **options))
        gateway_client = stack.enter_context(standin_client(server))
        container_client = stack.enter_context(standin_client(server))
        server.run_input, pools = pool_methods(vllm.port, container_client)
        try:
            yield server, gateway_client
        finally:
            for pool in pools.values():
                server.call_soon(pool.aclose())


def pool_class(modal_client: Any) -> Any:
    return modal.Cls.from_name("standin-app", "Vllm", client=modal_client)


@contextlib.contextmanager
def modal_gateway(
    vllm: StandinServer,
    *,
    pools: dict | None = None,
    standin_options: dict | None = None,
    **settings: Any,
) -> Iterator[tuple[str, ModalStandin]]:
    """A gateway whose ModalBackend reaches `Vllm` through the stand-in; yields its URL."""
    with modal_pools(vllm, **(standin_options or {})) as (server, modal_client):
        cls = pool_class(modal_client)
        backend = ModalBackend(
            {key: cls for key in pools} if pools else cls, client=modal_client, poll_interval=0.2
        )
        with serve_asgi(make_app(backend, **settings)) as url:
            yield url, server


@pytest.fixture
def upstream() -> Iterator[StandinServer]:
    with standin(chunks=3) as server:
        yield server


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


# --- requests and streams through the pools -----------------------------------------------


def test_request_is_spawned_on_the_models_pool(upstream: StandinServer) -> None:
    with modal_gateway(upstream) as (url, server), client(url) as c:
        for name in ("alpha", ALPHA.upper()):
            response = c.post("/v1/chat/completions", json={**CHAT, "model": name})
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    # One pool handle per model, reused: parameters are bound once.
    assert len(server.requests("FunctionBindParams")) == 1
    calls = server.spawned()
    assert [(c.method, c.params, c.args[0]) for c in calls] == [
        ("request", {"model": "alpha"}, "/v1/chat/completions")
    ] * 2
    assert {c.invocation_type for c in calls} == {api_pb2.FUNCTION_CALL_INVOCATION_TYPE_ASYNC}
    assert {server.outcome(c) for c in calls} == {"SUCCESS"}
    assert [r.body["model"] for r in upstream.completion_requests()] == [ALPHA, ALPHA]
    assert "FunctionCallCancel" not in server.names()


def test_stream_comes_through_the_requests_queue(upstream: StandinServer) -> None:
    body = {"model": "beta", "prompt": "Say", "echo": True, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    with modal_gateway(upstream) as (url, server), client(url) as c:
        response = c.post("/v1/completions", json=body)
    assert response.status_code == 200
    data = sse_data(response.text)
    texts = [json.loads(d)["choices"][0]["text"] for d in data[:-2]]
    assert "".join(texts) == "Saytok0 tok1 tok2 "
    assert json.loads(data[-2])["usage"]["completion_tokens"] == 3
    assert data[-1] == "[DONE]"
    (call,) = server.spawned()
    created = server.requests("QueueGetOrCreate")
    assert len(created) == 1
    (queue_id,) = {r.queue_id for r in server.requests("QueuePut")}
    assert (call.method, call.params, call.args) == (
        "stream",
        {"model": "beta"},
        ("/v1/completions", {**body, "model": BETA}, queue_id),
    )
    assert server.outcome(call) == "SUCCESS"
    assert {r.queue_id for r in server.requests("QueueGet")} == {queue_id}
    assert "FunctionCallCancel" not in server.names()
    assert upstream.completion_requests()[0].body == {**body, "model": BETA}


def test_upstream_errors_come_back_through_the_pool(upstream: StandinServer) -> None:
    upstream.config.mode = "error"
    upstream.config.error_status = 422
    with modal_gateway(upstream) as (url, _), client(url) as c:
        for stream in (False, True):
            response = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == 422
            assert response.json()["error"]["message"] == "Stand-in error as configured."


def test_pool_failure_mid_stream_becomes_an_sse_error_event(upstream: StandinServer) -> None:
    upstream.config.mode = "drop_mid_stream"
    with modal_gateway(upstream) as (url, server), client(url) as c:
        response = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    last = sse_data(response.text)[-1]
    assert json.loads(last)["error"]["code"] == "upstream_connection_error"
    assert "FunctionCallCancel" not in server.names()  # the pool said its last word


def test_crashing_pool_is_a_502(upstream: StandinServer) -> None:
    with modal_gateway(upstream, standin_options={"crash": True}) as (url, server):
        with client(url) as c:
            for stream in (False, True):
                response = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
                assert response.status_code == 502
                error = response.json()["error"]
                assert error["code"] == "upstream_pool_error"
                assert "InternalFailure" in error["message"]
    assert upstream.requests == []


def test_cold_pool_answers_503_then_serves_once_started(upstream: StandinServer) -> None:
    options = {"start_delay": 3.0}
    settings = {"cold_start_budget": 0.5, "retry_after": 2}
    with modal_gateway(upstream, standin_options=options, **settings) as (url, server):
        with client(url) as c:
            started = time.monotonic()
            response = c.post("/v1/chat/completions", json=CHAT)
            assert time.monotonic() - started < 1.5
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "model_not_ready"
            assert response.headers["retry-after"] == "2"
            # the "container" kept starting after the request gave up
            wait_until(server.container_started, 10, "the pool's container never started")
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    first, retry = server.spawned()
    assert server.cancelled_call_ids() == [first.call_id]
    assert not first.started and server.outcome(first) == "TERMINATED"
    assert server.outcome(retry) == "SUCCESS"
    assert len(upstream.completion_requests()) == 1  # the cancelled call never ran


def test_cold_pool_stream_is_kept_alive_until_the_first_chunk(upstream: StandinServer) -> None:
    settings = {"stream_commit_after": 0.2, "keepalive_interval": 0.2}
    with modal_gateway(upstream, standin_options={"start_delay": 1.5}, **settings) as (url, _):
        with client(url) as c:
            response = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    lines = response.text.split("\n")
    assert lines[0] == ": waiting for the model to start"
    assert lines.count(": keep-alive") >= 3
    assert lines[-3] == "data: [DONE]"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_request_that_waited_for_the_container_is_a_cold_start(
    upstream: StandinServer, streamed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The stand-in's first input starts the "container": its PoolServer (whose age the
    # pool sends) is made 2 s after the gateway spawned the call.
    caplog.set_level(logging.INFO, logger="mvgen.gateway")
    with modal_gateway(upstream, standin_options={"start_delay": 2.0}) as (url, _):
        with client(url) as c:
            for _ in range(2):
                response = c.post("/v1/chat/completions", json={**CHAT, "stream": streamed})
                assert response.status_code == 200

    def records() -> list[dict]:
        return [r for r in (parse_line(m.getMessage()) for m in caplog.records) if r]

    wait_until(lambda: len(records()) == 2, 5, "log lines missing")
    cold, warm = records()
    assert (cold["cold_start"], warm["cold_start"]) == (True, False)
    assert cold["ttft_ms"] >= 2000 and warm["ttft_ms"] < 2000
    assert cold["tokens_out"] == warm["tokens_out"] == 3


def test_pool_answers_say_how_long_the_pool_has_been_ready(upstream: StandinServer) -> None:
    async def call() -> tuple[dict, dict]:
        pool = PoolServer(upstream.port)
        await asyncio.sleep(0.3)
        try:
            result = await pool.request("/v1/completions", {"model": ALPHA, "prompt": "x"})
            items = pool.stream("/v1/completions", {"model": ALPHA, "stream": True})
            start = await anext(items)
            await items.aclose()
            return result, start
        finally:
            await pool.aclose()

    result, start = asyncio.run(call())
    assert 0.3 <= result["ready_age"] <= start["ready_age"] < 30
    assert waited_for_start(5.0, 1.0) is True  # spawned 5 s ago, ready for 1 s
    assert waited_for_start(5.0, 4.5) is False  # within the margin for the trip back
    assert waited_for_start(0.2, 100.0) is False
    assert waited_for_start(5.0, None) is None  # a pool that does not say (FailedPool)
    assert response_from_wire({**result, "ready_age": 0.5}, waited=3.0).cold_start is True
    assert response_from_wire(result).cold_start is None


def test_models_without_a_pool_are_not_deployed(upstream: StandinServer) -> None:
    with modal_gateway(upstream, pools={"alpha"}) as (url, server), client(url) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        response = c.post("/v1/completions", json={"model": "beta", "prompt": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_deployed"
    assert [c.params for c in server.spawned()] == [{"model": "alpha"}]


def test_health_never_touches_a_pool(upstream: StandinServer) -> None:
    with modal_gateway(upstream) as (url, server), client(url, key=None) as c:
        assert c.get("/health").status_code == 200
    assert server.rpcs == []


# --- cancellation ---------------------------------------------------------------------------


def read_first_event_and_leave(url: str, body: dict) -> None:
    with client(url) as c, c.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                return  # closes the connection with the stream still running


def test_client_disconnect_mid_stream_cancels_the_call_and_vllms_request() -> None:
    with standin(chunks=200, chunk_delay=0.05) as vllm, modal_gateway(vllm) as (url, server):
        read_first_event_and_leave(url, {**CHAT, "stream": True})
        (call,) = server.spawned("stream")
        wait_until(lambda: server.cancelled_call_ids() == [call.call_id], 10, "no cancel")
        wait_until(lambda: server.outcome(call) == "TERMINATED", 10, "call still running")
        (request,) = vllm.completion_requests()
        wait_until(lambda: request.client_disconnected, 10, "vLLM's request still open")
        assert not request.completed and request.chunks_sent < 100


def disconnected(vllm: StandinServer, index: int) -> bool:
    requests = vllm.completion_requests()
    return len(requests) > index and requests[index].client_disconnected


def test_client_disconnect_while_waiting_cancels_a_non_streamed_request() -> None:
    with standin() as vllm, modal_gateway(vllm) as (url, server):
        with client(url) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200  # warm
        vllm.config.response_delay = 30
        with client(url, timeout=1.5) as c, pytest.raises(httpx.ReadTimeout):
            c.post("/v1/chat/completions", json=CHAT)
        wait_until(lambda: len(server.cancelled_call_ids()) == 1, 10, "no cancel")
        warm, call = server.spawned()
        assert server.cancelled_call_ids() == [call.call_id]
        wait_until(lambda: disconnected(vllm, 1), 10, "vLLM's request still open")


def test_budget_end_cancels_before_the_503_and_the_retry_runs_alone() -> None:
    with standin() as vllm:
        with modal_gateway(vllm, cold_start_budget=1.5) as (url, server), client(url) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200  # warm
            vllm.config.response_delay = 30
            response = c.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 503
            warm, first = server.spawned()
            # Cancelled before the 503 was sent, so a retry never overlaps it for long.
            assert server.cancelled_call_ids() == [first.call_id]
            wait_until(lambda: disconnected(vllm, 1), 10, "vLLM's request still open")
            vllm.config.response_delay = 0
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    _, cancelled, retried = vllm.completion_requests()
    assert cancelled.client_disconnected and not cancelled.completed
    assert retried.completed
    assert server.cancelled_call_ids() == [first.call_id]
    assert [server.outcome(c) for c in server.spawned()] == ["SUCCESS", "TERMINATED", "SUCCESS"]


def test_budget_end_of_a_cold_stream_cancels_the_queued_call(upstream: StandinServer) -> None:
    settings = {"stream_commit_after": 0.2, "keepalive_interval": 0.2, "stream_start_timeout": 0.6}
    with modal_gateway(upstream, standin_options={"start_delay": 30}, **settings) as (url, server):
        with client(url) as c:
            response = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert json.loads(sse_data(response.text)[-1])["error"]["code"] == "model_start_timeout"
        (call,) = server.spawned()
        assert server.cancelled_call_ids() == [call.call_id]
        wait_until(lambda: server.outcome(call) == "TERMINATED", 10, "call still queued")
        assert not call.started
    assert upstream.requests == []


def test_completed_requests_send_no_cancel(upstream: StandinServer) -> None:
    with modal_gateway(upstream) as (url, server), client(url) as c:
        for stream in (False, True, False, True):
            response = c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert response.status_code == 200
    assert len(server.spawned()) == 4
    assert {server.outcome(c) for c in server.spawned()} == {"SUCCESS"}
    assert "FunctionCallCancel" not in server.names()


def test_shutdown_cancels_calls_in_flight() -> None:
    model = ServedModel("alpha", ALPHA)
    with standin(response_delay=30) as vllm, modal_pools(vllm) as (server, modal_client):
        backend = ModalBackend(pool_class(modal_client), client=modal_client)

        async def shut_down_while_waiting() -> None:
            body = {"model": ALPHA, "prompt": "x"}
            waiting = asyncio.ensure_future(backend.request(model, "/v1/completions", body))
            while not server.first("FunctionGetOutputs"):  # the gateway holds the call
                await asyncio.sleep(0.01)
            await backend.aclose()
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)

        asyncio.run(shut_down_while_waiting())
        (call,) = server.spawned()
        assert server.cancelled_call_ids() == [call.call_id]
        wait_until(lambda: disconnected(vllm, 0), 10, "vLLM's request still open")


class _SlowSpawn:
    """A pool method whose spawn takes a while (a slow FunctionMap); records cancels."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def aio(self, *args: Any) -> Any:
        await asyncio.sleep(0.3)
        return _Call(self)


class _Call:
    object_id = "fc-slow"

    def __init__(self, spawn: _SlowSpawn) -> None:
        self.cancel = self
        self._spawn = spawn

    async def aio(self) -> None:
        self._spawn.cancelled.append(self.object_id)


def test_a_call_cancelled_while_being_spawned_is_cancelled_once_it_exists() -> None:
    spawn = _SlowSpawn()
    pool = type("Pool", (), {"request": type("Method", (), {"spawn": spawn})()})

    async def leave_during_spawn() -> None:
        backend = ModalBackend(lambda model: pool)
        task = asyncio.ensure_future(backend.request(ServedModel("a", "a"), "/v1/completions", {}))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.4)

    asyncio.run(leave_during_spawn())
    assert spawn.cancelled == ["fc-slow"]


# --- the pool side ------------------------------------------------------------------------


def run_pool_task_and_cancel(vllm: StandinServer, method: str, body: dict) -> None:
    """Run a pool method as the container would, and cancel its task as Modal does
    when the gateway cancels the call, once vLLM has the request."""

    async def scenario(modal_client: modal.Client) -> None:
        pool = PoolServer(vllm.port)
        async with modal.Queue.ephemeral(client=modal_client) as queue:
            if method == "stream":
                work = send_stream(
                    pool.stream("/v1/completions", body), queue.object_id, client=modal_client
                )
            else:
                work = pool.request("/v1/completions", body)
            task = asyncio.ensure_future(work)
            while not vllm.completion_requests() or (
                method == "stream" and not vllm.completion_requests()[0].chunks_sent
            ):
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await pool.aclose()

    with ModalStandin(None) as server, standin_client(server) as modal_client:
        asyncio.run(scenario(modal_client))


def test_cancelling_the_pool_stream_closes_vllms_connection() -> None:
    with standin(chunks=200, chunk_delay=0.05) as vllm:
        body = {"model": ALPHA, "prompt": "x", "stream": True}
        run_pool_task_and_cancel(vllm, "stream", body)
        (request,) = vllm.completion_requests()
        wait_until(lambda: request.client_disconnected, 5, "vLLM's request still open")
        assert not request.completed


def test_cancelling_the_pool_request_closes_vllms_connection() -> None:
    with standin(response_delay=30) as vllm:
        run_pool_task_and_cancel(vllm, "request", {"model": ALPHA, "prompt": "x"})
        (request,) = vllm.completion_requests()
        wait_until(lambda: request.client_disconnected, 5, "vLLM's request still open")
        assert not request.completed


def test_pool_sends_every_item_then_the_end(upstream: StandinServer) -> None:
    async def scenario(modal_client: modal.Client) -> list[Any]:
        pool = PoolServer(upstream.port)
        body = {"model": ALPHA, "prompt": "x", "stream": True}
        async with modal.Queue.ephemeral(client=modal_client) as queue:
            await send_stream(
                pool.stream("/v1/completions", body), queue.object_id, client=modal_client
            )
            items = await queue.get_many.aio(1000, block=False)
        await pool.aclose()
        return items

    with ModalStandin(None) as server, standin_client(server) as modal_client:
        items = asyncio.run(scenario(modal_client))
    assert items[0]["status"] == 200 and items[-1] is STREAM_END
    text = b"".join(items[1:-1]).decode()
    assert text.count("data: ") == 4 and text.endswith("data: [DONE]\n\n")


def test_put_batches_join_chunks_and_respect_the_queue_limits() -> None:
    start, end = {"status": 200, "headers": {}}, STREAM_END
    assert put_batches([start, b"a", b"b", b"c", end]) == [[start, b"abc", end]]
    big = [b"x" * 100_000] * 30  # 3 MB of chunks
    puts = put_batches([start, *big, end])
    assert b"".join(i for p in puts for i in p if isinstance(i, bytes)) == b"".join(big)
    for put in puts:
        chunks = [i for i in put if isinstance(i, bytes)]
        assert all(len(i) <= MAX_ITEM_BYTES for i in chunks)
        assert sum(map(len, chunks)) <= MAX_PUT_BYTES
    assert puts[0][0] == start and puts[-1][-1] is end
    error = {"error": {"status": 502, "code": "x", "message": "y", "retry_after": None}}
    assert put_batches([b"a", error, b"b", end]) == [[b"a", error, b"b", end]]


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
