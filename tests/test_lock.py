"""`mvgen lock` and deployments.lock.json: model facts read once from the Hugging Face Hub,
then read offline by validate, render and plan.

The Hub here is a stand-in on 127.0.0.1 (tests/hub_standin.py), serving recorded copies of
real config.json files (tests/data/hf); huggingface_hub talks to it through HF_ENDPOINT.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    SEED_CONFIG,
    SEED_LOCK,
    add_models_the_readme_way,
    committed_models,
    run_cli,
)
from gateway_fixtures import serve_asgi
from hub_standin import HubStandin, recorded_entry_parts, sha_of

from mvgen.config import load_plan
from mvgen.errors import ConfigError
from mvgen.lock import lock_path, lock_text, read_lock

sys.path.insert(0, str(ROOT / "tests" / "data" / "hf"))
import build_lock  # noqa: E402  (tests/data/hf/build_lock.py)

TOKEN = "hf_standin_token_0123456789"  # a made-up token the stand-in accepts for Gemma

CONFIG = """\
workspace: acme
gpus:
  h100: {type: H100}
  l40s: {type: L40S}
models:
  gemma-3-27b:
    hf_id: google/gemma-3-27b-it
    max_model_len: 16384
    per_gpu:
      l40s: {checkpoint: google/gemma-3-12b-it, max_model_len: 8192}
  qwen3-vl-30b:
    hf_id: Qwen/Qwen3-VL-30B-A3B-Instruct
    gpus: [h100]
    max_model_len: 16384
    limit_mm_per_prompt: {image: 2, video: 0}
"""


@pytest.fixture
def hub() -> Iterator[tuple[HubStandin, str]]:
    standin = HubStandin(gated={"google/gemma-3-27b-it": TOKEN, "google/gemma-3-12b-it": TOKEN})
    with serve_asgi(standin.app()) as url:
        yield standin, url


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "deployments.yaml"
    path.write_text(CONFIG)
    return path


def lock_cmd(config: Path, url: str, *args: str, token: str | None = TOKEN):
    env = {"HF_ENDPOINT": url, "HF_TOKEN": token}
    return run_cli("lock", "--config", str(config), *args, env=env)


def closed_port() -> str:
    """A loopback URL nothing listens on: the Hub is unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_lock_records_what_the_hub_says_for_every_checkpoint(hub, config: Path) -> None:
    standin, url = hub
    result = lock_cmd(config, url)
    assert result.exit_code == 0, result.output
    lock = read_lock(lock_path(config))
    assert lock is not None
    assert sorted(e.hf_id for e in lock.entries.values()) == [
        "Qwen/Qwen3-VL-30B-A3B-Instruct",
        "google/gemma-3-12b-it",  # the per-GPU checkpoint is locked too
        "google/gemma-3-27b-it",
    ]
    for entry in lock.entries.values():
        parts = recorded_entry_parts(entry.hf_id)
        assert entry.config == parts["config"]
        assert entry.parameters == parts["parameters"]
        assert entry.preprocessor == parts["preprocessor"]
        assert entry.sha == sha_of(entry.hf_id) and entry.source == url
    # the gated repos got the token; it is in no output and not in the lock
    gated = [r for r in standin.requests if "/google/" in r.path and "/resolve/" in r.path]
    assert gated and all(r.authorization == f"Bearer {TOKEN}" for r in gated)
    assert TOKEN not in result.output
    assert TOKEN not in lock_path(config).read_text()


def test_validate_render_and_plan_read_the_lock_offline(hub, config: Path) -> None:
    _, url = hub
    assert lock_cmd(config, url).exit_code == 0
    plan = load_plan(config)  # no network: nothing here knows the Hub's URL
    by_route = {d.route: d for d in plan.deployments}
    assert by_route["gemma-3-27b-h100"].architecture.layers == 62
    assert by_route["gemma-3-27b-l40s"].checkpoint.hf_id == "google/gemma-3-12b-it"
    assert by_route["gemma-3-27b-l40s"].architecture.layers == 48  # the checkpoint's own
    assert not [w for w in plan.warnings if "unknown" in w]
    out = tmp_out = config.parent
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    planned = run_cli("plan", "--json", "--config", str(config), "--output-dir", str(tmp_out))
    rows = [m for a in json.loads(planned.stdout)["apps"] for m in a["models"]]
    assert {r["fit"]["status"] for r in rows} == {"fits"}


