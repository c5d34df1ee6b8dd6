"""Bounded YAML: a document that expands past the loader's limits (an alias bomb, a huge
file, an alias that contains itself) is refused with exit 2 and a clear message, quickly,
and nothing is written. Each runs the real CLI in a subprocess with a memory cap and a
timeout, so a regression fails here instead of exhausting the machine."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, ROOT

from mvgen.config import load_plan
from mvgen.loader import MAX_BYTES, MAX_VALUES

MEMORY_CAP = 2 * 1024**3  # bytes of address space; the bomb below needs ~10^11 values


def billion_laughs(levels: int = 11, fan_out: int = 10) -> str:
    """The classic: each anchor a list of ten of the previous one, 10^11 strings in all."""
    lines = ['lol: &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan_out)}]")
    return "\n".join(lines) + "\n"


BOMBS = [
    ("billion laughs", BASE_CONFIG + billion_laughs(), f"more than {MAX_VALUES:,} values"),
    (
        "a bomb as a mapping key",
        BASE_CONFIG + billion_laughs() + "extra: {? *l11 : 1}\n",
        f"more than {MAX_VALUES:,} values",
    ),
    ("an alias inside itself", BASE_CONFIG + "loop: &loop [*loop]\n", "levels deep"),
    ("an oversized file", BASE_CONFIG + "# padding\n" * (MAX_BYTES // 10), "may be at most"),
]


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("what", "text", "fragment"), BOMBS, ids=[b[0] for b in BOMBS])
def test_bomb_is_refused_with_exit_2_and_nothing_written(tmp_path: Path, what, text, fragment):
    config = tmp_path / "deployments.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    argv = ["render", "--config", str(config), "--output-dir", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "mvgen", *argv],
        capture_output=True, text=True, timeout=30, cwd=ROOT, preexec_fn=_cap_memory,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_anchors_and_merge_keys_within_the_limits_still_work(write_config) -> None:
    """Limits must not cost users the YAML they use to share settings."""
    shared = "defaults: &shared {scaledown_window: 300}\n"
    gemma = "hf_id: google/gemma-3-12b-it"
    text = BASE_CONFIG.replace("models:\n", shared + "models:\n")
    text = text.replace(gemma, f"{gemma}\n    <<: *shared\n    max_model_len: 4096")
    plan = load_plan(write_config(text))
    (d, *_) = [d for d in plan.deployments if d.model.key == "gemma-3-12b"]
    assert (d.settings.scaledown_window, d.settings.max_model_len) == (300, 4096)
