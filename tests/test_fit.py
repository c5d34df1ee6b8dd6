"""The fit arithmetic against published vLLM start-up logs, and the validation check.

Calibration points are in tests/data/vllm-startup-logs.json (docs/plan.md shows them as a
table with links): every one must land within fit.KV_TOLERANCE_GIB of the log. Model facts
come from recorded config.json files (tests/data/hf) through the same code `mvgen lock`
uses; seed-specific figures read the seed's own copy, tests/data/seed-deployments.yaml.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from typing import Any

import pytest
import yaml
from conftest import ROOT, SEED_CONFIG, SEED_LOCK

from mvgen import fit
from mvgen.catalog import GPU_TYPES, Architecture, Checkpoint, VisionTower
from mvgen.config import build_plan, load_plan
from mvgen.errors import ConfigError, Problem
from mvgen.hfconfig import read_checkpoint, rope_cache_bytes
from mvgen.lock import read_lock
from mvgen.plan import Settings

DATA = ROOT / "tests" / "data"
EVIDENCE = json.loads((DATA / "vllm-startup-logs.json").read_text())
GIB = fit.GIB
TOL = fit.KV_TOLERANCE_GIB
LOCK = read_lock(SEED_LOCK)


def recorded(folder: str) -> tuple[Architecture, Checkpoint]:
    path = DATA / "hf" / folder
    processor = path / "preprocessor_config.json"
    return read_checkpoint(
        folder.replace("--", "/", 1),
        json.loads((path / "config.json").read_text()),
        json.loads((path / "safetensors.json").read_text())["parameters"],
        preprocessor=json.loads(processor.read_text()) if processor.exists() else None,
    )


def locked(hf_id: str) -> tuple[Architecture, Checkpoint]:
    found = LOCK.facts(hf_id, None)
    assert not isinstance(found, str), found
    return found


GEMMA_12B, GEMMA_12B_CKPT = locked("google/gemma-3-12b-it")
GEMMA_27B, GEMMA_27B_CKPT = locked("google/gemma-3-27b-it")
QWEN, QWEN_CKPT = locked("Qwen/Qwen3-VL-30B-A3B-Instruct")
IMAGES_ONLY = {"image": 4, "video": 0}
BF16 = Settings(limit_mm_per_prompt=IMAGES_ONLY)  # defaults: 0.90, one GPU, 32k tokens


def gpu(name: str):
    return GPU_TYPES[name]


def shape_arch(shape: dict[str, Any]) -> Architecture:
    vision = shape.get("vision")
    tower = None
    if vision:
        tower = VisionTower(**{k: v for k, v in vision.items()})
    return Architecture(
        params_b=1.0,
        layers=shape.get("layers", 1),
        kv_heads=shape.get("kv_heads", 1),
        head_dim=shape.get("head_dim", 128),
        max_context=1 << 20,
        vision=tower is not None,
        vocab_size=shape.get("vocab_size"),
        hidden_size=shape.get("hidden_size"),
        intermediate_size=shape.get("intermediate_size"),
        vision_tower=tower,
    )


def point_arch(point: dict[str, Any]) -> tuple[Architecture, Checkpoint | None]:
    if "recorded" in point:
        return recorded(point["recorded"])
    return shape_arch(point["shape"]), None


# --- calibration: the KV budget of published start-ups -------------------------------------


def predicted_weights_gib(point: dict[str, Any]) -> float | None:
    """Weights per GPU as mvgen computes them, when the point has the checkpoint's sizes."""
    arch, ckpt = point_arch(point)
    settings = Settings(gpu_count=point["tp"])
    if ckpt is not None:
        held = fit.weights(arch, ckpt, None, point["vllm"])
        return fit.per_gpu_weights(arch, held, settings)[0] / GIB
    if "parameters" in point:
        shape = point["shape"]
        buffers = rope_cache_bytes(shape, shape["head_dim"], False)
        arch = replace(arch, buffer_bytes=buffers)
        ckpt = Checkpoint("x", weight_bytes=2 * point["parameters"]["BF16"])
        held = fit.weights(arch, ckpt, None, point["vllm"])
        return fit.per_gpu_weights(arch, held, settings)[0] / GIB
    return None


