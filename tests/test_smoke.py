"""The smoke test (`mvgen test`) against real local gateways on 127.0.0.1, in front of a
scripted stand-in for vLLM (tests/smoke_standin.py, NOT vLLM) that answers correctly,
wrongly (one kind of wrong answer at a time), slowly (a cold start: the gateway answers
503 + Retry-After until the stand-in is up), or not at all. The good stand-in passes every
check; each bad behaviour fails exactly the check that guards against it.

Redirects and Retry-After parsing are tested on httpx's MockTransport, since the
gateway never sends a 303 (Modal's edge does, past 150 s)."""

from __future__ import annotations

import contextlib
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import copy_seed_lock, run_cli
from gateway_fixtures import API_KEY, gateway_over, serve_asgi, temporary_env
from smoke_standin import ScriptedStandin, matching
from standin_vllm import StandinConfig, free_port

from mvgen.config import load_plan
from mvgen.plan import Plan
from mvgen.pngdata import PNG_SIGNATURE, data_url, solid_png
from mvgen.runtime.models import models_from_literal
from mvgen.smoke import (
    APP_CHECKS,
    EMAIL_REGEX,
    MODEL_CHECKS,
    SQL_GRAMMAR,
    CheckFailed,
    CheckResult,
    Endpoint,
    GaveUp,
    _ok_json,
    finite_language,
    parse_retry_after,
    read_sse,
    run_smoke,
    target_for,
)

# One vision model (facts from the seed's lock file) and one text-only model (declared
# architecture).
CONFIG = """\
mode: gpu
workspace: acme
gpus:
  h100: {type: H100}
models:
  gemma-3-12b:
    hf_id: google/gemma-3-12b-it
  tiny-chat:
    hf_id: org/Tiny-Chat-1B
    architecture: {params_b: 1.0, layers: 16, kv_heads: 4, head_dim: 64, max_context: 32768}
"""
# every check a model without LoRA adapters gets (test_adapters.py covers "adapters")
ALL_MODEL_CHECKS = {name for name, _ in MODEL_CHECKS} - {"adapters"}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("smoke") / "deployments.yaml"
    path.write_text(CONFIG)
    copy_seed_lock(path)
    return path


@pytest.fixture(scope="module")
def plan(config_path: Path) -> Plan:
    return load_plan(config_path)


def model_table(plan: Plan, only: list[str] | None = None) -> Any:
    return models_from_literal(
        {
            m.key: {"served_name": m.served_name, "aliases": list(m.aliases)}
            for m in plan.models
            if only is None or m.key in only
        }
    )


@contextlib.contextmanager
def stack(
    plan: Plan,
    behaviour: str = "good",
    *,
    standin: dict[str, Any] | None = None,
    served: list[str] | None = None,
    **gateway: Any,
) -> Iterator[tuple[str, ScriptedStandin]]:
    """A scripted stand-in and a gateway in front of it; yields the gateway URL."""
    names = [m.served_name for m in plan.models]
    server = ScriptedStandin(
        StandinConfig(served_names=names, **(standin or {})), behaviour=behaviour
    )
    server.start()
    try:
        upstreams = {m.key: server.url for m in plan.models}
        gateway.setdefault("connect_wait", 30.0)
        with gateway_over(upstreams, models=model_table(plan, served), **gateway) as url:
            yield url, server
    finally:
        server.stop()


def smoke(
    plan: Plan, url: str, model: str | None = None, *, key: str = API_KEY, **options: Any
) -> list[CheckResult]:
    options.setdefault("ready_timeout", 10.0)
    options.setdefault("request_timeout", 10.0)
    return run_smoke([target_for(plan.apps[0], url, model)], key, **options)


def failed(results: list[CheckResult]) -> set[tuple[str, str]]:
    return {(r.check, r.model) for r in results if r.failed}


def by_check(results: list[CheckResult], model: str) -> dict[str, CheckResult]:
    return {r.check: r for r in results if r.model == model}


# --- the good stand-in -------------------------------------------------------------------


