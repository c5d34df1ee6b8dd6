"""`vllm serve` options from the data committed in mvgen/data/vllm (docs/vllm-flags.md).

The data is written from the real wheels by scripts/vllm_data.py; tests/test_vllm_data.py
checks that regenerating it gives the committed files. Nothing here needs a wheel.
"""

from __future__ import annotations

import json

import pytest

from mvgen.vllm_flags import (
    DATA_DIR,
    FlagSet,
    VllmDataMissing,
    accepted_flags,
    available_versions,
    check_serve_argv,
    unknown_flags,
)

PINNED = "0.12.0"
NEWER = "0.33.0"


@pytest.fixture(scope="session")
def pinned() -> FlagSet:
    return accepted_flags(PINNED)


@pytest.fixture(scope="session")
def newer() -> FlagSet:
    return accepted_flags(NEWER)


@pytest.fixture(params=[PINNED, NEWER])
def any_version(request: pytest.FixtureRequest) -> FlagSet:
    return accepted_flags(request.param)


# ------------------------------------------------------------ the committed data

# Each checked by hand in the 0.12.0 wheel: the add_argument call in
# vllm/engine/arg_utils.py or a FrontendArgs field in entrypoints/openai/
# cli_args.py, and the field type in vllm/config/*.py that sets its arity.
# nargs: 0 = takes no value, 1 = one value, "+" = one or more, "?" = optional.
PINNED_FLAGS = {
    "--served-model-name": "+",  # ModelConfig: str | list[str] | None
    "--max-model-len": 1,  # ModelConfig: SkipValidation[int]
    "--gpu-memory-utilization": 1,  # CacheConfig: float
    "--tensor-parallel-size": 1,  # ParallelConfig: int
    "-tp": 1,  # alias in the same add_argument call
    "--enforce-eager": 0,  # ModelConfig: bool -> BooleanOptionalAction
    "--no-enforce-eager": 0,
    "--enable-auto-tool-choice": 0,  # FrontendArgs: bool
    "--tool-call-parser": 1,  # FrontendArgs: str | None
    "--limit-mm-per-prompt": 1,  # MultiModalConfig.limit_per_prompt: dict (JSON)
    "--quantization": 1,  # ModelConfig: Literal[...] | None
    "-q": 1,
    "--host": 1,  # FrontendArgs: str | None
    "--port": 1,  # FrontendArgs: int
    "--api-key": "+",  # FrontendArgs: list[str] | None
    "--enable-sleep-mode": 0,  # ModelConfig: bool
    "--structured-outputs-config": 1,  # VllmConfig: a config dataclass (JSON)
    "--kv-cache-dtype": 1,  # CacheConfig.cache_dtype: Literal
    "--uvicorn-log-level": 1,  # FrontendArgs: Literal
    "--disable-log-requests": 0,  # explicit BooleanOptionalAction, deprecated
    "--enable-log-requests": 0,  # explicit BooleanOptionalAction
    "--swap-space": 1,  # CacheConfig: float
    "--trust-remote-code": 0,  # ModelConfig: bool
    "--enable-prefix-caching": 0,  # CacheConfig: bool
    "--max-num-seqs": 1,  # SchedulerConfig: int
    "--hf-token": "?",  # explicit nargs="?", const=True
    "--headless": 0,  # explicit store_true in make_arg_parser
    "--disable-log-stats": 0,  # explicit store_true
    "--optimization-level": 1,  # VllmConfig: OptimizationLevel (IntEnum)
    "--compilation-config": 1,  # VllmConfig: CompilationConfig (JSON)
    "-cc": 1,
    "--reasoning-parser": 1,  # StructuredOutputsConfig: str
    "--middleware": 1,  # FrontendArgs list made action="append", nargs deleted
    "--allowed-origins": 1,  # FrontendArgs list made json.loads, nargs deleted
    "--task": 1,  # deprecated but still defined in 0.12
    "--model": 1,  # still accepted in 0.12 (moved to the front by vLLM)
    "--help": 0,
}

