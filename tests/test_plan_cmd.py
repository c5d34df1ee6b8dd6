"""`mvgen plan`: the table, --json, --diff after an edit, and the exit codes (0 clean, 1 when
the committed files do not match the config, 2 when the config is refused).

The figures asserted here are the seed's (3 models x 5 GPUs, every pair fits), so the
tests use its copy in tests/data, not the deployments.yaml users edit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SEED_CONFIG, copy_seed_lock, run_cli

from mvgen.catalog import GPU_TYPES, PRICES_READ_ON
from mvgen.config import load_plan
from mvgen.fit import GIB, KV_TOLERANCE_GIB, assess_in
from mvgen.planview import always_on_cost, burst_cost, hourly_cost


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The seed's config (tests/data/seed-deployments.yaml), its lock and a fresh render of
    it, safe to edit."""
    config = tmp_path / "deployments.yaml"
    shutil.copy(SEED_CONFIG, config)
    copy_seed_lock(config)
    rendered = run_cli("render", "--config", str(config), "--output-dir", str(tmp_path))
    assert rendered.exit_code == 0, rendered.output
    return tmp_path


def plan_cmd(project: Path, *args: str):
    config = str(project / "deployments.yaml")
    return run_cli("plan", "--config", config, "--output-dir", str(project), *args)


def edit(project: Path, old: str, new: str) -> None:
    path = project / "deployments.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_table_shows_fit_and_cost_for_every_pair(project: Path) -> None:
    result = plan_cmd(project)
    assert result.exit_code == 0, result.output
    plan = load_plan(project / "deployments.yaml")
    lines = result.stdout.splitlines()
    for app in plan.apps:
        for d in app.deployments:
            [row] = [ln for ln in lines if f" {app.name} " in ln and f" {d.model.key} " in ln]
            figures = assess_in(plan, d)
            assert f"{figures.sequences:.1f} ({figures.sequences_low:.1f}-" in row
            below, above = figures.below_bytes / GIB, figures.above_bytes / GIB
            assert f"{figures.kv_budget_bytes / GIB:.1f} GiB -{below:.1f}/+{above:.1f}" in row
            assert below == KV_TOLERANCE_GIB and above >= below
            assert f"{d.gpu.type.usd_per_hour * d.settings.gpu_count:.2f}" in row
    assert PRICES_READ_ON in result.stdout
    assert f"{KV_TOLERANCE_GIB:g} GiB, the fit's tolerance" in result.stdout
    assert f"web endpoints: {plan.endpoints_needed} of {plan.endpoint_limit}" in result.stdout
    assert "make render would change nothing" in result.stdout