def predicted_kv_gib(point: dict[str, Any]) -> float:
    """The Available KV cache memory mvgen predicts for the logged settings: the same
    pieces fit.assess adds up, with the log's own torch total and, when the log prints
    it, its encoder batch."""
    arch, _ = point_arch(point)
    seqs, batched, tp = point["max_num_seqs"], point["max_num_batched_tokens"], point["tp"]
    images = None
    if "encoder" in point:
        e = point["encoder"]
        images = fit.EncoderBatch(e["items"], e["positions_per_item"], e["tokens_per_item"])
    elif arch.vision:
        settings = Settings(max_model_len=point["max_model_len"], limit_mm_per_prompt=None)
        images = fit.encoder_batch(arch, settings, batched, seqs)
    peak = fit.profile(arch, tp, batched, seqs, images).peak / GIB
    weights = predicted_weights_gib(point) or point["weights_gib"]
    usable = point["torch_total_gib"] * point["util"]
    return usable - weights - peak - fit.non_torch_bytes(tp) / GIB


BUDGET = {p["id"]: p for p in EVIDENCE["budget"]}


def test_at_least_eight_published_start_ups_calibrate_the_fit() -> None:
    assert len(BUDGET) >= 8
    assert len({p["model"] for p in BUDGET.values()}) >= 6


@pytest.mark.parametrize("point_id", sorted(BUDGET))
def test_kv_budget_is_within_the_stated_tolerance_of_each_log(point_id: str) -> None:
    point = BUDGET[point_id]
    predicted = predicted_kv_gib(point)
    assert predicted == pytest.approx(point["kv_gib"], abs=TOL), (point_id, predicted)


@pytest.mark.parametrize("point_id", sorted(p for p in BUDGET if "peak_gib" in BUDGET[p]))
def test_profile_peak_tracks_max_num_seqs_times_vocabulary(point_id: str) -> None:
    point = BUDGET[point_id]
    arch, _ = point_arch(point)
    settings = Settings(max_model_len=point["max_model_len"], limit_mm_per_prompt=None)
    seqs, batched = point["max_num_seqs"], point["max_num_batched_tokens"]
    images = fit.encoder_batch(arch, settings, batched, seqs) if arch.vision else None
    peak = fit.profile(arch, point["tp"], batched, seqs, images).peak / GIB
    assert peak == pytest.approx(point["peak_gib"], abs=TOL)


WEIGHTS = {p["id"]: p for p in EVIDENCE["weights"]}


@pytest.mark.parametrize("point_id", sorted(WEIGHTS))
def test_loaded_weights_are_within_the_tolerance_of_each_log(point_id: str) -> None:
    """safetensors bytes / TP plus the RoPE caches, against "Model loading took"."""
    point = WEIGHTS[point_id]
    arch, ckpt = recorded(point["recorded"])
    held = fit.weights(arch, ckpt, None, "0.12.0")
    per_gpu = fit.per_gpu_weights(arch, held, Settings(gpu_count=point["tp"]))[0] / GIB
    assert per_gpu == pytest.approx(point["logged_gib"], abs=TOL)


LAYOUT = EVIDENCE["layout"]


