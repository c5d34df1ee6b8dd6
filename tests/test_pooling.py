"""Pooling models in deployments.yaml: `kind` becomes vLLM 0.12's own flags, the generated
model table carries it to the gateway, and validation refuses a kind the checkpoint's
config.json contradicts. Checkpoint facts come from recorded config.json files of real
models (tests/data/hf): BAAI/bge-m3 (an XLMRobertaModel embedder), BAAI/bge-reranker-v2-m3
(an XLMRobertaForSequenceClassification cross-encoder) and Qwen/Qwen3-30B-A3B (a
*ForCausalLM)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hub_standin import recorded_entry_parts

from mvgen.config import load_plan
from mvgen.errors import ConfigError
from mvgen.lock import Lock, LockEntry, entry_key, lock_path, write_lock
from mvgen.plan import Plan
from mvgen.pooling import runner_args
from mvgen.render import render_files
from mvgen.runtime.models import models_from_literal
from mvgen.vllm_flags import accepted_flags, check_serve_argv

EMBEDDER = "BAAI/bge-m3"
RERANKER = "BAAI/bge-reranker-v2-m3"
DECODER = "Qwen/Qwen3-30B-A3B"
QWEN3_RERANKER_ARGS = (
    '[--hf-overrides, \'{"architectures": ["Qwen3ForSequenceClassification"], '
    '"classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}\']'
)


def entry(hf_id: str, **config: Any) -> LockEntry:
    parts = recorded_entry_parts(hf_id)
    return LockEntry(
        hf_id, None, None, "recorded", {**parts["config"], **config}, parts["parameters"]
    )


def write(tmp_path: Path, models: str, *entries: LockEntry, mode: str = "gpu") -> Path:
    path = tmp_path / "deployments.yaml"
    text = f"mode: {mode}\nworkspace: acme\ngpus:\n  h100: {{type: H100}}\nmodels:\n"
    path.write_text(text + textwrap.indent(textwrap.dedent(models), "  "))
    write_lock(lock_path(path), Lock({entry_key(e.hf_id, None): e for e in entries}))
    return path


def plan_of(tmp_path: Path, models: str, *entries: LockEntry, mode: str = "gpu") -> Plan:
    return load_plan(write(tmp_path, models, *entries, mode=mode))


def problems_of(tmp_path: Path, models: str, *entries: LockEntry) -> list[Any]:
    with pytest.raises(ConfigError) as refused:
        load_plan(write(tmp_path, models, *entries))
    return refused.value.problems


BOTH = f"""\
bge-m3:
  hf_id: {EMBEDDER}
  kind: embed
  max_model_len: 8192
bge-reranker:
  hf_id: {RERANKER}
  kind: rerank
  max_model_len: 8192
