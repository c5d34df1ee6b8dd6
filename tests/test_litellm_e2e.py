"""The real LiteLLM proxy (litellm[proxy] from uv.lock) with the generated config.

One proxy per module (it takes several seconds to start), started through `mvgen proxy`
with a config from `mvgen render --api-base GPU=URL`: the seed's deployments.yaml
(tests/data, 3 models x 5 GPUs) plus a litellm_order for two models, its endpoints
pointed at local stand-ins:

    l40s, h200  gateway (the `mvgen gateway` app) -> recording vLLM stand-in
    b200        the same, but the stand-in takes 1.5 s to answer: a cold start in small
    h100        a closed port: connection refused
    a100        a stand-in that drops every completion (a crashed server)

so the failover groups can be watched: gemma-3-12b starts on l40s (cheapest);
gemma-3-27b tries h100 then h200; qwen3-vl-30b tries h100, a100, then l40s.
Two pooling models on l40s, an embedder (kind: embed) and a reranker (kind: rerank), are
reached through the proxy's /v1/embeddings and /v1/rerank.
The client is the `openai` SDK, as for any user of the proxy (httpx for rerank, which the
SDK has no call for).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from conftest import SEED_CONFIG, run_cli
from gateway_fixtures import serve_asgi, temporary_env
from standin_vllm import StandinConfig, StandinServer, free_port

from mvgen.config import load_plan
from mvgen.local_gateway import build_local_app, check_upstreams, served_models
from mvgen.runtime.backends import HttpBackend
from mvgen.runtime.gateway import GatewaySettings, create_app

pytestmark = pytest.mark.timeout(180)

VLLM_KEY = "e2e-vllm-key-0123456789"  # what the gateways check and the proxy sends
MASTER_KEY = "sk-e2e-master-0123456789"
CHAT = [{"role": "user", "content": "Say hello"}]
PROXY_START_LIMIT = 120.0  # seconds; it takes about 10 here
ORDERS = {"gemma-3-27b": ["h100", "h200"], "qwen3-vl-30b": ["h100", "a100"]}
ADAPTER = "gemma-notes"  # a LoRA adapter of gemma-3-12b
# Pooling models, served on l40s only; `architecture:` stands in for a lock entry.
POOLING_MODELS = {
    "bge-m3": {"hf_id": "BAAI/bge-m3", "kind": "embed"},
    "bge-reranker": {"hf_id": "BAAI/bge-reranker-v2-m3", "kind": "rerank"},
}
ENCODER = {"params_b": 0.568, "layers": 24, "kv_heads": 16, "head_dim": 64}
ENCODER |= {"max_context": 8192, "encoder_only": True}
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Bananas are rich in potassium.",
    "Paris is the capital of France.",
    "The Pacific is the largest ocean.",
]
SLOW_START = 1.5  # seconds before b200's stand-in answers
KEEPALIVE = 0.2  # its gateway's SSE keep-alive interval while it waits
# 1x1 PNG
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4"
    "z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


class Recording:
    """ASGI wrapper noting every request a gateway receives, /health included."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


@dataclass
class Stack:
    proxy_url: str
    start_seconds: float
    served: dict[str, str]  # model key -> served name
    standins: dict[str, StandinServer]  # live GPUs, behind gateways
    broken: dict[str, StandinServer]  # GPUs whose server drops every completion
    gateways: dict[str, Recording]
    log: Path
    num_retries: int
    seen_at_start: list[str] = field(default_factory=list)

    def client(self, key: str | None = MASTER_KEY) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.proxy_url}/v1",
            api_key=key or "none",
            max_retries=0,
            timeout=60,
            http_client=httpx.Client(trust_env=False, timeout=60),
        )

    def backend_traffic(self) -> list[str]:
        seen = [f"{g} gateway {p}" for g, rec in self.gateways.items() for p in rec.paths]
        for gpu, server in {**self.standins, **self.broken}.items():
            seen += [f"{gpu} server {r.method} {r.path}" for r in server.requests]
        return seen

    def last(self, gpu: str) -> dict[str, Any]:
        requests = self.standins[gpu].completion_requests()
        assert requests, f"the {gpu} stand-in received nothing"
        return requests[-1].body

    def counts(self) -> dict[str, int]:
        servers = {**self.standins, **self.broken}
        return {gpu: len(s.completion_requests()) for gpu, s in servers.items()}

    def last_pooling(self, gpu: str) -> tuple[str, dict[str, Any]]:
        requests = self.standins[gpu].pooling_requests()
        assert requests, f"the {gpu} stand-in received no pooling request"
        return requests[-1].path, requests[-1].body


