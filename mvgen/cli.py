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
    """Never a traceback: config problems print as a list and exit 2; problems with Modal
    (its CLI missing or failing, credentials, the choice of app) as one message, exit 1."""

    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mvgen.deploy import DeployError

        try:
            return f(*args, **kwargs)
        except ConfigError as exc:
            click.echo(exc.render(), err=True)
            sys.exit(EXIT_CONFIG)
        except DeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def load(config_path: Path, skip_checks: tuple[str, ...] = ()) -> Any:
    from mvgen.config import load_plan

    plan = load_plan(config_path, skip_checks=skip_checks)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    return plan


def with_workspace(
    plan: Any, config_path: Path, skip_checks: tuple[str, ...] = (), *, live: bool
) -> Any:
    """The Plan with endpoint URLs. Without `workspace:` the Modal profile's is used, and
    said; `live` commands (url, env, test, deploy) refuse the placeholder (workspace.py)."""
    from mvgen.config import load_plan
    from mvgen.deploy import ModalCli
    from mvgen.workspace import resolve_workspace

    workspace = resolve_workspace(plan.workspace, ModalCli(), live=live)
    if plan.workspace:
        return plan
    click.echo(
        f"workspace {workspace.name!r} from {workspace.source}; set `workspace:` in "
        f"{config_path} to pin it",
        err=True,
    )
    return load_plan(config_path, skip_checks=skip_checks, workspace=workspace.name)


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
    from mvgen.image_lock import stale_locks
    from mvgen.render import RUNTIME_PACKAGES, plan_changes, render_files, write_files

    overrides = _parse_pairs(api_bases, "--api-base")
    plan = load(config_path)
    if not overrides:  # tests point every route elsewhere and need no workspace
        plan = with_workspace(plan, config_path, live=False)
    files = render_files(plan, api_bases=overrides)
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
    for problem in stale_locks(plan, RUNTIME_PACKAGES, output_dir):
        click.echo(f"warning: {problem}", err=True)
    for change in changes:
        if change.kind == "kept":
            click.echo(f"     kept  {change.path} (no longer generated, but edited by hand)")
        elif change.kind != "unchanged":
            click.echo(f"{change.kind:>9}  {change.path}")
    counts = {k: sum(c.kind == k for c in changes) for k in ("added", "changed", "removed")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no changes"
    click.echo(f"rendered {len(files)} files into {output_dir}: {summary}")


@main.command()
@config_option
@click.option(
    "--missing",
    "only_missing",
    is_flag=True,
    help="Read only checkpoints the lock lacks; when the Hub is unreachable, warn and go on.",
)
@click.option("--check", is_flag=True, help="Read nothing; exit 1 if an entry is missing.")
@friendly_errors
def lock(config_path: Path, only_missing: bool, check: bool) -> None:
    """Read each model's config.json and weight sizes from the Hugging Face Hub into the
    lock file beside the config (deployments.lock.json), which the other commands read
    offline. HF_TOKEN opens gated models; HF_ENDPOINT picks another Hub."""
    from mvgen import lock as lockfile
    from mvgen.hub import Hub, HubError, HubUnreachable
    from mvgen.loader import load_yaml
    from mvgen.schema import schema_problems

    data, lines = load_yaml(config_path)
    if not isinstance(data, dict) or schema_problems(data, lines):
        load(config_path)  # the same errors validate prints
        return
    path = lockfile.lock_path(config_path)
    current = lockfile.read_lock(path)
    refs = lockfile.wanted_checkpoints(data) + lockfile.wanted_adapters(data)
    missing = lockfile.missing_entries(current, refs)
    count = _lock_count(refs)
    if check:
        for ref in missing:
            click.echo(f"{path.name}: no entry for {ref.hf_id} ({ref.where})", err=True)
        if missing:
            click.echo(f"run `{lockfile.LOCK_COMMAND}` (needs the Hugging Face Hub)", err=True)
            sys.exit(1)
        click.echo(f"{path.name}: up to date ({count})")
        return
    hub = Hub.from_env()
    try:
        new, fetched = lockfile.refreshed(
            current,
            refs,
            hub.fetch,
            only_missing=only_missing,
            provenance=f"Read from {hub.endpoint} by `mvgen lock`.",
        )
    except HubUnreachable as exc:
        if not only_missing:
            click.echo(f"error: {exc}; {path.name} is unchanged", err=True)
            sys.exit(1)
        names = ", ".join(r.hf_id for r in missing)
        click.echo(
            f"warning: {exc}; {path.name} lacks {names}, whose fit stays unknown until "
            f"`{lockfile.LOCK_COMMAND}` reaches the Hub",
            err=True,
        )
        return
    except HubError as exc:
        click.echo(f"error: {exc}; {path.name} is unchanged", err=True)
        sys.exit(EXIT_CONFIG)
    if new != current:
        lockfile.write_lock(path, new)
    for ref in fetched:
        click.echo(f"   locked  {ref.hf_id}{'@' + ref.revision if ref.revision else ''}")
    if fetched:
        click.echo(f"{path.name}: {count}, {len(fetched)} read from {hub.endpoint}")
    else:
        click.echo(f"{path.name}: up to date ({count})")


def _lock_count(refs: list[Any]) -> str:
    """`3 checkpoints`, or `3 checkpoints, 1 adapter` when LoRA adapters are locked too."""
    adapters = sum(1 for r in refs if r.kind == "adapter")
    text = f"{len(refs) - adapters} checkpoints"
    if adapters:
        text += f", {adapters} adapter{'s' if adapters > 1 else ''}"
    return text


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
    from mvgen.clientenv import select_deployments

    plan = load(config_path)
    select_deployments(plan, gpu, model, need_gpu=not use_proxy)  # a wrong --gpu asks Modal nothing
    if not use_proxy:
        plan = with_workspace(plan, config_path, live=True)
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
@click.option(
    "--warm-from",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Price warm: schedules over the 30 days from this date (default: today, UTC).",
)
@friendly_errors
def plan(
    config_path: Path,
    as_json: bool,
    with_diff: bool,
    output_dir: Path,
    burst_minutes: float,
    warm_from: Any,
) -> None:
    """Show GPU memory fit, cost, endpoints and what a render would change; exit 1 if
    something would fail (a pair that does not fit, too many endpoints, stale files)."""
    import json

    from mvgen.planview import REPORTED_CHECKS, build_report, print_report, to_json

    plan = load(config_path, skip_checks=REPORTED_CHECKS)
    plan = with_workspace(plan, config_path, REPORTED_CHECKS, live=False)
    report = build_report(
        plan,
        output_dir,
        burst_minutes=burst_minutes,
        with_diff=with_diff,
        warm_from=warm_from.date() if warm_from else None,
    )
    if as_json:
        click.echo(json.dumps(to_json(report), indent=2))
    else:
        print_report(report)
    if report.failures:
        sys.exit(1)


# --- deploy, url, logs, stats, stop, test: thin calls of mvgen/deploy.py, stats.py, smoke.py ---


def gpu_model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--model",
        metavar="MODEL",
        help="A model short name: one model of the GPU's app (legacy mode: its app).",
    )(f)
    return click.option("--gpu", metavar="GPU", help="A GPU short name, e.g. h100.")(f)


