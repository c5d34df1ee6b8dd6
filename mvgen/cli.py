"""The `mvgen` command. Thin: each command loads the Plan and hands it to one module.

Heavy modules are imported inside commands so `mvgen --help` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from mvgen.errors import ConfigError

EXIT_CONFIG = 2  # the config is wrong: nothing was written or deployed


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("deployments.yaml"),
        show_default=True,
        help="The deployments file to read.",
    )(f)


def friendly_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """Config problems print as a list and exit 2; never a traceback."""

    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ConfigError as exc:
            click.echo(exc.render(), err=True)
            sys.exit(EXIT_CONFIG)

    return wrapper


def load(config_path: Path) -> Any:
    from mvgen.config import load_plan

    plan = load_plan(config_path)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    return plan


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mvgen")
def main() -> None:
    """Generate Modal apps serving vLLM models, and a LiteLLM config, from one
    deployments.yaml."""


@main.command()
@config_option
@friendly_errors
def validate(config_path: Path) -> None:
    """Check the config against the schema and the rules a schema cannot express."""
    plan = load(config_path)
    pairs = len(plan.deployments)
    click.echo(
        f"{config_path}: ok ({plan.mode} mode, {len(plan.models)} models, "
        f"{len(plan.gpus)} GPUs, {pairs} model x GPU pairs, {len(plan.apps)} apps, "
        f"{plan.endpoints_needed}/{plan.endpoint_limit} web endpoints)"
    )


@main.command()
@config_option
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Write generated/ and litellm/ under this directory.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file is stale.")
@click.option(
    "--api-base",
    "api_bases",
    multiple=True,
    metavar="GPU=URL",
    help="Point the LiteLLM routes of one GPU (or app) at another URL, e.g. a local "
    "gateway in tests. Repeatable.",
)
@friendly_errors
def render(config_path: Path, output_dir: Path, check: bool, api_bases: tuple[str, ...]) -> None:
    """Render generated/*.py and litellm/config.yaml from the config."""
    from mvgen.render import plan_changes, render_files, write_files

    plan = load(config_path)
    files = render_files(plan, api_bases=_parse_pairs(api_bases, "--api-base"))
    if check:
        stale = [c for c in plan_changes(files, output_dir) if c.kind != "unchanged"]
        for change in stale:
            click.echo(f"stale: {change.path} would be {change.kind}", err=True)
        if stale:
            click.echo("run `make render` and commit the result", err=True)
            sys.exit(1)
        click.echo(f"up to date: {len(files)} generated files")
        return
    changes = write_files(files, output_dir)
    for change in changes:
        if change.kind != "unchanged":
            click.echo(f"{change.kind:>9}  {change.path}")
    counts = {k: sum(c.kind == k for c in changes) for k in ("added", "changed", "removed")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no changes"
    click.echo(f"rendered {len(files)} files into {output_dir}: {summary}")


@main.command(name="list")
@config_option
@friendly_errors
def list_apps(config_path: Path) -> None:
    """Show the apps, their GPUs, models and endpoint URLs."""
    from mvgen.report import apps_table

    plan = load(config_path)
    apps_table(plan)


def _parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        out[key] = value
    return out


@main.command()
@click.option(
    "--litellm-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("litellm/config.yaml"),
    show_default=True,
    help="The generated LiteLLM config.",
)
@click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("litellm/.env"),
    show_default=True,
    help="VLLM_API_KEY and LITELLM_MASTER_KEY; exported variables win over it.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=4000, show_default=True)
@click.option("--check", is_flag=True, help="Check variables and files, print the command, exit.")
@friendly_errors
def proxy(litellm_config: Path, env_file: Path, host: str, port: int, check: bool) -> None:
    """Run the LiteLLM proxy (without Docker) in front of the endpoints."""
    from mvgen import proxy as litellm_proxy

    launch = litellm_proxy.prepare(litellm_config, env_file, host=host, port=port)
    click.echo(" ".join(launch.argv), err=True)
    if not check:
        litellm_proxy.run(launch)


@main.command(name="env")
@config_option
@click.option("--gpu", help="GPU short name whose endpoint the client should use.")
@click.option("--model", help="Model short name (needed in legacy mode).")
@click.option("--proxy", "use_proxy", is_flag=True, help="Point the client at the LiteLLM proxy.")
@friendly_errors
def client_env(config_path: Path, gpu: str | None, model: str | None, use_proxy: bool) -> None:
    """Print .env lines (LLM_BASE_URL, LLM_API_KEY placeholder) for clients like dex-bench."""
    from mvgen.clientenv import client_env as env_lines

    plan = load(config_path)
    for line in env_lines(plan, gpu, proxy=use_proxy, model=model):
        click.echo(line)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON for machines.")
@click.option("--diff", "with_diff", is_flag=True, help="Show what `make render` would change.")
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Compare against generated/ and litellm/ under this directory.",
)
@click.option(
    "--burst-minutes",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Minutes of use in one burst from zero, cold start included, for the burst cost.",
)
@friendly_errors
def plan(
    config_path: Path, as_json: bool, with_diff: bool, output_dir: Path, burst_minutes: float
) -> None:
    """Show GPU memory fit, cost, endpoints and what a render would change; exit 1 if
    the committed files do not match the config."""
    import json

    from mvgen.planview import build_report, print_report, to_json

    report = build_report(
        load(config_path), output_dir, burst_minutes=burst_minutes, with_diff=with_diff
    )
    if as_json:
        click.echo(json.dumps(to_json(report), indent=2))
    else:
        print_report(report)
    if report.failures:
        sys.exit(1)
