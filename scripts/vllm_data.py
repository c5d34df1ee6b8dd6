"""Write mvgen/data/vllm/<version>.json: every `vllm serve` option of one vLLM version, with
the values its choice options accept, read from the real wheel.

    make vllm-data VLLM=0.12.0      # or: python scripts/vllm_data.py 0.12.0

mvgen reads only the committed JSON (mvgen/vllm_flags.py), so `mvgen validate` and
`make check` need no wheel. This script downloads the wheel once (pip, ~300-500 MB) into
.cache/vllm-wheels (MVGEN_WHEEL_CACHE overrides) and reads it with `zipfile` and `ast`:
importing vllm would need torch and a GPU build.

vLLM builds its parser in code (`get_kwargs(SomeConfig)` turns dataclass fields into
argparse kwargs, `add_cli_args` methods call each other), so this script runs a tiny
symbolic interpreter over exactly that code, starting from the `serve` subcommand's
`subparser_init`. Anything it cannot follow is recorded instead of guessed: an option it
cannot name fails the run; a choice list it cannot follow is listed as unchecked.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "mvgen" / "data" / "vllm"
DEFAULT_CACHE_DIR = ROOT / ".cache" / "vllm-wheels"
CACHE_ENV = "MVGEN_WHEEL_CACHE"

# pip only takes exact --platform tags: offer every manylinux tag a glibc 2.35
# x86_64 host accepts (Ubuntu 22.04, the base of Modal's CUDA images). vLLM moves
# between tags (0.12.0 ships manylinux_2_31, 0.33.0 manylinux_2_28).
_PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{minor}_x86_64" for minor in range(17, 36)]
_PYTHON_VERSION = "3.12"

Nargs = int | str  # 0 = no value, 1 = one value, "?" / "+" / "*" / n as argparse
Choice = str | int


class WheelDownloadError(RuntimeError):
    """pip could not fetch the requested vLLM wheel."""


class WheelParseError(RuntimeError):
    """The wheel's argument code has a shape this script does not understand."""


@dataclass(frozen=True)
class Option:
    name: str
    nargs: Nargs
    dest: str
    deprecated: bool = False
    # Values argparse accepts (from a Literal type or choices=), or that vLLM checks after
    # parsing (see RUNTIME_CHOICES); None when any value passes or the list is unknown.
    choices: tuple[Choice, ...] | None = None
    choices_from: str = ""  # where a runtime-checked list was read

    @property
    def takes_value(self) -> bool:
        return self.nargs != 0


@dataclass
class WheelOptions:
    version: str
    wheel: Path
    options: dict[str, Option]
    unresolved: list[str]  # add_argument calls (file:line) whose names could not be worked out
    unchecked: list[str]  # options whose choices were edited in ways not followed
    sources: list[str]  # wheel members read, in order


# --------------------------------------------------------------------------- wheel


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def cached_wheel(version: str, directory: Path | None = None) -> Path | None:
    """The vllm==version x86_64 wheel if it is already in the cache."""
    wheels = sorted((directory or cache_dir()).glob(f"vllm-{version}-*x86_64.whl"))
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


def download_command(version: str, dest: Path) -> list[str]:
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


