"""`mvgen gateway` without the CLI: run_local_gateway / build_local_app, and the
model table it serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from gateway_fixtures import ALPHA, API_KEY, MODELS, client, serve_asgi, standin, temporary_env
from standin_vllm import free_port

from mvgen.local_gateway import (
    GatewayStartupError,
    build_local_app,
    normalise_base_url,
    run_local_gateway,
)
from mvgen.runtime.models import ModelTable, ServedModel, models_from_literal
from mvgen.runtime.request_log import parse_line

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def api_key() -> Iterator[None]:
    with temporary_env("API_KEY", API_KEY):
        yield


@pytest.mark.parametrize("value", [None, "", "  ,  "])
def test_refuses_to_start_without_a_key(value: str | None) -> None:
    with temporary_env("API_KEY", value):
        with pytest.raises(GatewayStartupError, match="API_KEY is not set.*--no-auth"):
            run_local_gateway(MODELS, {"alpha": "http://127.0.0.1:1"}, port=free_port())


def test_rejects_unknown_models_and_bad_urls(api_key: None) -> None:
    with pytest.raises(GatewayStartupError, match="unknown model 'gamma'.*alpha, beta"):
        build_local_app(MODELS, {"gamma": "http://127.0.0.1:1"})
    bad = ("127.0.0.1:8000", "ftp://host/x", "http://", "http://h:1/v1?x=1", "http://:80")
    # urlsplit raises on these; they must be startup errors, not tracebacks
    bad += ("http://[::1:8000", "http://h:99999", "http://h:abc")
    for url in bad:
        with pytest.raises(GatewayStartupError, match="upstream URL"):
            build_local_app(MODELS, {"alpha": url})


@pytest.mark.parametrize(
    "url,base",
    [
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("http://127.0.0.1:8001/", "http://127.0.0.1:8001"),
        ("http://127.0.0.1:8001/v1", "http://127.0.0.1:8001"),
        ("https://gpu.example/vllm/v1/", "https://gpu.example/vllm"),
    ],
)
def test_upstream_urls_are_normalised(url: str, base: str) -> None:
    assert normalise_base_url(url) == base


def test_serves_with_the_key_and_503s_models_without_upstream(api_key: None) -> None:
    with standin() as up, serve_asgi(build_local_app(MODELS, {ALPHA: f"{up.url}/v1"})) as url:
        with client(url, key=None) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 401
        with client(url) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
            response = c.post("/v1/completions", json={"model": "beta", "prompt": "x"})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "model_not_deployed"
        assert [r.path for r in up.requests] == ["/v1/chat/completions"]


def test_no_auth_serves_without_a_key() -> None:
    with temporary_env("API_KEY", None), standin() as up:
        with serve_asgi(build_local_app(MODELS, {"alpha": up.url}, no_auth=True)) as url:
            with client(url, key=None) as c:
                assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


RUN = """
import sys
from mvgen.local_gateway import run_local_gateway
from mvgen.runtime.models import models_from_literal
models = models_from_literal(
    {"alpha": {"served_name": "org/Alpha-7B-it"}, "beta": {"served_name": "b"}}
)
port, no_auth = int(sys.argv[2]), sys.argv[3] == "1"
run_local_gateway(models, {"alpha": sys.argv[1]}, port=port, no_auth=no_auth)
"""


def run_in_subprocess(upstream: str, port: int, no_auth: bool) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    if not no_auth:
        env["API_KEY"] = API_KEY
    return subprocess.Popen(
        [sys.executable, "-c", RUN, upstream, str(port), "1" if no_auth else "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("local gateway did not start")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    return stderr


@pytest.mark.parametrize("no_auth", [False, True])
def test_run_local_gateway_serves_until_interrupted(no_auth: bool) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with standin() as up:
        proc = run_in_subprocess(up.url, port, no_auth)
        try:
            wait_healthy(url, proc)
            with client(url, key=None if no_auth else API_KEY) as c:
                assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
                assert c.post("/v1/completions", json={"model": "b"}).status_code == 503
        finally:
            stderr = stop(proc)
    assert proc.returncode is not None
    assert "no upstream for beta" in stderr
    records = [parse_line(line) for line in stderr.splitlines() if "mvgen.gateway" in line]
    for route, status in (("/v1/chat/completions", 200), ("/v1/completions", 503)):
        [record] = [r for r in records if r and r["route"] == route]
        assert record["status"] == status
    assert API_KEY not in stderr
    assert ("WARNING: --no-auth" in stderr) is no_auth


# --- the model table ---------------------------------------------------------------------


def test_resolution_ignores_case_and_accepts_every_name() -> None:
    table = models_from_literal(
        {
            "gemma-3-12b": {"served_name": "google/gemma-3-12b-it", "aliases": ["gemma-3-12b"],
                            "command": ["vllm", "serve"], "gpus": ["h100"]},
            "qwen": {"served_name": "Qwen/Qwen3-VL-30B-A3B-Instruct"},
        }
    )  # fmt: skip
    gemma = table.resolve("google/gemma-3-12b-it")
    assert gemma == ServedModel("gemma-3-12b", "google/gemma-3-12b-it", ("gemma-3-12b",))
    assert table.resolve("GEMMA-3-12B") is gemma
    assert table.resolve("qwen/qwen3-vl-30b-a3b-instruct").key == "qwen"
    assert table.resolve("qwen").key == "qwen"  # the key always works
    assert table.resolve("gemma") is None and table.resolve("") is None
    assert table.names() == ["Qwen/Qwen3-VL-30B-A3B-Instruct", "google/gemma-3-12b-it"]
    assert len(table) == 2


def test_ambiguous_names_are_refused() -> None:
    with pytest.raises(ValueError, match="(?i)'shared' is claimed by both 'a' and 'b'"):
        ModelTable([ServedModel("a", "org/a", ("shared",)), ServedModel("b", "org/b", ("Shared",))])
    with pytest.raises(ValueError, match="served_name"):
        models_from_literal({"a": {"aliases": ["x"]}})
