"""Does a model fit its GPU? The memory arithmetic vLLM 0.12 does at start-up, before paying
for a cold start to find out. Per GPU (vllm/v1/worker/gpu_worker.py
Worker.determine_available_memory, vllm/utils/mem_utils.py memory_profiling):

    requested = torch-visible memory x gpu_memory_utilization
    KV budget = requested - weights - profile peak - non-torch growth
    sequences = KV budget / KV bytes one max_model_len request may hold

The profile peak is what `GPUModelRunner.profile_run` allocates: the vision encoder on its
largest dummy images, one forward pass of max_num_batched_tokens, and the sampler over
min(max_num_seqs, max_num_batched_tokens) rows of the whole vocabulary. The KV layout
follows vLLM 0.12's hybrid KV cache manager (vllm/v1/core/kv_cache_utils.py,
vllm/v1/kv_cache_interface.py). Loading must fit too: online fp8 of a 16-bit checkpoint
holds the whole 16-bit model before vLLM 0.16. docs/plan.md has the derivation, the
evidence table and the tolerance; each constant below cites its source.

Pooling models (kind embed or rerank) run no sampler. Encoder-only ones (BERT, XLM-R) have
no KV cache at all: vLLM skips the profile and reserves nothing for one
(vllm/v1/engine/core.py `_initialize_kv_caches`: "Attention free models don't need memory
for kv cache"), so what must fit is the weights and the activations of one step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from mvgen.catalog import (
    GPU_TYPES,
    MAX_GPUS_PER_CONTAINER,
    Architecture,
    Checkpoint,
    GpuType,
    LoraShape,
)
from mvgen.errors import Problem
from mvgen.hfconfig import TORCH_DTYPE_BYTES
from mvgen.loader import Lines
from mvgen.plan import Deployment, Plan, Settings
from mvgen.vllm_flags import flag_value

GIB = 1024**3
MIB = 1024**2

# --- what vLLM's version changes ----------------------------------------------------------

# Online fp8 of a 16-bit checkpoint allocates every weight in 16 bits and quantizes after the
# whole model is loaded (vLLM 0.12 fp8.py Fp8LinearMethod/Fp8MoEMethod.create_weights,
# model_loader/base_loader.py "Quantization does not happen in `load_weights` but after it").
# PR #31914 (https://github.com/vllm-project/vllm/pull/31914) creates them on the meta device;
# its first release is 0.16.0 (read in the 0.15.1 and 0.16.0 wheels' fp8.py).
ONLINE_QUANT_STREAMS_FROM = (0, 16, 0)
# CUDA graph memory is captured after the KV cache is allocated, outside the profile, until
# vLLM 0.21 profiles it first (0.12 gpu_worker.py compile_or_warm_up_model: "`memory_profiling`
# does not consider CUDAGraph memory size"; 0.33 logs "default since v0.21.0").
CUDA_GRAPHS_PROFILED_FROM = (0, 21, 0)

# --- the GPU as torch sees it ---------------------------------------------------------------

# torch.cuda.mem_get_info() totals, what vLLM multiplies by gpu_memory_utilization, from
# published vLLM logs ("Free memory on device (free/TOTAL GiB) on startup"); nvidia-smi's
# figure (catalog.py) is 0.4-0.7 GiB more.
TORCH_VISIBLE_GIB = {
    "L40S": 44.42,  # vLLM 0.10.2 log with nvidia-smi "45397MiB / 46068MiB"
    # https://github.com/llm-d/llm-d-benchmark config_explorer/empirical-vllm-memory-results.md
    "H100": 79.18,
    "A100-80GB": 79.32,  # https://github.com/vllm-project/vllm-omni/issues/276
    "H200": 139.81,  # "Free memory on device (139.21/139.81 GiB)", TP2 vLLM 0.10 log
    "B200": 178.36,  # https://github.com/vllm-project/vllm/pull/21489
    "RTX-PRO-6000": 95.01,  # "Free memory on device (94.05/95.01 GiB)"
}
TORCH_VISIBLE_GAP_GIB = 0.7  # other GPUs: nvidia-smi total less the largest gap seen above

# Memory outside the KV arithmetic that must fit in total x (1 - utilization): the CUDA
# context (and NCCL with TP) before vLLM's first snapshot. llm-d's H100 logs: free at start
# 78.57 of 79.18 GiB with one GPU, 77.64 with two.
CONTEXT_GIB = {1: 0.61, 2: 1.54}
# Non-torch growth during the profile (cuBLAS workspaces; NCCL and custom all-reduce buffers
# with TP), counted in the KV arithmetic: llm-d's logs, 0.13-0.14 GiB on one H100, 0.54-0.55
# with two.
NON_TORCH_GIB = {1: 0.14, 2: 0.55}
# CUDA graph capture after the KV cache (fast_boot: false): up to 1.03 GiB in llm-d's logs
# (gpt-oss-120b), 2.37 GiB in the H200 TP2 log above.
CUDA_GRAPH_GIB = 1.0

# --- the start-up profile -------------------------------------------------------------------

# Sampler profile (gpu_model_runner.py _dummy_sampler_run with top-k and top-p on, the native
# path: bf16 logits, fp32 copy, sorted values, int64 indices, masks, softmax, scatter, and the
# sort's own buffers), bytes per row x vocabulary entry, on min(max_num_seqs,
# max_num_batched_tokens) rows. Fitted to llm-d's H100 runs (1024 rows; Qwen3 0.6B/32B,
# Llama 3.1 8B, Llama 3.3 70B, gpt-oss-20b): 38.2-38.6 B; a 256-row L40S run gives 38.2 B.
SAMPLER_BYTES_PER_LOGIT = 38.3
VOCAB_WHEN_UNKNOWN = 262_208  # Gemma 3's, the largest common vocabulary: a cautious default
# One eager forward pass of max_num_batched_tokens (gpu_model_runner.py _dummy_run): per token
# the residual stream and norms (4 x hidden) and the MLP's gate/up output and activation
# (3 x intermediate), in bf16. Below the sampler in every published V1 run (docs/plan.md).
FORWARD_HIDDEN_COPIES = 4
FORWARD_MLP_COPIES = 3
# Vision encoder profile (gpu_model_runner.py profile_run): the encoder runs on its dummy batch
# first (per position, the live copies of one ViT block: input, q/k/v, attention output and the
# MLP's two intermediate tensors, in bf16: an estimate from the block's shapes that no log
# isolates; the B200 Gemma 3 log bounds it from above, and where it sets the peak `mvgen plan`
# widens the range upwards), then its outputs stay cached, padded to the item's full token
# count, while the language model and sampler run. The cached outputs are what the 4x RTX 3090
# Qwen3-VL log shows: 153,600 tokens x 8,192 wide x 2 B = 2.34 GiB (docs/plan.md).
ENCODER_HIDDEN_COPIES = 6
ENCODER_MLP_COPIES = 2
VISION_TOKENS_WHEN_UNKNOWN = 1024  # a declared vision model without encoder facts
# vLLM's default per-prompt limit when limit_mm_per_prompt leaves a modality unset.
DEFAULT_ITEMS_PER_PROMPT = 999

# The largest pooler output vLLM profiles: one fp32 hidden vector per token (token_embed).
POOLER_BYTES = 4

# The fit's stated tolerance on the KV budget per GPU: every published start-up in the
# calibration table of docs/plan.md is within it (tests/test_fit.py holds each one).
KV_TOLERANCE_GIB = 0.5

# vLLM 0.12 schedules 8192 tokens and 1024 sequences per step on GPUs of 70 GiB and more
# (NVML total), except A100s; 2048 and 256 elsewhere (engine/arg_utils.py get_batch_defaults).
LARGE_BATCH_GIB = 70
BLOCK_SIZE = 16  # tokens per KV block: vLLM's default on CUDA
MAX_LEN_STEP = 256  # suggested max_model_len values are multiples of this (schema minimum)
KV_DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
# Online quantization keeps these bytes per quantized weight; unquantized ones keep 2.
QUANT_BYTES = {"fp8": 1.0, "fp8_per_tensor": 1.0}


# --- small helpers ----------------------------------------------------------------------------


def version_tuple(text: str) -> tuple[int, ...]:
    """The release numbers of a version: (0, 12, 0) for 0.12.0; .post1 or rc1 is ignored."""
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def human_readable_int(value: str) -> int | None:
    """vLLM's reading of `--max-num-batched-tokens 4k` (arg_utils.py human_readable_int:
    k/m/g x 1000s, K/M/G x 1024s); None when vLLM would refuse it."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgKMG]?)", value.strip())
    if not match:
        return None
    number, suffix = match.groups()
    if suffix.isupper() and "." in number:
        return None  # vLLM: no decimals with binary suffixes
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(number) * scale[suffix]) if suffix else int(number)


