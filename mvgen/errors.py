"""Errors a user can fix: each names where (a path like `models.gemma-3-12b.gpus[2]`),
what was there, what is allowed, and the nearest valid choice."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def format_path(parts: Iterable[str | int]) -> str:
    """`("models", "gemma-3-12b", "gpus", 2)` -> `models.gemma-3-12b.gpus[2]`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def did_you_mean(value: object, choices: Iterable[str]) -> str | None:
    """The closest choice to a near miss, compared case-insensitively."""
    if not isinstance(value, str):
        return None
    by_folded = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None


FILE = "(file)"  # the path of a problem with the file itself, not with one value


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None  # 1-based line in the config file, when known
    hint: str | None = None
    column: int | None = None  # 1-based, for syntax errors

    def render(self) -> str:
        where = []
        if self.line:
            where.append(f"line {self.line}" + (f", column {self.column}" if self.column else ""))
        if self.path != FILE or not where:
            where.append(self.path)
        text = f"{': '.join(where)}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


def choices_text(choices: Sequence[str]) -> str:
    return ", ".join(sorted(choices)) if choices else "(none)"


class ConfigError(Exception):
    """One or more problems in deployments.yaml; nothing has been written."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"{self.source or 'config'}: {count} problem{'s' if count != 1 else ''}"
        return "\n".join([head, *("  " + p.render() for p in self.problems)])
