"""The table of models a gateway serves, and name resolution for requests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServedModel:
    key: str  # short name from deployments.yaml, e.g. "gemma-3-12b"
    served_name: str  # the name vLLM serves (first --served-model-name)
    aliases: tuple[str, ...] = ()  # other names accepted in requests

    def names(self) -> tuple[str, ...]:
        return (self.served_name, self.key, *self.aliases)


class ModelTable:
    """Models by every accepted name; matching ignores case, as HF ids vary in case."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self.models: tuple[ServedModel, ...] = tuple(models)
        self._by_name: dict[str, ServedModel] = {}
        for model in self.models:
            for name in model.names():
                self._add(name, model)

    def _add(self, name: str, model: ServedModel) -> None:
        folded = name.casefold()
        other = self._by_name.get(folded)
        if other is not None and other.key != model.key:
            # Validation of deployments.yaml refuses this too; never route ambiguously.
            raise ValueError(
                f"model name {name!r} is claimed by both {other.key!r} and {model.key!r}"
            )
        self._by_name[folded] = model

    def resolve(self, name: str) -> ServedModel | None:
        return self._by_name.get(name.casefold())

    def names(self) -> list[str]:
        return sorted(model.served_name for model in self.models)

    def __len__(self) -> int:
        return len(self.models)


def models_from_literal(data: Mapping[str, Mapping[str, Any]]) -> ModelTable:
    """Build the table from the dict literal a generated app embeds.

    `{"gemma-3-12b": {"served_name": "google/gemma-3-12b-it", "aliases": [...], ...}}`;
    keys other than served_name and aliases are ignored here.
    """
    models = []
    for key, entry in data.items():
        served_name = entry.get("served_name")
        if not isinstance(served_name, str) or not served_name:
            raise ValueError(f"model {key!r} has no served_name")
        aliases = tuple(str(alias) for alias in entry.get("aliases") or ())
        models.append(ServedModel(key=key, served_name=served_name, aliases=aliases))
    return ModelTable(models)
