"""config.json -> facts, on recorded config.json files of real checkpoints (tests/data/hf,
README.md there says where each came from): nested text_config (Gemma 3, Qwen3-VL), fields
left to transformers' defaults, MoE, sliding windows switched on, off and absent, vision
towers, and exact weight bytes from safetensors parameter counts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mvgen.hfconfig import (
    ConfigProblem,
    _encoder_params,
    quant_method,
    read_checkpoint,
    text_config,
    weight_bytes,
)

HF = Path(__file__).resolve().parent / "data" / "hf"
# checkpoints (a LoRA adapter's folder holds only its adapter_config.json)
ARCHITECTURES = {p.name.replace("--", "/", 1) for p in HF.iterdir() if (p / "config.json").exists()}


def recorded(hf_id: str) -> tuple[dict[str, Any], dict[str, int], dict[str, Any] | None]:
    folder = HF / hf_id.replace("/", "--")
    processor = folder / "preprocessor_config.json"
    return (
        json.loads((folder / "config.json").read_text()),
        json.loads((folder / "safetensors.json").read_text())["parameters"],
        json.loads(processor.read_text()) if processor.exists() else None,
    )


def facts(hf_id: str):
    config, params, processor = recorded(hf_id)
    return read_checkpoint(hf_id, config, params, preprocessor=processor)


def test_at_least_six_real_architectures_are_recorded_with_their_sources() -> None:
    kinds = {recorded(h)[0]["model_type"] for h in ARCHITECTURES}
    assert {"llama", "mistral", "qwen2", "qwen3_moe", "gemma3", "qwen3_vl_moe"} <= kinds
    readme = (HF / "README.md").read_text()
    for hf_id in ARCHITECTURES:
        assert f"https://huggingface.co/{hf_id}/blob/main/config.json" in readme, hf_id


def test_recorded_files_match_the_checksums_their_provenance_was_written_for() -> None:
    """README.md says how exact each recorded file is; an edit to a file must come with an
    edit to that account, so the README's sha256sum lines must cover and match every file."""
    readme = (HF / "README.md").read_text()
    listed = dict(
        (path, digest)
        for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.MULTILINE)
    )
    recorded_files = {
        p.relative_to(HF).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for name in ("config.json", "preprocessor_config.json")
        for p in HF.glob(f"*/{name}")
    }
    assert listed == recorded_files


@pytest.mark.parametrize("hf_id", sorted(ARCHITECTURES))
def test_weights_are_the_exact_safetensors_bytes(hf_id: str) -> None:
    _, params, _ = recorded(hf_id)
    arch, ckpt = facts(hf_id)
    # every recorded checkpoint is bf16, but the two BAAI encoders, which are fp32
    ((dtype, count),) = params.items()
    width, name = {"BF16": (2, "bfloat16"), "F32": (4, "float32")}[dtype]
    assert ckpt.weight_bytes == width * count
    assert arch.params_b == pytest.approx(count / 1e9, abs=1e-4)
    assert ckpt.dtype == name and ckpt.quantization is None
    assert (dtype == "F32") == hf_id.startswith("BAAI/")


# (layers, kv heads, head dim, context, vocabulary, hidden, MLP width per token, experts,
#  sliding window, one global layer in every N): read off each config.json, or its
# transformers default where the file leaves the field out.
EXPECTED = {
    "meta-llama/Llama-3.1-8B-Instruct": (32, 8, 128, 131072, 128256, 4096, 14336, 0, None, None),
    "mistralai/Mistral-7B-Instruct-v0.3": (32, 8, 128, 32768, 32768, 4096, 14336, 0, None, None),
    # sliding_window 131072 is named but use_sliding_window is false
    "Qwen/Qwen2.5-7B-Instruct": (28, 4, 128, 32768, 152064, 3584, 18944, 0, None, None),
    # 8 experts of 768 per token
    "Qwen/Qwen3-30B-A3B": (48, 4, 128, 40960, 151936, 2048, 6144, 128, None, None),
    # vocabulary, context and the 1-in-6 pattern are Gemma3TextConfig defaults
    "google/gemma-3-27b-it": (62, 16, 128, 131072, 262208, 5376, 21504, 0, 1024, 6),
    # ... and so is head_dim 256
    "google/gemma-3-12b-it": (48, 8, 256, 131072, 262208, 3840, 15360, 0, 1024, 6),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": (48, 4, 128, 262144, 151936, 2048, 6144, 128, None, None),
}


