"""Raise and lower a model pool's minimum containers through Modal's autoscaler.

Runs inside a gpu-mode app, in the functions templates/gpu_app.py.j2 declares:

- the scheduled ones (`warm:` in deployments.yaml) set a model's minimum at a start and
  at `until`: `WarmPools.scheduled`;
- `warm_hold`, which `mvgen warm` spawns, holds a minimum until a time and then restores
  the one the schedule wants: `WarmPools.hold`.

They meet in a shared store (a `modal.Dict`; tests pass a stand-in) where each hold is
recorded, so a scheduled end does not cut a hold short, and a newer hold on the same
model replaces an older one instead of being lowered by it.

`Vllm(model=...).update_autoscaler(min_containers=n)` changes only that model's
containers (a parametrized class runs one pool per model). A `modal deploy` resets every
such override to the class's own min_containers.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mvgen.warm")


@dataclass(frozen=True)
class Hold:
    """A minimum `mvgen warm` keeps until `ends_at` (time.time() seconds)."""

    min_containers: int
    ends_at: float
    token: str  # tells this hold from a newer one on the same model

    def to_store(self) -> dict[str, Any]:
        return {"min_containers": self.min_containers, "ends_at": self.ends_at, "token": self.token}

    @classmethod
    def from_store(cls, value: Any) -> Hold | None:
        try:
            return cls(int(value["min_containers"]), float(value["ends_at"]), str(value["token"]))
        except (TypeError, KeyError, ValueError):
            return None


class WarmPools:
    """The model pools of one app. `classes` maps a model's short name to its pool's
    class (`Vllm`); `holds` has modal.Dict's blocking `get`, `put` and `pop`."""

    def __init__(
        self,
        app: str,
        classes: Mapping[str, Any],
        holds: Any,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.app = app
        self.classes = classes
        self.holds = holds
        self.clock = clock
        self.sleep = sleep

    def key(self, model: str) -> str:
        return f"{self.app}/{model}"

    def set_minimum(self, model: str, count: int) -> None:
        with warnings.catch_warnings():
            # modal 1.6.4 marks Function.update_autoscaler deprecated for
            # Function.autoscaler.update, which a class instance does not have yet; the
            # instance's update_autoscaler is the documented call
            # (https://modal.com/docs/guide/scale).
            warnings.filterwarnings("ignore", message=".*update_autoscaler", category=UserWarning)
            self.classes[model](model=model).update_autoscaler(min_containers=count)
        log.info("warm: %s min_containers=%d", model, count)

    def scheduled(self, model: str, count: int) -> int:
        """A schedule's start or end: `count`, or a running hold's minimum if higher."""
        hold = self._current_hold(model)
        if hold is not None and hold.ends_at > self.clock():
            count = max(count, hold.min_containers)
        self.set_minimum(model, count)
        return count

    def hold(self, model: str, hold: Hold, restore: int) -> bool:
        """Keep `hold.min_containers` until `hold.ends_at`, then set `restore` unless a
        newer hold took over. Safe to run again after a preemption: the end is a time,
        not a duration. True when this hold did the lowering."""
        # Without the record a newer hold cannot replace this one, but the minimum must
        # still come down at the end: the store's failures are logged, not raised.
        self._store("put", self.key(model), hold.to_store())
        self.set_minimum(model, hold.min_containers)
        while (left := hold.ends_at - self.clock()) > 0:
            self.sleep(min(left, 60.0))
        current = self._current_hold(model)
        if current is not None and current.token != hold.token:
            log.info("warm: %s hold %s replaced by %s", model, hold.token, current.token)
            return False
        self.set_minimum(model, restore)
        self._store("pop", self.key(model))
        return True

    def _store(self, method: str, *args: Any) -> None:
        try:
            getattr(self.holds, method)(*args)
        except Exception as exc:
            log.warning("warm: holds store %s failed (%s)", method, exc)

    def _current_hold(self, model: str) -> Hold | None:
        try:
            return Hold.from_store(self.holds.get(self.key(model)))
        except Exception as exc:  # the store is advice: a schedule still runs without it
            log.warning("warm: holds unreadable (%s); going by the schedule alone", exc)
            return None
