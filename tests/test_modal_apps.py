"""Every generated app, imported under the real `modal` package with no network.

`Function.info()` shows GPUs, timeouts, concurrency, volumes, secrets, web endpoints and
methods. It does not show scaling settings (scaledown_window, min/buffer containers), so
those are read from the decorator keywords in the source.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import modal
import pytest
from conftest import BASE_CONFIG, ROOT, SEED_CONFIG, run_cli

from mvgen.config import load_plan
from mvgen.plan import HF_CACHE, VLLM_CACHE, App, Plan
from mvgen.render import (
    GATEWAY_CPU,
    GATEWAY_CPU_PER_TOKEN,
    GATEWAY_MAX_INPUTS,
    GATEWAY_TARGET_INPUTS,
    GATEWAY_TOKENS_PER_S,
)
from mvgen.warmup import HOLD_FUNCTION, HOLD_TIMEOUT


def import_app(path: Path) -> ModuleType:
    name = f"generated_{path.parent.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # modal looks classes up by module
    spec.loader.exec_module(module)
    return module


def modal_objects(module: ModuleType) -> tuple[dict[str, modal.Function], dict[str, modal.Cls]]:
    functions = {k: v for k, v in vars(module).items() if isinstance(v, modal.Function)}
    classes = {k: v for k, v in vars(module).items() if isinstance(v, modal.Cls)}
    return functions, classes


def class_info(cls: modal.Cls):
    # A class runs as one service function; modal has no public accessor for it offline.
    return cls._get_class_service_function().info()


def decorator_keywords(path: Path, name: str) -> dict[str, object]:
    """Keyword arguments of the `@app.function(...)`/`@app.cls(...)` above `name`."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") in (
                    "function",
                    "cls",
                ):
                    return {kw.arg: _literal(kw.value) for kw in deco.keywords}
    raise AssertionError(f"no app decorator on {name} in {path}")


def pool_method_kinds(path: Path, class_name: str) -> dict[str, str]:
    """How each `@modal.method` of a class is written: "async def", "def", or with
    "generator" appended when its body yields or the decorator says is_generator."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    kinds = {}
    for node in cls.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        methods = [d for d in node.decorator_list if "modal.method" in ast.unparse(d)]
        if not methods:
            continue
        kind = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        yields = any(isinstance(n, ast.Yield | ast.YieldFrom) for n in ast.walk(node))
        if yields or "is_generator=True" in ast.unparse(methods[0]):
            kind += " generator"
        kinds[node.name] = kind
    return kinds


def _literal(node: ast.AST) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def ready_timeouts(path: Path, name: str) -> list[int]:
    """Every `ready_timeout=` passed inside the class or function `name`."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if getattr(n, "name", None) == name)
    return [
        ast.literal_eval(kw.value)
        for call in ast.walk(node)
        if isinstance(call, ast.Call)
        for kw in call.keywords
        if kw.arg == "ready_timeout"
    ]


def check_shared_objects(plan: Plan, module: ModuleType) -> None:
    """The start-failure Dict, the secrets' variable names, and the container stop."""
    assert isinstance(module.start_failures, modal.Dict)
    assert module.start_failures.name == plan.start_failures_dict
    assert module.HF_TOKEN_ENV == plan.hf_secret.key
    assert module.API_KEY_ENV == plan.api_key_secret.key
    # Wired to modal's graceful stop, which refuses to run outside a container.
    with pytest.raises(RuntimeError, match="within a Modal container"):
        module.stop_this_container()


def web_endpoints(functions: dict, classes: dict) -> list[str]:
    found = [k for k, f in functions.items() if f.info().web_info is not None]
    found += [k for k, c in classes.items() if class_info(c).web_info is not None]
    return found


def secret_names(info) -> set[str]:
    return {s.split("'")[1] for s in info.secrets}


