"""Plan -> files. Deterministic (same Plan, same bytes), atomic (all files or none),
and it prunes only files that an earlier render wrote, as listed in its manifest."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvgen import literals
from mvgen.image_lock import LOCK_DIR, UV_VERSION, lock_inputs
from mvgen.plan import HF_CACHE, VLLM_CACHE, VLLM_PORT, App, Deployment, Plan

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MANIFEST = "generated/.mvgen-manifest.json"

# What mvgen's runtime package needs in both images, pinned to the versions the tests run
# (tests/test_pins.py). With vllm==0.12.0 they resolve (fastapi 0.165 accepts starlette 1.10).
# The images install them from locks/ (`make image-lock`, mvgen/image_lock.py).
RUNTIME_PACKAGES = ("aiohttp==3.14.5", "httpx==0.28.1", "starlette==1.10.0")
# The gateway's container, sized from its measured CPU cost (docs/gateway.md, "Sizing the
# gateway container", has the arithmetic; docs/benchmarks.md the runs). Its Python holds
# the GIL, so it gets about one vCPU of work done whatever it reserves: concurrency, not
# cpu=, is what keeps one container from being its GPU pools' ceiling.
GATEWAY_CPU = 1.0  # Modal counts physical cores: 2 vCPUs, one for Python, one for the rest
GATEWAY_TOKENS_PER_S = 50  # per stream: sized for the fast end of 20-50 tokens/s
GATEWAY_CPU_PER_TOKEN = 2.5e-3  # s, gpu mode: one modal.Queue read per token, 2.1-2.7 ms
_VCPU_PER_STREAM = GATEWAY_TOKENS_PER_S * GATEWAY_CPU_PER_TOKEN  # 0.125
GATEWAY_TARGET_INPUTS = int(0.6 / _VCPU_PER_STREAM)  # 4: Modal adds containers at 60 % busy
GATEWAY_MAX_INPUTS = int(0.9 / _VCPU_PER_STREAM)  # 7: the burst while one starts, to 90 %
# A GPU container: vLLM wants 2 + N physical cores (API server, engine core, one worker per
# GPU), plus one for the Python beside it: the gateway in legacy mode; in gpu mode the
# pool's methods, which relay every token through modal's client (a queue write each).
CPU_BESIDES_GPUS = 3
GATEWAY_SCALEDOWN = 300
GATEWAY_STARTUP_TIMEOUT = 60
DEFAULT_CONFIG = "deployments.yaml"  # the Makefile's CONFIG default


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "added", "changed", "removed", "unchanged", or "kept": ours once, edited since


def render_files(plan: Plan, *, api_bases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every file a render writes, by path relative to the output directory.

    `api_bases` replaces endpoint URLs in the LiteLLM config, by GPU short name (or
    app name): tests point the real proxy at local gateways this way.
    """
    env = _environment()
    files = {}
    template = env.get_template("gpu_app.py.j2" if plan.mode == "gpu" else "model_app.py.j2")
    for app in plan.apps:
        files[f"generated/{app.filename}"] = template.render(**_app_context(plan, app))
    litellm = env.get_template("litellm_config.yaml.j2")
    files["litellm/config.yaml"] = litellm.render(**_litellm_context(plan, api_bases or {}))
    return dict(sorted(files.items()))


def _environment() -> Any:
    import jinja2  # imported lazily: `mvgen --help` should not pay for it

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["py"] = literals.py
    env.filters["yaml"] = literals.yaml
    return env


def _app_context(plan: Plan, app: App) -> dict[str, Any]:
    deployments = app.deployments
    return {
        "plan": plan,
        "app": app,
        "url_example": app.url or f"https://<workspace>--{app.label}.modal.run",
        "deploy_command": deploy_command(plan, app),
        "config_arg": config_arg(plan),
        "any_snapshot": any(d.settings.gpu_snapshot for d in deployments),
        "any_pooling": any(d.model.pooling for d in deployments),
        "models_literal": literals.py(_models_literal(app)),
        "vllm_port": VLLM_PORT,
        "hf_cache": HF_CACHE,
        "vllm_cache": VLLM_CACHE,
        "locks": {i.image: Path(i.path).name for i in lock_inputs(plan, RUNTIME_PACKAGES)},
        "lock_dir": LOCK_DIR,
        "uv_version": UV_VERSION,
        "gateway": {
            "scaledown_window": GATEWAY_SCALEDOWN,
            "timeout": max(d.settings.timeout for d in deployments),
            "max_inputs": GATEWAY_MAX_INPUTS,
            "target_inputs": GATEWAY_TARGET_INPUTS,
            "cpu": GATEWAY_CPU,
            "startup_timeout": GATEWAY_STARTUP_TIMEOUT,
        },
        "legacy_cpu": gpu_container_cpu(deployments[0].settings.gpu_count),
        "pool_cpu": {
            pool.class_name: gpu_container_cpu(pool.settings.gpu_count) for pool in app.pools
        },
        "pool_comments": {
            pool.class_name: _wrap_comment(
                "Models: " + ", ".join(d.model.key for d in pool.deployments) + "."
            )
            for pool in app.pools
        },
        "deployment": deployments[0],
        **_warm_context(plan, app),
    }


