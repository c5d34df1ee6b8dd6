"""LoRA adapters at run time: the gateway routes a request naming an adapter to its base
model's server and keeps the adapter's name in "model" so vLLM applies it; /v1/models lists
adapters with their base; a pool fetches Hub adapters before vLLM starts.

What stands in, named so: the vLLM stand-in (tests/standin_vllm.py, which answers to the
adapter names as vLLM does with --lora-modules) and the Hugging Face Hub stand-in
(tests/hub_standin.py, serving the recorded adapter_config.json through the real
huggingface_hub client).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gateway_fixtures import ALPHA, BETA, auth, client, make_app, serve_asgi, standin
from hub_standin import HubStandin

from mvgen.local_gateway import GatewayStartupError, check_upstreams
from mvgen.runtime.adapters import AdapterDownloadError, download_adapters
from mvgen.runtime.backends import HttpBackend
from mvgen.runtime.models import ModelTable, ServedAdapter, ServedModel, models_from_literal
from mvgen.runtime.request_log import parse_line
from mvgen.runtime.vllm_process import VllmProcess, VllmStartupError

pytestmark = pytest.mark.timeout(60)

ADAPTER_REPO = "Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver"
RECORDED = Path(__file__).parent / "data" / "hf" / ADAPTER_REPO.replace("/", "--")

# alpha carries two adapters; beta none
MODELS = models_from_literal(
    {
        "alpha": {
            "served_name": ALPHA,
            "aliases": ["alpha"],
            "adapters": [
                {"name": "alpha-sql", "root": "org/alpha-sql-lora", "download": None},
                {"name": "alpha-chat-v2", "root": "/root/.cache/huggingface/adapters/v2"},
            ],
        },
        "beta": {"served_name": BETA, "aliases": ["beta"]},
    }
)
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


# --- the table -------------------------------------------------------------------------------


def test_an_adapter_resolves_to_its_base_and_keeps_its_own_name() -> None:
    target = MODELS.target("ALPHA-SQL")  # any case, like model names
    assert target is not None
    assert (target.model.key, target.upstream_name) == ("alpha", "alpha-sql")
    assert target.adapter == ServedAdapter("alpha-sql", "org/alpha-sql-lora")
    model = MODELS.target("alpha")
    assert model is not None and (model.upstream_name, model.adapter) == (ALPHA, None)
    assert MODELS.resolve("alpha-sql") is None  # resolve() is for models only
    assert MODELS.names() == [ALPHA, BETA, "alpha-chat-v2", "alpha-sql"]


@pytest.mark.parametrize("name", ["beta", "org/BETA-1b", "Alpha-SQL"])
def test_an_adapter_name_that_is_taken_is_refused(name: str) -> None:
    sql = ServedAdapter("alpha-sql", "x")
    models = [
        ServedModel("alpha", ALPHA, (), (sql,)),
        ServedModel("beta", BETA, ("beta",), (ServedAdapter(name, "y"),)),
    ]
    with pytest.raises(ValueError, match="claimed by both"):
        ModelTable(models)


# --- over HTTP, to the vLLM stand-in -------------------------------------------------------


@pytest.fixture
def servers():
    with standin(served_names=[ALPHA, "alpha-sql", "alpha-chat-v2"]) as a, standin() as b:
        backend = HttpBackend({"alpha": a.url, "beta": b.url}, timeout=30, connect_wait=0)
        with serve_asgi(make_app(backend, models=MODELS)) as url:
            yield url, a, b


def test_an_adapter_request_goes_to_the_base_with_the_adapter_name(servers, caplog) -> None:
    url, alpha, beta = servers
    caplog.set_level(logging.INFO, logger="mvgen.gateway")
    with client(url) as c:
        answer = c.post("/v1/chat/completions", json={**CHAT, "model": "Alpha-SQL"})
        plain = c.post("/v1/completions", json={"model": "alpha", "prompt": "x"})
    assert answer.status_code == 200, answer.text
    assert plain.status_code == 200
    assert [(r.path, r.body["model"]) for r in alpha.requests] == [
        ("/v1/chat/completions", "alpha-sql"),  # vLLM applies the adapter of that name
        ("/v1/completions", ALPHA),
    ]
    assert beta.requests == []
    assert answer.json()["model"] == "alpha-sql"
    records = [parse_line(r.getMessage()) for r in caplog.records]
    [record] = [r for r in records if r and r["route"] == "/v1/chat/completions"]
    assert (record["model"], record["adapter"]) == ("alpha", "alpha-sql")


def test_an_adapter_streams_like_a_model(servers) -> None:
    url, alpha, _ = servers
    with client(url) as c:
        with c.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "model": "alpha-chat-v2", "stream": True}
        ) as response:
            assert response.status_code == 200
            body = "".join(response.iter_text())
    assert body.rstrip().endswith("data: [DONE]")
    assert [r.body["model"] for r in alpha.requests] == ["alpha-chat-v2"]


def test_models_lists_adapters_with_their_base(servers) -> None:
    url, alpha, _ = servers
    with client(url) as c:
        body = c.get("/v1/models").json()
    cards = {m["id"]: m for m in body["data"]}
    assert list(cards) == [ALPHA, BETA, "alpha-chat-v2", "alpha-sql"]
    assert cards["alpha-sql"]["root"] == "org/alpha-sql-lora"
    assert cards["alpha-sql"]["parent"] == ALPHA
    assert cards["alpha-chat-v2"]["root"] == "/root/.cache/huggingface/adapters/v2"
    assert "parent" not in cards[ALPHA]
    # an adapter serves its base model's routes: it has the base's kind
    assert {card["kind"] for card in cards.values()} == {"chat"}
    assert alpha.requests == []  # listed by the gateway: no pool is woken


@pytest.mark.parametrize("route", ["/v1/embeddings", "/v1/rerank", "/v1/score"])
def test_an_adapter_on_a_pooling_route_is_refused_like_its_base(servers, route: str) -> None:
    url, alpha, _ = servers
    body = {"model": "alpha-sql", "input": "x", "query": "q", "documents": ["d"]}
    with client(url) as c:
        response = c.post(route, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_route"
    assert error["message"].startswith("Model 'alpha-sql' is a chat model (kind: chat)")
    assert alpha.requests == []


def test_an_unknown_adapter_is_a_404_listing_the_adapters(servers) -> None:
    url, alpha, _ = servers
    with client(url) as c:
        response = c.post("/v1/chat/completions", json={**CHAT, "model": "alpha-sq"})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "'alpha-sq' does not exist" in message and "alpha-sql" in message
    assert alpha.requests == []


def test_adapters_need_the_key_like_everything_else(servers) -> None:
    url, alpha, _ = servers
    with client(url, key=None) as c:
        assert (
            c.post("/v1/chat/completions", json={**CHAT, "model": "alpha-sql"}).status_code == 401
        )
        assert c.get("/v1/models", headers=auth("wrong-key-123")).status_code == 401
    assert alpha.requests == []


def test_mvgen_gateway_upstreams_are_named_by_model_not_adapter() -> None:
    assert check_upstreams(MODELS, {"alpha": "http://127.0.0.1:9/v1"}) == {
        "alpha": "http://127.0.0.1:9"
    }
    with pytest.raises(GatewayStartupError, match="a LoRA adapter of 'alpha'"):
        check_upstreams(MODELS, {"alpha-sql": "http://127.0.0.1:9"})


# --- fetching adapters before vLLM starts ----------------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    standin = HubStandin(gated={})
    with serve_asgi(standin.app()) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield standin


def spec(tmp_path: Path, repo: str = ADAPTER_REPO, revision: str | None = "v1") -> dict:
    local = tmp_path / "lora" / repo.replace("/", "--") / (revision or "main")
    return {
        "name": "mcq",
        "root": repo,
        "download": {"repo_id": repo, "revision": revision, "local_dir": str(local)},
    }


def test_a_hub_adapter_is_fetched_at_its_revision_into_its_folder(hub, tmp_path: Path) -> None:
    adapter = spec(tmp_path)
    download_adapters([adapter, {"name": "on-volume", "download": None}], token=None)
    local = Path(adapter["download"]["local_dir"])
    fetched = (local / "adapter_config.json").read_bytes()
    assert fetched == (RECORDED / "adapter_config.json").read_bytes()
    asked = [r.path for r in hub.requests]
    assert f"/api/models/{ADAPTER_REPO}/revision/v1" in asked  # the pinned revision
    assert any(p.endswith("/adapter_config.json") for p in asked)
    # a second start finds it there: nothing is downloaded again
    hub.requests.clear()
    download_adapters([adapter], token=None)
    assert not [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


def test_a_gated_adapter_needs_the_token_and_never_shows_it(hub, tmp_path: Path) -> None:
    token = "hf_standin_token_0123456789"
    hub.gated[ADAPTER_REPO] = token
    with pytest.raises(AdapterDownloadError) as info:
        download_adapters([spec(tmp_path)], token=None)
    assert "'mcq'" in str(info.value) and "gated" in str(info.value)
    download_adapters([spec(tmp_path)], token=token)
    sent = [r.authorization for r in hub.requests if "/resolve/" in r.path]
    assert f"Bearer {token}" in sent


def test_a_missing_adapter_stops_the_start_with_its_cause(hub, tmp_path: Path) -> None:
    """VllmProcess.start fetches first: a failure is a start failure, and vLLM never runs."""
    missing = spec(tmp_path, repo="org/no-such-adapter")
    vllm = VllmProcess(["/nonexistent/vllm", "serve", "x"], 1, adapters=[missing])
    with pytest.raises(VllmStartupError) as info:
        vllm.start()
    assert "LoRA adapter 'mcq' (org/no-such-adapter@v1): no such repo" in info.value.cause
    assert vllm.returncode is None  # no process was started