def _chosen_apps(plan: Any, gpu: str | None, model: str | None, every: bool) -> list[Any]:
    from mvgen.deploy import select_apps

    if every and (gpu or model):
        raise click.UsageError("--all takes every app: drop --gpu and --model")
    return list(plan.apps) if every else select_apps(plan, gpu, model)


@main.command()
@config_option
@gpu_model_options
@click.option("--all", "every", is_flag=True, help="Deploy every app.")
@friendly_errors
def deploy(config_path: Path, gpu: str | None, model: str | None, every: bool) -> None:
    """Deploy one GPU's app (legacy: one model x GPU), or --all, after a preflight;
    exit 1 if the preflight refuses or any deploy fails."""
    from rich.console import Console

    from mvgen import deploy as d

    plan = load(config_path)
    _chosen_apps(plan, gpu, model, every)  # a wrong --gpu asks Modal nothing
    plan = with_workspace(plan, config_path, live=True)
    apps = _chosen_apps(plan, gpu, model, every)
    modal = d.ModalCli()
    report = d.preflight(plan, apps, modal, Path("."))
    from mvgen import warmup

    names = [app.name for app in apps]
    for note in [*report.notes, *warmup.deploy_notes(plan, names, warmup.now_utc())]:
        click.echo(f"note: {note}", err=True)
    if not report.ok:
        click.echo("preflight refused the deploy; nothing was deployed:", err=True)
        for problem in report.problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    if report.endpoints:
        count = report.endpoints
        click.echo(f"web endpoints after this deploy: {count.total} of {count.limit}", err=True)
    log = Console(stderr=True, highlight=False)

    def relay(line: str) -> None:
        log.print(line, markup=False)  # modal's own output, verbatim

    results = d.deploy_apps(plan, apps, modal, Path("."), relay)
    Console().print(d.results_table(results))
    if not all(r.ok for r in results):
        sys.exit(1)


