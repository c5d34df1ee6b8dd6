"""deployments.yaml -> Plan: load, check against the schema, resolve defaults, then run
the checks a schema cannot express. Every problem is collected before anything fails."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from mvgen import checks
from mvgen.adapters import max_lora_rank, read_adapters
from mvgen.catalog import (
    Architecture,
    Checkpoint,
    VisionTower,
    gpu_type,
    modal_gpu_names,
    nearest_gpu_type,
)
from mvgen.errors import ConfigError, Problem, did_you_mean, format_path
from mvgen.loader import Lines, load_yaml
from mvgen.lock import Lock, lock_path, read_lock
from mvgen.plan import (
    GATEWAY_FUNCTION,
    App,
    Deployment,
    Gpu,
    Image,
    LiteLLMSettings,
    Model,
    Plan,
    Pool,
    SecretRef,
    Settings,
    YamlPath,
)
from mvgen.schema import schema_problems

DEFAULT_CONFIG = Path("deployments.yaml")
DEFAULT_VLLM = "0.12.0"  # image.vllm's default (schema/deployments.schema.json)
SETTING_KEYS = tuple(f.name for f in fields(Settings))


def load_plan(
    path: Path = DEFAULT_CONFIG,
    *,
    skip_checks: Collection[str] = (),
    workspace: str | None = None,
) -> Plan:
    """Read and check `path` and the lock file beside it (deployments.lock.json); raise
    ConfigError listing every problem. `workspace` is used when the file sets none (the
    one Modal's profile names, see workspace.py)."""
    data, lines = load_yaml(path)
    lock = read_lock(lock_path(path))
    return build_plan(
        data, lines, source=_source(path), skip_checks=skip_checks, workspace=workspace, lock=lock
    )


def _source(path: Path) -> str:
    """How to name the config in messages and in generated files' `make ... CONFIG=`: as
    a path from the current directory (where make runs) when it is below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def build_plan(
    data: Any,
    lines: Lines | None = None,
    source: str = "deployments.yaml",
    *,
    skip_checks: Collection[str] = (),
    workspace: str | None = None,
    lock: Lock | None = None,
) -> Plan:
    """`lock` supplies each checkpoint's facts; without it every model not declaring
    `architecture:` has an unknown fit (a warning naming `make lock`)."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem("(top level)", "the file must be a mapping with gpus: and models:")],
            source,
        )
    problems = schema_problems(data, lines)
    if problems:
        raise ConfigError(problems, source)
    problems, warnings = [], []
    gpus = _gpus(data["gpus"], lines, problems)
    lock = lock or Lock()
    models = _models(data["models"], list(data["gpus"]), lock)
    deployments = _deployments(data, gpus, models, lock, lines, problems)
    plan = _assemble(data, source, gpus, models, deployments, workspace)
    if data.get("warm"):
        from mvgen.warmup import warm_entries

        warm, found = warm_entries(data["warm"], plan, data["gpus"], lines)
        plan, problems = replace(plan, warm=warm), problems + found
    problems += checks.run(plan, lines, warnings, skip_checks)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.path)), source)
    return replace(plan, warnings=tuple(warnings))


def _gpus(raw: dict[str, Any], lines: Lines, problems: list[Problem]) -> dict[str, Gpu]:
    gpus = {}
    for key, spec in raw.items():
        found = gpu_type(spec["type"])
        if found is None:
            problems.append(_unknown_gpu_type(key, spec["type"], lines))
            continue
        gpus[key] = Gpu(key, found)
    return gpus


def _unknown_gpu_type(key: str, value: str, lines: Lines) -> Problem:
    near = nearest_gpu_type(value)
    hint = f"did you mean {near!r}?" if near else None
    if near and "GB" not in near and re.search(r"\d\s*GB?$", value, re.IGNORECASE):
        hint += " Only the A100's names carry a memory size."
    return Problem(
        f"gpus.{key}.type",
        f"unknown GPU type {value!r}; Modal's types: {', '.join(modal_gpu_names())}",
        lines.get(("gpus", key, "type")),
        hint,
    )


def _models(raw: dict[str, Any], gpus: list[str], lock: Lock) -> dict[str, Model]:
    models = {}
    for key, spec in raw.items():
        hf_id = spec["hf_id"]
        served = spec.get("served_name", hf_id)
        aliases = _unique_names([key, hf_id, *spec.get("aliases", [])], exclude=served)
        facts = _facts(spec, hf_id, spec.get("revision"), lock)
        models[key] = Model(
            key=key,
            hf_id=hf_id,
            served_name=served,
            aliases=aliases,
            revision=spec.get("revision"),
            tool_parser=spec.get("tool_parser"),
            reasoning_parser=spec.get("reasoning_parser"),
            architecture=facts[1],
            litellm_order=tuple(spec.get("litellm_order", ())),
            unknown_reason=facts[2],
            # by default on every GPU the model is served on (unknown GPUs are reported once)
            adapters=read_adapters(
                key, spec, [g for g in spec.get("gpus", gpus) if g in gpus], lock
            ),
            kind=spec.get("kind", "chat"),
        )
    return models


