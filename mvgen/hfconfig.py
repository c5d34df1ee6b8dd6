"""A Hugging Face checkpoint's config.json (and its safetensors sizes) -> the facts the fit
arithmetic needs: an Architecture and a Checkpoint.

Real config.json files leave out what their transformers class defaults, so the defaults
below are those of transformers 4.57 (the release vLLM 0.12 installs), each from the
class's `__init__` in src/transformers/models/<type>/configuration_<type>.py. A model type
not listed here must state every field we read, or the model declares `architecture:`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mvgen.catalog import Architecture, Checkpoint, LoraShape, VisionTower

# Bytes of one element of each safetensors dtype (the safetensors format's dtype names).
DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

# transformers 4.57 defaults for the fields read below, by text model_type.
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"vocab_size": 32000, "max_position_embeddings": 2048, "tie_word_embeddings": False},
    "mistral": {
        "vocab_size": 32000,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096 * 32,
        "sliding_window": 4096,
        "tie_word_embeddings": False,
    },
    "mixtral": {
        "vocab_size": 32000,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096 * 32,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "tie_word_embeddings": False,
    },
    "qwen2": {"vocab_size": 151936, "use_sliding_window": False, "tie_word_embeddings": False},
    "qwen3": {"vocab_size": 151936, "head_dim": 128, "use_sliding_window": False},
    "qwen3_moe": {
        "vocab_size": 151936,
        "num_key_value_heads": 4,
        "use_sliding_window": False,
        "moe_intermediate_size": 768,
        "num_experts_per_tok": 8,
        "num_experts": 128,
        "tie_word_embeddings": False,
    },
    "qwen3_vl_text": {
        "vocab_size": 151936,
        "head_dim": 128,
        "max_position_embeddings": 128000,
        "tie_word_embeddings": False,
    },
    "qwen3_vl_moe_text": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "max_position_embeddings": 128000,
        "moe_intermediate_size": 1408,
        "num_experts_per_tok": 4,
        "num_experts": 60,
        "tie_word_embeddings": False,
    },
    # Gemma2Config alternates (layer_types): layer i is global when (i + 1) % 2 == 0, which
    # config.json does not spell out; vLLM's gemma2.py reads the alternation.
    "gemma2": {"sliding_window_pattern": 2, "tie_word_embeddings": True},
    "gemma3_text": {
        "vocab_size": 262_208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131_072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,  # layer i is global when (i + 1) % 6 == 0
        "rope_local_base_freq": 10_000.0,  # the sliding layers' own RoPE
        "tie_word_embeddings": True,
    },
}
# BERT-style encoders, as embedding models and cross-encoder rerankers use them (BAAI/bge-m3
# is an XLMRobertaModel, BAAI/bge-reranker-v2-m3 an XLMRobertaForSequenceClassification).
# vLLM 0.12 runs them with encoder-only attention, which has no KV cache
# (vllm/attention/layers/encoder_only_attention.py: get_kv_cache_spec "Does not need KV
# cache"). transformers 4.57 defaults: BertConfig, RobertaConfig and XLMRobertaConfig
# (configuration_bert.py, configuration_roberta.py, configuration_xlm_roberta.py).
_BERT_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "pad_token_id": 0,
}
ENCODER_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": _BERT_DEFAULTS,
    "roberta": {**_BERT_DEFAULTS, "vocab_size": 50265, "pad_token_id": 1},
    "xlm-roberta": {**_BERT_DEFAULTS, "pad_token_id": 1},
}
# RoBERTa numbers positions from padding_idx + 1 (vllm/model_executor/models/roberta.py
# replace_roberta_positions, as transformers does), so pad_token_id + 1 of
# max_position_embeddings never hold a token: bge-m3's 8194 are 8192 tokens.
POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta")
# transformers' PretrainedConfig makes two labels when config.json names none
# (configuration_utils.py `_create_id_label_maps(num_labels if ... else 2)`).
DEFAULT_NUM_LABELS = 2

# Other encoder-only architectures vLLM 0.12 registers (models/registry.py; bert_with_rope.py,
# modernbert.py): their layouts (rotary BERTs, alternating local attention) are not sized
# here, and reading them as decoders would invent a KV cache.
UNSIZED_ENCODERS = frozenset(
    {
        "GteModel",
        "GteNewModel",
        "GteNewForSequenceClassification",
        "NomicBertModel",
        "ModernBertModel",
        "ModernBertForSequenceClassification",
        "ModernBertForTokenClassification",
    }
)

# The text model type a multimodal config's text_config has when it does not say.
TEXT_TYPE_OF = {
    "gemma3": "gemma3_text",
    "qwen3_vl": "qwen3_vl_text",
    "qwen3_vl_moe": "qwen3_vl_moe_text",
}

SIGLIP_DEFAULTS = {  # SiglipVisionConfig (Gemma 3's vision_config)
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "image_size": 224,
    "patch_size": 16,
}
QWEN3_VL_VISION_DEFAULTS = {  # Qwen3VLVisionConfig / Qwen3VLMoeVisionConfig
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 3584,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [8, 16, 24],
}
# Qwen2VLImageProcessor's default largest image, in pixels, when the checkpoint ships no
# preprocessor_config.json: 28 x 28 x 1280.
QWEN_VL_DEFAULT_MAX_PIXELS = 28 * 28 * 1280
GEMMA3_MM_TOKENS_PER_IMAGE = 256  # Gemma3Config.mm_tokens_per_image


class ConfigProblem(ValueError):
    """config.json lacks something we need, or says something we cannot size."""


def read_checkpoint(
    hf_id: str,
    config: Mapping[str, Any],
    parameters: Mapping[str, int] | None,
    *,
    revision: str | None = None,
    preprocessor: Mapping[str, Any] | None = None,
) -> tuple[Architecture, Checkpoint]:
    """The facts of one checkpoint from its config.json, its safetensors parameter counts by
    dtype (as the Hub's API reports them) and, for Qwen-VL models, its preprocessor_config."""
    text = text_config(config)
    arch = _architecture(config, text, parameters, preprocessor)
    dtype = str(text.get("torch_dtype") or config.get("torch_dtype") or config.get("dtype") or "")
    dtype = dtype or str(text.get("dtype") or "bfloat16")
    checkpoint = Checkpoint(
        hf_id=hf_id,
        revision=revision,
        weight_bytes=weight_bytes(parameters) if parameters else None,
        dtype=dtype,
        quantization=quant_method(config),
        main_dtype=max(parameters, key=lambda k: parameters[k]) if parameters else None,
    )
    return arch, checkpoint


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's settings with transformers' defaults filled in: the nested
    text_config of multimodal models (Gemma 3, Qwen3-VL), or the top level."""
    nested = config.get("text_config")
    raw = dict(nested) if isinstance(nested, Mapping) else dict(config)
    return {**TEXT_DEFAULTS.get(text_model_type(config), {}), **{k: v for k, v in raw.items()}}


def text_model_type(config: Mapping[str, Any]) -> str:
    """The language model's model_type: gemma3_text inside a gemma3 config, and so on."""
    nested = config.get("text_config")
    if isinstance(nested, Mapping):
        return str(nested.get("model_type") or TEXT_TYPE_OF.get(str(config.get("model_type"))))
    return str(config.get("model_type"))


def quant_method(config: Mapping[str, Any]) -> str | None:
    """The checkpoint's own quantization, as vLLM reads it (config.json quantization_config;
    vllm/config/model.py ModelConfig._verify_quantization)."""
    quant = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(quant, Mapping):
        return None
    method = str(quant.get("quant_method", "")).lower()
    return method.replace("compressed_tensors", "compressed-tensors") or None


def weight_bytes(parameters: Mapping[str, int]) -> int:
    """Exact weight bytes from parameter counts by safetensors dtype."""
    total = 0
    for dtype, count in parameters.items():
        if dtype not in DTYPE_BYTES:
            raise ConfigProblem(f"safetensors dtype {dtype!r} has no known size")
        total += DTYPE_BYTES[dtype] * int(count)
    return total


# Attention whose KV cache is not K and V per KV head: mvgen would misjudge it, so the fit
# stays unknown (a warning) rather than wrong.
UNSIZED_ATTENTION = {
    "kv_lora_rank": "multi-head latent attention (kv_lora_rank)",
    "attention_chunk_size": "chunked local attention (attention_chunk_size)",
    "linear_num_key_heads": "linear attention layers",
    "mamba_d_state": "Mamba layers",
    "ssm_state_size": "state-space layers",
}


def _architecture(
    config: Mapping[str, Any],
    text: Mapping[str, Any],
    parameters: Mapping[str, int] | None,
    preprocessor: Mapping[str, Any] | None,
) -> Architecture:
    names = tuple(str(a) for a in config.get("architectures") or ())
    unsized = UNSIZED_ENCODERS.intersection(names)
    if unsized:
        raise ConfigProblem(
            f"{min(unsized)} is an encoder-only model whose layout mvgen does not size "
            "(mvgen sizes BERT, RoBERTa and XLM-RoBERTa encoders); declare its architecture: "
            "with encoder_only: true"
        )
    if str(config.get("model_type")) in ENCODER_DEFAULTS:
        return _encoder(config, names, parameters)
    return replace(_decoder(config, text, parameters, preprocessor), hf_architectures=names)


def _decoder(
    config: Mapping[str, Any],
    text: Mapping[str, Any],
    parameters: Mapping[str, int] | None,
    preprocessor: Mapping[str, Any] | None,
) -> Architecture:
    for field, what in UNSIZED_ATTENTION.items():
        if text.get(field):
            raise ConfigProblem(f"its {what} has a KV cache mvgen does not size")
    kinds = set(text.get("layer_types") or ()) - {"full_attention", "sliding_attention"}
    if kinds:
        raise ConfigProblem(f"its layer types {sorted(kinds)} have a KV cache mvgen does not size")
    hidden = _need(text, "hidden_size")
    heads = _need(text, "num_attention_heads")
    layers = _need(text, "num_hidden_layers")
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or hidden // heads
    experts = int(text.get("num_experts") or text.get("num_local_experts") or 0)
    if experts:
        width = _need(text, "moe_intermediate_size", "intermediate_size")
        intermediate = width * int(_need(text, "num_experts_per_tok"))
    else:
        intermediate = _need(text, "intermediate_size")
    window, every = _sliding(text, layers)
    vision = _vision_tower(config, int(text.get("hidden_size") or 0), preprocessor)
    lora = lora_shape(text, text_model_type(config), int(kv_heads), int(head_dim))
    if parameters:
        params = sum(int(n) for n in parameters.values())
    else:
        params = _estimated_params(text, layers, kv_heads, head_dim, intermediate, experts)
        params += vision.params if vision else 0
    return Architecture(
        params_b=round(params / 1e9, 4),
        layers=int(layers),
        kv_heads=int(kv_heads),
        attention_heads=int(heads),
        head_dim=int(head_dim),
        max_context=int(_need(text, "max_position_embeddings")),
        vision=vision is not None,
        sliding_window=window,
        global_layer_every=every,
        vocab_size=int(_need(text, "vocab_size")),
        hidden_size=int(hidden),
        intermediate_size=int(intermediate),
        experts=experts,
        vision_tower=vision,
        tied_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings"))),
        buffer_bytes=rope_cache_bytes(text, head_dim, "rope_local_base_freq" in text),
        lora=lora,
    )


# Text model types whose vLLM 0.12 class supports LoRA and whose LoRA layers mvgen sizes:
# (embed_tokens and lm_head get LoRA buffers too, because the class lists them in
# embedding_modules; the experts' gate and up weights are fused, is_3d_moe_weight). From
# vllm/model_executor/models: llama.py (Mistral is served by LlamaForCausalLM, registry.py),
# mixtral.py, qwen2.py, qwen3.py, qwen3_moe.py, qwen3_vl.py, qwen3_vl_moe.py, gemma3.py.
LORA_MODEL_TYPES: dict[str, tuple[bool, bool]] = {
    "llama": (True, False),
    "mistral": (True, False),
    "mixtral": (True, False),
    "qwen2": (False, False),
    "qwen3": (False, False),
    "qwen3_moe": (False, False),
    "qwen3_vl_text": (False, False),
    "qwen3_vl_moe_text": (False, True),
    "gemma3_text": (False, False),
}


def lora_shape(
    text: Mapping[str, Any], model_type: str, kv_heads: int, head_dim: int
) -> LoraShape | None:
    """The layers vLLM gives LoRA buffers (vllm/lora/models.py _create_lora_modules: every
    linear and fused-MoE layer of the language model, whatever an adapter targets), or None
    for a model type not in LORA_MODEL_TYPES."""
    if model_type not in LORA_MODEL_TYPES:
        return None
    embeddings, fused = LORA_MODEL_TYPES[model_type]
    layers = int(_need(text, "num_hidden_layers"))
    experts = int(text.get("num_experts") or text.get("num_local_experts") or 0)
    moe_layers = 0
    if experts:
        # qwen3_moe.py Qwen3MoeDecoderLayer: experts unless listed in mlp_only_layers, on
        # every decoder_sparse_step-th layer
        dense_only = set(text.get("mlp_only_layers") or ())
        step = int(text.get("decoder_sparse_step") or 1)
        moe_layers = sum(1 for i in range(layers) if i not in dense_only and (i + 1) % step == 0)
    return LoraShape(
        layers=layers,
        hidden=int(_need(text, "hidden_size")),
        heads=int(_need(text, "num_attention_heads")),
        kv_heads=kv_heads,
        head_dim=head_dim,
        dense_layers=layers - moe_layers,
        mlp=int(text.get("intermediate_size") or 0),
        moe_layers=moe_layers,
        experts=experts if moe_layers else 0,
        expert_mlp=int(text.get("moe_intermediate_size") or text.get("intermediate_size") or 0),
        fused_experts=fused,
        vocab=int(_need(text, "vocab_size")) if embeddings else 0,
    )


def _encoder(
    config: Mapping[str, Any], names: tuple[str, ...], parameters: Mapping[str, int] | None
) -> Architecture:
    """A BERT-style encoder: its shape, no KV cache, and a classifier's label count."""
    model_type = str(config["model_type"])
    c = {**ENCODER_DEFAULTS[model_type], **config}
    hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    layers, inter = int(c["num_hidden_layers"]), int(c["intermediate_size"])
    positions = int(c["max_position_embeddings"])
    classifier = any(n.endswith("ForSequenceClassification") for n in names)
    labels = None
    if classifier:
        id2label = config.get("id2label")
        labels = len(id2label) if id2label else int(c.get("num_labels") or DEFAULT_NUM_LABELS)
    if parameters:
        params = sum(int(n) for n in parameters.values())
    else:
        params = _encoder_params(c, hidden, layers, inter, positions, labels)
    offset = int(c["pad_token_id"]) + 1 if model_type in POSITION_OFFSET_TYPES else 0
    return Architecture(
        params_b=round(params / 1e9, 4),
        layers=layers,
        kv_heads=heads,
        attention_heads=heads,
        head_dim=hidden // heads,
        max_context=positions - offset,
        vocab_size=int(c["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=inter,
        hf_architectures=names,
        encoder_only=True,
        num_labels=labels,
    )


def _encoder_params(
    c: Mapping[str, Any], hidden: int, layers: int, inter: int, positions: int, labels: int | None
) -> int:
    """BERT's parameters from its shapes: word, position and token-type embeddings with a
    LayerNorm; per layer q, k, v, o, a two-matrix MLP (biases included) and two LayerNorms;
    then the pooler (h x h), or a classifier's dense layer and its labels."""
    embeddings = (int(c["vocab_size"]) + positions + int(c["type_vocab_size"]) + 2) * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden * inter + inter + hidden + 4 * hidden
    head = hidden * hidden + hidden + (hidden * labels + labels if labels else 0)
    return embeddings + layers * layer + head


# vLLM builds RoPE cos/sin caches of [positions, rotary dim] in the model dtype when the model
# is constructed (model_executor/layers/rotary_embedding/base.py); "Model loading took" counts
# them. Linear and YaRN scaling make the cache factor x max_position_embeddings long
# (linear_scaling_rope.py: "max_len = self.max_position_embeddings * scaling_factor").
SCALED_ROPE_TYPES = ("linear", "yarn", "dynamic")


def rope_cache_bytes(text: Mapping[str, Any], head_dim: int, local_rope: bool) -> int:
    """Bytes of the rotary caches: one per distinct RoPE (Gemma 3 adds an unscaled one for its
    sliding layers, gemma3.py)."""
    positions = int(text.get("max_position_embeddings") or 0)
    scaling = text.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    factor = float(scaling.get("factor") or 1) if kind in SCALED_ROPE_TYPES else 1.0
    rotary = int(head_dim * float(text.get("partial_rotary_factor") or 1))
    caches = [int(positions * factor)] + ([positions] if local_rope else [])
    return sum(n * rotary * 2 for n in caches)


def _need(fields: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if fields.get(name) is not None:
            return fields[name]
    raise ConfigProblem(f"config.json has no {names[0]}")


def _sliding(text: Mapping[str, Any], layers: int) -> tuple[int | None, int | None]:
    """(window, one global layer in every N) as vLLM builds the attention layers."""
    window = text.get("sliding_window")
    if not window or text.get("use_sliding_window") is False:
        return None, None  # Qwen2/3 name a window but switch it off (use_sliding_window)
    types = text.get("layer_types")
    if isinstance(types, list) and types:
        full = sum(1 for t in types if t == "full_attention")
        if full == 0:
            return int(window), None
        every = len(types) // full
        pattern = [
            "full_attention" if (i + 1) % every == 0 else "sliding_attention"
            for i in range(len(types))
        ]
        if pattern != [t if t == "full_attention" else "sliding_attention" for t in types]:
            raise ConfigProblem("layer_types mixes global and sliding layers in no regular pattern")
        return int(window), every
    pattern = text.get("sliding_window_pattern") or text.get("_sliding_window_pattern")
    if pattern:
        return int(window), int(pattern)
    return int(window), None  # every layer slides (Mistral v0.1)


def _vision_tower(
    config: Mapping[str, Any], text_hidden: int, preprocessor: Mapping[str, Any] | None
) -> VisionTower | None:
    vision = config.get("vision_config")
    if not isinstance(vision, Mapping):
        return None
    model_type = str(config.get("model_type"))
    if model_type == "gemma3":
        return _siglip(
            vision,
            text_hidden,
            int(config.get("mm_tokens_per_image") or GEMMA3_MM_TOKENS_PER_IMAGE),
        )
    if model_type in ("qwen3_vl", "qwen3_vl_moe"):
        return _qwen3_vl(vision, preprocessor)
    raise ConfigProblem(f"vision model type {model_type!r} is not one mvgen can size")


def _siglip(raw: Mapping[str, Any], text_hidden: int, tokens: int) -> VisionTower:
    """Gemma 3's SigLIP encoder: every image is resized to image_size, one patch per position,
    pooled to mm_tokens_per_image tokens (vllm/model_executor/models/gemma3_mm.py)."""
    v = {**SIGLIP_DEFAULTS, **raw}
    hidden, inter, layers = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    params = layers * _vit_layer_params(hidden, inter)
    params += 3 * v["patch_size"] ** 2 * hidden + patches * hidden  # patch and position embeddings
    params += hidden * text_hidden  # multi_modal_projector
    return VisionTower(params, hidden, layers, inter, patches, tokens, output_dim=text_hidden)


def _qwen3_vl(raw: Mapping[str, Any], preprocessor: Mapping[str, Any] | None) -> VisionTower:
    """Qwen3-VL's encoder: the largest image is the processor's longest_edge pixels, one
    position per patch_size^2 pixels, merged spatial_merge_size^2 to one token
    (vllm/model_executor/models/qwen3_vl.py Qwen3VLProcessingInfo._get_vision_info)."""
    v = {**QWEN3_VL_VISION_DEFAULTS, **raw}
    hidden, inter, layers = v["hidden_size"], v["intermediate_size"], v["depth"]
    size = (preprocessor or {}).get("size") or {}
    max_pixels = int(size.get("longest_edge") or QWEN_VL_DEFAULT_MAX_PIXELS)
    patches = max_pixels // v["patch_size"] ** 2
    tokens = patches // v["spatial_merge_size"] ** 2
    merged = hidden * v["spatial_merge_size"] ** 2
    mergers = 1 + len(v.get("deepstack_visual_indexes") or [])
    params = layers * _vit_layer_params(hidden, inter)
    params += 3 * v["temporal_patch_size"] * v["patch_size"] ** 2 * hidden
    params += v["num_position_embeddings"] * hidden
    params += mergers * (merged * merged + merged * v["out_hidden_size"])
    # The deepstack features travel with each token: out_hidden_size x (1 + levels) wide
    # (qwen3_vl.py: visual_dim + multiscale_dim).
    width = v["out_hidden_size"] * mergers
    return VisionTower(params, hidden, layers, inter, patches, tokens, output_dim=width, video=True)


def _vit_layer_params(hidden: int, inter: int) -> int:
    """One pre-norm ViT block: q, k, v, o and a two-matrix MLP, with biases and two norms."""
    return 4 * (hidden * hidden + hidden) + 2 * hidden * inter + inter + hidden + 4 * hidden


def _estimated_params(
    text: Mapping[str, Any],
    layers: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    experts: int,
) -> int:
    """Parameters from the shapes, for a checkpoint whose safetensors sizes we lack."""
    hidden, heads, vocab = text["hidden_size"], text["num_attention_heads"], text["vocab_size"]
    attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    if experts:
        per_token = text["num_experts_per_tok"]
        mlp = experts * 3 * hidden * (intermediate // per_token) + hidden * experts
    else:
        mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp) + embeddings
