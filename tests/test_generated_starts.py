"""The generated apps' start-up, secrets and crash-loop stop, end to end.

Each test renders deployments.yaml with non-default secret key names, imports the app
under the real `modal` package and runs its own code: the pool class's `@modal.enter()`
(through modal's local entry, `Obj._enter`) and the gateway function (`serve.local()`),
served over HTTP on 127.0.0.1. Three things stand in for what cannot run here, each
named so: the `vllm` executable (tests/standin_vllm_cli.py, first on PATH), `modal.Dict`
(tests/modal_dict_standin.py) and, in gpu mode, Modal's side of the gateway's calls to
its pools: the real modal client spawns them, and streams through a queue, against the
Modal stand-in (tests/modal_standin.py), whose containers (`PoolContainers` below: one
per model until it stops itself) run the generated pool class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import modal
import pytest
from conftest import BASE_CONFIG, run_cli
from gateway_fixtures import serve_asgi, wait_until
from modal_dict_standin import InMemoryDict
from modal_standin import ModalStandin, standin_default_client
from standin_vllm import free_port
from standin_vllm_cli import install_standin_vllm, recorded_starts
from test_modal_apps import import_app

from mvgen.config import load_plan
from mvgen.runtime import lifecycle, start_failures
from mvgen.runtime.request_log import parse_line
from mvgen.runtime.vllm_process import VllmProcess, VllmStartupError

pytestmark = [
    pytest.mark.timeout(120),
    # modal's reminder that a local run has no Volumes; these tests need none
    pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning"),
]

HF_KEY, API_KEY_NAME = "HUGGINGFACE_TOKEN", "VLLM_API_KEY"
HF_TOKEN = "hf_standin_token_0123456789"
GATEWAY_KEY = "gateway-key-0123456789"
SECRETS = f"""\
secrets:
  huggingface: {{name: hf-access, key: {HF_KEY}}}
  api_key: {{name: gateway-keys, key: {API_KEY_NAME}}}
"""
GEMMA = "google/gemma-3-12b-it"
CHAT = {"model": "gemma-3-12b", "messages": [{"role": "user", "content": "Hi"}]}
OOM_CAUSE = "CUDA out of memory while loading weights"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A container's environment: the two secrets under their configured names, the
    `vllm` stand-in on PATH, a record of its starts, and os._exit and the failed
    container's grace period made safe for a test process."""
    install_standin_vllm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(HF_KEY, HF_TOKEN)
    monkeypatch.setenv(API_KEY_NAME, GATEWAY_KEY)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("STANDIN_VLLM_FAIL", raising=False)
    record = tmp_path / "vllm-starts.jsonl"
    monkeypatch.setenv("STANDIN_VLLM_RECORD", str(record))
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)  # the watchdog must never fire here
    monkeypatch.setattr(lifecycle, "FAILED_CONTAINER_GRACE", 0.2)
    return SimpleNamespace(record=record, exits=exits, monkeypatch=monkeypatch)


def render(write_config, tmp_path: Path, *, mode: str = "gpu", extra: str = "") -> Path:
    text = BASE_CONFIG.replace("mode: gpu", f"mode: {mode}") + SECRETS + extra
    config = write_config(text)
    out = tmp_path / f"out-{mode}-{abs(hash(text))}"
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    return out / "generated"


class AppHarness:
    """A generated module with the stand-ins wired in and every vLLM it starts tracked,
    so each is stopped at the end of the test."""

    def __init__(self, module: ModuleType, store: InMemoryDict, env: SimpleNamespace) -> None:
        self.module = module
        self.stops: list[float] = []
        self.processes: list[VllmProcess] = []
        module.start_failures = store
        module.stop_this_container = lambda: self.stops.append(time.monotonic())
        harness = self

        class TrackedVllmProcess(VllmProcess):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                harness.processes.append(self)

            def start(self) -> None:
                # The generated command says --port 8000; the stand-in listens where
                # this container's VLLM_PORT says instead.
                env.monkeypatch.setenv("STANDIN_VLLM_PORT", str(self.port))
                super().start()

        module.VllmProcess = TrackedVllmProcess

    def new_port(self) -> None:
        self.module.VLLM_PORT = free_port()

    def close(self) -> None:
        for vllm in self.processes:
            vllm.stop(timeout=5)