def test_the_good_standin_passes_every_check(plan):
    with stack(plan) as (url, server):
        results = smoke(plan, url)
    assert failed(results) == set()
    assert all(r.status == "pass" for r in results)
    assert {r.check for r in results if r.model == "-"} == {n for n, _ in APP_CHECKS}
    assert set(by_check(results, "gemma-3-12b")) == ALL_MODEL_CHECKS
    assert set(by_check(results, "tiny-chat")) == ALL_MODEL_CHECKS - {"vision"}  # text only
    assert all(r.latency is not None and r.latency < 5 for r in results)
    # The constraints reached the model server unchanged, under the served name.
    bodies = [r.body for r in server.completion_requests()]
    assert {"grammar": SQL_GRAMMAR} in [b.get("structured_outputs") for b in bodies]
    assert {"regex": EMAIL_REGEX} in [b.get("structured_outputs") for b in bodies]
    assert {b["model"] for b in bodies} == {"google/gemma-3-12b-it", "org/Tiny-Chat-1B"}
    images = [b for b in bodies if "image_url" in json.dumps(b.get("messages"))]
    assert len(images) == 1 and images[0]["model"] == "google/gemma-3-12b-it"
    assert data_url(solid_png()) in json.dumps(images[0])


def test_the_local_gateway_of_mvgen_gateway_passes_too(plan, monkeypatch):
    """The app `mvgen gateway` serves, key from API_KEY as in the Modal secret."""
    from mvgen.local_gateway import build_local_app

    names = [m.served_name for m in plan.models]
    with ScriptedStandin(StandinConfig(served_names=names)) as server:
        monkeypatch.setenv("API_KEY", "local-key-42")
        upstreams = {m.key: server.url for m in plan.models}
        with serve_asgi(build_local_app(model_table(plan), upstreams)) as url:
            results = smoke(plan, url, key="local-key-42")
    assert failed(results) == set()


# --- wrong answers: each fails its own check -----------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "checks", "says"),
    [
        ("invalid_json", {"json-object", "json-schema", "so-json"}, "not valid JSON"),
        ("bad_schema", {"json-schema", "so-json"}, "is a required property"),
        ("bad_choice", {"so-choice"}, "'Maybe' is not one of Positive, Negative, Neutral"),
        ("regex_miss", {"so-regex"}, "does not fully match"),
        ("bad_grammar", {"so-grammar"}, "is not in the grammar's 4 sentences"),
        ("no_echo", {"completion-echo"}, "does not start with the prompt"),
    ],
)
def test_each_wrong_answer_fails_the_right_check(plan, behaviour, checks, says):
    with stack(plan, behaviour) as (url, _):
        results = smoke(plan, url, "gemma-3-12b")
    assert failed(results) == {(check, "gemma-3-12b") for check in checks}
    for check in checks:
        assert says in by_check(results, "gemma-3-12b")[check].detail


def test_a_wrong_key_fails_every_authenticated_check(plan):
    with stack(plan) as (url, _):
        results = smoke(plan, url, "tiny-chat", key="not-the-key")
    passed = {r.check for r in results if r.status == "pass"}
    assert passed == {"health", "models-no-key", "wrong-key"}
    assert "key was refused" in by_check(results, "-")["models"].detail


def test_a_model_missing_from_v1_models_fails_the_models_check(plan):
    with stack(plan, served=["gemma-3-12b"]) as (url, _):
        results = smoke(plan, url, "gemma-3-12b")
    assert failed(results) == {("models", "-")}
    assert "not listed: org/Tiny-Chat-1B" in by_check(results, "-")["models"].detail


# --- slow, then not at all ----------------------------------------------------------------


def test_a_cold_start_is_waited_through_honouring_retry_after(plan):
    progress: list[str] = []
    slow = {"ready_after": 2.0, "not_ready": "refuse"}  # refuses connections, like vLLM
    with stack(plan, standin=slow, cold_start_budget=0.3, retry_after=1) as (url, _):
        results = smoke(plan, url, "tiny-chat", ready_timeout=30.0, progress=progress.append)
    assert failed(results) == set()
    waits = [p for p in progress if p.startswith("waiting for tiny-chat chat completion")]
    assert waits and all("503" in p and "next try in 1 s" in p for p in waits)
    chat = by_check(results, "tiny-chat")["chat"]
    assert chat.latency is not None and chat.latency < 1.0  # the waiting is left out


