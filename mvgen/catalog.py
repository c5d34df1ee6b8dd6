"""Facts mvgen knows without being told: Modal GPU types (memory as nvidia-smi reports it,
Modal's list prices), and the shape of the facts it reads about models.

A model's own facts come from its config.json on the Hugging Face Hub, read once by
`mvgen lock` into deployments.lock.json (mvgen/lock.py), or from `architecture:` in
deployments.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_READ_ON = "2026-11"  # when the $/hour figures below were read off Modal's pricing page


@dataclass(frozen=True)
class GpuType:
    name: str  # Modal's GPU name, as in `gpu="H100"`
    memory_mib: int
    usd_per_hour: float | None  # None when we have no checked price
    fp8: bool  # native FP8 tensor cores (Ada, Hopper, Blackwell)


GPU_TYPES: dict[str, GpuType] = {
    g.name: g
    for g in (
        GpuType("T4", 15_360, None, False),
        GpuType("L4", 23_034, None, True),
        GpuType("A10", 23_028, None, False),
        GpuType("A100-40GB", 40_960, None, False),
        GpuType("A100-80GB", 81_920, 2.50, False),
        GpuType("L40S", 46_068, 1.95, True),
        GpuType("RTX-PRO-6000", 97_887, None, True),
        GpuType("H100", 81_559, 3.95, True),
        GpuType("H200", 143_771, 4.54, True),
        GpuType("B200", 183_359, 6.25, True),
    )
}

MAX_GPUS_PER_CONTAINER = 8  # the SDK accepts `TYPE:N` with N up to 8


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


@dataclass(frozen=True)
class Checkpoint:
    """One Hugging Face checkpoint as vLLM loads it: the id, its weights and format."""

    hf_id: str
    revision: str | None = None
    weight_bytes: int | None = None  # exact, from the safetensors metadata; None: params x dtype
    dtype: str = "bfloat16"  # torch dtype of the unquantized tensors
    quantization: str | None = None  # the checkpoint's own quantization_config.quant_method
    main_dtype: str | None = None  # safetensors dtype holding most parameters, e.g. F8_E4M3