def test_missing_reads_only_new_checkpoints_and_needs_no_hub_otherwise(hub, config: Path) -> None:
    standin, url = hub
    assert lock_cmd(config, url).exit_code == 0
    before = lock_path(config).read_text()
    # nothing missing: no request at all, so an unreachable Hub does not matter
    quiet = lock_cmd(config, closed_port(), "--missing")
    assert quiet.exit_code == 0, quiet.output
    assert lock_path(config).read_text() == before
    # a new model: only its checkpoint is read
    config.write_text(CONFIG + "  mistral-7b:\n    hf_id: mistralai/Mistral-7B-Instruct-v0.3\n")
    standin.requests.clear()
    result = lock_cmd(config, url, "--missing")
    assert result.exit_code == 0, result.output
    assert standin.requests
    assert all("/mistralai/Mistral-7B-Instruct-v0.3" in r.path for r in standin.requests)
    lock = read_lock(lock_path(config))
    assert lock.get("mistralai/Mistral-7B-Instruct-v0.3", None) is not None
    assert lock.get("google/gemma-3-27b-it", None) is not None  # kept


def test_check_names_the_command_and_reads_nothing(hub, config: Path) -> None:
    standin, url = hub
    missing = lock_cmd(config, url, "--check")
    assert missing.exit_code == 1
    assert "google/gemma-3-27b-it" in missing.stderr and "make lock" in missing.stderr
    assert standin.requests == []
    assert lock_cmd(config, url).exit_code == 0
    assert lock_cmd(config, url, "--check").exit_code == 0


def test_a_missing_entry_leaves_the_fit_unknown_with_the_fix(config: Path) -> None:
    plan = load_plan(config)  # no lock at all
    warnings = [w for w in plan.warnings if "fit unknown" in w]
    assert warnings and all("make lock" in w for w in warnings)
    assert any("architecture: {params_b:" in w for w in warnings)  # the mapping the schema wants
    result = run_cli("plan", "--config", str(config), "--output-dir", str(config.parent))
    assert "fit unknown: gemma-3-27b on H100" in result.stdout
    assert "make lock" in result.stdout


def test_a_pinned_revision_needs_its_own_entry(hub, config: Path) -> None:
    _, url = hub
    assert lock_cmd(config, url).exit_code == 0
    config.write_text(
        CONFIG.replace(
            "    max_model_len: 16384\n    per_gpu",
            "    revision: v2\n    max_model_len: 16384\n    per_gpu",
            1,
        )
    )
    plan = load_plan(config)
    [warning] = [w for w in plan.warnings if "gemma-3-27b" in w and "revision" in w]
    assert "google/gemma-3-27b-it at revision v2 has no entry" in warning and "make lock" in warning
    assert lock_cmd(config, url, "--missing").exit_code == 0
    assert read_lock(lock_path(config)).get("google/gemma-3-27b-it", "v2") is not None


def test_a_mistyped_id_names_the_nearest_ones(hub, config: Path) -> None:
    _, url = hub
    config.write_text(CONFIG.replace("google/gemma-3-27b-it", "google/gemma-3-27b-itt"))
    result = lock_cmd(config, url)
    assert result.exit_code == 2
    assert "models.gemma-3-27b.hf_id: no model 'google/gemma-3-27b-itt'" in result.stderr
    assert "did you mean google/gemma-3-27b-it" in result.stderr
    assert not lock_path(config).exists()  # nothing half-written


def test_a_gated_model_without_a_token_says_what_to_do(hub, config: Path) -> None:
    _, url = hub
    result = lock_cmd(config, url, token=None)
    assert result.exit_code == 2
    assert "gated" in result.stderr and "HF_TOKEN" in result.stderr
    assert not lock_path(config).exists()


def test_an_unreachable_hub(config: Path) -> None:
    url = closed_port()
    refused = lock_cmd(config, url)
    assert refused.exit_code == 1 and f"cannot reach {url}" in refused.stderr
    # make render's --missing goes on without the facts, saying so
    tolerant = lock_cmd(config, url, "--missing")
    assert tolerant.exit_code == 0
    assert "fit stays unknown" in tolerant.stderr and "make lock" in tolerant.stderr


def test_a_damaged_lock_is_a_clear_error(config: Path) -> None:
    lock_path(config).write_text("{not json")
    with pytest.raises(ConfigError) as info:
        load_plan(config)
    assert "deployments.lock.json" in info.value.render() and "make lock" in info.value.render()
    result = run_cli("validate", "--config", str(config))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_declared_architecture_overrides_the_lock(hub, config: Path) -> None:
    _, url = hub
    assert lock_cmd(config, url).exit_code == 0
    declared = "{params_b: 27.4, layers: 62, kv_heads: 16, head_dim: 128, max_context: 8192}"
    config.write_text(
        CONFIG.replace(
            "    max_model_len: 16384\n    per_gpu",
            f"    architecture: {declared}\n    max_model_len: 8192\n    per_gpu",
            1,
        )
    )
    plan = load_plan(config)
    h100 = next(d for d in plan.deployments if d.route == "gemma-3-27b-h100")
    assert h100.architecture.max_context == 8192 and h100.architecture.vocab_size is None


