"""Facts mvgen knows without being told: Modal GPU types and known model architectures.

Sources are in ../shared/reference/facts.md: GPU memory as nvidia-smi reports it, Modal's
list prices, and each model's config.json. A model not listed here can declare the same
facts under `architecture:` in deployments.yaml.
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
class Architecture:
    params_b: float  # parameters, billions
    layers: int
    kv_heads: int
    head_dim: int
    max_context: int
    vision: bool = False
    sliding_window: int | None = None  # tokens kept by sliding-window layers
    global_layer_every: int | None = None  # 6 means one global layer in every six


KNOWN_MODELS: dict[str, Architecture] = {
    "google/gemma-3-12b-it": Architecture(
        params_b=12.19,
        layers=48,
        kv_heads=8,
        head_dim=256,
        max_context=131_072,
        vision=True,
        sliding_window=1024,
        global_layer_every=6,
    ),
    "google/gemma-3-27b-it": Architecture(
        params_b=27.43,
        layers=62,
        kv_heads=16,
        head_dim=128,
        max_context=131_072,
        vision=True,
        sliding_window=1024,
        global_layer_every=6,
    ),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": Architecture(
        params_b=31.07,
        layers=48,
        kv_heads=4,
        head_dim=128,
        max_context=262_144,
        vision=True,
    ),
}


def known_architecture(hf_id: str) -> Architecture | None:
    """The catalog entry for a Hugging Face id; ids are case-insensitive on the hub."""
    folded = hf_id.lower()
    for known, arch in KNOWN_MODELS.items():
        if known.lower() == folded:
            return arch
    return None
