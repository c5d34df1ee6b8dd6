"""Check `vllm serve` command lines against a pinned vLLM version's own flags.

The flags are read from the real vLLM wheel (downloaded once with pip, cached) by
walking its source with `ast`: importing vllm would need torch and a GPU build.
vLLM builds its parser in code (`get_kwargs(SomeConfig)` turns dataclass fields
into argparse kwargs, `add_cli_args` methods call each other), so this module
runs a tiny symbolic interpreter over exactly that code, starting from the
`serve` subcommand's `subparser_init`. Anything it cannot follow is recorded in
`FlagSet.unresolved` instead of being guessed, so the tests can insist on none.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Flag",
    "FlagProblem",
    "FlagSet",
    "WheelDownloadError",
    "WheelParseError",
    "accepted_flags",
    "check_serve_argv",
    "unknown_flags",
    "wheel_path",
]

# Cached JSON records which parser wrote it: any edit to this file re-parses.
PARSER_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "vllm-wheels"
CACHE_ENV = "MVGEN_WHEEL_CACHE"

# pip only takes exact --platform tags: offer every manylinux tag a glibc 2.35
# x86_64 host accepts (Ubuntu 22.04, the base of Modal's CUDA images). vLLM moves
# between tags (0.12.0 ships manylinux_2_31, 0.33.0 manylinux_2_28).
_PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{minor}_x86_64" for minor in range(17, 36)]
_PYTHON_VERSION = "3.12"

Nargs = int | str  # 0 = no value, 1 = one value, "?" / "+" / "*" / n as argparse


class WheelDownloadError(RuntimeError):
    """pip could not fetch the requested vLLM wheel."""


class WheelParseError(RuntimeError):
    """The wheel's argument code has a shape this module does not understand."""


@dataclass(frozen=True)
class Flag:
    option: str
    nargs: Nargs
    dest: str
    deprecated: bool = False

    @property
    def takes_value(self) -> bool:
        return self.nargs != 0