def test_a_cold_start_longer_than_the_timeout_gives_up_clearly(plan):
    slow = {"ready_after": 60.0, "not_ready": "refuse"}
    with stack(plan, standin=slow, cold_start_budget=0.3, retry_after=1) as (url, _):
        results = smoke(plan, url, "tiny-chat", ready_timeout=2.0)
    assert failed(results) == {("chat", "tiny-chat")}
    detail = by_check(results, "tiny-chat")["chat"].detail
    assert detail.startswith("gave up after 2 s waiting for tiny-chat chat completion")
    assert "(--timeout 2)" in detail and "503" in detail
    skipped = {r.check for r in results if r.status == "skip"}
    assert skipped == ALL_MODEL_CHECKS - {"chat", "vision"}


def test_a_model_server_that_never_answers_fails_chat(plan):
    with stack(plan, standin={"mode": "hang"}, cold_start_budget=0.3, retry_after=1) as (url, _):
        results = smoke(plan, url, "gemma-3-12b", ready_timeout=1.5)
    assert failed(results) == {("chat", "gemma-3-12b")}
    assert "gave up" in by_check(results, "gemma-3-12b")["chat"].detail


def test_nothing_listening_fails_health_and_skips_the_rest(plan):
    url = f"http://127.0.0.1:{free_port()}"
    results = smoke(plan, url, ready_timeout=1.5)
    assert failed(results) == {("health", "-")}
    assert "ConnectError" in by_check(results, "-")["health"].detail
    assert all(r.status == "skip" for r in results if r.check != "health")


# --- the CLI --------------------------------------------------------------------------------


def test_mvgen_test_cli_json_and_exit_codes(plan, config_path, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    base = ["test", "--config", str(config_path), "--gpu", "h100", "--timeout", "10"]
    with stack(plan) as (url, _):
        result = run_cli(*base, "--url", url, "--api-key", API_KEY, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["targets"] == [{"app": "vllm-h100", "url": url}]
        with temporary_env("VLLM_API_KEY", API_KEY):  # the seed's .env name
            table = run_cli(*base, "--url", url, "--model", "tiny-chat")
        assert table.exit_code == 0, table.output
        assert "so-grammar" in table.stdout and "vision" not in table.stdout
        missing = run_cli(*base, "--url", url)
        assert missing.exit_code == 2 and "no API key" in missing.stderr
    with stack(plan, "bad_choice") as (url, _):
        result = run_cli(*base, "--url", url, "--api-key", API_KEY, "--json")
    assert result.exit_code == 1
    failures = [r for r in json.loads(result.stdout)["results"] if r["status"] == "FAIL"]
    assert {(r["check"], r["model"]) for r in failures} == {
        ("so-choice", "gemma-3-12b"),
        ("so-choice", "tiny-chat"),
    }


# --- HTTP details on a mock transport ---------------------------------------------------------


def test_modal_303_is_followed_with_the_key():
    seen: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers.get("authorization")))
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(303, headers={"location": "/__result/abc"})
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    endpoint = Endpoint("https://ws--app-serve.modal.run", transport=httpx.MockTransport(handler))
    response = endpoint.request("POST", "/v1/chat/completions", what="chat", key="k", body={})
    assert response.status_code == 200
    assert seen == [
        ("POST", "/v1/chat/completions", "Bearer k"),
        ("GET", "/__result/abc", "Bearer k"),
    ]


def test_503_waits_follow_retry_after_then_backoff_and_give_up():
    answers = iter(
        [httpx.Response(503, headers={"retry-after": "7"}, json={"error": {"message": "cold"}})]
        + [httpx.Response(503, text="busy")] * 3
        + [httpx.Response(200, json={})]
    )
    sleeps: list[float] = []
    endpoint = Endpoint(
        "http://x",
        ready_timeout=100,
        sleep=sleeps.append,
        transport=httpx.MockTransport(lambda request: next(answers)),
    )
    assert endpoint.request("GET", "/health", what="health").status_code == 200
    assert sleeps[0] == 7  # Retry-After, not the backoff
    assert sleeps[1:] == sorted(sleeps[1:]) and sleeps[1] < sleeps[3]  # growing backoff
    always_503 = httpx.MockTransport(lambda request: httpx.Response(503, text="no"))
    impatient = Endpoint("http://x", ready_timeout=0, transport=always_503)
    with pytest.raises(GaveUp, match="waiting for health .*last answer: 503 no"):
        impatient.request("GET", "/health", what="health")