def check_gpu_app(plan: Plan, app: App, path: Path) -> None:
    module = import_app(path)
    functions, classes = modal_objects(module)
    assert module.app.name == app.name
    assert list(functions) == ["serve", *warm_function_names(plan, app)]
    assert web_endpoints(functions, classes) == ["serve"]
    assert sorted(classes) == sorted(p.class_name for p in app.pools)
    check_warm_functions(plan, app, functions)

    gateway = functions["serve"].info()
    assert gateway.gpus == []  # the gateway never holds a GPU
    assert secret_names(gateway) == {plan.api_key_secret.name}
    check_gateway_size(gateway)
    assert gateway.web_info.unauthenticated  # our Bearer check, not Modal's proxy auth
    assert gateway.startup_timeout < 150

    for pool in app.pools:
        info = class_info(classes[pool.class_name])
        s = pool.settings
        gpu_type, _, count = pool.gpu_spec.partition(":")
        assert info.gpus == [(gpu_type, int(count or 1))]
        # vLLM's 2 + N physical cores and one for the methods relaying its tokens.
        assert info.cpu == 3 + s.gpu_count
        assert info.method_names == ["request", "stream"]
        # The gateway spawns both methods so it can cancel them; modal refuses to spawn
        # a generator (modal/_functions.py, Function.spawn).
        assert pool_method_kinds(path, pool.class_name) == {
            "request": "async def",
            "stream": "async def",
        }
        assert info.timeout == s.timeout
        assert info.startup_timeout == s.startup_timeout
        assert info.concurrency_info.max_inputs == s.max_inputs
        assert {p: v.name for p, v in info.volumes.items()} == {
            HF_CACHE: plan.hf_volume,
            VLLM_CACHE: plan.vllm_volume,
        }
        assert secret_names(info) == {plan.hf_secret.name}
        keywords = decorator_keywords(path, pool.class_name)
        assert keywords["scaledown_window"] == s.scaledown_window
        assert keywords["min_containers"] == s.min_containers
        assert keywords["buffer_containers"] == s.buffer_containers

    served = {key: spec["served_name"] for key, spec in module.MODELS.items()}
    assert served == {d.model.key: d.model.served_name for d in app.deployments}
    check_shared_objects(plan, module)
    for pool in app.pools:
        # vLLM's wait ends before Modal's limit, so our error (with its cause) comes first.
        (ready,) = ready_timeouts(path, pool.class_name)
        assert 0 < ready < class_info(classes[pool.class_name]).startup_timeout


def check_gateway_size(gateway) -> None:
    """cpu= and concurrency as modal records them, and the sizing they come from
    (docs/gateway.md): at max_inputs streams of the assumed rate the gateway's Python,
    one vCPU of work at most (the GIL), still has room, and Modal adds containers at
    target_inputs, before that."""
    assert gateway.cpu == GATEWAY_CPU >= 0.5  # Modal counts physical cores: 2 vCPUs each
    concurrency = gateway.concurrency_info
    assert (concurrency.max_inputs, concurrency.target_inputs) == (
        GATEWAY_MAX_INPUTS,
        GATEWAY_TARGET_INPUTS,
    )
    per_stream = GATEWAY_TOKENS_PER_S * GATEWAY_CPU_PER_TOKEN  # vCPUs
    assert 1 <= concurrency.target_inputs < concurrency.max_inputs
    assert concurrency.target_inputs * per_stream <= 0.6
    assert concurrency.max_inputs * per_stream <= 0.9


def warm_function_names(plan: Plan, app: App) -> list[str]:
    """`warm_hold` for `mvgen warm`, then a start and an end per `warm:` entry of the app."""
    names = [HOLD_FUNCTION]
    for entry in (e for e in plan.warm if e.app == app.name):
        names += [f"warm_{entry.index}_start", f"warm_{entry.index}_end"]
    return names


def check_warm_functions(plan: Plan, app: App, functions: dict[str, modal.Function]) -> None:
    """CPU-only functions; each entry's cron schedules as Modal records them."""
    hold = functions[HOLD_FUNCTION].info()
    assert (hold.gpus, hold.schedule, hold.timeout) == ([], None, HOLD_TIMEOUT)
    for entry in (e for e in plan.warm if e.app == app.name):
        start = functions[f"warm_{entry.index}_start"].info()
        end = functions[f"warm_{entry.index}_end"].info()
        assert start.schedule == f"Cron({entry.cron!r}, {entry.timezone})"
        assert end.schedule == f"Cron({entry.end_cron!r}, {entry.timezone})"
        assert start.gpus == end.gpus == []


