"""Values as source literals, so no value in deployments.yaml can become code.

Templates never paste a raw string: every value goes through `py()` or `yaml()`.
`py()` writes containers exploded with trailing commas and strings the way ruff's
formatter would, so generated files pass `ruff format --check` without running ruff.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

INDENT = "    "
LINE_LENGTH = 100  # ruff's line-length in pyproject.toml, which lints the generated files


def py(value: Any, indent: int = 0) -> str:
    """A Python literal for `value` (str, int, float, bool, None, list, tuple, dict)."""
    if isinstance(value, str):
        return py_str(value)
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        items = [f"{py_str(str(k))}: {py(v, indent + 1)}" for k, v in value.items()]
        return _block("{", items, "}", indent)
    if isinstance(value, Sequence):
        return _block("[", [py(v, indent + 1) for v in value], "]", indent)
    raise TypeError(f"no literal for {type(value).__name__}")


def py_str(text: str) -> str:
    """Double quotes unless that needs more escapes, as ruff's formatter prefers."""
    if '"' in text and "'" not in text:
        return "'" + json.dumps(text)[1:-1].replace('\\"', '"') + "'"
    return json.dumps(text)


def _block(open_: str, items: list[str], close: str, indent: int) -> str:
    if not items:
        return open_ + close
    pad = INDENT * (indent + 1)
    body = "".join(_line(f"{pad}{item},") for item in items)
    return f"{open_}\n{body}{INDENT * indent}{close}"


def _line(text: str) -> str:
    """One item's line. A string longer than a line (a JSON value in extra_args, say)
    cannot be split without changing it, so the line tells ruff so."""
    if len(text) > LINE_LENGTH and "\n" not in text:
        text += "  # noqa: E501"
    return text + "\n"


def yaml(value: Any) -> str:
    """A YAML flow scalar or collection; JSON is valid YAML and quotes every string."""
    return json.dumps(value, sort_keys=False)