@main.command()
@config_option
@gpu_model_options
@friendly_errors
def url(config_path: Path, gpu: str | None, model: str | None) -> None:
    """Print the endpoint URL of a GPU's app (legacy: of each model x GPU app)."""
    from mvgen import deploy as d

    plan = load(config_path)
    d.select_apps(plan, gpu, model)  # a wrong --gpu asks Modal nothing
    plan = with_workspace(plan, config_path, live=True)
    apps = d.select_apps(plan, gpu, model)
    links = d.app_urls(plan, apps)
    for app, link in zip(apps, links, strict=True):
        click.echo(link if len(apps) == 1 else f"{app.name}\t{link}")


@main.command()
@config_option
@gpu_model_options
@click.option("-f", "--follow", is_flag=True, help="Stream new log lines until Ctrl-C.")
@friendly_errors
def logs(config_path: Path, gpu: str | None, model: str | None, follow: bool) -> None:
    """Show an app's recent logs (`modal app logs`), or follow them."""
    from mvgen import deploy as d

    app = d.one_app(d.select_apps(load(config_path), gpu, model), "mvgen logs")
    sys.exit(d.ModalCli().passthrough("app", "logs", app.name, *(["-f"] if follow else [])))


@main.command()
@config_option
@gpu_model_options
@click.option(
    "--since",
    default="1h",
    show_default=True,
    metavar="TIME",
    help="From this long ago (30m, 2h, 1d; at most 35d) or this ISO 8601 time until now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON for machines.")
@friendly_errors
def stats(config_path: Path, gpu: str | None, model: str | None, since: str, as_json: bool) -> None:
    """Per-model time to first token, tokens/s, cold starts and errors, from the gateway's
    request lines in a GPU's app logs (`modal app logs`; legacy: each model's app)."""
    import json

    from rich.console import Console

    from mvgen import deploy as d
    from mvgen import stats as s

    apps = d.select_apps(load(config_path), gpu, model)  # a wrong name lists the choices
    since = s.check_since(since)
    modal = d.ModalCli()
    parsed = s.Parsed()
    for app in apps:
        s.parse_records(s.fetch_log_text(modal, app.name, since), parsed)
    figures = s.summarize(parsed.records, model)
    names = [app.name for app in apps]
    if parsed.unreadable:
        lines = "line" if parsed.unreadable == 1 else "lines"
        click.echo(f"note: {parsed.unreadable} request {lines} could not be read", err=True)
    if as_json:
        report = s.stats_json(
            figures, gpu=str(gpu), apps=names, since=since, unreadable=parsed.unreadable
        )
        click.echo(json.dumps(report, indent=2))
        return
    if not figures:
        click.echo(
            f"no request lines in the logs of {', '.join(names)} since {since} (an app "
            "deployed before mvgen wrote them has none: redeploy it)",
            err=True,
        )
        return
    count = sum(f.requests for f in figures)
    Console().print(s.stats_table(figures, f"{', '.join(names)}: {count} requests since {since}"))


@main.command()
@config_option
@gpu_model_options
@friendly_errors
def stop(config_path: Path, gpu: str | None, model: str | None) -> None:
    """Stop a GPU's app (legacy: its model x GPU apps), freeing its web endpoint."""
    from mvgen import deploy as d

    modal = d.ModalCli()
    apps = d.select_apps(load(config_path), gpu, model)
    codes = [modal.passthrough("app", "stop", app.name, "-y") for app in apps]
    sys.exit(1 if any(codes) else 0)