def test_the_lock_file_is_deterministic() -> None:
    lock = read_lock(SEED_LOCK)
    assert lock_text(lock) == SEED_LOCK.read_text()
    keys = list(json.loads(SEED_LOCK.read_text())["checkpoints"])
    assert keys == sorted(keys)


def test_the_seed_lock_is_built_from_the_recordings() -> None:
    """tests/data/hf/build_lock.py made it offline; its provenance says so."""
    built = build_lock.build(SEED_CONFIG)
    assert lock_text(built) == SEED_LOCK.read_text()
    assert "without network access" in built.provenance
    derived = [e for e in built.entries.values() if e.source.startswith("derived")]
    assert sorted(e.hf_id for e in derived) == [
        "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
        "RedHatAI/gemma-3-27b-it-FP8-dynamic",
    ]


def test_the_committed_config_has_a_complete_lock() -> None:
    """Holds for any committed deployments.yaml: CI needs no network."""
    result = run_cli("lock", "--check", "--config", str(ROOT / "deployments.yaml"))
    assert result.exit_code == 0, result.output
    plan = load_plan(ROOT / "deployments.yaml")
    assert all(d.architecture is not None for d in plan.deployments)


# Chat models (7-8B) the Hub stand-in has recordings of.
RECORDED_CHAT_MODELS = (
    "mistralai/Mistral-7B-Instruct-v0.3",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
)


def new_chat_model(config: Path) -> tuple[str, str]:
    """A model name and recorded hf_id the config does not have yet (any committed file)."""
    names, ids = committed_models(config)
    hf_id = next((i for i in RECORDED_CHAT_MODELS if i not in ids), None)
    if hf_id is None:
        pytest.skip("deployments.yaml already serves every chat model the Hub stand-in records")
    name = next(
        f"added-model-{n}" for n in range(len(names) + 1) if f"added-model-{n}" not in names
    )
    return name, hf_id


def test_adding_a_model_the_readme_way(hub, tmp_path: Path) -> None:
    """Three lines under models:, then what `make render` runs (lock --missing, render),
    then validate, plan and render --check, as CI would. On a config with a GPU too small
    for a 7B model, render refuses that pair with its fixes and writes nothing instead."""
    _, url = hub
    for name in ("deployments.yaml", "deployments.lock.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("generated", "litellm"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    config = tmp_path / "deployments.yaml"
    name, hf_id = new_chat_model(config)
    add_models_the_readme_way(config, f"{name}:\n  hf_id: {hf_id}\n")
    out = ["--config", str(config)]
    assert lock_cmd(config, url, "--missing").exit_code == 0
    assert run_cli("lock", "--check", *out).exit_code == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != config}
    rendered = run_cli("render", *out, "--output-dir", str(tmp_path))
    if rendered.exit_code != 0:  # the plan knows the model: a misfit is refused, with fixes
        assert rendered.exit_code == 2, rendered.output
        assert f"models.{name}.per_gpu." in rendered.output and "hint: fixes:" in rendered.output
        after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != config}
        assert after == before  # nothing half-written
        return
    assert run_cli("validate", *out).exit_code == 0
    planned = run_cli("plan", "--json", *out, "--output-dir", str(tmp_path))
    assert planned.exit_code == 0, planned.output
    rows = [m for a in json.loads(planned.stdout)["apps"] for m in a["models"]]
    added = [r for r in rows if r["model"] == name]
    assert added and all(r["fit"]["status"] == "fits" for r in added)
    assert run_cli("render", "--check", *out, "--output-dir", str(tmp_path)).exit_code == 0


def test_a_locked_config_mvgen_cannot_size_leaves_the_fit_unknown(hub, config: Path) -> None:
    _, url = hub
    assert lock_cmd(config, url).exit_code == 0
    data = json.loads(lock_path(config).read_text())
    entry = data["checkpoints"]["qwen/qwen3-vl-30b-a3b-instruct"]
    entry["config"]["text_config"]["kv_lora_rank"] = 512  # as if it used latent attention
    lock_path(config).write_text(json.dumps(data))
    plan = load_plan(config)
    [warning] = [w for w in plan.warnings if "qwen3-vl-30b" in w]
    assert "cannot be sized" in warning and "kv_lora_rank" in warning


def test_a_per_gpu_revision_pins_a_per_gpu_checkpoint_only(config: Path) -> None:
    config.write_text(CONFIG.replace("{checkpoint: google/gemma-3-12b-it, ", "{revision: abc, "))
    result = run_cli("validate", "--config", str(config))
    assert result.exit_code == 2
    assert "models.gemma-3-27b.per_gpu.l40s.revision" in result.output
    assert "models.gemma-3-27b.revision" in result.output and "checkpoint:" in result.output


# --- LoRA adapters: only their adapter_config.json is read ----------------------------------

