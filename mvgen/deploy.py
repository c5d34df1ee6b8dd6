"""Deploy, locate, inspect and stop the generated apps, through the `modal` CLI.

mvgen never talks to Modal's API itself: it runs the `modal` executable installed beside it
(the environment `make` sets up; PATH's otherwise), so what happens is exactly what a user
typing the same commands would get, and tests can swap in a recording stand-in.

Before any deploy, `preflight` refuses, with every reason at once, when: generated files
or the image locks are stale; Modal has no credentials; a secret the apps read is missing;
or the deployed web endpoints plus the new ones would pass `endpoint_limit`. See
docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvgen.errors import did_you_mean
from mvgen.plan import App, Plan
from mvgen.workspace import CREDENTIAL_ENV_VARS, credentials_in_env

__all__ = ["CREDENTIAL_ENV_VARS"]  # tests clear them; modal/client.py reads them

QUERY_TIMEOUT = 120.0  # seconds for a metadata command (list, info, secrets)
DEPLOY_TIMEOUT = 3600.0  # a first deploy builds the vLLM image, which takes minutes
MAX_HOST_LABEL = 63  # DNS label limit; Modal truncates longer hosts and appends a hash

_URL_RE = re.compile(r"https://[a-z0-9-]+(?:\.[a-z0-9-]+)*\.modal\.run")
_WORKSPACE_RE = re.compile(r"^\s*Workspace:\s*(\S+)", re.MULTILINE)


class DeployError(Exception):
    """Something the user can fix; printed as a message, never a traceback."""


# --- choosing apps ---------------------------------------------------------------------


def select_apps(plan: Plan, gpu: str | None, model: str | None) -> list[App]:
    """The apps `--gpu G [--model M]` names; a wrong or missing name lists the choices.

    gpu mode: the GPU's one app (a model, when given, must be served there).
    legacy mode: the model x GPU app, or every app on the GPU when no model is given.
    """
    gpus = sorted({app.gpu.key for app in plan.apps})
    if not gpu:
        raise DeployError(f"choose a GPU with --gpu (GPU=... in make): {', '.join(gpus)}")
    if gpu not in gpus:
        raise DeployError(_unknown(f"unknown GPU {gpu!r}", gpu, gpus))
    on_gpu = [app for app in plan.apps if app.gpu.key == gpu]
    if model is None:
        return on_gpu
    served = sorted({d.model.key for app in on_gpu for d in app.deployments})
    if model not in served:
        everywhere = {m.key for m in plan.models}
        what = f"model {model!r} is not served on {gpu}" if model in everywhere else None
        raise DeployError(_unknown(what or f"unknown model {model!r}", model, served))
    return [app for app in on_gpu if any(d.model.key == model for d in app.deployments)]


def one_app(apps: Sequence[App], command: str) -> App:
    """Commands that act on exactly one app (logs) refuse an ambiguous choice."""
    if len(apps) == 1:
        return apps[0]
    models = sorted(d.model.key for app in apps for d in app.deployments)
    raise DeployError(f"`{command}` needs one app: add --model, one of {', '.join(models)}")


def _unknown(what: str, value: str, choices: Sequence[str]) -> str:
    text = f"{what}; choose from: {', '.join(choices)}"
    near = did_you_mean(value, choices)
    return text + (f" (did you mean {near!r}?)" if near else "")


# --- the modal executable --------------------------------------------------------------


def find_modal() -> str | None:
    """The `modal` of mvgen's own environment (beside this Python, e.g. .venv/bin/modal:
    the version uv.lock pins, found even when the environment is not activated), else
    the first on PATH."""
    beside = Path(sys.executable).parent / "modal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("modal")


@dataclass
class ModalCli:
    """Runs `modal ...` and parses what it prints. `executable` defaults to find_modal()."""

    executable: str | None = None
    cwd: Path | None = None

    def command(self, *args: str) -> list[str]:
        exe = self.executable or find_modal()
        if exe is None:
            raise DeployError(
                f"the `modal` command is neither beside {sys.executable} nor on PATH: "
                "run `make validate` (every make target installs modal from uv.lock into .venv)"
            )
        return [exe, *args]

    def run(self, *args: str, timeout: float = QUERY_TIMEOUT) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self.command(*args),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.cwd,
                env=_plain_output_env(),
            )
        except subprocess.TimeoutExpired:
            raise DeployError(
                f"`modal {' '.join(args)}` did not finish in {timeout:.0f} s"
            ) from None

    def query_json(self, *args: str) -> Any:
        done = self.run(*args)
        if done.returncode != 0:
            raise DeployError(f"`modal {' '.join(args)}` failed: {_tail(done)}")
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise DeployError(f"`modal {' '.join(args)}` printed no JSON: {_tail(done)}") from None

    def config(self) -> dict[str, Any]:
        """`modal config show --json`: offline, secrets redacted; profile and env merged."""
        data = self.query_json("config", "show", "--json")
        return data if isinstance(data, dict) else {}

    def profile(self) -> str | None:
        """The active profile's name (offline: read from ~/.modal.toml or MODAL_PROFILE)."""
        done = self.run("profile", "current")
        name = done.stdout.strip()
        return name if done.returncode == 0 and name else None

    def token_workspace(self) -> str | None:
        """The workspace `modal token info` reports; this one asks Modal's servers."""
        done = self.run("token", "info")
        match = _WORKSPACE_RE.search(done.stdout) if done.returncode == 0 else None
        return match.group(1) if match else None

    def deployed_apps(self) -> list[str]:
        rows = self.query_json("app", "list", "--json")
        return sorted(
            str(row.get("description"))
            for row in rows
            if isinstance(row, dict) and row.get("state") == "deployed"
        )

    def web_endpoints(self, app_name: str) -> int | None:
        """Web functions plus servers of a deployed app (`modal app info --json`)."""
        try:
            info = self.query_json("app", "info", app_name, "--json")
        except DeployError:
            return None
        functions = info.get("functions") or {}
        webs = sum(1 for f in functions.values() if (f.get("summary") or {}).get("web_function"))
        return webs + len(info.get("servers") or {})

    def secret_names(self) -> set[str]:
        rows = self.query_json("secret", "list", "--json")
        return {str(row.get("name")) for row in rows if isinstance(row, dict)}

    def deploy(self, path: Path, echo: Callable[[str], None]) -> tuple[int, str]:
        """`modal deploy PATH`, its output relayed line by line as it comes."""
        with subprocess.Popen(
            self.command("deploy", str(path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
            env=_plain_output_env(),
        ) as proc:
            watchdog = threading.Timer(DEPLOY_TIMEOUT, proc.kill)
            watchdog.start()
            lines = []
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line)
                    echo(line.rstrip("\n"))
            finally:
                watchdog.cancel()
            return proc.wait(), "".join(lines)

    def passthrough(self, *args: str) -> int:
        """Run with the terminal attached (logs, stop): the user sees modal's own output."""
        try:
            return subprocess.run(self.command(*args), cwd=self.cwd).returncode
        except KeyboardInterrupt:  # Ctrl-C ends `logs -f`; that is not an error
            return 0


def _plain_output_env() -> dict[str, str]:
    # Rich would otherwise wrap long lines at 80 columns and split URLs we parse.
    return {**os.environ, "COLUMNS": "500", "NO_COLOR": "1", "TERM": "dumb"}


def _tail(done: subprocess.CompletedProcess[str], lines: int = 5) -> str:
    text = (done.stderr or "").strip() or (done.stdout or "").strip()
    tail = text.splitlines()[-lines:]
    return " / ".join(tail) if tail else f"exit code {done.returncode}"


# --- workspace and URLs ----------------------------------------------------------------


def endpoint_url(workspace: str, app: App) -> str:
    """`https://<workspace>--<app>-<function>.modal.run`, lower case as Modal makes it."""
    host = f"{workspace.lower()}--{app.label}"
    if len(host) > MAX_HOST_LABEL:
        raise DeployError(
            f"endpoint host {host!r} is {len(host)} characters; Modal cuts hosts over "
            f"{MAX_HOST_LABEL} and adds a hash, so the URL cannot be predicted: shorten "
            "app_prefix or the model/GPU names"
        )
    return f"https://{host}.modal.run"


def app_urls(plan: Plan, apps: Sequence[App]) -> list[str]:
    """Each app's endpoint URL; the Plan's workspace has been resolved (cli.py)."""
    assert plan.workspace, "load the Plan with a workspace before computing URLs"
    return [endpoint_url(plan.workspace, app) for app in apps]


# --- preflight -------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointCount:
    limit: int
    others: dict[str, int]  # deployed apps we are not deploying now -> their endpoints
    new: dict[str, int]  # apps being deployed -> endpoints they will have
    guessed: tuple[str, ...] = ()  # apps whose endpoints `modal app info` did not tell

    @property
    def total(self) -> int:
        return sum(self.others.values()) + sum(self.new.values())


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    endpoints: EndpointCount | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def preflight(plan: Plan, apps: Sequence[App], modal: ModalCli, root: Path) -> Preflight:
    """Every reason not to deploy `apps`, collected before anything is deployed.

    The config has already validated (loading the Plan does that). Checks that need Modal
    run only when credentials are present, so a missing login is one clear message.
    """
    report = Preflight()
    report.problems += stale_files(plan, root)
    report.problems += image_locks(plan, root)
    try:
        if not has_credentials(modal.config()):
            report.problems.append(
                "no Modal credentials: run `modal token new` (or set MODAL_TOKEN_ID and "
                "MODAL_TOKEN_SECRET)"
            )
            return report
        report.problems += missing_secrets(plan, modal.secret_names())
        count = count_endpoints(plan, apps, modal)
        report.notes += workspace_mismatch(plan, modal)
    except DeployError as exc:
        report.problems.append(str(exc))
        return report
    report.endpoints = count
    if count.guessed:
        report.notes.append(
            "counted one web endpoint each for apps `modal app info` did not describe: "
            + ", ".join(count.guessed)
        )
    if count.total > count.limit:
        report.problems.append(_over_limit(count))
    return report


def stale_files(plan: Plan, root: Path) -> list[str]:
    from mvgen.render import plan_changes, render_files

    changes = [c for c in plan_changes(render_files(plan), root) if c.kind != "unchanged"]
    if not changes:
        return []
    listed = ", ".join(f"{c.path} ({c.kind})" for c in changes)
    return [f"generated files are stale: {listed}; run `make render` and commit the result"]


def image_locks(plan: Plan, root: Path) -> list[str]:
    """A stale lock would build an image with other packages than the config says."""
    from mvgen.image_lock import stale_locks
    from mvgen.render import RUNTIME_PACKAGES

    return stale_locks(plan, RUNTIME_PACKAGES, root)


def workspace_mismatch(plan: Plan, modal: ModalCli) -> list[str]:
    """deployments.yaml's workspace against the active profile's name (offline): a
    mismatch usually means the URLs in litellm/config.yaml will not resolve."""
    if not plan.workspace or credentials_in_env():
        return []
    profile = modal.profile()
    if not profile or profile == "default" or profile.lower() == plan.workspace.lower():
        return []
    return [
        f"deployments.yaml says workspace {plan.workspace!r} but the active Modal profile is "
        f"{profile!r}; if that is the workspace, endpoint URLs in litellm/config.yaml are wrong"
    ]


def has_credentials(config: dict[str, Any]) -> bool:
    """A token pair, or a complete OAuth set, as modal/client.py requires."""
    if config.get("token_id") and config.get("token_secret"):
        return True
    oauth = config.get("oauth_refresh_token") and config.get("oauth_client_id")
    return bool(oauth and (config.get("oauth_client_secret") or config.get("oauth_jwt_key")))


def missing_secrets(plan: Plan, existing: Iterable[str]) -> list[str]:
    """`modal secret list` shows names only, so a secret's keys cannot be checked here."""
    have = set(existing)
    return [
        f"Modal secret {ref.name!r} is missing from the workspace: "
        f"`modal secret create {ref.name} {ref.key}=...`"
        for ref in (plan.hf_secret, plan.api_key_secret)
        if ref.name not in have
    ]


def count_endpoints(plan: Plan, apps: Sequence[App], modal: ModalCli) -> EndpointCount:
    """Web endpoints once `apps` are deployed: those of every other deployed app
    (`modal app list`, state deployed; `modal app info` counts each one's web functions
    and servers) plus one per app deployed now; redeploying an app replaces its own."""
    deploying = {app.name for app in apps}
    others: dict[str, int] = {}
    guessed = []
    for name in modal.deployed_apps():
        if name in deploying:
            continue
        count = modal.web_endpoints(name)
        if count is None:
            count = 1  # assume the common case rather than under-count
            guessed.append(name)
        others[name] = count
    new = {app.name: 1 for app in apps}  # every generated app has exactly one endpoint
    return EndpointCount(plan.endpoint_limit, others, new, tuple(guessed))


def _over_limit(count: EndpointCount) -> str:
    deployed = ", ".join(f"{name} ({n})" for name, n in count.others.items() if n) or "none"
    return (
        f"web endpoint limit: {sum(count.others.values())} already deployed ({deployed}) "
        f"+ {sum(count.new.values())} from this deploy = {count.total} > endpoint_limit "
        f"{count.limit}; stop apps you no longer need (`mvgen stop --gpu G`), deploy fewer "
        "GPUs, or raise endpoint_limit if your Modal plan allows more"
    )


# --- deploying -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployResult:
    app: App
    ok: bool
    seconds: float
    url: str | None  # as Modal printed it, else as computed
    message: str


def deploy_apps(
    plan: Plan,
    apps: Sequence[App],
    modal: ModalCli,
    root: Path,
    echo: Callable[[str], None],
) -> list[DeployResult]:
    """Deploy each app in turn; one failure does not stop the others."""
    results = []
    for app in apps:
        echo(f"deploying {app.name} from generated/{app.filename}")
        results.append(deploy_app(plan, app, modal, root, echo))
    return results


def deploy_app(
    plan: Plan, app: App, modal: ModalCli, root: Path, echo: Callable[[str], None]
) -> DeployResult:
    started = time.monotonic()
    code, output = modal.deploy(root / "generated" / app.filename, echo)
    seconds = time.monotonic() - started
    if code != 0:
        return DeployResult(app, False, seconds, None, _failure(output, code))
    reported = _URL_RE.search(output)
    url = reported.group(0) if reported else _computed_url(plan, app)
    message = "deployed"
    if reported and app.url and reported.group(0) != app.url:
        message = f"deployed; Modal's URL differs from deployments.yaml's ({app.url})"
    return DeployResult(app, True, seconds, url, message)


def _computed_url(plan: Plan, app: App) -> str | None:
    try:
        return endpoint_url(plan.workspace, app) if plan.workspace else None
    except DeployError:
        return None


def _failure(output: str, code: int) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "limit" in line.lower() and "endpoint" in line.lower():
            return line  # Modal's own "reached limit of N web endpoints" says it best
    return lines[-1] if lines else f"modal deploy exited with {code}"


def results_table(results: Sequence[DeployResult]) -> Any:
    from rich.table import Table

    failed = sum(not r.ok for r in results)
    title = f"{len(results) - failed} of {len(results)} apps deployed"
    table = Table(title=title)
    for column in ("app", "gpu", "models", "result", "time", "endpoint / error"):
        table.add_column(column, overflow="fold")
    for r in results:
        models = ", ".join(d.model.key for d in r.app.deployments)
        result = "[green]ok[/green]" if r.ok else "[red]FAILED[/red]"
        detail = (r.url or "(URL unknown)") if r.ok else r.message
        if r.ok and r.message != "deployed":
            detail += f"\n{r.message}"
        table.add_row(r.app.name, r.app.gpu.key, models, result, f"{r.seconds:.0f} s", detail)
    return table
