"""Checks a JSON Schema cannot express, run on a resolved Plan.

Each returns Problems (the config is refused) or appends warnings (it is deployed anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from mvgen.adapters import adapter_check
from mvgen.errors import Problem
from mvgen.fit import fit_check
from mvgen.loader import Lines
from mvgen.plan import Plan
from mvgen.pooling import kind_check
from mvgen.vllm_checks import vllm_options

MAX_URL_LABEL = 63  # DNS label limit; Modal cuts longer labels and appends a hash


def run(plan: Plan, lines: Lines, warnings: list[str], skip: Collection[str] = ()) -> list[Problem]:
    """Every check's problems; `skip` names checks whose findings a caller reports itself
    (`mvgen plan` shows a misfit as a failing row rather than refusing the config)."""
    problems: list[Problem] = []
    for check in CHECKS:
        if check.__name__ not in skip:
            problems += check(plan, lines, warnings)
    return problems


def unique_names(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Two models answering to one name would make routing ambiguous."""
    problems = _same_hf_id(plan, lines)
    reported = {p.path.split(".")[1] for p in problems}
    owner: dict[str, str] = {}
    for model in plan.models:
        for name in model.names:
            other = owner.setdefault(name.lower(), model.key)
            if other == model.key or (model.key in reported and name == model.hf_id):
                continue
            problems.append(
                Problem(
                    f"models.{model.key}",
                    f"name {name!r} is already claimed by models.{other} "
                    "(served_name, aliases, short name and hf_id must be unique)",
                    lines.get(("models", model.key)),
                    "give one of them a different served_name or alias",
                )
            )
    return problems


def _same_hf_id(plan: Plan, lines: Lines) -> list[Problem]:
    """hf_id is always one of a model's names, so no served_name or alias can tell two
    models with the same hf_id apart: the model is listed twice."""
    first: dict[str, str] = {}
    problems = []
    for model in plan.models:
        other = first.setdefault(model.hf_id.lower(), model.key)
        if other == model.key:
            continue
        problems.append(
            Problem(
                f"models.{model.key}.hf_id",
                f"{model.hf_id!r} is already the hf_id of models.{other}; each Hugging Face "
                "model is listed once (requests may name a model by its hf_id)",
                lines.get(("models", model.key, "hf_id")),
                f"remove one of them; settings that differ by GPU go under models.{other}.per_gpu",
            )
        )
    return problems