# Absent from every add_argument call and every FrontendArgs field of 0.12.0.
PINNED_ABSENT = [
    "--guided-decoding-backend",  # replaced by --structured-outputs-config
    "--made-up-flag",
    "--no-disable-log-stats",  # store_true: no --no- form
    "--no-headless",
    "--no-swap-space",  # not a bool
    "--disable-enforce-eager",  # --enable/--disable pairs only exist from 0.33
    "--device",
    "--max-model",  # a prefix: argparse would take it, a template must not
]


def test_committed_versions() -> None:
    assert available_versions() == [PINNED, NEWER]


@pytest.mark.parametrize("version", [PINNED, NEWER])
def test_data_names_its_wheel_and_sources(version: str) -> None:
    data = json.loads((DATA_DIR / f"{version}.json").read_text())
    assert data["vllm"] == version
    assert data["wheel"].startswith(f"vllm-{version}-") and data["wheel"].endswith(".whl")
    assert len(data["wheel_sha256"]) == 64
    assert f"VLLM={version}" in data["made_by"]
    serve_parser = [
        "vllm/entrypoints/cli/serve.py",
        "vllm/engine/arg_utils.py",
        "vllm/utils/argparse_utils.py",
        "vllm/config/model.py",
        "vllm/config/cache.py",
    ]
    assert set(serve_parser) <= set(data["sources"])


def test_pinned_is_complete(pinned: FlagSet) -> None:
    assert len(pinned) > 200
    assert pinned.unchecked == ("--collect-detailed-traces",)  # choices += permutations(...)


def test_a_version_without_data_names_the_command() -> None:
    with pytest.raises(VllmDataMissing) as caught:
        accepted_flags("9.9.9")
    message = str(caught.value)
    assert "make vllm-data VLLM=9.9.9" in message
    assert "0.12.0" in message  # what is committed


@pytest.mark.parametrize(("flag", "nargs"), PINNED_FLAGS.items())
def test_pinned_accepts(pinned: FlagSet, flag: str, nargs: int | str) -> None:
    assert flag in pinned, f"{flag} missing from vLLM {PINNED}"
    assert pinned.flags[flag].nargs == nargs


@pytest.mark.parametrize("flag", PINNED_ABSENT)
def test_pinned_rejects(pinned: FlagSet, flag: str) -> None:
    assert flag not in pinned


def test_pinned_deprecations(pinned: FlagSet) -> None:
    deprecated = {f.option for f in pinned.flags.values() if f.deprecated}
    assert {"--task", "--disable-log-requests", "--cuda-graph-sizes"} <= deprecated
    assert "--enforce-eager" not in deprecated


# (flag, in 0.12.0, in 0.33.0), read from both wheels: the parser must see the
# difference, so it reads the versions' own definitions and not a fixed list.
ACROSS_VERSIONS = [
    ("--swap-space", True, False),
    ("--task", True, False),
    ("--disable-log-requests", True, True),  # 0.33: EnableDisableAction alias
    ("--disable-sleep-mode", False, True),  # the same, from --enable-sleep-mode
    ("--disable-enforce-eager", False, False),  # only --enable-/--disable- pair
    ("--enforce-eager", True, True),
    ("--structured-outputs-config", True, True),
    ("--guided-decoding-backend", False, False),
]


@pytest.mark.parametrize("version", [PINNED, NEWER])
@pytest.mark.parametrize(("flag", "in_pinned", "in_newer"), ACROSS_VERSIONS)
def test_flag_across_versions(version: str, flag: str, in_pinned: bool, in_newer: bool) -> None:
    flags = accepted_flags(version)
    expected = in_pinned if version == PINNED else in_newer
    assert (flag in flags) is expected


def test_newer_specifics(newer: FlagSet) -> None:
    # 0.33's --disable-log-requests only flips enable_log_requests back off.
    assert newer.flags["--disable-log-requests"].dest == "enable_log_requests"
    assert newer.flags["--hf-token"].nargs == "?"  # from `bool | str | None`


def test_swap_space_rejected_by_newer_only(pinned: FlagSet, newer: FlagSet) -> None:
    argv = ["vllm", "serve", "m/x", "--swap-space", "4", "--enforce-eager"]
    assert unknown_flags(argv, pinned) == []
    assert unknown_flags(argv, newer) == ["--swap-space"]