def _unique_names(names: list[str], exclude: str) -> tuple[str, ...]:
    """Names in order, without repeats (compared case-insensitively, as requests are)."""
    seen = {exclude.lower()}
    out = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return tuple(out)


def _facts(
    spec: dict[str, Any], hf_id: str, revision: str | None, lock: Lock
) -> tuple[Checkpoint, Architecture | None, str | None]:
    """A checkpoint's facts: the lock's reading of its config.json, with `architecture:`
    taking the place of that reading when the model declares one."""
    found = lock.facts(hf_id, revision)
    checkpoint, arch, reason = Checkpoint(hf_id, revision), None, None
    if isinstance(found, str):
        reason = found
    else:
        arch, checkpoint = found
    if "architecture" in spec:
        arch, reason = declared_architecture(spec["architecture"]), None
    return checkpoint, arch, reason


def declared_architecture(raw: dict[str, Any]) -> Architecture:
    fields_ = dict(raw)
    if isinstance(fields_.get("vision_tower"), dict):
        fields_["vision_tower"] = VisionTower(**fields_["vision_tower"])
    return Architecture(**fields_)


def _deployments(
    data: dict[str, Any],
    gpus: dict[str, Gpu],
    models: dict[str, Model],
    lock: Lock,
    lines: Lines,
    problems: list[Problem],
) -> list[Deployment]:
    defaults = data.get("defaults", {})
    vllm = data.get("image", {}).get("vllm", DEFAULT_VLLM)
    out = []
    for key, model in models.items():
        spec = data["models"][key]
        wanted = spec.get("gpus", list(data["gpus"]))
        for i, gpu_key in enumerate(wanted):
            if gpu_key not in data["gpus"]:
                problems.append(_unknown_ref(("models", key, "gpus", i), gpu_key, gpus, lines))
        for gpu_key, per_gpu in spec.get("per_gpu", {}).items():
            if "revision" in per_gpu and "checkpoint" not in per_gpu:
                problems.append(
                    Problem(
                        f"models.{key}.per_gpu.{gpu_key}.revision",
                        "a per-GPU revision pins that GPU's checkpoint, and none is set",
                        lines.get(("models", key, "per_gpu", gpu_key, "revision")),
                        f"set models.{key}.revision to pin {spec['hf_id']} everywhere, or add "
                        f"checkpoint: to models.{key}.per_gpu.{gpu_key}",
                    )
                )
            if gpu_key not in data["gpus"]:
                path = ("models", key, "per_gpu", gpu_key)
                problems.append(_unknown_ref(path, gpu_key, gpus, lines))
            elif gpu_key not in wanted:
                problems.append(
                    Problem(
                        f"models.{key}.per_gpu.{gpu_key}",
                        f"settings for GPU {gpu_key!r}, which models.{key}.gpus leaves out",
                        lines.get(("models", key, "per_gpu", gpu_key)),
                        f"add {gpu_key!r} to models.{key}.gpus or remove these settings",
                    )
                )
        problems += _order_problems(key, spec.get("litellm_order", []), wanted, lines)
        for gpu_key in [g for g in data["gpus"] if g in wanted]:  # in gpus: order
            if gpu_key in gpus:
                per_gpu = spec.get("per_gpu", {}).get(gpu_key, {})
                layers = (defaults, spec, per_gpu)
                paths = (("defaults",), ("models", key), ("models", key, "per_gpu", gpu_key))
                settings = _settings(*layers)
                where = _setting_paths(zip(paths, layers, strict=True))
                d = _deployment(model, gpus[gpu_key], settings, where, spec, per_gpu, lock)
                out.append(replace(d, max_lora_rank=max_lora_rank(d.adapters, vllm)))
    return out


def _deployment(
    model: Model,
    gpu: Gpu,
    settings: Settings,
    where: tuple[dict[str, YamlPath], tuple[YamlPath, ...]],
    spec: dict[str, Any],
    per_gpu: dict[str, Any],
    lock: Lock,
) -> Deployment:
    """One model on one GPU, loading its own checkpoint there when per_gpu names one."""
    if not per_gpu.get("checkpoint"):
        checkpoint, arch, reason = _facts(spec, model.hf_id, model.revision, lock)
    else:
        checkpoint, arch, reason = _facts(
            spec, per_gpu["checkpoint"], per_gpu.get("revision"), lock
        )
    setting_paths, extra_args_paths = where
    return Deployment(
        model,
        gpu,
        settings,
        checkpoint,
        arch,
        reason,
        setting_paths=setting_paths,
        extra_args_paths=extra_args_paths,
    )


def _order_problems(model: str, order: list[str], wanted: list[str], lines: Lines) -> list[Problem]:
    """litellm_order may only name GPUs that serve the model."""
    problems = []
    for i, gpu_key in enumerate(order):
        if gpu_key in wanted:
            continue
        near = did_you_mean(gpu_key, wanted)
        problems.append(
            Problem(
                f"models.{model}.litellm_order[{i}]",
                f"GPU {gpu_key!r} does not serve {model}; its GPUs: {', '.join(wanted)}",
                lines.get(("models", model, "litellm_order", i)),
                f"did you mean {near!r}?" if near else f"add {gpu_key!r} to models.{model}.gpus",
            )
        )
    return problems