@main.command()
@config_option
@gpu_model_options
@click.option(
    "--for",
    "duration",
    required=True,
    metavar="DURATION",
    help="How long, e.g. 2h, 90m or 1h30m (at most 23h).",
)
@click.option(
    "--min",
    "minimum",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Containers to keep up meanwhile.",
)
@friendly_errors
def warm(
    config_path: Path, gpu: str | None, model: str | None, duration: str, minimum: int
) -> None:
    """Keep containers of a model up for a while, starting now (gpu mode); the deployed
    app lowers the minimum again when the time is up."""
    from mvgen import warm as w

    plan = load(config_path)
    now = w.now_utc()
    request = w.plan_warm(plan, gpu, model, minimum, w.parse_duration(duration), now)
    call = w.start_warm(request, w.ModalClient())
    click.echo(w.describe(request, call, now))


@main.command(name="test")
@config_option
@gpu_model_options
@click.option("--all", "every", is_flag=True, help="Test every app.")
@click.option("--url", "base_url", help="Test this URL instead (a local gateway, a custom domain).")
@click.option(
    "--api-key",
    envvar="VLLM_API_KEY",
    show_envvar=True,
    help="The endpoint's Bearer key (the vllm-api-key secret's API_KEY).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait through a cold start before giving up.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@friendly_errors
def smoke_test(
    config_path: Path,
    gpu: str | None,
    model: str | None,
    every: bool,
    base_url: str | None,
    api_key: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Smoke-test an endpoint: auth, models, chat, echo, streaming, structured outputs
    and images; exit 1 on any failure."""
    import json

    from rich.console import Console

    from mvgen import deploy as d
    from mvgen import smoke

    plan = load(config_path)
    apps = _chosen_apps(plan, gpu, model, every)
    if base_url and len(apps) != 1:
        raise click.UsageError("--url tests one app: choose it with --gpu (and --model)")
    if not api_key:
        raise click.UsageError("no API key: pass --api-key or set VLLM_API_KEY")
    if not base_url:
        plan = with_workspace(plan, config_path, live=True)
        apps = _chosen_apps(plan, gpu, model, every)
    links = [base_url] if base_url else d.app_urls(plan, apps)
    targets = [smoke.target_for(a, link, model) for a, link in zip(apps, links, strict=True)]
    console = Console(stderr=True, highlight=False)
    with console.status("starting the smoke test") as status:
        # Without a terminal (CI logs) there is no spinner: print the waits instead.
        progress = status.update if console.is_terminal else _print_waits
        results = smoke.run_smoke(targets, api_key, ready_timeout=timeout, progress=progress)
    if as_json:
        click.echo(json.dumps(smoke.results_json(results, targets), indent=2))
    else:
        Console().print(smoke.results_table(results, targets))
    if any(r.failed for r in results):
        sys.exit(1)


def _print_waits(text: str) -> None:
    if text.startswith("waiting"):
        click.echo(text, err=True)


@main.command()
@config_option
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    metavar="MODEL=URL",
    help="An OpenAI-compatible server for one model (its short name or any alias), e.g. "
    "gemma-3-12b=http://gpu-box:8000. Repeatable; models without one answer 503.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve without an API key. Only for a machine nobody else can reach.",
)
@click.option(
    "--gpu",
    metavar="GPU",
    help="A GPU short name from the config, written in each request's log line (the "
    "upstreams' GPU, for `mvgen stats`-style figures).",
)
@friendly_errors
def gateway(
    config_path: Path,
    upstreams: tuple[str, ...],
    host: str,
    port: int,
    no_auth: bool,
    gpu: str | None,
) -> None:
    """Run the deployed gateway locally, in front of servers you run (key from API_KEY,
    or the variable secrets.api_key.key names)."""
    from mvgen.local_gateway import GatewayStartupError, run_local_gateway, served_models

    plan = load(config_path)
    models = served_models(plan)
    gpus = sorted(g.key for g in plan.gpus)
    if gpu is not None and gpu not in gpus:
        raise click.BadParameter(f"unknown GPU {gpu!r}; choose from: {', '.join(gpus)}")
    try:
        run_local_gateway(
            models,
            _parse_pairs(upstreams, "--upstream"),
            host=host,
            port=port,
            no_auth=no_auth,
            api_key_env=plan.api_key_secret.key,
            gpu=gpu,
        )
    except GatewayStartupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
