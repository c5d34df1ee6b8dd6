"""`mvgen gateway`: the deployed gateway, run locally in front of your own servers.

The same app as in the Modal containers, forwarding over HTTP to OpenAI-compatible
servers (your vLLM, or the test stand-in). The key comes from the variable the API-key
secret sets (`secrets.api_key.key`, `API_KEY` by default), as in the containers; without
one it refuses to start unless auth is explicitly switched off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette

from mvgen.local_server import ServerLimits, fit_to_open_files, server_config
from mvgen.plan import Plan
from mvgen.runtime.backends import HttpBackend
from mvgen.runtime.gateway import GatewaySettings, create_app, load_api_keys
from mvgen.runtime.models import ModelTable, ServedAdapter, ServedModel

log = logging.getLogger("mvgen.gateway")

API_KEY_ENV = "API_KEY"
# A server started by hand may still be loading; wait this long for it to accept
# connections before answering 503 (much less than a deployed container waits).
LOCAL_CONNECT_WAIT = 10.0


def served_models(plan: Plan) -> ModelTable:
    """Every model of the config with all its LoRA adapters, whichever GPUs load them: the
    server you name for a model serves its adapters too."""
    return ModelTable(
        ServedModel(
            m.key,
            m.served_name,
            m.aliases,
            tuple(ServedAdapter(a.name, a.source) for a in m.adapters),
            m.kind,
        )
        for m in plan.models
    )


class GatewayStartupError(Exception):
    """The local gateway cannot start; the message says why and what to do."""


def build_local_app(
    models: ModelTable,
    upstreams: Mapping[str, str],
    *,
    no_auth: bool = False,
    api_key_env: str = API_KEY_ENV,
    gpu: str | None = None,
) -> Starlette:
    """The gateway app for `mvgen gateway`, after the same checks run_local_gateway makes.
    `gpu` is what its request log lines say the models run on."""
    if not no_auth and not load_api_keys(api_key_env):
        raise GatewayStartupError(
            f"{api_key_env} is not set: export {api_key_env}=<key> (comma-separate several "
            "keys to rotate them), or pass --no-auth to serve without authentication."
        )
    backend = HttpBackend(check_upstreams(models, upstreams), connect_wait=LOCAL_CONNECT_WAIT)
    settings = GatewaySettings(api_key_env=api_key_env, require_auth=not no_auth, gpu=gpu)
    return create_app(models, backend, settings=settings)


def check_upstreams(models: ModelTable, upstreams: Mapping[str, str]) -> dict[str, str]:
    """Upstreams by model key, base URLs normalised (a trailing /v1 is dropped, since
    the gateway appends the full path)."""
    checked: dict[str, str] = {}
    for name, url in upstreams.items():
        model = models.resolve(name)
        target = models.target(name)
        if model is None and target is not None:
            raise GatewayStartupError(
                f"--upstream names {name!r}, a LoRA adapter of {target.model.key!r}: give the "
                f"server of {target.model.key!r}, which serves its adapters too."
            )
        if model is None:
            raise GatewayStartupError(
                f"--upstream names unknown model {name!r}; known models: "
                f"{', '.join(sorted(m.key for m in models.models))}."
            )
        checked[model.key] = normalise_base_url(url)
    return checked


def normalise_base_url(url: str) -> str:
    shape = f"upstream URL {url!r} must look like http://host:port"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (reading it checks the port: a number below 65536)
    except ValueError as exc:
        raise GatewayStartupError(f"{shape} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GatewayStartupError(shape)
    if parts.query or parts.fragment:
        raise GatewayStartupError(f"upstream URL {url!r} must not have a query or fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def run_local_gateway(
    models: ModelTable,
    upstreams: Mapping[str, str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    no_auth: bool = False,
    api_key_env: str = API_KEY_ENV,
    limits: ServerLimits | None = None,
    gpu: str | None = None,
) -> None:
    """Serve until interrupted. Raises GatewayStartupError before binding anything when
    the configuration is unusable; models without an upstream answer 503."""
    _configure_logging()  # first, so the gateway adds no handler of its own
    app = build_local_app(models, upstreams, no_auth=no_auth, api_key_env=api_key_env, gpu=gpu)
    if no_auth:
        _warn_no_auth(host, port)
    served = check_upstreams(models, upstreams)
    missing = sorted(m.key for m in models.models if m.key not in served)
    if missing:
        log.warning("no upstream for %s: requests for them answer 503", ", ".join(missing))
    limits = fit_to_open_files(limits or ServerLimits())
    uvicorn.Server(server_config(app, host, port, limits)).run()


def _warn_no_auth(host: str, port: int) -> None:
    banner = (
        "WARNING: --no-auth: the gateway accepts requests WITHOUT an API key on "
        f"http://{host}:{port}. Anyone who can reach this address can use your models."
    )
    print(banner, file=sys.stderr, flush=True)
    log.warning(banner)


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
