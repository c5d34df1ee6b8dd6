"""`mvgen deploy`, `url`, `logs` and `stop`, run against a STAND-IN for the `modal` CLI.

Nothing here reaches Modal. tests/fake_modal/modal is a small script, used in place of the
`modal` executable mvgen would find (find_modal), that records every argv it receives and
answers `app list`, `app info`, `secret list`, `config show`, `profile current`,
`token info`, `deploy`, `app logs` and `app stop` the way modal 1.6.4 prints them, from a
JSON state file each test sets up. The tests check what mvgen asked Modal to do, and above
all that a refused preflight deployed nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, ROOT, run_cli

from mvgen import deploy
from mvgen.config import load_plan
from mvgen.deploy import CREDENTIAL_ENV_VARS, DeployError, endpoint_url, has_credentials

FAKE_MODAL_DIR = Path(__file__).resolve().parent / "fake_modal"
LOGGED_IN = {"token_id": "ak-test", "token_secret": "***"}
SECRETS = ["huggingface", "vllm-api-key"]


class FakeModal:
    """The stand-in's state file and argv log."""

    def __init__(self, root: Path) -> None:
        self.state_path = root / "fake-modal-state.json"
        self.log_path = root / "fake-modal-calls.jsonl"
        self.log_path.write_text("")
        self.write(config=LOGGED_IN, profile="acme", token_workspace="acme", secrets=SECRETS)

    def write(self, **state: Any) -> None:
        old = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.state_path.write_text(json.dumps({"apps": [], **old, **state}))

    def clear_log(self) -> None:
        self.log_path.write_text("")

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def deployed_files(self) -> list[str]:
        return [Path(call[1]).name for call in self.calls() if call[0] == "deploy"]

    def app_state(self, name: str) -> str | None:
        return next((a["state"] for a in self.state()["apps"] if a["name"] == name), None)


@pytest.fixture
def fake_modal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeModal:
    return use_fake_modal(tmp_path, monkeypatch)


