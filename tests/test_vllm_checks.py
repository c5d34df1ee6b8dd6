"""`mvgen validate` checks every vLLM option offline, against the data committed for
image.vllm: extra_args flags and values, tool_parser, reasoning_parser and quantization,
flags mvgen sets itself, and secrets. Each error names its path, the value and the fix."""

from __future__ import annotations

import json

import pytest
from conftest import BASE_CONFIG, run_cli

from mvgen.config import load_plan
from mvgen.errors import ConfigError, Problem

SK = "sk-live-4f9a8b7c6d5e4f3a2b1c"  # made-up secrets: the shapes matter, not the values
HF = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"


def with_defaults(**settings: object) -> str:
    return (
        BASE_CONFIG
        + "defaults:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())
    )


def problems_of(write_config, text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_plan(write_config(text))
    return caught.value.problems


def only_problem(write_config, text: str) -> Problem:
    found = problems_of(write_config, text)
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


def test_valid_extra_args_pass(write_config) -> None:
    args = [
        "--max-num-partial-prefills",
        "2",
        "--kv-cache-dtype",
        "fp8",
        "--max-num-batched-tokens=2048",
    ]
    plan = load_plan(write_config(with_defaults(extra_args=args)))
    assert all(d.vllm_command()[-len(args) :] == args for d in plan.deployments)


# -------------------------------------------------------------- unknown flags


def test_unknown_flag_gets_the_nearest(write_config) -> None:
    problem = only_problem(write_config, with_defaults(extra_args=["--max-num-sequences", "16"]))
    assert problem.path == "defaults.extra_args[0]"  # once, though four pairs inherit it
    assert "'--max-num-sequences' is not a `vllm serve` option in vLLM 0.12.0" in problem.message
    assert problem.hint == "did you mean '--max-num-seqs'?"
    assert problem.line is not None


def test_a_flag_of_another_version_is_unknown(write_config) -> None:
    # --guided-decoding-backend was replaced by --structured-outputs-config before 0.12.
    problem = only_problem(
        write_config, with_defaults(extra_args=["--guided-decoding-backend", "xgrammar"])
    )
    assert "'--guided-decoding-backend' is not" in problem.message


@pytest.mark.parametrize(
    ("args", "index", "reason"),
    [
        (["--max-num-batched-tokens"], 0, "missing its value"),
        (["--enable-prefix-caching=yes"], 0, "takes no value"),
        (["--max-num-batched-tokens", "4096", "stray"], 2, "unexpected positional"),
    ],
)
def test_malformed_items(write_config, args: list[str], index: int, reason: str) -> None:
    problem = only_problem(write_config, with_defaults(extra_args=args))
    assert problem.path == f"defaults.extra_args[{index}]"
    assert reason in problem.message


# ------------------------------------------------------------ values of choices


def test_tool_parser_typo(write_config) -> None:
    text = BASE_CONFIG.replace("tool_parser: hermes", "tool_parser: hermess")
    problem = only_problem(write_config, text)
    assert problem.path == "models.qwen3-vl-30b.tool_parser"
    assert "'hermess' is not a tool-call parser in vLLM 0.12.0" in problem.message
    assert problem.hint == "did you mean 'hermes'?"


def test_unknown_tool_parser_lists_the_choices(write_config) -> None:
    text = BASE_CONFIG.replace("tool_parser: hermes", "tool_parser: zzzz")
    problem = only_problem(write_config, text)
    assert problem.hint.startswith("one of: deepseek_v3, deepseek_v31,")
    assert "(27 in all)" in problem.hint and "--tool-parser-plugin" in problem.hint


def test_a_tool_parser_plugin_may_register_any_name(write_config) -> None:
    text = BASE_CONFIG.replace(
        "tool_parser: hermes",
        'tool_parser: my_parser\n    extra_args: ["--tool-parser-plugin", "/root/my_parser.py"]',
    )
    load_plan(write_config(text))


def test_quantization_typo_is_an_error_not_a_warning(write_config) -> None:
    text = BASE_CONFIG.replace("{quantization: fp8,", "{quantization: fp-8,")
    problem = only_problem(write_config, text)
    assert problem.path == "models.qwen3-vl-30b.per_gpu.l40s.quantization"
    assert "'fp-8' is not a quantization method in vLLM 0.12.0" in problem.message
    assert problem.hint == "did you mean 'fp8'?"


def test_quantization_path_names_the_layer_that_set_it(write_config) -> None:
    text = BASE_CONFIG.replace("{quantization: fp8, max_model_len: 8192}", "{max_model_len: 8192}")
    found = problems_of(write_config, text + "defaults:\n  quantization: fp-8\n")
    assert {p.path for p in found} == {"defaults.quantization"}


@pytest.mark.parametrize(
    ("args", "index", "value", "hint"),
    [
        (["--kv-cache-dtype", "fp9"], 1, "fp9", "did you mean 'fp8'?"),
        (["--kv-cache-dtype=fp9"], 0, "fp9", "did you mean 'fp8'?"),  # inline: the flag's item
        (["--load-format", "safetensor"], 1, "safetensor", "did you mean 'safetensors'?"),
        (["--dtype", "bf16"], 1, "bf16", "did you mean 'bfloat16'?"),
        (["--convert", "embeddings"], 1, "embeddings", "did you mean 'embed'?"),
        (["--convert", "embedd"], 1, "embedd", "did you mean 'embed'?"),
        (["--block-size", "24"], 1, "24", "one of: 1, 8, 16, 32, 64, 128, 256"),
    ],
)
def test_choice_values_in_extra_args(
    write_config, args: list[str], index: int, value: str, hint: str
) -> None:
    problem = only_problem(write_config, with_defaults(extra_args=args))
    assert problem.path == f"defaults.extra_args[{index}]"
    assert f"{value!r} is not a value of {args[0].split('=')[0]} in vLLM 0.12.0" in problem.message
    assert problem.hint == hint


def test_reasoning_parser_field(write_config) -> None:
    text = BASE_CONFIG.replace(
        "tool_parser: hermes", "tool_parser: hermes\n    reasoning_parser: qwen3"
    )
    plan = load_plan(write_config(text))
    command = next(d for d in plan.deployments if d.model.key == "qwen3-vl-30b").vllm_command()
    assert command[command.index("--reasoning-parser") + 1] == "qwen3"
    problem = only_problem(write_config, text.replace("qwen3\n", "qwen4\n", 1))
    assert problem.path == "models.qwen3-vl-30b.reasoning_parser"
    assert "'qwen4' is not a reasoning parser in vLLM 0.12.0" in problem.message
    assert problem.hint == "did you mean 'qwen3'?"


# ----------------------------------------------------------- flags mvgen sets

MANAGED = [
    (["--max-model-len", "4096"], "max_model_len"),
    (["--max_model_len=4096"], "max_model_len"),
    (["--gpu-memory-utilization", "0.5"], "gpu_memory_utilization"),
    (["--tensor-parallel-size", "2"], "gpu_count"),
    (["-tp", "2"], "gpu_count"),
    (["--quantization", "fp8"], "quantization"),
    (["-q", "fp8"], "quantization"),
    (["--served-model-name", "other"], "served_name and aliases"),
    (["--enforce-eager"], "fast_boot"),
    (["--no-enforce-eager"], "fast_boot"),
    (["--tool-call-parser", "hermes"], "tool_parser"),
    (["--enable-auto-tool-choice"], "tool_parser"),
    (["--reasoning-parser", "qwen3"], "reasoning_parser"),
    (["--limit-mm-per-prompt", '{"image": 1}'], "limit_mm_per_prompt"),
    (["--revision", "main"], "revision"),
    (["--enable-sleep-mode"], "gpu_snapshot"),
    (["--model", "org/other"], "hf_id (or per_gpu.<gpu>.checkpoint)"),
    (["--max-num-seqs", "16"], "max_num_seqs"),
    (["--runner", "pooling"], "kind"),
    (["--task", "embed"], "kind"),  # deprecated in 0.12 for --runner/--convert
]


@pytest.mark.parametrize(("args", "field"), MANAGED)
def test_flags_mvgen_sets_name_the_field(write_config, args: list[str], field: str) -> None:
    problem = only_problem(write_config, with_defaults(extra_args=args))
    assert problem.path == "defaults.extra_args[0]"
    assert f"mvgen sets {args[0].split('=')[0]} itself, from {field}" in problem.message
    assert problem.hint == f"remove it from extra_args and set {field} instead"


@pytest.mark.parametrize(
    "args", [["--host", "0.0.0.0"], ["--port", "9000"], ["--uds", "/tmp/v.sock"], ["--headless"]]
)
def test_flags_that_cut_the_gateway_off(write_config, args: list[str]) -> None:
    problem = only_problem(write_config, with_defaults(extra_args=args))
    assert "would cut the gateway off from vLLM" in problem.message


# ------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["--api-key", "letmein"], "secrets.api_key"),
        (["--api-key=letmein"], "secrets.api_key"),
        (["--hf-token"], "secrets.huggingface"),
    ],
)
def test_secret_flags_are_refused(write_config, args: list[str], where: str) -> None:
    problem = only_problem(write_config, with_defaults(extra_args=args))
    assert "would put a secret into the generated files" in problem.message
    assert where in problem.hint
    assert "letmein" not in problem.render()