def wheel_path(version: str, directory: Path | None = None) -> Path:
    """Path of the vllm==version x86_64 wheel, downloading it into the cache once."""
    directory = directory or cache_dir()
    if cached := cached_wheel(version, directory):
        return cached
    directory.mkdir(parents=True, exist_ok=True)
    print(
        f"downloading the vllm=={version} wheel (a few hundred MB, one time) into {directory}",
        file=sys.stderr,
        flush=True,
    )
    # Download into a scratch dir, then move: an interrupted run leaves no
    # truncated wheel behind that later runs would trust.
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
        cmd = download_command(version, Path(tmp))
        result = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, check=False)
        found = cached_wheel(version, Path(tmp))
        if result.returncode != 0 or found is None:
            raise WheelDownloadError(
                f"could not download vllm=={version} with `{shlex.join(cmd)}` "
                f"(exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )
        target = directory / found.name
        found.replace(target)
    print(f"saved {target}", file=sys.stderr, flush=True)
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

    def modules_under(self, package: str) -> list[str]:
        """The package and every module in it, sorted."""
        prefix = package.replace(".", "/") + "/"
        members = sorted(n for n in self._names if n.startswith(prefix) and n.endswith(".py"))
        return [m.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for m in members]


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


Hints = dict[str, Any]


class _Choices(list):
    """An option's choices while the parser code edits them; `unknown` once an edit
    (`+=` of a comprehension, say) could not be followed."""

    unknown = False

    @classmethod
    def of(cls, values: tuple[Choice, ...] | None) -> _Choices:
        choices = cls(sorted(values or ()))  # vLLM's literal_to_kwargs sorts them
        choices.unknown = values is None
        return choices


def _union(left: Hints, right: Hints) -> Hints:
    merged = {**left, **right}
    if "literal" in left and "literal" in right:
        a, b = left["literal"], right["literal"]
        merged["literal"] = None if a is None or b is None else a + b
    return merged


def _element_choices(element: Hints | None) -> dict[str, Any]:
    """`list[SomeLiteral]` gets choices for each element (vLLM's collection_to_kwargs
    passes the Literal on as the type); `list[int | str]` and the like get none."""
    if element is not None and list(element) == ["literal"]:
        return {"choices": _Choices.of(element["literal"])}
    return {}


class _Interpreter:
    """Runs the wheel's parser-building code on symbolic values."""

    def __init__(self, wheel: _Wheel) -> None:
        self.wheel = wheel
        self.flags: dict[str, Option] = {}
        self.unresolved: list[str] = []
        self.unchecked: list[str] = []
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

    def _top_level(
        self, stmts: list[ast.stmt], typing_only: bool = False
    ) -> Iterator[tuple[ast.stmt, bool]]:
        """Module-level statements, with whether only type checkers see them."""
        for stmt in stmts:
            yield stmt, typing_only
            if isinstance(stmt, ast.If):  # `if TYPE_CHECKING:` imports and such
                checking = typing_only or ast.unparse(stmt.test).endswith("TYPE_CHECKING")
                yield from self._top_level(stmt.body, checking)
                yield from self._top_level(stmt.orelse, typing_only)
            elif isinstance(stmt, ast.Try):
                yield from self._top_level(stmt.body + stmt.orelse, typing_only)

    def resolve(
        self, module: str, name: str, seen: frozenset[str] = frozenset()
    ) -> _ClassRef | _FuncRef | _AliasRef | None:
        """Follow definitions and `from x import y` until a class/function/alias.

        What runs wins over what only type checkers see: vLLM 0.12 imports
        `QuantizationMethods` (a Literal) under TYPE_CHECKING and sets it to Any
        otherwise, so argparse gets no choices for --quantization."""
        key = f"{module}:{name}"
        tree = self.wheel.tree(module)
        if tree is None or key in seen:
            return None
        seen = seen | {key}
        star = None  # `from .types import *` (later explicit names win)
        typing_match = None
        for stmt, typing_only in self._top_level(tree.body):
            found = self._definition(module, stmt, name, seen)
            if found is not None and not typing_only:
                return found
            typing_match = typing_match or found
            if isinstance(stmt, ast.ImportFrom) and star is None:
                if any(alias.name == "*" for alias in stmt.names):
                    star = self.resolve(self._absolute(module, stmt), name, seen)
        return typing_match or star

    def _definition(
        self, module: str, stmt: ast.stmt, name: str, seen: frozenset[str]
    ) -> _ClassRef | _FuncRef | _AliasRef | None:
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            return _ClassRef(module, stmt)
        if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
            return _FuncRef(module, stmt)
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                if (alias.asname or alias.name) == name and alias.name != "*":
                    return self.resolve(self._absolute(module, stmt), alias.name, seen)
        value = self._alias_value(stmt, name)
        return _AliasRef(module, value) if value is not None else None

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

    def hints(self, module: str, expr: ast.expr, depth: int = 0) -> Hints:
        """The kinds a type annotation unions over, as vLLM's `get_type_hints` flattens
        it: `{"int": None, "none": None}` for `int | None`. A Literal carries its values
        (None when they cannot be read); a collection carries its element's hints."""
        if depth > 20:
            return {"other": None}
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return {"none": None}
            if isinstance(expr.value, str):  # forward reference
                parsed = ast.parse(expr.value, mode="eval").body
                return self.hints(module, parsed, depth + 1)
            return {"other": None}
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
            left = self.hints(module, expr.left, depth + 1)
            return _union(left, self.hints(module, expr.right, depth + 1))
        if isinstance(expr, ast.Subscript):
            return self._subscript_hints(module, expr, depth)
        name = expr.id if isinstance(expr, ast.Name) else ""
        if isinstance(expr, ast.Attribute):
            return {"other": None}  # torch.dtype and the like: parsed as str
        if name in _BUILTIN_KINDS:
            return {name: None}
        if name in _TYPING_KINDS:
            return {_TYPING_KINDS[name]: None}
        ref = self.resolve(module, name) if name else None
        if isinstance(ref, _AliasRef):
            return self.hints(ref.module, ref.value, depth + 1)
        if isinstance(ref, _ClassRef) and self.is_dataclass(ref):
            return {"dataclass": None}
        return {"other": None}

    def _subscript_hints(self, module: str, expr: ast.Subscript, depth: int) -> Hints:
        base = expr.value
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        items = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        if name == "Optional":
            return _union(self.hints(module, items[0], depth + 1), {"none": None})
        if name == "Union":
            found: Hints = {}
            for item in items:
                found = _union(found, self.hints(module, item, depth + 1))
            return found
        if name in {"Annotated", "SkipValidation"}:  # pydantic's is Annotated too
            return self.hints(module, items[0], depth + 1)
        if name == "Literal":
            return {"literal": self._literal_values(module, items, depth)}
        kind = _TYPING_KINDS.get(name, name)
        element = self.hints(module, items[0], depth + 1)
        if kind == "tuple":
            has_ellipsis = any(isinstance(i, ast.Constant) and i.value is Ellipsis for i in items)
            return {"tuple+" if has_ellipsis else f"tuple{len(items)}": element}
        if kind in {"list", "set", "dict"}:
            return {kind: element}
        ref = self.resolve(module, name) if name else None
        if isinstance(ref, _AliasRef):
            return self.hints(ref.module, ref.value, depth + 1)
        return {"other": None}

    def _literal_values(
        self, module: str, items: list[ast.expr], depth: int
    ) -> tuple[Choice, ...] | None:
        values: list[Choice] = []
        for item in items:
            if isinstance(item, ast.Constant) and isinstance(item.value, str | int):
                values.append(item.value)
                continue
            nested = self.hints(module, item, depth + 1)  # Literal[OtherLiteral, "x"]
            if list(nested) != ["literal"] or nested["literal"] is None:
                return None
            values.extend(nested["literal"])
        return tuple(values)

    def field_kwargs(self, module: str, annotation: ast.expr) -> dict[str, Any]:
        """The argparse kwargs vLLM's `_compute_kwargs` makes of a field, in its order:
        dataclass (JSON), bool, Literal, tuple, list, set, then the rest (one value)."""
        hints = self.hints(module, annotation)
        if "dataclass" in hints:
            return {}
        if self.optional_bool_str and set(hints) == {"bool", "str", "none"}:
            return {"nargs": "?"}
        if "bool" in hints:
            return {"action": "BooleanOptionalAction"}
        if "literal" in hints:
            # `Literal[...] | str` gets a metavar, not choices: any string passes.
            return {} if "str" in hints else {"choices": _Choices.of(hints["literal"])}
        for kind, element in hints.items():
            if kind.startswith("tuple"):
                count = kind.removeprefix("tuple")
                nargs = "+" if count == "+" else int(count)
                return {"nargs": nargs, **_element_choices(element)}
        for kind in ("list", "set"):
            if kind in hints:
                return {"nargs": "+", **_element_choices(hints[kind])}
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
        if name == "choices":
            value = self.eval(frame, expr)
            if isinstance(value, _Choices):
                return value
            return _Choices(value) if isinstance(value, list) else _Choices.of(None)
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
        choices = kwargs.get("choices")
        if isinstance(choices, _Choices) and choices.unknown:
            self.unchecked.extend(n for n in names if n.startswith("--"))
            choices = None
        values = tuple(choices) if choices and nargs != 0 else None
        for name in names:
            self.flags.setdefault(name, Option(name, nargs, dest, deprecated, values))

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
        elif isinstance(stmt, ast.AugAssign):
            # kwargs["x"]["choices"] += [...]: extend what can be read, else give up on it.
            target = self.eval(frame, stmt.target)
            if isinstance(target, _Choices):
                value = self.eval(frame, stmt.value)
                if isinstance(value, list):
                    target.extend(value)
                else:
                    target.unknown = True
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
            ref = self.resolve(frame.module, expr.id)
            if isinstance(ref, _AliasRef) and isinstance(ref.value, ast.Constant):
                return ref.value.value  # a module constant, e.g. a choice to remove
            return ref
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
            plain = all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
            return values if plain else None
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
            if isinstance(receiver, _Choices):
                return self._choices_method(frame, receiver, func.attr, call)
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

    def _choices_method(self, frame: _Frame, choices: _Choices, name: str, call: ast.Call) -> None:
        args = [self.eval(frame, a) for a in call.args]
        if name == "remove" and len(args) == 1 and args[0] in choices:
            choices.remove(args[0])
        elif name == "append" and len(args) == 1 and isinstance(args[0], str | int):
            choices.append(args[0])
        else:
            choices.unknown = True

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

# Options whose values vLLM checks after argparse, against a list or a registry in its own
# source: a bad value stops `vllm serve` at start all the same. Option -> (modules to try,
# in order, and the list, dict or registry manager in them).
RUNTIME_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    # ModelConfig._verify_quantization: "Unknown quantization method" unless in this list.
    "--quantization": (("vllm.model_executor.layers.quantization",), "QUANTIZATION_METHODS"),
    # get_model_loader: "Load format ... is not supported" unless a key of this dict.
    "--load-format": (("vllm.model_executor.model_loader",), "_LOAD_FORMAT_TO_MODEL_LOADER"),
    # validate_parsed_serve_args: "invalid tool call parser" unless registered.
    "--tool-call-parser": (
        ("vllm.tool_parsers", "vllm.entrypoints.openai.tool_parsers"),
        "ToolParserManager",
    ),
    # StructuredOutputsConfig: "invalid reasoning parser" unless registered.
    "--reasoning-parser": (("vllm.reasoning",), "ReasoningParserManager"),
}


