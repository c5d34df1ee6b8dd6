"""The generated LiteLLM config, the proxy wrapper, `mvgen env` and the Docker files.

Keys are checked against the installed LiteLLM (read in a subprocess, so its import
side effects stay out of this test process). The real proxy runs in test_litellm_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_CONFIG, ROOT, run_cli

from mvgen.catalog import GPU_TYPES
from mvgen.config import load_plan
from mvgen.errors import ConfigError
from mvgen.litellm_config import group_order, litellm_config, with_v1
from mvgen.proxy import PLACEHOLDER, REQUIRED, prepare, read_env_file
from mvgen.render import render_files


def edit(text: str, old: str, new: str) -> str:
    assert old in text, f"test config lacks {old!r}"
    return text.replace(old, new, 1)


# Three GPUs declared against price order, so "cheapest first" is not file order.
PRICED = edit(
    BASE_CONFIG,
    "  l40s: {type: L40S}\n  h100: {type: H100}\n",
    "  h100: {type: H100}\n  a100: {type: A100-80GB}\n  l40s: {type: L40S}\n",
)


def rendered(config: Path, **api_bases: str) -> dict[str, Any]:
    files = render_files(load_plan(config), api_bases=api_bases)
    return yaml.safe_load(files["litellm/config.yaml"])


def entries(cfg: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in cfg["model_list"] if e["model_name"] == name]


# --- routes and groups -------------------------------------------------------------------


def test_one_route_per_model_and_gpu(write_config) -> None:
    plan = load_plan(write_config(PRICED))
    cfg = rendered(write_config(PRICED))
    for d in plan.deployments:
        (route,) = entries(cfg, f"{d.model.key}-{d.gpu.key}")
        params = route["litellm_params"]
        assert params["model"] == f"hosted_vllm/{d.model.served_name}"
        app = plan.app_for(d.gpu.key, d.model.key)
        assert params["api_base"] == f"{app.url}/v1"
        assert params["api_key"] == "os.environ/VLLM_API_KEY"
        assert "order" not in params  # a route is exactly one GPU: nothing to fail over to


def test_group_per_model_cheapest_first(write_config) -> None:
    plan = load_plan(write_config(PRICED))
    cfg = rendered(write_config(PRICED))
    for model in plan.models:
        group = entries(cfg, model.key)
        gpus = [e["litellm_params"]["api_base"].split("--vllm-")[1].split("-")[0] for e in group]
        prices = [GPU_TYPES[next(g.type.name for g in plan.gpus if g.key == k)] for k in gpus]
        assert [p.usd_per_hour for p in prices] == sorted(p.usd_per_hour for p in prices)
        assert sorted(gpus) == sorted(g.key for g in plan.gpus)
        assert [e["litellm_params"]["order"] for e in group] == list(range(1, len(group) + 1))


def test_price_counts_every_gpu_of_a_tensor_parallel_deployment(write_config) -> None:
    # Two L40S ($3.90/h) cost more than one A100 ($2.50/h).
    text = edit(
        PRICED,
        "    hf_id: google/gemma-3-12b-it\n",
        "    hf_id: google/gemma-3-12b-it\n    per_gpu:\n      l40s: {gpu_count: 2}\n",
    )
    plan = load_plan(write_config(text))
    model = next(m for m in plan.models if m.key == "gemma-3-12b")
    assert [d.gpu.key for d in group_order(plan, model)] == ["a100", "l40s", "h100"]


def test_litellm_order_first_then_cheapest(write_config) -> None:
    text = edit(
        PRICED, "    tool_parser: hermes\n", "    tool_parser: hermes\n    litellm_order: [h100]\n"
    )
    config = write_config(text)
    plan = load_plan(config)
    qwen = next(m for m in plan.models if m.key == "qwen3-vl-30b")
    assert [d.gpu.key for d in group_order(plan, qwen)] == ["h100", "l40s", "a100"]
    cfg = rendered(config)
    first = next(e for e in entries(cfg, "qwen3-vl-30b") if e["litellm_params"]["order"] == 1)
    assert "--vllm-h100-" in first["litellm_params"]["api_base"]
    assert (
        "# qwen3-vl-30b: h100 -> l40s -> a100 (litellm_order first)"
        in render_files(plan)["litellm/config.yaml"]
    )


@pytest.mark.parametrize(
    ("order", "message", "hint"),
    [
        ("[h10]", "GPU 'h10' does not serve qwen3-vl-30b", "did you mean 'h100'?"),
        ("[l40s]", "GPU 'l40s' does not serve qwen3-vl-30b", "add 'l40s' to models"),
    ],
)
def test_litellm_order_names_only_gpus_of_the_model(write_config, order, message, hint) -> None:
    text = edit(
        PRICED,
        "    tool_parser: hermes\n",
        f"    tool_parser: hermes\n    gpus: [h100, a100]\n    litellm_order: {order}\n",
    )
    text = edit(text, "    per_gpu:\n      l40s: {quantization: fp8, max_model_len: 8192}\n", "")
    result = run_cli("validate", "--config", str(write_config(text)))
    assert result.exit_code == 2
    assert "models.qwen3-vl-30b.litellm_order[0]" in result.output
    assert message in result.output and hint in result.output


def test_litellm_order_is_described_in_the_schema() -> None:
    schema = json.loads((ROOT / "schema" / "deployments.schema.json").read_text())
    prop = schema["$defs"]["model"]["properties"]["litellm_order"]
    assert "cheapest first" in prop["description"] and prop["uniqueItems"] is True


# --- settings and model_info ---------------------------------------------------------------


def test_timeouts_and_retries_default_and_configurable(write_config) -> None:
    cfg = rendered(write_config(PRICED))
    assert cfg["router_settings"]["num_retries"] == 1
    for entry in cfg["model_list"]:
        assert entry["litellm_params"]["timeout"] == 600
        assert entry["litellm_params"]["stream_timeout"] == 600
    custom = PRICED + "litellm: {timeout: 900, stream_timeout: 700, num_retries: 0}\n"
    cfg = rendered(write_config(custom, name="custom.yaml"))
    assert cfg["router_settings"]["num_retries"] == 0
    assert {e["litellm_params"]["timeout"] for e in cfg["model_list"]} == {900}
    assert {e["litellm_params"]["stream_timeout"] for e in cfg["model_list"]} == {700}


def test_max_fallbacks_covers_the_largest_group(write_config) -> None:
    cfg = rendered(write_config(PRICED))
    largest = max(len(entries(cfg, m)) for m in ("gemma-3-12b", "qwen3-vl-30b"))
    assert cfg["router_settings"]["max_fallbacks"] == largest - 1


FP8_ON_L40S = "{checkpoint: Qwen/Qwen3-VL-30B-A3B-Instruct-FP8, max_model_len: 8192}"


def test_model_info_per_deployment(write_config) -> None:
    # With the seed's lock the models' shapes are known, and vLLM 0.12 cannot quantize
    # Qwen3-VL online on an L40S: its FP8 checkpoint serves there instead.
    text = edit(PRICED, "{quantization: fp8, max_model_len: 8192}", FP8_ON_L40S)
    plan = load_plan(write_config(text, lock=True))
    cfg = rendered(write_config(text, lock=True))
    for d in plan.deployments:
        (route,) = entries(cfg, d.route)
        info = route["model_info"]
        assert info["mode"] == "chat"
        assert info["max_input_tokens"] == d.settings.max_model_len
        assert info["supports_vision"] is d.model.architecture.vision
        assert info["supports_function_calling"] is (d.model.tool_parser is not None)
    # per-GPU max_model_len reaches the right entry
    assert entries(cfg, "qwen3-vl-30b-l40s")[0]["model_info"]["max_input_tokens"] == 8192


def test_unknown_architecture_claims_no_vision(write_config) -> None:
    text = BASE_CONFIG + "  custom:\n    hf_id: acme/custom-7b\n    gpus: [h100]\n"
    info = entries(rendered(write_config(text)), "custom-h100")[0]["model_info"]
    assert "supports_vision" not in info


def test_master_key_and_no_background_health_checks(write_config) -> None:
    settings = rendered(write_config())["general_settings"]
    assert settings["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert settings["background_health_checks"] is False


def test_yaml_is_exactly_the_data(write_config) -> None:
    """The template adds nothing and loses nothing: the file parses back to the data."""
    plan = load_plan(write_config(PRICED))
    data = litellm_config(plan)
    cfg = yaml.safe_load(render_files(plan)["litellm/config.yaml"])
    groups = [d for g in data["groups"] for d in g["deployments"]]
    assert cfg["model_list"] == data["routes"] + groups
    assert cfg["router_settings"] == data["router_settings"]
    assert cfg["general_settings"] == data["general_settings"]


def test_hostile_api_base_stays_data(write_config) -> None:
    """--api-base is free text: YAML syntax in it must stay inside the string."""
    hostile = 'http://127.0.0.1:9/x"\n  evil: {a: 1} # '
    cfg = rendered(write_config(), h100=hostile)
    (route,) = entries(cfg, "gemma-3-12b-h100")
    assert route["litellm_params"]["api_base"] == hostile + "/v1"
    assert "evil" not in route and "evil" not in cfg


# --- api_base overrides ------------------------------------------------------------------


def test_api_base_override_by_gpu_and_app(write_config) -> None:
    config = write_config()
    cfg = rendered(config, h100="http://127.0.0.1:9/", **{"vllm-l40s": "http://127.0.0.1:8/v1"})
    assert entries(cfg, "gemma-3-12b-h100")[0]["litellm_params"]["api_base"] == (
        "http://127.0.0.1:9/v1"
    )
    assert entries(cfg, "gemma-3-12b-l40s")[0]["litellm_params"]["api_base"] == (
        "http://127.0.0.1:8/v1"
    )
    assert with_v1("http://x/v1/") == "http://x/v1"


def test_api_base_override_of_an_unknown_gpu_is_an_error(write_config, tmp_path) -> None:
    args = ["render", "--config", str(write_config()), "--output-dir", str(tmp_path / "o")]
    result = run_cli(*args, "--api-base", "h10=http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "'h10' is neither a GPU nor an app" in result.output
    assert "did you mean 'h100'?" in result.output
    assert not (tmp_path / "o").exists()


# --- keys LiteLLM knows ----------------------------------------------------------------------

KNOWN_KEYS_SCRIPT = textwrap.dedent(
    r"""
    import json
    import re
    from pathlib import Path

    import litellm
    from litellm.constants import ROUTER_SETTINGS_MANAGED_OUTSIDE_CONFIG
    from litellm.proxy._types import ConfigGeneralSettings, ConfigYAML
    from litellm.types.router import LiteLLM_Params, LiteLLMParamsTypedDict, ModelInfo
    from litellm.types.utils import ModelInfoBase

    def read_keys():
        root = Path(litellm.__file__).parent / "proxy"
        patterns = (
            r"general_settings(?:\.get\(|\[)\s*[\"'](\w+)[\"']",
            r"[\"'](\w+)[\"']\s+(?:not\s+)?in\s+general_settings",
        )
        text = "\n".join(p.read_text(encoding="utf-8") for p in root.rglob("*.py"))
        return {key for pattern in patterns for key in re.findall(pattern, text)}

    print(json.dumps({
        # what a deployment's litellm_params may hold (router.py builds LiteLLM_Params)
        "litellm_params": sorted(
            set(LiteLLM_Params.model_fields) | set(LiteLLMParamsTypedDict.__annotations__)
        ),
        "model_info": sorted(set(ModelInfoBase.__annotations__) | set(ModelInfo.model_fields)),
        # proxy_server.py keeps router_settings keys that Router.__init__ takes
        "router_settings": sorted(
            set(litellm.Router.get_valid_args()) - set(ROUTER_SETTINGS_MANAGED_OUTSIDE_CONFIG)
        ),
        # documented fields, plus keys the proxy's code reads from general_settings
        "general_settings": sorted(set(ConfigGeneralSettings.model_fields) | read_keys()),
        "top_level": sorted(ConfigYAML.model_fields),
    }))
    """
)


@pytest.fixture(scope="module")
def known_keys() -> dict[str, set[str]]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run(
        [sys.executable, "-c", KNOWN_KEYS_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    return {k: set(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def unknown_keys(cfg: dict[str, Any], known: dict[str, set[str]]) -> list[str]:
    bad = [f"(top level).{k}" for k in cfg if k not in known["top_level"]]
    for section in ("router_settings", "general_settings"):
        bad += [f"{section}.{k}" for k in cfg.get(section, {}) if k not in known[section]]
    for entry in cfg["model_list"]:
        for section in ("litellm_params", "model_info"):
            where = f"{entry['model_name']}.{section}"
            bad += [f"{where}.{k}" for k in entry.get(section, {}) if k not in known[section]]
    return bad


def test_every_committed_pair_has_its_route_and_group_entry() -> None:
    """Whatever deployments.yaml holds: litellm/config.yaml routes each model x GPU to its
    app's endpoint, and each model's group holds one entry per GPU serving it."""
    plan = load_plan(ROOT / "deployments.yaml")
    cfg = yaml.safe_load((ROOT / "litellm" / "config.yaml").read_text())
    for d in plan.deployments:
        (route,) = entries(cfg, d.route)
        app = plan.app_for(d.gpu.key, d.model.key)
        assert route["litellm_params"]["api_base"] == with_v1(app.url), d.route
        assert route["litellm_params"]["model"] == f"hosted_vllm/{d.model.served_name}"
    for model in plan.models:
        served = [d for d in plan.deployments if d.model.key == model.key]
        assert len(entries(cfg, model.key)) == len(served), model.key
    names = {e["model_name"] for e in cfg["model_list"]}
    assert names == {d.route for d in plan.deployments} | {m.key for m in plan.models}


def test_every_key_is_one_litellm_reads(known_keys) -> None:
    cfg = yaml.safe_load((ROOT / "litellm" / "config.yaml").read_text())
    assert unknown_keys(cfg, known_keys) == []


def test_the_key_check_catches_a_typo(known_keys) -> None:
    cfg = yaml.safe_load((ROOT / "litellm" / "config.yaml").read_text())
    cfg["model_list"][0]["litellm_params"]["stream_timout"] = 600
    cfg["router_settings"]["num_retry"] = 1
    cfg["general_settings"]["background_health_check"] = False
    cfg["model_list"][0]["model_info"]["supports_visoin"] = True
    assert len(unknown_keys(cfg, known_keys)) == 4


# --- the proxy wrapper -------------------------------------------------------------------

GOOD_ENV = {"VLLM_API_KEY": "k-123", "LITELLM_MASTER_KEY": "sk-test-abc"}


def messages(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return exc.value.render()


def test_proxy_refuses_missing_variables(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("VLLM_API_KEY=\n")
    with pytest.raises(ConfigError) as exc:
        prepare(ROOT / "litellm" / "config.yaml", env_file, environ={})
    text = messages(exc)
    assert "VLLM_API_KEY: not set" in text and "LITELLM_MASTER_KEY: not set" in text


def test_proxy_refuses_the_example_file_and_litellm_example_key(tmp_path) -> None:
    with pytest.raises(ConfigError) as exc:
        prepare(ROOT / "litellm" / "config.yaml", ROOT / "litellm" / ".env.example", environ={})
    assert messages(exc).count("still the placeholder") == len(REQUIRED)
    env = {**GOOD_ENV, "LITELLM_MASTER_KEY": "sk-1234"}
    with pytest.raises(ConfigError) as exc:
        prepare(ROOT / "litellm" / "config.yaml", tmp_path / "none", environ=env)
    assert "public example key" in messages(exc)


def test_proxy_without_env_file_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(ConfigError) as exc:
        prepare(ROOT / "litellm" / "config.yaml", tmp_path / ".env", environ={})
    assert "cp litellm/.env.example" in messages(exc)


def test_proxy_command_and_environment(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport VLLM_API_KEY=\"from-file\"\nLITELLM_MASTER_KEY='sk-file'\n"
    )
    assert read_env_file(env_file) == {"VLLM_API_KEY": "from-file", "LITELLM_MASTER_KEY": "sk-file"}
    launch = prepare(
        ROOT / "litellm" / "config.yaml", env_file, port=4010, environ={"VLLM_API_KEY": "shell"}
    )
    assert launch.env["VLLM_API_KEY"] == "shell"  # exported wins, as with docker compose
    assert launch.env["LITELLM_MASTER_KEY"] == "sk-file"
    assert launch.env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert Path(launch.argv[0]).name == "litellm" and Path(launch.argv[0]).is_file()
    assert launch.argv[1:] == [
        "--config",
        str(ROOT / "litellm" / "config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        "4010",
    ]


def test_mvgen_proxy_prints_problems_not_a_traceback(tmp_path) -> None:
    env = {"VLLM_API_KEY": "", "LITELLM_MASTER_KEY": ""}
    result = run_cli("proxy", "--env-file", str(tmp_path / "missing"), "--check", env=env)
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "cp litellm/.env.example" in result.output


def test_mvgen_proxy_check(tmp_path) -> None:
    result = run_cli("proxy", "--env-file", str(tmp_path / "none"), "--check", env=GOOD_ENV)
    assert result.exit_code == 0, result.output
    assert "--config litellm/config.yaml --host 127.0.0.1 --port 4000" in result.output


# --- mvgen env ---------------------------------------------------------------------------


def test_env_for_a_gpu_endpoint_never_prints_the_secret(write_config) -> None:
    env = {"VLLM_API_KEY": "super-secret-value", "LITELLM_MASTER_KEY": "sk-secret-master"}
    result = run_cli("env", "--config", str(write_config()), "--gpu", "h100", env=env)
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert lines == [
        "LLM_BASE_URL=https://acme--vllm-h100-serve.modal.run/v1",
        f"LLM_API_KEY={PLACEHOLDER}",
    ]
    assert "super-secret" not in result.output and "sk-secret" not in result.output


def test_env_for_the_proxy(write_config) -> None:
    result = run_cli("env", "--config", str(write_config()), "--proxy", "--gpu", "l40s")
    assert result.exit_code == 0
    assert "LLM_BASE_URL=http://localhost:4000/v1" in result.output
    assert "gemma-3-12b-l40s" in result.output and "LITELLM_MASTER_KEY" in result.output


def test_env_with_a_wrong_gpu_names_the_choices(write_config) -> None:
    result = run_cli("env", "--config", str(write_config()), "--gpu", "h10")
    assert result.exit_code == 2
    assert "choose one of: l40s, h100" in result.output and "did you mean 'h100'?" in result.output
    result = run_cli("env", "--config", str(write_config()))
    assert result.exit_code == 2 and "--gpu: required" in result.output


def test_env_in_legacy_mode_needs_a_model(write_config) -> None:
    config = write_config(edit(BASE_CONFIG, "mode: gpu", "mode: legacy"))
    result = run_cli("env", "--config", str(config), "--gpu", "h100")
    assert result.exit_code == 2 and "choose one of: gemma-3-12b, qwen3-vl-30b" in result.output
    result = run_cli("env", "--config", str(config), "--gpu", "h100", "--model", "gemma-3-12b")
    assert "LLM_BASE_URL=https://acme--vllm-gemma-3-12b-h100-serve.modal.run/v1" in result.output


# --- Docker and make (Docker itself does not run here: structure only) ----------------------


def test_docker_compose_structure() -> None:
    compose = yaml.safe_load((ROOT / "litellm" / "docker-compose.yml").read_text())
    service = compose["services"]["litellm"]
    from importlib.metadata import version

    assert service["image"] == f"ghcr.io/berriai/litellm:v{version('litellm')}"
    assert "./config.yaml:/app/config.yaml:ro" in service["volumes"]
    assert service["env_file"] == ".env"
    assert service["command"][:2] == ["--config", "/app/config.yaml"]
    assert any(p.endswith("4000:4000") for p in service["ports"])
    assert "/health/liveliness" in " ".join(service["healthcheck"]["test"])
    assert "/health'" not in " ".join(service["healthcheck"]["test"])  # that one wakes GPUs


def test_env_example_lists_the_required_variables() -> None:
    values = read_env_file(ROOT / "litellm" / ".env.example")
    assert values == {name: PLACEHOLDER for name in REQUIRED}


def test_make_proxy_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nproxy: .venv/.synced-proxy ## " in makefile  # installs LiteLLM, as check does
    assert any(
        line.startswith(".PHONY:") and "proxy" in line.split() for line in makefile.splitlines()
    )
    assert "litellm/.env" in makefile.split("\nproxy:")[1].split("\n\n")[0]
