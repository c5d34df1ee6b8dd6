"""The fit arithmetic against published figures, and the validation check's messages.

Published figures are those in shared/reference/facts.md (each model's config.json, nvidia-smi
memory): bf16 weights 24.4 / 54.9 / 62.1 GB; on an 80 GB GPU gemma-3-27b leaves about 15 GiB
of KV cache and Qwen3-VL about 7 GiB; neither fits one L40S in bf16; on H200 and B200 all
three fit.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from mvgen import fit
from mvgen.catalog import GPU_TYPES, known_architecture
from mvgen.config import build_plan, load_plan
from mvgen.errors import ConfigError, Problem
from mvgen.plan import Settings

ROOT = Path(__file__).resolve().parent.parent
GEMMA_12B = known_architecture("google/gemma-3-12b-it")
GEMMA_27B = known_architecture("google/gemma-3-27b-it")
QWEN = known_architecture("Qwen/Qwen3-VL-30B-A3B-Instruct")
EIGHTY_GB = ("A100-80GB", "H100")
BF16 = Settings()  # the defaults: bf16, 0.90 utilisation, one GPU, 32k tokens


def gpu(name: str):
    return GPU_TYPES[name]


# --- the arithmetic against facts.md ---------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "published_gb"), [(GEMMA_12B, 24.4), (GEMMA_27B, 54.9), (QWEN, 62.1)]
)
def test_bf16_weights_match_the_published_sizes(arch, published_gb: float) -> None:
    assert fit.weight_bytes(arch.params_b, None) / 1e9 == pytest.approx(published_gb, abs=0.05)


def test_fp8_roughly_halves_weights_and_4bit_roughly_quarters_them() -> None:
    bf16 = fit.weight_bytes(GEMMA_27B.params_b, None)
    fp8 = fit.weight_bytes(GEMMA_27B.params_b, "fp8")
    awq = fit.weight_bytes(GEMMA_27B.params_b, "awq")
    assert 0.5 < fp8 / bf16 < 0.6  # embeddings and the vision tower stay bf16
    assert 0.25 < awq / bf16 < fp8 / bf16


def test_unknown_quantization_makes_the_fit_unknown() -> None:
    assert fit.weight_bytes(QWEN.params_b, "mxfp4-someday") is None
    result = fit.assess(QWEN, gpu("H100"), replace(BF16, quantization="mxfp4-someday"))
    assert result.status == "unknown" and "mxfp4-someday" in result.reason


@pytest.mark.parametrize("gpu_name", EIGHTY_GB)
@pytest.mark.parametrize(("arch", "published_gib"), [(GEMMA_27B, 15), (QWEN, 7)])
def test_kv_budget_on_80gb_gpus_matches_the_published_figures(
    gpu_name: str, arch, published_gib: float
) -> None:
    result = fit.assess(arch, gpu(gpu_name), BF16)
    assert result.kv_budget_bytes / fit.GIB == pytest.approx(published_gib, abs=1.0)


def test_kv_budget_is_usable_memory_less_weights_and_overhead() -> None:
    h100 = gpu("H100")
    result = fit.assess(GEMMA_27B, h100, BF16)
    usable = h100.memory_mib * 2**20 * BF16.gpu_memory_utilization
    weights = GEMMA_27B.params_b * 1e9 * 2
    assert result.kv_budget_bytes == pytest.approx(usable - weights - result.overhead_bytes)


@pytest.mark.parametrize("arch", [GEMMA_27B, QWEN])
def test_neither_big_model_loads_on_one_l40s_in_bf16(arch) -> None:
    assert fit.assess(arch, gpu("L40S"), BF16).status == "no-load"


def test_gemma_12b_does_load_on_one_l40s_in_bf16() -> None:
    assert fit.assess(GEMMA_12B, gpu("L40S"), BF16).fits


@pytest.mark.parametrize("gpu_name", ["H200", "B200"])
@pytest.mark.parametrize("arch", [GEMMA_12B, GEMMA_27B, QWEN])
def test_all_three_fit_h200_and_b200_at_their_native_context(gpu_name: str, arch) -> None:
    native = replace(BF16, max_model_len=arch.max_context)
    assert fit.assess(arch, gpu(gpu_name), native).fits


@pytest.mark.parametrize("gpu_name", EIGHTY_GB)
def test_qwen_native_context_does_not_fit_80gb_and_must_be_capped(gpu_name: str) -> None:
    native = replace(BF16, max_model_len=QWEN.max_context)
    result = fit.assess(QWEN, gpu(gpu_name), native)
    assert result.status == "too-long"
    assert result.longest_len < QWEN.max_context
    capped = replace(BF16, max_model_len=result.longest_len)
    assert fit.assess(QWEN, gpu(gpu_name), capped).fits


def test_full_attention_kv_per_token_is_the_textbook_formula() -> None:
    # 2 x layers x KV heads x head dim x 2 bytes (facts.md), for a model without sliding layers
    layout = fit.kv_layout(QWEN, gpu_count=1, kv_dtype_bytes=2)
    assert layout.bytes_per_token == 2 * QWEN.layers * QWEN.kv_heads * QWEN.head_dim * 2


@pytest.mark.parametrize("arch", [GEMMA_12B, GEMMA_27B])
def test_only_gemmas_global_layers_grow_with_context(arch) -> None:
    layout = fit.kv_layout(arch, gpu_count=1, kv_dtype_bytes=2)
    global_layers = arch.layers // arch.global_layer_every
    assert layout.full_layers == global_layers
    assert layout.sliding_layers == arch.layers - global_layers
    assert layout.bytes_per_token == 2 * global_layers * arch.kv_heads * arch.head_dim * 2
    # past the window (and one prefill step), a longer sequence costs only the global layers
    batched = 2048
    start = arch.sliding_window + batched
    grown = fit.sequence_bytes(layout, start + 1024, batched) - fit.sequence_bytes(
        layout, start, batched
    )
    assert grown == 1024 * layout.bytes_per_token


def test_gemma_27b_sliding_layers_are_grouped_and_padded_like_vllm() -> None:
    # vLLM 0.12 groups layers by the smaller type's count (10 global) and pads the last
    # sliding group: 52 sliding layers take 6 groups of 10.
    layout = fit.kv_layout(GEMMA_27B, gpu_count=1, kv_dtype_bytes=2)
    assert layout.group_size == layout.full_layers
    assert layout.sliding_groups == math.ceil(layout.sliding_layers / layout.full_layers)
    assert layout.sliding_groups * layout.group_size > layout.sliding_layers


def test_sliding_layers_reserve_one_prefill_step_past_the_window() -> None:
    # vLLM's SlidingWindowSpec keeps window - 1 + max_num_batched_tokens tokens, so the
    # 8192-token default of H100-class GPUs costs more per sequence than A100's 2048.
    layout = fit.kv_layout(GEMMA_27B, gpu_count=1, kv_dtype_bytes=2)
    small = fit.sequence_bytes(layout, 32768, 2048)
    large = fit.sequence_bytes(layout, 32768, 8192)
    extra_blocks = layout.sliding_groups * (math.ceil(9215 / 16) - math.ceil(3071 / 16))
    assert large - small == extra_blocks * layout.block_bytes


def test_default_prefill_step_follows_vllms_device_rule() -> None:
    assert fit.default_batched_tokens(gpu("H100")) == 8192
    assert fit.default_batched_tokens(gpu("H200")) == 8192
    assert fit.default_batched_tokens(gpu("A100-80GB")) == 2048  # excluded by name in vLLM
    assert fit.default_batched_tokens(gpu("L40S")) == 2048


@pytest.mark.parametrize(
    "args",
    [("--max-num-batched-tokens", "2048"), ("--max-num-batched-tokens=2048",)],
)
def test_extra_args_override_the_prefill_step(args: tuple[str, ...]) -> None:
    tuned = fit.assess(GEMMA_27B, gpu("H100"), replace(BF16, extra_args=args))
    default = fit.assess(GEMMA_27B, gpu("H100"), BF16)
    assert tuned.batched_tokens == 2048 and default.batched_tokens == 8192
    assert tuned.sequences > default.sequences


def test_fp8_kv_cache_halves_kv_per_token() -> None:
    h200 = gpu("H200")
    bf16 = fit.assess(QWEN, h200, BF16)
    fp8 = fit.assess(QWEN, h200, replace(BF16, extra_args=("--kv-cache-dtype", "fp8")))
    assert fp8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token
    odd = fit.assess(QWEN, h200, replace(BF16, extra_args=("--kv-cache-dtype", "int3")))
    assert odd.status == "unknown"


def test_tensor_parallel_splits_weights_and_kv_heads() -> None:
    one = fit.assess(GEMMA_27B, gpu("L40S"), BF16)
    two = fit.assess(GEMMA_27B, gpu("L40S"), replace(BF16, gpu_count=2))
    assert two.weight_bytes == pytest.approx(one.weight_bytes / 2)
    assert two.kv_bytes_per_token * 2 == one.kv_bytes_per_token
    assert not one.fits and two.fits


def test_sequences_are_vllms_blocks_over_blocks_per_request() -> None:
    # Qwen3-VL has only full attention: one group of every layer, ceil(len / 16) blocks.
    result = fit.assess(QWEN, gpu("H200"), BF16)
    per_token = 2 * QWEN.layers * QWEN.kv_heads * QWEN.head_dim * 2
    blocks = result.kv_budget_bytes // (16 * per_token)
    assert result.sequences == pytest.approx(blocks / math.ceil(BF16.max_model_len / 16))
    assert result.sequence_bytes == BF16.max_model_len * per_token


def test_longest_len_is_the_edge_of_fitting() -> None:
    result = fit.assess(QWEN, gpu("A100-80GB"), BF16)
    at = fit.assess(QWEN, gpu("A100-80GB"), replace(BF16, max_model_len=result.longest_len))
    past = replace(BF16, max_model_len=result.longest_len + fit.MAX_LEN_STEP)
    assert at.sequences >= 1
    assert fit.assess(QWEN, gpu("A100-80GB"), past).sequences < 1


# --- the validation check ---------------------------------------------------------------


def base() -> dict[str, Any]:
    return {
        "workspace": "acme",
        "gpus": {"l40s": {"type": "L40S"}, "a100": {"type": "A100-80GB"}},
        "models": {
            "gemma-3-27b": {"hf_id": "google/gemma-3-27b-it", "gpus": ["l40s"]},
            "qwen3-vl-30b": {
                "hf_id": "Qwen/Qwen3-VL-30B-A3B-Instruct",
                "gpus": ["a100"],
                "max_model_len": 16384,
            },
        },
    }


def refusals(data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        build_plan(data)
    return info.value.problems


def suggested(problem: Problem) -> list[str]:
    assert problem.hint and problem.hint.startswith("fixes: ")
    return problem.hint.removeprefix("fixes: ").split("; ")


def apply_fix(data: dict[str, Any], model: str, gpu_key: str, fix: str) -> dict[str, Any]:
    """The config with one suggested fix applied, as a user would edit it."""
    out = copy.deepcopy(data)
    if fix.startswith("a GPU type where it fits"):
        out["gpus"][gpu_key]["type"] = fix.split(": ", 1)[1].split(", ")[0]
        return out
    key, value = fix.split(": ")
    per_gpu = out["models"][model].setdefault("per_gpu", {}).setdefault(gpu_key, {})
    per_gpu[key] = yaml.safe_load(value)
    return out


def test_a_pair_that_cannot_load_is_refused_with_fixes_that_work() -> None:
    data = base()
    [problem] = refusals(data)
    assert problem.path == "models.gemma-3-27b.per_gpu.l40s"
    assert "cannot load" in problem.message and "bf16" in problem.message
    fixes = suggested(problem)
    assert "quantization: fp8" in fixes
    assert any(f.startswith("gpu_count: ") for f in fixes)
    assert any(f.startswith("a GPU type where it fits") for f in fixes)
    for each in fixes:
        build_plan(apply_fix(data, "gemma-3-27b", "l40s", each))  # each one alone is enough


def test_a_sequence_too_long_for_the_kv_cache_is_refused_with_the_longest_that_fits() -> None:
    data = base()
    data["models"]["gemma-3-27b"]["per_gpu"] = {"l40s": {"quantization": "fp8"}}
    data["models"]["qwen3-vl-30b"]["max_model_len"] = QWEN.max_context
    [problem] = refusals(data)
    assert problem.path == "models.qwen3-vl-30b.per_gpu.a100"
    assert f"one {QWEN.max_context}-token sequence needs" in problem.message
    fixes = suggested(problem)
    [length] = [f for f in fixes if f.startswith("max_model_len: ")]
    longest = int(length.split(": ")[1])
    assert longest < QWEN.max_context
    assert "quantization: fp8" not in fixes  # A100 has no FP8 tensor cores
    for each in fixes:
        build_plan(apply_fix(data, "qwen3-vl-30b", "a100", each))
    one_step_more = apply_fix(data, "qwen3-vl-30b", "a100", f"max_model_len: {longest + 256}")
    assert refusals(one_step_more)


def test_fp8_is_only_suggested_where_it_would_fit() -> None:
    data = base()
    data["models"]["gemma-3-27b"]["per_gpu"] = {"l40s": {"max_model_len": GEMMA_27B.max_context}}
    data["models"]["qwen3-vl-30b"]["gpus"] = ["l40s"]
    data["models"]["qwen3-vl-30b"]["max_model_len"] = QWEN.max_context
    for problem in refusals(data):
        model = problem.path.split(".")[1]
        arch = GEMMA_27B if model == "gemma-3-27b" else QWEN
        settings = replace(BF16, max_model_len=arch.max_context, quantization="fp8")
        would_fit = fit.assess(arch, gpu("L40S"), settings).fits
        assert ("quantization: fp8" in suggested(problem)) == would_fit


def test_few_full_length_sequences_warn_with_a_configurable_threshold() -> None:
    data = base()
    data["models"]["gemma-3-27b"]["per_gpu"] = {"l40s": {"quantization": "fp8"}}
    figures = fit.assess(GEMMA_27B, gpu("L40S"), replace(BF16, quantization="fp8"))
    above = math.floor(figures.sequences) + 1
    data["fit"] = {"min_sequences": above}
    warned = [w for w in build_plan(data).warnings if "gemma-3-27b.per_gpu.l40s" in w]
    assert len(warned) == 1 and f"fit.min_sequences: {above}" in warned[0]
    data["fit"] = {"min_sequences": math.floor(figures.sequences)}
    assert not [w for w in build_plan(data).warnings if "gemma-3-27b" in w]


def test_the_threshold_defaults_to_four_and_is_validated() -> None:
    data = base()
    data["models"]["gemma-3-27b"]["per_gpu"] = {"l40s": {"quantization": "fp8"}}
    assert build_plan(data).fit_min_sequences == 4
    data["fit"] = {"min_sequences": -1}
    assert any(p.path.startswith("fit") for p in refusals(data))
    data["fit"] = {"min_seqs": 2}
    assert any("min_seqs" in p.message or "min_seqs" in p.path for p in refusals(data))


def test_unknown_architecture_warns_fit_unknown_and_a_declared_one_is_checked() -> None:
    data = base()
    data["models"] = {"mystery": {"hf_id": "acme/mystery-7b"}}
    [warning] = [w for w in build_plan(data).warnings if "mystery" in w]
    assert "fit unknown" in warning and "architecture" in warning
    data["models"]["mystery"]["architecture"] = {
        "params_b": 70,
        "layers": 80,
        "kv_heads": 8,
        "head_dim": 128,
        "max_context": 131072,
    }
    problems = refusals(data)  # 140 GB of bf16 weights fit neither GPU
    assert {p.path for p in problems} == {
        "models.mystery.per_gpu.l40s",
        "models.mystery.per_gpu.a100",
    }


def test_the_committed_config_fits_every_pair_with_the_wanted_margin() -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    assert len(plan.deployments) == 15
    assert not [w for w in plan.warnings if "fit" in w or "sequences" in w]
    for d in plan.deployments:
        assert fit.assess_deployment(d).sequences >= plan.fit_min_sequences, d.route
