"""The shared record of failed starts and the gateway's gate (start_failures.py), over an
in-memory stand-in for modal.Dict (tests/modal_dict_standin.py, not Modal)."""

from __future__ import annotations

import asyncio

import pytest
from modal_dict_standin import InMemoryDict

from mvgen.runtime.errors import ModelFailedToStart
from mvgen.runtime.models import ServedModel
from mvgen.runtime.start_failures import StartFailures, StartGate, pool_key, pool_keys

SPEC = {"command": ["vllm", "serve", "org/m", "--max-model-len", "4096"], "env": {}}
MODEL = ServedModel("m", "org/M")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_key_changes_with_the_command_and_environment() -> None:
    key = pool_key("vllm-h100", "m", SPEC)
    assert key.startswith("vllm-h100/m/")
    assert key == pool_key("vllm-h100", "m", dict(SPEC))
    other_command = {**SPEC, "command": [*SPEC["command"][:-1], "8192"]}
    assert pool_key("vllm-h100", "m", other_command) != key
    assert pool_key("vllm-h100", "m", {**SPEC, "env": {"X": "1"}}) != key
    assert pool_key("vllm-l40s", "m", SPEC) != key
    assert pool_keys("vllm-h100", {"m": SPEC}) == {"m": key}


def test_a_pool_is_blocked_after_the_limit_until_the_cooldown() -> None:
    store, clock = InMemoryDict(), Clock()
    failures = StartFailures(store, limit=3, cooldown=600, clock=clock)
    for count in (1, 2):
        assert failures.record_failure("k", "CUDA out of memory").count == count
        assert failures.blocked("k") is None
    third = failures.record_failure("k", "CUDA out of memory")
    assert failures.blocked("k") == third
    assert failures.retry_after(third) == 600
    clock.now += 599.5
    assert failures.blocked("k") == third
    assert failures.retry_after(third) == 1
    clock.now += 1
    assert failures.blocked("k") is None  # one more try after the cooldown
    assert failures.record_failure("k", "again").count == 4
    assert failures.blocked("k") is not None  # ... which failing blocks again at once


def test_a_successful_start_clears_the_record() -> None:
    store = InMemoryDict()
    failures = StartFailures(store, limit=2)
    failures.record_failure("k", "x")
    failures.record_success("k")
    assert store.snapshot() == {}
    assert failures.record_failure("k", "x").count == 1  # counting restarts


def test_an_unreachable_store_never_blocks_and_never_raises() -> None:
    store = InMemoryDict()
    failures = StartFailures(store, limit=1)
    failures.record_failure("k", "x")
    store.unreachable = True
    assert failures.blocked("k") is None
    assert asyncio.run(failures.blocked_async("k")) is None
    assert failures.record_failure("k", "y").count == 1  # returned, not stored
    failures.record_success("k")


def test_a_foreign_value_is_no_advice() -> None:
    store = InMemoryDict()
    store.put("k", "not a record")
    assert StartFailures(store, limit=1).blocked("k") is None


def test_the_gate_answers_a_blocked_model_with_the_cause() -> None:
    store, clock = InMemoryDict(), Clock()
    failures = StartFailures(store, limit=1, cooldown=60, clock=clock)
    gate = StartGate(failures, {"m": "k"}, ttl=0)
    asyncio.run(gate.check(MODEL))  # nothing recorded: goes ahead
    failures.record_failure("k", "CUDA out of memory while loading weights")
    with pytest.raises(ModelFailedToStart) as caught:
        asyncio.run(gate.check(MODEL))
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (503, "model_failed_to_start", 60)
    assert error.message.startswith(
        "Model 'org/M' failed to start: CUDA out of memory while loading weights."
    )
    assert "redeploy" in error.message
    asyncio.run(gate.check(ServedModel("other", "org/Other")))  # no key: not gated


def test_the_gate_reuses_answers_and_looks_up_once_at_a_time() -> None:
    store = InMemoryDict()

    async def scenario() -> None:
        gate = StartGate(StartFailures(store), {"m": "k"}, ttl=30)
        await asyncio.gather(*(gate.check(MODEL) for _ in range(50)))
        await gate.check(MODEL)

    asyncio.run(scenario())
    assert store.calls == ["get"]
