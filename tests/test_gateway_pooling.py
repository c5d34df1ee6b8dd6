"""The gateway's pooling routes: /v1/embeddings, /v1/rerank and /v1/score, over HTTP (legacy
mode and `mvgen gateway`: HttpBackend), through Modal's client (gpu mode: ModalBackend ->
PoolServer, against the Modal stand-in) and through the `mvgen gateway` command. Upstream is
the vLLM stand-in (tests/standin_vllm.py, NOT vLLM), which answers these routes with fake
vectors of the right shapes and, like vLLM 0.12, a route the model lacks with HTTP 200 and
an error object."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_fixtures import API_KEY, client, gateway_over, make_app, serve_asgi
from standin_vllm import StandinConfig, StandinServer
from test_gateway_cli import gateway_env, mvgen_gateway
from test_gateway_modal import modal_pools, pool_class

from mvgen.runtime.modal_backend import ModalBackend
from mvgen.runtime.models import models_from_literal
from mvgen.runtime.vllm_process import PoolServer

pytestmark = pytest.mark.timeout(60)

CHAT = "org/Chat-7B"
EMBED = "BAAI/bge-m3"
RERANK = "BAAI/bge-reranker-v2-m3"
MODELS = models_from_literal(
    {
        "chat": {"served_name": CHAT, "aliases": ["chat"]},
        "bge-m3": {"served_name": EMBED, "aliases": ["bge-m3"], "kind": "embed"},
        "reranker": {"served_name": RERANK, "aliases": ["reranker"], "kind": "rerank"},
    }
)
KINDS = {EMBED: "embed", RERANK: "rerank"}
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Bananas are rich in potassium.",
    "Paris is the capital of France.",
    "The Pacific is the largest ocean.",
]


@contextlib.contextmanager
def stack(kinds: dict[str, str] = KINDS, **standin: Any) -> Iterator[tuple[str, StandinServer]]:
    """The stand-in serving all three models (each of the kind `kinds` says) behind a gateway
    whose table says chat, embed and rerank; yields the gateway's URL and the stand-in."""
    config = StandinConfig(served_names=[CHAT, EMBED, RERANK], kinds=kinds, **standin)
    with StandinServer(config) as server:
        upstreams = {key: server.url for key in ("chat", "bge-m3", "reranker")}
        with gateway_over(upstreams, models=MODELS) as url:
            yield url, server


