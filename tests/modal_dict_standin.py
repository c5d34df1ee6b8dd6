"""An in-memory stand-in for `modal.Dict`, for tests only. It is NOT Modal.

It offers the methods mvgen's runtime uses (`get`, `put`, `pop`), each callable as is
(blocking, as in a container's `@modal.enter()`) and as `.aio(...)` (as in the gateway),
like modal's synchronicity wrappers. Values are pickled on the way in and out, as Modal
serialises them. `unreachable = True` makes every call raise, as a network failure would.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any


class _Method:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


class InMemoryDict:
    def __init__(self) -> None:
        self._data: dict[Any, bytes] = {}
        self._lock = threading.Lock()
        self.unreachable = False
        self.calls: list[str] = []
        self.get = _Method(self._get)
        self.put = _Method(self._put)
        self.pop = _Method(self._pop)

    def snapshot(self) -> dict[Any, Any]:
        with self._lock:
            return {k: pickle.loads(v) for k, v in self._data.items()}

    def edit(self, key: Any, **changes: Any) -> None:
        """Change fields of a stored value in place (e.g. move a timestamp back)."""
        with self._lock:
            value = pickle.loads(self._data[key])
            value.update(changes)
            self._data[key] = pickle.dumps(value)

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.unreachable:
            raise ConnectionError("stand-in Dict: unreachable")

    def _get(self, key: Any, default: Any = None) -> Any:
        self._check("get")
        with self._lock:
            return pickle.loads(self._data[key]) if key in self._data else default

    def _put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        self._check("put")
        with self._lock:
            if skip_if_exists and key in self._data:
                return False
            self._data[key] = pickle.dumps(value)
            return True

    def _pop(self, key: Any, default: Any = None) -> Any:
        self._check("pop")
        with self._lock:
            return pickle.loads(self._data.pop(key)) if key in self._data else default
