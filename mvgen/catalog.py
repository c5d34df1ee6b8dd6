"""Facts mvgen knows without being told: the GPU types Modal accepts and known model
architectures. A model not listed here can declare its facts under `architecture:`.

GPU names are those of Modal's GPU guide, https://modal.com/docs/guide/gpu ("Specifying
GPU type"). The modal package checks nothing but the form `TYPE[:N]` and upper-cases TYPE
(modal/_utils/function_utils.py, `parse_gpu_config`), so a wrong name would only fail at
deploy: mvgen checks it here, case-insensitively, as Modal compares them.
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
class Architecture:
    params_b: float  # parameters, billions
    layers: int
    kv_heads: int
    head_dim: int
    max_context: int
    vision: bool = False
    sliding_window: int | None = None  # tokens kept by sliding-window layers
    global_layer_every: int | None = None  # 6 means one global layer in every six


# From each model's config.json on the Hub, https://huggingface.co/<hf_id>/blob/main/config.json
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
