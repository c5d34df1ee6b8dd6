"""Pooling models: the `kind` a model declares (chat, embed, rerank), the vLLM 0.12 flags
it becomes, and the checks of it against the checkpoint's config.json (via the lock).

vLLM 0.12 picks a runner and a conversion from the architecture name
(vllm/config/model.py `ModelConfig._get_runner_type`, `_get_convert_type`,
`_SUFFIX_TO_DEFAULTS`): `--runner pooling` makes any model a pooling model, and with
`--convert auto` a registered pooling architecture stays as it is, a
`*ForSequenceClassification` becomes a classifier, and a generative `*ForCausalLM` becomes
an embedding model. `--task` is deprecated in 0.12 and never rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mvgen.catalog import Architecture
from mvgen.errors import Problem
from mvgen.loader import Lines
from mvgen.runtime.models import KIND_NAMES
from mvgen.vllm_flags import normalise_flag

if TYPE_CHECKING:
    from mvgen.plan import Deployment, Plan

POOLING_KINDS = ("embed", "rerank")
# Architecture-name suffixes vLLM 0.12 resolves to a generating model (_SUFFIX_TO_DEFAULTS)...
GENERATIVE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "ChatModel", "LMHeadModel")
# ... and to a classifier, whose pooler serves classify and score but no embeddings.
CLASSIFIER_SUFFIXES = (
    "ForSequenceClassification",
    "ForAudioClassification",
    "ForImageClassification",
    "ForVideoClassification",
    "ClassificationModel",
)
# extra_args with which the user decides what vLLM builds: mvgen then trusts them.
OVERRIDE_FLAGS = ("--hf-overrides", "--convert")
QWEN3_RERANKER_OVERRIDES = (
    '{"architectures": ["Qwen3ForSequenceClassification"], '
    '"classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}'
)


def is_generative(arch: Architecture | None) -> bool:
    return bool(arch and any(a.endswith(GENERATIVE_SUFFIXES) for a in arch.hf_architectures))


def is_classifier(arch: Architecture | None) -> bool:
    return bool(arch and any(a.endswith(CLASSIFIER_SUFFIXES) for a in arch.hf_architectures))


def overridden(extra_args: Sequence[str]) -> bool:
    return any(normalise_flag(arg.split("=", 1)[0]) in OVERRIDE_FLAGS for arg in extra_args)


def runner_args(kind: str, arch: Architecture | None, extra_args: Sequence[str]) -> list[str]:
    """The flags a kind adds to `vllm serve`: none for chat (vLLM's auto runner), else
    `--runner pooling`, plus `--convert embed` for an embedding model built on a generative
    architecture (Qwen3-Embedding is a Qwen3ForCausalLM): what vLLM's auto conversion would
    pick, said explicitly. A `--convert` in extra_args is the user's."""
    if kind not in POOLING_KINDS:
        return []
    args = ["--runner", "pooling"]
    if kind == "embed" and is_generative(arch) and not overridden(extra_args):
        args += ["--convert", "embed"]
    return args


# --- the validation check -----------------------------------------------------------------


def kind_check(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Refuse a kind the checkpoint contradicts, where its config.json (the lock) says so
    and vLLM would not serve the kind's routes; and text-only fields and LoRA adapters on a
    pooling model."""
    found: dict[tuple[str, str], Problem] = {}
    for d in plan.deployments:
        for path, message, hint in _findings(d):
            key = (".".join(map(str, path)), message)
            if key not in found:
                line = lines.get(path) or lines.get(("models", d.model.key))
                found[key] = Problem(key[0], message, line, hint)
    return list(found.values())


def _findings(d: Deployment) -> list[tuple[tuple[str, ...], str, str]]:
    model, arch = d.model, d.architecture
    where = ("models", model.key, "kind")
    out = []
    if model.kind in POOLING_KINDS:
        for field in ("tool_parser", "reasoning_parser"):
            if getattr(model, field):
                out.append(
                    (
                        ("models", model.key, field),
                        f"{field} is for models that generate text; {model.key} is "
                        f"{KIND_NAMES[model.kind]} (kind: {model.kind})",
                        f"remove {field}, or set kind: chat",
                    )
                )
        if model.adapters:
            out.append(
                (
                    ("models", model.key, "adapters"),
                    f"LoRA adapters are served on chat models only, and {model.key} is "
                    f"{KIND_NAMES[model.kind]} (kind: {model.kind}): vLLM 0.12 refuses LoRA "
                    "on its BERT and XLM-RoBERTa encoders at start ('does not support LoRA "
                    "yet'), and mvgen routes, lists in LiteLLM and smoke-tests adapters as "
                    "chat models",
                    "remove adapters:, or put the adapters on a chat model",
                )
            )
    if arch is None or not arch.hf_architectures or overridden(d.settings.extra_args):
        return out
    names = "/".join(arch.hf_architectures)
    ckpt = d.checkpoint.hf_id
    if model.kind == "chat" and (arch.encoder_only or is_classifier(arch)):
        fits = "rerank" if is_classifier(arch) else "embed"
        out.append(
            (
                where,
                f"{ckpt} is {names}, a pooling model that generates no text: vLLM would run it "
                f"with --runner pooling and answer no chat or completion",
                f"set kind: {fits}",
            )
        )
    elif model.kind == "embed" and is_classifier(arch):
        out.append(
            (
                where,
                f"{ckpt} is {names}, a classifier: vLLM 0.12 serves it for classify and score "
                "only, so every /v1/embeddings request would fail",
                "set kind: rerank (a cross-encoder), or use an embedding checkpoint",
            )
        )
    elif model.kind == "rerank" and not is_classifier(arch):
        made = "a generative model" if is_generative(arch) else "an embedding model"
        out.append(
            (
                where,
                f"{ckpt} is {names}, {made}, not a cross-encoder: under --runner pooling vLLM "
                "would make it an embedding model, and /v1/rerank would rank by cosine "
                "similarity of embeddings instead of a reranker's score",
                "set kind: embed (which serves /v1/rerank by similarity too); for "
                "Qwen3-Reranker add to extra_args: --hf-overrides "
                f"'{QWEN3_RERANKER_OVERRIDES}' (docs/configuration.md)",
            )
        )
    elif model.kind == "rerank" and arch.num_labels not in (None, 1):
        out.append(
            (
                where,
                f"{ckpt} is a classifier with {arch.num_labels} labels: vLLM 0.12 serves "
                "/rerank and /score only for one label (gpu_model_runner.py: 'Score API is "
                "only enabled for num_labels == 1')",
                "use a reranker checkpoint with a single relevance label",
            )
        )
    return out
