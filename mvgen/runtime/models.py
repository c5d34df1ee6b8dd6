"""The table of models a gateway serves, and name resolution for requests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
RERANK_PATH = "/v1/rerank"
SCORE_PATH = "/v1/score"

# The gateway routes each kind of model serves (deployments.yaml `kind:`). vLLM 0.12 answers
# /rerank and /score for an embedding model too, by cosine similarity of the embeddings
# (vllm/entrypoints/pooling/score/serving.py `_embedding_score`); a cross-encoder has no
# embeddings (its pooler serves classify and score only).
KIND_ROUTES: dict[str, tuple[str, ...]] = {
    "chat": (CHAT_PATH, COMPLETIONS_PATH),
    "embed": (EMBEDDINGS_PATH, RERANK_PATH, SCORE_PATH),
    "rerank": (RERANK_PATH, SCORE_PATH),
}
KIND_NAMES = {"chat": "a chat model", "embed": "an embedding model", "rerank": "a reranker"}


def routes_text(kind: str) -> str:
    """`/v1/embeddings, /v1/rerank and /v1/score`: a kind's routes, for messages."""
    routes = KIND_ROUTES[kind]
    return ", ".join(routes[:-1]) + " and " + routes[-1]


@dataclass(frozen=True)
class ServedModel:
    key: str  # short name from deployments.yaml, e.g. "gemma-3-12b"
    served_name: str  # the name vLLM serves (first --served-model-name)
    aliases: tuple[str, ...] = ()  # other names accepted in requests
    kind: str = "chat"  # a key of KIND_ROUTES

    def names(self) -> tuple[str, ...]:
        return (self.served_name, self.key, *self.aliases)

    @property
    def routes(self) -> tuple[str, ...]:
        return KIND_ROUTES[self.kind]


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
    `kind` is there for pooling models only (chat when absent); keys other than
    served_name, aliases and kind are ignored here.
    """
    models = []
    for key, entry in data.items():
        served_name = entry.get("served_name")
        if not isinstance(served_name, str) or not served_name:
            raise ValueError(f"model {key!r} has no served_name")
        aliases = tuple(str(alias) for alias in entry.get("aliases") or ())
        kind = entry.get("kind", "chat")
        if kind not in KIND_ROUTES:
            raise ValueError(f"model {key!r} has unknown kind {kind!r}")
        models.append(ServedModel(key=key, served_name=served_name, aliases=aliases, kind=kind))
    return ModelTable(models)
