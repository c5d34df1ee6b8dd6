"""`mvgen warm`, run against a STAND-IN for modal's client lookups (`Function.from_name(...)
.spawn` and `Cls.from_name(...)(model=...).update_autoscaler`) that records what it was
asked; and once against the real modal client without credentials, which must fail with
one clear line. Nothing here reaches Modal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import BASE_CONFIG, run_cli
from test_deploy import FAKE_MODAL_DIR, FakeModal
from test_deploy import project as deploy_project

from mvgen import deploy, warm, warmup
from mvgen.deploy import CREDENTIAL_ENV_VARS
from mvgen.warmup import HOLD_FUNCTION

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # a Monday; 10:00 in Paris


class StandInModal:
    """Records spawns and minimum changes in order. It is NOT Modal."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def spawn(self, app: str, function: str, *args: Any) -> str:
        self.calls.append(("spawn", app, function, *args))
        return "fc-standin"

    def set_minimum(self, app: str, pool: str, model: str, count: int) -> Any:
        self.calls.append(("set_minimum", app, pool, model, count))


@pytest.fixture
def modal_standin(monkeypatch) -> StandInModal:
    standin = StandInModal()
    monkeypatch.setattr(warm, "ModalClient", lambda: standin)
    monkeypatch.setattr(warm, "now_utc", lambda: NOW)
    return standin


def mvgen_warm(config, *args: str):
    return run_cli("warm", "--config", str(config), *args)


def test_warm_spawns_the_lowering_then_raises_the_pool(write_config, modal_standin) -> None:
    result = mvgen_warm(write_config(), "--gpu", "h100", "--model", "qwen3-vl-30b", "--for", "2h")
    assert result.exit_code == 0, result.output
    (spawn, raise_) = modal_standin.calls
    ends_at = (NOW + timedelta(hours=2)).timestamp()
    assert spawn[:7] == ("spawn", "vllm-h100", HOLD_FUNCTION, "qwen3-vl-30b", 1, ends_at, 0)
    assert len(spawn[7]) == 12  # the hold's token
    assert raise_ == ("set_minimum", "vllm-h100", "Vllm", "qwen3-vl-30b", 1)
    assert "minimum 1 container(s) from now until 2027-03-01 11:00 UTC (2h00m)" in result.stdout
    assert "then 0, set by warm_hold (call fc-standin)" in result.stdout
    assert "`modal deploy` of vllm-h100 before then resets it to 0" in result.stdout


def test_min_and_a_second_pool(write_config, modal_standin) -> None:
    """qwen3 with its own min_containers gets a class of its own (Vllm2)."""
    old = "l40s: {quantization: fp8, max_model_len: 8192}"
    text = BASE_CONFIG.replace(old, f"{old}\n      h100: {{min_containers: 1}}")
    config = write_config(text)
    result = mvgen_warm(
        config, "--gpu", "h100", "--model", "qwen3-vl-30b", "--for", "45m", "--min", "3"
    )
    assert result.exit_code == 0, result.output
    spawn, raise_ = modal_standin.calls
    assert spawn[3:5] == ("qwen3-vl-30b", 3) and spawn[6] == 1  # back to its own 1
    assert raise_ == ("set_minimum", "vllm-h100", "Vllm2", "qwen3-vl-30b", 3)
    assert "(45m)" in result.stdout


SCHEDULE = (
    "warm:\n"
    '  - {cron: "0 8 * * 1-5", timezone: Europe/Paris, model: gemma-3-12b, gpu: h100,'
    ' until: "18:00", min_containers: 2}\n'
)


def test_a_hold_ending_inside_a_window_restores_the_windows_minimum(
    write_config, modal_standin
) -> None:
    config = write_config(BASE_CONFIG + SCHEDULE)
    # Monday 10:00 Paris, inside 08:00-18:00: --min 4 for 1h ends at 11:00, still inside.
    result = mvgen_warm(
        config, "--gpu", "h100", "--model", "gemma-3-12b", "--for", "1h", "--min", "4"
    )
    assert result.exit_code == 0, result.output
    spawn, raise_ = modal_standin.calls
    assert spawn[4] == 4 and spawn[6] == 2  # held at 4, then the window's 2
    assert raise_[-1] == 4


def test_a_smaller_hold_never_lowers_a_running_window(write_config, modal_standin) -> None:
    config = write_config(BASE_CONFIG + SCHEDULE)
    # --min 1 inside a window of 2, for 10h: held at 2, then 0 after the window (20:00).
    result = mvgen_warm(config, "--gpu", "h100", "--model", "gemma-3-12b", "--for", "10h")
    assert result.exit_code == 0, result.output
    spawn, raise_ = modal_standin.calls
    assert spawn[4] == 2 and spawn[6] == 0
    assert raise_[-1] == 2


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--gpu", "h10", "--model", "gemma-3-12b"],
            ["unknown GPU 'h10'", "h100, l40s", "did you mean 'h100'"],
        ),
        (
            ["--gpu", "h100", "--model", "gemma"],
            ["unknown model 'gemma'", "gemma-3-12b, qwen3-vl-30b"],
        ),
        (
            ["--gpu", "l40s", "--model", "qwen3-vl-31b"],
            ["unknown model", "did you mean 'qwen3-vl-30b'"],
        ),
        (["--gpu", "h100"], ["choose a model with --model", "gemma-3-12b, qwen3-vl-30b"]),
        ([], ["choose a GPU with --gpu", "h100, l40s"]),
    ],
)
def test_wrong_names_list_the_choices(write_config, modal_standin, args, fragments) -> None:
    result = mvgen_warm(write_config(), *args, "--for", "2h")
    assert result.exit_code == 1
    for fragment in fragments:
        assert fragment in result.stderr
    assert modal_standin.calls == []  # Modal is asked nothing