class PoolContainers:
    """Stands in for the containers Modal runs for a gpu-mode pool class (NOT Modal).
    The Modal stand-in (tests/modal_standin.py) hands each spawned input to `run_input`:
    a call to a model with no live container starts one (the generated `@modal.enter()`
    runs), and a container that called stop_this_container takes no further calls. The
    generated method then runs as in a container, a stream putting its items into the
    gateway's queue through the real modal client."""

    def __init__(self, harness: AppHarness, cls: Any) -> None:
        self._harness = harness
        self._cls = cls
        self._live: dict[str, tuple[Any, int]] = {}  # model -> (modal Obj, stops seen)
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self.started: list[str] = []

    async def run_input(
        self, params: dict[str, str], method: str, args: tuple, kwargs: dict
    ) -> Any:
        obj = await asyncio.to_thread(self._container, params["model"])
        return await _method(obj, method)(*args, **kwargs)

    def _container(self, model: str) -> Any:
        with self._lock:
            live = self._live.get(model)
            if live is not None and len(self._harness.stops) == live[1]:
                return live[0]
            self._harness.new_port()
            obj = self._cls(model=model)
            obj._enter()  # modal's own local run of the class's enter hooks
            self._live[model] = (obj, len(self._harness.stops))
            self._all.append(obj)
            self.started.append(model)
            return obj

    async def aclose(self) -> None:
        """Close each container's pool (its HTTP client to vLLM)."""
        for obj in self._all:
            pool = getattr(obj._cached_user_cls_instance(), "pool", None)
            if pool is not None:
                await pool.aclose()


def _method(obj: Any, name: str) -> Any:
    """The generated method bound to the container's instance, as Modal runs it."""
    instance = obj._cached_user_cls_instance()
    return vars(type(instance))[name]._get_raw_f().__get__(instance)


@pytest.fixture
def gpu_app(write_config, tmp_path: Path, env: SimpleNamespace) -> Iterator[Any]:
    """The h100 app in gpu mode, its gateway served on 127.0.0.1, calling its pool
    through the real modal client and the Modal stand-in. Both ends use modal's default
    client, as the generated code does in its containers."""
    generated = render(write_config, tmp_path)
    module = import_app(generated / "vllm_h100.py")
    store = InMemoryDict()
    harness = AppHarness(module, store, env)
    containers = PoolContainers(harness, module.Vllm)
    with contextlib.ExitStack() as stack:
        stack.callback(harness.close)
        modal_server = stack.enter_context(
            ModalStandin(containers.run_input, app_name=module.app.name, class_name="Vllm")
        )
        stack.enter_context(standin_default_client(modal_server))
        stack.callback(lambda: modal_server.call_soon(containers.aclose()))
        # What serve() hands to ModalBackend: the deployed class, as Modal looks it up.
        module.Vllm = modal.Cls.from_name(module.app.name, "Vllm")
        url = stack.enter_context(serve_asgi(module.serve.local()))
        yield SimpleNamespace(
            url=url,
            store=store,
            harness=harness,
            containers=containers,
            modal=modal_server,
            module=module,
        )


def client(url: str, key: str = GATEWAY_KEY) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        trust_env=False,
    )


def wait_for_stops(harness: AppHarness, count: int) -> None:
    wait_until(lambda: len(harness.stops) == count, 5, f"container {count} did not stop")


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


# --- secrets ----------------------------------------------------------------------------


