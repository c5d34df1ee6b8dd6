"""Failed vLLM starts per pool, shared by every container of an app: the crash-loop stop.

A GPU container whose vLLM fails to start records the cause here; one that starts
clears the record. After `limit` failed starts in a row the pool is *blocked* for
`cooldown` seconds: the gateway answers its requests at once with the cause instead of
waking another GPU container, and a container that starts anyway does not start vLLM.

The store is a `modal.Dict` in the generated apps (tests pass an in-memory stand-in with
the same methods). Its key includes a digest of the pool's vLLM command and environment,
so a redeploy that changes the command starts with a clean record. The store is a cache
of advice: when it cannot be reached, starts go ahead as if nothing had failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .errors import ModelFailedToStart
from .models import ServedModel
from .streaming import cancel_and_wait

log = logging.getLogger("mvgen.vllm")

T = TypeVar("T")

FAILED_START_LIMIT = 3  # failed starts in a row that block a pool
COOLDOWN = 1800.0  # seconds a blocked pool is left alone before one more try
LOOKUP_TIMEOUT = 2.0  # seconds the gateway waits for the store before going ahead
CACHE_TTL = 10.0  # seconds the gateway reuses an answer from the store


@dataclass(frozen=True)
class StartFailure:
    cause: str  # in words, safe to show to callers
    count: int  # failed starts in a row
    at: float  # time.time() of the latest

    def to_store(self) -> dict[str, Any]:
        return {"cause": self.cause, "count": self.count, "at": self.at}

    @classmethod
    def from_store(cls, value: Any) -> StartFailure | None:
        try:
            return cls(str(value["cause"]), int(value["count"]), float(value["at"]))
        except (TypeError, KeyError, ValueError):
            return None  # absent, or written by something else: no advice


def pool_key(app: str, model: str, spec: Mapping[str, Any]) -> str:
    """`app/model/digest`: the digest covers what vLLM runs, so a changed command or
    environment (a fix, redeployed) starts with a clean record."""
    what = json.dumps([spec.get("command"), spec.get("env")], sort_keys=True)
    return f"{app}/{model}/{hashlib.sha256(what.encode()).hexdigest()[:16]}"


def pool_keys(app: str, models: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Model key -> pool key, for every model of an app's MODELS literal."""
    return {model: pool_key(app, model, spec) for model, spec in models.items()}


class StartFailures:
    """The shared record. `store` has modal.Dict's `get`, `put` and `pop`, each with an
    `.aio` form; the containers use the blocking forms, the gateway the async ones."""

    def __init__(
        self,
        store: Any,
        *,
        limit: int = FAILED_START_LIMIT,
        cooldown: float = COOLDOWN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.limit = limit
        self.cooldown = cooldown
        self._clock = clock

    def blocking(self, failure: StartFailure | None) -> bool:
        return (
            failure is not None
            and failure.count >= self.limit
            and self._clock() - failure.at < self.cooldown
        )

    def retry_after(self, failure: StartFailure) -> int:
        """Whole seconds until a blocked pool may be tried again (at least 1)."""
        return max(1, math.ceil(failure.at + self.cooldown - self._clock()))

    def blocked(self, key: str) -> StartFailure | None:
        """The failure that blocks this pool now, if any (blocking call)."""
        failure = self._read(key)
        return failure if self.blocking(failure) else None

    async def blocked_async(self, key: str) -> StartFailure | None:
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                value = await self._store.get.aio(key)
        except Exception as exc:  # the store is advice; never fail a request over it
            log.warning("start-failure record unreadable (%s); going ahead", type(exc).__name__)
            return None
        failure = StartFailure.from_store(value)
        return failure if self.blocking(failure) else None

    def record_failure(self, key: str, cause: str) -> StartFailure:
        """Count one more failed start in a row; returns the record (blocking call)."""
        previous = self._read(key)
        failure = StartFailure(cause, (previous.count if previous else 0) + 1, self._clock())
        try:
            self._store.put(key, failure.to_store())
        except Exception as exc:
            log.warning("could not record the failed start (%s)", type(exc).__name__)
        return failure

    def record_success(self, key: str) -> None:
        try:
            self._store.pop(key, None)
        except Exception as exc:
            log.warning("could not clear the start-failure record (%s)", type(exc).__name__)

    def _read(self, key: str) -> StartFailure | None:
        try:
            return StartFailure.from_store(self._store.get(key))
        except Exception as exc:
            log.warning("start-failure record unreadable (%s)", type(exc).__name__)
            return None


class LocalStart(Protocol):
    """vLLM starting in this very container (legacy mode), as the gateway sees it."""

    @property
    def error(self) -> ModelFailedToStart | None: ...

    async def wait_failed(self) -> ModelFailedToStart: ...


class StartGate:
    """What the gateway asks before it wakes a model's pool, and while it waits for it.

    `check` answers a blocked pool at once with 503 `model_failed_to_start`. In legacy
    mode `guard` also ends a wait for vLLM as soon as its start fails in this container.
    Answers from the store are reused for CACHE_TTL seconds, one lookup at a time.
    """

    def __init__(
        self,
        failures: StartFailures,
        keys: Mapping[str, str],
        *,
        local: LocalStart | None = None,
        ttl: float | None = None,
    ) -> None:
        self._failures = failures
        self._keys = dict(keys)
        self._local = local
        self._ttl = ttl  # None: CACHE_TTL, read when used
        self._cache: dict[str, tuple[float, StartFailure | None]] = {}
        self._lookups: dict[str, asyncio.Future[StartFailure | None]] = {}

    async def check(self, model: ServedModel) -> None:
        if self._local is not None and self._local.error is not None:
            raise self._local.error
        key = self._keys.get(model.key)
        if key is None:
            return
        failure = await self._lookup(key)
        if failure is not None and self._failures.blocking(failure):
            raise ModelFailedToStart(
                model.served_name, failure.cause, retry_after=self._failures.retry_after(failure)
            )

    async def guard(self, model: ServedModel, work: Awaitable[T]) -> T:
        """`await work`, unless vLLM's start in this container fails first."""
        if self._local is None:
            return await work
        task = asyncio.ensure_future(work)
        failed = asyncio.ensure_future(self._local.wait_failed())
        try:
            await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                await cancel_and_wait(task)
            await cancel_and_wait(failed)
        if task.cancelled():
            if failed.done() and not failed.cancelled():
                raise failed.result()
            raise asyncio.CancelledError
        return task.result()

    async def _lookup(self, key: str) -> StartFailure | None:
        cached = self._cache.get(key)
        now = time.monotonic()
        ttl = CACHE_TTL if self._ttl is None else self._ttl
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._failures.blocked_async(key))
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda done: self._store_answer(key, done))
        return await asyncio.shield(lookup)

    def _store_answer(self, key: str, done: asyncio.Future[StartFailure | None]) -> None:
        self._lookups.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._cache[key] = (time.monotonic(), done.result())
