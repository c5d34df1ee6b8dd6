"""The schema documents every field, its defaults are the ones the Plan applies, and
docs/configuration.md names every field the schema has."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import pytest
from conftest import ROOT

from mvgen.config import build_plan
from mvgen.plan import Settings
from mvgen.schema import _resolve, load_schema

MINIMAL = {"gpus": {"h100": {"type": "H100"}}, "models": {"m": {"hf_id": "org/m"}}}


def properties(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named property in the schema, following $ref and nested objects."""
    if "$ref" in node:
        yield from properties(_resolve(node["$ref"]), path)
    for name, sub in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        yield here, sub
        yield from properties(sub, here)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from properties(extra, f"{path}.<name>")


def test_schema_is_valid_draft_2020_12() -> None:
    import jsonschema

    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_field_has_a_description() -> None:
    missing = []
    for path, node in properties(load_schema()):
        target = _resolve(node["$ref"]) if "$ref" in node and "description" not in node else node
        if not target.get("description"):
            missing.append(path)
    assert not missing, f"fields without a description: {missing}"


def test_settings_in_the_schema_match_the_plan() -> None:
    """Every per-model setting the schema allows is a Settings field, and back."""
    in_schema = set(_resolve("#/$defs/settings")["properties"])
    assert in_schema == {f.name for f in fields(Settings)}


@pytest.mark.parametrize(
    ("schema_path", "read"),
    [
        (("mode",), lambda p: p.mode),
        (("app_prefix",), lambda p: p.app_prefix),
        (("endpoint_limit",), lambda p: p.endpoint_limit),
        (("image", "vllm"), lambda p: p.image.vllm),
        (("image", "base"), lambda p: p.image.base),
        (("image", "python"), lambda p: p.image.python),
        (("secrets", "huggingface"), lambda p: vars(p.hf_secret)),
        (("secrets", "api_key"), lambda p: vars(p.api_key_secret)),
        (("volumes", "huggingface"), lambda p: p.hf_volume),
        (("volumes", "vllm"), lambda p: p.vllm_volume),
        (("litellm", "timeout"), lambda p: p.litellm.timeout),
        (("litellm", "stream_timeout"), lambda p: p.litellm.stream_timeout),
        (("litellm", "num_retries"), lambda p: p.litellm.num_retries),
    ],
)
def test_documented_defaults_are_applied(schema_path: tuple[str, ...], read) -> None:
    node = load_schema()
    for part in schema_path:
        node = node["properties"][part]
    assert "default" in node, f"{'.'.join(schema_path)} documents no default"
    assert read(build_plan(MINIMAL)) == node["default"]


def test_configuration_doc_names_every_field() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    names = {path.rsplit(".", 1)[-1] for path, _ in properties(load_schema())}
    names.discard("<name>")
    missing = sorted(name for name in names if f"`{name}`" not in doc)
    assert not missing, f"docs/configuration.md does not mention: {missing}"
