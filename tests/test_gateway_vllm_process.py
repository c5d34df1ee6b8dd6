"""VllmProcess with a fake `vllm` command: readiness, the watchdog that lets a dead
vLLM take its container down, stopping the whole process group, and (with the `vllm`
stand-in of tests/standin_vllm_cli.py) failed starts, output and environment."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from gateway_fixtures import wait_until
from standin_vllm import free_port
from standin_vllm_cli import install_standin_vllm, recorded_starts

from mvgen.runtime.vllm_process import (
    TAIL_LINES,
    VllmOutput,
    VllmProcess,
    VllmStartupError,
    vllm_environment,
)

pytestmark = pytest.mark.timeout(60)

FAKE_VLLM = textwrap.dedent(
    """\
    # A fake `vllm serve`: optionally exits at once, answers /health after --delay
    # seconds, then exits with $FAKE_EXIT_CODE after --serve-for seconds.
    import argparse, http.server, os, signal, subprocess, sys, threading, time

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--serve-for", type=float, default=3600.0)
    p.add_argument("--exit-now", type=int)
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--child-pidfile")
    a = p.parse_args()
    if a.exit_now is not None:
        sys.exit(a.exit_now)
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.child_pidfile:  # a worker process, like vLLM's engine core
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open(a.child_pidfile, "w").write(str(child.pid))
    time.sleep(a.delay)
    if a.never_ready:
        time.sleep(3600)

    sleeping = False

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/is_sleeping":  # sleep mode, as vLLM's dev server answers it
                return self.reply(200, '{"is_sleeping": %s}' % str(sleeping).lower())
            self.reply(200 if self.path == "/health" else 404, "")

        def do_POST(self):
            global sleeping
            if not os.environ.get("VLLM_SERVER_DEV_MODE"):
                return self.reply(404, "")  # vLLM only has these routes in dev mode
            if self.path.startswith("/sleep?level="):
                sleeping = True
            elif self.path == "/wake_up":
                sleeping = False
            else:
                return self.reply(404, "")
            self.reply(200, "")

        def reply(self, status, body):
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", a.port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(a.serve_for)
    os._exit(int(os.environ.get("FAKE_EXIT_CODE", "0")))
    """
)


@pytest.fixture
def fake_vllm(tmp_path: Path) -> Path:
    path = tmp_path / "fake_vllm.py"
    path.write_text(FAKE_VLLM)
    return path


def process(script: Path, *args: str, env: dict[str, str] | None = None) -> VllmProcess:
    port = free_port()
    command = [sys.executable, str(script), "--port", str(port), *args]
    return VllmProcess(command, port, env=env)


def alive(pid: int) -> bool:
    """Running and not a zombie (a container's PID 1 may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ExitRecorder:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = threading.Event()

    def __call__(self, returncode: int) -> None:
        self.codes.append(returncode)
        self.called.set()


def test_watchdog_reports_the_exit_code_when_vllm_dies(fake_vllm: Path) -> None:
    vllm = process(fake_vllm, "--delay", "0.5", "--serve-for", "1.0", env={"FAKE_EXIT_CODE": "3"})
    on_exit = ExitRecorder()
    try:
        started = time.monotonic()
        vllm.start()
        vllm.watch(on_exit)
        vllm.wait_ready(10, poll_interval=0.05)
        assert time.monotonic() - started >= 0.5  # not before /health answered
        assert not on_exit.called.is_set()
        assert on_exit.called.wait(10)
        assert on_exit.codes == [3]
        assert vllm.returncode == 3
    finally:
        vllm.stop()


def test_wait_ready_fails_fast_when_vllm_exits_during_startup(fake_vllm: Path) -> None:
    vllm = process(fake_vllm, "--exit-now", "2")
    try:
        vllm.start()
        started = time.monotonic()
        with pytest.raises(VllmStartupError, match="exited with code 2"):
            vllm.wait_ready(30, poll_interval=0.05)
        assert time.monotonic() - started < 10
    finally:
        vllm.stop()


def test_wait_ready_times_out_with_a_clear_error(fake_vllm: Path) -> None:
    vllm = process(fake_vllm, "--never-ready")
    try:
        vllm.start()
        started = time.monotonic()
        with pytest.raises(
            VllmStartupError,
            match=r"did not answer /health with 200 within 1 s \(last phase: starting\)",
        ):
            vllm.wait_ready(1.0, poll_interval=0.1)
        assert 1.0 <= time.monotonic() - started < 3.0
        assert vllm.returncode is None  # still running until stopped
    finally:
        vllm.stop()
    assert vllm.returncode is not None


def test_stop_ends_the_process_group_and_the_watchdog_stays_quiet(
    fake_vllm: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    vllm = process(fake_vllm, "--child-pidfile", str(pidfile))
    on_exit = ExitRecorder()
    try:
        vllm.start()
        vllm.watch(on_exit)
        vllm.wait_ready(10, poll_interval=0.05)
        child = int(pidfile.read_text())
        assert alive(child)
    finally:
        vllm.stop(timeout=5)
    wait_until(lambda: not alive(child), 5, "vLLM's worker outlived stop()")
    assert vllm.returncode is not None
    assert not on_exit.called.wait(0.5)


def test_stop_kills_a_vllm_that_ignores_sigterm(fake_vllm: Path) -> None:
    vllm = process(fake_vllm, "--ignore-sigterm")
    vllm.start()
    try:
        vllm.wait_ready(10, poll_interval=0.05)
        started = time.monotonic()
    finally:
        vllm.stop(timeout=0.5)
    assert vllm.returncode == -9
    assert time.monotonic() - started < 5


def test_misuse_is_reported(fake_vllm: Path) -> None:
    vllm = process(fake_vllm)
    with pytest.raises(RuntimeError, match="start"):
        vllm.wait_ready(1)
    vllm.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            vllm.start()
    finally:
        vllm.stop()


def test_sleep_and_wake_up_for_gpu_snapshots(fake_vllm: Path) -> None:
    vllm = process(fake_vllm, env={"VLLM_SERVER_DEV_MODE": "1"})
    vllm.start()
    try:
        vllm.wait_ready(timeout=20, poll_interval=0.05)
        vllm.sleep()
        assert vllm._is_sleeping(timeout=5)
        vllm.wake_up()
        assert not vllm._is_sleeping(timeout=5)
    finally:
        vllm.stop()


def test_sleep_without_dev_mode_is_a_clear_error(fake_vllm: Path) -> None:
    vllm = process(fake_vllm)
    vllm.start()
    try:
        vllm.wait_ready(timeout=20, poll_interval=0.05)
        with pytest.raises(VllmStartupError, match="404 to POST /sleep"):
            vllm.sleep()
    finally:
        vllm.stop()


# --- failed starts, output and environment, with the `vllm` stand-in (not vLLM) ---------


class Sink:
    """Where the relayed output goes (the container's stdout in production)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def flush(self) -> None:
        pass


def standin_process(tmp_path: Path, sink: Sink, **kwargs) -> VllmProcess:
    exe = install_standin_vllm(tmp_path / "bin")
    port = free_port()
    command = [str(exe), "serve", "org/model", "--port", str(port)]
    return VllmProcess(command, port, log_sink=sink, **kwargs)


def test_a_failed_start_is_explained_and_the_watchdog_stays_out_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_VLLM_FAIL", "oom-load")
    sink = Sink()
    vllm = standin_process(tmp_path, sink)
    on_exit = ExitRecorder()
    try:
        vllm.start()
        vllm.watch(on_exit)  # armed before the start fails, as the old template did
        with pytest.raises(VllmStartupError) as caught:
            vllm.wait_ready(20, poll_interval=0.05)
    finally:
        vllm.stop()
    assert caught.value.cause == "CUDA out of memory while loading weights"
    assert not on_exit.called.wait(0.5)
    # Relayed to the logs as printed, and the tail kept.
    assert b"torch.OutOfMemoryError: CUDA out of memory" in sink.data
    tail = vllm.output.tail()
    assert tail[-1].startswith("RuntimeError: Engine core initialization failed")
    assert any("Loading safetensors checkpoint shards" in line for line in tail)


def test_the_tail_keeps_only_the_last_lines() -> None:
    output = VllmOutput(Sink())
    output.feed(b"".join(b"line %d\n" % i for i in range(TAIL_LINES + 50)))
    output.feed(b"partial", final=False)
    output.feed(b" end\rprogress 2\n", final=True)
    tail = output.tail()
    assert len(tail) == TAIL_LINES
    assert tail[-3:] == [f"line {TAIL_LINES + 49}", "partial end", "progress 2"]


def test_vllm_gets_the_hf_token_under_its_name_and_never_the_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "starts.jsonl"
    monkeypatch.setenv("STANDIN_VLLM_RECORD", str(record))
    monkeypatch.setenv("MY_HF_TOKEN", "hf_test_token_value")
    monkeypatch.setenv("GATEWAY_KEYS", "key-1,key-2")
    monkeypatch.setenv("VLLM_API_KEY", "would-make-vllm-demand-a-key")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    vllm = standin_process(
        tmp_path, Sink(), hf_token_env="MY_HF_TOKEN", hidden_env=["GATEWAY_KEYS"]
    )
    try:
        vllm.start()
        vllm.wait_ready(20, poll_interval=0.05)
    finally:
        vllm.stop()
    (start,) = recorded_starts(record)
    assert start["hf_token"] == "hf_test_token_value"
    assert "VLLM_API_KEY" not in start["env_names"]
    assert "GATEWAY_KEYS" not in start["env_names"]
    assert "PYTHONUNBUFFERED" in start["env_names"]


def test_vllm_environment() -> None:
    parent = {"PATH": "/bin", "TOKEN_X": "hf_1", "API_KEY": "k", "VLLM_API_KEY": "k2"}
    env = vllm_environment(
        parent, {"VLLM_SERVER_DEV_MODE": "1"}, hf_token_env="TOKEN_X", hidden_env=["API_KEY"]
    )
    assert env == {
        "PATH": "/bin",
        "TOKEN_X": "hf_1",
        "HF_TOKEN": "hf_1",
        "VLLM_SERVER_DEV_MODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    assert "HF_TOKEN" not in vllm_environment({"PATH": "/bin"})  # no token: none invented


def test_a_missing_executable_is_a_startup_error(tmp_path: Path) -> None:
    vllm = VllmProcess([str(tmp_path / "no-such-vllm"), "serve", "m"], free_port())
    with pytest.raises(VllmStartupError, match="could not run"):
        vllm.start()