@dataclass(frozen=True, repr=False)
class FlagSet:
    version: str
    wheel: str
    flags: dict[str, Flag]
    # add_argument calls (file:line) whose names could not be worked out.
    unresolved: tuple[str, ...] = ()
    # Wheel members the parser read, in the order it read them.
    sources: tuple[str, ...] = ()

    def __repr__(self) -> str:  # the full mapping drowns test failure output
        return f"FlagSet(vLLM {self.version}: {len(self.flags)} options)"

    def __contains__(self, option: object) -> bool:
        return option in self.flags

    def __len__(self) -> int:
        return len(self.flags)

    def get(self, option: str) -> Flag | None:
        return self.flags.get(option)

    def takes_value(self, option: str) -> bool:
        return self.flags[option].takes_value

    @property
    def dests(self) -> set[str]:
        return {flag.dest for flag in self.flags.values()}

    def to_json(self) -> dict[str, Any]:
        return {
            "parser_version": PARSER_VERSION,
            "version": self.version,
            "wheel": self.wheel,
            "flags": {name: [f.nargs, f.dest, f.deprecated] for name, f in self.flags.items()},
            "unresolved": list(self.unresolved),
            "sources": list(self.sources),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlagSet:
        flags = {
            name: Flag(name, nargs, dest, deprecated)
            for name, (nargs, dest, deprecated) in data["flags"].items()
        }
        return cls(
            version=data["version"],
            wheel=data["wheel"],
            flags=flags,
            unresolved=tuple(data["unresolved"]),
            sources=tuple(data["sources"]),
        )


# --------------------------------------------------------------------------- wheel


def _cache_dir(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return cache_dir
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def _cached_wheel(version: str, directory: Path) -> Path | None:
    wheels = sorted(directory.glob(f"vllm-{version}-*x86_64.whl"))
    return wheels[0] if wheels else None


def _pip_command() -> list[str]:
    """A pip to run: this interpreter's, else one through uv, else one on PATH."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    # uv-managed venvs ship without pip; `uv tool run` fetches one from the index.
    if uv := shutil.which("uv"):
        return [uv, "tool", "run", "--from", "pip", "pip"]
    for name in ("pip3", "pip"):
        if found := shutil.which(name):
            return [found]
    raise WheelDownloadError("no pip found: install pip or uv to download wheels")


def _download_command(version: str, dest: Path) -> list[str]:
    platforms = [arg for tag in _PLATFORMS for arg in ("--platform", tag)]
    return [
        *_pip_command(),
        "download",
        f"vllm=={version}",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        _PYTHON_VERSION,
        *platforms,
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
    ]


def wheel_path(version: str, cache_dir: Path | None = None) -> Path:
    """Path of the vllm==version x86_64 wheel, downloading it into the cache once."""
    directory = _cache_dir(cache_dir)
    if cached := _cached_wheel(version, directory):
        return cached
    directory.mkdir(parents=True, exist_ok=True)
    print(
        f"mvgen: downloading the vllm=={version} wheel (a few hundred MB, "
        f"one time) into {directory}",
        file=sys.stderr,
        flush=True,
    )
    # Download into a scratch dir, then move: an interrupted run leaves no
    # truncated wheel behind that later runs would trust.
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
        cmd = _download_command(version, Path(tmp))
        result = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, check=False)
        found = _cached_wheel(version, Path(tmp))
        if result.returncode != 0 or found is None:
            raise WheelDownloadError(
                f"could not download vllm=={version} with `{shlex.join(cmd)}` "
                f"(exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )
        target = directory / found.name
        found.replace(target)
    print(f"mvgen: saved {target}", file=sys.stderr, flush=True)
    return target


# ------------------------------------------------------------------ wheel source


class _Wheel:
    """Lazy access to the wheel's Python modules as ASTs; nothing is extracted."""

    def __init__(self, path: Path) -> None:
        self._zip = zipfile.ZipFile(path)
        self._names = set(self._zip.namelist())
        self._trees: dict[str, ast.Module | None] = {}
        self.read: list[str] = []

    def close(self) -> None:
        self._zip.close()

    def member(self, module: str) -> str | None:
        base = module.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in self._names:
                return candidate
        return None

    def tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            member = self.member(module)
            if member is None:
                self._trees[module] = None
            else:
                self.read.append(member)
                source = self._zip.read(member).decode("utf-8")
                self._trees[module] = ast.parse(source, filename=member)
        return self._trees[module]

    def is_package(self, module: str) -> bool:
        member = self.member(module)
        return member is not None and member.endswith("__init__.py")


# ---------------------------------------------------------- symbolic values


@dataclass(frozen=True)
class _ClassRef:
    module: str
    node: ast.ClassDef


@dataclass(frozen=True)
class _FuncRef:
    module: str
    node: ast.FunctionDef
    owner: _ClassRef | None = None  # class the function is defined in


@dataclass(frozen=True)
class _AliasRef:  # a module-level `X = <type expression>`
    module: str
    value: ast.expr


class _Parser:
    """An argparse parser, argument group or subparsers object."""


_PARSER = _Parser()


@dataclass
class _Frame:
    module: str
    env: dict[str, Any]
    owner: _ClassRef | None = None  # class whose method runs (for super())
    receiver: _ClassRef | None = None  # `cls` / `self`'s class


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


_ZERO_ARG_ACTIONS = {
    "store_true",
    "store_false",
    "store_const",
    "append_const",
    "count",
    "help",
    "version",
}
_ARGPARSE_NARGS = {"OPTIONAL": "?", "ZERO_OR_MORE": "*", "ONE_OR_MORE": "+"}
_BUILTIN_KINDS = {"bool", "str", "int", "float", "bytes", "list", "tuple", "set"}
_BUILTIN_KINDS |= {"dict", "frozenset"}
_TYPING_KINDS = {"List": "list", "Tuple": "tuple", "Set": "set", "Dict": "dict"}


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


class _Interpreter:
    """Runs the wheel's parser-building code on symbolic values."""

    def __init__(self, wheel: _Wheel) -> None:
        self.wheel = wheel
        self.flags: dict[str, Flag] = {}
        self.unresolved: list[str] = []
        self.inverse_prefixes: dict[str, str] = {}
        self.optional_bool_str = False
        self._depth = 0

    # -- name resolution -----------------------------------------------------

    def _module_tree(self, module: str) -> ast.Module:
        tree = self.wheel.tree(module)
        if tree is None:
            raise WheelParseError(f"module {module} is not in the wheel")
        return tree

    def _absolute(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if self.wheel.is_package(module) else 0)
        base = parts[:keep]
        return ".".join(base + ([node.module] if node.module else []))

    def _top_level(self, stmts: list[ast.stmt]) -> Iterator[ast.stmt]:
        for stmt in stmts:
            yield stmt
            if isinstance(stmt, ast.If):  # `if TYPE_CHECKING:` imports and such
                yield from self._top_level(stmt.body + stmt.orelse)
            elif isinstance(stmt, ast.Try):
                yield from self._top_level(stmt.body + stmt.orelse)

    def resolve(
        self, module: str, name: str, seen: frozenset[str] = frozenset()
    ) -> _ClassRef | _FuncRef | _AliasRef | None:
        """Follow definitions and `from x import y` until a class/function/alias."""
        key = f"{module}:{name}"
        tree = self.wheel.tree(module)
        if tree is None or key in seen:
            return None
        seen = seen | {key}
        star = None  # `from .types import *` (later explicit names win)
        for stmt in self._top_level(tree.body):
            if isinstance(stmt, ast.ClassDef) and stmt.name == name:
                return _ClassRef(module, stmt)
            if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
                return _FuncRef(module, stmt)
            if isinstance(stmt, ast.ImportFrom):
                for alias in stmt.names:
                    if alias.name == "*" and star is None:
                        star = self.resolve(self._absolute(module, stmt), name, seen)
                    if (alias.asname or alias.name) == name:
                        target = self._absolute(module, stmt)
                        return self.resolve(target, alias.name, seen)
            alias_value = self._alias_value(stmt, name)
            if alias_value is not None:
                return _AliasRef(module, alias_value)
        return star

    @staticmethod
    def _alias_value(stmt: ast.stmt, name: str) -> ast.expr | None:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name) and target.id == name:
                return stmt.value
        if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            if isinstance(stmt.target, ast.Name) and stmt.target.id == name:
                return stmt.value
        if sys.version_info >= (3, 12) and isinstance(stmt, ast.TypeAlias):
            if stmt.name.id == name:
                return stmt.value
        return None

    # -- classes -------------------------------------------------------------

    def bases(self, cls: _ClassRef) -> list[_ClassRef]:
        found = []
        for base in cls.node.bases:
            if isinstance(base, ast.Name):
                ref = self.resolve(cls.module, base.id)
                if isinstance(ref, _ClassRef):
                    found.append(ref)
        return found

    def method(self, cls: _ClassRef, name: str) -> _FuncRef | None:
        for stmt in cls.node.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
                return _FuncRef(cls.module, stmt, cls)
        for base in self.bases(cls):
            if found := self.method(base, name):
                return found
        return None

    def is_dataclass(self, cls: _ClassRef) -> bool:
        names = {_decorator_name(d) for d in cls.node.decorator_list}
        return bool(names & {"dataclass", "config"})

    def fields(self, cls: _ClassRef) -> dict[str, ast.expr]:
        """Dataclass fields in definition order, inherited ones first."""
        result: dict[str, ast.expr] = {}
        for base in reversed(self.bases(cls)):
            if self.is_dataclass(base):
                result.update(self.fields(base))
        for stmt in cls.node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                text = ast.unparse(stmt.annotation)
                if "ClassVar" in text or "InitVar" in text:
                    continue
                result[stmt.target.id] = stmt.annotation
        return result

    # -- type hints -> argparse kwargs (mirrors vLLM's `_compute_kwargs`) ----------

    def hints(self, module: str, expr: ast.expr, depth: int = 0) -> set[str]:
        if depth > 20:
            return {"other"}
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return {"none"}
            if isinstance(expr.value, str):  # forward reference
                parsed = ast.parse(expr.value, mode="eval").body
                return self.hints(module, parsed, depth + 1)
            return {"other"}
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
            left = self.hints(module, expr.left, depth + 1)
            return left | self.hints(module, expr.right, depth + 1)
        if isinstance(expr, ast.Subscript):
            return self._subscript_hints(module, expr, depth)
        name = expr.id if isinstance(expr, ast.Name) else ""
        if isinstance(expr, ast.Attribute):
            return {"other"}  # torch.dtype and the like: parsed as str
        if name in _BUILTIN_KINDS:
            return {name}
        if name in _TYPING_KINDS:
            return {_TYPING_KINDS[name]}
        ref = self.resolve(module, name) if name else None
        if isinstance(ref, _AliasRef):
            return self.hints(ref.module, ref.value, depth + 1)
        if isinstance(ref, _ClassRef) and self.is_dataclass(ref):
            return {"dataclass"}
        return {"other"}

    def _subscript_hints(self, module: str, expr: ast.Subscript, depth: int) -> set[str]:
        base = expr.value
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        items = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        if name == "Optional":
            return self.hints(module, items[0], depth + 1) | {"none"}
        if name == "Union":
            return set().union(*(self.hints(module, i, depth + 1) for i in items))
        if name in {"Annotated", "SkipValidation"}:  # pydantic's is Annotated too
            return self.hints(module, items[0], depth + 1)
        if name == "Literal":
            return {"literal"}
        kind = _TYPING_KINDS.get(name, name)
        if kind == "tuple":
            has_ellipsis = any(isinstance(i, ast.Constant) and i.value is Ellipsis for i in items)
            return {"tuple+" if has_ellipsis else f"tuple{len(items)}"}
        if kind in {"list", "set", "dict"}:
            return {kind}
        ref = self.resolve(module, name) if name else None
        if isinstance(ref, _AliasRef):
            return self.hints(ref.module, ref.value, depth + 1)
        return {"other"}

    def field_kwargs(self, module: str, annotation: ast.expr) -> dict[str, Any]:
        hints = self.hints(module, annotation)
        if "dataclass" in hints:
            return {}
        if self.optional_bool_str and hints == {"bool", "str", "none"}:
            return {"nargs": "?"}
        if "bool" in hints:
            return {"action": "BooleanOptionalAction"}
        if "literal" in hints:
            return {}
        for hint in hints:
            if hint.startswith("tuple"):
                count = hint.removeprefix("tuple")
                return {"nargs": "+" if count == "+" else int(count)}
        if hints & {"list", "set"}:
            return {"nargs": "+"}
        return {}

    def get_kwargs(self, cls: _ClassRef) -> dict[str, dict[str, Any]]:
        return {
            name: self.field_kwargs(cls.module, annotation)
            for name, annotation in self.fields(cls).items()
        }

    # -- parser-level features read from FlexibleArgumentParser -------------------

    def read_parser_class(self, module: str) -> None:
        ref = self.resolve(module, "FlexibleArgumentParser")
        if not isinstance(ref, _ClassRef):
            raise WheelParseError("FlexibleArgumentParser not found")
        init = self.method(ref, "__init__")
        for node in ast.walk(init.node) if init else ():
            # 0.33+: self.register("action", BooleanOptionalAction, EnableDisable...)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register"
                and len(node.args) == 3
                and isinstance(node.args[2], ast.Name)
            ):
                action = self.resolve(ref.module, node.args[2].id)
                if isinstance(action, _ClassRef):
                    self.inverse_prefixes = self._class_dict(action, "_inverse_prefixes")

    @staticmethod
    def _class_dict(cls: _ClassRef, name: str) -> dict[str, str]:
        for stmt in cls.node.body:
            value = _Interpreter._alias_value(stmt, name)
            if isinstance(value, ast.Dict):
                return {
                    ast.literal_eval(k): ast.literal_eval(v)
                    for k, v in zip(value.keys, value.values, strict=True)
                    if k is not None
                }
        return {}

    def read_compute_kwargs(self, module: str) -> None:
        """0.33+ maps `bool | str | None` fields to an optional-value flag."""
        ref = self.resolve(module, "_compute_kwargs")
        if not isinstance(ref, _FuncRef):
            raise WheelParseError("_compute_kwargs not found in arg_utils")
        for node in ast.walk(ref.node):
            if isinstance(node, ast.Compare) and isinstance(node.comparators[0], ast.Set):
                names = {ast.unparse(e) for e in node.comparators[0].elts}
                if {"bool", "str"} <= names:
                    self.optional_bool_str = True

    # -- recording -----------------------------------------------------------

    def add_argument(self, frame: _Frame, call: ast.Call) -> None:
        names: list[str] = []
        for arg in call.args:
            value = self.eval(frame, arg.value if isinstance(arg, ast.Starred) else arg)
            if isinstance(arg, ast.Starred) and isinstance(value, list):
                names.extend(value)
            elif isinstance(value, str):
                names.append(value)
            else:
                self._unresolved(frame, call)
                return
        if not names or not names[0].startswith("-"):
            return  # a positional (model_tag)
        kwargs: dict[str, Any] = {}
        for keyword in call.keywords:
            value = self.eval(frame, keyword.value)
            if keyword.arg is None:
                if not isinstance(value, dict):
                    self._unresolved(frame, call)
                    return
                kwargs.update(value)
            else:
                kwargs[keyword.arg] = self._kwarg(frame, keyword.arg, keyword.value)
        self._record(names, kwargs)

    def _kwarg(self, frame: _Frame, name: str, expr: ast.expr) -> Any:
        if name == "action":
            return self._action(frame, expr)
        if name == "nargs" and isinstance(expr, ast.Attribute):
            return _ARGPARSE_NARGS.get(expr.attr, expr.attr)
        if name == "deprecated":
            return isinstance(expr, ast.Constant) and expr.value is True
        return self.eval(frame, expr)

    def _action(self, frame: _Frame, expr: ast.expr) -> str:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        name = expr.attr if isinstance(expr, ast.Attribute) else ast.unparse(expr)
        if name == "BooleanOptionalAction":
            return name
        ref = self.resolve(frame.module, name)
        if isinstance(ref, _ClassRef):  # a custom Action: zero-arg if it says so
            init = self.method(ref, "__init__")
            for node in ast.walk(init.node) if init else ():
                if isinstance(node, ast.keyword) and node.arg == "nargs":
                    if isinstance(node.value, ast.Constant) and node.value.value == 0:
                        return "store_true"
        return f"custom:{name}"

    def _record(self, names: list[str], kwargs: dict[str, Any]) -> None:
        action = kwargs.get("action")
        dest = kwargs.get("dest")
        if not isinstance(dest, str):
            long_names = [n for n in names if n.startswith("--")] or names
            dest = long_names[0].lstrip("-").replace("-", "_")
        deprecated = bool(kwargs.get("deprecated"))
        if action in _ZERO_ARG_ACTIONS:
            nargs: Nargs = 0
        elif action == "BooleanOptionalAction":
            nargs = 0
            names = names + self._negations(names)
        else:
            raw = kwargs.get("nargs")
            nargs = raw if isinstance(raw, int | str) else 1
        for name in names:
            self.flags.setdefault(name, Flag(name, nargs, dest, deprecated))

    def _negations(self, names: list[str]) -> list[str]:
        # argparse.BooleanOptionalAction adds --no-X; vLLM's EnableDisableAction
        # (registered in place of it from 0.33) also pairs --enable-X/--disable-X.
        extra = ["--no-" + n[2:] for n in names if n.startswith("--")]
        for name in names:
            for prefix, inverse in self.inverse_prefixes.items():
                if name.startswith(prefix):
                    extra.append(inverse + name.removeprefix(prefix))
        return extra

    def _unresolved(self, frame: _Frame, node: ast.AST) -> None:
        member = self.wheel.member(frame.module)
        self.unresolved.append(f"{member}:{getattr(node, 'lineno', '?')}")

    # -- statements ----------------------------------------------------------

    def run(self, func: _FuncRef, frame: _Frame) -> Any:
        self._depth += 1
        if self._depth > 30:
            raise WheelParseError("call chain too deep while reading the parser code")
        try:
            self.exec_body(func.node.body, frame)
        except _Return as ret:
            return ret.value
        finally:
            self._depth -= 1
        return None

    def exec_body(self, stmts: list[ast.stmt], frame: _Frame) -> None:
        for stmt in stmts:
            self.exec(stmt, frame)

    def exec(self, stmt: ast.stmt, frame: _Frame) -> None:
        if isinstance(stmt, ast.Expr):
            self.eval(frame, stmt.value)
        elif isinstance(stmt, ast.Assign):
            value = self.eval(frame, stmt.value)
            for target in stmt.targets:
                self._assign(frame, target, value, stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self._assign(frame, stmt.target, self.eval(frame, stmt.value), stmt.value)
        elif isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                if isinstance(target, ast.Subscript):
                    container = self.eval(frame, target.value)
                    key = self.eval(frame, target.slice)
                    if isinstance(container, dict):
                        container.pop(key, None)
        elif isinstance(stmt, ast.Return):
            value = self.eval(frame, stmt.value) if stmt.value else None
            raise _Return(value)
        elif isinstance(stmt, ast.If):
            # Both branches: the real parser takes one, depending on sys.argv or
            # the platform; the union is what some `vllm serve` run accepts.
            self.exec_body(stmt.body, frame)
            self.exec_body(stmt.orelse, frame)
        elif isinstance(stmt, ast.For):
            self._for(stmt, frame)
        elif isinstance(stmt, ast.With):
            self.exec_body(stmt.body, frame)
        elif isinstance(stmt, ast.Try):
            self.exec_body(stmt.body + stmt.orelse + stmt.finalbody, frame)
        elif isinstance(stmt, ast.ImportFrom):
            target = self._absolute(frame.module, stmt)
            for alias in stmt.names:
                frame.env[alias.asname or alias.name] = self.resolve(target, alias.name)

    def _assign(self, frame: _Frame, target: ast.expr, value: Any, expr: ast.expr) -> None:
        if isinstance(target, ast.Name):
            frame.env[target.id] = value
        elif isinstance(target, ast.Subscript):
            container = self.eval(frame, target.value)
            key = self.eval(frame, target.slice)
            if isinstance(container, dict) and isinstance(key, str):
                container[key] = self._kwarg(frame, key, expr)

    def _for(self, stmt: ast.For, frame: _Frame) -> None:
        items = self.eval(frame, stmt.iter)
        if not isinstance(items, list):
            if any(self._calls_add_argument(s) for s in stmt.body):
                self._unresolved(frame, stmt)
            return
        for item in items:
            if isinstance(stmt.target, ast.Tuple) and isinstance(item, tuple):
                for name_node, value in zip(stmt.target.elts, item, strict=False):
                    if isinstance(name_node, ast.Name):
                        frame.env[name_node.id] = value
            elif isinstance(stmt.target, ast.Name):
                frame.env[stmt.target.id] = item
            self.exec_body(stmt.body, frame)

    @staticmethod
    def _calls_add_argument(stmt: ast.stmt) -> bool:
        return any(
            isinstance(n, ast.Attribute) and n.attr == "add_argument" for n in ast.walk(stmt)
        )

    # -- expressions ---------------------------------------------------------

    def eval(self, frame: _Frame, expr: ast.expr | None) -> Any:
        if expr is None:
            return None
        if isinstance(expr, ast.Constant):
            return expr.value
        if isinstance(expr, ast.Name):
            if expr.id in frame.env:
                return frame.env[expr.id]
            return self.resolve(frame.module, expr.id)
        if isinstance(expr, ast.Subscript):
            container = self.eval(frame, expr.value)
            key = self.eval(frame, expr.slice)
            if isinstance(container, dict) and isinstance(key, str):
                if key not in container and container.get("__table__"):
                    raise WheelParseError(f"get_kwargs() has no field {key!r}")
                return container.get(key)
            return None
        if isinstance(expr, ast.JoinedStr):
            return self._joined(frame, expr)
        if isinstance(expr, ast.Dict):
            merged: dict[str, Any] = {}
            for key, value in zip(expr.keys, expr.values, strict=True):
                if key is None:
                    part = self.eval(frame, value)
                    if isinstance(part, dict):
                        merged.update(part)
                elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                    merged[key.value] = self._kwarg(frame, key.value, value)
            merged.pop("__table__", None)
            return merged
        if isinstance(expr, ast.List | ast.Tuple):
            values = [self.eval(frame, e) for e in expr.elts]
            return values if all(isinstance(v, str) for v in values) else None
        if isinstance(expr, ast.Call):
            return self._call(frame, expr)
        return None

    def _joined(self, frame: _Frame, expr: ast.JoinedStr) -> str | None:
        parts = []
        for value in expr.values:
            part = self.eval(frame, value.value if isinstance(value, ast.FormattedValue) else value)
            if not isinstance(part, str):
                return None
            parts.append(part)
        return "".join(parts)

    def _call(self, frame: _Frame, call: ast.Call) -> Any:
        func = call.func
        if isinstance(func, ast.Attribute):
            receiver = self.eval(frame, func.value)
            if isinstance(receiver, _Parser):
                return self._parser_method(frame, func.attr, call)
            if isinstance(receiver, dict):
                return self._dict_method(frame, receiver, func.attr, call)
            if isinstance(receiver, str) and func.attr == "replace":
                old, new = (self.eval(frame, a) for a in call.args[:2])
                if isinstance(old, str) and isinstance(new, str):
                    return receiver.replace(old, new)
                return None
            target = self._method_target(frame, func, receiver)
        else:
            name = func.id if isinstance(func, ast.Name) else ""
            if name == "get_kwargs":
                return self._get_kwargs_call(frame, call)
            target = self.eval(frame, func) if name else None
        if not isinstance(target, tuple):
            target = (target, None)
        ref, receiver_cls = target
        if isinstance(ref, _FuncRef):
            return self._invoke(frame, ref, receiver_cls, call)
        return None

    def _method_target(
        self, frame: _Frame, func: ast.Attribute, receiver: Any
    ) -> tuple[_FuncRef | None, _ClassRef | None] | None:
        if isinstance(func.value, ast.Call) and ast.unparse(func.value.func) == "super":
            owner, cls = frame.owner, frame.receiver
            for base in self.bases(owner) if owner else []:
                if found := self.method(base, func.attr):
                    return found, cls
            return None
        if isinstance(receiver, _ClassRef):
            return self.method(receiver, func.attr), receiver
        return None

    def _get_kwargs_call(self, frame: _Frame, call: ast.Call) -> Any:
        cls = self.eval(frame, call.args[0]) if call.args else None
        if not isinstance(cls, _ClassRef):
            raise WheelParseError(f"get_kwargs() of unknown class at {call.lineno}")
        table: dict[str, Any] = {"__table__": True}
        table.update(self.get_kwargs(cls))
        return table

    def _parser_method(self, frame: _Frame, name: str, call: ast.Call) -> Any:
        if name == "add_argument":
            self.add_argument(frame, call)
        elif name in {"add_argument_group", "add_parser", "add_mutually_exclusive_group"}:
            return _PARSER
        return None

    def _dict_method(self, frame: _Frame, table: dict, name: str, call: ast.Call) -> Any:
        if name == "items":
            return [(k, v) for k, v in table.items() if k != "__table__"]
        if name == "pop":
            key = self.eval(frame, call.args[0])
            default = self.eval(frame, call.args[1]) if len(call.args) > 1 else None
            return table.pop(key, default)
        return None

    def _invoke(
        self,
        frame: _Frame,
        ref: _FuncRef,
        receiver: _ClassRef | None,
        call: ast.Call,
    ) -> Any:
        args = [self.eval(frame, a) for a in call.args]
        kwargs = {k.arg: self.eval(frame, k.value) for k in call.keywords if k.arg}
        # Follow only calls that handle the parser or its kwargs: the rest of
        # vLLM (plugins, platforms) is runtime behaviour, not definitions.
        tracked = [*args, *kwargs.values()]
        if not any(isinstance(v, _Parser | dict) for v in tracked):
            return None
        params = [p.arg for p in ref.node.args.posonlyargs + ref.node.args.args]
        decorators = {_decorator_name(d) for d in ref.node.decorator_list}
        env: dict[str, Any] = {}
        if ref.owner is not None and "staticmethod" not in decorators and params:
            env[params.pop(0)] = receiver or ref.owner  # cls / self
        env.update(zip(params, args, strict=False))
        env.update(kwargs)
        callee = _Frame(ref.module, env, owner=ref.owner, receiver=receiver)
        return self.run(ref, callee)

    # -- entry point ---------------------------------------------------------

    def serve_parser(self, module: str) -> None:
        tree = self._module_tree(module)
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef) and self._is_serve_command(stmt):
                cls = _ClassRef(module, stmt)
                init = self.method(cls, "subparser_init")
                if init is None:
                    break
                env = {init.node.args.args[0].arg: cls}
                env.update({a.arg: _PARSER for a in init.node.args.args[1:]})
                self.run(init, _Frame(module, env, owner=cls, receiver=cls))
                # argparse's own -h/--help (add_parser keeps add_help=True).
                self._record(["-h", "--help"], {"action": "help"})
                return
        raise WheelParseError(f"no `serve` subcommand class in {module}")

    @staticmethod
    def _is_serve_command(cls: ast.ClassDef) -> bool:
        for stmt in cls.body:
            value = _Interpreter._alias_value(stmt, "name")
            if isinstance(value, ast.Constant) and value.value == "serve":
                return True
        return False


