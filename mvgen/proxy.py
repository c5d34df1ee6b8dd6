"""`mvgen proxy` (and `make proxy`): the LiteLLM proxy without Docker.

Runs the `litellm` executable that `make proxy` installed from the pinned litellm[proxy],
with the generated litellm/config.yaml and the variables from litellm/.env. Before
starting it checks what LiteLLM would otherwise report as a stack trace (no master key)
or not at all (no VLLM_API_KEY: every request would reach the gateways unauthenticated
and come back 401).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mvgen.errors import ConfigError, Problem

CONFIG = Path("litellm/config.yaml")
ENV_FILE = Path("litellm/.env")
ENV_EXAMPLE = Path("litellm/.env.example")
HOST = "127.0.0.1"  # only this machine; docker-compose.yml publishes the port instead
PORT = 4000

# What each variable is for, shown when it is missing.
REQUIRED = {
    "VLLM_API_KEY": "the Bearer key the Modal gateways check (API_KEY in the vllm-api-key "
    "Modal secret)",
    "LITELLM_MASTER_KEY": "the key clients send to the proxy; make one with "
    "`echo sk-$(openssl rand -hex 32)`",
}
PLACEHOLDER = "replace-me"  # the values litellm/.env.example ships with
LITELLM_EXAMPLE_KEY = "sk-1234"  # LiteLLM's documented example key: it refuses to start on it

# The proxy downloads a model price list at start unless told to use its bundled copy.
STATIC_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@dataclass(frozen=True)
class ProxyLaunch:
    argv: list[str]
    env: dict[str, str]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker compose reads them: `#` comments, optional `export `,
    optional matching quotes around the value."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def variable_problems(env: Mapping[str, str], source: str) -> list[Problem]:
    """One problem per required variable that is missing, empty or still a placeholder."""
    problems = []
    for name, purpose in REQUIRED.items():
        value = env.get(name, "").strip()
        if not value:
            message = f"not set: it is {purpose}"
        elif value == PLACEHOLDER:
            message = f"still the placeholder from {ENV_EXAMPLE}: set {purpose}"
        elif name == "LITELLM_MASTER_KEY" and value == LITELLM_EXAMPLE_KEY:
            message = f"LiteLLM's public example key, which it refuses to start with: use {purpose}"
        else:
            continue
        problems.append(Problem(name, message, hint=f"set it in {source} or export it"))
    return problems


def prepare(
    config: Path = CONFIG,
    env_file: Path = ENV_FILE,
    *,
    host: str = HOST,
    port: int = PORT,
    environ: Mapping[str, str] | None = None,
) -> ProxyLaunch:
    """The command and environment to start the proxy with; ConfigError if anything is
    missing. Variables already exported win over the file, as with docker compose."""
    environ = dict(os.environ if environ is None else environ)
    problems = []
    file_values: dict[str, str] = {}
    if env_file.is_file():
        file_values = read_env_file(env_file)
    elif any(not environ.get(name) for name in REQUIRED):
        problems.append(
            Problem(
                str(env_file),
                "not found, and the variables it holds are not exported either",
                hint=f"cp {ENV_EXAMPLE} {env_file} and fill in the values",
            )
        )
    env = {**STATIC_ENV, **file_values, **environ}
    if not problems:
        problems += variable_problems(env, str(env_file))
    if not config.is_file():
        problems.append(Problem(str(config), "not found", hint="run `make render` to generate it"))
    executable = litellm_executable()
    if executable is None:
        problems.append(
            Problem(
                "litellm",
                "the litellm executable is not installed in this environment",
                hint="run `make proxy` (it installs litellm[proxy] from uv.lock into .venv)",
            )
        )
    if problems:
        raise ConfigError(problems, "mvgen proxy")
    argv = [str(executable), "--config", str(config), "--host", host, "--port", str(port)]
    return ProxyLaunch(argv=argv, env=env)


def litellm_executable() -> Path | None:
    """The `litellm` beside this Python (the project venv) first, then on PATH."""
    beside = Path(sys.executable).parent / "litellm"
    if beside.is_file():
        return beside
    found = shutil.which("litellm")
    return Path(found) if found else None


def run(launch: ProxyLaunch) -> None:
    """Replace this process with the proxy, so Ctrl-C and signals reach it directly."""
    os.execve(launch.argv[0], launch.argv, launch.env)