def test_a_failed_start_is_reported_at_once_not_waited_through():
    failed = {
        "error": {"code": "model_failed_to_start", "message": "Model 'm' failed to start: X."}
    }
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(503, headers={"retry-after": "1800"}, json=failed)

    sleeps: list[float] = []
    endpoint = Endpoint(
        "http://x", ready_timeout=100, sleep=sleeps.append, transport=httpx.MockTransport(answer)
    )
    response = endpoint.request("POST", "/v1/chat/completions", what="chat", body={})
    assert response.status_code == 503
    assert calls == ["/v1/chat/completions"] and sleeps == []
    with pytest.raises(CheckFailed, match="failed to start: X"):
        _ok_json(response)


def test_parse_retry_after_both_forms():
    assert parse_retry_after("12") == 12
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_read_sse_needs_done_and_reports_error_events():
    chunk = 'data: {"choices": [{"delta": {"content": "Hi"}}]}'
    assert read_sse(iter([": keep-alive", chunk, "", "data: [DONE]"])) == (["Hi"], 1, True)
    assert read_sse(iter([chunk])) == (["Hi"], 1, False)
    with pytest.raises(CheckFailed, match="error in the stream"):
        read_sse(iter(['data: {"error": {"message": "upstream died"}}']))


# --- the finite grammar and the PNG -----------------------------------------------------------


def test_the_sql_grammar_language_is_enumerated_exactly():
    assert finite_language(SQL_GRAMMAR) == {
        "SELECT id FROM users",
        "SELECT id FROM orders",
        "SELECT name FROM users",
        "SELECT name FROM orders",
    }
    assert finite_language('root ::= "a\\"b" | x\nx ::= "c"') == {'a"b', "c"}
    with pytest.raises(ValueError, match="recursive"):
        finite_language('root ::= "a" root | "b"')
    with pytest.raises(ValueError, match="unsupported"):
        finite_language('root ::= "a"*')


def test_the_standin_regex_generator_matches():
    assert matching(EMAIL_REGEX) == "aa@aa.com"
    with pytest.raises(ValueError):
        matching("(a|b)")


def test_solid_png_is_a_valid_png():
    png = solid_png(3, 2, (1, 2, 3))
    assert png.startswith(PNG_SIGNATURE)
    chunks, offset = {}, len(PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF
        chunks[kind] = data
        offset += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[b"IHDR"]) == (3, 2, 8, 2, 0, 0, 0)
    assert zlib.decompress(chunks[b"IDAT"]) == (b"\x00" + b"\x01\x02\x03" * 3) * 2
    assert data_url(png).startswith("data:image/png;base64,iVBORw0KGgo")


def test_targets_know_which_models_take_images(plan):
    target = target_for(plan.apps[0], "http://h/", None)
    assert target.url == "http://h"
    assert [(m.key, m.vision) for m in target.models] == [
        ("gemma-3-12b", True),
        ("tiny-chat", False),
    ]
    assert [m.key for m in target_for(plan.apps[0], "http://h", "tiny-chat").tested] == [
        "tiny-chat"
    ]


@pytest.mark.timeout(60)
def test_a_name_that_does_not_resolve_gives_up_at_once(plan: Plan) -> None:
    """.invalid never resolves (RFC 6761): the real resolver, no stand-in."""
    results = smoke(plan, "https://mvgen-smoke-test.invalid", ready_timeout=600.0)
    health = results[0]
    assert (health.check, health.status) == ("health", "FAIL")
    assert "mvgen-smoke-test.invalid does not resolve" in health.detail
    assert all(r.status == "skip" for r in results[1:])