SERVE_MODULE = "vllm.entrypoints.cli.serve"
ARG_UTILS_MODULE = "vllm.engine.arg_utils"


def parse_wheel(path: Path, version: str) -> FlagSet:
    """Read the flags `vllm serve` accepts from a wheel, without the cache."""
    wheel = _Wheel(path)
    try:
        interp = _Interpreter(wheel)
        interp.read_parser_class(SERVE_MODULE)
        interp.read_compute_kwargs(ARG_UTILS_MODULE)
        interp.serve_parser(SERVE_MODULE)
        return FlagSet(
            version=version,
            wheel=path.name,
            flags=dict(sorted(interp.flags.items())),
            unresolved=tuple(interp.unresolved),
            sources=tuple(wheel.read),
        )
    finally:
        wheel.close()


def accepted_flags(version: str, cache_dir: Path | None = None) -> FlagSet:
    """Flags `vllm serve` accepts in vllm==version, cached as JSON by the wheel."""
    path = wheel_path(version, cache_dir)
    cache = path.with_name(path.name + ".flags.json")
    if cache.exists():
        try:
            data = json.loads(cache.read_text())
            if data.get("parser_version") == PARSER_VERSION:
                return FlagSet.from_json(data)
        except (ValueError, KeyError, TypeError):
            pass  # unreadable cache: parse again
    flags = parse_wheel(path, version)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(flags.to_json(), indent=1) + "\n")
    tmp.replace(cache)
    return flags


