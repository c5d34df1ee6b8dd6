"""The LiteLLM proxy config as plain data, for templates/litellm_config.yaml.j2.

Two kinds of model_list entries:
- routes, `<model>-<gpu>`: exactly one GPU's endpoint, for benchmarks and pinning;
- groups, `<model>`: one entry per GPU under the same model_name, each with an `order`.
A LoRA adapter gets both too, `<adapter>-<gpu>` and `<adapter>`, on the GPUs that load it:
the base model's endpoints, with the adapter's name as the model vLLM is sent.
  LiteLLM 1.108.7 sends a request to the lowest order that is not cooling down, and on a
  failure walks the higher orders within the same request (router.py,
  `Router.async_function_with_fallbacks_common_utils`, "ORDER-BASED FALLBACKS").

Every key written here is one LiteLLM reads: an unknown key in `litellm_params` would
be forwarded to vLLM as a request field. tests/test_litellm_config.py checks them
against the installed LiteLLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mvgen.errors import ConfigError, Problem, did_you_mean
from mvgen.plan import Adapter, App, Deployment, Model, Plan
from mvgen.workspace import missing_problem

VLLM_KEY = "os.environ/VLLM_API_KEY"  # LiteLLM reads the value from the environment
MASTER_KEY = "os.environ/LITELLM_MASTER_KEY"
PROVIDER = "hosted_vllm"  # LiteLLM's provider for an OpenAI-compatible vLLM server


def litellm_config(plan: Plan, api_bases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Routes, groups and settings for the template.

    `api_bases` replaces endpoint URLs by GPU short name (or app name): tests point the
    real proxy at local gateways this way, without editing the generated file.
    """
    bases = _api_bases(plan, api_bases or {})
    routes = [_entry(d.route, d, bases[_key(d)], plan) for d in plan.deployments]
    routes += [
        _entry(f"{a.name}-{d.gpu.key}", d, bases[_key(d)], plan, adapter=a)
        for d in plan.deployments
        for a in d.adapters
    ]
    groups = []
    for model in plan.models:
        ordered = group_order(plan, model)
        if not ordered:
            continue
        why = "litellm_order first" if model.litellm_order else "cheapest first"
        groups.append(_group(model.key, ordered, why, bases, plan))
        for adapter in model.adapters:
            mine = [d for d in ordered if adapter in d.adapters]
            groups.append(_group(adapter.name, mine, f"{model.key}'s order", bases, plan, adapter))
    largest = max((len(g["deployments"]) for g in groups), default=1)
    return {
        "routes": sorted(routes, key=lambda r: r["model_name"]),
        "groups": groups,
        "router_settings": {
            # Per group, not per GPU: each retry may be another cold start.
            "num_retries": plan.litellm.num_retries,
            # One order-based fallback per further GPU in the largest group.
            "max_fallbacks": max(largest - 1, 0),
        },
        "general_settings": {
            "master_key": MASTER_KEY,
            # A health check sends a real generation: it would wake every GPU.
            "background_health_checks": False,
            # Else the proxy GETs /v1/models from every deployment at start and every
            # 300 s to learn token limits (model_info has them), keeping gateways awake.
            "disable_model_info_refresh": True,
        },
    }


def _group(
    name: str,
    ordered: list[Deployment],
    why: str,
    bases: Mapping[tuple[str, str], str],
    plan: Plan,
    adapter: Adapter | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "gpus": [d.gpu.key for d in ordered],
        "why": why,
        "deployments": [
            _entry(name, d, bases[_key(d)], plan, order=i, adapter=adapter)
            for i, d in enumerate(ordered, start=1)
        ],
    }


def group_order(plan: Plan, model: Model) -> list[Deployment]:
    """The model's deployments in failover order: `litellm_order` first, in its order,
    then the rest cheapest first (catalog $/hour x GPU count; unpriced GPUs last, in
    file order)."""
    mine = [d for d in plan.deployments if d.model.key == model.key]
    by_gpu = {d.gpu.key: d for d in mine}
    explicit = [by_gpu[g] for g in model.litellm_order if g in by_gpu]
    rest = [d for d in mine if d.gpu.key not in model.litellm_order]
    file_order = [g.key for g in plan.gpus]
    rest.sort(key=lambda d: (*_price_key(d), file_order.index(d.gpu.key)))
    return explicit + rest


def _price_key(d: Deployment) -> tuple[bool, float]:
    price = d.gpu.type.usd_per_hour
    return (price is None, (price or 0.0) * d.settings.gpu_count)


def _entry(
    name: str,
    d: Deployment,
    api_base: str,
    plan: Plan,
    order: int | None = None,
    adapter: Adapter | None = None,
) -> dict[str, Any]:
    """One model_list entry. For an adapter, the base's endpoint and the adapter's name:
    LiteLLM sends it as "model", and the gateway routes it to the base model's pool."""
    served = adapter.name if adapter is not None else d.model.served_name
    params: dict[str, Any] = {
        "model": f"{PROVIDER}/{served}",
        "api_base": api_base,
        "api_key": VLLM_KEY,
    }
    if order is not None:
        params["order"] = order
    # Both long enough for a cold start; stream_timeout bounds the wait for the first chunk.
    params["timeout"] = plan.litellm.timeout
    params["stream_timeout"] = plan.litellm.stream_timeout
    return {"model_name": name, "litellm_params": params, "model_info": _model_info(d)}


# model_info.mode by kind (litellm/types/router.py ModelGroupInfo.mode). It does not route:
# the endpoint a client calls does. It labels the model in LiteLLM's listings and picks the
# call a health check makes (mvgen leaves background health checks off). hosted_vllm calls
# <api_base>/embeddings and <api_base>/rerank (llms/hosted_vllm/embedding and rerank
# transformation.py get_complete_url): /v1/embeddings and /v1/rerank on the gateway.
MODES = {"chat": "chat", "embed": "embedding", "rerank": "rerank"}


def _model_info(d: Deployment) -> dict[str, Any]:
    info: dict[str, Any] = {
        "mode": MODES[d.model.kind],
        "max_input_tokens": d.settings.max_model_len,
    }
    if d.model.pooling:
        return info  # vision and function calling are chat capabilities
    if d.model.architecture is not None:
        info["supports_vision"] = d.model.architecture.vision
    info["supports_function_calling"] = d.model.tool_parser is not None
    return info


def _key(d: Deployment) -> tuple[str, str]:
    return (d.model.key, d.gpu.key)


def _api_bases(plan: Plan, overrides: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """The `/v1` base URL of every model x GPU, from its app's endpoint."""
    known = [g.key for g in plan.gpus] + [a.name for a in plan.apps]
    problems = [
        Problem(
            "--api-base",
            f"{name!r} is neither a GPU nor an app; GPUs: {', '.join(g.key for g in plan.gpus)}",
            hint=f"did you mean {near!r}?" if (near := did_you_mean(name, known)) else None,
        )
        for name in overrides
        if name not in known
    ]
    if problems:
        raise ConfigError(problems, plan.source)
    return {_key(d): _api_base(plan, app, overrides) for app in plan.apps for d in app.deployments}


def _api_base(plan: Plan, app: App, overrides: Mapping[str, str]) -> str:
    base = overrides.get(app.gpu.key) or overrides.get(app.name) or app.url
    if base is None:  # no workspace: never write https://None--...
        raise ConfigError([missing_problem(live=False)], plan.source)
    return with_v1(base)


def with_v1(base: str) -> str:
    """LiteLLM appends /chat/completions to api_base, so it must end in /v1."""
    base = base.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"
