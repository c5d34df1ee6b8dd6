"""Read deployments.yaml into plain data, remembering the line of every value.

PyYAML keeps the last of two duplicate keys without a word; we walk the composed node
tree ourselves so a duplicate is an error with both line numbers. The walk is bounded:
YAML aliases let a few lines stand for billions of values ("billion laughs"), so the
file's size, the values once aliases and merge keys are expanded, and the nesting depth
all have limits far above any real deployments.yaml, checked before the work is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mvgen.errors import FILE, ConfigError, Problem, format_path

try:  # libyaml is several times faster on large configs
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - pure-Python fallback
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Lines = dict[tuple[str | int, ...], int]

MAX_BYTES = 512 * 1024  # the benchmark's 500-model config is 28 KB
MAX_VALUES = 50_000  # after expanding aliases and merge keys; that config has 1,516
MAX_DEPTH = 64  # deployments.yaml nests 6 deep; this stops self-referring aliases


class _TooLarge(Exception):
    """The document expands past a limit; carries the Problem to report."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def load_yaml(path: Path) -> tuple[Any, Lines]:
    """Parse `path`; return the data and a map from value path to 1-based line."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:  # refused before reading: it might not even fit in memory
            raise ConfigError([_too_big(f"{size:,} bytes", f"{MAX_BYTES:,}")], source)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [Problem(FILE, f"{source} does not exist", hint="pass --config FILE")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(FILE, f"cannot read {source}: {exc}")]) from None
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str = "<string>") -> tuple[Any, Lines]:
    if len(text) > MAX_BYTES:
        raise ConfigError([_too_big(f"{len(text):,} characters", f"{MAX_BYTES:,}")], source)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()  # aliases stay shared nodes here: no expansion yet
        builder = _Builder(loader)
        data = builder.build(node, (), 0) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, text)], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(FILE, f"not valid YAML: {exc}")], source) from None
    except _TooLarge as exc:
        raise ConfigError([exc.problem], source) from None
    finally:
        loader.dispose()
    if builder.problems:
        raise ConfigError(builder.problems, source)
    return data, builder.lines


def _too_big(size: str, limit: str) -> Problem:
    return Problem(
        FILE,
        f"the file is {size}; deployments.yaml may be at most {limit} bytes",
        hint="is this the right file? A config for hundreds of models is a few dozen KB",
    )


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = " ".join(filter(None, [exc.context, exc.problem]))
    if mark is None:
        return Problem(FILE, f"YAML syntax error: {what}")
    line, column = mark.line + 1, mark.column + 1
    tab = _tab_near(text, mark.line, mark.column)
    if tab is not None:
        return Problem(
            FILE,
            "a tab character: YAML does not allow tabs in indentation",
            line,
            "indent with spaces (most editors can convert tabs to spaces)",
            column=tab + 1,
        )
    return Problem(FILE, f"YAML syntax error: {what}", line, column=column)


def _tab_near(text: str, line: int, column: int) -> int | None:
    """The column of a tab in the failing line's indentation or at the error, if any:
    the scanner's own words ("found character that cannot start any token") do not say."""
    lines = text.splitlines()
    if line >= len(lines):
        return None
    row = lines[line]
    indent = len(row) - len(row.lstrip(" \t"))
    if "\t" in row[:indent]:
        return row.index("\t")
    return column if row[column : column + 1] == "\t" else None


class _Builder:
    """Node tree -> plain data plus the line of every value, within the limits above."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.lines: Lines = {}
        self.problems: list[Problem] = []
        self.values = 0

    def spend(self, count: int, line: int) -> None:
        self.values += count
        if self.values > MAX_VALUES:
            raise _TooLarge(
                Problem(
                    FILE,
                    f"the document expands to more than {MAX_VALUES:,} values once its "
                    "aliases (*name) and merge keys (<<) are followed",
                    line,
                    "a deployments.yaml has a few thousand at most; this looks like an alias "
                    "bomb: remove the anchors (&name) that repeat other repeated blocks",
                )
            )

    def build(self, node: yaml.Node, path: tuple[str | int, ...], depth: int) -> Any:
        line = node.start_mark.line + 1
        self.spend(1, line)
        if depth > MAX_DEPTH:
            where = format_path(path[:3]) + "..."
            raise _TooLarge(
                Problem(
                    where,
                    f"nested more than {MAX_DEPTH} levels deep (an alias that contains itself?)",
                    line,
                )
            )
        self.lines[path] = line
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: tuple[str | int, ...], depth: int) -> Any:
        self._flatten(node, depth)
        result: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):  # never expanded: it may be a bomb
                self.problems.append(
                    Problem(
                        format_path(path), "a key must be a plain name, not a list or mapping", line
                    )
                )
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                self.problems.append(Problem(format_path(path), f"unsupported key {key!r}", line))
                continue
            if key in seen:
                self.problems.append(
                    Problem(
                        format_path((*path, str(key))),
                        f"duplicate key {key!r} (first at line {seen[key]})",
                        line=line,
                        hint="YAML keeps only one of them; remove or merge the other",
                    )
                )
                continue
            seen[key] = line
            child = (*path, key if isinstance(key, str) else str(key))
            result[key] = self.build(value_node, child, depth + 1)
        return result

    def _flatten(self, node: yaml.MappingNode, depth: int) -> None:
        """Resolve `<<:` merge keys, counting what each merge copies before it is copied:
        merges of merges double at every level, and PyYAML would build them all."""
        if depth > MAX_DEPTH:
            return
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                continue
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for sub in merged:
                if isinstance(sub, yaml.MappingNode):
                    self._flatten(sub, depth + 1)
                    self.spend(len(sub.value), sub.start_mark.line + 1)
        self.loader.flatten_mapping(node)