def read_wheel(path: Path, version: str) -> WheelOptions:
    """Every option `vllm serve` accepts in the wheel, with the choices of each."""
    wheel = _Wheel(path)
    try:
        interp = _Interpreter(wheel)
        interp.read_parser_class(SERVE_MODULE)
        interp.read_compute_kwargs(ARG_UTILS_MODULE)
        interp.serve_parser(SERVE_MODULE)
        options = dict(sorted(interp.flags.items()))
        for option, (modules, name) in RUNTIME_CHOICES.items():
            if option not in options:
                continue
            values, where = _runtime_values(interp, modules, name)
            dest = options[option].dest
            for key, found in options.items():
                if found.dest == dest and found.takes_value and found.choices is None:
                    options[key] = Option(key, found.nargs, dest, found.deprecated, values, where)
        return WheelOptions(
            version=version,
            wheel=path,
            options=options,
            unresolved=interp.unresolved,
            unchecked=sorted(set(interp.unchecked)),
            sources=wheel.read,
        )
    finally:
        wheel.close()


def _runtime_values(
    interp: _Interpreter, modules: tuple[str, ...], name: str
) -> tuple[tuple[Choice, ...], str]:
    for module in modules:
        if not interp.wheel.is_package(module):
            continue
        where = f"{interp.wheel.member(module)}: {name}"
        if name.endswith("Manager"):
            values = _registered(interp, module, name)
        else:
            ref = interp.resolve(module, name)
            values = _value_list(interp, ref) if isinstance(ref, _AliasRef) else None
        if not values:
            raise WheelParseError(f"could not read the values of {name} in {where}")
        return tuple(sorted(set(values))), where
    raise WheelParseError(f"none of {', '.join(modules)} is in the wheel (for {name})")


