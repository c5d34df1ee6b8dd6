"""`mvgen plan` prices each warm: schedule per day and per month: GPU $/h x gpu_count x
containers added x the hours its windows cover in the 30 days from a given date."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, run_cli

from mvgen.catalog import gpu_type
from mvgen.config import load_plan
from mvgen.planview import warm_costs

H100 = gpu_type("H100").usd_per_hour
L40S = gpu_type("L40S").usd_per_hour

# qwen3-vl-30b on h100: 2 GPUs per container, 1 container always; raised to 3 on Fridays.
OLD = "l40s: {quantization: fp8, max_model_len: 8192}"
CONFIG = (
    BASE_CONFIG.replace(OLD, f"{OLD}\n      h100: {{gpu_count: 2, min_containers: 1}}")
    + """\
warm:
  - {cron: "0 8 * * 1-5", timezone: Europe/Paris, model: gemma-3-12b, gpu: h100, until: "18:00"}
  - {cron: "30 22 * * FRI", model: qwen3-vl-30b, gpu: h100, until: "06:00", min_containers: 3}
  - {cron: "0 22 * * *", timezone: Europe/Paris, model: gemma-3-12b, gpu: l40s, until: "06:00"}
"""
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "deployments.yaml").write_text(CONFIG)
    config = str(tmp_path / "deployments.yaml")
    assert run_cli("render", "--config", config, "--output-dir", str(tmp_path)).exit_code == 0
    return tmp_path


def plan_json(project: Path, first_day: str) -> dict:
    result = run_cli(
        "plan",
        "--config",
        str(project / "deployments.yaml"),
        "--output-dir",
        str(project),
        "--json",
        "--warm-from",
        first_day,
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_prices_every_schedule(project: Path) -> None:
    warm = plan_json(project, "2027-03-01")["warm"]
    assert (warm["from"], warm["days"]) == ("2027-03-01", 30)
    weekdays, fridays, nights = warm["schedules"]
    # 2027-03-01 is a Monday: 22 weekdays to March 30, 10 h each; one added H100.
    assert weekdays["hours"] == 220.0
    assert weekdays["usd_per_month"] == round(H100 * 1 * 1 * 220, 2)
    assert weekdays["usd_per_day"] == round(H100 * 220 / 30, 2)
    assert (weekdays["min_containers"], weekdays["added_containers"]) == (1, 1)
    assert weekdays["end_cron"] == "0 18 * * 1-5"
    # Four Fridays (5, 12, 19, 26), 22:30 to 06:00 UTC; 2 containers added to its own 1,
    # each of 2 H100s.
    assert fridays["hours"] == 30.0
    assert (fridays["min_containers"], fridays["added_containers"]) == (3, 2)
    assert fridays["usd_per_month"] == round(H100 * 2 * 2 * 30, 2)
    # Every night in Paris, 8 h; the night of March 27-28 clocks go forward: 7 h.
    # Windows are cut at the stretch's edges: the one from February 28 counts from
    # midnight March 1 (6 h), the one from March 30 until midnight March 31 (2 h).
    assert nights["hours"] == 6 + 29 * 8 - 1 + 2
    assert nights["usd_per_month"] == round(L40S * nights["hours"], 2)


def test_a_different_month_gives_different_hours(project: Path) -> None:
    # 2027-05-01 is a Saturday: 20 weekdays in the 30 days.
    (weekdays, _, _) = plan_json(project, "2027-05-01")["warm"]["schedules"]
    assert weekdays["hours"] == 200.0


def test_table_shows_each_schedule(project: Path) -> None:
    result = run_cli(
        "plan",
        "--config",
        str(project / "deployments.yaml"),
        "--output-dir",
        str(project),
        "--warm-from",
        "2027-03-01",
    )
    assert result.exit_code == 0, result.output
    assert "warm-up schedules over the 30 days from 2027-03-01" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if "warm[0]" in line]
    assert "0 8 * * 1-5 (Europe/Paris)" in row and "18:00" in row
    assert f"{H100 * 220:.2f}" in row and f"{H100 * 220 / 30:.2f}" in row and "220.0" in row


def test_without_warm_entries_there_is_no_table(tmp_path: Path) -> None:
    (tmp_path / "deployments.yaml").write_text(BASE_CONFIG)
    config = str(tmp_path / "deployments.yaml")
    run_cli("render", "--config", config, "--output-dir", str(tmp_path))
    result = run_cli("plan", "--config", config, "--output-dir", str(tmp_path), "--json")
    assert json.loads(result.stdout)["warm"]["schedules"] == []
    table = run_cli("plan", "--config", config, "--output-dir", str(tmp_path))
    assert "warm-up schedules" not in table.stdout


def test_warm_costs_arithmetic(write_config) -> None:
    plan = load_plan(write_config(CONFIG))
    costs = warm_costs(plan, date(2027, 3, 1))
    for cost in costs:
        assert cost.per_period == pytest.approx(cost.per_hour * cost.added * cost.hours)
        assert cost.per_day == pytest.approx(cost.per_period / 30)
    assert [c.per_hour for c in costs] == [H100, 2 * H100, L40S]
