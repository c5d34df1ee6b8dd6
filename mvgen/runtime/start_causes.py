"""What vLLM printed before a failed start -> the cause, in words a caller can act on.

The patterns are the messages vLLM 0.12.0 and the libraries it runs print for the
failures that most often stop a start (docs/gateway.md lists them with their sources):
out of GPU memory at load, a KV cache too small for `max_model_len`, a gated or private
repository on the Hugging Face Hub, a command-line argument vLLM does not know, and a
CUDA driver older than the image's CUDA runtime. Anything else is reported by vLLM's
last error line.

Causes go back to API callers: flag names, model names, figures and, for a refused
option, its value (clipped). Those values come from deployments.yaml, where `mvgen
validate` refuses secret-looking ones; nothing here reads the environment or a header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# vLLM 0.12.0 logs these around weight loading (vllm/v1/worker/gpu_model_runner.py), so
# an out-of-memory error can be placed before, during or after the load.
LOADING_STARTED = "Starting to load model"
WEIGHTS_LOADED = "Model loading took"

PHASE_STARTING = "starting"
PHASE_LOADING = "loading weights"
PHASE_LOADED = "weights loaded"

MAX_DETAIL_CHARS = 200

# Token-like strings (Hugging Face, OpenAI-style, long opaque runs) never leave the
# container in a message, even if vLLM printed them.
_SECRET_LIKE = re.compile(r"\b(?:hf_|sk-)\S*|[A-Za-z0-9+=_]{32,}")


def next_phase(line: str, phase: str) -> str:
    """The start-up phase after vLLM printed `line`."""
    if WEIGHTS_LOADED in line:
        return PHASE_LOADED
    if LOADING_STARTED in line and phase == PHASE_STARTING:
        return PHASE_LOADING
    return phase


@dataclass(frozen=True)
class _Cause:
    pattern: re.Pattern[str]
    explain: Callable[[re.Match[str], str], str]  # (match, phase) -> words


def _unknown_arguments(m: re.Match[str], phase: str) -> str:
    flags = [word for word in m.group(1).split() if word.startswith("-")]
    named = ", ".join(flags) if flags else "an argument"
    return (
        f"vLLM does not accept the argument {named}: remove or correct it "
        "(extra_args in deployments.yaml)"
    )


def _invalid_choice(m: re.Match[str], phase: str) -> str:
    return (
        f"vLLM refused the value {_clip(m.group(2), 60)!r} for {m.group(1)}: "
        "use one of the values its error message lists"
    )


def _bad_argument(m: re.Match[str], phase: str) -> str:
    return f"vLLM refused its command line: argument {m.group(1)}: {_clip(m.group(2), 120)}"


def _unknown_parser(kind: str, setting: str) -> Callable[[re.Match[str], str], str]:
    def explain(m: re.Match[str], phase: str) -> str:
        return f"vLLM has no {kind} {_clip(m.group(1), 60)!r}: check {setting} in deployments.yaml"

    return explain


def _unknown_quantization(m: re.Match[str], phase: str) -> str:
    return (
        f"vLLM has no quantization method {_clip(m.group(1), 60)!r}: "
        "check quantization in deployments.yaml"
    )


def _driver_too_old(m: re.Match[str], phase: str) -> str:
    return (
        "the GPU's CUDA driver is older than the CUDA runtime in the image "
        f"({_clip(m.group(0), 120)}): use a vLLM build and base image for an older CUDA"
    )


def _gated_repo(m: re.Match[str], phase: str) -> str:
    return (
        "the Hugging Face Hub refused access to a gated model: accept its licence on "
        "huggingface.co with the account whose token is in the Hugging Face secret"
    )


def _repo_not_found(m: re.Match[str], phase: str) -> str:
    return (
        "the Hugging Face Hub has no such model repository, or it is private and the "
        "token in the Hugging Face secret cannot see it: check hf_id and the token"
    )


def _hub_unauthorized(m: re.Match[str], phase: str) -> str:
    return "the Hugging Face Hub rejected the token (401): check the Hugging Face secret"


def _no_config(m: re.Match[str], phase: str) -> str:
    return (
        f"vLLM could not read the model's config for {_clip(m.group(1), 100)!r} "
        "(repository id, network, or the Hugging Face token)"
    )


def _sampler_oom(m: re.Match[str], phase: str) -> str:
    return (
        f"CUDA out of memory while warming up the sampler for {m.group(1)} sequences: "
        "lower max_num_seqs or gpu_memory_utilization"
    )


def _kv_cache_too_small(m: re.Match[str], phase: str) -> str:
    length, needed, available = m.group(1), m.group(2), m.group(3)
    estimate = f" (vLLM estimates {m.group(4)} tokens would fit)" if m.group(4) else ""
    return (
        f"KV cache too small for max_model_len {length}: one full-length sequence needs "
        f"{needed} GiB, {available} GiB is left after the weights{estimate}; lower "
        "max_model_len or raise gpu_memory_utilization"
    )


def _no_kv_memory(m: re.Match[str], phase: str) -> str:
    return (
        "no GPU memory left for the KV cache after the weights and the profiling run: "
        "use a larger GPU, a quantized checkpoint or tensor parallelism"
    )


def _out_of_memory(m: re.Match[str], phase: str) -> str:
    where = {
        PHASE_LOADING: "while loading weights",
        PHASE_LOADED: "after loading weights (profiling run or CUDA graph capture)",
    }.get(phase, "before loading weights")
    return f"CUDA out of memory {where}"


# Most specific first: a failed start prints several of these (vLLM's final "Engine core
# initialization failed" follows the root cause), and the first that matches wins.
_DRIVER = (
    r"The NVIDIA driver on your system is too old \(found version \d+\)"
    r"|CUDA driver version is insufficient for CUDA runtime version"
    r"|cudaErrorInsufficientDriver|CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"
)
_KV_CACHE = (
    r"max seq len \((\d+)\), \(([\d.]+) GiB KV cache is needed, which is larger than "
    r"the available KV cache memory \(([\d.]+) GiB\)\.(?: Based on the available "
    r"memory, the estimated maximum model length is (\d+))?"
)
_CAUSES = tuple(
    _Cause(re.compile(pattern), explain)
    for pattern, explain in (
        (r"error: unrecognized arguments: (.+)", _unknown_arguments),
        (r"error: argument (\S+): invalid choice: '([^']*)'", _invalid_choice),
        (r"invalid tool call parser: (\S+)", _unknown_parser("tool call parser", "tool_parser")),
        (
            r"invalid reasoning parser: (\S+)",
            _unknown_parser("reasoning parser", "reasoning_parser"),
        ),
        (r"Unknown quantization method: ([^.\s]+)", _unknown_quantization),
        (r"error: argument (\S+): (.+)", _bad_argument),
        (_DRIVER, _driver_too_old),
        (r"Cannot access gated repo|GatedRepoError|not in the authorized list", _gated_repo),
        (r"Repository Not Found for url|RepositoryNotFoundError", _repo_not_found),
        (r"401 Client Error|Invalid credentials in Authorization header", _hub_unauthorized),
        (r"Invalid repository ID or local directory specified: '([^']*)'", _no_config),
        (r"CUDA out of memory occurred when warming up sampler with (\d+)", _sampler_oom),
        (_KV_CACHE, _kv_cache_too_small),
        (r"No available memory for the cache blocks", _no_kv_memory),
        (r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", _out_of_memory),
    )
)

_ERROR_LINE = re.compile(r"\b\w*(?:Error|Exception)\b: .+")


def explain_exit(lines: Sequence[str], returncode: int, *, phase: str = PHASE_STARTING) -> str:
    """Why vLLM exited with `returncode` during start-up, from its last output lines."""
    cause = recognise(lines, phase)
    if cause:
        return cause
    last = last_error_line(lines)
    detail = f"; its last error: {last}" if last else " (see the container's logs)"
    return f"vLLM exited with code {returncode} during start-up ({phase}){detail}"


def explain_timeout(lines: Sequence[str], timeout: float, *, phase: str) -> str:
    cause = recognise(lines, phase)  # e.g. a worker died and the server hung on
    if cause:
        return cause
    return (
        f"vLLM did not answer /health with 200 within {timeout:.0f} s (last phase: "
        f"{phase}); raise startup_timeout if downloading and loading the weights takes longer"
    )


def recognise(lines: Sequence[str], phase: str) -> str | None:
    """The first known cause found in `lines`, in words; None when none matches."""
    text = "\n".join(lines)
    for cause in _CAUSES:
        match = cause.pattern.search(text)
        if match:
            return redact(cause.explain(match, phase))
    return None


def last_error_line(lines: Sequence[str]) -> str | None:
    for line in reversed(lines):
        match = _ERROR_LINE.search(line)
        if match:
            return redact(_clip(match.group(0), MAX_DETAIL_CHARS))
    return None


def redact(text: str) -> str:
    return _SECRET_LIKE.sub("[redacted]", text)


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
