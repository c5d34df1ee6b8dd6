"""`mvgen warm`: keep more containers of one model up for a while, starting now.

Through modal's own client (there is no CLI command for it): the deployed app's
`warm_hold` function is spawned first, so the minimum comes down again when the time is
up even though this command has exited; then the pool's minimum is raised at once
(`Vllm(model=...).update_autoscaler`), so a failure shows here. The hold restores the
minimum the `warm:` schedule wants at its end (templates/gpu_app.py.j2,
mvgen/runtime/warm_pools.py). A `modal deploy` of the app before then resets it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from mvgen.deploy import DeployError, select_apps
from mvgen.plan import App, Deployment, Plan
from mvgen.warmup import HOLD_FUNCTION, MAX_HOLD, now_utc, scheduled_minimum

__all__ = ["now_utc"]  # cli.py reads the clock here; tests replace it

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?$")


def parse_duration(text: str) -> timedelta:
    """`2h`, `90m`, `1h30m`: at least a minute, at most MAX_HOLD."""
    match = _DURATION.match(text.strip().lower())
    if not match or not any(match.groups()):
        raise DeployError(f"--for {text!r} is not a duration: write it like 2h, 90m or 1h30m")
    hours, minutes = (int(g or 0) for g in match.groups())
    duration = timedelta(hours=hours, minutes=minutes)
    if duration < timedelta(minutes=1):
        raise DeployError("--for must be at least 1m")
    if duration > MAX_HOLD:
        limit = int(MAX_HOLD.total_seconds() // 3600)
        raise DeployError(
            f"--for {text} is longer than {limit}h: the function that lowers the minimum "
            "again runs at most 24 h (Modal's longest timeout); for a daily window use "
            "warm: in deployments.yaml"
        )
    return duration


@dataclass(frozen=True)
class WarmRequest:
    """What `mvgen warm` will do, decided before Modal is asked anything."""

    app: App
    deployment: Deployment
    pool: str  # the model's class in the app, e.g. Vllm
    min_containers: int  # held from now ...
    ends_at: datetime  # ... until then (UTC) ...
    restore: int  # ... then this: what the schedule wants at that time
    token: str  # names this hold, so a newer one replaces it

    @property
    def model(self) -> str:
        return self.deployment.model.key


def plan_warm(
    plan: Plan, gpu: str | None, model: str | None, minimum: int, duration: timedelta, now: datetime
) -> WarmRequest:
    if plan.mode != "gpu":
        raise DeployError(
            "mvgen warm needs mode: gpu; a legacy app's minimum is its web function's "
            "(set min_containers on the model instead)"
        )
    if not model:
        apps = select_apps(plan, gpu, None)  # checks --gpu, listing the choices
        served = ", ".join(d.model.key for app in apps for d in app.deployments)
        raise DeployError(f"choose a model with --model (MODEL=... in make): {served}")
    (app,) = select_apps(plan, gpu, model)
    deployment = next(d for d in app.deployments if d.model.key == model)
    pool = next(p.class_name for p in app.pools if deployment in p.deployments)
    static = deployment.settings.min_containers
    if minimum <= static:
        raise DeployError(
            f"--min {minimum} is not above the {static} container(s) {model} keeps up on "
            f"{app.gpu.key} anyway (min_containers in deployments.yaml)"
        )
    ends_at = now + duration
    return WarmRequest(
        app=app,
        deployment=deployment,
        pool=pool,
        # A schedule's window under way may already hold more: never lower it.
        min_containers=max(minimum, scheduled_minimum(plan, app.gpu.key, model, static, now)),
        ends_at=ends_at,
        restore=scheduled_minimum(plan, app.gpu.key, model, static, ends_at),
        token=uuid.uuid4().hex[:12],
    )


class ModalApps(Protocol):
    """What `mvgen warm` needs of Modal; tests pass a stand-in."""

    def spawn(self, app: str, function: str, *args: Any) -> str: ...

    def set_minimum(self, app: str, pool: str, model: str, count: int) -> Any: ...


class ModalClient:
    """modal's Python client, as in Modal's guide (https://modal.com/docs/guide/scale):
    the deployed app's objects by name, authenticated as the `modal` CLI is."""

    def spawn(self, app: str, function: str, *args: Any) -> str:
        import modal

        with _modal_errors(app, f"its function {function}"):
            return modal.Function.from_name(app, function).spawn(*args).object_id

    def set_minimum(self, app: str, pool: str, model: str, count: int) -> Any:
        import warnings

        import modal

        with _modal_errors(app, f"its class {pool}"), warnings.catch_warnings():
            # Deprecated on Function in modal 1.6.4; a class instance has no replacement yet.
            warnings.filterwarnings("ignore", message=".*update_autoscaler", category=UserWarning)
            instance = modal.Cls.from_name(app, pool)(model=model)
            return instance.update_autoscaler(min_containers=count)


@contextmanager
def _modal_errors(app: str, what: str) -> Iterator[None]:
    """modal's exceptions as one line naming what was looked up, never a traceback."""
    import modal.exception

    try:
        yield
    except modal.exception.NotFoundError as exc:
        raise DeployError(
            f"Modal has no deployed {app} with {what}: deploy it first (`make deploy "
            f"GPU=...`); an app deployed before mvgen warm existed needs a redeploy ({exc})"
        ) from None
    except modal.exception.AuthError as exc:
        raise DeployError(
            f"Modal refused the credentials ({exc}): run `modal token new` (or set "
            "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"
        ) from None
    except modal.exception.Error as exc:
        raise DeployError(f"Modal: {type(exc).__name__}: {exc}") from None


def start_warm(request: WarmRequest, modal: ModalApps) -> str:
    """Spawn the hold, then raise the minimum; the hold's call id."""
    call = modal.spawn(
        request.app.name,
        HOLD_FUNCTION,
        request.model,
        request.min_containers,
        request.ends_at.timestamp(),
        request.restore,
        request.token,
    )
    modal.set_minimum(request.app.name, request.pool, request.model, request.min_containers)
    return call


def describe(request: WarmRequest, call: str, now: datetime) -> str:
    minutes = round((request.ends_at - now).total_seconds() / 60)
    until = request.ends_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    static = request.deployment.settings.min_containers
    return (
        f"{request.model} on {request.app.gpu.key} ({request.app.name}, class {request.pool}): "
        f"minimum {request.min_containers} container(s) from now until {until} "
        f"({duration_text(minutes)}); then {request.restore}, set by {HOLD_FUNCTION} "
        f"(call {call}). A `modal deploy` of {request.app.name} before then resets it to "
        f"{static}."
    )


def duration_text(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return f"{hours}h{rest:02d}m" if hours else f"{rest}m"
