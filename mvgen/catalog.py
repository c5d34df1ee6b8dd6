"""Facts mvgen knows without being told: the GPU types Modal accepts (memory as nvidia-smi
reports it, Modal's list prices), and the shape of the facts it reads about models.

GPU names are those of Modal's GPU guide, https://modal.com/docs/guide/gpu ("Specifying
GPU type"). The modal package checks nothing but the form `TYPE[:N]` and upper-cases TYPE
(modal/_utils/function_utils.py, `parse_gpu_config`), so a wrong name would only fail at
deploy: mvgen checks it here, case-insensitively, as Modal compares them.

A model's own facts come from its config.json on the Hugging Face Hub, read once by
`mvgen lock` into deployments.lock.json (mvgen/lock.py), or from `architecture:` in
deployments.yaml.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

# When the $/hour figures below were read. They are Modal's per-second list prices x 3600
# from https://modal.com/pricing, as transcribed on 2026-07-01 in
# https://github.com/api-evangelist/modal-labs/blob/main/plans/modal-labs-plans-pricing.yml
# (e.g. H100 $0.001097/s = $3.95/h); H100, A100-80GB, L40S, L4 and T4 match
# https://techbytes.app/posts/serverless-gpu-pricing-matrix-modal-replicate-lambda-2026/
# (prices verified 2026-05-07).
PRICES_READ_ON = "2026-12-01"


@dataclass(frozen=True)
class GpuType:
    name: str  # Modal's GPU name, as in `gpu="H100"`
    memory_mib: int
    usd_per_hour: float | None  # None when we have no checked price
    fp8: bool  # native FP8 tensor cores (Ada, Hopper, Blackwell)


# Memory is the total nvidia-smi reports (what gpu_memory_utilization is a share of).
# T4 to H200: the table of every Modal GPU in
# https://thundergolfer.com/blog/nvidia-gpu-memory-capacity
# B200: 179 GiB, the nvidia-smi-verified figure of
# https://docs.vultr.com/inference-cookbook/cuda/getting-started/hardware-overview
# RTX-PRO-6000 (96 GB Blackwell Server Edition): as published nvidia-smi output prints it;
# we found no page to cite for it.
GPU_TYPES: dict[str, GpuType] = {
    g.name: g
    for g in (
        GpuType("T4", 15_360, 0.59, False),
        GpuType("L4", 23_034, 0.80, True),
        GpuType("A10", 23_028, 1.10, False),
        GpuType("L40S", 46_068, 1.95, True),
        GpuType("A100-40GB", 40_960, 2.10, False),
        GpuType("A100-80GB", 81_920, 2.50, False),
        GpuType("RTX-PRO-6000", 97_887, 3.03, True),
        GpuType("H100", 81_559, 3.95, True),
        GpuType("H200", 143_771, 4.54, True),
        GpuType("B200", 183_359, 6.25, True),
    )
}

# More names Modal accepts for the cards above; the name is kept for the generated app.
# `A100` is the 40 GB card (Modal's reference for modal.gpu); `A10G` is the A10's older name;
# `H100!` and `B200+` change which cards Modal may substitute (its GPU guide), so the fit is
# computed for the card named and the price is that card's.
GPU_ALIASES: dict[str, str] = {"A10G": "A10", "A100": "A100-40GB", "H100!": "H100", "B200+": "B200"}

MAX_GPUS_PER_CONTAINER = 8  # Modal's GPU guide: up to 8 per container (4 for A10)


def modal_gpu_names() -> list[str]:
    """Every `type:` value mvgen accepts, cheapest card first."""
    names = []
    for name in GPU_TYPES:
        names.append(name)
        names += [alias for alias, base in GPU_ALIASES.items() if base == name]
    return names


def gpu_type(name: str) -> GpuType | None:
    """The GpuType for a `type:` value, compared case-insensitively; None if Modal has none."""
    folded = name.upper()
    if folded in GPU_TYPES:
        return GPU_TYPES[folded]
    if folded in GPU_ALIASES:
        return replace(GPU_TYPES[GPU_ALIASES[folded]], name=folded)
    return None


_MEMORY_SUFFIX = re.compile(r"^(.*?)[-_ ]?(\d+)\s*GB?$")


def nearest_gpu_type(value: str) -> str | None:
    """The accepted name a near miss most likely meant.

    A memory size is part of the name only for the A100 (A100-40GB, A100-80GB), so
    `H100-80GB` means H100 and `A100 80G` means A100-80GB; otherwise the closest spelling.
    """
    folded = value.upper().strip()
    match = _MEMORY_SUFFIX.match(folded)
    if match:
        base, size = match.groups()
        for candidate in (f"{base}-{size}GB", base):
            if gpu_type(candidate):
                return gpu_type(candidate).name  # type: ignore[union-attr]
    close = difflib.get_close_matches(folded, modal_gpu_names(), n=1, cutoff=0.6)
    return close[0] if close else None


@dataclass(frozen=True)
class VisionTower:
    """A multimodal model's image encoder, as vLLM profiles it at start-up."""

    params: int  # encoder and projector parameters; vLLM keeps a whole copy on every TP rank
    hidden_size: int
    layers: int
    intermediate_size: int
    patches_per_item: int  # encoder positions of the largest image the processor makes
    tokens_per_item: int  # language-model tokens of that image
    output_dim: int  # width of one token the encoder hands the language model
    video: bool = False  # whether vLLM also profiles a video modality (Qwen-VL)