def check_legacy_app(plan: Plan, app: App, path: Path) -> None:
    module = import_app(path)
    functions, classes = modal_objects(module)
    (deployment,) = app.deployments
    assert module.app.name == app.name
    assert not classes
    assert web_endpoints(functions, classes) == ["serve"]
    info = functions["serve"].info()
    gpu_type, _, count = deployment.gpu_spec.partition(":")
    assert info.gpus == [(gpu_type, int(count or 1))]
    assert secret_names(info) == {plan.hf_secret.name, plan.api_key_secret.name}
    assert set(info.volumes) == {HF_CACHE, VLLM_CACHE}
    assert info.concurrency_info.max_inputs == deployment.settings.max_inputs
    # vLLM's 2 + N physical cores and one for the gateway in the same container.
    assert info.cpu == 3 + deployment.settings.gpu_count
    assert info.startup_timeout == deployment.settings.startup_timeout
    keywords = decorator_keywords(path, "serve")
    assert keywords["scaledown_window"] == deployment.settings.scaledown_window
    check_shared_objects(plan, module)
    (ready,) = ready_timeouts(path, "serve")
    assert 0 < ready < info.startup_timeout


def check_app(plan: Plan, app: App, path: Path) -> None:
    (check_gpu_app if plan.mode == "gpu" else check_legacy_app)(plan, app, path)


def test_committed_apps_import_and_match_the_plan() -> None:
    """Whatever deployments.yaml holds: every app it plans is a generated file that the real
    modal package imports, with the functions, GPUs, secrets and volumes the Plan says."""
    plan = load_plan(ROOT / "deployments.yaml")
    assert plan.apps
    for app in plan.apps:
        check_app(plan, app, ROOT / "generated" / app.filename)


def test_every_committed_pair_has_its_app_and_vllm_command() -> None:
    """Every model x GPU of deployments.yaml is served by its app, with its own command."""
    plan = load_plan(ROOT / "deployments.yaml")
    for d in plan.deployments:
        app = plan.app_for(d.gpu.key, d.model.key)
        module = import_app(ROOT / "generated" / app.filename)
        assert module.MODELS[d.model.key]["command"] == d.vllm_command(), d.route
        if plan.mode == "gpu":
            pool = next(p for p in app.pools if d in p.deployments)
            assert isinstance(getattr(module, pool.class_name), modal.Cls), d.route


def test_one_web_endpoint_per_app_counts_to_the_plan() -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    total = 0
    for app in plan.apps:
        functions, classes = modal_objects(import_app(ROOT / "generated" / app.filename))
        total += len(web_endpoints(functions, classes))
    assert total == plan.endpoints_needed <= plan.endpoint_limit


def test_the_seed_matrix_needs_five_endpoints_in_gpu_mode() -> None:
    plan = load_plan(SEED_CONFIG)
    assert (plan.mode, len(plan.models), len(plan.gpus)) == ("gpu", 3, 5)
    assert len(plan.deployments) == 15
    assert plan.endpoints_needed == len(plan.apps) == 5


def test_legacy_apps_import(write_config, tmp_path) -> None:
    config = write_config(BASE_CONFIG.replace("mode: gpu", "mode: legacy"))
    out = tmp_path / "legacy"
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    plan = load_plan(config)
    assert len(plan.apps) == 4
    for app in plan.apps:
        check_legacy_app(plan, app, out / "generated" / app.filename)


def test_a_legacy_container_on_two_gpus_reserves_a_core_per_gpu(write_config, tmp_path) -> None:
    old = "l40s: {quantization: fp8, max_model_len: 8192}"
    text = BASE_CONFIG.replace("mode: gpu", "mode: legacy")
    config = write_config(text.replace(old, f"{old}\n      h100: {{gpu_count: 2}}"))
    out = tmp_path / "legacy"
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    plan = load_plan(config)
    two = [a for a in plan.apps if a.deployments[0].settings.gpu_count == 2]
    assert len(two) == 1
    module = import_app(out / "generated" / two[0].filename)
    assert module.serve.info().cpu == 5.0  # vLLM: API server, engine core, 2 workers; gateway
    check_legacy_app(plan, two[0], out / "generated" / two[0].filename)


def test_gpu_names_modal_accepts_reach_the_app_as_written(write_config, tmp_path) -> None:
    """Aliases such as H100! (no substitution) and lower case reach modal's own parser."""
    text = """\
    workspace: acme
    gpus:
      a10g: {type: a10g}
      h100x: {type: "H100!"}
      b200p: {type: B200+}
    models:
      tiny:
        hf_id: org/Tiny-1B
        architecture: {params_b: 1.0, layers: 16, kv_heads: 4, head_dim: 64, max_context: 8192}
        max_model_len: 8192
    """
    config = write_config(text)
    out = tmp_path / "out"
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    plan = load_plan(config)
    assert [app.gpu.type.name for app in plan.apps] == ["A10G", "H100!", "B200+"]
    for app in plan.apps:
        check_gpu_app(plan, app, out / "generated" / app.filename)


