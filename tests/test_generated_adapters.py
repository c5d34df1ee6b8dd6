"""LoRA adapters through the generated apps, imported under the real `modal` package, in
both modes: the pool fetches the Hub adapter, starts vLLM with its --lora-modules, and the
gateway routes a request naming an adapter to the base model's pool.

Stand-ins, named so: the `vllm` executable (tests/standin_vllm_cli.py, which reads
--lora-modules as vLLM 0.12 does and answers to the adapters' names), the Hugging Face Hub
(tests/hub_standin.py, through HF_ENDPOINT), Modal's server side and its containers
(tests/modal_standin.py, PoolContainers in tests/test_generated_starts.py), modal.Dict,
and a temporary folder in place of the Hugging Face cache Volume, which only exists
inside a Modal container.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import modal
import pytest
from conftest import run_cli
from gateway_fixtures import serve_asgi, wait_until
from hub_standin import HubStandin
from modal_dict_standin import InMemoryDict
from modal_standin import ModalStandin, standin_default_client
from standin_vllm_cli import recorded_starts
from test_generated_starts import (
    SECRETS,
    AppHarness,
    PoolContainers,
    client,
)
from test_generated_starts import env as env  # noqa: F401  (a fixture, used by name)
from test_modal_apps import check_app, import_app

from mvgen.config import load_plan
from mvgen.plan import HF_CACHE

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning"),
]

REPO = "Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
CONFIG = """\
mode: MODE
workspace: acme
gpus:
  h100: {type: H100}
models:
  qwen-7b:
    hf_id: Qwen/Qwen2.5-7B-Instruct
    max_model_len: 8192
    adapters:
      mcq: {hf_id: Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver, rank: 16}
      notes: {path: adapters/notes, rank: 8}
"""
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def render(write_config, tmp_path: Path, mode: str) -> tuple[Path, Path]:
    config = write_config(CONFIG.replace("MODE", mode) + SECRETS, name=f"{mode}.yaml")
    out = tmp_path / f"out-{mode}"
    result = run_cli("render", "--config", str(config), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    return config, out / "generated"


def volume_standin(harness: AppHarness, volume: Path) -> None:
    """The container paths on the Hugging Face cache Volume, moved into `volume`: the
    adapters are fetched there (the command line still names the container paths)."""
    tracked = harness.module.VllmProcess

    class OnTheVolumeStandin(tracked):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, adapters: Any = (), **kwargs: Any) -> None:
            moved = []
            for adapter in adapters:
                spec = dict(adapter.get("download") or {})
                if spec:
                    spec["local_dir"] = spec["local_dir"].replace(HF_CACHE, str(volume))
                moved.append({**adapter, "download": spec or None})
            super().__init__(*args, adapters=moved, **kwargs)

    harness.module.VllmProcess = OnTheVolumeStandin


@pytest.fixture
def hub(env: SimpleNamespace) -> Iterator[HubStandin]:
    standin = HubStandin()
    with serve_asgi(standin.app()) as url:
        env.monkeypatch.setenv("HF_ENDPOINT", url)
        yield standin


def standin_requests(port: int) -> list[dict]:
    """What the vLLM stand-in (a subprocess) received."""
    with httpx.Client(trust_env=False, timeout=10) as c:
        return c.get(f"http://127.0.0.1:{port}/_standin/requests").json()


def check_adapter_round_trip(url: str, harness: AppHarness, record: Path, volume: Path) -> None:
    with client(url) as c:
        models = c.get("/v1/models").json()["data"]
        answer = c.post("/v1/chat/completions", json={**CHAT, "model": "MCQ"})
        plain = c.post("/v1/chat/completions", json={**CHAT, "model": "qwen-7b"})
    assert answer.status_code == 200, answer.text
    assert plain.status_code == 200, plain.text
    cards = {m["id"]: m for m in models}
    assert cards["mcq"]["parent"] == QWEN and cards["mcq"]["root"] == REPO
    assert cards["notes"]["root"] == f"{HF_CACHE}/adapters/notes"
    # one vLLM, the base's, got both requests: the adapter's by its own name
    [vllm] = harness.processes
    sent = [r["body"]["model"] for r in standin_requests(vllm.port) if r["method"] == "POST"]
    assert sent == ["mcq", QWEN]
    (start,) = recorded_starts(record)
    argv = start["argv"]
    assert argv.count("--lora-modules") == 1 and "--enable-lora" in argv
    modules = [json.loads(a) for a in argv[argv.index("--lora-modules") + 1 :]]
    assert [m["name"] for m in modules] == ["mcq", "notes"]
    assert modules[0]["path"] == f"{HF_CACHE}/lora/{REPO.replace('/', '--')}/main"
    # the pool fetched the Hub adapter before vLLM started
    fetched = volume / "lora" / REPO.replace("/", "--") / "main" / "adapter_config.json"
    assert json.loads(fetched.read_text())["r"] == 16


def test_gpu_mode_serves_an_adapter_from_the_base_models_pool(
    write_config, tmp_path: Path, env: SimpleNamespace, hub: HubStandin
) -> None:
    config, generated = render(write_config, tmp_path, "gpu")
    plan = load_plan(config)
    check_app(plan, plan.apps[0], generated / "vllm_h100.py")
    module = import_app(generated / "vllm_h100.py")
    assert [a["name"] for a in module.MODELS["qwen-7b"]["adapters"]] == ["mcq", "notes"]
    harness = AppHarness(module, InMemoryDict(), env)
    volume_standin(harness, tmp_path / "volume")
    containers = PoolContainers(harness, module.Vllm)
    with contextlib.ExitStack() as stack:
        stack.callback(harness.close)
        modal_server = stack.enter_context(
            ModalStandin(containers.run_input, app_name=module.app.name, class_name="Vllm")
        )
        stack.enter_context(standin_default_client(modal_server))
        stack.callback(lambda: modal_server.call_soon(containers.aclose()))
        module.Vllm = modal.Cls.from_name(module.app.name, "Vllm")
        url = stack.enter_context(serve_asgi(module.serve.local()))
        check_adapter_round_trip(url, harness, env.record, tmp_path / "volume")
    assert containers.started == ["qwen-7b"]  # the adapter woke no pool of its own


def test_legacy_mode_serves_an_adapter_beside_its_model(
    write_config, tmp_path: Path, env: SimpleNamespace, hub: HubStandin
) -> None:
    config, generated = render(write_config, tmp_path, "legacy")
    plan = load_plan(config)
    path = generated / "vllm_qwen_7b_h100.py"
    check_app(plan, plan.apps[0], path)
    module = import_app(path)
    harness = AppHarness(module, InMemoryDict(), env)
    volume_standin(harness, tmp_path / "volume")
    harness.new_port()
    try:
        with serve_asgi(module.serve.local()) as url:
            check_adapter_round_trip(url, harness, env.record, tmp_path / "volume")
            # the start in the background may not have seen /health yet: let it finish
            # before vLLM is stopped, or it records a failed start
            wait_until(harness.processes[0]._ready.is_set, 10, "the start did not finish")
    finally:
        harness.close()
