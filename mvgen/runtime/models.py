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
class ServedAdapter:
    """A LoRA adapter vLLM applies in its base model's containers."""

    name: str  # what requests say in "model", and what vLLM knows it as
    root: str  # where it comes from (a Hub repo, or its folder), shown in /v1/models


@dataclass(frozen=True)
class ServedModel:
    key: str  # short name from deployments.yaml, e.g. "gemma-3-12b"
    served_name: str  # the name vLLM serves (first --served-model-name)
    aliases: tuple[str, ...] = ()  # other names accepted in requests
    adapters: tuple[ServedAdapter, ...] = ()
    kind: str = "chat"  # a key of KIND_ROUTES

    def names(self) -> tuple[str, ...]:
        return (self.served_name, self.key, *self.aliases)

    @property
    def routes(self) -> tuple[str, ...]:
        return KIND_ROUTES[self.kind]


@dataclass(frozen=True)
class Target:
    """What a request's "model" resolves to: the pool that serves it, and the name vLLM is
    sent (the model's served name, or the adapter's own name, so that vLLM applies it)."""

    model: ServedModel
    upstream_name: str
    adapter: ServedAdapter | None = None


class ModelTable:
    """Models and their adapters by every accepted name; matching ignores case, as HF ids
    vary in case."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self.models: tuple[ServedModel, ...] = tuple(models)
        self._by_name: dict[str, Target] = {}
        for model in self.models:
            for name in model.names():
                self._add(name, Target(model, model.served_name))
        for model in self.models:
            for adapter in model.adapters:
                self._add(adapter.name, Target(model, adapter.name, adapter))

    def _add(self, name: str, target: Target) -> None:
        folded = name.casefold()
        other = self._by_name.get(folded)
        if other is not None and other != target:
            # Validation of deployments.yaml refuses this too; never route ambiguously.
            raise ValueError(
                f"model name {name!r} is claimed by both {_label(other)} and {_label(target)}"
            )
        self._by_name[folded] = target

    def resolve(self, name: str) -> ServedModel | None:
        """The model a name (never an adapter's) belongs to."""
        target = self._by_name.get(name.casefold())
        return target.model if target is not None and target.adapter is None else None

    def target(self, name: str) -> Target | None:
        """What a request naming `name` goes to: a model, or an adapter on its base."""
        return self._by_name.get(name.casefold())

    def names(self) -> list[str]:
        """The served names of models, then adapters: what /v1/models lists."""
        adapters = sorted(a.name for m in self.models for a in m.adapters)
        return sorted(model.served_name for model in self.models) + adapters

    def __len__(self) -> int:
        return len(self.models)


def _label(target: Target) -> str:
    if target.adapter is not None:
        return f"adapter {target.adapter.name!r} of {target.model.key!r}"
    return repr(target.model.key)


def models_from_literal(data: Mapping[str, Mapping[str, Any]]) -> ModelTable:
    """Build the table from the dict literal a generated app embeds.

    `{"gemma-3-12b": {"served_name": "google/gemma-3-12b-it", "aliases": [...],
    "adapters": [{"name": "support-bot", "root": "org/support-lora", ...}], ...}}`;
    `kind` is there for pooling models only (chat when absent); other keys are ignored here.
    """
    models = []
    for key, entry in data.items():
        served_name = entry.get("served_name")
        if not isinstance(served_name, str) or not served_name:
            raise ValueError(f"model {key!r} has no served_name")
        aliases = tuple(str(alias) for alias in entry.get("aliases") or ())
        adapters = tuple(
            ServedAdapter(str(a["name"]), str(a.get("root") or a["name"]))
            for a in entry.get("adapters") or ()
        )
        kind = entry.get("kind", "chat")
        if kind not in KIND_ROUTES:
            raise ValueError(f"model {key!r} has unknown kind {kind!r}")
        models.append(ServedModel(key, served_name, aliases, adapters, kind))
    return ModelTable(models)