@pytest.mark.parametrize("hf_id", sorted(EXPECTED))
def test_architecture_fields(hf_id: str) -> None:
    arch, _ = facts(hf_id)
    got = (
        arch.layers,
        arch.kv_heads,
        arch.head_dim,
        arch.max_context,
        arch.vocab_size,
        arch.hidden_size,
        arch.intermediate_size,
        arch.experts,
        arch.sliding_window,
        arch.global_layer_every,
    )
    assert got == EXPECTED[hf_id]


# --- encoders (embedding models, cross-encoder rerankers) ------------------------------------


@pytest.mark.parametrize(
    ("hf_id", "names", "labels"),
    [
        ("BAAI/bge-m3", ("XLMRobertaModel",), None),
        ("BAAI/bge-reranker-v2-m3", ("XLMRobertaForSequenceClassification",), 1),
    ],
)
def test_xlm_roberta_encoders_are_read(hf_id: str, names: tuple, labels: int | None) -> None:
    arch, ckpt = facts(hf_id)
    assert arch.encoder_only and arch.hf_architectures == names and arch.num_labels == labels
    # 24 layers of 16 heads x 64 over 1024; 8194 positions less RoBERTa's pad offset of 2
    got = (arch.layers, arch.kv_heads, arch.head_dim, arch.max_context, arch.vocab_size)
    assert got == (24, 16, 64, 8192, 250002)
    assert (arch.hidden_size, arch.intermediate_size, arch.experts) == (1024, 4096, 0)
    assert not arch.vision and arch.sliding_window is None and ckpt.dtype == "float32"


@pytest.mark.parametrize("hf_id", ["BAAI/bge-m3", "BAAI/bge-reranker-v2-m3"])
def test_encoder_params_from_the_shapes_are_exact(hf_id: str) -> None:
    """Without safetensors counts the BERT arithmetic (embeddings, layers, pooler or
    classifier head) gives the published count to the parameter."""
    config, params, _ = recorded(hf_id)
    arch, _ = read_checkpoint(hf_id, config, None)
    assert arch.params_b == round(params["F32"] / 1e9, 4)
    assert _encoder_params(config, 1024, 24, 4096, 8194, arch.num_labels) == params["F32"]


def test_encoders_take_transformers_defaults() -> None:
    bert = {"model_type": "bert", "architectures": ["BertModel"]}
    arch, _ = read_checkpoint("x/bert", bert, None)
    # BertConfig: 12 x 768, 3072 wide, 512 positions, no position offset
    assert (arch.layers, arch.hidden_size, arch.intermediate_size) == (12, 768, 3072)
    assert arch.max_context == 512 and arch.encoder_only and arch.num_labels is None
    roberta = {"model_type": "roberta", "architectures": ["RobertaForSequenceClassification"]}
    arch, _ = read_checkpoint("x/roberta", roberta, None)
    assert arch.max_context == 512 - 2 and arch.vocab_size == 50265
    assert arch.num_labels == 2  # transformers makes two labels when none are named


def test_encoders_mvgen_cannot_size_are_named() -> None:
    config = {"model_type": "modernbert", "architectures": ["ModernBertModel"]}
    with pytest.raises(ConfigProblem, match="ModernBertModel is an encoder-only model"):
        read_checkpoint("answerdotai/ModernBERT-base", config, None)


def test_decoders_keep_their_architecture_names() -> None:
    arch, _ = facts("Qwen/Qwen3-30B-A3B")
    assert arch.hf_architectures == ("Qwen3MoeForCausalLM",) and not arch.encoder_only


def test_text_only_models_have_no_vision_tower() -> None:
    for hf_id in EXPECTED:
        arch, _ = facts(hf_id)
        assert arch.vision == (arch.vision_tower is not None)
        assert arch.vision == hf_id.startswith(("google/", "Qwen/Qwen3-VL"))