@pytest.mark.parametrize("point", LAYOUT, ids=[p["id"] for p in LAYOUT])
def test_kv_layout_reproduces_logged_tokens_and_concurrency(point: dict[str, Any]) -> None:
    """Given the KV memory a log reports, the hybrid-manager arithmetic gives its "GPU KV
    cache size" (within one block) and "Maximum concurrency" exactly."""
    arch = recorded(point["recorded"])[0] if "recorded" in point else shape_arch(point["shape"])
    layout = fit.kv_layout(arch, point["tp"], 2)
    blocks = int(point.get("num_gpu_blocks") or point["kv_gib"] * GIB // layout.block_bytes)
    groups = layout.full_groups + layout.sliding_groups
    tokens = blocks // groups * fit.BLOCK_SIZE
    assert abs(tokens - point["kv_tokens"]) <= fit.BLOCK_SIZE * 64  # "10.65 GiB" is rounded
    per_request = fit.blocks_per_sequence(
        layout, point["max_model_len"], point["max_num_batched_tokens"]
    )
    want = point["concurrency"]
    assert blocks / per_request == pytest.approx(
        want, abs=0.01 if "num_gpu_blocks" in point else 0.02
    )


def test_every_evidence_link_is_in_the_docs() -> None:
    doc = (ROOT / "docs" / "plan.md").read_text()
    for section in ("budget", "layout", "weights"):
        for point in EVIDENCE[section]:
            if point["link"].startswith("https://"):
                assert point["link"] in doc, point["id"]
            assert f"| {point['id']} |" in doc, point["id"]


# --- what vLLM's version and settings change -------------------------------------------------


def test_online_fp8_loads_the_whole_bf16_model_before_0_16() -> None:
    online = replace(BF16, quantization="fp8", max_model_len=8192)
    old = fit.assess(QWEN, gpu("L40S"), online, QWEN_CKPT, "0.12.0")
    assert old.status == "load-oom"
    assert old.load_peak_bytes / GIB > 57  # the bf16 size, on a 44.4 GiB GPU
    assert old.weight_bytes < old.load_peak_bytes / 1.8  # what it would hold afterwards
    streamed = fit.assess(QWEN, gpu("L40S"), online, QWEN_CKPT, "0.16.0")
    assert streamed.status == "fits"
    assert streamed.load_peak_bytes == streamed.weight_bytes
    assert fit.assess(QWEN, gpu("L40S"), online, QWEN_CKPT, "0.15.1").status == "load-oom"


def test_a_prequantized_checkpoint_loads_at_its_own_size() -> None:
    arch, ckpt = locked("Qwen/Qwen3-VL-30B-A3B-Instruct-FP8")
    assert ckpt.quantization == "fp8" and ckpt.main_dtype == "F8_E4M3"
    result = fit.assess(arch, gpu("L40S"), replace(BF16, max_model_len=8192), ckpt, "0.12.0")
    assert result.fits
    assert (
        result.load_peak_bytes
        == result.weight_bytes
        == pytest.approx(ckpt.weight_bytes + arch.buffer_bytes)
    )


def test_fp8_of_a_bf16_checkpoint_keeps_embeddings_in_bf16() -> None:
    held = fit.weights(GEMMA_27B, GEMMA_27B_CKPT, "fp8", "0.16.0")
    embeddings = GEMMA_27B.vocab_size * GEMMA_27B.hidden_size  # tied: one copy
    expected = embeddings * 2 + (GEMMA_27B_CKPT.weight_bytes - embeddings * 2) / 2
    assert held.resident == pytest.approx(expected)
    assert fit.weights(GEMMA_27B, GEMMA_27B_CKPT, "awq-someday", "0.12.0") == (
        "quantization 'awq-someday' of a bfloat16 checkpoint has no known size"
    )


def test_max_num_seqs_sizes_the_sampler_profile() -> None:
    h100 = gpu("H100")
    default = fit.assess(GEMMA_27B, h100, replace(BF16, max_model_len=16384), GEMMA_27B_CKPT)
    fewer = fit.assess(
        GEMMA_27B, h100, replace(BF16, max_model_len=16384, max_num_seqs=256), GEMMA_27B_CKPT
    )
    assert default.max_num_seqs == 1024 and fewer.max_num_seqs == 256
    saved = (default.sampler_bytes - fewer.sampler_bytes) / GIB
    assert saved == pytest.approx(38.3 * 768 * 262208 / GIB, rel=0.01)  # 7.2 GiB
    # the profile's peak falls to the next largest part (here the image encoder's 32 images)
    gained = fewer.kv_budget_bytes - default.kv_budget_bytes
    assert gained == pytest.approx(default.profile_bytes - fewer.profile_bytes)
    assert gained > 5 * GIB


def test_max_num_seqs_is_rendered_when_set() -> None:
    plan = load_plan(SEED_CONFIG)
    for d in plan.deployments:
        cmd = d.vllm_command()
        if d.settings.max_num_seqs is None:
            assert "--max-num-seqs" not in cmd
        else:
            assert cmd[cmd.index("--max-num-seqs") + 1] == str(d.settings.max_num_seqs)


def test_defaults_follow_vllms_device_rule() -> None:
    assert [fit.default_batched_tokens(gpu(n)) for n in ("H100", "H200", "A100-80GB", "L40S")] == [
        8192,
        8192,
        2048,
        2048,
    ]
    assert [fit.default_max_num_seqs(gpu(n)) for n in ("B200", "A100-80GB", "L40S")] == [
        1024,
        256,
        256,
    ]


def test_torch_sees_less_than_nvidia_smi() -> None:
    for name, gpu_type in GPU_TYPES.items():
        gap = gpu_type.memory_mib / 1024 - fit.torch_visible_bytes(gpu_type) / GIB
        assert 0.3 < gap <= 0.75, name


def test_cuda_graphs_must_fit_beside_the_kv_cache_before_0_21() -> None:
    graphs = replace(BF16, fast_boot=False, gpu_memory_utilization=0.99, max_model_len=8192)
    old = fit.assess(GEMMA_12B, gpu("H100"), graphs, GEMMA_12B_CKPT, "0.12.0")
    assert old.status == "graphs-oom"
    assert fit.assess(GEMMA_12B, gpu("H100"), graphs, GEMMA_12B_CKPT, "0.21.0").fits
    eager = replace(graphs, fast_boot=True)
    assert fit.assess(GEMMA_12B, gpu("H100"), eager, GEMMA_12B_CKPT, "0.12.0").fits
    at_90 = replace(graphs, gpu_memory_utilization=0.90)
    assert fit.assess(GEMMA_12B, gpu("H100"), at_90, GEMMA_12B_CKPT, "0.12.0").fits


def test_the_vision_encoder_profile_counts_images_like_vllm() -> None:
    # Gemma 3: 256 tokens an image, so 2048 batched tokens profile 8 images, 8192 make 32
    s = replace(BF16, limit_mm_per_prompt={"image": 4})
    assert fit.encoder_batch(GEMMA_27B, s, 2048, 256).items == 8
    assert fit.encoder_batch(GEMMA_27B, s, 8192, 1024).items == 32
    # no images: no encoder profile
    assert (
        fit.encoder_batch(GEMMA_27B, replace(s, limit_mm_per_prompt={"image": 0}), 8192, 1) is None
    )
    # Qwen3-VL: one 16,384-token image; its video input is not modelled
    assert fit.encoder_batch(QWEN, BF16, 2048, 256).items == 1
    video = fit.encoder_batch(QWEN, replace(BF16, limit_mm_per_prompt={"image": 4}), 2048, 256)
    assert isinstance(video, str) and "video: 0" in video
    assert fit.assess(QWEN, gpu("H200"), replace(BF16, limit_mm_per_prompt=None)).status == (
        "unknown"
    )


def test_tensor_parallel_splits_weights_and_kv_heads_but_not_buffers() -> None:
    s = replace(BF16, max_model_len=8192)
    one = fit.assess(GEMMA_27B, gpu("A100-80GB"), s, GEMMA_27B_CKPT)
    two = fit.assess(GEMMA_27B, gpu("A100-80GB"), replace(s, gpu_count=2), GEMMA_27B_CKPT)
    buffers = GEMMA_27B.buffer_bytes
    assert two.weight_bytes - buffers == pytest.approx((one.weight_bytes - buffers) / 2)
    assert two.kv_bytes_per_token * 2 == one.kv_bytes_per_token
    assert two.non_torch_bytes > one.non_torch_bytes
    data = replace(s, gpu_count=2, extra_args=("--mm-encoder-tp-mode", "data"))
    replicated = fit.assess(GEMMA_27B, gpu("A100-80GB"), data, GEMMA_27B_CKPT)
    tower = GEMMA_27B.vision_tower.params * 2
    assert replicated.weight_bytes - two.weight_bytes == pytest.approx(tower / 2)


def test_fp8_kv_cache_halves_kv_per_token() -> None:
    h200 = gpu("H200")
    bf16 = fit.assess(QWEN, h200, BF16, QWEN_CKPT)
    fp8 = fit.assess(QWEN, h200, replace(BF16, extra_args=("--kv-cache-dtype", "fp8")), QWEN_CKPT)
    assert fp8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token
    odd = fit.assess(QWEN, h200, replace(BF16, extra_args=("--kv-cache-dtype", "int3")), QWEN_CKPT)
    assert odd.status == "unknown"


def test_the_tolerance_gives_a_range_of_sequences() -> None:
    result = fit.assess(GEMMA_27B, gpu("A100-80GB"), replace(BF16, max_model_len=16384))
    assert result.sequences_low < result.sequences < result.sequences_high
    layout = fit.kv_layout(GEMMA_27B, 1, 2)
    low = fit.sequences_that_fit(result.kv_budget_bytes - TOL * GIB, layout, 16384, 2048)
    assert result.sequences_low == low and result.below_bytes == TOL * GIB
    assert result.above_bytes == TOL * GIB  # the sampler, not the encoder, sets this peak


def test_where_the_encoder_estimate_sets_the_peak_the_range_widens_upwards() -> None:
    # Gemma 3 on H100 with vLLM's 8192-token step: 32 images through SigLIP, an estimate
    # that only the B200 log (L12) bounds from above
    s = replace(BF16, max_model_len=16384, max_num_seqs=256)
    result = fit.assess(GEMMA_12B, gpu("H100"), s, GEMMA_12B_CKPT)
    assert result.encoder_bytes > result.sampler_bytes
    assert result.above_bytes == pytest.approx(
        TOL * GIB + result.encoder_bytes - result.sampler_bytes - 32 * 256 * 3840 * 2
    )


# --- the KV layout (sliding windows reproduced vLLM's logged concurrency: kept) -------------


def test_full_attention_kv_per_token_is_the_textbook_formula() -> None:
    layout = fit.kv_layout(QWEN, gpu_count=1, kv_dtype_bytes=2)
    assert layout.bytes_per_token == 2 * QWEN.layers * QWEN.kv_heads * QWEN.head_dim * 2


@pytest.mark.parametrize("arch", [GEMMA_12B, GEMMA_27B])
def test_only_gemmas_global_layers_grow_with_context(arch) -> None:
    layout = fit.kv_layout(arch, gpu_count=1, kv_dtype_bytes=2)
    global_layers = arch.layers // arch.global_layer_every
    assert layout.full_layers == global_layers
    assert layout.bytes_per_token == 2 * global_layers * arch.kv_heads * arch.head_dim * 2
    batched = 2048
    start = arch.sliding_window + batched
    grown = fit.sequence_bytes(layout, start + 1024, batched) - fit.sequence_bytes(
        layout, start, batched
    )
    assert grown == 1024 * layout.bytes_per_token


def test_gemma_27b_sliding_layers_are_grouped_and_padded_like_vllm() -> None:
    # "Add 8 padding layers": 10 global, 52 sliding -> 6 sliding groups of 10 (log L3)
    layout = fit.kv_layout(GEMMA_27B, gpu_count=1, kv_dtype_bytes=2)
    assert (layout.group_size, layout.full_groups, layout.sliding_groups) == (10, 1, 6)


def test_sliding_layers_reserve_one_prefill_step_past_the_window() -> None:
    layout = fit.kv_layout(GEMMA_27B, gpu_count=1, kv_dtype_bytes=2)
    small = fit.sequence_bytes(layout, 32768, 2048)
    large = fit.sequence_bytes(layout, 32768, 8192)
    extra_blocks = layout.sliding_groups * (math.ceil(9215 / 16) - math.ceil(3071 / 16))
    assert large - small == extra_blocks * layout.block_bytes


def test_longest_len_is_the_edge_of_fitting() -> None:
    result = fit.assess(QWEN, gpu("A100-80GB"), BF16, QWEN_CKPT)
    at = fit.assess(QWEN, gpu("A100-80GB"), replace(BF16, max_model_len=result.longest_len))
    past = replace(BF16, max_model_len=result.longest_len + fit.MAX_LEN_STEP)
    assert at.sequences >= 1
    assert fit.assess(QWEN, gpu("A100-80GB"), past, QWEN_CKPT).sequences < 1


# --- the validation check --------------------------------------------------------------------


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
                "limit_mm_per_prompt": IMAGES_ONLY,
            },
        },
    }