def test_gpu_mode_reads_the_configured_key_and_hands_vllm_the_hf_token(
    gpu_app: Any, env: SimpleNamespace
) -> None:
    with client(gpu_app.url) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert c.get("/v1/models").status_code == 200
    with client(gpu_app.url, key="wrong") as c:
        assert c.get("/v1/models").status_code == 401
    (start,) = recorded_starts(env.record)
    assert start["model"] == GEMMA
    assert start["hf_token"] == HF_TOKEN
    assert API_KEY_NAME not in start["env_names"]
    assert env.exits == []


def test_legacy_mode_keeps_the_api_key_from_vllm(
    write_config, tmp_path: Path, env: SimpleNamespace
) -> None:
    """The api-key secret is in vLLM's container here, under a name vLLM would enforce."""
    generated = render(write_config, tmp_path, mode="legacy")
    module = import_app(generated / "vllm_gemma_3_12b_h100.py")
    harness = AppHarness(module, InMemoryDict(), env)
    harness.new_port()
    env.monkeypatch.setenv("STANDIN_VLLM_READY_AFTER", "0.5")
    try:
        with serve_asgi(module.serve.local()) as url, client(url) as c:
            response = c.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200, response.text
            assert response.json()["model"] == GEMMA
            with client(url, key="wrong") as bad:
                assert bad.post("/v1/chat/completions", json=CHAT).status_code == 401
    finally:
        harness.close()
    (start,) = recorded_starts(env.record)
    assert start["hf_token"] == HF_TOKEN
    assert API_KEY_NAME not in start["env_names"]


# --- the request log line -------------------------------------------------------------------


def request_records(caplog: pytest.LogCaptureFixture, count: int) -> list[dict]:
    def records() -> list[dict]:
        return [r for r in (parse_line(m.getMessage()) for m in caplog.records) if r]

    wait_until(lambda: len(records()) >= count, 5, "request log lines missing")
    return records()


def test_legacy_mode_logs_its_gpu_and_the_wait_for_vllm(
    write_config, tmp_path: Path, env: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mvgen.gateway")
    generated = render(write_config, tmp_path, mode="legacy")
    module = import_app(generated / "vllm_gemma_3_12b_h100.py")
    harness = AppHarness(module, InMemoryDict(), env)
    harness.new_port()
    env.monkeypatch.setenv("STANDIN_VLLM_READY_AFTER", "1.0")
    try:
        with serve_asgi(module.serve.local()) as url, client(url) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
            assert c.post("/v1/chat/completions", json={**CHAT, "stream": True}).is_success
    finally:
        harness.close()
    cold, warm = request_records(caplog, 2)
    assert (cold["gpu"], warm["gpu"]) == ("h100", "h100")
    assert (cold["cold_start"], warm["cold_start"]) == (True, False)
    assert cold["tokens_out"] == warm["tokens_out"] and cold["tokens_out"] > 0


# --- failed starts in gpu mode ------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        ("oom-load", OOM_CAUSE),
        ("kv-cache", "KV cache too small for max_model_len 131072"),
        ("gated", "the Hugging Face Hub refused access to a gated model"),
        ("unknown-arg", "vLLM does not accept the argument --max-num-sequences"),
        ("driver", "the GPU's CUDA driver is older than the CUDA runtime in the image"),
    ],
)
def test_gpu_mode_answers_a_failed_start_with_its_cause(
    gpu_app: Any, env: SimpleNamespace, failure: str, cause: str
) -> None:
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", failure)
    with client(gpu_app.url) as c:
        response = c.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "model_failed_to_start"
    assert error["message"].startswith(f"Model '{GEMMA}' failed to start: {cause}")
    assert "retry-after" not in response.headers  # one failure: not blocked yet
    # The container's pool answered the call (as data: the call itself succeeded).
    (call,) = gpu_app.modal.spawned()
    assert (call.method, call.params) == ("request", {"model": "gemma-3-12b"})
    assert gpu_app.modal.outcome(call) == "SUCCESS"
    wait_until(lambda: gpu_app.harness.stops, 5, "the failed container did not stop")
    (record,) = gpu_app.store.snapshot().values()
    assert record["count"] == 1 and record["cause"].startswith(cause)
    assert env.exits == []  # the watchdog never raced the start-up error


