"""Check raw config data against schema/deployments.schema.json and word the errors.

jsonschema's own messages name neither the path nor the fix; here each error becomes a
Problem naming the path, the bad value, what is allowed and, for a near miss, the
closest valid choice.
"""

from __future__ import annotations

import json
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

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_problems(data: Any, lines: Lines) -> list[Problem]:
    """Every schema violation in `data`, in file order."""
    problems = [_problem(e, lines) for e in _leaf_errors(_validator().iter_errors(data))]
    return sorted(problems, key=lambda p: (p.line or 0, p.path, p.message))


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
    if kind == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return Problem(where, f"{value!r} should be {wanted}", line)
    return Problem(where, f"{error.message}", line)


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