def torch_visible_bytes(gpu: GpuType) -> float:
    gib = TORCH_VISIBLE_GIB.get(gpu.name)
    if gib is None:
        gib = gpu.memory_mib / 1024 - TORCH_VISIBLE_GAP_GIB
    return gib * GIB


def is_large_gpu(gpu: GpuType) -> bool:
    return gpu.memory_mib * MIB >= LARGE_BATCH_GIB * GIB and not gpu.name.startswith("A100")


def default_batched_tokens(gpu: GpuType) -> int:
    return 8192 if is_large_gpu(gpu) else 2048


def default_max_num_seqs(gpu: GpuType) -> int:
    return 1024 if is_large_gpu(gpu) else 256


def non_torch_bytes(gpu_count: int) -> float:
    return (NON_TORCH_GIB[1] if gpu_count == 1 else NON_TORCH_GIB[2]) * GIB


def context_bytes(gpu_count: int) -> float:
    return (CONTEXT_GIB[1] if gpu_count == 1 else CONTEXT_GIB[2]) * GIB


# --- weights ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    resident: float  # bytes once loaded (what "Model loading took" reports), whole model
    peak: float  # bytes while loading, whole model


def weights(
    arch: Architecture, ckpt: Checkpoint, quantization: str | None, vllm: str
) -> Weights | str:
    """The model's weight bytes as vLLM holds them, or why we cannot size them."""
    width = TORCH_DTYPE_BYTES.get(ckpt.dtype, 2)
    stored = ckpt.weight_bytes if ckpt.weight_bytes else arch.params_b * 1e9 * width
    if quantization is None or ckpt.quantization is not None:
        return Weights(stored, stored)  # the checkpoint's own format, pre-quantized or not
    if quantization not in QUANT_BYTES:
        return f"quantization {quantization!r} of a {ckpt.dtype} checkpoint has no known size"
    kept = min(_unquantized_params(arch) * width, stored)
    resident = kept + (stored - kept) / width * QUANT_BYTES[quantization]
    streams = version_tuple(vllm) >= ONLINE_QUANT_STREAMS_FROM
    return Weights(resident, resident if streams else stored)