def _warm_context(plan: Plan, app: App) -> dict[str, Any]:
    from mvgen.warmup import HOLD_FUNCTION, HOLD_TIMEOUT, SCHEDULED_TIMEOUT

    return {
        "warm_entries": [e for e in plan.warm if e.app == app.name],
        "warm": {
            "hold_function": HOLD_FUNCTION,
            "hold_timeout": HOLD_TIMEOUT,
            "scheduled_timeout": SCHEDULED_TIMEOUT,
            "pool_of": {d.model.key: p.class_name for p in app.pools for d in p.deployments},
            "comments": {e.index: _warm_comment(e) for e in plan.warm if e.app == app.name},
        },
    }


def _warm_comment(entry: Any) -> list[str]:
    containers = f"{entry.min_containers} container{'s' if entry.min_containers != 1 else ''}"
    return _wrap_comment(
        f"{entry.path}: {containers} of {entry.model} up from `{entry.cron}` until "
        f"{entry.until} ({entry.timezone}), then {entry.static_min} again."
    )


def gpu_container_cpu(gpu_count: int) -> float:
    """Physical cores for a container running vLLM on `gpu_count` GPUs: vLLM's 2 + N and
    one for mvgen's Python beside it
    (https://docs.vllm.ai/en/latest/configuration/optimization/#cpu-resources-for-gpu-deployments)."""
    return float(CPU_BESIDES_GPUS + gpu_count)


def config_arg(plan: Plan) -> str:
    """` CONFIG=<file>` for make, when the config is not the Makefile's default."""
    return "" if plan.source == DEFAULT_CONFIG else f" CONFIG={plan.source}"


def deploy_command(plan: Plan, app: App) -> str:
    """How to deploy `app` from a fresh clone after the README's set-up. A bare
    `modal deploy generated/...` needs mvgen's runtime (httpx, starlette) importable
    where it runs; make runs it in the project's environment, after the preflight."""
    words = ["make", "deploy", f"GPU={app.gpu.key}"]
    if plan.mode == "legacy":
        words.append(f"MODEL={app.deployments[0].model.key}")
    return " ".join(words) + config_arg(plan)


def _models_literal(app: App) -> dict[str, Any]:
    return {d.model.key: _model_literal(d) for d in app.deployments}


def _model_literal(d: Deployment) -> dict[str, Any]:
    entry: dict[str, Any] = {"served_name": d.model.served_name, "aliases": list(d.model.aliases)}
    if d.model.pooling:  # chat is the default: a chat model's entry does not say it
        entry["kind"] = d.model.kind
    entry.update(command=d.vllm_command(), env=d.vllm_env)
    if d.adapters:  # the names requests may use, and what the pool fetches at start
        entry["adapters"] = [
            {"name": a.name, "root": a.source, "download": a.download()} for a in d.adapters
        ]
    return entry


def _wrap_comment(text: str) -> list[str]:
    return textwrap.wrap(text, width=84, break_long_words=False, break_on_hyphens=False)


def _litellm_context(plan: Plan, api_bases: Mapping[str, str]) -> dict[str, Any]:
    from mvgen.litellm_config import litellm_config

    return {"plan": plan, "config_arg": config_arg(plan), **litellm_config(plan, api_bases)}


# --- writing -------------------------------------------------------------------------


def plan_changes(files: Mapping[str, str], out_dir: Path) -> list[Change]:
    """What writing `files` under `out_dir` would add, change and remove."""
    owned = _read_manifest(out_dir)
    changes = []
    for rel, text in files.items():
        target = out_dir / rel
        if not target.exists():
            changes.append(Change(rel, "added"))
        elif target.read_text(encoding="utf-8") != text:
            changes.append(Change(rel, "changed"))
        else:
            changes.append(Change(rel, "unchanged"))
    for rel in sorted(set(owned) - set(files)):
        target = out_dir / rel
        if target.exists():
            # A file someone edited after we wrote it is no longer ours to delete.
            ours = _digest(target.read_text(encoding="utf-8")) == owned[rel]
            changes.append(Change(rel, "removed" if ours else "kept"))
    return changes


def write_files(files: Mapping[str, str], out_dir: Path) -> list[Change]:
    """Write all files or none, then prune what the previous render owned and we don't.

    Every file is first written beside its target; only when all are on disk are they
    renamed into place, so a failure part-way leaves the previous files untouched.
    """
    changes = plan_changes(files, out_dir)
    manifest = {rel: _digest(text) for rel, text in files.items()}
    staged: list[tuple[Path, Path]] = []
    try:
        for rel, text in {**files, MANIFEST: _manifest_text(manifest)}.items():
            target = out_dir / rel
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.mvgen-tmp")
            tmp.write_text(text, encoding="utf-8")
            staged.append((tmp, target))
    except OSError:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    for change in changes:
        if change.kind == "removed":
            (out_dir / change.path).unlink()
    return changes


def _read_manifest(out_dir: Path) -> dict[str, str]:
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data["files"].items()}
    except (ValueError, KeyError, AttributeError):
        return {}  # an unreadable manifest owns nothing, so nothing gets deleted


def _manifest_text(files: Mapping[str, str]) -> str:
    body = {"generated_by": "mvgen render", "files": dict(sorted(files.items()))}
    return json.dumps(body, indent=2) + "\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