def _unknown_ref(path: tuple, value: str, gpus: dict[str, Gpu], lines: Lines) -> Problem:
    near = did_you_mean(value, gpus)
    return Problem(
        format_path(path),
        f"unknown GPU {value!r}; gpus: defines {', '.join(gpus) or '(none)'}",
        lines.get(path),
        f"did you mean {near!r}?" if near else "define it under gpus: first",
    )


def _settings(*layers: dict[str, Any]) -> Settings:
    """Merge defaults < model < per_gpu; extra_args add up instead of replacing."""
    values: dict[str, Any] = {}
    extra: list[str] = []
    for layer in layers:
        for key in SETTING_KEYS:
            if key == "extra_args":
                extra += layer.get(key, [])
            elif key in layer:
                values[key] = layer[key]
    return Settings(**values, extra_args=tuple(extra))


def _setting_paths(
    layers: Iterable[tuple[YamlPath, dict[str, Any]]],
) -> tuple[dict[str, YamlPath], tuple[YamlPath, ...]]:
    """Where each setting of a merge came from (see `_settings`), for error messages."""
    paths: dict[str, YamlPath] = {}
    extra: list[YamlPath] = []
    for base, layer in layers:
        for key in SETTING_KEYS:
            if key in layer:
                paths[key] = (*base, key)
        extra += [(*base, "extra_args", i) for i in range(len(layer.get("extra_args", [])))]
    return paths, tuple(extra)


def _assemble(
    data: dict[str, Any],
    source: str,
    gpus: dict[str, Gpu],
    models: dict[str, Model],
    deployments: list[Deployment],
    default_workspace: str | None,
) -> Plan:
    mode = data.get("mode", "gpu")
    prefix = data.get("app_prefix", "vllm")
    workspace = data.get("workspace") or default_workspace
    image = {"vllm": DEFAULT_VLLM, "base": "nvidia/cuda:12.9.0-devel-ubuntu22.04", "python": "3.12"}
    image.update(data.get("image", {}))
    secrets = data.get("secrets", {})
    volumes = data.get("volumes", {})
    return Plan(
        source=source,
        mode=mode,
        workspace=workspace,
        app_prefix=prefix,
        endpoint_limit=data.get("endpoint_limit", 8),
        image=Image(**image),
        hf_secret=SecretRef(
            **secrets.get("huggingface", {"name": "huggingface", "key": "HF_TOKEN"})
        ),
        api_key_secret=SecretRef(
            **secrets.get("api_key", {"name": "vllm-api-key", "key": "API_KEY"})
        ),
        hf_volume=volumes.get("huggingface", "huggingface-cache"),
        vllm_volume=volumes.get("vllm", "vllm-cache"),
        gpus=tuple(gpus[k] for k in data["gpus"] if k in gpus),
        models=tuple(models.values()),
        apps=tuple(_apps(mode, prefix, workspace, list(gpus.values()), deployments)),
        litellm=LiteLLMSettings(**data.get("litellm", {})),
        fit_min_sequences=data.get("fit", {}).get("min_sequences", 4),
    )


def _apps(
    mode: str, prefix: str, workspace: str | None, gpus: list[Gpu], deployments: list[Deployment]
) -> list[App]:
    apps = []
    if mode == "gpu":
        for gpu in gpus:
            mine = tuple(d for d in deployments if d.gpu.key == gpu.key)
            if mine:
                apps.append(_app(f"{prefix}-{gpu.key}", gpu, mine, workspace, _pools(mine)))
    else:
        for d in sorted(deployments, key=lambda d: (d.model.key, gpus.index(d.gpu))):
            apps.append(_app(f"{prefix}-{d.model.key}-{d.gpu.key}", d.gpu, (d,), workspace, ()))
    return apps


def _app(
    name: str,
    gpu: Gpu,
    deps: tuple[Deployment, ...],
    workspace: str | None,
    pools: tuple[Pool, ...],
) -> App:
    url = f"https://{workspace}--{name}-{GATEWAY_FUNCTION}.modal.run" if workspace else None
    return App(name=name, gpu=gpu, deployments=deps, pools=pools, url=url)


def _pools(deployments: tuple[Deployment, ...]) -> tuple[Pool, ...]:
    """Group models whose containers are configured alike into one parametrized class."""
    groups: dict[tuple, list[Deployment]] = {}
    for d in deployments:
        groups.setdefault(pool_key(d), []).append(d)
    return tuple(
        Pool("Vllm" if i == 0 else f"Vllm{i + 1}", tuple(members))
        for i, members in enumerate(groups.values())
    )


def pool_key(d: Deployment) -> tuple:
    """Container settings Modal fixes per class (everything but the vLLM command)."""
    s = d.settings
    return (
        d.gpu_spec,
        s.max_inputs,
        s.min_containers,
        s.buffer_containers,
        s.max_containers,
        s.scaledown_window,
        s.timeout,
        s.startup_timeout,
        s.gpu_snapshot,
    )