def per_gpu_weights(arch: Architecture, held: Weights, settings: Settings) -> tuple[float, float]:
    """(resident, load peak) bytes on one GPU: tensor parallelism splits the weights; every
    rank keeps the non-parameter buffers, and any part vLLM replicates."""
    tp = settings.gpu_count
    replicated = _replicated_bytes(arch, settings)
    resident = (held.resident - replicated) / tp + replicated + arch.buffer_bytes
    peak = (held.peak - replicated) / tp + replicated + arch.buffer_bytes
    return resident, peak


def _replicated_bytes(arch: Architecture, settings: Settings) -> float:
    """Weights every tensor-parallel rank holds whole: the vision tower with
    --mm-encoder-tp-mode data (by default vLLM 0.12 shards it like the rest:
    vllm/config/multimodal.py mm_encoder_tp_mode = "weights")."""
    tower = arch.vision_tower
    if settings.gpu_count == 1 or tower is None:
        return 0.0
    if flag_value(settings.extra_args, "--mm-encoder-tp-mode") != "data":
        return 0.0
    return tower.params * 2.0


def as_loaded(ckpt: Checkpoint, settings: Settings, pooling: bool) -> Checkpoint:
    """The checkpoint as vLLM 0.12 holds it with `--dtype auto`: fp32 weights are cast down,
    to fp16 for a pooling model and to the GPU's first dtype (bf16) otherwise
    (vllm/config/model.py `_resolve_auto_dtype`: "Downcast for float32 models")."""
    asked = flag_value(settings.extra_args, "--dtype") or "auto"
    if ckpt.dtype != "float32" or asked in ("float32", "float"):
        return ckpt
    if asked == "auto":
        asked = "float16" if pooling else "bfloat16"
    dtype = {"half": "float16"}.get(asked, asked)
    size = ckpt.weight_bytes // 2 if ckpt.weight_bytes else None
    return replace(ckpt, weight_bytes=size, dtype=dtype)


# safetensors dtypes by the name `mvgen plan` shows for weights stored in them
DTYPE_LABELS = {"F8_E4M3": "fp8", "F8_E5M2": "fp8", "BF16": "bf16", "F16": "fp16", "F32": "fp32"}


def weight_label(d: Deployment) -> str:
    """How the weights are held: online quantization, the checkpoint's own (pre-quantized)
    format, or its dtype."""
    if d.settings.quantization:
        return f"{d.settings.quantization} (online)"
    ckpt = as_loaded(d.checkpoint, d.settings, d.model.pooling)
    if ckpt.quantization:
        return f"{DTYPE_LABELS.get(ckpt.main_dtype or '', ckpt.quantization)} (ckpt)"
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(ckpt.dtype, ckpt.dtype)


def _unquantized_params(arch: Architecture) -> int:
    """Embedding and lm_head stay in 16 bits (VocabParallelEmbedding, ParallelLMHead)."""
    vocab = arch.vocab_size or VOCAB_WHEN_UNKNOWN
    return vocab * (arch.hidden_size or 0) * (1 if arch.tied_embeddings else 2)


# --- LoRA adapters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSlots:
    """What vLLM reserves GPU memory for when adapters are served: --max-loras adapters of
    --max-lora-rank, in --lora-dtype."""

    max_loras: int
    max_rank: int
    dtype_bytes: int


def lora_slots(d: Deployment, settings: Settings | None = None) -> LoraSlots | None:
    """The pair's LoRA reservation (with `settings` in place of its own); None without
    adapters, or while a rank is unknown (validation refuses that)."""
    if not d.adapters or d.max_lora_rank is None:
        return None
    s = settings or d.settings
    dtype = flag_value(s.extra_args, "--lora-dtype") or "auto"
    width = TORCH_DTYPE_BYTES.get(d.checkpoint.dtype if dtype == "auto" else dtype, 2)
    return LoraSlots(replace(d, settings=s).max_loras, d.max_lora_rank, width)