@pytest.mark.parametrize(
    "args",
    [
        ["--chat-template", SK],
        ["--chat-template", HF],
        ["--hf-overrides", json.dumps({"token": HF})],  # inside a JSON value
        ["--chat-template", "ghp_" + "a1B2" * 9],
        ["--chat-template", "AKIAABCDEFGHIJKLMNOP"],
        ["--chat-template", "Bearer abcdefgh12345678"],
    ],
)
def test_secret_looking_values_are_refused(write_config, args: list[str]) -> None:
    problem = only_problem(write_config, with_defaults(extra_args=args))
    assert problem.path == "defaults.extra_args[1]"
    assert "looks like" in problem.message and "not shown" in problem.message
    assert args[1] not in problem.render()


def test_the_issue_example_never_echoes_the_key(write_config, tmp_path) -> None:
    config = write_config(with_defaults(extra_args=["--api-key", SK]))
    found = problems_of(write_config, config.read_text())
    assert [p.path for p in found] == ["defaults.extra_args[0]", "defaults.extra_args[1]"]
    result = run_cli("render", "--config", str(config), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "defaults.extra_args[1]" in result.output
    assert SK not in result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_plain_word_is_not_a_secret(write_config) -> None:
    load_plan(
        write_config(with_defaults(extra_args=["--chat-template", "sk-short", "--seed", "1"]))
    )


# -------------------------------------------------------------- paths and versions


def test_paths_name_the_layer_and_item(write_config) -> None:
    per_gpu = '["--seed", "1", "--max-num-seq", "8"]'
    text = BASE_CONFIG.replace(
        "l40s: {quantization: fp8, max_model_len: 8192}",
        "l40s: {quantization: fp8, max_model_len: 8192, extra_args: " + per_gpu + "}",
    ).replace(
        "hf_id: google/gemma-3-12b-it",
        'hf_id: google/gemma-3-12b-it\n    extra_args: ["--max-model-len", "8192"]',
    )
    found = problems_of(write_config, text + 'defaults:\n  extra_args: ["--seed", "2"]\n')
    paths = {p.path: p for p in found}
    assert set(paths) == {
        "models.gemma-3-12b.extra_args[0]",  # after defaults' two items in the command
        "models.qwen3-vl-30b.per_gpu.l40s.extra_args[2]",
    }
    assert paths["models.qwen3-vl-30b.per_gpu.l40s.extra_args[2]"].hint == (
        "did you mean '--max-num-seqs'?"
    )


def test_deprecated_flag_is_a_warning(write_config) -> None:
    plan = load_plan(write_config(with_defaults(extra_args=["--disable-log-requests"])))
    assert "defaults.extra_args[0]: --disable-log-requests is deprecated in vLLM 0.12.0" in (
        plan.warnings
    )


def test_a_version_without_data_is_refused(write_config) -> None:
    found = problems_of(write_config, BASE_CONFIG + "image:\n  vllm: 0.13.0\n")
    assert [p.path for p in found] == ["image.vllm"]
    assert "make vllm-data VLLM=0.13.0" in found[0].message
    assert found[0].line is not None


def test_the_newer_data_checks_a_newer_image(write_config) -> None:
    # --swap-space exists in 0.12.0 and not in 0.33.0: the check follows image.vllm.
    text = with_defaults(extra_args=["--swap-space", "4"])
    load_plan(write_config(text))
    problem = only_problem(write_config, text + "image:\n  vllm: 0.33.0\n")
    assert "'--swap-space' is not a `vllm serve` option in vLLM 0.33.0" in problem.message


def test_validate_cli_exit_code_and_hint(write_config) -> None:
    config = write_config(with_defaults(extra_args=["--max-num-sequences", "16"]))
    result = run_cli("validate", "--config", str(config))
    assert result.exit_code == 2
    assert "defaults.extra_args[0]" in result.output
    assert "did you mean '--max-num-seqs'?" in result.output
