"""Read deployments.yaml into plain data, remembering the line of every value.

PyYAML keeps the last of two duplicate keys without a word; we walk the composed node
tree ourselves so a duplicate is an error with both line numbers.
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


def load_yaml(path: Path) -> tuple[Any, Lines]:
    """Parse `path`; return the data and a map from value path to 1-based line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [Problem(FILE, f"{source} does not exist", hint="pass --config FILE")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(FILE, f"cannot read {source}: {exc}")]) from None
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str = "<string>") -> tuple[Any, Lines]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: Lines = {}
        problems: list[Problem] = []
        data = _build(node, (), loader, lines, problems) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, text)], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(FILE, f"not valid YAML: {exc}")], source) from None
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(problems, source)
    return data, lines


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


def _build(
    node: yaml.Node,
    path: tuple[str | int, ...],
    loader: Any,
    lines: Lines,
    problems: list[Problem],
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<:` merge keys
        result: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                problems.append(
                    Problem(format_path(path), f"unsupported key {key!r}", line=lines[path])
                )
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
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
            result[key] = _build(value_node, child, loader, lines, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), loader, lines, problems) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