def test_json_has_every_app_model_figure_and_cost(project: Path) -> None:
    result = plan_cmd(project, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    plan = load_plan(project / "deployments.yaml")
    assert [a["name"] for a in data["apps"]] == [a.name for a in plan.apps]
    assert data["endpoints"] == {"used": plan.endpoints_needed, "limit": plan.endpoint_limit}
    assert data["prices_read_on"] == PRICES_READ_ON
    assert data["ok"] is True and data["failures"] == [] and data["changes"] == []
    by_route = {m["route"]: m for a in data["apps"] for m in a["models"]}
    assert set(by_route) == {d.route for d in plan.deployments}
    for d in plan.deployments:
        entry, figures = by_route[d.route], assess_in(plan, d)
        assert entry["fit"]["status"] == "fits"
        assert entry["fit"]["sequences"] == round(figures.sequences, 2)
        assert entry["fit"]["weights_gib"] == round(figures.weight_bytes / GIB, 2)
        low_kv, high_kv = entry["fit"]["kv_budget_range_gib"]
        assert low_kv == round((figures.kv_budget_bytes - KV_TOLERANCE_GIB * GIB) / GIB, 2)
        assert high_kv >= round((figures.kv_budget_bytes + KV_TOLERANCE_GIB * GIB) / GIB, 2)
        low, high = entry["fit"]["sequences_range"]
        assert low <= entry["fit"]["sequences"] <= high
        assert entry["checkpoint"] == d.checkpoint.hf_id
        price = d.gpu.type.usd_per_hour * d.settings.gpu_count
        assert entry["cost"]["usd_per_hour"] == round(price, 2)
        burst = price * (data["burst_minutes"] * 60 + d.settings.scaledown_window) / 3600
        assert entry["cost"]["usd_per_burst"] == round(burst, 2)
        assert entry["cost"]["usd_per_day_always_on"] == 0  # the seed scales to zero


def test_min_containers_cost_all_day_and_burst_length_is_an_option(project: Path) -> None:
    edit(project, "  b200: { type: B200 }", "  b200: { type: B200 }\n  pro: { type: RTX-PRO-6000 }")
    edit(
        project,
        "      l40s: { max_model_len: 16384 } #",
        "      b200: { min_containers: 2 }\n      l40s: { max_model_len: 16384 } #",
    )
    result = plan_cmd(project, "--json", "--burst-minutes", "30")
    data = json.loads(result.stdout)
    models = {m["route"]: m for a in data["apps"] for m in a["models"]}
    b200 = models["gemma-3-12b-b200"]["cost"]
    assert b200["usd_per_day_always_on"] == round(b200["usd_per_hour"] * 24 * 2, 2)
    assert b200["usd_per_burst"] == round(b200["usd_per_hour"] * (30 * 60 + 900) / 3600, 2)
    pro = models["gemma-3-12b-pro"]["cost"]
    assert pro["usd_per_hour"] == GPU_TYPES["RTX-PRO-6000"].usd_per_hour


def test_diff_after_an_edit_shows_the_change_and_exits_1(project: Path) -> None:
    edit(
        project,
        "      h100: { max_model_len: 16384 }\n",
        "      h100: { max_model_len: 18432 }\n",
    )
    result = plan_cmd(project, "--diff")
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "changed  generated/vllm_h100.py" in out
    assert "--- a/generated/vllm_h100.py" in out and "+++ b/generated/vllm_h100.py" in out
    diff_lines = out.splitlines()
    assert any(ln.startswith("+") and "18432" in ln for ln in diff_lines)
    assert any(ln.startswith("-") and "16384" in ln for ln in diff_lines)
    assert "would fail: generated files are stale" in out
    # rendering makes the plan clean again
    assert (
        run_cli(
            "render", "--config", str(project / "deployments.yaml"), "--output-dir", str(project)
        ).exit_code
        == 0
    )
    assert plan_cmd(project).exit_code == 0


def test_json_diff_and_a_removed_gpu(project: Path) -> None:
    edit(project, "  b200: { type: B200 }\n", "")
    result = plan_cmd(project, "--json", "--diff")
    assert result.exit_code == 1
    changes = {c["path"]: c for c in json.loads(result.stdout)["changes"]}
    assert changes["generated/vllm_b200.py"]["kind"] == "removed"
    assert changes["generated/vllm_b200.py"]["diff"].startswith("--- a/generated/vllm_b200.py")
    assert changes["litellm/config.yaml"]["kind"] == "changed"
    assert '-  - model_name: "gemma-3-12b-b200"' in changes["litellm/config.yaml"]["diff"]


def test_a_fresh_directory_would_get_every_file_added(tmp_path: Path) -> None:
    shutil.copy(SEED_CONFIG, tmp_path / "deployments.yaml")
    result = plan_cmd(tmp_path, "--json")
    assert result.exit_code == 1
    changes = json.loads(result.stdout)["changes"]
    assert changes and {c["kind"] for c in changes} == {"added"}


def test_a_pair_that_does_not_fit_fails_the_plan_with_fixes(project: Path) -> None:
    # gemma-3-27b's bf16 checkpoint on L40S: 51 GiB of weights on a 44 GiB GPU
    edit(project, "        checkpoint: RedHatAI/gemma-3-27b-it-FP8-dynamic\n", "")
    result = plan_cmd(project)
    assert result.exit_code == 1
    assert "mvgen plan" in result.stdout  # the table, with the failing row in it
    failure = next(ln for ln in result.stdout.splitlines() if "would fail: models.gemma-3" in ln)
    assert "models.gemma-3-27b.per_gpu.l40s" in failure
    assert "runs out of memory while loading" in failure
    assert "per_gpu.l40s.checkpoint: an FP8 checkpoint" in failure
    # validation, and so render, still refuses the same config
    refused = run_cli("validate", "--config", str(project / "deployments.yaml"))
    assert refused.exit_code == 2
    assert "models.gemma-3-27b.per_gpu.l40s" in refused.output


def test_too_many_endpoints_fail_the_plan(project: Path) -> None:
    edit(project, "endpoint_limit: 8", "endpoint_limit: 4")
    result = plan_cmd(project, "--json")
    assert result.exit_code == 1
    failures = json.loads(result.stdout)["failures"]
    assert any("needs 5 web endpoints but endpoint_limit is 4" in f for f in failures)


def test_the_console_script_exits_like_the_command(project: Path) -> None:
    script = Path(sys.executable).with_name("mvgen")
    config = str(project / "deployments.yaml")
    clean = subprocess.run(
        [script, "plan", "--json", "--config", config, "--output-dir", str(project)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["ok"] is True


def test_cost_helpers_without_a_price() -> None:
    assert hourly_cost(None, 2) is None
    assert burst_cost(None, 5, 900) is None
    assert always_on_cost(None, 1) is None
    assert hourly_cost(2.0, 2) == 4.0
    assert burst_cost(4.0, 15, 900) == pytest.approx(2.0)  # 15 min use + 15 min idle
    assert always_on_cost(4.0, 0) == 0
