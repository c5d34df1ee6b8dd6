"""vLLM's output before a failed start -> the cause in words (mvgen/runtime/start_causes.py).

The texts are those the `vllm` stand-in prints (tests/standin_vllm_cli.py), built from the
messages in vLLM 0.12.0's source and the libraries it runs.
"""

from __future__ import annotations

import pytest
from standin_vllm_cli import FAILURES, failure_output

from mvgen.runtime.start_causes import (
    PHASE_LOADED,
    PHASE_LOADING,
    PHASE_STARTING,
    explain_exit,
    explain_timeout,
    next_phase,
    recognise,
)


def phase_after(lines: list[str]) -> str:
    phase = PHASE_STARTING
    for line in lines:
        phase = next_phase(line, phase)
    return phase


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ("oom-load", "CUDA out of memory while loading weights"),
        (
            "kv-cache",
            "KV cache too small for max_model_len 131072: one full-length sequence needs "
            "16.00 GiB, 9.61 GiB is left after the weights (vLLM estimates 78736 tokens "
            "would fit); lower max_model_len or raise gpu_memory_utilization",
        ),
        ("gated", "the Hugging Face Hub refused access to a gated model"),
        ("unknown-arg", "vLLM does not accept the argument --max-num-sequences"),
        ("driver", "the GPU's CUDA driver is older than the CUDA runtime in the image"),
    ],
)
def test_each_common_failure_is_recognised(failure: str, expected: str) -> None:
    lines = failure_output(failure, "org/model")
    cause = explain_exit(lines, 1, phase=phase_after(lines))
    assert cause.startswith(expected)


def test_an_unknown_argument_is_named_without_its_value() -> None:
    cause = recognise(["vllm serve: error: unrecognized arguments: --api-keys sk-secret1"], "")
    assert cause is not None
    assert "--api-keys" in cause
    assert "sk-secret1" not in cause


def test_out_of_memory_is_placed_by_the_phase() -> None:
    oom = ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."]
    assert recognise(oom, PHASE_STARTING) == "CUDA out of memory before loading weights"
    assert recognise(oom, PHASE_LOADING) == "CUDA out of memory while loading weights"
    assert recognise(oom, PHASE_LOADED).startswith("CUDA out of memory after loading weights")


def test_phases_follow_vllm_log_lines() -> None:
    lines = FAILURES["kv-cache"]
    assert phase_after(lines[:1]) == PHASE_LOADING
    assert phase_after(lines[:2]) == PHASE_LOADED
    assert phase_after(["INFO something else"]) == PHASE_STARTING


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            # vllm/v1/worker/gpu_model_runner.py, _dummy_sampler_run
            "RuntimeError: CUDA out of memory occurred when warming up sampler with 1024 "
            "dummy requests. Please try lowering `max_num_seqs` or `gpu_memory_utilization`",
            "CUDA out of memory while warming up the sampler for 1024 sequences",
        ),
        (
            # vllm/v1/core/kv_cache_utils.py
            "ValueError: No available memory for the cache blocks. Try increasing "
            "`gpu_memory_utilization` when initializing the engine.",
            "no GPU memory left for the KV cache",
        ),
        (
            # vllm/entrypoints/openai/api_server.py, validate_api_server_args
            "KeyError: 'invalid tool call parser: hermess (chose from { hermes,llama3_json })'",
            "vLLM has no tool call parser 'hermess': check tool_parser",
        ),
        (
            # argparse choices
            "vllm serve: error: argument --quantization/-q: invalid choice: 'fp-8' "
            "(choose from 'awq', 'fp8')",
            "vLLM refused the value 'fp-8' for --quantization/-q",
        ),
        (
            # vllm/config/model.py
            "ValueError: Unknown quantization method: fp-8. Must be one of ['awq', 'fp8'].",
            "vLLM has no quantization method 'fp-8'",
        ),
        (
            "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. Repository "
            "Not Found for url: https://huggingface.co/api/models/org/nope.",
            "the Hugging Face Hub has no such model repository",
        ),
        (
            "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url",
            "the Hugging Face Hub rejected the token (401)",
        ),
        (
            # the CUDA runtime's cudaErrorInsufficientDriver
            "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime "
            "version",
            "the GPU's CUDA driver is older than the CUDA runtime in the image",
        ),
    ],
)
def test_more_known_messages(line: str, expected: str) -> None:
    cause = recognise(["INFO 12-05 10:00:00 [api_server.py:1] starting", line], PHASE_STARTING)
    assert cause is not None
    assert cause.startswith(expected)


def test_an_unknown_failure_reports_the_last_error_line_redacted() -> None:
    cause = explain_exit(FAILURES["other"], 1)
    assert cause.startswith("vLLM exited with code 1 during start-up (starting)")
    assert "AssertionError: something unexpected [redacted]" in cause
    assert "hf_" not in cause


def test_an_exit_without_an_error_line_points_at_the_logs() -> None:
    assert explain_exit(["INFO bye"], -9) == (
        "vLLM exited with code -9 during start-up (starting) (see the container's logs)"
    )


def test_a_timeout_names_the_phase() -> None:
    lines = FAILURES["kv-cache"][:1]
    cause = explain_timeout(lines, 1140, phase=phase_after(lines))
    assert cause.startswith(
        "vLLM did not answer /health with 200 within 1140 s (last phase: loading weights)"
    )