def test_gpu_mode_answers_a_stream_to_a_failed_start_through_its_queue(
    gpu_app: Any, env: SimpleNamespace
) -> None:
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", "oom-load")
    with client(gpu_app.url) as c:
        response = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 503
    assert error_of(response)["code"] == "model_failed_to_start"
    assert error_of(response)["message"].startswith(f"Model '{GEMMA}' failed to start: {OOM_CAUSE}")
    (call,) = gpu_app.modal.spawned()
    (queue,) = gpu_app.modal.requests("QueueGetOrCreate")
    (put_queue,) = {r.queue_id for r in gpu_app.modal.requests("QueuePut")}
    assert call.method == "stream" and call.args[2] == put_queue
    assert gpu_app.modal.outcome(call) == "SUCCESS"
    assert "FunctionCallCancel" not in gpu_app.modal.names()  # the pool said its last word
    wait_until(lambda: gpu_app.harness.stops, 5, "the failed container did not stop")
    assert env.exits == []


def test_gpu_mode_stops_a_crash_loop_and_tries_again_after_the_cooldown(
    gpu_app: Any, env: SimpleNamespace
) -> None:
    env.monkeypatch.setattr(start_failures, "CACHE_TTL", 0.0)
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", "oom-load")
    limit = start_failures.FAILED_START_LIMIT
    with client(gpu_app.url) as c:
        for attempt in range(1, limit + 1):
            response = c.post("/v1/chat/completions", json=CHAT)
            assert error_of(response)["code"] == "model_failed_to_start"
            wait_for_stops(gpu_app.harness, attempt)
        assert len(recorded_starts(env.record)) == limit
        assert response.headers["retry-after"] == str(int(start_failures.COOLDOWN))

        # Blocked: answered at once without a call to Modal, streams included.
        rpcs = len(gpu_app.modal.rpcs)
        started = time.monotonic()
        blocked = c.post("/v1/chat/completions", json=CHAT)
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert time.monotonic() - started < 2
        for answer in (blocked, streamed):
            assert answer.status_code == 503
            assert error_of(answer)["code"] == "model_failed_to_start"
            assert OOM_CAUSE in error_of(answer)["message"]
            assert 1790 <= int(answer.headers["retry-after"]) <= 1800
        assert gpu_app.modal.names()[rpcs:] == []
        assert len(recorded_starts(env.record)) == limit

        # After the cooldown: one more container, and its failure blocks again.
        (key,) = gpu_app.store.snapshot()
        gpu_app.store.edit(key, at=time.time() - start_failures.COOLDOWN - 1)
        assert error_of(c.post("/v1/chat/completions", json=CHAT))["code"] == (
            "model_failed_to_start"
        )
        assert len(recorded_starts(env.record)) == limit + 1
        assert c.post("/v1/chat/completions", json=CHAT).headers.get("retry-after")
        assert len(gpu_app.modal.spawned()) == limit + 1
    assert env.exits == []


def test_a_container_started_while_blocked_does_not_start_vllm(
    gpu_app: Any, env: SimpleNamespace
) -> None:
    """The gateway reuses its answer for CACHE_TTL; a call that slips through meets the
    same record in the container, which answers the cause without starting vLLM."""
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", "kv-cache")
    limit = start_failures.FAILED_START_LIMIT
    with client(gpu_app.url) as c:
        for attempt in range(1, limit + 2):
            response = c.post("/v1/chat/completions", json=CHAT)
            assert error_of(response)["code"] == "model_failed_to_start"
            wait_for_stops(gpu_app.harness, attempt)
    assert len(recorded_starts(env.record)) == limit  # the last container skipped vLLM
    assert gpu_app.containers.started == ["gemma-3-12b"] * (limit + 1)
    assert response.headers["retry-after"]