@pytest.mark.parametrize(
    ("duration", "fragment"),
    [
        ("2", "not a duration: write it like 2h, 90m or 1h30m"),
        ("2 hours", "not a duration"),
        ("0m", "at least 1m"),
        ("24h", "longer than 23h"),
        ("23h1m", "longer than 23h"),
    ],
)
def test_durations_outside_what_the_hold_can_last_are_refused(
    write_config, modal_standin, duration, fragment
) -> None:
    result = mvgen_warm(
        write_config(), "--gpu", "h100", "--model", "gemma-3-12b", "--for", duration
    )
    assert result.exit_code == 1 and fragment in result.stderr
    assert modal_standin.calls == []


def test_durations_parse() -> None:
    assert warm.parse_duration("1h30m") == timedelta(minutes=90)
    assert warm.parse_duration("90m") == timedelta(minutes=90)
    assert warm.parse_duration("23h") == timedelta(hours=23)


def test_a_min_not_above_the_models_own_is_refused(write_config, modal_standin) -> None:
    config = write_config(BASE_CONFIG + "defaults: {min_containers: 2}\n")
    result = mvgen_warm(
        config, "--gpu", "h100", "--model", "gemma-3-12b", "--for", "1h", "--min", "2"
    )
    assert result.exit_code == 1
    assert "--min 2 is not above the 2 container(s) gemma-3-12b keeps up" in result.stderr
    assert (
        mvgen_warm(
            config, "--gpu", "h100", "--model", "gemma-3-12b", "--for", "1h", "--min", "0"
        ).exit_code
        == 2
    )


def test_legacy_mode_is_refused(write_config, modal_standin) -> None:
    config = write_config(BASE_CONFIG.replace("mode: gpu", "mode: legacy"))
    result = mvgen_warm(config, "--gpu", "h100", "--model", "gemma-3-12b", "--for", "1h")
    assert result.exit_code == 1 and "mvgen warm needs mode: gpu" in result.stderr
    assert modal_standin.calls == []


def test_the_real_modal_client_without_credentials_fails_in_one_line(
    write_config, tmp_path, monkeypatch
) -> None:
    """modal's own client code runs up to authentication, which it refuses locally."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.modal.toml
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    for name in (*CREDENTIAL_ENV_VARS, "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    result = mvgen_warm(write_config(), "--gpu", "h100", "--model", "gemma-3-12b", "--for", "2h")
    assert result.exit_code == 1
    assert "error: Modal refused the credentials (Token missing." in result.stderr
    assert "run `modal token new`" in result.stderr
    assert "Traceback" not in result.output


# --- a deploy during a window ----------------------------------------------------------


@pytest.fixture
def fake_modal(tmp_path, monkeypatch) -> FakeModal:
    """The recording stand-in for the `modal` CLI, set up as tests/test_deploy.py does."""
    monkeypatch.setattr(deploy, "find_modal", lambda: str(FAKE_MODAL_DIR / "modal"))
    monkeypatch.setenv("FAKE_MODAL_STATE", str(tmp_path / "fake-modal-state.json"))
    monkeypatch.setenv("FAKE_MODAL_LOG", str(tmp_path / "fake-modal-calls.jsonl"))
    for name in (*CREDENTIAL_ENV_VARS, "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return FakeModal(tmp_path)


def test_deploy_during_a_window_notes_the_reset_and_the_fix(
    tmp_path, fake_modal, monkeypatch
) -> None:
    """With the recording stand-in for the `modal` CLI (tests/fake_modal): the deploy goes
    ahead, and a note says what it does to the window under way."""
    root = deploy_project(tmp_path, BASE_CONFIG + SCHEDULE)
    monkeypatch.setattr(warmup, "now_utc", lambda: NOW)  # Monday 10:00 in Paris
    result = run_cli("deploy", "--gpu", "h100", cwd=root)
    assert result.exit_code == 0, result.output
    assert (
        "note: warm[0] is under way until 18:00 (Europe/Paris): this deploy resets "
        "gemma-3-12b on h100 to 0 container(s) until its next start; `mvgen warm --gpu h100 "
        "--model gemma-3-12b --for 8h --min 2` afterwards restores it"
    ) in result.stderr
    assert fake_modal.deployed_files() == ["vllm_h100.py"]
    monkeypatch.setattr(warmup, "now_utc", lambda: NOW.replace(hour=17, minute=1))
    assert "under way" not in run_cli("deploy", "--gpu", "h100", cwd=root).stderr
