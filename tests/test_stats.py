"""`mvgen stats` against tests/fake_modal/modal, a recording STAND-IN for the `modal` CLI
(it is not Modal), fed log text: a hand-made file in the format the gateway writes
(tests/data/stats/vllm-h100-logs.txt, interleaved with vLLM-style and other lines), and
lines recorded from the real gateway in front of the vLLM stand-in."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG
from gateway_fixtures import API_KEY, KEY_ENV, client, serve_asgi, standin, temporary_env
from test_deploy import FakeModal, mvgen, project, use_fake_modal

from mvgen.local_gateway import build_local_app
from mvgen.runtime.models import ModelTable, ServedModel
from mvgen.stats import parse_records, percentile, summarize

DATA = Path(__file__).resolve().parent / "data" / "stats"
HAND_MADE = (DATA / "vllm-h100-logs.txt").read_text()
LEGACY = BASE_CONFIG.replace("mode: gpu", "mode: legacy")


@pytest.fixture
def fake_modal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeModal:
    return use_fake_modal(tmp_path, monkeypatch)


def stats_json(root: Path, *args: str) -> dict[str, Any]:
    result = mvgen(root, "stats", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_model(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["model"]: m for m in report["models"]}


# --- arithmetic ------------------------------------------------------------------------


def test_nearest_rank_percentiles_on_a_hand_made_sample() -> None:
    # The worked example of the nearest-rank method (Wikipedia, "Percentile").
    sample = [50, 15, 40, 20, 35]
    assert [percentile(sample, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 201)), 99) == 198
    assert percentile([7.5], 99) == 7.5
    assert percentile([], 50) is None


def test_figures_from_the_hand_made_log() -> None:
    parsed = parse_records(HAND_MADE)
    assert parsed.unreadable == 1  # the line cut short; the one naming the marker is skipped
    gemma, qwen, unknown = summarize(parsed.records)
    assert (gemma.model, qwen.model, unknown.model) == ("gemma-3-12b", "qwen3-vl-30b", "(none)")
    assert (gemma.requests, gemma.streamed, gemma.cold_starts) == (7, 5, 1)
    # Answered: 120, 80, 95000 (cold), 1500 (non-streamed), 150 (client left later).
    assert (gemma.ttft_p50_ms, gemma.ttft_p99_ms) == (150.0, 95000.0)
    # Streams after the first token: 100/2.0 s, 40/1.0 s, 240/4.0 s.
    assert gemma.stream_tokens_per_s_p50 == 50.0
    assert gemma.answer_tokens_per_s_p50 == pytest.approx(30 / 1.5005)
    assert gemma.errors == {"client_disconnected": 1, "model_not_ready": 1, "upstream_400": 1}
    assert (qwen.ttft_p50_ms, qwen.ttft_p99_ms, qwen.stream_tokens_per_s_p50) == (300, 500, None)
    assert (unknown.requests, unknown.errors) == (1, {"invalid_api_key": 1})
    assert [s.model for s in summarize(parsed.records, "qwen3-vl-30b")] == ["qwen3-vl-30b"]


# --- the command -------------------------------------------------------------------------


def test_stats_reads_the_apps_logs_through_the_modal_cli(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(logs={"vllm-h100": HAND_MADE})
    report = stats_json(root, "--gpu", "h100")
    assert fake_modal.calls() == [
        ["app", "logs", "vllm-h100", "--since", "1h", "--search", "mvgen.request"]
    ]
    assert (report["gpu"], report["apps"], report["since"]) == ("h100", ["vllm-h100"], "1h")
    assert report["requests"] == 10 and report["unreadable_lines"] == 1
    gemma = by_model(report)["gemma-3-12b"]
    assert gemma == {
        "model": "gemma-3-12b",
        "requests": 7,
        "streamed": 5,
        "ttft_ms": {"p50": 150.0, "p99": 95000.0},
        "tokens_per_s": {"stream_p50": 50.0, "answer_p50": 20.0},
        "cold_starts": 1,
        "errors": {"client_disconnected": 1, "model_not_ready": 1, "upstream_400": 1},
    }


def test_table_and_model_filter(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(logs={"vllm-h100": HAND_MADE})
    result = mvgen(root, "stats", "--gpu", "h100", "--model", "qwen3-vl-30b", "--since", "2d")
    assert result.exit_code == 0, result.output
    assert "vllm-h100: 2 requests since 2d" in result.stdout
    assert "qwen3-vl-30b" in result.stdout and "gemma-3-12b" not in result.stdout
    assert "note: 1 request line could not be read" in result.stderr
    assert fake_modal.calls()[0][3:5] == ["--since", "2d"]
    table = mvgen(root, "stats", "--gpu", "h100").stdout
    assert "95000.0" in table and "upstream_400 1" in table and "(none)" in table


@pytest.mark.parametrize(
    "args,message",
    [
        (["--gpu", "h10"], "unknown GPU 'h10'; choose from: h100, l40s (did you mean 'h100'?)"),
        ([], "choose a GPU with --gpu"),
        (["--gpu", "h100", "--model", "gemma"], "unknown model 'gemma'; choose from: gemma-3-12b"),
        (["--gpu", "h100", "--since", "yesterday"], "--since 'yesterday' is not a time"),
        (["--gpu", "h100", "--since", "36d"], "--since 36d: give between 1s and 35d"),
    ],
)
def test_wrong_choices_are_refused_before_modal_is_asked(tmp_path, fake_modal, args, message):
    root = project(tmp_path)
    result = mvgen(root, "stats", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert fake_modal.calls() == []


def test_iso_since_is_passed_on(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(logs={"vllm-l40s": ""})
    result = mvgen(root, "stats", "--gpu", "l40s", "--since", "2026-03-01T08:00:00")
    assert result.exit_code == 0
    assert "no request lines in the logs of vllm-l40s since 2026-03-01T08:00:00" in result.stderr
    assert fake_modal.calls()[0][3:5] == ["--since", "2026-03-01T08:00:00"]
    assert stats_json(root, "--gpu", "l40s")["models"] == []


def test_a_modal_failure_is_one_line(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(logs={})  # the app is not deployed
    result = mvgen(root, "stats", "--gpu", "h100")
    assert result.exit_code == 1
    assert "`modal app logs vllm-h100 --since 1h --search mvgen.request` failed" in result.stderr
    assert "No App with name 'vllm-h100' found" in result.stderr


def test_legacy_mode_reads_every_app_on_the_gpu(tmp_path, fake_modal):
    root = project(tmp_path, LEGACY)
    gemma_lines = "\n".join(line for line in HAND_MADE.splitlines() if "gemma-3-12b" in line)
    qwen_lines = "\n".join(line for line in HAND_MADE.splitlines() if "qwen3-vl-30b" in line)
    fake_modal.write(
        logs={"vllm-gemma-3-12b-h100": gemma_lines, "vllm-qwen3-vl-30b-h100": qwen_lines}
    )
    report = stats_json(root, "--gpu", "h100")
    assert [call[2] for call in fake_modal.calls()] == [
        "vllm-gemma-3-12b-h100",
        "vllm-qwen3-vl-30b-h100",
    ]
    assert {m["model"]: m["requests"] for m in report["models"]} == {
        "gemma-3-12b": 7,
        "qwen3-vl-30b": 2,
    }
    fake_modal.clear_log()
    report = stats_json(root, "--gpu", "h100", "--model", "qwen3-vl-30b")
    assert [call[2] for call in fake_modal.calls()] == ["vllm-qwen3-vl-30b-h100"]
    assert [m["model"] for m in report["models"]] == ["qwen3-vl-30b"]


# --- end to end: lines the gateway wrote ---------------------------------------------------


def record_gateway_lines() -> str:
    """Requests through the gateway `mvgen gateway --gpu h100` runs, in front of the vLLM
    stand-in, logged with the generated apps' format ("%(asctime)s %(name)s %(message)s")."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logger = logging.getLogger("mvgen.gateway")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    models = ModelTable([ServedModel("gemma-3-12b", "google/gemma-3-12b-it", ("gemma-3-12b",))])
    chat = {"model": "gemma-3-12b", "messages": [{"role": "user", "content": "Hi"}]}
    try:
        with standin(served_names=["google/gemma-3-12b-it"], chunks=5, chunk_delay=0.02) as up:
            with temporary_env(KEY_ENV, API_KEY):
                app = build_local_app(models, {"gemma-3-12b": up.url}, api_key_env=KEY_ENV,
                                      gpu="h100")  # fmt: skip
            with serve_asgi(app) as url, client(url) as c:
                for _ in range(3):
                    assert c.post("/v1/chat/completions", json={**chat, "stream": True}).is_success
                assert c.post("/v1/chat/completions", json=chat).is_success
                up.config.mode = "error"
                assert c.post("/v1/chat/completions", json=chat).status_code == 400
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return buffer.getvalue()


def test_stats_of_lines_the_gateway_wrote(tmp_path, fake_modal):
    recorded = record_gateway_lines().splitlines()
    assert len(recorded) == 5
    vllm = '(APIServer pid=7) INFO:     127.0.0.1:40000 - "POST /v1/completions HTTP/1.1" 200 OK'
    text = "\n".join(line for pair in zip(recorded, [vllm] * 5, strict=True) for line in pair)
    root = project(tmp_path)
    fake_modal.write(logs={"vllm-h100": text + "\n"})
    [gemma] = stats_json(root, "--gpu", "h100", "--model", "gemma-3-12b")["models"]
    assert gemma["requests"] == 5 and gemma["streamed"] == 3
    assert gemma["errors"] == {"upstream_400": 1}
    assert gemma["cold_starts"] == 0
    # Five tokens 20 ms apart after the first chunk's 20 ms: about 4 / 0.1 s.
    assert 5 <= gemma["tokens_per_s"]["stream_p50"] <= 60
    assert gemma["ttft_ms"]["p50"] >= 20
    assert gemma["tokens_per_s"]["answer_p50"] > 0