def test_a_good_start_clears_the_record(gpu_app: Any, env: SimpleNamespace) -> None:
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", "gated")
    with client(gpu_app.url) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 503
        wait_until(lambda: gpu_app.harness.stops, 5, "no stop")
        assert len(gpu_app.store.snapshot()) == 1
        env.monkeypatch.delenv("STANDIN_VLLM_FAIL")
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert gpu_app.store.snapshot() == {}


def test_a_redeploy_with_another_command_starts_afresh(
    write_config, tmp_path: Path, env: SimpleNamespace
) -> None:
    store = InMemoryDict()
    failures = start_failures.StartFailures(store)
    modules = []
    for extra in ("", "defaults: {max_model_len: 8192}\n"):
        module = import_app(render(write_config, tmp_path, extra=extra) / "vllm_h100.py")
        modules.append(start_failures.pool_keys(module.app.name, module.MODELS))
    before, after = modules
    for _ in range(start_failures.FAILED_START_LIMIT):
        failures.record_failure(before["gemma-3-12b"], OOM_CAUSE)
    assert failures.blocked(before["gemma-3-12b"]) is not None
    assert after["gemma-3-12b"] != before["gemma-3-12b"]
    assert failures.blocked(after["gemma-3-12b"]) is None


# --- failed starts in legacy mode ---------------------------------------------------------


@pytest.fixture
def legacy(write_config, tmp_path: Path, env: SimpleNamespace) -> Iterator[Any]:
    generated = render(write_config, tmp_path, mode="legacy")
    module = import_app(generated / "vllm_gemma_3_12b_h100.py")
    store = InMemoryDict()
    harness = AppHarness(module, store, env)
    try:
        yield SimpleNamespace(module=module, store=store, harness=harness)
    finally:
        harness.close()


def test_legacy_mode_answers_waiting_requests_when_the_start_fails(
    legacy: Any, env: SimpleNamespace
) -> None:
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", "oom-load")
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL_AFTER", "1.5")
    legacy.harness.new_port()
    with serve_asgi(legacy.module.serve.local()) as url, client(url) as c:
        started = time.monotonic()
        # Both sent while vLLM is still "loading"; the gateway holds them until it fails.
        results: dict[str, httpx.Response] = {}
        stream = threading.Thread(
            target=lambda: results.setdefault(
                "stream", c.post("/v1/chat/completions", json={**CHAT, "stream": True})
            )
        )
        stream.start()
        plain = c.post("/v1/chat/completions", json=CHAT)
        stream.join(30)
        assert time.monotonic() - started < 10  # not the 120 s cold-start budget
        later = c.post("/v1/completions", json={"model": "gemma-3-12b", "prompt": "x"})
    for response in (plain, results["stream"], later):
        assert response.status_code == 503
        assert error_of(response)["code"] == "model_failed_to_start"
        assert error_of(response)["message"].startswith(
            f"Model '{GEMMA}' failed to start: {OOM_CAUSE}"
        )
    wait_until(lambda: legacy.harness.stops, 5, "the failed container did not stop")
    assert env.exits == []


def test_legacy_mode_stops_a_crash_loop(legacy: Any, env: SimpleNamespace) -> None:
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", "unknown-arg")
    limit = start_failures.FAILED_START_LIMIT
    for attempt in range(1, limit + 2):  # each serve() is a new container
        legacy.harness.new_port()
        with serve_asgi(legacy.module.serve.local()) as url, client(url) as c:
            response = c.post("/v1/chat/completions", json=CHAT)
        assert error_of(response)["code"] == "model_failed_to_start"
        assert "--max-num-sequences" in error_of(response)["message"]
        wait_for_stops(legacy.harness, attempt)
    # The last container found the pool blocked and did not start vLLM.
    assert len(recorded_starts(env.record)) == limit
    assert 1790 <= int(response.headers["retry-after"]) <= 1800
    (record,) = legacy.store.snapshot().values()
    assert record["count"] == limit