def test_config(tmp: Path) -> Path:
    """The seed's deployments.yaml with a litellm_order for two models, and a LoRA
    adapter on gemma-3-12b (on the Volume: nothing to read from the Hub)."""
    data = yaml.safe_load(SEED_CONFIG.read_text())
    for model, order in ORDERS.items():
        data["models"][model]["litellm_order"] = order
    data["models"]["gemma-3-12b"]["adapters"] = {ADAPTER: {"path": "adapters/notes", "rank": 8}}
    for key, spec in POOLING_MODELS.items():
        data["models"][key] = {**spec, "gpus": ["l40s"], "max_model_len": 8192}
        data["models"][key]["architecture"] = ENCODER
    path = tmp / "deployments.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


test_config.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def gateway_app(config: Path, upstreams: dict[str, str], keepalive: float | None) -> Any:
    """The `mvgen gateway` app; with `keepalive`, one that sends SSE comments sooner, so a
    slow start shows within the test."""
    models = served_models(load_plan(config))
    if keepalive is None:
        return build_local_app(models, upstreams)
    settings = GatewaySettings(stream_commit_after=keepalive, keepalive_interval=keepalive)
    return create_app(models, HttpBackend(check_upstreams(models, upstreams)), settings=settings)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections are refused, and nobody else gets it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def proxy_process(config: Path, env_file: Path, port: int, log: Path) -> Iterator[subprocess.Popen]:
    """`mvgen proxy`, which checks the variables and then execs litellm."""
    mvgen = Path(sys.executable).parent / "mvgen"
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_API_KEY", "LITELLM_MASTER_KEY")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    argv = [str(mvgen), "proxy", "--litellm-config", str(config), "--env-file", str(env_file)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # its own session: only what it started
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def wait_live(url: str, process: subprocess.Popen, log: Path) -> float:
    """Seconds until /health/liveliness answers 200; fails with the log on timeout."""
    started = time.monotonic()
    with httpx.Client(trust_env=False, timeout=2) as http:
        while time.monotonic() - started < PROXY_START_LIMIT:
            if process.poll() is not None:
                pytest.fail(f"the proxy exited ({process.returncode}):\n{log.read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/health/liveliness").status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
    pytest.fail(f"the proxy did not start in {PROXY_START_LIMIT} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("litellm-e2e")
    config = test_config(tmp)
    plan = load_plan(config)
    served = {m.key: m.served_name for m in plan.models}
    names = [*served.values(), ADAPTER]  # vLLM answers to its adapters' names too
    kinds = {m.served_name: m.kind for m in plan.models}
    with contextlib.ExitStack() as stack_:
        standins, gateways, bases = {}, {}, {}
        with temporary_env("API_KEY", VLLM_KEY):  # the gateway reads it at creation
            for gpu, slow in (("l40s", False), ("h200", False), ("b200", True)):
                delay = SLOW_START if slow else 0.0
                standin = StandinConfig(served_names=names, response_delay=delay, kinds=kinds)
                server = stack_.enter_context(StandinServer(standin))
                mine = [k for k in served if gpu == "l40s" or k not in POOLING_MODELS]
                upstreams = {key: f"{server.url}/v1" for key in mine}
                app = gateway_app(config, upstreams, KEEPALIVE if slow else None)
                gateways[gpu] = Recording(app)
                standins[gpu] = server
                bases[gpu] = stack_.enter_context(serve_asgi(gateways[gpu]))
        drop = StandinConfig(served_names=names, mode="drop")
        broken = {"a100": stack_.enter_context(StandinServer(drop))}
        bases["a100"] = broken["a100"].url
        bases["h100"] = f"http://127.0.0.1:{stack_.enter_context(closed_port())}"

        out = tmp / "out"
        api_bases = [arg for gpu, url in bases.items() for arg in ("--api-base", f"{gpu}={url}")]
        result = run_cli("render", "--config", str(config), "--output-dir", str(out), *api_bases)
        assert result.exit_code == 0, result.output
        env_file = tmp / ".env"
        env_file.write_text(f"VLLM_API_KEY={VLLM_KEY}\nLITELLM_MASTER_KEY={MASTER_KEY}\n")

        port, log = free_port(), tmp / "proxy.log"
        process = stack_.enter_context(
            proxy_process(out / "litellm" / "config.yaml", env_file, port, log)
        )
        url = f"http://127.0.0.1:{port}"
        seconds = wait_live(url, process, log)
        print(f"\nLiteLLM proxy started in {seconds:.1f} s", file=sys.stderr)
        rendered = yaml.safe_load((out / "litellm" / "config.yaml").read_text())
        retries = rendered["router_settings"]["num_retries"]
        result = Stack(url, seconds, served, standins, broken, gateways, log, retries)
        result.seen_at_start = result.backend_traffic()
        yield result


# --- start, health and auth -----------------------------------------------------------------


def test_start_and_liveliness_never_call_a_backend(stack: Stack) -> None:
    assert stack.seen_at_start == []
    with httpx.Client(trust_env=False, timeout=10) as http:
        for path in ("/health/liveliness", "/health/readiness") * 3:
            assert http.get(f"{stack.proxy_url}{path}").status_code == 200
    assert stack.backend_traffic() == stack.seen_at_start
    assert stack.start_seconds < PROXY_START_LIMIT


# LiteLLM 1.108.7 turns "no key" into 401 only when the `prisma` package is importable: its
# auth error handler imports it (proxy/db/exception_handler.py), and litellm[proxy] does not
# install it, so pyproject.toml adds it to the environment `make proxy` runs in.
def test_request_without_a_key_gets_401(stack: Stack) -> None:
    before = stack.counts()
    body = {"model": "gemma-3-12b", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(trust_env=False, timeout=30) as http:
        response = http.post(f"{stack.proxy_url}/v1/chat/completions", json=body)
    assert stack.counts() == before
    assert response.status_code == 401


def test_request_with_a_wrong_key_is_refused(stack: Stack) -> None:
    before = stack.counts()
    with pytest.raises(openai.APIStatusError) as refused:
        stack.client("sk-not-the-master-key").chat.completions.create(
            model="gemma-3-12b", messages=CHAT
        )
    assert stack.counts() == before
    # Without a database LiteLLM cannot look up other keys, and says so with a 400.
    assert refused.value.status_code == 400 and "No connected db" in str(refused.value)


# --- what the stand-in receives -------------------------------------------------------------


def test_chat_reaches_the_route_gpu_with_the_served_name(stack: Stack) -> None:
    answer = stack.client().chat.completions.create(
        model="gemma-3-27b-h200", messages=CHAT, max_tokens=3, temperature=0.5, top_p=0.9
    )
    assert answer.choices[0].message.content == "tok0 tok1 tok2 "
    body = stack.last("h200")
    assert body["model"] == stack.served["gemma-3-27b"]
    assert body["messages"] == CHAT
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (3, 0.5, 0.9)


def test_an_adapter_reaches_its_base_models_gpu_under_its_own_name(stack: Stack) -> None:
    """The group `gemma-notes` goes where gemma-3-12b's goes first (l40s, cheapest); the
    route `gemma-notes-h200` to h200; vLLM gets the adapter's name either way."""
    for model, gpu in ((ADAPTER, "l40s"), (f"{ADAPTER}-h200", "h200")):
        answer = stack.client().chat.completions.create(model=model, messages=CHAT, max_tokens=2)
        assert answer.choices[0].message.content == "tok0 tok1 "
        assert stack.last(gpu)["model"] == ADAPTER
    listed = [m.id for m in stack.client().models.list()]
    assert ADAPTER in listed and f"{ADAPTER}-b200" in listed


def test_completions_with_echo(stack: Stack) -> None:
    answer = stack.client().completions.create(
        model="gemma-3-12b-l40s", prompt="Once upon", max_tokens=2, echo=True
    )
    assert answer.choices[0].text == "Once upon" + "tok0 tok1 "
    body = stack.last("l40s")
    assert body["model"] == stack.served["gemma-3-12b"]
    assert body["prompt"] == "Once upon" and body["echo"] is True


def test_streaming_chat(stack: Stack) -> None:
    stream = stack.client().chat.completions.create(
        model="qwen3-vl-30b-l40s",
        messages=CHAT,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    body = stack.last("l40s")
    assert body["model"] == stack.served["qwen3-vl-30b"] and body["stream"] is True


@pytest.mark.parametrize(
    "structured",
    [
        {"choice": ["Positive", "Negative"]},
        {"regex": r"\d{3}-[a-z]+"},
        {"json": {"type": "object", "properties": {"age": {"type": "integer"}}}},
        {"grammar": 'root ::= "yes" | "no"'},
    ],
    ids=["choice", "regex", "json", "grammar"],
)
def test_structured_outputs_arrive_intact(stack: Stack, structured: dict[str, Any]) -> None:
    stack.client().chat.completions.create(
        model="gemma-3-12b-l40s", messages=CHAT, extra_body={"structured_outputs": structured}
    )
    assert stack.last("l40s")["structured_outputs"] == structured


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name", "age"],
                },
            },
        },
    ],
    ids=["json_object", "json_schema"],
)
def test_response_format_arrives_intact(stack: Stack, response_format: dict[str, Any]) -> None:
    stack.client().chat.completions.create(
        model="gemma-3-27b-h200", messages=CHAT, response_format=response_format
    )
    assert stack.last("h200")["response_format"] == response_format


