"""Shared fixtures: the repo root, the seed's config, a valid small config to mutate, and a
CLI runner."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

ROOT = Path(__file__).resolve().parent.parent
# Tests of the committed deployments.yaml hold for any valid content; tests about the
# seed's 3 models x 5 GPUs read this copy of it instead.
SEED_CONFIG = ROOT / "tests" / "data" / "seed-deployments.yaml"
SEED_LOCK = ROOT / "tests" / "data" / "seed-deployments.lock.json"

# A small valid config in gpu mode; tests edit it to make one thing wrong at a time.
BASE_CONFIG = textwrap.dedent(
    """\
    mode: gpu
    workspace: acme
    endpoint_limit: 8
    gpus:
      l40s: {type: L40S}
      h100: {type: H100}
    models:
      gemma-3-12b:
        hf_id: google/gemma-3-12b-it
      qwen3-vl-30b:
        hf_id: Qwen/Qwen3-VL-30B-A3B-Instruct
        tool_parser: hermes
        max_model_len: 16384
        per_gpu:
          l40s: {quantization: fp8, max_model_len: 8192}
    """
)


def copy_seed_lock(config: Path) -> Path:
    """Put the seed's lock file (the seed models' config.json facts) beside `config`, so
    mvgen knows those models' shapes; without it their fit is unknown, as for any config
    whose models were never locked."""
    from mvgen.lock import lock_path

    target = lock_path(config)
    shutil.copy(SEED_LOCK, target)
    return target


@pytest.fixture
def write_config(tmp_path: Path):
    def write(text: str = BASE_CONFIG, name: str = "deployments.yaml", lock: bool = False) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        if lock:
            copy_seed_lock(path)
        return path

    return write


def add_models_the_readme_way(config: Path, models: str) -> None:
    """Type `models` (a YAML block of models, names at column 0) into `config` as the README
    says: under `models:`, two spaces in. Inserted right below that line, so it works
    whatever follows `models:` in the committed file (warm:, comments, ...). A config that
    writes models: in flow style has no such line: the test is skipped, saying why."""
    import re

    text = config.read_text(encoding="utf-8")
    found = re.search(r"^models:[ \t]*(#.*)?\n", text, re.M)
    if not found:
        pytest.skip("deployments.yaml writes models: in flow style; a block cannot be typed in")
    block = textwrap.indent(textwrap.dedent(models), "  ")
    config.write_text(text[: found.end()] + block + text[found.end() :], encoding="utf-8")


def committed_models(config: Path) -> tuple[set[str], set[str]]:
    """Model names and every Hugging Face id (checkpoints and adapters included) of a config."""
    from mvgen.config import load_plan

    plan = load_plan(config)
    names = {d.model.key for d in plan.deployments}
    ids = {d.model.hf_id for d in plan.deployments} | {d.checkpoint.hf_id for d in plan.deployments}
    return names, ids


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `mvgen ARGS` in-process; CliRunner captures output and the exit code."""
    from mvgen.cli import main

    old = Path.cwd()
    try:
        if cwd:
            os.chdir(cwd)
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        os.chdir(old)