def refusals(data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        build_plan(data, lock=LOCK)
    return info.value.problems


def suggested(problem: Problem) -> list[str]:
    assert problem.hint and problem.hint.startswith("fixes: ")
    return problem.hint.removeprefix("fixes: ").split("; ")


def apply_fix(data: dict[str, Any], model: str, gpu_key: str, fix_text: str) -> dict[str, Any]:
    """The config with one suggested fix applied, as a user would edit it."""
    out = copy.deepcopy(data)
    if fix_text.startswith("a GPU type where it fits"):
        out["gpus"][gpu_key]["type"] = fix_text.split(": ", 1)[1].split(", ")[0]
        return out
    per_gpu = out["models"][model].setdefault("per_gpu", {}).setdefault(gpu_key, {})
    if fix_text.startswith(f"per_gpu.{gpu_key}.checkpoint: an FP8 checkpoint"):
        per_gpu.pop("quantization", None)
        per_gpu["checkpoint"] = FP8_OF[out["models"][model]["hf_id"]]
        return out
    key, value = fix_text.split(": ")
    per_gpu[key] = yaml.safe_load(value)
    return out


FP8_OF = {
    "google/gemma-3-27b-it": "RedHatAI/gemma-3-27b-it-FP8-dynamic",
    "Qwen/Qwen3-VL-30B-A3B-Instruct": "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
}


def test_bf16_too_big_to_load_is_refused_with_fixes_that_work() -> None:
    data = base()
    [problem] = refusals(data)
    assert problem.path == "models.gemma-3-27b.per_gpu.l40s"
    assert "runs out of memory while loading" in problem.message
    fixes = suggested(problem)
    assert any(f.startswith("per_gpu.l40s.checkpoint: an FP8 checkpoint") for f in fixes)
    assert any(f.startswith("gpu_count: ") for f in fixes)
    assert any(f.startswith("a GPU type where it fits") for f in fixes)
    assert "quantization: fp8" not in fixes  # online fp8 would load the bf16 model whole
    for each in fixes:
        build_plan(apply_fix(data, "gemma-3-27b", "l40s", each), lock=LOCK)  # each alone works


def test_online_fp8_on_0_12_is_refused_and_fine_from_0_16() -> None:
    data = base()
    data["models"]["gemma-3-27b"]["per_gpu"] = {
        "l40s": {"quantization": "fp8", "max_model_len": 8192}
    }
    [problem] = refusals(data)
    assert "quantized to fp8 only after loading" in problem.message
    assert "0.16.0" in problem.hint
    data["image"] = {"vllm": "0.16.0"}
    # No vLLM option data is committed for 0.16.0; only the fit is under test here.
    build_plan(data, lock=LOCK, skip_checks=("vllm_options",))


def test_a_sequence_too_long_for_the_kv_cache_is_refused_with_the_longest_that_fits() -> None:
    data = base()
    data["models"]["gemma-3-27b"]["per_gpu"] = {
        "l40s": {"checkpoint": FP8_OF["google/gemma-3-27b-it"], "max_model_len": 8192}
    }
    data["models"]["qwen3-vl-30b"]["max_model_len"] = QWEN.max_context
    [problem] = refusals(data)
    assert problem.path == "models.qwen3-vl-30b.per_gpu.a100"
    assert f"one {QWEN.max_context}-token sequence needs" in problem.message
    fixes = suggested(problem)
    [length] = [f for f in fixes if f.startswith("max_model_len: ")]
    longest = int(length.split(": ")[1])
    assert longest < QWEN.max_context
    for each in fixes:
        build_plan(apply_fix(data, "qwen3-vl-30b", "a100", each), lock=LOCK)
    one_step_more = apply_fix(data, "qwen3-vl-30b", "a100", f"max_model_len: {longest + 256}")
    assert refusals(one_step_more)


def test_fewer_sequences_is_offered_where_the_sampler_is_the_problem() -> None:
    data = base()
    data["gpus"] = {"h100": {"type": "H100"}}
    data["models"] = {"gemma-3-27b": {"hf_id": "google/gemma-3-27b-it", "max_model_len": 131072}}
    [problem] = refusals(data)
    assert "max_num_seqs: 256" in suggested(problem)
    build_plan(apply_fix(data, "gemma-3-27b", "h100", "max_num_seqs: 256"), lock=LOCK)


def test_few_full_length_sequences_warn_with_a_configurable_threshold() -> None:
    data = base()
    data["models"]["gemma-3-27b"]["per_gpu"] = {
        "l40s": {"checkpoint": FP8_OF["google/gemma-3-27b-it"], "max_model_len": 8192}
    }
    plan = build_plan(data, lock=LOCK)
    [d] = [d for d in plan.deployments if d.route == "gemma-3-27b-l40s"]
    figures = fit.assess_deployment(d)
    above = math.floor(figures.sequences) + 1
    data["fit"] = {"min_sequences": above}
    warned = [w for w in build_plan(data, lock=LOCK).warnings if "gemma-3-27b.per_gpu.l40s" in w]
    assert len(warned) == 1 and f"fit.min_sequences: {above}" in warned[0]
    data["fit"] = {"min_sequences": math.floor(figures.sequences)}
    assert not [w for w in build_plan(data, lock=LOCK).warnings if "gemma-3-27b" in w]


def test_a_quantization_the_checkpoint_contradicts_is_refused() -> None:
    data = base()
    per_gpu = {"checkpoint": FP8_OF["google/gemma-3-27b-it"], "quantization": "fp8"}
    data["models"]["gemma-3-27b"]["per_gpu"] = {"l40s": {**per_gpu, "max_model_len": 8192}}
    [problem] = refusals(data)
    assert "quantized with compressed-tensors, not fp8" in problem.message
    assert "leave quantization unset" in problem.message
    assert suggested(problem) == ["quantization: null"]
    build_plan(apply_fix(data, "gemma-3-27b", "l40s", "quantization: null"), lock=LOCK)
    # the same method as the checkpoint's own is what vLLM reads anyway
    arch, ckpt = locked("Qwen/Qwen3-VL-30B-A3B-Instruct-FP8")
    same = fit.assess(
        arch, gpu("L40S"), replace(BF16, quantization="fp8", max_model_len=8192), ckpt
    )
    assert same.fits and same.weight_bytes == pytest.approx(ckpt.weight_bytes + arch.buffer_bytes)


def test_unknown_architecture_warns_with_the_fix_and_a_declared_one_is_checked() -> None:
    data = base()
    data["models"] = {"mystery": {"hf_id": "acme/mystery-7b"}}
    [warning] = [w for w in build_plan(data, lock=LOCK).warnings if "mystery" in w]
    assert "fit unknown" in warning and "make lock" in warning
    assert "architecture: {params_b:" in warning  # the mapping the schema wants, not a tuple
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


# --- the committed file (any valid one) and the seed's matrix --------------------------------


def test_the_committed_config_fits_every_pair_it_knows() -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    for d in plan.deployments:
        result = fit.assess_in(plan, d)
        assert result.fits or not result.known, d.route  # validate refuses misfits


def test_the_seed_fits_every_pair_with_the_wanted_margin_and_no_online_fp8() -> None:
    plan = load_plan(SEED_CONFIG)
    assert len(plan.deployments) == 15
    assert not [w for w in plan.warnings if "fit" in w or "sequences" in w]
    for d in plan.deployments:
        result = fit.assess_in(plan, d)
        assert result.fits, d.route
        assert result.sequences_low >= plan.fit_min_sequences, d.route
        held_online = d.settings.quantization and d.checkpoint.quantization is None
        assert not held_online, d.route  # no bf16 checkpoint quantized at load on 0.12


def test_the_seed_serves_fp8_checkpoints_on_l40s_under_the_same_names() -> None:
    plan = load_plan(SEED_CONFIG)
    l40s = {d.model.key: d for d in plan.deployments if d.gpu.key == "l40s"}
    for model, ckpt in (
        ("gemma-3-27b", FP8_OF["google/gemma-3-27b-it"]),
        ("qwen3-vl-30b", FP8_OF["Qwen/Qwen3-VL-30B-A3B-Instruct"]),
    ):
        d = l40s[model]
        cmd = d.vllm_command()
        assert cmd[2] == ckpt
        names = cmd[cmd.index("--served-model-name") + 1 : cmd.index("--host")]
        assert names == list(d.model.names)
        assert d.model.hf_id in names and ckpt not in names


def test_tensor_parallel_sizes_follow_vllm_012s_sharding() -> None:
    """Query heads must divide (config/model.py); KV heads divide or are copied a whole
    number of times (layers/linear.py QKVParallelLinear): Qwen3-VL's 32 / 4 heads."""
    qwen = replace(QWEN, attention_heads=32, kv_heads=4)
    assert [n for n in range(1, 17) if qwen.splits_across(n)] == [1, 2, 4, 8, 16]
    assert not replace(qwen, attention_heads=24).splits_across(16)  # 24 % 16: refused
    assert replace(QWEN, attention_heads=None, kv_heads=4).splits_across(8)  # declared shape


@pytest.mark.parametrize(
    "spelling",
    [
        ("--max-num-batched-tokens", "2048"),
        ("--max_num_batched_tokens", "2048"),  # vLLM turns underscores into dashes
        ("--max-num-batched-tokens=2048",),
        ("--max-num-batched-tokens", "2K"),  # vLLM's human_readable_int: 2 x 1024
    ],
)
def test_extra_args_are_read_in_every_spelling_vllm_accepts(spelling: tuple[str, ...]) -> None:
    s = replace(BF16, max_model_len=16384)
    default = fit.assess(GEMMA_27B, gpu("H100"), s, GEMMA_27B_CKPT)
    given = fit.assess(GEMMA_27B, gpu("H100"), replace(s, extra_args=spelling), GEMMA_27B_CKPT)
    assert given.kv_budget_bytes != default.kv_budget_bytes  # 8192 is H100's default step
    written = fit.assess(
        GEMMA_27B,
        gpu("H100"),
        replace(s, extra_args=("--max-num-batched-tokens", "2048")),
        GEMMA_27B_CKPT,
    )
    assert given == written


def test_human_readable_ints_as_vllm_reads_them() -> None:
    assert [fit.human_readable_int(v) for v in ("4096", "4k", "2K", "25.6k", "1.5K", "x")] == [
        4096, 4000, 2048, 25600, None, None,
    ]  # fmt: skip