def test_image_part_arrives_intact(stack: Stack) -> None:
    content = [
        {"type": "text", "text": "What colour is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    stack.client().chat.completions.create(
        model="qwen3-vl-30b-l40s", messages=[{"role": "user", "content": content}]
    )
    body = stack.last("l40s")
    assert body["model"] == stack.served["qwen3-vl-30b"]
    assert body["messages"] == [{"role": "user", "content": content}]


def test_stream_survives_a_slow_start(stack: Stack) -> None:
    """While vLLM starts, the gateway sends SSE comments; LiteLLM must pass over them."""
    started = time.monotonic()
    stream = stack.client().chat.completions.create(
        model="gemma-3-12b-b200", messages=CHAT, max_tokens=3, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tok0 tok1 tok2 "
    assert time.monotonic() - started >= SLOW_START
    assert stack.last("b200")["model"] == stack.served["gemma-3-12b"]


# --- pooling models ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bge-m3-l40s", "bge-m3"])  # the route, then the group
def test_embeddings_through_the_openai_sdk(stack: Stack, name: str) -> None:
    answer = stack.client().embeddings.create(model=name, input=["first text", "second"])
    assert [d.index for d in answer.data] == [0, 1]
    vectors = [d.embedding for d in answer.data]
    assert {len(v) for v in vectors} == {64}  # the stand-in's width
    assert all(math.isfinite(x) for v in vectors for x in v)
    path, body = stack.last_pooling("l40s")
    assert path == "/v1/embeddings" and body["model"] == stack.served["bge-m3"]
    assert body["input"] == ["first text", "second"]
    # The SDK asks for base64 by default and decodes it; vLLM 0.12 supports base64.
    assert body["encoding_format"] == "base64"
    assert not LITELLM_PARAMS & set(body), body


def test_rerank_through_the_proxy(stack: Stack) -> None:
    """LiteLLM's /v1/rerank (hosted_vllm posts to <api_base>/rerank, so /v1/rerank on the
    gateway, which sends vLLM's /rerank). The openai SDK has no rerank call: plain httpx."""
    request = {"model": "bge-reranker-l40s", "query": QUERY, "documents": DOCUMENTS, "top_n": 2}
    with httpx.Client(trust_env=False, timeout=60) as http:
        response = http.post(
            f"{stack.proxy_url}/v1/rerank",
            json=request,
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [1, 2]  # the relevant document first, top_n 2
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    path, body = stack.last_pooling("l40s")
    assert path == "/rerank" and body["model"] == stack.served["bge-reranker"]
    # exactly the client's fields: no litellm_params, and LiteLLM 1.108.7 adds none of its
    # own (no return_documents) for hosted_vllm
    assert body == {**request, "model": stack.served["bge-reranker"]}


def test_a_chat_call_to_an_embedding_model_fails_without_reaching_vllm(stack: Stack) -> None:
    before = len(stack.standins["l40s"].requests)
    with pytest.raises(openai.BadRequestError) as refused:
        stack.client().chat.completions.create(model="bge-m3-l40s", messages=CHAT)
    assert "kind: embed" in str(refused.value)
    assert len(stack.standins["l40s"].requests) == before


LITELLM_PARAMS = {"api_base", "api_key", "order", "timeout", "stream_timeout"}


def test_litellm_params_never_reach_vllm(stack: Stack) -> None:
    """Only `model` of the generated litellm_params may travel; the rest is LiteLLM's."""
    stack.client().chat.completions.create(model="gemma-3-12b", messages=CHAT)
    for server in stack.standins.values():
        for request in server.completion_requests():
            assert not LITELLM_PARAMS & set(request.body), request.body


# --- failover groups ----------------------------------------------------------------------


def test_group_reaches_the_first_gpu(stack: Stack) -> None:
    before = stack.counts()
    response = stack.client().chat.completions.with_raw_response.create(
        model="gemma-3-12b", messages=CHAT
    )
    after = stack.counts()
    assert after["l40s"] == before["l40s"] + 1  # the cheapest GPU, order 1
    assert {g: n - before[g] for g, n in after.items() if g != "l40s"} == dict.fromkeys(
        ("h200", "a100", "b200"), 0
    )
    assert stack.last("l40s")["model"] == stack.served["gemma-3-12b"]
    assert response.headers.get("x-litellm-attempted-fallbacks", "0") == "0"


def test_group_fails_over_to_the_next_gpu_when_the_first_is_down(stack: Stack) -> None:
    # gemma-3-27b: h100 (connection refused), then h200
    before = stack.counts()
    response = stack.client().chat.completions.with_raw_response.create(
        model="gemma-3-27b", messages=CHAT
    )
    assert response.parse().choices[0].message.content
    assert stack.counts()["h200"] == before["h200"] + 1
    assert stack.last("h200")["model"] == stack.served["gemma-3-27b"]
    assert response.headers.get("x-litellm-attempted-fallbacks") == "1"


def test_group_walks_every_order_within_one_request(stack: Stack) -> None:
    # qwen3-vl-30b: h100 refuses connections, a100 drops them, then l40s answers
    before = stack.counts()
    stream = stack.client().chat.completions.create(
        model="qwen3-vl-30b", messages=CHAT, max_tokens=2, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    after = stack.counts()
    assert text == "tok0 tok1 "
    # each failed GPU is tried 1 + num_retries times before the next order
    assert after["a100"] - before["a100"] == 1 + stack.num_retries
    assert after["b200"] == before["b200"]
    assert after["l40s"] == before["l40s"] + 1 and after["h200"] == before["h200"]
    assert stack.last("l40s")["model"] == stack.served["qwen3-vl-30b"]