# --------------------------------------------------------------- argv checking


@dataclass(frozen=True)
class FlagProblem:
    token: str  # as written in argv (never the value: it may be a secret)
    reason: str


_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _is_flag(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token)


def _normalise(name: str) -> str:
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
    model_seen: bool = False
    before_model: list[str] = field(default_factory=list)

    def run(self) -> list[FlagProblem]:
        tokens = list(self.argv[2:])
        if tokens and not _is_flag(tokens[0]):
            self.model_seen = True
            tokens = tokens[1:]
        index = 0
        while index < len(tokens):
            index = self._step(tokens, index)
        if not self.model_seen:
            if self.before_model:  # e.g. a multi-value flag swallowed the model
                first = self.before_model[0]
                self.problems.append(FlagProblem(first, "flag before the model"))
            self.problems.append(FlagProblem("<model>", "no model given right after `serve`"))
        return self.problems

    def _step(self, tokens: list[str], index: int) -> int:
        token = tokens[index]
        if not _is_flag(token):
            if self.model_seen:
                self.problems.append(FlagProblem(token, "unexpected positional"))
            else:
                self.model_seen = True
                for flag in self.before_model:
                    self.problems.append(FlagProblem(flag, "flag before the model"))
                self.problems.append(FlagProblem(token, "model must come right after `serve`"))
            return index + 1
        name, has_value, _ = token.partition("=")
        if not self.model_seen:
            self.before_model.append(name)
        return self._flag(tokens, index, name, bool(has_value))

    def _flag(self, tokens: list[str], index: int, name: str, inline: bool) -> int:
        written, name = name, _normalise(name)
        if name.startswith("-O") and not name.startswith("--"):
            # -O3 / -O=3 / -O 3: vLLM rewrites these to --optimization-level.
            self._require(written, "--optimization-level")
            attached = inline or len(name) > 2
            return index + 1 if attached else self._skip_values(tokens, index + 1, 1)
        dotted = "." in name
        if dotted:  # --compilation-config.mode 3: one key of a JSON-valued flag
            name = name.split(".", 1)[0]
        flag = self._require(written, name)
        if flag is None or (dotted and not flag.takes_value):
            if flag is not None:
                self.problems.append(FlagProblem(written, "takes no JSON value"))
            return self._skip_values(tokens, index + 1, "*")
        nargs = 1 if dotted else flag.nargs
        if inline:
            if nargs == 0:
                self.problems.append(FlagProblem(written, "takes no value"))
            return index + 1
        end = self._skip_values(tokens, index + 1, nargs)
        if nargs not in (0, "?", "*") and end == index + 1:
            self.problems.append(FlagProblem(written, "missing its value"))
        return end

    def _require(self, written: str, name: str) -> Flag | None:
        flag = self.flags.get(name)
        if flag is None:
            reason = f"not a vllm serve flag in vLLM {self.flags.version}"
            self.problems.append(FlagProblem(written, reason))
        return flag

    @staticmethod
    def _skip_values(tokens: list[str], start: int, nargs: Nargs) -> int:
        if nargs in ("?", "+", "*"):
            limit = 1 if nargs == "?" else len(tokens)
        else:
            limit = int(nargs)
        end = start
        while end < len(tokens) and end - start < limit and not _is_flag(tokens[end]):
            end += 1
        return end


def check_serve_argv(argv: Sequence[str], flags: FlagSet) -> list[FlagProblem]:
    """Every problem vLLM's parser would have with a `vllm serve ...` argv."""
    if len(argv) < 2 or Path(argv[0]).name != "vllm" or argv[1] != "serve":
        raise ValueError(f"not a `vllm serve` command line: {list(argv)[:3]}")
    return _ArgvScan(flags, argv).run()


def unknown_flags(argv: Sequence[str], flags: FlagSet) -> list[str]:
    """Tokens of argv (as written) that vllm serve in `flags.version` rejects."""
    tokens = [problem.token for problem in check_serve_argv(argv, flags)]
    return list(dict.fromkeys(tokens))  # a flag can be both unknown and misplaced
