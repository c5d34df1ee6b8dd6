"""The options `vllm serve` accepts in one vLLM version, and a check of a command line
against them.

The options come from data committed in the repository, mvgen/data/vllm/<version>.json,
which `make vllm-data VLLM=<version>` writes from the real vLLM wheel
(scripts/vllm_data.py, docs/vllm-flags.md). Nothing here downloads or opens a wheel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_DIR",
    "Flag",
    "FlagProblem",
    "FlagSet",
    "FlagUse",
    "VllmDataMissing",
    "accepted_flags",
    "available_versions",
    "check_serve_argv",
    "flag_value",
    "normalise_flag",
    "scan_serve_argv",
    "unknown_flags",
]

DATA_DIR = Path(__file__).resolve().parent / "data" / "vllm"

Nargs = int | str  # 0 = no value, 1 = one value, "?" / "+" / "*" / n as argparse
Choice = str | int


class VllmDataMissing(LookupError):
    """No committed option data for the requested vLLM version."""

    def __init__(self, version: str) -> None:
        have = ", ".join(available_versions()) or "none"
        self.version = version
        super().__init__(
            f"no vLLM option data for vLLM {version} (committed: {have}); run "
            f"`make vllm-data VLLM={version}` and commit mvgen/data/vllm/{version}.json"
        )


@dataclass(frozen=True)
class Flag:
    option: str
    nargs: Nargs
    dest: str
    deprecated: bool = False
    # The values vLLM accepts, checked by argparse or right after it; None: any value.
    choices: tuple[Choice, ...] | None = None

    @property
    def takes_value(self) -> bool:
        return self.nargs != 0

    def accepts(self, value: str) -> bool:
        return self.choices is None or value in {str(c) for c in self.choices}


@dataclass(frozen=True, repr=False)
class FlagSet:
    version: str
    wheel: str
    flags: dict[str, Flag]
    # Options whose choices the data could not list: their values are not checked.
    unchecked: tuple[str, ...] = ()

    def __repr__(self) -> str:  # the full mapping drowns test failure output
        return f"FlagSet(vLLM {self.version}: {len(self.flags)} options)"

    def __contains__(self, option: object) -> bool:
        return option in self.flags

    def __len__(self) -> int:
        return len(self.flags)

    def get(self, option: str) -> Flag | None:
        return self.flags.get(option)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> FlagSet:
        flags = {
            name: Flag(
                name,
                entry["nargs"],
                entry["dest"],
                entry["deprecated"],
                tuple(entry["choices"]) if "choices" in entry else None,
            )
            for name, entry in data["options"].items()
        }
        return cls(data["vllm"], data["wheel"], flags, tuple(data["unchecked_choices"]))


def available_versions() -> list[str]:
    """vLLM versions with committed option data, oldest first."""
    versions = [p.stem for p in DATA_DIR.glob("*.json")]
    return sorted(versions, key=lambda v: [int(x) if x.isdigit() else x for x in v.split(".")])


@cache
def accepted_flags(version: str) -> FlagSet:
    """The options `vllm serve` accepts in vllm==version, from the committed data."""
    path = DATA_DIR / f"{version}.json"
    if not path.is_file():
        raise VllmDataMissing(version)
    return FlagSet.from_data(json.loads(path.read_text(encoding="utf-8")))


# --------------------------------------------------------------- argv checking


@dataclass(frozen=True)
class FlagProblem:
    token: str  # the flag as written (never a value: it may be a secret)
    reason: str
    index: int | None = None  # argv index of the token (or of the bad value)


@dataclass(frozen=True)
class FlagUse:
    """One option on a command line, with the values argparse would give it."""

    index: int  # argv index of the flag
    written: str  # as written, without an `=value`
    flag: Flag | None  # None when vLLM has no such option
    values: tuple[tuple[int, str], ...] = ()  # (argv index, value)
    dotted: bool = False  # `--compilation-config.mode 3`: one key of a JSON value


_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` among `args`, spelt with dashes or
    underscores as vLLM accepts; the last one wins, as in argparse."""
    value = None
    for i, arg in enumerate(args):
        name, eq, given = arg.partition("=")
        if normalise_flag(name) != flag:
            continue
        if eq:
            value = given
        elif i + 1 < len(args):
            value = args[i + 1]
    return value


def _is_flag(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token)


