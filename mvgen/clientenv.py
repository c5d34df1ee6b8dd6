"""`mvgen env`: the .env lines a client such as dex-bench needs to reach one endpoint.

LLM_BASE_URL points at one GPU's gateway, or at the LiteLLM proxy. LLM_API_KEY is
always a placeholder: the real key lives in a Modal secret or litellm/.env, and printing
it would put it in terminal scrollback and shell history.
"""

from __future__ import annotations

from mvgen.errors import ConfigError, Problem, did_you_mean
from mvgen.litellm_config import with_v1
from mvgen.plan import App, Deployment, Plan
from mvgen.proxy import PLACEHOLDER, PORT

PROXY_URL = f"http://localhost:{PORT}"


def client_env(
    plan: Plan, gpu: str | None, *, proxy: bool = False, model: str | None = None
) -> list[str]:
    """Comment lines saying what the values are, then LLM_BASE_URL and LLM_API_KEY."""
    deployments = select_deployments(plan, gpu, model, need_gpu=not proxy)
    if proxy:
        names = (
            [d.route for d in deployments] if gpu else sorted({d.model.key for d in deployments})
        )
        lines = [
            f"# The LiteLLM proxy (`make proxy`) on this machine, port {PORT}.",
            f"# Models: {', '.join(names)}",
            "# LLM_API_KEY: your LITELLM_MASTER_KEY from litellm/.env (not printed here).",
        ]
        base = PROXY_URL
    else:
        app = _app(plan, deployments[0])
        lines = [
            f"# The {deployments[0].gpu.key} gateway, Modal app {app.name}.",
            f"# Models: {', '.join(sorted({d.model.served_name for d in deployments}))}",
            f"# LLM_API_KEY: the {plan.api_key_secret.key} value of the Modal secret "
            f"{plan.api_key_secret.name} (not printed here).",
        ]
        assert app.url, "cli.py resolves the workspace first (workspace.py)"
        base = app.url
    return [*lines, f"LLM_BASE_URL={with_v1(base)}", f"LLM_API_KEY={PLACEHOLDER}"]


def select_deployments(
    plan: Plan, gpu: str | None, model: str | None, *, need_gpu: bool
) -> list[Deployment]:
    """The deployments the options pick, or a ConfigError naming the valid choices."""
    gpus = [g.key for g in plan.gpus]
    models = [m.key for m in plan.models]
    problems = []
    if gpu is None and need_gpu:
        problems.append(Problem("--gpu", f"required; choose one of: {', '.join(gpus)}"))
    elif gpu is not None and gpu not in gpus:
        problems.append(_choice_problem("--gpu", "GPU", gpu, gpus))
    if model is not None and model not in models:
        problems.append(_choice_problem("--model", "model", model, models))
    if problems:
        raise ConfigError(problems, plan.source)
    chosen = [
        d
        for d in plan.deployments
        if (gpu is None or d.gpu.key == gpu) and (model is None or d.model.key == model)
    ]
    if not chosen:
        raise ConfigError(
            [Problem("--model", f"{model!r} is not deployed on {gpu!r}")], plan.source
        )
    if plan.mode == "legacy" and need_gpu and len({_app(plan, d).name for d in chosen}) > 1:
        # Legacy mode has one endpoint per model x GPU, so a GPU alone names several.
        names = ", ".join(sorted({d.model.key for d in chosen}))
        raise ConfigError(
            [Problem("--model", f"legacy mode has one endpoint per model; choose one of: {names}")],
            plan.source,
        )
    return chosen


def _choice_problem(option: str, noun: str, value: str, choices: list[str]) -> Problem:
    near = did_you_mean(value, choices)
    return Problem(
        option,
        f"unknown {noun} {value!r}; choose one of: {', '.join(choices)}",
        hint=f"did you mean {near!r}?" if near else None,
    )


def _app(plan: Plan, d: Deployment) -> App:
    app = plan.app_for(d.gpu.key, d.model.key)
    assert app is not None, "every deployment belongs to an app"
    return app
