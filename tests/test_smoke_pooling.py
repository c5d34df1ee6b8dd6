"""The smoke test (`mvgen test`) on pooling models, against a real local gateway in front of
the scripted vLLM stand-in (tests/smoke_standin.py, NOT vLLM: its vectors are fake, made
from the texts' words, so only shapes, order and wiring are under test). An embedding model
gets the embeddings, rerank and score checks; a reranker rerank and score; a chat model its
usual checks. Each broken answer fails exactly the check that guards against it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_fixtures import API_KEY, gateway_over
from smoke_standin import ScriptedStandin
from standin_vllm import StandinConfig, free_port

from mvgen.config import load_plan
from mvgen.plan import Plan
from mvgen.runtime.models import models_from_literal
from mvgen.smoke import (
    EMBED_INPUTS,
    MODEL_CHECKS,
    RELEVANT,
    RERANK_DOCUMENTS,
    CheckResult,
    run_smoke,
    target_for,
)

pytestmark = pytest.mark.timeout(120)

ENCODER = "{params_b: 0.568, layers: 24, kv_heads: 16, head_dim: 64, max_context: 8192, "
ENCODER += "encoder_only: true}"
CONFIG = f"""\
mode: gpu
workspace: acme
gpus:
  l4: {{type: L4}}
models:
  bge-m3:
    hf_id: BAAI/bge-m3
    kind: embed
    max_model_len: 8192
    architecture: {ENCODER}
  bge-reranker:
    hf_id: BAAI/bge-reranker-v2-m3
    kind: rerank
    max_model_len: 8192
    architecture: {ENCODER}
  tiny-chat:
    hf_id: org/Tiny-Chat-1B
    max_model_len: 8192
    architecture: {{params_b: 1.0, layers: 16, kv_heads: 4, head_dim: 64, max_context: 32768}}
"""


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    path: Path = tmp_path_factory.mktemp("smoke-pooling") / "deployments.yaml"
    path.write_text(CONFIG)
    return load_plan(path)


@contextlib.contextmanager
def stack(plan: Plan, behaviour: str = "good") -> Iterator[tuple[str, ScriptedStandin]]:
    """The scripted stand-in serving each model as its kind, behind a gateway whose table
    is the one the generated app would embed."""
    names = [m.served_name for m in plan.models]
    kinds = {m.served_name: m.kind for m in plan.models}
    server = ScriptedStandin(StandinConfig(served_names=names, kinds=kinds), behaviour=behaviour)
    server.start()
    table = models_from_literal(
        {
            m.key: {"served_name": m.served_name, "aliases": list(m.aliases), "kind": m.kind}
            for m in plan.models
        }
    )
    try:
        upstreams = {m.key: server.url for m in plan.models}
        with gateway_over(upstreams, models=table, connect_wait=30.0) as url:
            yield url, server
    finally:
        server.stop()


def smoke(plan: Plan, url: str, model: str | None = None) -> list[CheckResult]:
    target = target_for(plan.apps[0], url, model)
    return run_smoke([target], API_KEY, ready_timeout=10.0, request_timeout=10.0)


def by_model(results: list[CheckResult]) -> dict[str, dict[str, CheckResult]]:
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        out.setdefault(r.model, {})[r.check] = r
    return out


def test_each_model_is_checked_by_its_kind(plan: Plan) -> None:
    with stack(plan) as (url, server):
        results = smoke(plan, url)
    assert [r for r in results if r.status != "pass"] == []
    checks = {model: set(found) for model, found in by_model(results).items()}
    assert checks["bge-m3"] == {"embeddings", "rerank", "score"}
    assert checks["bge-reranker"] == {"rerank", "score"}
    assert checks["tiny-chat"] == {name for name, _ in MODEL_CHECKS} - {"vision", "adapters"}
    details = by_model(results)
    assert details["bge-m3"]["embeddings"].detail == f"{len(EMBED_INPUTS)} vectors of 64 floats"
    assert details["bge-reranker"]["rerank"].detail.startswith("relevant document first")
    # what reached the model server: the served names, on vLLM's own paths
    seen = [(r.path, r.body["model"]) for r in server.pooling_requests()]
    assert ("/v1/embeddings", "BAAI/bge-m3") in seen
    assert ("/rerank", "BAAI/bge-reranker-v2-m3") in seen
    assert ("/score", "BAAI/bge-m3") in seen
    reranked = next(r.body for r in server.pooling_requests() if r.path == "/rerank")
    assert reranked["documents"] == list(RERANK_DOCUMENTS) and RELEVANT != 0


@pytest.mark.parametrize(
    ("behaviour", "model", "check", "says"),
    [
        ("short_vector", "bge-m3", "embeddings", "vectors of different lengths: [63, 64]"),
        ("missing_vector", "bge-m3", "embeddings", "not each of 0..2 once"),
        ("unordered_rerank", "bge-reranker", "rerank", "not ordered by relevance"),
        ("wrong_top", "bge-reranker", "rerank", "ranks first, not the relevant one (1)"),
        ("wrong_score", "bge-reranker", "score", "scores highest, not the relevant one (1)"),
    ],
)
def test_each_wrong_pooling_answer_fails_its_check(plan, behaviour, model, check, says) -> None:
    with stack(plan, behaviour) as (url, _):
        results = smoke(plan, url, model)
    failed = {(r.check, r.model) for r in results if r.failed}
    assert failed == {(check, model)}
    assert says in by_model(results)[model][check].detail


def test_a_pooling_model_that_never_answers_skips_its_other_checks(plan: Plan) -> None:
    """The first check of a kind absorbs the cold start, as chat does for a chat model."""
    table = {"bge-m3": f"http://127.0.0.1:{free_port()}"}  # nothing listens there: 503
    with gateway_over(
        table,
        models=models_from_literal({"bge-m3": {"served_name": "BAAI/bge-m3", "kind": "embed"}}),
    ) as url:
        target = target_for(plan.apps[0], url, "bge-m3")
        results = run_smoke(
            [target], API_KEY, ready_timeout=1.0, request_timeout=5.0, sleep=lambda s: None
        )
    mine = by_model(results)["bge-m3"]
    assert mine["embeddings"].status == "FAIL" and "gave up" in mine["embeddings"].detail
    assert (mine["rerank"].status, mine["score"].status) == ("skip", "skip")