"""


# --- the flags ---------------------------------------------------------------------------


def test_kinds_render_vllm_012s_runner_flags(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BOTH, entry(EMBEDDER), entry(RERANKER))
    commands = {d.model.key: d.vllm_command() for d in plan.deployments}
    for command in commands.values():
        runner = command.index("--runner")
        assert command[runner + 1] == "pooling"
        assert "--convert" not in command and "--task" not in command
        assert not check_serve_argv(command, accepted_flags("0.12.0"))


def test_an_embedder_built_on_a_causal_lm_is_converted_explicitly() -> None:
    from mvgen.catalog import Architecture

    qwen = Architecture(1.0, 28, 8, 128, 32768, hf_architectures=("Qwen3ForCausalLM",))
    bert = Architecture(0.5, 24, 16, 64, 8192, hf_architectures=("XLMRobertaModel",))
    assert runner_args("chat", qwen, ()) == []
    assert runner_args("embed", qwen, ()) == ["--runner", "pooling", "--convert", "embed"]
    assert runner_args("embed", bert, ()) == ["--runner", "pooling"]
    assert runner_args("embed", None, ()) == ["--runner", "pooling"]  # not locked: vLLM's auto
    # the user's own --convert wins, and is not doubled
    assert runner_args("embed", qwen, ("--convert=embed",)) == ["--runner", "pooling"]
    assert runner_args("rerank", qwen, ()) == ["--runner", "pooling"]


def test_chat_models_keep_their_command_and_table_entry(tmp_path: Path) -> None:
    models = BOTH + f"chatty:\n  hf_id: {DECODER}\n  max_model_len: 8192\n"
    plan = plan_of(tmp_path, models, entry(EMBEDDER), entry(RERANKER), entry(DECODER))
    chat = next(d for d in plan.deployments if d.model.key == "chatty")
    assert "--runner" not in chat.vllm_command()
    app_file = render_files(plan)["generated/vllm_h100.py"]
    namespace: dict[str, Any] = {}
    start = app_file.index("MODELS = ")
    exec(app_file[start : app_file.index("\n}\n", start) + 3], namespace)  # the literal only
    table = namespace["MODELS"]
    assert "kind" not in table["chatty"]  # chat is the default and is not written
    assert (table["bge-m3"]["kind"], table["bge-reranker"]["kind"]) == ("embed", "rerank")
    served = models_from_literal(table)
    assert {m.key: m.kind for m in served.models} == {
        "bge-m3": "embed",
        "bge-reranker": "rerank",
        "chatty": "chat",
    }


def test_legacy_apps_carry_the_kind_too(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BOTH, entry(EMBEDDER), entry(RERANKER), mode="legacy")
    files = render_files(plan)
    assert '"kind": "embed"' in files["generated/vllm_bge_m3_h100.py"]
    assert '"kind": "rerank"' in files["generated/vllm_bge_reranker_h100.py"]


def test_an_unknown_kind_in_a_model_table_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'classify'"):
        models_from_literal({"x": {"served_name": "x/y", "kind": "classify"}})


# --- validation against config.json ----------------------------------------------------------


def test_matching_kinds_validate(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BOTH, entry(EMBEDDER), entry(RERANKER))
    assert [m.kind for m in plan.models] == ["embed", "rerank"]


def test_a_classifier_declared_embed_is_refused(tmp_path: Path) -> None:
    models = f"reranker:\n  hf_id: {RERANKER}\n  kind: embed\n  max_model_len: 8192\n"
    (problem,) = problems_of(tmp_path, models, entry(RERANKER))
    assert problem.path == "models.reranker.kind" and problem.line == 8
    assert "XLMRobertaForSequenceClassification, a classifier" in problem.message
    assert "/v1/embeddings" in problem.message
    assert problem.hint.startswith("set kind: rerank")


def test_an_embedder_declared_chat_is_refused(tmp_path: Path) -> None:
    models = f"embedder:\n  hf_id: {EMBEDDER}\n  max_model_len: 8192\n"
    (problem,) = problems_of(tmp_path, models, entry(EMBEDDER))
    assert problem.path == "models.embedder.kind"
    assert problem.line == 7  # no kind: line, so the model's
    assert "XLMRobertaModel, a pooling model that generates no text" in problem.message
    assert problem.hint == "set kind: embed"


def test_a_reranker_declared_chat_is_told_to_say_rerank(tmp_path: Path) -> None:
    models = f"r:\n  hf_id: {RERANKER}\n  max_model_len: 8192\n"
    (problem,) = problems_of(tmp_path, models, entry(RERANKER))
    assert problem.hint == "set kind: rerank"


@pytest.mark.parametrize("hf_id", [EMBEDDER, DECODER])
def test_rerank_on_a_model_that_is_no_cross_encoder_is_refused(tmp_path: Path, hf_id) -> None:
    models = f"r:\n  hf_id: {hf_id}\n  kind: rerank\n  max_model_len: 8192\n"
    (problem,) = problems_of(tmp_path, models, entry(hf_id))
    assert problem.path == "models.r.kind"
    assert "not a cross-encoder" in problem.message and "cosine similarity" in problem.message
    assert "--hf-overrides" in problem.hint and "Qwen3ForSequenceClassification" in problem.hint


def test_qwen3_reranker_overrides_are_the_users_to_make(tmp_path: Path) -> None:
    models = f"r:\n  hf_id: {DECODER}\n  kind: rerank\n  max_model_len: 8192\n"
    models += f"  extra_args: {QWEN3_RERANKER_ARGS}\n"
    plan = plan_of(tmp_path, models, entry(DECODER))
    command = plan.deployments[0].vllm_command()
    assert command[command.index("--runner") + 1] == "pooling"
    overrides = json.loads(command[command.index("--hf-overrides") + 1])
    assert overrides["architectures"] == ["Qwen3ForSequenceClassification"]


def test_a_classifier_with_two_labels_cannot_rerank(tmp_path: Path) -> None:
    two = entry(RERANKER, id2label={"0": "NO", "1": "YES"})
    models = f"r:\n  hf_id: {RERANKER}\n  kind: rerank\n  max_model_len: 8192\n"
    (problem,) = problems_of(tmp_path, models, two)
    assert "a classifier with 2 labels" in problem.message
    assert "num_labels == 1" in problem.message


@pytest.mark.parametrize("field", ["tool_parser: hermes", "reasoning_parser: qwen3"])
def test_text_fields_on_a_pooling_model_are_refused(tmp_path: Path, field: str) -> None:
    models = f"e:\n  hf_id: {EMBEDDER}\n  kind: embed\n  max_model_len: 8192\n  {field}\n"
    (problem,) = problems_of(tmp_path, models, entry(EMBEDDER))
    name = field.split(":")[0]
    assert problem.path == f"models.e.{name}"
    assert "an embedding model (kind: embed)" in problem.message


def test_an_unlocked_pooling_model_is_not_second_guessed(tmp_path: Path) -> None:
    models = "e:\n  hf_id: org/unknown-embedder\n  kind: embed\n"
    plan = plan_of(tmp_path, models)
    assert plan.warnings  # its fit is unknown, and says so
    command = plan.deployments[0].vllm_command()
    assert command[command.index("--runner") + 1] == "pooling" and "--convert" not in command


def test_kind_is_checked_by_the_schema(tmp_path: Path) -> None:
    models = f"e:\n  hf_id: {EMBEDDER}\n  kind: embedding\n"
    (problem,) = problems_of(tmp_path, models, entry(EMBEDDER))
    assert problem.path == "models.e.kind"
    assert "'embedding'" in problem.message


# --- the fit: no sampler, and no KV cache for encoders ---------------------------------------


def test_an_encoder_has_no_kv_cache_and_loads_in_fp16(tmp_path: Path) -> None:
    from mvgen.fit import GIB, assess_deployment

    plan = plan_of(tmp_path, BOTH, entry(EMBEDDER), entry(RERANKER))
    for d in plan.deployments:
        fit = assess_deployment(d)
        params = recorded_entry_parts(d.checkpoint.hf_id)["parameters"]["F32"]
        assert fit.fits and not fit.kv_cache and fit.pooling
        # fp32 on the Hub, fp16 in vLLM 0.12 (_resolve_auto_dtype), on an H100
        assert fit.weight_bytes == params * 2
        # no chunked prefill for an encoder: one whole max_model_len sequence, or the
        # 8192-token default if larger; the pooler's fp32 vector per token, not a sampler
        assert fit.batched_tokens == 8192
        assert fit.sampler_bytes == 8192 * 1024 * 4
        assert fit.sequences == 0 and fit.longest_len == 8192
        assert 60 < fit.kv_budget_bytes / GIB < 70  # left beside 1.1 GiB and one step


def test_a_decoder_embedder_keeps_its_kv_cache_but_runs_no_sampler(tmp_path: Path) -> None:
    from mvgen.fit import assess_deployment

    chat = f"q:\n  hf_id: {DECODER}\n  max_model_len: 8192\n"
    embed = chat + "  kind: embed\n"
    as_chat = assess_deployment(plan_of(tmp_path, chat, entry(DECODER)).deployments[0])
    as_embed = assess_deployment(plan_of(tmp_path, embed, entry(DECODER)).deployments[0])
    assert as_embed.kv_cache and as_embed.pooling and not as_chat.pooling
    assert as_embed.weight_bytes == as_chat.weight_bytes
    assert as_embed.sampler_bytes < as_chat.sampler_bytes / 10
    gained = as_chat.profile_bytes - as_embed.profile_bytes
    assert gained > 0
    assert as_embed.kv_budget_bytes == pytest.approx(as_chat.kv_budget_bytes + gained)
    assert as_embed.sequences > as_chat.sequences


def test_an_encoder_too_big_for_its_gpu_is_refused_in_words(tmp_path: Path) -> None:
    models = """\
    huge:
      hf_id: org/huge-encoder
      kind: embed
      max_model_len: 512
      architecture: {params_b: 39, layers: 48, kv_heads: 32, head_dim: 128, max_context: 512,
                     encoder_only: true}
    """
    (problem,) = problems_of(tmp_path, models)
    assert problem.path == "models.huge.per_gpu.h100"
    assert "does not fit: 72.6 GiB of bf16 weights" in problem.message
    assert "activations for a 8192-token step" in problem.message


def test_plan_json_shows_the_kind_and_no_kv_figures_for_an_encoder(tmp_path: Path) -> None:
    from conftest import run_cli

    path = write(tmp_path, BOTH, entry(EMBEDDER), entry(RERANKER))
    result = run_cli("plan", "--config", str(path), "--json")
    rows = {r["model"]: r for app in json.loads(result.output)["apps"] for r in app["models"]}
    assert {k: r["kind"] for k, r in rows.items()} == {"bge-m3": "embed", "bge-reranker": "rerank"}
    fit = rows["bge-m3"]["fit"]
    assert fit["kv_cache"] is False and fit["sequences"] is None and fit["kv_budget_gib"] is None
    assert fit["headroom_gib"] > 60 and fit["weights_gib"] == 1.06
    assert rows["bge-m3"]["weights"] == "fp16"
    text = run_cli("plan", "--config", str(path)).output
    assert "bge-m3 (embed)" in text and "bge-reranker (rerank)" in text
    assert "none (" in text and "has no KV cache" in text


# --- the rendered apps, under the real modal package -----------------------------------------


@pytest.mark.parametrize("mode", ["gpu", "legacy"])
def test_rendered_apps_with_pooling_models_import_under_modal(tmp_path: Path, mode: str) -> None:
    from conftest import run_cli
    from test_modal_apps import check_app, check_legacy_app, import_app

    path = write(tmp_path, BOTH, entry(EMBEDDER), entry(RERANKER), mode=mode)
    out = tmp_path / "out"
    assert run_cli("render", "--config", str(path), "--output-dir", str(out)).exit_code == 0
    plan = load_plan(path)
    for app in plan.apps:
        file = out / "generated" / app.filename
        (check_app if mode == "gpu" else check_legacy_app)(plan, app, file)
        table = models_from_literal(import_app(file).MODELS)
        for d in app.deployments:
            assert table.resolve(d.model.key).kind == d.model.kind
        if mode == "gpu":  # the comment over the gateway names the routes
            assert "/v1/embeddings, /v1/rerank and /v1/score" in file.read_text()


# --- LiteLLM ------------------------------------------------------------------------------------


def test_litellm_routes_use_the_mode_of_the_kind(tmp_path: Path) -> None:
    from mvgen.litellm_config import litellm_config

    models = BOTH + f"chatty:\n  hf_id: {DECODER}\n  max_model_len: 8192\n"
    plan = plan_of(tmp_path, models, entry(EMBEDDER), entry(RERANKER), entry(DECODER))
    config = litellm_config(plan)
    routes = {r["model_name"]: r for r in config["routes"]}
    assert routes["bge-m3-h100"]["model_info"] == {"mode": "embedding", "max_input_tokens": 8192}
    assert routes["bge-reranker-h100"]["model_info"] == {"mode": "rerank", "max_input_tokens": 8192}
    assert routes["chatty-h100"]["model_info"]["mode"] == "chat"
    # hosted_vllm appends /embeddings and /rerank to api_base: the gateway's /v1 routes
    params = routes["bge-m3-h100"]["litellm_params"]
    assert params["model"] == f"hosted_vllm/{EMBEDDER}"
    assert params["api_base"] == "https://acme--vllm-h100-serve.modal.run/v1"
    groups = {g["name"]: g for g in config["groups"]}
    assert groups["bge-reranker"]["deployments"][0]["model_info"]["mode"] == "rerank"


def test_generated_files_with_a_long_override_pass_ruff(tmp_path: Path) -> None:
    """The Qwen3-Reranker example of docs/configuration.md: its --hf-overrides value is
    longer than a line, and generated files are linted with the project."""
    import subprocess
    import sys

    from conftest import ROOT, run_cli

    models = "qwen3-reranker:\n  hf_id: Qwen/Qwen3-Reranker-0.6B\n  kind: rerank\n"
    models += f"  max_model_len: 8192\n  extra_args: {QWEN3_RERANKER_ARGS}\n"
    for mode in ("gpu", "legacy"):
        out = tmp_path / mode
        path = write(tmp_path, models, mode=mode)
        assert run_cli("render", "--config", str(path), "--output-dir", str(out)).exit_code == 0
        ruff = [sys.executable, "-m", "ruff"]
        settings = ["--config", str(ROOT / "pyproject.toml")]
        for args in (["check"], ["format", "--check"]):
            done = subprocess.run(
                [*ruff, *args, *settings, str(out / "generated")], capture_output=True, text=True
            )
            assert done.returncode == 0, done.stdout + done.stderr
        assert "is_original_qwen3_reranker" in next((out / "generated").glob("*.py")).read_text()


def test_adding_the_documented_pooling_models_the_readme_way(tmp_path: Path) -> None:
    """docs/configuration.md's example added to a copy of the committed config, then what
    `make render` runs (lock --missing against the Hub stand-in, render), validate and plan."""
    import shutil

    from conftest import ROOT, add_models_the_readme_way, committed_models, run_cli
    from gateway_fixtures import serve_asgi
    from hub_standin import HubStandin

    for name in ("deployments.yaml", "deployments.lock.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    config = tmp_path / "deployments.yaml"
    names, ids = committed_models(config)
    if {"bge-m3", "bge-reranker"} & names or {EMBEDDER, RERANKER} & ids:
        pytest.skip("deployments.yaml already serves the documented pooling models")
    gpu = next(iter(load_plan(config).gpus)).key
    example = "".join(
        f"{line}\n  gpus: [{gpu}]\n" if "kind:" in line else f"{line}\n"
        for line in BOTH.splitlines()
    )
    add_models_the_readme_way(config, example)
    out = ["--config", str(config)]
    with serve_asgi(HubStandin().app()) as hub:
        env = {"HF_ENDPOINT": hub, "HF_TOKEN": None}
        locked = run_cli("lock", "--missing", *out, env=env)
    assert locked.exit_code == 0, locked.output
    assert run_cli("render", *out, "--output-dir", str(tmp_path)).exit_code == 0
    assert run_cli("validate", *out).exit_code == 0
    planned = run_cli("plan", "--json", *out, "--output-dir", str(tmp_path))
    assert planned.exit_code == 0, planned.output
    rows = [m for a in json.loads(planned.stdout)["apps"] for m in a["models"]]
    pooling = {r["model"]: r for r in rows if r["kind"] != "chat"}
    assert set(pooling) == {"bge-m3", "bge-reranker"}
    for row in pooling.values():
        assert row["fit"]["status"] == "fits" and row["fit"]["kv_cache"] is False


# --- LoRA adapters: chat models only -------------------------------------------------------------


@pytest.mark.parametrize(
    ("hf_id", "kind"), [(EMBEDDER, "embed"), (RERANKER, "rerank"), (DECODER, "embed")]
)
def test_lora_adapters_on_a_pooling_model_are_refused(
    tmp_path: Path, hf_id: str, kind: str
) -> None:
    """vLLM 0.12 refuses --enable-lora on its BERT and XLM-RoBERTa encoders at start
    (v1/worker/lora_model_runner_mixin.py: "... does not support LoRA yet"; BertModel and
    the XLM-R classes do not implement SupportsLoRA); a decoder embedder would load one, but
    mvgen serves adapters as chat models, so both are refused before anything is rendered."""
    models = f"p:\n  hf_id: {hf_id}\n  kind: {kind}\n  max_model_len: 8192\n"
    models += "  adapters:\n    notes: {path: adapters/notes, rank: 16}\n"
    (problem,) = problems_of(tmp_path, models, entry(hf_id))
    assert problem.path == "models.p.adapters"
    assert f"(kind: {kind})" in problem.message and "chat models only" in problem.message
    assert problem.hint == "remove adapters:, or put the adapters on a chat model"
    chat = models.replace(f"  kind: {kind}\n", "") if hf_id == DECODER else None
    if chat is not None:  # the same adapter on the same checkpoint served for chat is fine
        assert [a.name for a in plan_of(tmp_path, chat, entry(hf_id)).adapters] == ["notes"]


def test_an_app_serves_adapters_and_pooling_models_side_by_side(tmp_path: Path) -> None:
    """A chat model with an adapter beside the two BAAI models: the vLLM commands, the
    gateway's model table and mvgen plan each keep both features."""
    from conftest import run_cli

    qwen = "Qwen/Qwen2.5-7B-Instruct"
    models = BOTH + f"qwen:\n  hf_id: {qwen}\n  max_model_len: 8192\n"
    models += "  adapters:\n    notes: {path: adapters/notes, rank: 16}\n"
    path = write(tmp_path, models, entry(EMBEDDER), entry(RERANKER), entry(qwen))
    plan = load_plan(path)
    commands = {d.model.key: d.vllm_command() for d in plan.deployments}
    assert "--enable-lora" in commands["qwen"] and "--runner" not in commands["qwen"]
    for key in ("bge-m3", "bge-reranker"):
        assert "--runner" in commands[key] and "--enable-lora" not in commands[key]
    app_file = render_files(plan)["generated/vllm_h100.py"]
    namespace: dict[str, Any] = {}
    start = app_file.index("MODELS = ")
    exec(app_file[start : app_file.index("\n}\n", start) + 3], namespace)  # the literal only
    assert namespace["MODELS"]["qwen"]["adapters"][0]["name"] == "notes"
    table = models_from_literal(namespace["MODELS"])
    notes = table.target("notes")
    assert notes is not None and notes.model.key == "qwen" and notes.model.kind == "chat"
    assert table.resolve("bge-m3").kind == "embed"
    assert table.resolve("bge-reranker").kind == "rerank"
    shown = run_cli("plan", "--config", str(path)).output
    assert "bge-m3 (embed)" in shown and "1 x r16:" in shown
    rows = {
        r["model"]: r
        for a in json.loads(run_cli("plan", "--config", str(path), "--json").output)["apps"]
        for r in a["models"]
    }
    assert rows["qwen"]["kind"] == "chat" and rows["qwen"]["adapters"]["names"] == ["notes"]
    assert rows["qwen"]["fit"]["lora_gib"] > 0 and rows["qwen"]["fit"]["kv_cache"] is True
    assert rows["bge-m3"]["adapters"] is None and rows["bge-m3"]["fit"]["kv_cache"] is False
