"""Which Modal workspace the endpoint URLs use: deployments.yaml's `workspace:`, else Modal's
own, never a placeholder.

`modal token new` names the profile it writes after the workspace (`profile =
workspace.username` in modal/token_flow.py), so the active profile's name (`modal profile
current`, offline: ~/.modal.toml or MODAL_PROFILE) is the workspace unless the user named
the profile otherwise. With credentials in environment variables the profile says
nothing, and `modal token info`, which asks Modal's servers, is the fallback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mvgen.errors import ConfigError, Problem

if TYPE_CHECKING:
    from mvgen.deploy import ModalCli

PLACEHOLDER = "your-workspace"  # what the committed deployments.yaml ships with
PROFILE = "the active Modal profile (`modal profile current`)"
HOW_TO_SET = (
    "set `workspace:` in deployments.yaml to your Modal workspace (`modal profile current` "
    "prints it once `modal token new` has logged you in)"
)

# Environment variables that make Modal ignore the profile's credentials (modal/client.py).
CREDENTIAL_ENV_VARS = (
    "MODAL_TOKEN_ID",
    "MODAL_TOKEN_SECRET",
    "MODAL_OAUTH_REFRESH_TOKEN",
    "MODAL_OAUTH_CLIENT_ID",
    "MODAL_OAUTH_CLIENT_SECRET",
    "MODAL_OAUTH_JWT_KEY",
)


@dataclass(frozen=True)
class Workspace:
    name: str
    source: str  # where it came from, for the user


def credentials_in_env() -> bool:
    return any(os.environ.get(name) for name in CREDENTIAL_ENV_VARS)


def is_placeholder(workspace: str | None) -> bool:
    return (workspace or "").lower() == PLACEHOLDER


def resolve_workspace(configured: str | None, modal: ModalCli, *, live: bool) -> Workspace:
    """The workspace for endpoint URLs, or a ConfigError saying how to set one.

    live: the caller will reach the endpoints (url, env, test, deploy), so the placeholder
    is refused and Modal's servers may be asked. Otherwise (render, plan) only the offline
    profile is read, and the placeholder is kept: it is what the committed files hold.
    """
    if configured:
        if live and is_placeholder(configured):
            raise ConfigError([placeholder_problem()])
        return Workspace(configured, "deployments.yaml")
    profile = None if credentials_in_env() else modal.profile()
    if profile and profile != "default":  # "default" means no profile is active
        return Workspace(profile.lower(), PROFILE)
    reported = modal.token_workspace() if live else None
    if reported:
        return Workspace(reported.lower(), "`modal token info`")
    raise ConfigError([missing_problem(live)])


def placeholder_problem() -> Problem:
    return Problem(
        "workspace",
        f"{PLACEHOLDER!r} is the placeholder the example ships with, so every endpoint URL "
        "points at a host that does not exist",
        hint=f"{HOW_TO_SET}, or delete the line to use your active Modal profile's; "
        "then `make render` and commit",
    )


def missing_problem(live: bool) -> Problem:
    tried = "no Modal profile is active" + ("" if live else " (render reads only the profile)")
    what = "endpoint URLs cannot be computed" if live else "endpoint URLs cannot be written"
    return Problem("workspace", f"not set, and {tried}: {what}", hint=HOW_TO_SET)