def use_fake_modal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeModal:
    """Make mvgen run the stand-in for `modal`, with a fresh state in `tmp_path`."""
    # mvgen runs the modal beside its Python before PATH's: point that lookup at the stand-in
    monkeypatch.setattr(deploy, "find_modal", lambda: str(FAKE_MODAL_DIR / "modal"))
    monkeypatch.setenv("PATH", f"{FAKE_MODAL_DIR}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MODAL_STATE", str(tmp_path / "fake-modal-state.json"))
    monkeypatch.setenv("FAKE_MODAL_LOG", str(tmp_path / "fake-modal-calls.jsonl"))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no URL folded across lines
    for name in (*CREDENTIAL_ENV_VARS, "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return FakeModal(tmp_path)


def project(tmp_path: Path, config: str = BASE_CONFIG) -> Path:
    """A directory with deployments.yaml and a fresh render of it, as in the repo."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "deployments.yaml").write_text(textwrap.dedent(config))
    shutil.copytree(ROOT / "locks", root / "locks")  # the image locks the apps install from
    result = run_cli("render", "--config", "deployments.yaml", cwd=root)
    assert result.exit_code == 0, result.output
    return root


def mvgen(root: Path, *args: str) -> Any:
    return run_cli(*args, cwd=root)


def foreign_apps(count: int, endpoints: int = 1) -> list[dict[str, Any]]:
    return [
        {"name": f"other-{i}", "state": "deployed", "web_endpoints": endpoints}
        for i in range(count)
    ]


# --- deploying ---------------------------------------------------------------------------


def test_deploy_one_gpu_runs_preflight_then_modal_deploy(tmp_path, fake_modal):
    root = project(tmp_path)
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    commands = [call[:2] for call in fake_modal.calls()]
    assert ["config", "show"] in commands
    assert ["secret", "list"] in commands
    assert ["app", "list"] in commands
    assert fake_modal.deployed_files() == ["vllm_h100.py"]
    assert fake_modal.app_state("vllm-h100") == "deployed"
    assert "https://acme--vllm-h100-serve.modal.run" in result.stdout
    assert "1 of 1 apps deployed" in result.stdout


def test_deploy_all_deploys_every_app_and_reports_a_table(tmp_path, fake_modal):
    root = project(tmp_path)
    result = mvgen(root, "deploy", "--all")
    assert result.exit_code == 0, result.output
    assert sorted(fake_modal.deployed_files()) == ["vllm_h100.py", "vllm_l40s.py"]
    assert "2 of 2 apps deployed" in result.stdout
    assert "web endpoints after this deploy: 2 of 8" in result.stderr


def test_deploy_all_goes_on_after_a_failure_and_exits_non_zero(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(deploy_fail={"vllm-l40s": "Image build failed: out of disk"})
    result = mvgen(root, "deploy", "--all")
    assert result.exit_code == 1
    assert sorted(fake_modal.deployed_files()) == ["vllm_h100.py", "vllm_l40s.py"]
    assert fake_modal.app_state("vllm-h100") == "deployed"
    assert "1 of 2 apps deployed" in result.stdout
    assert "FAILED" in result.stdout
    assert "out of disk" in result.stdout


def test_legacy_mode_deploys_the_one_model_x_gpu_app(tmp_path, fake_modal):
    config = BASE_CONFIG.replace("mode: gpu", "mode: legacy")
    root = project(tmp_path, config)
    result = mvgen(root, "deploy", "--gpu", "l40s", "--model", "gemma-3-12b")
    assert result.exit_code == 0, result.output
    assert fake_modal.deployed_files() == ["vllm_gemma_3_12b_l40s.py"]


# --- the deploy command printed in every generated file ---------------------------------


def printed_deploy_command(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("# Deploy it from the"))
    return shlex.split(lines[at + 2].removeprefix("#"))


def make_dry_run(words: list[str]) -> list[str]:
    """The mvgen arguments `make` would run for this command (`make -n` runs nothing)."""
    assert words[:2] == ["make", "deploy"]
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), *words[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if "mvgen deploy " in line)
    return shlex.split(line.split("mvgen ", 1)[1])


@pytest.mark.parametrize(
    ("mode", "filename"),
    [("gpu", "vllm_h100.py"), ("legacy", "vllm_qwen3_vl_30b_h100.py")],
)
def test_the_printed_deploy_command_deploys_that_file(tmp_path, fake_modal, mode, filename):
    """Header command -> Makefile target -> mvgen deploy -> `modal deploy` of this file."""
    root = project(tmp_path, BASE_CONFIG.replace("mode: gpu", f"mode: {mode}"))
    words = printed_deploy_command(root / "generated" / filename)
    assert words[:3] == ["make", "deploy", "GPU=h100"]
    result = mvgen(root, *make_dry_run(words))
    assert result.exit_code == 0, result.output
    assert fake_modal.deployed_files() == [filename]


def test_the_real_modal_cli_imports_the_generated_app_in_makes_environment(tmp_path):
    """What the make target finally runs: this environment's `modal deploy FILE`. Without
    credentials it stops at authentication, which comes after importing the file, so an
    import error (httpx, starlette or mvgen missing) would show here instead."""
    app_file = f"generated/{load_plan(ROOT / 'deployments.yaml').apps[0].filename}"
    modal_cli = Path(sys.executable).parent / "modal"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)  # no ~/.modal.toml
    result = subprocess.run(
        [str(modal_cli), "deploy", app_file],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Token missing" in output, output
    assert "Error" not in output.replace("Error: Token missing", "")


# --- preflight refusals: each one deploys nothing ----------------------------------------


def assert_refused(result: Any, fake_modal: FakeModal, *fragments: str) -> None:
    assert result.exit_code == 1
    assert "nothing was deployed" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert fake_modal.deployed_files() == []


def test_stale_generated_files_are_refused(tmp_path, fake_modal):
    root = project(tmp_path)
    app_file = root / "generated" / "vllm_h100.py"
    app_file.write_text(app_file.read_text() + "\n# edited by hand\n")
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert_refused(result, fake_modal, "stale", "generated/vllm_h100.py (changed)", "make render")


def test_config_changed_since_render_is_refused(tmp_path, fake_modal):
    root = project(tmp_path)
    config = root / "deployments.yaml"
    gemma = "hf_id: google/gemma-3-12b-it"
    config.write_text(config.read_text().replace(gemma, gemma + "\n    max_model_len: 8192"))
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert_refused(result, fake_modal, "stale", "generated/vllm_h100.py (changed)")


def test_stale_image_lock_is_refused(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG + "image:\n  vllm: 0.33.0\n")
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert_refused(result, fake_modal, "locks/vllm-image.txt is stale", "make image-lock")
    assert "locks/gateway-image.txt" not in result.stderr  # vLLM is only in the GPU image


def test_missing_secret_is_refused_with_the_command_that_creates_it(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(secrets=["huggingface"])
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert_refused(
        result, fake_modal, "'vllm-api-key'", "modal secret create vllm-api-key API_KEY="
    )


def test_missing_credentials_are_refused_before_asking_modal_anything_else(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(config={"token_id": None, "token_secret": None})
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert_refused(result, fake_modal, "no Modal credentials", "modal token new")
    assert [call[:2] for call in fake_modal.calls()] == [["config", "show"]]


def test_endpoint_limit_counts_deployed_apps_plus_new_ones(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(apps=foreign_apps(7))  # 7 deployed + 2 new > 8
    result = mvgen(root, "deploy", "--all")
    assert_refused(result, fake_modal, "7 already deployed", "= 9 > endpoint_limit 8")


def test_endpoint_limit_uses_each_apps_own_web_endpoint_count(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(apps=foreign_apps(2, endpoints=3) + [{"name": "old", "state": "stopped"}])
    result = mvgen(root, "deploy", "--all")  # 6 deployed (stopped apps hold none) + 2 = 8
    assert result.exit_code == 0, result.output
    fake_modal.write(apps=foreign_apps(2, endpoints=3) + foreign_apps(3)[2:])
    fake_modal.clear_log()
    result = mvgen(root, "deploy", "--all")  # 7 + 2 (the redeploys replace themselves)
    assert_refused(result, fake_modal, "= 9 > endpoint_limit 8")


def test_redeploying_an_app_does_not_count_its_endpoint_twice(tmp_path, fake_modal):
    root = project(tmp_path)
    apps = foreign_apps(7) + [{"name": "vllm-h100", "state": "deployed", "web_endpoints": 1}]
    fake_modal.write(apps=apps)  # 8 deployed, vllm-h100 among them: 7 others + 1 = 8
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    assert fake_modal.deployed_files() == ["vllm_h100.py"]


def test_every_preflight_problem_is_reported_at_once(tmp_path, fake_modal):
    root = project(tmp_path)
    (root / "generated" / "vllm_l40s.py").unlink()
    fake_modal.write(secrets=[], apps=foreign_apps(8))
    result = mvgen(root, "deploy", "--all")
    assert_refused(
        result,
        fake_modal,
        "generated/vllm_l40s.py (added)",
        "'huggingface'",
        "'vllm-api-key'",
        "> endpoint_limit 8",
    )


def test_an_invalid_config_is_refused_with_exit_2(tmp_path, fake_modal):
    root = project(tmp_path)
    config = root / "deployments.yaml"
    config.write_text(config.read_text().replace("type: H100", "type: H1000"))
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert result.exit_code == 2
    assert "gpus.h100.type" in result.stderr
    assert fake_modal.calls() == []


# --- choosing the app ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["deploy", "url", "logs", "stop", "test"])
def test_a_wrong_gpu_names_the_choices_and_calls_nothing(tmp_path, fake_modal, command):
    root = project(tmp_path)
    extra = ["--api-key", "k"] if command == "test" else []
    result = mvgen(root, command, "--gpu", "h10", *extra)
    assert result.exit_code == 1
    assert "unknown GPU 'h10'; choose from: h100, l40s (did you mean 'h100'?)" in result.stderr
    assert fake_modal.calls() == []


def test_a_missing_gpu_names_the_choices(tmp_path, fake_modal):
    result = mvgen(project(tmp_path), "deploy")
    assert result.exit_code == 1
    assert "choose a GPU with --gpu (GPU=... in make): h100, l40s" in result.stderr


def test_a_wrong_model_names_the_models_of_that_gpu(tmp_path, fake_modal):
    result = mvgen(project(tmp_path), "url", "--gpu", "h100", "--model", "gemma-3-21b")
    assert result.exit_code == 1
    assert "unknown model 'gemma-3-21b'; choose from: gemma-3-12b, qwen3-vl-30b" in result.stderr
    assert "did you mean 'gemma-3-12b'?" in result.stderr


def test_a_model_not_served_on_that_gpu_says_so(tmp_path, fake_modal):
    gemma = "hf_id: google/gemma-3-12b-it"
    config = BASE_CONFIG.replace(gemma, gemma + "\n    gpus: [h100]")
    result = mvgen(project(tmp_path, config), "url", "--gpu", "l40s", "--model", "gemma-3-12b")
    assert result.exit_code == 1
    assert "model 'gemma-3-12b' is not served on l40s; choose from: qwen3-vl-30b" in result.stderr


# --- url ---------------------------------------------------------------------------------


def test_url_uses_the_workspace_from_deployments_yaml(tmp_path, fake_modal):
    result = mvgen(project(tmp_path), "url", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "https://acme--vllm-h100-serve.modal.run"
    assert fake_modal.calls() == []  # nothing to ask Modal


def test_url_without_a_workspace_takes_the_active_profiles_name(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    fake_modal.write(profile="Team-Acme", token_workspace="never-asked")
    result = mvgen(root, "url", "--gpu", "l40s")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "https://team-acme--vllm-l40s-serve.modal.run"
    assert "active Modal profile" in result.stderr
    assert ["token", "info"] not in [call[:2] for call in fake_modal.calls()]


def test_url_with_credentials_in_the_environment_asks_token_info(tmp_path, fake_modal, monkeypatch):
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-from-env")
    fake_modal.write(profile="stale-profile", token_workspace="ci-workspace")
    result = mvgen(root, "url", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "https://ci-workspace--vllm-h100-serve.modal.run"
    assert "modal token info" in result.stderr


def test_url_without_any_workspace_says_how_to_set_one(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    fake_modal.write(profile="default", token_workspace=None)
    result = mvgen(root, "url", "--gpu", "h100")
    assert result.exit_code == 2
    assert "workspace: not set, and no Modal profile is active" in result.stderr
    assert "set `workspace:` in deployments.yaml" in result.stderr


def test_url_refuses_a_host_modal_would_truncate(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    fake_modal.write(profile="a-very-long-workspace-name-that-goes-on-and-on-and-on")
    result = mvgen(root, "url", "--gpu", "h100")
    assert result.exit_code == 2
    assert "Modal allows 63 before it truncates the URL" in result.stderr


def test_deploy_reports_the_url_modal_printed(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    fake_modal.write(profile="acme", token_workspace="acme-real")
    result = mvgen(root, "deploy", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    assert "https://acme-real--vllm-h100-serve.modal.run" in result.stdout


def test_deploy_notes_a_workspace_that_differs_from_the_profile(tmp_path, fake_modal):
    fake_modal.write(profile="acme-prod")
    result = mvgen(project(tmp_path), "deploy", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    assert "says workspace 'acme' but the active Modal profile is 'acme-prod'" in result.stderr


# --- the workspace: never a placeholder, never None ---------------------------------------

PLACEHOLDER_CONFIG = BASE_CONFIG.replace("workspace: acme", "workspace: your-workspace")


@pytest.mark.parametrize(
    "args",
    [
        ["url", "--gpu", "h100"],
        ["env", "--gpu", "h100"],
        ["test", "--gpu", "h100", "--api-key", "k"],
        ["deploy", "--gpu", "h100"],
    ],
    ids=lambda args: args[0],
)
def test_the_placeholder_workspace_is_refused_with_the_fix(tmp_path, fake_modal, args):
    root = project(tmp_path, PLACEHOLDER_CONFIG)  # render keeps it: the example ships so
    result = mvgen(root, *args)
    assert result.exit_code == 2
    assert "workspace: 'your-workspace' is the placeholder" in result.stderr
    assert "modal profile current" in result.stderr and "set `workspace:`" in result.stderr
    assert "your-workspace--" not in result.stdout  # no URL to a host that does not exist
    assert fake_modal.calls() == []  # nothing asked of Modal, nothing deployed


def test_render_without_a_workspace_takes_the_profiles_and_says_so(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    fake_modal.write(profile="Team-Acme")
    result = mvgen(root, "render", "--config", "deployments.yaml")
    assert result.exit_code == 0, result.output
    assert "workspace 'team-acme' from the active Modal profile" in result.stderr
    routes = (root / "litellm" / "config.yaml").read_text()
    assert "https://team-acme--vllm-h100-serve.modal.run/v1" in routes


def test_render_without_any_workspace_refuses_to_write_urls(tmp_path, fake_modal):
    root = tmp_path / "project"
    root.mkdir()
    (root / "deployments.yaml").write_text(BASE_CONFIG.replace("workspace: acme\n", ""))
    fake_modal.write(profile="default")
    result = mvgen(root, "render", "--config", "deployments.yaml")
    assert result.exit_code == 2
    assert "workspace: not set, and no Modal profile is active" in result.stderr
    assert "endpoint URLs cannot be written" in result.stderr
    assert not (root / "litellm").exists() and not (root / "generated").exists()
    assert [call[:2] for call in fake_modal.calls()] == [["profile", "current"]]  # offline


def test_env_without_a_workspace_takes_the_profiles(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    result = mvgen(root, "env", "--gpu", "h100")
    assert result.exit_code == 0, result.output
    assert "LLM_BASE_URL=https://acme--vllm-h100-serve.modal.run/v1" in result.stdout
    assert "from the active Modal profile" in result.stderr


def test_the_library_never_writes_none_into_a_url(write_config):
    from mvgen.config import load_plan
    from mvgen.errors import ConfigError
    from mvgen.render import render_files

    plan = load_plan(write_config(BASE_CONFIG.replace("workspace: acme\n", "")))
    with pytest.raises(ConfigError, match="endpoint URLs cannot be written"):
        render_files(plan)


@pytest.mark.timeout(120)  # the smoke test's own --timeout is 600 s: it must not wait
def test_a_host_that_does_not_resolve_fails_the_smoke_test_at_once(
    tmp_path, fake_modal, monkeypatch
):
    """The workspace comes from the stand-in's profile; DNS is a stand-in too: every
    *.modal.run name fails to resolve, as a wrong workspace's does."""
    import socket

    real = socket.getaddrinfo

    def no_modal_run(host, *args, **kwargs):
        if str(host).endswith(".modal.run"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_modal_run)
    root = project(tmp_path, BASE_CONFIG.replace("workspace: acme\n", ""))
    fake_modal.write(profile="wrong-workspace")
    result = mvgen(root, "test", "--gpu", "h100", "--api-key", "k", "--json")
    assert result.exit_code == 1
    results = json.loads(result.stdout)["results"]
    health = results[0]
    assert (health["check"], health["status"]) == ("health", "FAIL")
    assert "wrong-workspace--vllm-h100-serve.modal.run does not resolve" in health["detail"]
    assert "modal profile current" in health["detail"]
    assert {r["status"] for r in results[1:]} == {"skip"}


# --- logs and stop ---------------------------------------------------------------------------


def test_logs_and_follow(tmp_path, fake_modal):
    root = project(tmp_path)
    assert mvgen(root, "logs", "--gpu", "h100").exit_code == 0
    assert mvgen(root, "logs", "--gpu", "h100", "--follow").exit_code == 0
    assert fake_modal.calls() == [["app", "logs", "vllm-h100"], ["app", "logs", "vllm-h100", "-f"]]


def test_logs_in_legacy_mode_needs_a_model(tmp_path, fake_modal):
    root = project(tmp_path, BASE_CONFIG.replace("mode: gpu", "mode: legacy"))
    result = mvgen(root, "logs", "--gpu", "h100")
    assert result.exit_code == 1
    assert "add --model, one of gemma-3-12b, qwen3-vl-30b" in result.stderr
    assert mvgen(root, "logs", "--gpu", "h100", "--model", "qwen3-vl-30b").exit_code == 0
    assert fake_modal.calls() == [["app", "logs", "vllm-qwen3-vl-30b-h100"]]


def test_stop_stops_the_app_and_fails_when_modal_does(tmp_path, fake_modal):
    root = project(tmp_path)
    fake_modal.write(apps=[{"name": "vllm-h100", "state": "deployed"}])
    assert mvgen(root, "stop", "--gpu", "h100").exit_code == 0
    assert fake_modal.calls() == [["app", "stop", "vllm-h100", "-y"]]
    assert fake_modal.app_state("vllm-h100") == "stopped"
    assert mvgen(root, "stop", "--gpu", "h100").exit_code == 1  # nothing left to stop


def test_modal_missing_everywhere_is_a_clear_error(tmp_path, fake_modal, monkeypatch):
    root = project(tmp_path)
    monkeypatch.setattr(deploy, "find_modal", lambda: None)
    result = mvgen(root, "logs", "--gpu", "h100")
    assert result.exit_code == 1
    assert "the `modal` command is neither beside" in result.stderr
    assert "make validate" in result.stderr


@pytest.mark.parametrize("command", [["render"], ["plan"], ["env", "--gpu", "h100"]])
def test_modal_missing_while_reading_the_workspace_is_a_clear_error(
    tmp_path, fake_modal, monkeypatch, command
):
    """Without `workspace:` these ask the modal CLI for the profile: no traceback."""
    root = project(tmp_path, "\n".join(
        line for line in BASE_CONFIG.splitlines() if not line.startswith("workspace:")
    ))  # fmt: skip
    monkeypatch.setattr(deploy, "find_modal", lambda: None)
    result = mvgen(root, *command)
    assert result.exit_code == 1, result.output
    assert "the `modal` command is neither beside" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_the_modal_beside_mvgens_python_is_found_without_path(monkeypatch):
    """`.venv/bin/mvgen deploy` from a shell where .venv/bin is not on PATH."""
    monkeypatch.setenv("PATH", "/nonexistent")
    found = deploy.find_modal()
    assert found == str(Path(sys.executable).parent / "modal")
    code = "from mvgen.deploy import ModalCli; print(ModalCli().run('--version').stdout)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert version("modal") in done.stdout  # the locked modal, run with an empty PATH


# --- small pieces --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (LOGGED_IN, True),
        ({"token_id": "ak-x", "token_secret": None}, False),
        ({}, False),
        ({"oauth_refresh_token": "r", "oauth_client_id": "c", "oauth_client_secret": "s"}, True),
        ({"oauth_refresh_token": "r", "oauth_client_id": "c", "oauth_jwt_key": "k"}, True),
        ({"oauth_refresh_token": "r", "oauth_client_id": "c"}, False),
    ],
)
def test_has_credentials(config, expected):
    assert has_credentials(config) is expected


def test_endpoint_url_lowercases_the_workspace_and_checks_length(tmp_path):
    from mvgen.config import load_plan

    root = project(tmp_path)
    app = load_plan(root / "deployments.yaml").apps[0]
    assert endpoint_url("ACME", app) == f"https://acme--{app.label}.modal.run"
    with pytest.raises(DeployError, match="cannot be predicted"):
        endpoint_url("w" * 60, app)