# Values read by hand in the 0.12.0 wheel: the Literal types in vllm/config/*.py (argparse
# choices), and the lists vLLM checks right after parsing.
PINNED_CHOICES = {
    # ModelConfig.runner: RunnerOption = Literal["auto", RunnerType] (pooling options)
    "--runner": ["auto", "draft", "generate", "pooling"],
    # ModelConfig.convert: ConvertOption = Literal["auto", ConvertType]
    "--convert": ["auto", "classify", "embed", "none", "reward"],
    # ModelConfig.task: TaskOption | None (deprecated)
    "--task": [
        "auto",
        "classify",
        "draft",
        "embed",
        "embedding",
        "generate",
        "reward",
        "score",
        "transcription",
    ],
    # ModelConfig.dtype: ModelDType | torch.dtype
    "--dtype": ["auto", "bfloat16", "float", "float16", "float32", "half"],
    # CacheConfig.cache_dtype: CacheDType
    "--kv-cache-dtype": [
        "auto",
        "bfloat16",
        "fp8",
        "fp8_ds_mla",
        "fp8_e4m3",
        "fp8_e5m2",
        "fp8_inc",
    ],
    # CacheConfig.block_size: BlockSize = Literal[1, 8, 16, 32, 64, 128, 256] (ints)
    "--block-size": [1, 8, 16, 32, 64, 128, 256],
}

# Options checked after argparse (the data says where the list was read).
PINNED_RUNTIME = {
    "--quantization": ({"fp8", "awq", "gptq", "compressed-tensors", "bitsandbytes"}, 31),
    "-q": ({"fp8"}, 31),
    "--tool-call-parser": ({"hermes", "mistral", "llama3_json", "qwen3_coder"}, 27),
    "--reasoning-parser": ({"qwen3", "deepseek_r1", "openai_gptoss"}, 15),
    "--load-format": ({"auto", "safetensors", "runai_streamer", "dummy"}, 14),
}

# Options where any string passes: Literal | str types get a metavar, not choices.
PINNED_FREE = ["--tokenizer-mode", "--model-impl", "--served-model-name", "--max-model-len"]


@pytest.mark.parametrize(("flag", "values"), PINNED_CHOICES.items())
def test_pinned_choices(pinned: FlagSet, flag: str, values: list) -> None:
    assert list(pinned.flags[flag].choices) == values


@pytest.mark.parametrize(("flag", "expected"), PINNED_RUNTIME.items())
def test_pinned_runtime_checked_values(pinned: FlagSet, flag: str, expected) -> None:
    some, count = expected
    choices = pinned.flags[flag].choices
    assert some <= set(choices)
    assert len(choices) == count


@pytest.mark.parametrize("flag", PINNED_FREE)
def test_pinned_free_values(pinned: FlagSet, flag: str) -> None:
    assert pinned.flags[flag].choices is None


@pytest.mark.parametrize(
    ("flag", "bad"),
    [
        ("--quantization", "fp-8"),
        ("--tool-call-parser", "hermess"),
        ("--reasoning-parser", "qwen4"),
        ("--kv-cache-dtype", "fp9"),
        ("--runner", "embed"),  # a --convert value, not a runner
    ],
)
def test_values_outside_the_choices(pinned: FlagSet, flag: str, bad: str) -> None:
    assert not pinned.flags[flag].accepts(bad)
    problems = check_serve_argv(["vllm", "serve", "m/x", flag, bad], pinned)
    assert [(p.token, p.reason, p.index) for p in problems] == [
        (flag, "value not among its choices", 4)
    ]


def test_int_choices_match_their_text(pinned: FlagSet) -> None:
    assert pinned.flags["--block-size"].accepts("16")
    assert not pinned.flags["--block-size"].accepts("17")


def test_newer_lists_differ(pinned: FlagSet, newer: FlagSet) -> None:
    # 0.33 added parsers and dropped quantization methods: the data follows each version.
    assert "gemma4" in newer.flags["--reasoning-parser"].choices
    assert "gemma4" not in pinned.flags["--reasoning-parser"].choices
    assert "gguf" in pinned.flags["--quantization"].choices
    assert "gguf" not in newer.flags["--quantization"].choices
    assert newer.unchecked == ("--log-level", "--mm-processor-device")