def lora_elements(shape: LoraShape, tp: int) -> int:
    """Elements of LoRA buffer per adapter slot and per unit of rank, on one GPU.

    vLLM 0.12 preallocates, when it loads the model, an A and a B matrix per slice of every
    linear layer of the language model, whatever the adapters target (vllm/lora/models.py
    LoRAModelManager._create_lora_modules): A is max_loras x max_lora_rank x input, B is
    max_loras x output x max_lora_rank (lora/layers/base_linear.py
    BaseLinearLayerWithLoRA.create_lora_weights). So each layer costs (slices x input + the
    slices' outputs) per slot and rank: merged layers repeat A per slice (qkv_proj 3,
    gate_up_proj 2: column_parallel_linear.py MergedColumnParallelLinearWithLoRA,
    MergedQKVParallelLinearWithLoRA). Tensor parallelism splits column-parallel outputs and
    row-parallel inputs. Experts have a pair per expert (lora/layers/fused_moe.py
    FusedMoEWithLoRA._create_lora_a_weights/_create_lora_b_weights; FusedMoE3DWithLoRA when
    gate and up are fused), the router is a replicated linear layer, and models with
    embedding_modules add the token embedding and lm_head (vocal_parallel_embedding.py,
    logits_processor.py), both over the whole vocabulary."""
    h = shape.hidden
    q = shape.heads // tp * shape.head_dim  # vLLM needs heads divisible by tp
    kv = max(1, shape.kv_heads // tp) * shape.head_dim  # vLLM replicates KV heads past TP
    attention = (3 * h + q + 2 * kv) + (q + h)  # qkv_proj, o_proj
    mlp = shape.mlp // tp
    dense = (2 * h + 2 * mlp) + (mlp + h)  # gate_up_proj, down_proj
    width = shape.expert_mlp // tp
    if shape.fused_experts:  # w13 one slice of 2 x width, w2
        experts = shape.experts * ((h + 2 * width) + (width + h))
    else:  # w1, w3, w2
        experts = shape.experts * (2 * (h + width) + (width + h))
    moe = experts + (h + shape.experts)  # and the router (gate)
    embeddings = 2 * (shape.vocab + h) if shape.vocab else 0  # embed_tokens, lm_head
    return (
        shape.layers * attention + shape.dense_layers * dense + shape.moe_layers * moe + embeddings
    )


def lora_bytes(shape: LoraShape, tp: int, slots: LoraSlots) -> int:
    return slots.max_loras * slots.max_rank * slots.dtype_bytes * lora_elements(shape, tp)


# --- the profile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What vLLM 0.12's start-up profile allocates on one GPU, in bytes."""

    sampler: float  # sampler over the vocabulary, with the hidden states it reads
    forward: float  # one forward pass of max_num_batched_tokens
    encoder: float  # vision encoder on its dummy batch
    encoder_cache: float  # the encoder's outputs, held through the rest of the profile

    @property
    def peak(self) -> float:
        """torch_peak_increase: the largest of the encoder run and, after it, the language
        model and sampler beside the cached encoder outputs."""
        return max(self.encoder, self.encoder_cache + max(self.forward, self.sampler))

    @property
    def encoder_margin(self) -> float:
        """How much of the peak rests only on the encoder-run estimate, which no published
        log isolates (one bounds it from above): the KV budget may be that much larger."""
        return max(0.0, self.encoder - self.encoder_cache - max(self.forward, self.sampler))


@dataclass(frozen=True)
class EncoderBatch:
    """The dummy multimodal batch vLLM profiles (vllm/v1/worker/utils.py MultiModalBudget)."""

    items: int
    positions_per_item: int  # encoder positions (patches) of one item
    tokens_per_item: int  # language-model tokens vLLM reserves for one item


def profile(
    arch: Architecture,
    tp: int,
    batched: int,
    seqs: int,
    encoder_batch: EncoderBatch | None,
    pooling: bool = False,
) -> Profile:
    vocab = arch.vocab_size or VOCAB_WHEN_UNKNOWN
    hidden = arch.hidden_size or 0
    if pooling:
        # A pooling model's profile runs the pooler, not the sampler (gpu_model_runner.py
        # profile_run -> _dummy_pooler_run); at most one fp32 vector per token comes out.
        sampler = batched * hidden * POOLER_BYTES
    else:
        sampler = SAMPLER_BYTES_PER_LOGIT * min(batched, seqs) * vocab + batched * hidden * 2
    inter = (arch.intermediate_size or 0) / tp  # column-parallel MLP splits the width
    forward = batched * 2 * (FORWARD_HIDDEN_COPIES * hidden + FORWARD_MLP_COPIES * inter)
    encoder = cache = 0.0
    if encoder_batch is not None:
        tower = arch.vision_tower
        width = tower.hidden_size if tower else hidden
        mlp = tower.intermediate_size / tp if tower else 0
        out_dim = tower.output_dim if tower else hidden
        batch = encoder_batch
        positions = batch.items * batch.positions_per_item
        encoder = positions * 2 * (ENCODER_HIDDEN_COPIES * width + ENCODER_MLP_COPIES * mlp)
        cache = batch.items * batch.tokens_per_item * out_dim * 2
    return Profile(sampler, forward, encoder, cache)


def encoder_batch(
    arch: Architecture, settings: Settings, batched: int, seqs: int
) -> EncoderBatch | str | None:
    """The images vLLM profiles: as many largest images as max(max_num_batched_tokens, one
    image's tokens) holds, at most max_num_seqs x images per prompt (MultiModalBudget
    .get_max_items). None for a text model or with images off; a message when the video
    modality, which mvgen does not size, is on."""
    if not arch.vision:
        return None
    limits = settings.limit_mm_per_prompt or {}
    tower = arch.vision_tower
    if tower is not None and tower.video and limits.get("video", DEFAULT_ITEMS_PER_PROMPT) != 0:
        return (
            "vLLM profiles this model's video input, whose size mvgen does not model; to "
            "serve images only set limit_mm_per_prompt: {image: 4, video: 0} (images you need)"
        )
    per_prompt = limits.get("image", DEFAULT_ITEMS_PER_PROMPT)
    if per_prompt == 0:
        return None  # no modality left: vLLM skips the encoder profile
    tokens = tower.tokens_per_item if tower else VISION_TOKENS_WHEN_UNKNOWN
    positions = tower.patches_per_item if tower else tokens
    budget = max(batched, tokens)
    items_per_prompt = max(1, min(per_prompt, settings.max_model_len // tokens))
    items = max(1, min(budget // tokens, seqs * items_per_prompt))
    return EncoderBatch(items, positions, tokens)


# --- the KV layout ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KvLayout:
    """One GPU's share of a model's KV cache, grouped as vLLM's hybrid manager groups it."""

    bytes_per_token_layer: int  # K and V of one token in one layer on one GPU
    full_layers: int
    sliding_layers: int
    window: int | None
    group_size: int  # layers per KV cache group; one block holds this many layers
    full_groups: int
    sliding_groups: int

    @property
    def block_bytes(self) -> int:
        return self.group_size * BLOCK_SIZE * self.bytes_per_token_layer

    @property
    def bytes_per_token(self) -> int:
        """What each further token of context costs: the full-attention layers only."""
        return self.full_groups * self.group_size * self.bytes_per_token_layer


def kv_layout(arch: Architecture, gpu_count: int, kv_dtype_bytes: int) -> KvLayout:
    heads = max(1, arch.kv_heads // gpu_count)  # vLLM replicates heads when TP > KV heads
    per_layer = 2 * heads * arch.head_dim * kv_dtype_bytes
    if arch.sliding_window is None:
        full, sliding = arch.layers, 0
    elif arch.global_layer_every:
        full = arch.layers // arch.global_layer_every  # layer i is global when (i+1) % n == 0
        sliding = arch.layers - full
    else:
        full, sliding = 0, arch.layers
    counts = [n for n in (full, sliding) if n]
    group = min(counts)
    if max(counts) < group * 1.25:  # vLLM pads to the larger count when they are close
        group = max(counts)
    return KvLayout(
        bytes_per_token_layer=per_layer,
        full_layers=full,
        sliding_layers=sliding,
        window=arch.sliding_window if sliding else None,
        group_size=group,
        full_groups=math.ceil(full / group),
        sliding_groups=math.ceil(sliding / group),
    )


def blocks_per_sequence(layout: KvLayout, max_model_len: int, batched_tokens: int) -> int:
    """Blocks one max_model_len request may hold (vLLM's max_memory_usage_bytes)."""
    full = math.ceil(max_model_len / BLOCK_SIZE)
    sliding = 0
    if layout.window is not None:
        kept = min(layout.window - 1 + batched_tokens, max_model_len)
        sliding = math.ceil(kept / BLOCK_SIZE) + 1  # the window may straddle a block edge
    return layout.full_groups * full + layout.sliding_groups * sliding


def sequence_bytes(layout: KvLayout, max_model_len: int, batched_tokens: int) -> int:
    return blocks_per_sequence(layout, max_model_len, batched_tokens) * layout.block_bytes


def sequences_that_fit(
    budget: float, layout: KvLayout, max_model_len: int, batched_tokens: int
) -> float:
    """vLLM's "Maximum concurrency for N tokens per request"."""
    if budget <= 0:
        return 0.0
    blocks = int(budget // layout.block_bytes)
    return blocks / blocks_per_sequence(layout, max_model_len, batched_tokens)


def longest_len(fits: Callable[[int], bool], ceiling: int) -> int | None:
    """The largest multiple of MAX_LEN_STEP up to `ceiling` for which `fits` holds."""
    low, high = 1, ceiling // MAX_LEN_STEP
    if high < 1 or not fits(MAX_LEN_STEP):
        return None
    while low < high:  # fits is monotone: shorter sequences need fewer blocks
        mid = (low + high + 1) // 2
        if fits(mid * MAX_LEN_STEP):
            low = mid
        else:
            high = mid - 1
    return low * MAX_LEN_STEP


# --- one model on one GPU ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """The figures for one model x GPU, shared by the validation check and `mvgen plan`.

    Byte figures are per GPU."""

    status: str  # "fits", "no-load" (weights or profile leave no KV cache), "too-long",
    # "load-oom" (loading needs more than the GPU has), "graphs-oom", "mismatch" (a
    # quantization the checkpoint's own contradicts), "unknown"
    reason: str | None = None  # why the fit is unknown
    visible_bytes: float = 0.0  # what torch sees of the GPU
    usable_bytes: float = 0.0  # x gpu_memory_utilization: vLLM's requested memory
    weight_bytes: float = 0.0  # resident, with buffers
    load_peak_bytes: float = 0.0
    profile_bytes: float = 0.0  # the start-up profile's peak
    sampler_bytes: float = 0.0
    encoder_bytes: float = 0.0
    non_torch_bytes: float = 0.0
    overhead_bytes: float = 0.0  # profile + non-torch
    kv_budget_bytes: float = 0.0
    kv_bytes_per_token: int = 0
    sequence_bytes: int = 0  # KV for one max_model_len request
    sequences: float = 0.0
    below_bytes: float = 0.0  # the KV budget may be this much lower (the tolerance)
    above_bytes: float = 0.0  # ... or this much higher (tolerance + the encoder's margin)
    sequences_low: float = 0.0  # with the KV budget below_bytes lower
    sequences_high: float = 0.0
    longest_len: int | None = None  # largest max_model_len that fits one sequence
    batched_tokens: int = 0
    max_num_seqs: int = 0
    lora_bytes: float = 0.0  # the adapters' buffers, counted in weight_bytes
    kv_cache: bool = True  # False for encoder-only pooling models: no KV figures apply
    pooling: bool = False  # an embedding or reranking model: no sampler

    @property
    def fits(self) -> bool:
        return self.status == "fits"

    @property
    def known(self) -> bool:
        return self.status != "unknown"


def assess(
    arch: Architecture | None,
    gpu: GpuType,
    settings: Settings,
    checkpoint: Checkpoint | None = None,
    vllm: str = "0.12.0",
    reason: str | None = None,
    lora: LoraSlots | None = None,
    kind: str = "chat",
) -> Fit:
    """`kind` embed or rerank: a pooling model (mvgen/pooling.py), sized without a sampler
    and, when encoder-only, without a KV cache."""
    if arch is None:
        return Fit("unknown", reason or "no architecture facts for this model")
    if lora is not None and arch.lora is None:
        return Fit(
            "unknown",
            "mvgen does not size vLLM's LoRA buffers for this model type (known: "
            "Llama, Mistral, Mixtral, Qwen2, Qwen3, Qwen3 MoE, Qwen3-VL, Gemma 3, read "
            "from the lock's config.json)",
        )
    pooling = kind != "chat"
    ckpt = as_loaded(checkpoint or Checkpoint(""), settings, pooling)
    own, asked = ckpt.quantization, settings.quantization
    if own and asked and own != asked:
        # vllm/config/model.py ModelConfig._verify_quantization: "Quantization method
        # specified in the model config (...) does not match ... the `quantization` argument"
        return Fit("mismatch", f"{ckpt.hf_id} is quantized with {own}, not {asked}")
    held = weights(arch, ckpt, settings.quantization, vllm)
    if isinstance(held, str):
        return Fit("unknown", held)
    kv_dtype = flag_value(settings.extra_args, "--kv-cache-dtype") or "auto"
    if kv_dtype not in KV_DTYPE_BYTES:
        return Fit("unknown", f"--kv-cache-dtype {kv_dtype!r} has no known size")
    seqs = settings.max_num_seqs or default_max_num_seqs(gpu)
    batched = flag_value(settings.extra_args, "--max-num-batched-tokens")
    if batched and human_readable_int(batched):
        batched_tokens = human_readable_int(batched)
    elif arch.encoder_only:
        batched_tokens = unchunked_batched_tokens(gpu, settings.max_model_len, seqs)
    else:
        batched_tokens = default_batched_tokens(gpu)
    tp = settings.gpu_count
    visible = torch_visible_bytes(gpu)
    usable = visible * settings.gpu_memory_utilization
    resident, peak_load = per_gpu_weights(arch, held, settings)
    # LoRA buffers are allocated with the model, after the weights (and any online
    # quantization): part of "Model loading took", so out of the KV cache
    # (v1/worker/gpu_model_runner.py load_model, one DeviceMemoryProfiler around both).
    adapters = float(lora_bytes(arch.lora, tp, lora)) if lora and arch.lora else 0.0
    resident += adapters
    peak_load = max(peak_load, resident)
    images = encoder_batch(arch, settings, batched_tokens, seqs)
    if isinstance(images, str):
        return Fit("unknown", images)
    prof = profile(arch, tp, batched_tokens, seqs, images, pooling)
    non_torch = non_torch_bytes(tp)
    overhead = prof.peak + non_torch
    budget = usable - resident - overhead
    context = context_bytes(tp)
    if arch.encoder_only:
        status = "fits" if budget > 0 else "no-load"
        if peak_load + context > visible:
            status = "load-oom"
        return Fit(
            status=status,
            visible_bytes=visible,
            usable_bytes=usable,
            weight_bytes=resident,
            load_peak_bytes=peak_load,
            profile_bytes=prof.peak,
            sampler_bytes=prof.sampler,
            non_torch_bytes=non_torch,
            overhead_bytes=overhead,
            kv_budget_bytes=budget,  # here: what is left beside weights and one step
            longest_len=arch.max_context if budget > 0 else None,
            batched_tokens=batched_tokens,
            max_num_seqs=seqs,
            kv_cache=False,
            pooling=True,
            lora_bytes=adapters,
        )
    layout = kv_layout(arch, tp, KV_DTYPE_BYTES[kv_dtype])
    length = settings.max_model_len

    def seqs_at(b: float, n: int = length) -> float:
        return sequences_that_fit(b, layout, n, batched_tokens)

    if peak_load + context > visible:
        status = "load-oom"
    elif budget <= 0:
        status = "no-load"
    elif seqs_at(budget) < 1:
        status = "too-long"
    elif _graphs_run_out(settings, vllm, visible, usable, context):
        status = "graphs-oom"
    else:
        status = "fits"
    below = KV_TOLERANCE_GIB * GIB
    above = below + prof.encoder_margin
    return Fit(
        status=status,
        visible_bytes=visible,
        usable_bytes=usable,
        weight_bytes=resident,
        load_peak_bytes=peak_load,
        profile_bytes=prof.peak,
        sampler_bytes=prof.sampler,
        encoder_bytes=prof.encoder,
        non_torch_bytes=non_torch,
        overhead_bytes=overhead,
        kv_budget_bytes=budget,
        kv_bytes_per_token=layout.bytes_per_token,
        sequence_bytes=sequence_bytes(layout, length, batched_tokens),
        sequences=seqs_at(budget),
        below_bytes=below,
        above_bytes=above,
        sequences_low=seqs_at(budget - below),
        sequences_high=seqs_at(budget + above),
        longest_len=longest_len(lambda n: seqs_at(budget, n) >= 1, arch.max_context),
        batched_tokens=batched_tokens,
        max_num_seqs=seqs,
        lora_bytes=adapters,
        pooling=pooling,
    )


def unchunked_batched_tokens(gpu: GpuType, max_model_len: int, seqs: int) -> int:
    """vLLM 0.12's step size without chunked prefill, which encoder-only pooling models do
    not support (config/model.py is_chunked_prefill_supported): at least one whole
    max_model_len sequence (engine/arg_utils.py
    `_set_default_max_num_seqs_and_batched_tokens_args`)."""
    return min(max(max_model_len, default_batched_tokens(gpu)), seqs * max_model_len)


def _graphs_run_out(
    settings: Settings, vllm: str, visible: float, usable: float, context: float
) -> bool:
    """Before vLLM 0.21, CUDA graphs are captured after the KV cache took its share, so they
    must fit in what gpu_memory_utilization leaves beside the CUDA context."""
    if settings.fast_boot or version_tuple(vllm) >= CUDA_GRAPHS_PROFILED_FROM:
        return False
    return visible - usable - context < CUDA_GRAPH_GIB * GIB


def assess_deployment(d: Deployment, vllm: str = "0.12.0") -> Fit:
    return assess(
        d.architecture,
        d.gpu.type,
        d.settings,
        d.checkpoint,
        vllm,
        d.unknown_reason,
        lora=lora_slots(d),
        kind=d.model.kind,
    )


def assess_in(plan: Plan, d: Deployment) -> Fit:
    return assess_deployment(d, plan.image.vllm)


def len_for_sequences(
    arch: Architecture,
    gpu: GpuType,
    settings: Settings,
    n: int,
    ckpt: Checkpoint,
    vllm: str,
    lora: LoraSlots | None = None,
    kind: str = "chat",
) -> int | None:
    """The largest max_model_len at which `n` full-length sequences fit."""

    def fits(length: int) -> bool:
        at = replace(settings, max_model_len=length)
        return assess(arch, gpu, at, ckpt, vllm, lora=lora, kind=kind).sequences >= n

    return longest_len(fits, arch.max_context)


def fixes(d: Deployment, fit: Fit, vllm: str) -> list[str]:
    """Concrete settings that would make this pair fit, each checked with the same arithmetic."""
    arch, gpu, settings, ckpt = d.architecture, d.gpu.type, d.settings, d.checkpoint
    assert arch is not None  # only known fits have fixes

    def works(s: Settings, on: GpuType = gpu, c: Checkpoint = ckpt) -> bool:
        return assess(arch, on, s, c, vllm, lora=lora_slots(d, s), kind=d.model.kind).fits

    if fit.status == "mismatch":
        return ["quantization: null"]
    out = []
    if fit.lora_bytes and d.max_loras > 1 and fit.status in ("no-load", "too-long"):
        if works(replace(settings, max_loras=1)):
            out.append("max_loras: 1 (one adapter per batch)")
    if fit.status == "too-long" and fit.longest_len:
        out.append(f"max_model_len: {fit.longest_len}")
    if fit.status in ("no-load", "too-long"):
        fewer = [n for n in (256, 128, 64) if n < fit.max_num_seqs]
        for n in fewer:
            if works(replace(settings, max_num_seqs=n)):
                out.append(f"max_num_seqs: {n}")
                break
    fp8 = _prequantized(arch, ckpt, vllm)
    if fit.status in ("load-oom", "no-load", "too-long") and gpu.fp8 and fp8 is not None:
        if works(replace(settings, quantization=None), c=fp8):
            out.append(
                f"per_gpu.{d.gpu.key}.checkpoint: an FP8 checkpoint of {ckpt.hf_id}, quantized "
                "ahead of time, which vLLM loads at FP8 size (online quantization loads the "
                f"whole {ckpt.dtype} model first before vLLM "
                f"{'.'.join(map(str, ONLINE_QUANT_STREAMS_FROM))})"
            )
    if fit.status == "graphs-oom":
        out.append("fast_boot: true")
        lower = round(settings.gpu_memory_utilization - 0.02, 2)
        if lower > 0 and works(replace(settings, gpu_memory_utilization=lower)):
            out.append(f"gpu_memory_utilization: {lower:g}")
    for count in range(settings.gpu_count + 1, MAX_GPUS_PER_CONTAINER + 1):
        if arch.splits_across(count) and works(replace(settings, gpu_count=count)):
            out.append(f"gpu_count: {count}")
            break
    elsewhere = [
        other.name
        for other in GPU_TYPES.values()
        if other.name != gpu.name and works(settings, other)
    ]
    if elsewhere:
        out.append(f"a GPU type where it fits as configured: {', '.join(elsewhere)}")
    return out


def _prequantized(arch: Architecture, ckpt: Checkpoint, vllm: str) -> Checkpoint | None:
    """The same model as an FP8 checkpoint, sized as vLLM would hold it, or None when the
    checkpoint is quantized already."""
    if ckpt.quantization is not None:
        return None
    held = weights(arch, ckpt, "fp8", vllm)
    assert not isinstance(held, str)
    size = int(held.resident)
    return replace(ckpt, hf_id=f"{ckpt.hf_id}-FP8", weight_bytes=size, quantization="fp8")


# --- the validation check ---------------------------------------------------------------------


def fit_check(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Refuse pairs that cannot start; warn when few full-length sequences fit."""
    problems = []
    unknown: set[str] = set()
    vllm = plan.image.vllm
    for d in plan.deployments:
        fit = assess_deployment(d, vllm)
        where = f"models.{d.model.key}.per_gpu.{d.gpu.key}"
        if not fit.known:
            note = f"models.{d.model.key}: fit unknown on {d.gpu.key}: {fit.reason}"
            if d.architecture is None:
                note = f"models.{d.model.key}: fit unknown: {fit.reason}; {ARCHITECTURE_HINT}"
            if note not in unknown:
                unknown.add(note)
                warnings.append(note)
            continue
        if not fit.fits:
            hint = fixes(d, fit, vllm)
            problems.append(
                Problem(
                    where,
                    refusal(d, fit, vllm),
                    _line(lines, d),
                    "fixes: " + "; ".join(hint) if hint else "no single setting makes it fit",
                )
            )
        elif fit.kv_cache and fit.sequences < plan.fit_min_sequences:
            want = plan.fit_min_sequences
            assert d.architecture is not None
            shorter = len_for_sequences(
                d.architecture,
                d.gpu.type,
                d.settings,
                want,
                d.checkpoint,
                vllm,
                lora=lora_slots(d),
                kind=d.model.kind,
            )
            advice = f"; max_model_len {shorter} fits {want}" if shorter else ""
            warnings.append(
                f"{where}: only {fit.sequences:.1f} sequences of {d.settings.max_model_len} "
                f"tokens fit in {gib(fit.kv_budget_bytes)} of KV cache on {d.gpu_spec} "
                f"(fit.min_sequences: {want}){advice}"
            )
    return problems


ARCHITECTURE_HINT = (
    "or declare it in deployments.yaml as architecture: {params_b: 7.2, layers: 32, "
    "kv_heads: 8, head_dim: 128, max_context: 32768} (from the model's config.json)"
)


def refusal(d: Deployment, fit: Fit, vllm: str = "0.12.0") -> str:
    s = d.settings
    half = "fp16" if as_loaded(d.checkpoint, s, d.model.pooling).dtype == "float16" else "bf16"
    dtype = s.quantization or d.checkpoint.quantization or half
    held = f"{gib(fit.weight_bytes)} of {dtype} weights"
    if fit.lora_bytes:  # counted with the weights, as vLLM's "Model loading took" does
        held += f" (with {gib(fit.lora_bytes)} of LoRA adapter buffers)"
    head = f"{d.model.key} on {d.gpu_spec}"
    if fit.status == "load-oom":
        online = f", quantized to {s.quantization} only after loading" if s.quantization else ""
        return (
            f"{head} runs out of memory while loading: vLLM {vllm} holds "
            f"{gib(fit.load_peak_bytes)} of weights per GPU at load ({d.checkpoint.hf_id}, "
            f"{d.checkpoint.dtype}{online}) but torch sees {gib(fit.visible_bytes)}"
        )
    if fit.status == "mismatch":
        return (
            f"{head}: vLLM refuses to start: {fit.reason}; leave quantization unset and vLLM "
            "uses the checkpoint's own"
        )
    if fit.status == "graphs-oom":
        return (
            f"{head}: with fast_boot: false vLLM {vllm} captures CUDA graphs after the KV cache, "
            f"and gpu_memory_utilization {s.gpu_memory_utilization:g} leaves "
            f"{gib(fit.visible_bytes - fit.usable_bytes)} beside it, under the "
            f"{CUDA_GRAPH_GIB:g} GiB graphs and the CUDA context need"
        )
    share = (
        f"the {gib(fit.usable_bytes)} vLLM may use ({gib(fit.visible_bytes)} x "
        f"gpu_memory_utilization {s.gpu_memory_utilization:g})"
    )
    if fit.status == "no-load" and not fit.kv_cache:
        return (
            f"{head} does not fit: {held} per GPU and "
            f"{gib(fit.overhead_bytes)} of activations for a {fit.batched_tokens}-token step "
            f"fill {share}"
        )
    if fit.status == "no-load":
        step = f"sampler {gib(fit.sampler_bytes)} for {fit.max_num_seqs} sequences"
        if fit.pooling:
            step = f"a {fit.batched_tokens}-token step; a pooling model runs no sampler"
        return (
            f"{head} leaves no KV cache: {held} per GPU and "
            f"{gib(fit.overhead_bytes)} of start-up profile ({step}) fill {share}"
        )
    return (
        f"{head}: one {s.max_model_len}-token sequence needs {gib(fit.sequence_bytes)} of KV "
        f"cache, but {gib(fit.kv_budget_bytes)} is left after {held} and "
        f"{gib(fit.overhead_bytes)} of start-up profile; vLLM would "
        "refuse to start"
    )


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _line(lines: Lines, d: Deployment) -> int | None:
    model, gpu = d.model.key, d.gpu.key
    return (
        lines.get(("models", model, "per_gpu", gpu))
        or lines.get(("models", model, "max_model_len"))
        or lines.get(("models", model))
    )