def error_of(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


# --- what reaches vLLM, and what comes back -------------------------------------------------


def test_embeddings_by_any_name_reach_vllm_with_the_served_name() -> None:
    with stack() as (url, server), client(url) as c:
        for name in ("bge-m3", "baai/BGE-M3", EMBED):
            response = c.post("/v1/embeddings", json={"model": name, "input": ["a b", "c"]})
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 64
    assert [(r.path, r.body["model"]) for r in server.pooling_requests()] == [
        ("/v1/embeddings", EMBED)
    ] * 3
    assert server.pooling_requests()[0].body["input"] == ["a b", "c"]  # the body as sent


@pytest.mark.parametrize(
    ("route", "upstream", "body"),
    [
        ("/v1/rerank", "/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 2}),
        ("/v1/score", "/score", {"text_1": QUERY, "text_2": DOCUMENTS}),
    ],
)
@pytest.mark.parametrize("model", ["reranker", "bge-m3"])
def test_rerank_and_score_go_to_vllms_own_paths(route, upstream, body, model) -> None:
    with stack() as (url, server), client(url) as c:
        response = c.post(route, json={"model": model, **body})
    assert response.status_code == 200, response.text
    (seen,) = server.pooling_requests()
    assert seen.path == upstream  # /rerank and /score: vLLM's, without a deprecation warning
    assert seen.body == {**body, "model": EMBED if model == "bge-m3" else RERANK}
    answer = response.json()
    if route == "/v1/rerank":
        assert [r["index"] for r in answer["results"]] == [1, 2]  # top_n honoured upstream
    else:
        assert len(answer["data"]) == 3


def test_base64_embeddings_are_relayed() -> None:
    with stack() as (url, _), client(url) as c:
        body = {"model": "bge-m3", "input": "one text", "encoding_format": "base64"}
        response = c.post("/v1/embeddings", json=body)
    assert response.status_code == 200
    packed = base64.b64decode(response.json()["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 64


# --- refused by the gateway, before any GPU wakes ----------------------------------------------


@pytest.mark.parametrize(
    ("route", "model", "kind", "served"),
    [
        ("/v1/chat/completions", "bge-m3", "embed", "/v1/embeddings, /v1/rerank and /v1/score"),
        ("/v1/completions", "reranker", "rerank", "/v1/rerank and /v1/score"),
        ("/v1/embeddings", "reranker", "rerank", "/v1/rerank and /v1/score"),
        ("/v1/embeddings", "chat", "chat", "/v1/chat/completions and /v1/completions"),
        ("/v1/rerank", "chat", "chat", "/v1/chat/completions and /v1/completions"),
        ("/v1/score", "chat", "chat", "/v1/chat/completions and /v1/completions"),
    ],
)
def test_a_route_the_kind_lacks_is_a_400_naming_kind_and_routes(route, model, kind, served):
    body = {"model": model, "input": "x", "messages": [], "prompt": "x", "query": "q"}
    with stack() as (url, server), client(url) as c:
        response = c.post(route, json={**body, "documents": ["d"], "stream": True})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "unsupported_route"
    assert f"(kind: {kind}): it serves {served}, not {route}." in error["message"]
    assert server.requests == []


@pytest.mark.parametrize(
    ("route", "model", "vllm_says"),
    [
        ("/v1/embeddings", "bge-m3", "The model does not support Embeddings API"),
        ("/v1/chat/completions", "chat", "The model does not support Chat Completions API"),
        ("/v1/rerank", "reranker", "The model does not support Rerank (Score) API"),
    ],
)
def test_vllms_200_with_an_error_object_is_relayed_as_its_error(route, model, vllm_says):
    """When the model behind the gateway is not the kind its table says (a misdeclared kind
    that validation could not see), vLLM 0.12 answers 200 and an error object: never a
    success for the client."""
    kinds = {EMBED: "chat", CHAT: "embed", RERANK: "chat"}  # every one the wrong way round
    body = {"model": model, "input": ["x"], "messages": [{"role": "user", "content": "hi"}]}
    with stack(kinds) as (url, server), client(url) as c:
        response = c.post(route, json={**body, "query": "q", "documents": ["d"]})
    assert response.status_code == 400
    assert error_of(response)["message"] == vllm_says
    assert len(server.requests) == 1


def test_bytes_encoding_is_refused_with_the_formats_relayed() -> None:
    with stack() as (url, server), client(url) as c:
        body = {"model": "bge-m3", "input": "x", "encoding_format": "bytes"}
        response = c.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "unsupported_encoding_format"
    assert "'float' (the default) or 'base64'" in error["message"]
    assert server.requests == []


@pytest.mark.parametrize("route", ["/v1/embeddings", "/v1/rerank", "/v1/score"])
def test_pooling_routes_do_not_stream(route: str) -> None:
    with stack() as (url, server), client(url) as c:
        response = c.post(route, json={"model": "bge-m3", "input": "x", "stream": True})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_stream"
    assert server.requests == []


@pytest.mark.parametrize("route", ["/v1/embeddings", "/v1/rerank", "/v1/score"])
def test_pooling_routes_need_the_key_and_a_known_model(route: str) -> None:
    with stack() as (url, server):
        with client(url, key=None) as anonymous:
            assert anonymous.post(route, json={"model": "bge-m3"}).status_code == 401
        with client(url, key="wrong-key") as wrong:
            assert wrong.post(route, json={"model": "bge-m3"}).status_code == 401
        with client(url) as c:
            missing = c.post(route, json={"model": "nope", "input": "x"})
            assert missing.status_code == 404 and error_of(missing)["code"] == "model_not_found"
            assert c.get(route).status_code == 405
    assert server.requests == []


@pytest.mark.parametrize(
    "path", ["/rerank", "/score", "/v2/rerank", "/pooling", "/classify", "/v1/pooling"]
)
def test_vllms_other_pooling_routes_stay_closed(path: str) -> None:
    """vLLM 0.12's --api-key leaves every path outside /v1 open; the gateway has none."""
    with stack() as (url, server), client(url) as c:
        response = c.post(path, json={"model": "bge-m3", "query": "q", "documents": ["d"]})
    assert response.status_code == 404
    assert server.requests == []


def test_models_list_each_kind() -> None:
    with stack() as (url, _), client(url) as c:
        cards = c.get("/v1/models").json()["data"]
    assert {card["id"]: card["kind"] for card in cards} == {
        CHAT: "chat",
        EMBED: "embed",
        RERANK: "rerank",
    }


# --- gpu mode: through Modal's client to a pool ----------------------------------------------


def test_gpu_mode_pools_forward_the_pooling_paths() -> None:
    config = StandinConfig(served_names=[CHAT, EMBED, RERANK], kinds=KINDS)
    with StandinServer(config) as vllm, modal_pools(vllm) as (modal, modal_client):
        backend = ModalBackend(pool_class(modal_client), client=modal_client, poll_interval=0.2)
        with serve_asgi(make_app(backend, models=MODELS)) as url, client(url) as c:
            embedded = c.post("/v1/embeddings", json={"model": "bge-m3", "input": ["a", "b"]})
            ranked = c.post(
                "/v1/rerank", json={"model": "reranker", "query": QUERY, "documents": DOCUMENTS}
            )
            scored = c.post("/v1/score", json={"model": "reranker", "text_1": "a", "text_2": "a"})
            wrong = c.post("/v1/embeddings", json={"model": "reranker", "input": "x"})
    assert embedded.status_code == 200 and len(embedded.json()["data"]) == 2
    assert ranked.status_code == 200 and ranked.json()["results"][0]["index"] == 1
    assert scored.status_code == 200 and scored.json()["data"][0]["score"] == pytest.approx(1.0)
    assert wrong.status_code == 400
    calls = [(c.method, c.params["model"], c.args[0]) for c in modal.spawned()]
    assert calls == [
        ("request", "bge-m3", "/v1/embeddings"),
        ("request", "reranker", "/rerank"),
        ("request", "reranker", "/score"),
    ]
    assert [r.path for r in vllm.pooling_requests()] == ["/v1/embeddings", "/rerank", "/score"]


@pytest.mark.parametrize("path", ["/pooling", "/classify", "/v2/rerank", "/v1/rerank", "/v1/score"])
def test_a_pool_forwards_no_other_pooling_path(path: str) -> None:
    async def call() -> dict[str, Any]:
        pool = PoolServer(vllm.port)
        try:
            return await pool.request(path, {"model": EMBED, "query": "q", "documents": ["d"]})
        finally:
            await pool.aclose()

    with StandinServer(StandinConfig(served_names=[EMBED], kinds=KINDS)) as vllm:
        result = asyncio.run(call())
    assert result["status"] == 404
    assert vllm.requests == []


# --- `mvgen gateway`, the command ------------------------------------------------------------

POOLING_CONFIG = """\
mode: gpu
workspace: acme
gpus:
  l4: {type: L4}
models:
  bge-m3:
    hf_id: BAAI/bge-m3
    kind: embed
    max_model_len: 8192
    architecture: {params_b: 0.568, layers: 24, kv_heads: 16, head_dim: 64, max_context: 8192,
                   encoder_only: true}
"""


def test_mvgen_gateway_serves_a_pooling_model_by_its_kind(tmp_path) -> None:
    config = tmp_path / "deployments.yaml"
    config.write_text(POOLING_CONFIG)
    served = StandinConfig(served_names=[EMBED], kinds=KINDS)
    with StandinServer(served) as upstream:
        env = gateway_env(API_KEY=API_KEY)
        with mvgen_gateway(config, f"--upstream=bge-m3={upstream.url}/v1", env=env) as url:
            with client(url) as c:
                embedded = c.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"})
                chat = c.post("/v1/chat/completions", json={"model": "bge-m3", "messages": []})
    assert embedded.status_code == 200 and len(embedded.json()["data"]) == 1
    assert chat.status_code == 400 and error_of(chat)["code"] == "unsupported_route"
    assert [r.path for r in upstream.requests] == ["/v1/embeddings"]