# ------------------------------------------------------------- argv checking

EXAMPLE = [
    "vllm",
    "serve",
    "google/gemma-3-12b-it",
    "--served-model-name",
    "a",
    "b",
    "--max-model-len",
    "32768",
    "--enforce-eager",
    "--limit-mm-per-prompt",
    '{"image": 4}',
]


def test_example_command_is_accepted(any_version: FlagSet) -> None:
    assert unknown_flags(EXAMPLE, any_version) == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--max-model-len=32768"],
        ["--max_model_len", "32768"],  # vLLM turns _ into - itself
        ["--gpu-memory-utilization", "0.9", "--port", "8000", "--host", "0.0.0.0"],
        ["--structured-outputs-config", '{"backend": "xgrammar"}'],
        ["--structured-outputs-config.backend", "xgrammar"],  # dotted JSON key
        ["-cc.cudagraph_mode=FULL"],
        ["-O0"],
        ["-O", "3"],
        ["-tp", "2", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
        ["--api-key", "k1", "k2", "--enable-sleep-mode"],
        ["--hf-token"],  # optional value
        ["--hf-token", "hf_x"],
        ["--no-enable-prefix-caching", "--seed", "-1"],  # negative number value
    ],
)
def test_accepted_forms(pinned: FlagSet, extra: list[str]) -> None:
    assert unknown_flags([*EXAMPLE, *extra], pinned) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--guided-decoding-backend", "xgrammar"], ["--guided-decoding-backend"]),
        (["--made-up-flag=1", "--port", "8000"], ["--made-up-flag"]),
        (["--made_up_flag"], ["--made_up_flag"]),  # reported as written
        (["--enforce-eager=true"], ["--enforce-eager"]),  # takes no value
        (["--max-model-len"], ["--max-model-len"]),  # missing its value
        (["--enforce-eager", "stray"], ["stray"]),
        (["--max-model", "1024"], ["--max-model"]),  # no prefixes
        (["--nope.key", "1"], ["--nope.key"]),
        (["--enforce-eager.key", "1"], ["--enforce-eager.key"]),  # no JSON value
    ],
)
def test_rejected_forms(pinned: FlagSet, extra: list[str], expected: list[str]):
    assert unknown_flags([*EXAMPLE, *extra], pinned) == expected


def test_flag_positions(pinned: FlagSet) -> None:
    argv = [*EXAMPLE, "--made-up", "1", "--kv-cache-dtype=fp9"]
    problems = check_serve_argv(argv, pinned)
    assert [(p.token, p.index) for p in problems] == [
        ("--made-up", 11),
        ("--kv-cache-dtype", 13),  # an inline value is at its flag's index
    ]


def test_api_key_value_never_reported(pinned: FlagSet) -> None:
    problems = check_serve_argv([*EXAMPLE, "--api-keys=sk-secret"], pinned)
    assert [p.token for p in problems] == ["--api-keys"]
    assert "sk-secret" not in repr(problems)


def test_flag_before_model(any_version: FlagSet) -> None:
    argv = ["vllm", "serve", "--max-model-len", "4096", "--enforce-eager", "org/m"]
    assert unknown_flags(argv, any_version) == [
        "--max-model-len",
        "--enforce-eager",
        "org/m",
    ]
    reasons = [p.reason for p in check_serve_argv(argv, any_version)]
    assert reasons[0] == "flag before the model"


def test_missing_model(pinned: FlagSet) -> None:
    # --served-model-name takes every word up to the next flag: no model is left.
    argv = ["vllm", "serve", "--served-model-name", "a", "org/m", "--port", "8000"]
    assert unknown_flags(argv, pinned) == ["--served-model-name", "<model>"]


def test_not_a_serve_command(pinned: FlagSet) -> None:
    with pytest.raises(ValueError, match="vllm serve"):
        unknown_flags(["python", "-m", "vllm.entrypoints.openai.api_server"], pinned)