def _value_list(interp: _Interpreter, ref: _AliasRef) -> list[Choice] | None:
    """`{"a": X, ...}` -> its keys; `["a", ...]` -> its items; `list(get_args(L))` -> L's
    Literal values."""
    value = ref.value
    if isinstance(value, ast.Dict):
        keys = [k.value for k in value.keys if isinstance(k, ast.Constant)]
        return keys if len(keys) == len(value.keys) else None
    if isinstance(value, ast.List | ast.Tuple):
        items = [e.value for e in value.elts if isinstance(e, ast.Constant)]
        return items if len(items) == len(value.elts) else None
    text = ast.unparse(value)
    if text.startswith("list(get_args(") and text.endswith("))"):
        literal = interp.hints(ref.module, ast.parse(text[14:-2], mode="eval").body)
        return list(literal["literal"] or []) if list(literal) == ["literal"] else None
    return None


def _registered(interp: _Interpreter, package: str, manager: str) -> list[str]:
    """Names registered with a parser manager: `Manager.register_lazy_module(name, ...)`
    calls in the package (often in a loop over a module-level dict) and
    `@Manager.register_module("name")` decorators on its classes."""
    names: list[str] = []
    for module in interp.wheel.modules_under(package):
        tree = interp.wheel.tree(module)
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.For) and _calls(node, manager, "register_lazy_module"):
                names += _loop_keys(interp, module, node)
            elif isinstance(node, ast.Call) and _is_method(node, manager, "register_lazy_module"):
                if node.args and isinstance(node.args[0], ast.Constant):
                    names.append(node.args[0].value)
            elif isinstance(node, ast.ClassDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and _is_method(deco, manager, "register_module"):
                        names += _decorator_names(deco)
    return names


def _calls(node: ast.AST, owner: str, method: str) -> bool:
    return any(isinstance(n, ast.Call) and _is_method(n, owner, method) for n in ast.walk(node))


def _is_method(call: ast.Call, owner: str, method: str) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == method
        and isinstance(func.value, ast.Name)
        and func.value.id == owner
    )


