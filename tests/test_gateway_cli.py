"""`mvgen gateway`, the real command in a subprocess, in front of the vLLM stand-in.

Loopback only; every process started here is stopped in `finally`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from conftest import BASE_CONFIG, ROOT
from standin_vllm import StandinConfig, StandinServer, free_port

from mvgen.runtime.request_log import parse_line

KEY = "cli-test-key"


@contextmanager
def mvgen_gateway(
    config, *args: str, env: dict[str, str], output: list[str] | None = None
) -> Iterator[str]:
    """The command serving on a free port; what it printed goes to `output` at the end."""
    port = free_port()
    cmd = [sys.executable, "-m", "mvgen", "gateway", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                httpx.get(f"{url}/health", timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None
        printed = proc.stdout.read().decode()
        proc.stdout.close()
        if output is not None:
            output.append(printed)


def gateway_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    env.update(extra)
    return env


def test_gateway_command_serves_the_config_models(write_config) -> None:
    config = write_config()
    served = ["google/gemma-3-12b-it", "gemma-3-12b"]
    with StandinServer(StandinConfig(served_names=served)) as upstream:
        upstream_arg = f"--upstream=gemma-3-12b={upstream.url}/v1"
        with mvgen_gateway(config, upstream_arg, env=gateway_env(API_KEY=KEY)) as url:
            headers = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=url, headers=headers, trust_env=False) as client:
                models = client.get("/v1/models").json()
                assert {m["id"] for m in models["data"]} == {
                    "google/gemma-3-12b-it",
                    "Qwen/Qwen3-VL-30B-A3B-Instruct",
                }
                body = {"model": "google/gemma-3-12b-it", "prompt": "Hi", "max_tokens": 3}
                ok = client.post("/v1/completions", json=body)
                assert ok.status_code == 200, ok.text
                qwen = client.post("/v1/completions", json={**body, "model": "qwen3-vl-30b"})
                assert qwen.status_code == 503
                assert qwen.json()["error"]["code"] == "model_not_deployed"
                assert (
                    client.get("/v1/models", headers={"Authorization": "Bearer no"}).status_code
                    == 401
                )
        (recorded,) = upstream.completion_requests()
        assert recorded.body["model"] == "google/gemma-3-12b-it"


def test_gateway_command_refuses_to_start_without_a_key(write_config) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mvgen", "gateway", "--config", str(write_config())],
        cwd=ROOT, env=gateway_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "API_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_gateway_command_names_an_unknown_model(write_config) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mvgen", "gateway", "--config", str(write_config()),
         "--upstream", "gemma-3-13b=http://127.0.0.1:9"],
        cwd=ROOT, env=gateway_env(API_KEY=KEY), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown model 'gemma-3-13b'" in result.stderr
    assert "gemma-3-12b, qwen3-vl-30b" in result.stderr


def test_gateway_command_reads_the_key_variable_the_config_names(write_config) -> None:
    """`secrets.api_key.key: GATEWAY_KEYS`: that variable holds the keys, API_KEY does not."""
    config = write_config(
        BASE_CONFIG + "secrets:\n  api_key: {name: vllm-api-key, key: GATEWAY_KEYS}\n"
    )
    env = gateway_env(GATEWAY_KEYS=KEY, API_KEY="not-the-key")
    with mvgen_gateway(config, env=env) as url:
        for key, status in ((KEY, 200), ("not-the-key", 401)):
            headers = {"Authorization": f"Bearer {key}"}
            assert httpx.get(f"{url}/v1/models", headers=headers, trust_env=False).status_code == (
                status
            )
    missing = subprocess.run(
        [sys.executable, "-m", "mvgen", "gateway", "--config", str(config)],
        cwd=ROOT, env=gateway_env(API_KEY=KEY), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "GATEWAY_KEYS is not set" in missing.stderr


def test_gateway_command_writes_its_gpu_in_the_request_lines(write_config) -> None:
    config = write_config()
    output: list[str] = []
    with StandinServer(StandinConfig(served_names=["google/gemma-3-12b-it"])) as upstream:
        args = (f"--upstream=gemma-3-12b={upstream.url}", "--gpu", "l40s")
        with mvgen_gateway(config, *args, env=gateway_env(API_KEY=KEY), output=output) as url:
            body = {"model": "gemma-3-12b", "prompt": "Hi", "max_tokens": 2}
            headers = {"Authorization": f"Bearer {KEY}"}
            response = httpx.post(f"{url}/v1/completions", json=body, headers=headers)
            assert response.status_code == 200
    records = [r for r in map(parse_line, output[0].splitlines()) if r]
    [record] = [r for r in records if r["route"] == "/v1/completions"]
    assert (record["gpu"], record["model"], record["tokens_out"]) == ("l40s", "gemma-3-12b", 2)
    assert {r["gpu"] for r in records} == {"l40s"}  # /health too


def test_gateway_command_refuses_a_gpu_the_config_lacks(write_config) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mvgen", "gateway", "--config", str(write_config()),
         "--gpu", "h10"],
        cwd=ROOT, env=gateway_env(API_KEY=KEY), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown GPU 'h10'; choose from: h100, l40s" in result.stderr
    assert "Traceback" not in result.stderr
