"""A corpus of bad configs: each error names its path, the bad value and the fix."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import BASE_CONFIG, SEED_CONFIG, run_cli

from mvgen.catalog import GPU_ALIASES, GPU_TYPES, modal_gpu_names
from mvgen.config import build_plan, load_plan
from mvgen.errors import ConfigError


def errors_for(write_config, text: str) -> str:
    path = write_config(text, lock=True)  # the models' shapes, for the checks that need them
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    return info.value.render()


def replace(old: str, new: str) -> str:
    assert old in BASE_CONFIG, old
    return BASE_CONFIG.replace(old, new)


CASES = [
    # (what, config text, fragments the message must contain)
    ("unknown top-level key", BASE_CONFIG + "modee: gpu\n", ["modee", "did you mean 'mode'"]),
    ("bad mode", replace("mode: gpu", "mode: gpus"), ["mode", "'gpus'", "legacy"]),
    (
        "unknown model key",
        replace("tool_parser: hermes", "tool_parsr: hermes"),
        ["models.qwen3-vl-30b.tool_parsr", "did you mean 'tool_parser'"],
    ),
    (
        "unknown per_gpu setting",
        replace("{quantization: fp8, max_model_len: 8192}", "{quantisation: fp8}"),
        ["models.qwen3-vl-30b.per_gpu.l40s.quantisation", "did you mean 'quantization'"],
    ),
    (
        "unknown gpu in model.gpus",
        replace(
            "hf_id: google/gemma-3-12b-it", "hf_id: google/gemma-3-12b-it\n    gpus: [l40s, h10]"
        ),
        ["models.gemma-3-12b.gpus[1]", "'h10'", "did you mean 'h100'"],
    ),
    (
        "per_gpu names an undefined gpu",
        replace("l40s: {quantization: fp8, max_model_len: 8192}", "a100: {quantization: fp8}"),
        ["models.qwen3-vl-30b.per_gpu.a100", "unknown GPU 'a100'"],
    ),
    (
        "unknown GPU type",
        replace("{type: H100}", "{type: H1000}"),
        ["gpus.h100.type", "'H1000'", "did you mean 'H100'"],
    ),
    (
        "upper-case model name",
        replace("gemma-3-12b:", "Gemma_3:"),
        ["models.Gemma_3", "not valid", "did you mean 'gemma-3'"],
    ),
    (
        "double dash in a name",
        replace("l40s: {type: L40S}", "l40s--x: {type: L40S}"),
        ["gpus.l40s--x", "single dashes"],
    ),
    (
        "wrong type",
        replace("endpoint_limit: 8", "endpoint_limit: eight"),
        ["endpoint_limit", "'eight'", "integer"],
    ),
    (
        "missing hf_id",
        replace("hf_id: google/gemma-3-12b-it", "tool_parser: null"),
        ["models.gemma-3-12b", "'hf_id' is required"],
    ),
    (
        "bad hf_id",
        replace("google/gemma-3-12b-it", "gemma 3"),
        ["models.gemma-3-12b.hf_id", "'gemma 3'"],
    ),
    (
        "alias claimed twice",
        replace("tool_parser: hermes", "tool_parser: hermes\n    aliases: [gemma-3-12b]"),
        ["models.qwen3-vl-30b", "'gemma-3-12b'", "already claimed by models.gemma-3-12b"],
    ),
    (
        "served name claimed twice, case-insensitively",
        replace(
            "tool_parser: hermes", "tool_parser: hermes\n    served_name: Google/Gemma-3-12B-it"
        ),
        ["already claimed"],
    ),
    (
        "tensor parallel does not divide KV heads",
        replace("{quantization: fp8, max_model_len: 8192}", "{gpu_count: 3}"),
        ["models.qwen3-vl-30b.per_gpu.l40s.gpu_count", "4 KV heads over 3 GPUs", "1, 2, 4, 8"],
    ),
    (
        "max_model_len beyond the model's context",
        replace("max_model_len: 16384", "max_model_len: 300000"),
        ["models.qwen3-vl-30b.max_model_len", "262144"],
    ),
    (
        "scaledown_window out of Modal's range",
        BASE_CONFIG + "defaults:\n  scaledown_window: 7200\n",
        ["defaults.scaledown_window", "7200"],
    ),
    (
        "legacy mode needs more endpoints than the limit",
        replace("mode: gpu", "mode: legacy").replace("endpoint_limit: 8", "endpoint_limit: 3"),
        ["needs 4 web endpoints", "endpoint_limit is 3", "mode: gpu", "raise"],
    ),
    (
        "URL label too long",
        replace("workspace: acme", "workspace: " + "w" * 48),
        ["63", "shorten"],
    ),
    (
        "GPU snapshot with tensor parallelism",
        replace("{quantization: fp8, max_model_len: 8192}", "{gpu_count: 2, gpu_snapshot: true}"),
        ["models.qwen3-vl-30b.per_gpu.l40s.gpu_snapshot", "one GPU", "gpu_count 2"],
    ),
    (
        "GPU snapshot in legacy mode",
        replace("mode: gpu", "mode: legacy") + "defaults:\n  gpu_snapshot: true\n",
        ["gpu_snapshot", "need gpu mode"],
    ),
    (
        "both secrets set one variable",
        BASE_CONFIG
        + "secrets:\n  huggingface: {name: hf, key: TOKEN}\n  api_key: {name: keys, key: TOKEN}\n",
        ["secrets.api_key.key", "'TOKEN'", "overwrite each other", "different key names"],
    ),
    (
        "duplicate key",
        replace("  h100: {type: H100}", "  h100: {type: H100}\n  h100: {type: H200}"),
        ["gpus.h100", "duplicate key 'h100'", "first at line 6"],
    ),
    (
        "YAML syntax error",
        replace("mode: gpu", "mode: [gpu"),
        ["line 2, column 10: YAML syntax error", "flow sequence"],
    ),
]


@pytest.mark.parametrize(("what", "text", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_explained(write_config, what: str, text: str, fragments: list[str]) -> None:
    message = errors_for(write_config, text)
    for fragment in fragments:
        assert fragment in message, f"{what}: {fragment!r} missing from:\n{message}"


# Hints a new user met that pointed the wrong way (issue 12): each must say the real cause,
# and must no longer say what misled.
HINTS = [
    # (what, config text, fragments the message must contain, fragments it must not)
    (
        "two models with the same hf_id",
        BASE_CONFIG + "  gemma-copy:\n    hf_id: google/gemma-3-12b-it\n",
        ["models.gemma-copy.hf_id", "already the hf_id of models.gemma-3-12b", "listed once"],
        ["served_name or alias"],
    ),
    (
        "hf_id indented like a model name",
        replace("  gemma-3-12b:\n    hf_id:", "  gemma-3-12b:\n  hf_id:"),
        [
            "1 problem",
            "models.hf_id: 'hf_id' is a field of a model, not a model name",
            "indent it under the model",
            "models.gemma-3-12b (line 8) is empty",
        ],
        ["None should be object", "hf-id"],
    ),
    (
        "a memory size on a GPU name",
        replace("{type: H100}", "{type: H100-80GB}"),
        ["gpus.h100.type", "'H100-80GB'", "did you mean 'H100'?", "memory size"],
        ["'A100-80GB'?"],
    ),
    (
        "a tab in the indentation",
        replace("  h100: {type: H100}", "\th100: {type: H100}"),
        ["line 6, column 1", "tab", "YAML does not allow tabs in indentation", "spaces"],
        ["cannot start any token"],
    ),
    (
        "empty models",
        BASE_CONFIG[: BASE_CONFIG.index("models:") + len("models:\n")],
        ["models: is empty; it needs at least one model", "my-model: {hf_id: org/model-name}"],
        ["None should be object"],
    ),
    (
        "gpu_memory_utilization as a percentage",
        BASE_CONFIG + "defaults:\n  gpu_memory_utilization: 90\n",
        ["defaults.gpu_memory_utilization", "90", "a fraction", "did you mean 0.90?"],
        [],
    ),
]


@pytest.mark.parametrize(("what", "text", "must", "must_not"), HINTS, ids=[h[0] for h in HINTS])
def test_hint_says_the_real_cause(write_config, what, text, must, must_not) -> None:
    message = errors_for(write_config, text)
    for fragment in must:
        assert fragment in message, f"{what}: {fragment!r} missing from:\n{message}"
    for fragment in must_not:
        assert fragment not in message, f"{what}: {fragment!r} still in:\n{message}"


@pytest.mark.parametrize("name", [*modal_gpu_names(), "h100", "a10g", "b200+"])
def test_every_gpu_type_modal_accepts_is_recognised(write_config, name: str) -> None:
    """The names of https://modal.com/docs/guide/gpu, in any case, with memory and price."""
    text = replace("{type: H100}", f"{{type: {json.dumps(name)}}}").replace(
        "max_model_len: 16384", "max_model_len: 4096"
    )
    text = text.replace("{quantization: fp8, max_model_len: 8192}", "{max_model_len: 4096}")
    plan = build_plan(yaml.safe_load(text), skip_checks=("fit_check",))
    gpu = next(g for g in plan.gpus if g.key == "h100").type
    assert gpu.name == name.upper()
    base = GPU_TYPES[GPU_ALIASES.get(gpu.name, gpu.name)]
    assert (gpu.memory_mib, gpu.usd_per_hour) == (base.memory_mib, base.usd_per_hour)
    assert gpu.memory_mib > 10_000 and gpu.usd_per_hour