def render_with_qwen_on_h100(write_config, tmp_path, settings: str) -> tuple[Plan, App, Path]:
    """Render BASE_CONFIG with qwen3-vl-30b given `settings` on h100; the h100 app."""
    old = "l40s: {quantization: fp8, max_model_len: 8192}"
    config = write_config(BASE_CONFIG.replace(old, f"{old}\n      h100: {settings}"))
    out = tmp_path / "out"
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    plan = load_plan(config)
    return plan, plan.app_for("h100"), out


def test_per_model_settings_make_separate_pools(write_config, tmp_path) -> None:
    """Tensor parallelism and warm containers differ per model, so they get own classes."""
    plan, app, out = render_with_qwen_on_h100(
        write_config, tmp_path, "{gpu_count: 2, min_containers: 1}"
    )
    assert [p.gpu_spec for p in app.pools] == ["H100", "H100:2"]
    check_gpu_app(plan, app, out / "generated" / app.filename)
    qwen = next(d for d in app.deployments if d.model.key == "qwen3-vl-30b")
    command = qwen.vllm_command()
    assert command[command.index("--tensor-parallel-size") + 1] == "2"


@pytest.mark.parametrize("gpu", ["l40s", "h100"])
def test_vllm_command_shape(write_config, gpu: str) -> None:
    plan = load_plan(write_config())
    deployment = next(d for d in plan.app_for(gpu).deployments if d.model.key == "qwen3-vl-30b")
    cmd = deployment.vllm_command()
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen3-VL-30B-A3B-Instruct"]
    names_at = cmd.index("--served-model-name")
    assert cmd[names_at + 1 : names_at + 3] == ["Qwen/Qwen3-VL-30B-A3B-Instruct", "qwen3-vl-30b"]
    assert cmd.count("--served-model-name") == 1
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"  # vLLM never listens publicly
    assert "--enforce-eager" in cmd
    assert cmd[cmd.index("--tool-call-parser") + 1] == "hermes"
    assert "--enable-auto-tool-choice" in cmd
    expected_len = "8192" if gpu == "l40s" else "16384"
    assert cmd[cmd.index("--max-model-len") + 1] == expected_len
    assert ("--quantization" in cmd) == (gpu == "l40s")


def test_gpu_snapshot_pool(write_config, tmp_path) -> None:
    """A snapshot pool loads vLLM in sleep mode at snapshot time and wakes it on restore."""
    plan, app, out = render_with_qwen_on_h100(write_config, tmp_path, "{gpu_snapshot: true}")
    path = out / "generated" / app.filename
    check_gpu_app(plan, app, path)
    snap_pool = next(p for p in app.pools if p.settings.gpu_snapshot)
    keywords = decorator_keywords(path, snap_pool.class_name)
    assert keywords["enable_memory_snapshot"] is True
    assert keywords["experimental_options"] == {"enable_gpu_snapshot": True}
    plain = next(p for p in app.pools if not p.settings.gpu_snapshot)
    assert "enable_memory_snapshot" not in decorator_keywords(path, plain.class_name)
    module = import_app(path)
    spec = module.MODELS["qwen3-vl-30b"]
    assert "--enable-sleep-mode" in spec["command"]
    assert spec["env"] == {"VLLM_SERVER_DEV_MODE": "1"}
    assert module.MODELS["gemma-3-12b"]["env"] == {}
    snap_methods = _enter_methods(path, snap_pool.class_name)
    assert snap_methods == {"start_vllm": "snap=True", "wake_vllm": "snap=False"}


def _enter_methods(path: Path, class_name: str) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    found = {}
    for node in cls.body:
        for deco in getattr(node, "decorator_list", []):
            if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "enter":
                found[node.name] = ", ".join(ast.unparse(k) for k in deco.keywords)
    return found


@pytest.mark.parametrize("startup_timeout", [30, 31, 240, 1200, 86400])
def test_vllm_readiness_ends_before_modals_startup_timeout(
    write_config, tmp_path, startup_timeout: int
) -> None:
    config = write_config(BASE_CONFIG + f"defaults: {{startup_timeout: {startup_timeout}}}\n")
    out = tmp_path / "out"
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    plan = load_plan(config)
    app = plan.app_for("h100")
    check_gpu_app(plan, app, out / "generated" / app.filename)
    (ready,) = {d.settings.ready_timeout for d in app.deployments}
    assert startup_timeout - 60 <= ready < startup_timeout
