"""Every `vllm serve` line mvgen renders is accepted by the pinned vLLM's own argument
definitions and value lists, from the data committed for it (mvgen/data/vllm, written from
the real wheel: docs/vllm-flags.md)."""

from __future__ import annotations

import pytest
from conftest import BASE_CONFIG, ROOT

from mvgen.config import load_plan
from mvgen.vllm_flags import accepted_flags, check_serve_argv

# Every option mvgen can render, switched on at once.
EVERYTHING = (
    BASE_CONFIG
    + """\
defaults:
  limit_mm_per_prompt: {image: 2, video: 0}
  quantization: fp8
  gpu_snapshot: true
  fast_boot: true
"""
)


@pytest.mark.parametrize("source", ["committed", "everything"])
def test_rendered_commands_use_only_flags_the_pinned_vllm_accepts(source, write_config) -> None:
    path = ROOT / "deployments.yaml" if source == "committed" else write_config(EVERYTHING)
    plan = load_plan(path)
    flags = accepted_flags(plan.image.vllm)
    assert plan.deployments
    for d in plan.deployments:
        problems = check_serve_argv(d.vllm_command(), flags)
        assert not problems, f"{d.route}: {problems}"


def test_the_check_catches_a_flag_the_version_lacks(write_config) -> None:
    plan = load_plan(write_config(BASE_CONFIG + "defaults:\n  extra_args: [--swap-space, '4']\n"))
    flags = accepted_flags("0.12.0")
    argv = plan.deployments[0].vllm_command()
    assert not check_serve_argv(argv, flags)  # 0.12.0 still has --swap-space
    argv.append("--made-up-flag")
    problems = check_serve_argv(argv, flags)
    assert [p.token for p in problems] == ["--made-up-flag"]