def _loop_keys(interp: _Interpreter, module: str, loop: ast.For) -> list[str]:
    """`for name, (...) in TABLE.items():` -> TABLE's keys."""
    it = loop.iter
    if (
        isinstance(it, ast.Call)
        and isinstance(it.func, ast.Attribute)
        and it.func.attr == "items"
        and isinstance(it.func.value, ast.Name)
    ):
        ref = interp.resolve(module, it.func.value.id)
        if isinstance(ref, _AliasRef):
            return [str(v) for v in _value_list(interp, ref) or []]
    raise WheelParseError(f"a registration loop in {module} has a shape not understood")


def _decorator_names(call: ast.Call) -> list[str]:
    values = [*call.args, *(k.value for k in call.keywords if k.arg == "name")]
    names: list[str] = []
    for value in values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            names.append(value.value)
        elif isinstance(value, ast.List | ast.Tuple):
            names += [e.value for e in value.elts if isinstance(e, ast.Constant)]
    return names


# ------------------------------------------------------------------------- output


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_json(found: WheelOptions) -> str:
    """The committed file: one option per line, so a version bump reads as a diff."""

    def option(o: Option) -> dict[str, Any]:
        entry: dict[str, Any] = {"nargs": o.nargs, "dest": o.dest, "deprecated": o.deprecated}
        if o.choices is not None:
            entry["choices"] = list(o.choices)
        if o.choices_from:
            entry["choices_from"] = o.choices_from
        return entry

    head = {
        "vllm": found.version,
        "wheel": found.wheel.name,
        "wheel_sha256": sha256(found.wheel),
        "made_by": f"make vllm-data VLLM={found.version} (scripts/vllm_data.py)",
        "unchecked_choices": found.unchecked,
    }
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "options": {')
    entries = [f"  {json.dumps(k)}: {json.dumps(option(o))}" for k, o in found.options.items()]
    lines.append(",\n".join(entries))
    lines.append(" },")
    lines.append(' "sources": [')
    lines.append(",\n".join(f"  {json.dumps(m)}" for m in found.sources))
    lines.append(" ]")
    text = "{\n" + "\n".join(lines) + "\n}\n"
    json.loads(text)  # the hand-made layout is still JSON
    return text


def write_data(version: str, wheel: Path | None = None, out_dir: Path = DATA_DIR) -> Path:
    found = read_wheel(wheel or wheel_path(version), version)
    if found.unresolved:
        raise WheelParseError(
            "options whose names could not be worked out (extend the interpreter): "
            + ", ".join(found.unresolved)
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{version}.json"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(to_json(found), encoding="utf-8")
    tmp.replace(target)
    with_choices = sum(o.choices is not None for o in found.options.values())
    print(
        f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
        f"{len(found.options)} options, {with_choices} with choices, "
        f"{len(found.sources)} source files read"
        + (f"; choices not followed: {', '.join(found.unchecked)}" if found.unchecked else "")
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="vLLM version, e.g. 0.12.0")
    parser.add_argument("--wheel", type=Path, help="read this wheel instead of the cache")
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    try:
        write_data(args.version, args.wheel, args.out_dir)
    except (WheelDownloadError, WheelParseError, OSError, zipfile.BadZipFile) as exc:
        print(f"vllm_data: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