def test_all_errors_reported_at_once(write_config) -> None:
    text = replace("mode: gpu", "mode: gpus").replace("{type: H100}", "{type: H1000}")
    text += "extra: 1\n"
    problems = pytest.raises(ConfigError, load_plan, write_config(text)).value.problems
    paths = {p.path for p in problems}
    assert {"mode", "extra"} <= paths


def test_errors_carry_line_numbers(write_config) -> None:
    text = replace("tool_parser: hermes", "tool_parsr: hermes")
    (problem,) = pytest.raises(ConfigError, load_plan, write_config(text)).value.problems
    line = text.splitlines().index("    tool_parsr: hermes") + 1
    assert problem.line == line


def test_legacy_mode_of_seed_matrix_is_refused_with_advice(tmp_path) -> None:
    text = SEED_CONFIG.read_text().replace("\nmode: gpu", "\nmode: legacy")
    path = tmp_path / "deployments.yaml"
    path.write_text(text)
    message = pytest.raises(ConfigError, load_plan, path).value.render()
    assert "needs 15 web endpoints" in message
    assert "use mode: gpu" in message


def test_cli_exits_2_without_traceback_and_writes_nothing(write_config, tmp_path) -> None:
    path = write_config(replace("mode: gpu", "mode: gpus"))
    out = tmp_path / "out"
    result = run_cli("render", "--config", str(path), "--output-dir", str(out))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "mode" in result.output
    assert not out.exists()


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    result = run_cli("validate", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


@pytest.mark.parametrize(
    "hostile",
    [
        'evil"); import os; os.system("id"); ("',
        "x'''\nimport os\n'''",
        "a\\\nb",
        "{{ config }}",
    ],
)
def test_hostile_names_are_rejected(write_config, hostile: str) -> None:
    text = BASE_CONFIG + f"  {json.dumps(hostile)}:\n    hf_id: a/b\n"
    with pytest.raises(ConfigError) as info:
        load_plan(write_config(text))
    assert "not valid" in info.value.render()


def test_legacy_app_name_collision_is_refused(write_config) -> None:
    """`x-b` on GPU `c` and `x` on GPU `b-c` would both be app `vllm-x-b-c`."""
    text = """\
    mode: legacy
    endpoint_limit: 8
    gpus:
      c: {type: H100}
      b-c: {type: H200}
    models:
      x-b: {hf_id: org/one, gpus: [c]}
      x: {hf_id: org/two, gpus: [b-c]}
    """
    message = errors_for(write_config, text)
    assert "app name 'vllm-x-b-c' would be generated twice" in message
    assert "x-b-c" in message and "rename" in message