def normalise_flag(name: str) -> str:
    """vLLM's parser accepts `--max_model_len`: dashes before the first dot."""
    if not name.startswith("--"):
        return name
    head, dot, tail = name[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + tail


@dataclass
class _ArgvScan:
    flags: FlagSet
    argv: Sequence[str]
    problems: list[FlagProblem] = field(default_factory=list)
    uses: list[FlagUse] = field(default_factory=list)
    model_seen: bool = False
    before_model: list[tuple[int, str]] = field(default_factory=list)

    def run(self) -> _ArgvScan:
        index = 2
        if index < len(self.argv) and not _is_flag(self.argv[index]):
            self.model_seen = True
            index += 1
        while index < len(self.argv):
            index = self._step(index)
        if not self.model_seen:
            if self.before_model:  # e.g. a multi-value flag swallowed the model
                at, first = self.before_model[0]
                self.problems.append(FlagProblem(first, "flag before the model", at))
            self.problems.append(FlagProblem("<model>", "no model given right after `serve`"))
        return self

    def _step(self, index: int) -> int:
        token = self.argv[index]
        if not _is_flag(token):
            if self.model_seen:
                self.problems.append(FlagProblem(token, "unexpected positional", index))
            else:
                self.model_seen = True
                for at, flag in self.before_model:
                    self.problems.append(FlagProblem(flag, "flag before the model", at))
                reason = "model must come right after `serve`"
                self.problems.append(FlagProblem(token, reason, index))
            return index + 1
        name, has_value, inline = token.partition("=")
        if not self.model_seen:
            self.before_model.append((index, name))
        return self._flag(index, name, inline if has_value else None)

    def _flag(self, index: int, written: str, inline: str | None) -> int:
        name = normalise_flag(written)
        if name.startswith("-O") and not name.startswith("--"):
            # -O3 / -O=3 / -O 3: vLLM rewrites these to --optimization-level.
            flag = self._require(index, written, "--optimization-level")
            if inline is not None or len(name) > 2:
                value = inline if inline is not None else name[2:]
                self._use(index, written, flag, ((index, value),))
                return index + 1
            end = self._skip_values(index + 1, 1)
            self._use(index, written, flag, self._values(index + 1, end))
            return end
        dotted = "." in name
        if dotted:  # --compilation-config.mode 3: one key of a JSON-valued flag
            name = name.split(".", 1)[0]
        flag = self._require(index, written, name)
        if flag is None or (dotted and not flag.takes_value):
            if flag is not None:
                self.problems.append(FlagProblem(written, "takes no JSON value", index))
            end = self._skip_values(index + 1, "*")
            self._use(index, written, flag, self._values(index + 1, end), dotted)
            return end
        nargs = 1 if dotted else flag.nargs
        if inline is not None:
            if nargs == 0:
                self.problems.append(FlagProblem(written, "takes no value", index))
            self._use(index, written, flag, ((index, inline),), dotted)
            return index + 1
        end = self._skip_values(index + 1, nargs)
        if nargs not in (0, "?", "*") and end == index + 1:
            self.problems.append(FlagProblem(written, "missing its value", index))
        self._use(index, written, flag, self._values(index + 1, end), dotted)
        return end

    def _use(
        self,
        index: int,
        written: str,
        flag: Flag | None,
        values: tuple[tuple[int, str], ...],
        dotted: bool = False,
    ) -> None:
        self.uses.append(FlagUse(index, written, flag, values, dotted))

    def _values(self, start: int, end: int) -> tuple[tuple[int, str], ...]:
        return tuple((i, self.argv[i]) for i in range(start, end))

    def _require(self, index: int, written: str, name: str) -> Flag | None:
        flag = self.flags.get(name)
        if flag is None:
            reason = f"not a vllm serve flag in vLLM {self.flags.version}"
            self.problems.append(FlagProblem(written, reason, index))
        return flag

    def _skip_values(self, start: int, nargs: Nargs) -> int:
        if nargs in ("?", "+", "*"):
            limit = 1 if nargs == "?" else len(self.argv)
        else:
            limit = int(nargs)
        end = start
        while end < len(self.argv) and end - start < limit and not _is_flag(self.argv[end]):
            end += 1
        return end


def _scan(argv: Sequence[str], flags: FlagSet) -> _ArgvScan:
    if len(argv) < 2 or Path(argv[0]).name != "vllm" or argv[1] != "serve":
        raise ValueError(f"not a `vllm serve` command line: {list(argv)[:3]}")
    return _ArgvScan(flags, argv).run()


def scan_serve_argv(argv: Sequence[str], flags: FlagSet) -> list[FlagUse]:
    """Every option on a `vllm serve ...` command line, with its values."""
    return _scan(argv, flags).uses


def check_serve_argv(argv: Sequence[str], flags: FlagSet) -> list[FlagProblem]:
    """Every problem vLLM would have with a `vllm serve ...` argv: unknown or misplaced
    flags, missing or extra values, and values outside an option's choices."""
    scan = _scan(argv, flags)
    problems = list(scan.problems)
    for use in scan.uses:
        if use.flag is None or use.dotted:
            continue
        for index, value in use.values:
            if not use.flag.accepts(value):
                problems.append(FlagProblem(use.written, "value not among its choices", index))
    return problems


def unknown_flags(argv: Sequence[str], flags: FlagSet) -> list[str]:
    """Tokens of argv (as written) that vllm serve in `flags.version` rejects."""
    tokens = [problem.token for problem in _scan(argv, flags).problems]
    return list(dict.fromkeys(tokens))  # a flag can be both unknown and misplaced