def app_names(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """In legacy mode `a-b` on `c` and `a` on `b-c` would both be `vllm-a-b-c`."""
    seen: dict[str, str] = {}
    problems = []
    for app in plan.apps:
        what = " + ".join(sorted({d.route for d in app.deployments}))
        if app.name in seen:
            problems.append(
                Problem(
                    "models",
                    f"app name {app.name!r} would be generated twice ({seen[app.name]} and {what})",
                    None,
                    "rename one of the models or GPUs so the names differ",
                )
            )
        seen[app.name] = what
    return problems


def url_labels(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Modal truncates labels over 63 characters, which would break our computed URLs."""
    problems = []
    for app in plan.apps:
        host = f"{plan.workspace}--{app.label}" if plan.workspace else app.label
        if len(host) > MAX_URL_LABEL:
            problems.append(
                Problem(
                    "app_prefix" if plan.mode == "gpu" else "models",
                    f"endpoint host {host!r} is {len(host)} characters; Modal allows "
                    f"{MAX_URL_LABEL} before it truncates the URL",
                    lines.get(("app_prefix",)),
                    "shorten app_prefix, the model or GPU short names, or the workspace",
                )
            )
    return problems


def tensor_parallel(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """vLLM shards attention heads across GPUs; a count it cannot shard fails at load."""
    problems = []
    for d in plan.deployments:
        count = d.settings.gpu_count
        arch = d.architecture
        if count == 1:
            continue
        if arch is None:
            warnings.append(
                f"models.{d.model.key}: gpu_count {count} on {d.gpu.key} not checked "
                "against the model's attention heads: run `make lock`, or declare architecture:"
            )
            continue
        if not arch.splits_across(count):
            fits = [n for n in range(1, 9) if arch.splits_across(n)]
            heads = f"{arch.attention_heads} attention heads and " if arch.attention_heads else ""
            problems.append(
                Problem(
                    f"models.{d.model.key}.per_gpu.{d.gpu.key}.gpu_count",
                    f"vLLM cannot shard {heads}{arch.kv_heads} KV heads over {count} GPUs",
                    _setting_line(lines, d.model.key, d.gpu.key, "gpu_count"),
                    f"use one of: {', '.join(map(str, fits))}",
                )
            )
    return problems


def context_length(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """vLLM refuses a max_model_len beyond the model's own context."""
    problems = []
    for d in plan.deployments:
        arch = d.architecture
        if arch and d.settings.max_model_len > arch.max_context:
            problems.append(
                Problem(
                    f"models.{d.model.key}.max_model_len",
                    f"{d.settings.max_model_len} on {d.gpu.key} exceeds the model's "
                    f"context of {arch.max_context} tokens",
                    _setting_line(lines, d.model.key, d.gpu.key, "max_model_len"),
                    f"set max_model_len to at most {arch.max_context}",
                )
            )
    return problems


def endpoint_budget(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    if plan.endpoints_needed <= plan.endpoint_limit:
        return []
    advice = (
        "use mode: gpu (one endpoint per GPU type)"
        if plan.mode == "legacy"
        else "use fewer GPU types"
    )
    return [
        Problem(
            "mode" if plan.mode == "legacy" else "gpus",
            f"{plan.mode} mode needs {plan.endpoints_needed} web endpoints but "
            f"endpoint_limit is {plan.endpoint_limit}",
            lines.get(("mode",)) or lines.get(("gpus",)),
            f"{advice}, serve fewer model x GPU pairs (models.<name>.gpus), or raise "
            "endpoint_limit if your Modal plan allows more",
        )
    ]


def gpu_snapshots(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Modal's GPU snapshots are single-GPU, and need the class-based pool of gpu mode."""
    problems = []
    for d in plan.deployments:
        if not d.settings.gpu_snapshot:
            continue
        path = f"models.{d.model.key}.per_gpu.{d.gpu.key}.gpu_snapshot"
        line = _setting_line(lines, d.model.key, d.gpu.key, "gpu_snapshot")
        if d.settings.gpu_count > 1:
            problems.append(
                Problem(
                    path,
                    f"GPU snapshots work on one GPU; {d.route} uses gpu_count "
                    f"{d.settings.gpu_count}",
                    line,
                    "set gpu_snapshot: false for this pair, or gpu_count: 1 on a larger GPU",
                )
            )
        if plan.mode == "legacy":
            problems.append(
                Problem(
                    path,
                    "GPU snapshots need gpu mode (a snapshot is taken in the model's own class)",
                    line,
                    "use mode: gpu, or set gpu_snapshot: false",
                )
            )
    return problems


def secret_keys(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """In legacy mode both secrets are in one container: one variable cannot hold both."""
    if plan.hf_secret.key != plan.api_key_secret.key:
        return []
    return [
        Problem(
            "secrets.api_key.key",
            f"both secrets set {plan.api_key_secret.key!r}, so the API key and the Hugging "
            "Face token would overwrite each other",
            lines.get(("secrets", "api_key", "key")) or lines.get(("secrets",)),
            "give the two secrets different key names (defaults: HF_TOKEN and API_KEY)",
        )
    ]


def _setting_line(lines: Lines, model: str, gpu: str, key: str) -> int | None:
    return (
        lines.get(("models", model, "per_gpu", gpu, key))
        or lines.get(("models", model, key))
        or lines.get(("defaults", key))
        or lines.get(("models", model))
    )


CHECKS: tuple[Callable[[Plan, Lines, list[str]], list[Problem]], ...] = (
    unique_names,
    app_names,
    url_labels,
    tensor_parallel,
    context_length,
    endpoint_budget,
    gpu_snapshots,
    vllm_options,
    secret_keys,
    adapter_check,
    kind_check,
    fit_check,
)