@dataclass(frozen=True)
class LoraShape:
    """The language model's layers as vLLM 0.12 wraps them for LoRA adapters (fit.py sizes
    the buffers): every decoder layer's attention, its dense MLP or its experts and router,
    and for some models the token embedding and lm_head."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dense_layers: int  # layers with a dense MLP (gate_up_proj, down_proj)
    mlp: int  # its width (intermediate_size)
    moe_layers: int = 0  # layers with experts and a router instead
    experts: int = 0
    expert_mlp: int = 0  # one expert's width (moe_intermediate_size)
    fused_experts: bool = False  # gate and up fused in the weights (is_3d_moe_weight)
    vocab: int = 0  # embed_tokens and lm_head get LoRA too (embedding_modules); 0: not


@dataclass(frozen=True)
class Architecture:
    """What the fit arithmetic needs to know about a model, read from its config.json
    (mvgen/hfconfig.py, via the lock) or declared under `architecture:`."""

    params_b: float  # parameters, billions
    layers: int
    kv_heads: int
    head_dim: int
    max_context: int
    vision: bool = False
    sliding_window: int | None = None  # tokens kept by sliding-window layers
    global_layer_every: int | None = None  # 6 means one global layer in every six
    vocab_size: int | None = None  # None: sized as the largest common vocabulary (fit.py)
    hidden_size: int | None = None
    intermediate_size: int | None = None  # MLP width one token passes through (MoE: active experts)
    experts: int = 0  # MoE experts per layer; 0 for a dense model
    tied_embeddings: bool = False  # lm_head shares the token embedding
    vision_tower: VisionTower | None = None
    buffer_bytes: int = 0  # non-parameter buffers vLLM builds with the model, on every GPU
    lora: LoraShape | None = None  # None: adapters' memory unknown (a type mvgen does not size)
    # Pooling models (mvgen/pooling.py): config.json's `architectures`, whether vLLM runs the
    # model with encoder-only attention (BERT, XLM-R: no KV cache), and a classifier's labels.
    hf_architectures: tuple[str, ...] = ()
    encoder_only: bool = False
    num_labels: int | None = None
    attention_heads: int | None = None  # query heads; None when declared without them

    def splits_across(self, gpus: int) -> bool:
        """Whether vLLM 0.12 can shard this model over `gpus` GPUs: query heads divide
        evenly (config/model.py, verify_with_parallel_config), and KV heads divide or are
        replicated a whole number of times (layers/linear.py, QKVParallelLinear)."""
        if self.attention_heads is not None and self.attention_heads % gpus:
            return False
        return self.kv_heads % gpus == 0 or gpus % self.kv_heads == 0


@dataclass(frozen=True)
class Checkpoint:
    """One Hugging Face checkpoint as vLLM loads it: the id, its weights and format."""

    hf_id: str
    revision: str | None = None
    weight_bytes: int | None = None  # exact, from the safetensors metadata; None: params x dtype
    dtype: str = "bfloat16"  # torch dtype of the unquantized tensors
    quantization: str | None = None  # the checkpoint's own quantization_config.quant_method
    main_dtype: str | None = None  # safetensors dtype holding most parameters, e.g. F8_E4M3