ADAPTER = "Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver"  # recorded: tests/data/hf/README.md
WITH_ADAPTER = """\
workspace: acme
gpus:
  h100: {type: H100}
models:
  qwen-7b:
    hf_id: Qwen/Qwen2.5-7B-Instruct
    max_model_len: 8192
    adapters:
      mcq: {hf_id: Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver}
      volume: {path: adapters/volume, rank: 8}
"""


def test_lock_reads_each_adapters_config_from_the_hub(hub, config: Path) -> None:
    standin, url = hub
    config.write_text(WITH_ADAPTER)
    result = lock_cmd(config, url)
    assert result.exit_code == 0, result.output
    assert "1 checkpoints, 1 adapter" in result.output
    lock = read_lock(lock_path(config))
    [entry] = lock.adapters.values()
    recorded = ROOT / "tests/data/hf" / ADAPTER.replace("/", "--") / "adapter_config.json"
    assert entry.config == json.loads(recorded.read_text())
    assert (entry.hf_id, entry.sha, entry.source) == (ADAPTER, sha_of(ADAPTER), url)
    # an adapter has no config.json to ask for; the Volume adapter is not on the Hub at all
    adapter_reads = [r.path for r in standin.requests if ADAPTER in r.path]
    assert any(p.endswith("/adapter_config.json") for p in adapter_reads)
    assert not any(p.endswith("/config.json") for p in adapter_reads)
    assert not [r for r in standin.requests if "volume" in r.path]
    plan = load_plan(config)  # offline
    assert plan.adapters[0].rank == 16
    assert plan.adapters[0].facts.base_model == "Qwen/Qwen2.5-7B-Instruct"
    # nothing missing now: --check passes, --missing asks nothing
    assert lock_cmd(config, url, "--check").exit_code == 0
    standin.requests.clear()
    assert lock_cmd(config, closed_port(), "--missing").exit_code == 0
    assert standin.requests == []


def test_a_lock_without_adapters_has_no_adapters_section(hub, config: Path) -> None:
    _, url = hub
    assert lock_cmd(config, url).exit_code == 0
    assert "adapters" not in json.loads(lock_path(config).read_text())


def test_a_new_adapter_is_read_by_missing_and_named_by_check(hub, config: Path) -> None:
    standin, url = hub
    config.write_text(WITH_ADAPTER.replace("      mcq: {hf_id: " + ADAPTER + "}\n", ""))
    assert lock_cmd(config, url).exit_code == 0
    config.write_text(WITH_ADAPTER)
    check = lock_cmd(config, url, "--check")
    assert check.exit_code == 1
    assert f"no entry for {ADAPTER} (models.qwen-7b.adapters.mcq.hf_id)" in check.stderr
    standin.requests.clear()
    assert lock_cmd(config, url, "--missing").exit_code == 0
    assert standin.requests and all(ADAPTER in r.path for r in standin.requests)
    assert read_lock(lock_path(config)).adapter(ADAPTER, None) is not None


def test_a_model_repo_named_as_an_adapter_is_refused(hub, config: Path) -> None:
    _, url = hub
    config.write_text(WITH_ADAPTER.replace(ADAPTER, "mistralai/Mistral-7B-Instruct-v0.3"))
    result = lock_cmd(config, url)
    assert result.exit_code == 2
    assert "models.qwen-7b.adapters.mcq.hf_id: mistralai/Mistral-7B-Instruct-v0.3 has no " in (
        result.stderr
    )
    assert "adapter_config.json" in result.stderr
    assert not lock_path(config).exists()


def test_a_checkpoint_without_safetensors_is_locked_and_sized_from_its_shapes(
    hub, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM 0.12 loads *.bin checkpoints too; the Hub gives no safetensors sizes for them."""
    import hub_standin

    recordings = tmp_path / "hf"
    shutil.copytree(hub_standin.RECORDED, recordings)
    (recordings / "mistralai--Mistral-7B-Instruct-v0.3" / "safetensors.json").unlink()
    monkeypatch.setattr(hub_standin, "RECORDED", recordings)
    _, url = hub
    mistral = "mistralai/Mistral-7B-Instruct-v0.3"
    config.write_text(
        f"workspace: acme\ngpus: {{h100: {{type: H100}}}}\nmodels:\n  m: {{hf_id: {mistral}}}\n"
    )
    locked = lock_cmd(config, url)
    assert locked.exit_code == 0, locked.output
    (entry,) = json.loads(lock_path(config).read_text())["checkpoints"].values()
    assert entry["safetensors_parameters"] is None
    planned = run_cli("plan", "--json", "--config", str(config), "--output-dir", str(tmp_path))
    (row,) = [m for a in json.loads(planned.stdout)["apps"] for m in a["models"]]
    assert row["fit"]["status"] == "fits"
