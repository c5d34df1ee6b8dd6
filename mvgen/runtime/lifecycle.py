"""A GPU container's start, as the generated apps run it.

vLLM is started unless its pool is blocked (start_failures.py), and waited for within
`ready_timeout`, which the apps set below Modal's startup_timeout so that our error, not
Modal's limit, ends a slow start. A start that fails is recorded with its cause; the
container then answers every request with 503 `model_failed_to_start` and that cause for
`grace` seconds, and stops (gracefully: requests it holds are answered first). A start
that succeeds clears the record and arms the watchdog.

- gpu mode: `start_pool` in the pool class's `@modal.enter()`; its methods delegate to
  the PoolServer (or FailedPool) it returns.
- legacy mode: `BackgroundStart`, because the gateway in the same container answers
  while vLLM loads; the gateway's StartGate asks it how the start went.
- GPU snapshots: `start_or_raise` at snapshot time, so no snapshot holds a failed start;
  `restore_pool` after each restore.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

import httpx

from .errors import ModelFailedToStart
from .start_failures import StartFailure, StartFailures
from .vllm_process import FailedPool, PoolServer, VllmProcess, VllmStartupError

log = logging.getLogger("mvgen.vllm")

FAILED_CONTAINER_GRACE = 30.0  # seconds a failed container answers the cause, then stops
LOCAL_POLL_INTERVAL = 0.2  # seconds between looks at a start running in this container


class StartRecord:
    """One pool's entry in the shared record of failed starts."""

    def __init__(self, failures: StartFailures, key: str) -> None:
        self.failures = failures
        self.key = key

    def error(self, name: str, failure: StartFailure) -> ModelFailedToStart:
        """What callers get: with Retry-After when the pool is now blocked."""
        blocked = self.failures.blocking(failure)
        retry_after = self.failures.retry_after(failure) if blocked else None
        return ModelFailedToStart(name, failure.cause, retry_after=retry_after)


def start_vllm(vllm: VllmProcess, record: StartRecord, ready_timeout: float) -> StartFailure | None:
    """Start vLLM and wait until it is ready; the failure, recorded, when it is not.
    A blocked pool does not start vLLM at all."""
    blocked = record.failures.blocked(record.key)
    if blocked is not None:
        log.error("not starting vLLM: %d failed starts in a row (%s)", blocked.count, blocked.cause)
        return blocked
    # One deadline for the whole start: fetching LoRA adapters (in start()) counts, so
    # our error still comes before Modal's startup_timeout.
    deadline = time.monotonic() + ready_timeout
    try:
        vllm.start()
        vllm.wait_ready(max(0.0, deadline - time.monotonic()))
    except VllmStartupError as exc:
        vllm.stop()
        failure = record.failures.record_failure(record.key, exc.cause)
        log.error("vLLM failed to start (%d in a row): %s", failure.count, exc.cause)
        return failure
    record.failures.record_success(record.key)
    return None


def start_pool(
    vllm: VllmProcess,
    name: str,
    record: StartRecord,
    *,
    ready_timeout: float,
    stop_container: Callable[[], None],
    on_vllm_exit: Callable[[int], None],
    grace: float | None = None,
) -> PoolServer | FailedPool:
    """gpu mode's `@modal.enter()`: what the pool's methods delegate to."""
    failure = start_vllm(vllm, record, ready_timeout)
    if failure is None:
        vllm.watch(on_vllm_exit)
        return PoolServer(vllm.port)
    stop_later(stop_container, grace)
    return FailedPool(record.error(name, failure))


def restore_pool(
    vllm: VllmProcess,
    name: str,
    record: StartRecord,
    *,
    stop_container: Callable[[], None],
    on_vllm_exit: Callable[[int], None],
    grace: float | None = None,
) -> PoolServer | FailedPool:
    """GPU snapshots' `@modal.enter(snap=False)`: wake the restored vLLM, then serve as
    start_pool does; a vLLM that does not wake counts as a failed start."""
    try:
        vllm.wake_up()
    except (VllmStartupError, httpx.HTTPError, ValueError) as exc:
        cause = exc.cause if isinstance(exc, VllmStartupError) else f"{type(exc).__name__}: {exc}"
        failure = record.failures.record_failure(record.key, f"vLLM did not wake up: {cause}")
        log.error("vLLM did not wake up after a restore (%d in a row): %s", failure.count, cause)
        stop_later(stop_container, grace)
        return FailedPool(record.error(name, failure))
    vllm.watch(on_vllm_exit)
    return PoolServer(vllm.port)


def start_or_raise(vllm: VllmProcess, record: StartRecord, *, ready_timeout: float) -> None:
    """Before a GPU snapshot: a failed start is recorded and raised, so Modal takes no
    snapshot of it (the record still stops a crash loop)."""
    failure = start_vllm(vllm, record, ready_timeout)
    if failure is not None:
        raise VllmStartupError(failure.cause)


class BackgroundStart:
    """legacy mode: vLLM starts in a thread while the gateway in the same container
    already answers; on failure the gateway answers the cause (see StartGate)."""

    def __init__(
        self,
        vllm: VllmProcess,
        name: str,
        record: StartRecord,
        *,
        ready_timeout: float,
        stop_container: Callable[[], None],
        on_vllm_exit: Callable[[int], None],
        grace: float | None = None,
    ) -> None:
        self._vllm = vllm
        self._name = name
        self._record = record
        self._ready_timeout = ready_timeout
        self._stop_container = stop_container
        self._on_vllm_exit = on_vllm_exit
        self._grace = grace
        self._error: ModelFailedToStart | None = None
        self.settled = threading.Event()

    @property
    def error(self) -> ModelFailedToStart | None:
        return self._error

    def begin(self) -> BackgroundStart:
        threading.Thread(target=self._run, name="vllm-start", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            try:
                failure = start_vllm(self._vllm, self._record, self._ready_timeout)
            except Exception as exc:  # a bug must not leave requests waiting forever
                log.exception("starting vLLM failed")
                failure = StartFailure(f"starting vLLM failed ({type(exc).__name__})", 1, 0.0)
            if failure is None:
                self._vllm.watch(self._on_vllm_exit)
                return
            self._error = self._record.error(self._name, failure)
            stop_later(self._stop_container, self._grace)
        finally:
            self.settled.set()

    async def wait_failed(self) -> ModelFailedToStart:
        """Returns the error once the start has failed; never returns if it succeeds."""
        while not self.settled.is_set():
            await asyncio.sleep(LOCAL_POLL_INTERVAL)
        if self._error is None:
            await asyncio.Future()  # started: only cancellation ends this wait
        assert self._error is not None
        return self._error


def stop_later(stop_container: Callable[[], None], grace: float | None) -> threading.Timer:
    """Call `stop_container` after `grace` seconds (default FAILED_CONTAINER_GRACE); if
    it fails, exit hard, so a failed container never lingers on a GPU until scale-down."""

    def stop() -> None:
        try:
            stop_container()
        except Exception:
            log.exception("stopping the container failed; exiting")
            os._exit(1)

    timer = threading.Timer(FAILED_CONTAINER_GRACE if grace is None else grace, stop)
    timer.daemon = True
    timer.start()
    return timer