def test_gemma_images_are_256_tokens_of_4096_patches() -> None:
    arch, _ = facts("google/gemma-3-27b-it")
    tower = arch.vision_tower
    assert (tower.tokens_per_item, tower.patches_per_item) == (256, (896 // 14) ** 2)
    assert tower.output_dim == 5376  # projected into the language model's width
    assert not tower.video
    assert 0.35e9 < tower.params < 0.5e9  # SigLIP so400m and the projector


def test_qwen_vl_largest_image_comes_from_the_preprocessor() -> None:
    config, params, processor = recorded("Qwen/Qwen3-VL-30B-A3B-Instruct")
    arch, _ = read_checkpoint("q", config, params, preprocessor=processor)
    longest = processor["size"]["longest_edge"]
    assert arch.vision_tower.patches_per_item == longest // 16**2
    assert arch.vision_tower.tokens_per_item == longest // 16**2 // 4  # 2x2 merge: 16384
    assert arch.vision_tower.output_dim == 2048 * 4  # out_hidden_size x (1 + 3 deepstack)
    assert arch.vision_tower.video
    # without a preprocessor_config.json, transformers' default of 28 x 28 x 1280 pixels
    smaller, _ = read_checkpoint("q", config, params, preprocessor=None)
    assert smaller.vision_tower.tokens_per_item == 28 * 28 * 1280 // 16**2 // 4


def test_rope_caches_are_counted_as_buffers() -> None:
    # Gemma 3: a global RoPE with linear scaling x8 and an unscaled local one, 128 wide
    gemma, _ = facts("google/gemma-3-27b-it")
    assert gemma.buffer_bytes == (131072 * 8 + 131072) * 128 * 2
    # Llama 3.1: llama3 scaling does not lengthen the cache
    llama, _ = facts("meta-llama/Llama-3.1-8B-Instruct")
    assert llama.buffer_bytes == 131072 * 128 * 2


def test_tied_embeddings_follow_the_config() -> None:
    assert facts("google/gemma-3-27b-it")[0].tied_embeddings  # Gemma3TextConfig default
    assert not facts("meta-llama/Llama-3.1-8B-Instruct")[0].tied_embeddings


def test_the_checkpoints_own_quantization_is_read() -> None:
    config, params, _ = recorded("Qwen/Qwen3-30B-A3B")
    fp8 = {
        **config,
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    }
    _, ckpt = read_checkpoint("Qwen/Qwen3-30B-A3B-FP8", fp8, {"F8_E4M3": 10, "BF16": 3})
    assert ckpt.quantization == "fp8" and ckpt.weight_bytes == 16 and ckpt.main_dtype == "F8_E4M3"
    ct = {"quantization_config": {"quant_method": "compressed-tensors"}}
    assert quant_method(ct) == "compressed-tensors"
    assert quant_method(config) is None


def test_nested_text_config_takes_defaults_of_its_own_type() -> None:
    config, _, _ = recorded("google/gemma-3-27b-it")
    text = text_config(config)
    assert text["vocab_size"] == 262208 and text["num_hidden_layers"] == 62
    assert "vocab_size" not in config["text_config"]  # the file leaves it out


def test_missing_fields_are_named() -> None:
    with pytest.raises(ConfigProblem, match="hidden_size"):
        read_checkpoint("x/y", {"model_type": "unknown-kind", "num_attention_heads": 8}, None)


def test_unknown_dtypes_and_vision_types_are_refused() -> None:
    with pytest.raises(ConfigProblem, match="F4_MYSTERY"):
        weight_bytes({"F4_MYSTERY": 10})
    config, params, _ = recorded("google/gemma-3-27b-it")
    with pytest.raises(ConfigProblem, match="vision model type"):
        read_checkpoint("x/y", {**config, "model_type": "llava"}, params)


def test_without_safetensors_counts_params_come_from_the_shapes() -> None:
    config, params, _ = recorded("meta-llama/Llama-3.1-8B-Instruct")
    arch, ckpt = read_checkpoint("x/y", config, None)
    assert ckpt.weight_bytes is None
    assert arch.params_b == pytest.approx(params["BF16"] / 1e9, rel=0.01)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kv_lora_rank", 512),  # DeepSeek-V3's multi-head latent attention
        ("attention_chunk_size", 8192),  # Llama 4's chunked local attention
        ("layer_types", ["linear_attention", "full_attention"]),  # Qwen3-Next
    ],
)
def test_attention_mvgen_cannot_size_leaves_the_facts_unknown(field: str, value: Any) -> None:
    config, params, _ = recorded("Qwen/Qwen3-30B-A3B")
    with pytest.raises(ConfigProblem, match="does not size"):
        read_checkpoint("x/y", {**config, field: value, "sliding_window": 4096}, params)


def test_gemma_2_alternates_sliding_and_global_layers() -> None:
    """Gemma 2's config.json names a window but no layer pattern; transformers' Gemma2Config
    (and so vLLM) alternate: every second layer is global. Shape of google/gemma-2-9b-it."""
    config = {
        "architectures": ["Gemma2ForCausalLM"],
        "model_type": "gemma2",
        "hidden_size": 3584,
        "intermediate_size": 14336,
        "num_hidden_layers": 42,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "max_position_embeddings": 8192,
        "sliding_window": 4096,
        "vocab_size": 256000,
        "torch_dtype": "bfloat16",
    }
    arch, _ = read_checkpoint("google/gemma-2-9b-it", config, {"BF16": 9_241_705_984})
    assert (arch.sliding_window, arch.global_layer_every) == (4096, 2)