def test_the_rendered_command_line_is_what_vllm_receives(
    gpu_app: Any, env: SimpleNamespace
) -> None:
    with client(gpu_app.url) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    (start,) = recorded_starts(env.record)
    assert ["vllm", *start["argv"]] == gpu_app.module.MODELS["gemma-3-12b"]["command"]


def test_a_snapshot_pool_records_a_failed_start_and_takes_no_snapshot(
    write_config, tmp_path: Path, env: SimpleNamespace
) -> None:
    """At snapshot time the failure is recorded and raised: Modal then takes no snapshot."""
    l40s = "l40s: {quantization: fp8, max_model_len: 8192}"
    config = write_config(
        BASE_CONFIG.replace(l40s, f"{l40s}\n      h100: {{gpu_snapshot: true}}") + SECRETS
    )
    out = tmp_path / "snap"
    assert run_cli("render", "--config", str(config), "--output-dir", str(out)).exit_code == 0
    pool = next(p for p in load_plan(config).app_for("h100").pools if p.settings.gpu_snapshot)
    module = import_app(out / "generated" / "vllm_h100.py")
    store = InMemoryDict()
    harness = AppHarness(module, store, env)
    harness.new_port()
    env.monkeypatch.setenv("STANDIN_VLLM_FAIL", "kv-cache")
    try:
        with pytest.raises(VllmStartupError, match="KV cache too small for max_model_len"):
            getattr(module, pool.class_name)(model="qwen3-vl-30b")._enter()
    finally:
        harness.close()
    (record,) = store.snapshot().values()
    assert record["count"] == 1
    assert env.exits == []


class _SlowStartVllm:
    """Records the wait it is given; its start() takes `start_seconds` (adapter downloads)."""

    def __init__(self, start_seconds: float) -> None:
        self.start_seconds = start_seconds
        self.waited: float | None = None

    def start(self) -> None:
        time.sleep(self.start_seconds)

    def wait_ready(self, timeout: float) -> None:
        self.waited = timeout

    def stop(self) -> None:
        pass


def test_the_wait_for_vllm_counts_the_time_its_start_took() -> None:
    """Fetching adapters happens in start(); the ready wait gets only what is left of
    ready_timeout, so a slow download cannot push the start past Modal's limit."""
    vllm = _SlowStartVllm(0.3)
    record = lifecycle.StartRecord(start_failures.StartFailures(InMemoryDict()), "k")
    assert lifecycle.start_vllm(vllm, record, ready_timeout=1.0) is None  # type: ignore[arg-type]
    assert vllm.waited is not None and vllm.waited <= 0.7


class _RestoredVllm:
    """A restored vLLM whose /wake_up fails the way httpx reports a dead server."""

    port = 1
    watched = False

    def wake_up(self) -> None:
        raise httpx.ConnectError("connection refused")

    def watch(self, on_exit: Any) -> None:
        self.watched = True


def test_a_vllm_that_does_not_wake_after_a_restore_is_a_recorded_failed_start(
    env: SimpleNamespace,
) -> None:
    store = InMemoryDict()
    record = lifecycle.StartRecord(start_failures.StartFailures(store), "k")
    stopped = threading.Event()
    vllm = _RestoredVllm()
    pool = lifecycle.restore_pool(
        vllm,  # type: ignore[arg-type]
        "org/model",
        record,
        stop_container=stopped.set,
        on_vllm_exit=env.exits.append,
        grace=0.05,
    )
    assert isinstance(pool, lifecycle.FailedPool) and not vllm.watched
    (entry,) = store.snapshot().values()
    assert entry["count"] == 1 and "did not wake up" in entry["cause"]
    assert "ConnectError" in entry["cause"]
    assert stopped.wait(5)  # the container stops after its grace period
