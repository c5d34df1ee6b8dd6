"""Check raw config data against schema/deployments.schema.json and word the errors.

jsonschema's own messages name neither the path nor the fix; here each error becomes a
Problem naming the path, the bad value, what is allowed and, for a near miss, the
closest valid choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mvgen.errors import Problem, choices_text, did_you_mean, format_path
from mvgen.loader import Lines

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "deployments.schema.json"


@cache
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@cache
def _validator() -> Any:
    import jsonschema  # imported here: it is the slowest import on the CLI's path

    # The schema is a committed file, checked against its meta-schema by tests/test_schema.py;
    # checking it again here cost 80 ms of every command.
    schema = load_schema()
    return jsonschema.validators.validator_for(schema)(schema)


def schema_problems(data: Any, lines: Lines) -> list[Problem]:
    """Every schema violation in `data`, in file order, each reported once."""
    errors = _leaf_errors(_validator().iter_errors(data))
    misplaced = _misplaced_fields(errors, data)
    problems = [m.problem(lines) for m in misplaced]
    problems += [_problem(e, lines) for e in errors if not any(m.covers(e) for m in misplaced)]
    # A model is checked as an object twice (its own schema and the settings it extends).
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda p: (p.line or 0, p.path, p.message))


def _leaf_errors(errors: Any) -> list[Any]:
    """Unwrap anyOf/oneOf so the user sees the concrete failure, not the combinator."""
    out = []
    for error in errors:
        if error.context and error.validator in ("anyOf", "oneOf"):
            out.extend(_leaf_errors(error.context))
        else:
            out.append(error)
    return out


def _problem(error: Any, lines: Lines) -> Problem:
    path = tuple(error.absolute_path)
    kind = error.validator
    if kind in ("additionalProperties", "unevaluatedProperties"):
        return _unknown_key(error, path, lines)
    if "propertyNames" in error.absolute_schema_path:
        return _bad_name(error, path, lines)
    where = format_path(path)
    line = lines.get(path)
    value = error.instance
    if kind == "enum":
        allowed = [str(c) for c in error.validator_value]
        return Problem(
            where,
            f"{value!r} is not allowed; allowed: {choices_text(allowed)}",
            line,
            _suggest(value, allowed),
        )
    if kind == "required":
        return Problem(where, error.message.replace("is a required", "is required"), line)
    if kind == "pattern":
        rule = error.schema.get("description") or f"must match {error.validator_value}"
        return Problem(where, f"{value!r} is not valid: {rule}", line)
    if (kind == "type" and value is None and "object" in _as_list(error.validator_value)) or (
        kind == "minProperties" and value == {}
    ):
        return _empty(error, where, line)
    if kind == "type":
        wanted = " or ".join(_as_list(error.validator_value))
        return Problem(where, f"{value!r} should be {wanted}", line, _quote_hint(error))
    if kind in ("maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"):
        return _out_of_range(error, where, line)
    return Problem(where, f"{error.message}", line)


def _quote_hint(error: Any) -> str | None:
    """PyYAML reads YAML 1.1, where unquoted 18:00 is the number 1080 and 0.12 a float."""
    value = error.instance
    if "string" not in _as_list(error.validator_value) or not isinstance(value, int | float):
        return None
    is_time = ":" in error.schema.get("pattern", "")  # warm[].until: HH:MM
    if is_time and isinstance(value, int) and not isinstance(value, bool) and value < 24 * 60:
        return (
            f"put it in quotes: YAML reads an unquoted time such as "
            f"{value // 60}:{value % 60:02d} as the number {value}"
        )
    return "put it in quotes: YAML reads it as a number or a boolean"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _empty(error: Any, where: str, line: int | None) -> Problem:
    """`models:` with nothing under it is None to YAML, not "None should be object"."""
    schema = error.schema
    required = schema.get("required")
    if required:
        return Problem(where, f"is empty; it needs {', '.join(required)}", line)
    noun = ENTRY_NOUNS.get(where.rsplit(".", 1)[-1], "entry")
    need = f"at least one {noun}" if schema.get("minProperties") else "a mapping"
    hint = None
    if schema.get("examples"):
        import yaml

        example = yaml.safe_dump(schema["examples"][0], default_flow_style=True).strip()
        hint = f"for example `{where.rsplit('.', 1)[-1]}: {example}`, or the same in block style"
    return Problem(where, f"is empty; it needs {need}", line, hint)


def _out_of_range(error: Any, where: str, line: int | None) -> Problem:
    value, bound, kind = error.instance, error.validator_value, error.validator
    message = {
        "maximum": f"{value!r} is above the maximum, {bound}",
        "exclusiveMaximum": f"{value!r} must be below {bound}",
        "minimum": f"{value!r} is below the minimum, {bound}",
        "exclusiveMinimum": f"{value!r} must be above {bound}",
    }[kind]
    hint = error.schema.get("description")
    if kind == "maximum" and bound == 1 and isinstance(value, int | float) and value <= 100:
        # gpu_memory_utilization: 90 means 0.90
        hint = f"it is a fraction, not a percentage: did you mean {value / 100:.2f}?"
    return Problem(where, message, line, hint)


@dataclass(frozen=True)
class _Misplaced:
    """A field of an entry written one level too far out: `hf_id:` beside the model names
    instead of under one. Every other error about it would only confuse."""

    parent: tuple[Any, ...]
    key: str
    noun: str
    empty_sibling: str | None  # the entry just above, left empty: where the field belongs

    @property
    def path(self) -> tuple[Any, ...]:
        return (*self.parent, self.key)

    def covers(self, error: Any) -> bool:
        path = tuple(error.absolute_path)
        if path[: len(self.path)] == self.path:
            return True
        if path == self.parent and error.instance == self.key:  # its name is not a name
            return True
        return self.empty_sibling is not None and path == (*self.parent, self.empty_sibling)

    def problem(self, lines: Lines) -> Problem:
        parent = format_path(self.parent)
        message = f"{self.key!r} is a field of a {self.noun}, not a {self.noun} name"
        hint = f"indent it under the {self.noun} it belongs to"
        if self.empty_sibling is not None:
            sibling = (*self.parent, self.empty_sibling)
            hint += (
                f": {parent}.{self.empty_sibling} (line {lines.get(sibling)}) is empty, "
                f"so it is probably that one; fields go two spaces further in than its name"
            )
        return Problem(format_path(self.path), message, lines.get(self.path), hint)


ENTRY_NOUNS = {"models": "model", "gpus": "GPU", "per_gpu": "GPU"}


def _misplaced_fields(errors: list[Any], data: Any) -> list[_Misplaced]:
    found: dict[tuple[Any, ...], _Misplaced] = {}
    for error in errors:
        path = tuple(error.absolute_path)
        if error.validator in ("pattern", "maxLength") and "propertyNames" in error.schema_path:
            parent, key = path, error.instance
        elif path and isinstance(path[-1], str):
            parent, key = path[:-1], path[-1]
        else:
            continue
        entry = _entry_schema(parent)
        if entry is None or key not in _allowed_keys(entry) or (*parent, key) in found:
            continue
        siblings = list(_at(data, parent) or {})
        above = siblings[siblings.index(key) - 1] if siblings.index(key) > 0 else None
        empty = above if above is not None and _at(data, (*parent, above)) is None else None
        noun = ENTRY_NOUNS.get(str(parent[-1]) if parent else "", "entry")
        found[(*parent, key)] = _Misplaced(parent, key, noun, empty)
    return list(found.values())


def _entry_schema(path: tuple[Any, ...]) -> dict[str, Any] | None:
    """The schema of each entry of the name -> entry mapping at `path` (models, gpus,
    per_gpu), or None when `path` is not such a mapping."""
    node: Any = load_schema()
    for part in path:
        node = _deref(node)
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    node = _deref(node)
    entry = node.get("additionalProperties")
    return _deref(entry) if "propertyNames" in node and isinstance(entry, dict) else None


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    return _resolve(node["$ref"]) if "$ref" in node and "properties" not in node else node


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _unknown_key(error: Any, path: tuple, lines: Lines) -> Problem:
    allowed = _allowed_keys(error.schema)
    extra = [k for k in error.instance if k not in allowed]
    key = extra[0] if extra else "?"
    key_path = (*path, key)
    return Problem(
        format_path(key_path),
        f"unknown key {key!r}; allowed here: {choices_text(allowed)}",
        lines.get(key_path, lines.get(path)),
        _suggest(key, allowed),
    )


def _bad_name(error: Any, path: tuple, lines: Lines) -> Problem:
    # jsonschema reports the offending key as the error's instance, its parent as path
    cause = error
    name = cause.instance
    key_path = (*path, name)
    rule = "lower-case letters, digits and single dashes, starting with a letter"
    if cause.validator == "maxLength":
        rule = f"at most {cause.validator_value} characters"
    hint = None
    if isinstance(name, str):
        fixed = "-".join(
            filter(None, "".join(c if c.isalnum() else "-" for c in name.lower()).split("-"))
        )
        if fixed and fixed != name:
            hint = f"did you mean {fixed!r}?"
    return Problem(
        format_path(key_path),
        f"name {name!r} is not valid: use {rule} (it becomes part of app names and URLs)",
        lines.get(key_path, lines.get(path)),
        hint,
    )


def _allowed_keys(schema: dict[str, Any]) -> list[str]:
    keys = set(schema.get("properties", {}))
    ref = schema.get("$ref")
    if ref:
        keys |= set(_allowed_keys(_resolve(ref)))
    for sub in schema.get("allOf", []):
        keys |= set(_allowed_keys(sub))
    return sorted(keys)


def _resolve(ref: str) -> dict[str, Any]:
    node: Any = load_schema()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _suggest(value: object, allowed: list[str]) -> str | None:
    near = did_you_mean(value, allowed)
    return f"did you mean {near!r}?" if near else None
