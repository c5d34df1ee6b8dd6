"""Does a model fit its GPU? The memory arithmetic vLLM 0.12 does at startup, before paying
for a cold start to find out.

    usable     = GPU memory x gpu_memory_utilization              (vLLM's "requested memory")
    weights    = parameters x bytes per parameter / gpu_count
    KV budget  = usable - weights - runtime overhead
    sequences  = KV budget / KV bytes one max_model_len sequence needs

The KV layout follows vLLM 0.12's hybrid KV cache manager (vllm/v1/core/kv_cache_utils.py,
vllm/v1/kv_cache_interface.py): full-attention layers keep every token, sliding-window
layers keep `window - 1 + max_num_batched_tokens` tokens (one chunked-prefill step past
the window) plus one block, and layers are grouped so that every group has as many layers
as the smallest attention type, the last group of a type padded. docs/plan.md has the
derivation and the sources of the overhead figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from mvgen.catalog import GPU_TYPES, MAX_GPUS_PER_CONTAINER, Architecture, GpuType
from mvgen.errors import Problem
from mvgen.loader import Lines
from mvgen.plan import Deployment, Plan, Settings

GIB = 1024**3
MIB = 1024**2

# Bytes per parameter as loaded. fp8 is vLLM's online quantization of a bf16 checkpoint;
# awq/gptq are 4-bit checkpoints whose per-128-weight scales and zeros add ~0.03 B.
WEIGHT_BYTES: dict[str | None, float] = {
    None: 2.0,  # the checkpoint's own dtype: bf16 for every model we know
    "fp8": 1.0,
    "awq": 0.53,
    "awq_marlin": 0.53,
    "gptq": 0.53,
    "gptq_marlin": 0.53,
}
# Quantization leaves embeddings, lm_head, norms and the vision tower in bf16: 4-12% of
# the parameters of the seed models (gemma-3-12b 12%, gemma-3-27b 7%, Qwen3-VL 4%).
UNQUANTIZED_SHARE = 0.07
KV_DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}

BLOCK_SIZE = 16  # tokens per KV block: vLLM's default on CUDA
# Memory vLLM's startup profile finds besides weights and KV cache, per GPU: CUDA context
# and other non-torch allocations, and the peak activations of one dummy forward pass of
# max_num_batched_tokens plus the sampler. Vision models also run their encoder on the
# largest dummy images. Chosen so this arithmetic reproduces the KV figures in
# shared/reference/facts.md (gemma-3-27b ~15 GiB and Qwen3-VL ~7 GiB on 80 GB GPUs).
RUNTIME_OVERHEAD_GIB = 4.0
VISION_OVERHEAD_GIB = 2.5
TENSOR_PARALLEL_OVERHEAD_GIB = 0.5  # NCCL and custom all-reduce buffers per GPU
# vLLM 0.12 schedules 8192 tokens per step on GPUs of 70 GiB and more, except A100s
# (engine/arg_utils.py get_batch_defaults); 2048 elsewhere.
LARGE_BATCH_GIB = 70
MAX_LEN_STEP = 256  # suggested max_model_len values are multiples of this (schema minimum)


# --- the arithmetic -------------------------------------------------------------------


def weight_bytes(params_b: float, quantization: str | None) -> float | None:
    """Bytes of weights for the whole model, or None for a quantization we cannot size."""
    per_param = WEIGHT_BYTES.get(quantization)
    if per_param is None:
        return None
    params = params_b * 1e9
    if quantization is None:
        return params * per_param
    kept = params * UNQUANTIZED_SHARE
    return (params - kept) * per_param + kept * WEIGHT_BYTES[None]


def usable_bytes(gpu: GpuType, utilization: float) -> float:
    """What vLLM may use on one GPU: total memory x --gpu-memory-utilization."""
    return gpu.memory_mib * MIB * utilization


def overhead_bytes(arch: Architecture, gpu_count: int) -> float:
    gib = RUNTIME_OVERHEAD_GIB
    gib += VISION_OVERHEAD_GIB if arch.vision else 0.0
    gib += TENSOR_PARALLEL_OVERHEAD_GIB if gpu_count > 1 else 0.0
    return gib * GIB


def default_batched_tokens(gpu: GpuType) -> int:
    large = gpu.memory_mib * MIB >= LARGE_BATCH_GIB * GIB and not gpu.name.startswith("A100")
    return 8192 if large else 2048


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


# --- one model on one GPU -------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """The figures for one model x GPU, shared by the validation check and `mvgen plan`."""

    status: str  # "fits", "no-load" (no room for KV cache), "too-long", "unknown"
    reason: str | None = None  # why the fit is unknown
    usable_bytes: float = 0.0
    weight_bytes: float = 0.0  # per GPU
    overhead_bytes: float = 0.0
    kv_budget_bytes: float = 0.0
    kv_bytes_per_token: int = 0
    sequence_bytes: int = 0  # KV for one max_model_len request
    sequences: float = 0.0
    longest_len: int | None = None  # largest max_model_len that fits one sequence
    batched_tokens: int = 0

    @property
    def fits(self) -> bool:
        return self.status == "fits"

    @property
    def known(self) -> bool:
        return self.status != "unknown"


def assess(arch: Architecture | None, gpu: GpuType, settings: Settings) -> Fit:
    if arch is None:
        return Fit("unknown", "no architecture facts for this model")
    weights = weight_bytes(arch.params_b, settings.quantization)
    if weights is None:
        return Fit("unknown", f"quantization {settings.quantization!r} has no known size")
    kv_dtype = flag_value(settings.extra_args, "--kv-cache-dtype") or "auto"
    if kv_dtype not in KV_DTYPE_BYTES:
        return Fit("unknown", f"--kv-cache-dtype {kv_dtype!r} has no known size")
    batched = flag_value(settings.extra_args, "--max-num-batched-tokens")
    batched_tokens = int(batched) if batched and batched.isdigit() else default_batched_tokens(gpu)
    count = settings.gpu_count
    layout = kv_layout(arch, count, KV_DTYPE_BYTES[kv_dtype])
    usable = usable_bytes(gpu, settings.gpu_memory_utilization)
    overhead = overhead_bytes(arch, count)
    budget = usable - weights / count - overhead
    sequences = sequences_that_fit(budget, layout, settings.max_model_len, batched_tokens)
    longest = longest_len(
        lambda n: sequences_that_fit(budget, layout, n, batched_tokens) >= 1, arch.max_context
    )
    if budget <= 0:
        status = "no-load"
    else:
        status = "fits" if sequences >= 1 else "too-long"
    return Fit(
        status=status,
        usable_bytes=usable,
        weight_bytes=weights / count,
        overhead_bytes=overhead,
        kv_budget_bytes=budget,
        kv_bytes_per_token=layout.bytes_per_token,
        sequence_bytes=sequence_bytes(layout, settings.max_model_len, batched_tokens),
        sequences=sequences,
        longest_len=longest,
        batched_tokens=batched_tokens,
    )


def assess_deployment(d: Deployment) -> Fit:
    return assess(d.model.architecture, d.gpu.type, d.settings)


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` in extra_args; the last one wins, as in argparse."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def len_for_sequences(arch: Architecture, gpu: GpuType, settings: Settings, n: int) -> int | None:
    """The largest max_model_len at which `n` full-length sequences fit."""
    return longest_len(
        lambda length: assess(arch, gpu, replace(settings, max_model_len=length)).sequences >= n,
        arch.max_context,
    )


def fixes(arch: Architecture, gpu: GpuType, settings: Settings, fit: Fit) -> list[str]:
    """Concrete settings that would make this pair fit, each checked with the same arithmetic."""
    out = []
    if fit.status == "too-long" and fit.longest_len:
        out.append(f"max_model_len: {fit.longest_len}")
    if settings.quantization is None and gpu.fp8:
        if assess(arch, gpu, replace(settings, quantization="fp8")).fits:
            out.append("quantization: fp8")
    for count in range(settings.gpu_count + 1, MAX_GPUS_PER_CONTAINER + 1):
        split = replace(settings, gpu_count=count)
        if arch.kv_heads % count == 0 and assess(arch, gpu, split).fits:
            out.append(f"gpu_count: {count}")
            break
    elsewhere = [
        other.name
        for other in GPU_TYPES.values()
        if other.name != gpu.name
        and (settings.quantization != "fp8" or other.fp8)
        and assess(arch, other, settings).fits
    ]
    if elsewhere:
        out.append(f"a GPU type where it fits as configured: {', '.join(elsewhere)}")
    return out


# --- the validation check -------------------------------------------------------------


def fit_check(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Refuse pairs that cannot start; warn when few full-length sequences fit."""
    problems = []
    unknown: set[str] = set()
    for d in plan.deployments:
        fit = assess_deployment(d)
        where = f"models.{d.model.key}.per_gpu.{d.gpu.key}"
        if not fit.known:
            note = f"models.{d.model.key}: fit unknown on {d.gpu.key}: {fit.reason}"
            if d.model.architecture is None:
                note = (
                    f"models.{d.model.key}: fit unknown: {d.model.hf_id} is not in the "
                    "catalog; add architecture: (params_b, layers, kv_heads, head_dim, "
                    "max_context) from its config.json"
                )
            if note not in unknown:
                unknown.add(note)
                warnings.append(note)
            continue
        arch = d.model.architecture
        assert arch is not None  # known fits have an architecture
        if not fit.fits:
            hint = fixes(arch, d.gpu.type, d.settings, fit)
            problems.append(
                Problem(
                    where,
                    refusal(d, fit),
                    _line(lines, d),
                    "fixes: " + "; ".join(hint) if hint else "no single setting makes it fit",
                )
            )
        elif fit.sequences < plan.fit_min_sequences:
            want = plan.fit_min_sequences
            shorter = len_for_sequences(arch, d.gpu.type, d.settings, want)
            advice = f"; max_model_len {shorter} fits {want}" if shorter else ""
            warnings.append(
                f"{where}: only {fit.sequences:.1f} sequences of {d.settings.max_model_len} "
                f"tokens fit in {gib(fit.kv_budget_bytes)} of KV cache on {d.gpu_spec} "
                f"(fit.min_sequences: {want}){advice}"
            )
    return problems


def refusal(d: Deployment, fit: Fit) -> str:
    s = d.settings
    dtype = s.quantization or "bf16"
    head = f"{d.model.key} on {d.gpu_spec}"
    if fit.status == "no-load":
        return (
            f"{head} cannot load: {gib(fit.weight_bytes)} of {dtype} weights per GPU and "
            f"{gib(fit.overhead_bytes)} runtime overhead leave no KV cache in the "
            f"{gib(fit.usable_bytes)} vLLM may use ({d.gpu.type.memory_mib} MiB x "
            f"gpu_memory_utilization {s.gpu_memory_utilization:g})"
        )
    return (
        f"{head}: one {s.max_model_len}-token sequence needs {gib(fit.sequence_bytes)} of KV "
        f"cache, but {gib(fit.kv_budget_bytes)} is left after {gib(fit.weight_bytes)} of "
        f"{dtype} weights and {gib(fit.overhead_bytes)} overhead; vLLM would refuse to start"
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
