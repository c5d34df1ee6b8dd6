"""LoRA adapters: `adapters:` of a model -> Adapter facts, the rank vLLM is started with,
and the checks a schema cannot express.

vLLM 0.12 reads an adapter's adapter_config.json when it starts (vllm/lora/peft_helper.py,
PEFTHelper.from_dict and validate_legal): it needs `r`, `lora_alpha` and `target_modules`,
refuses DoRA, a bias and `modules_to_save`, and refuses an `r` above --max-lora-rank, whose
values are a fixed list. It never compares `base_model_name_or_path` with the model it
serves; validation does, when the lock holds the adapter's config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mvgen.errors import Problem, did_you_mean, format_path
from mvgen.loader import Lines
from mvgen.lock import Lock
from mvgen.plan import Adapter, AdapterFacts, Deployment, Plan
from mvgen.vllm_flags import VllmDataMissing, accepted_flags

REQUIRED_FIELDS = ("r", "lora_alpha", "target_modules")  # PEFTHelper.from_dict
# Top-level folders of the Hugging Face cache Volume that huggingface_hub and mvgen own.
RESERVED_FOLDERS = ("hub", "xet", "lora")


# --- facts --------------------------------------------------------------------------------


def adapter_facts(config: Mapping[str, Any]) -> AdapterFacts:
    """What vLLM 0.12 reads from adapter_config.json, and what it would refuse."""
    refused = []
    missing = [f for f in REQUIRED_FIELDS if f not in config]
    if missing:
        refused.append(f"it lacks {', '.join(missing)}, which vLLM requires")
    if config.get("peft_type") not in (None, "LORA"):
        refused.append(f"its peft_type is {config['peft_type']!r}; vLLM serves LoRA adapters")
    if config.get("use_dora"):
        refused.append("it is a DoRA adapter (use_dora), which vLLM does not support")
    if config.get("modules_to_save"):
        refused.append("it sets modules_to_save, which vLLM does not support")
    if config.get("bias", "none") != "none":
        refused.append(f"it trains biases (bias: {config['bias']!r}), which vLLM does not support")
    rank = config.get("r")
    targets = config.get("target_modules") or ()
    base = config.get("base_model_name_or_path")
    return AdapterFacts(
        rank=rank if isinstance(rank, int) and not isinstance(rank, bool) else None,
        target_modules=(targets,) if isinstance(targets, str) else tuple(map(str, targets)),
        base_model=base if isinstance(base, str) and base else None,
        refused=tuple(refused),
    )


def read_adapters(
    model: str, spec: Mapping[str, Any], gpus: Sequence[str], lock: Lock
) -> tuple[Adapter, ...]:
    """The model's adapters; `gpus` are the model's own, the default of each adapter's."""
    adapters = []
    for name, raw in (spec.get("adapters") or {}).items():
        facts, reason = None, None
        if raw.get("hf_id"):
            entry = lock.adapter(raw["hf_id"], raw.get("revision"))
            if entry is None:
                at = f" at revision {raw['revision']}" if raw.get("revision") else ""
                reason = f"{raw['hf_id']}{at} has no entry in the lock file"
            else:
                facts = adapter_facts(entry.config)
        adapters.append(
            Adapter(
                name=name,
                model=model,
                hf_id=raw.get("hf_id"),
                revision=raw.get("revision"),
                path=raw.get("path"),
                gpus=tuple(raw.get("gpus") or gpus),
                declared_rank=raw.get("rank"),
                facts=facts,
                unknown_reason=reason,
            )
        )
    return tuple(adapters)


def accepted_ranks(vllm: str) -> tuple[int, ...]:
    """--max-lora-rank's values in this vLLM (0.12: 1, 8, 16, 32, 64, 128, 256, 320, 512),
    from the committed option data; empty when that data is missing (validation says so)."""
    try:
        flag = accepted_flags(vllm).get("--max-lora-rank")
    except VllmDataMissing:
        return ()
    if flag is None or not flag.choices:
        return ()
    return tuple(sorted(int(c) for c in flag.choices))


def max_lora_rank(adapters: Sequence[Adapter], vllm: str) -> int | None:
    """The smallest value --max-lora-rank accepts that holds every adapter's rank; None
    without adapters, or when a rank is unknown or larger than vLLM allows."""
    ranks = [a.rank for a in adapters]
    if not ranks or None in ranks:
        return None
    largest = max(r for r in ranks if r is not None)
    return next((r for r in accepted_ranks(vllm) if r >= largest), None)


# --- the checks ----------------------------------------------------------------------------


def adapter_check(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Every adapter problem: where it comes from, its rank, the GPUs it names, its base
    model and its names."""
    problems: list[Problem] = []
    gpu_keys = [g.key for g in plan.gpus]
    ranks = accepted_ranks(plan.image.vllm)
    for adapter in plan.adapters:
        served = [d.gpu.key for d in plan.deployments if d.model.key == adapter.model]
        problems += _source_problems(adapter, lines)
        problems += _rank_problems(adapter, ranks, lines)
        problems += _gpu_problems(adapter, gpu_keys, served, lines)
        mine = [d for d in plan.deployments if d.model.key == adapter.model]
        problems += _base_problems(adapter, mine, lines, warnings)
    problems += _name_problems(plan, lines)
    return _once(problems)


def _path(adapter: Adapter, *rest: str | int) -> tuple[str | int, ...]:
    return ("models", adapter.model, "adapters", adapter.name, *rest)


def _problem(
    adapter: Adapter, field: str | None, message: str, hint: str | None, lines: Lines
) -> Problem:
    path = _path(adapter, field) if field else _path(adapter)
    return Problem(format_path(path), message, lines.get(path) or lines.get(_path(adapter)), hint)


def _source_problems(adapter: Adapter, lines: Lines) -> list[Problem]:
    if adapter.hf_id and adapter.path:
        return [
            _problem(
                adapter,
                None,
                "sets both hf_id and path; an adapter comes from one place",
                "keep hf_id (a Hub repo) or path (a folder on the Hugging Face cache Volume)",
                lines,
            )
        ]
    if not adapter.hf_id and not adapter.path:
        return [
            _problem(
                adapter,
                None,
                "says neither where the adapter comes from",
                "set hf_id: org/name (a Hub repo) or path: (a folder on the Hugging Face "
                "cache Volume, with rank:)",
                lines,
            )
        ]
    problems = []
    if adapter.revision and not adapter.hf_id:
        problems.append(
            _problem(
                adapter, "revision", "a revision pins a Hub repo, and none is set", None, lines
            )
        )
    if adapter.path:
        top = adapter.path.split("/", 1)[0]
        if top in RESERVED_FOLDERS:
            problems.append(
                _problem(
                    adapter,
                    "path",
                    f"{adapter.path!r} is inside {top}/, which huggingface_hub or mvgen "
                    "manages on the Hugging Face cache Volume",
                    "upload the adapter to a folder of its own, e.g. adapters/<name>",
                    lines,
                )
            )
        if adapter.declared_rank is None:
            problems.append(
                _problem(
                    adapter,
                    None,
                    "an adapter on the Volume needs rank: (r in its adapter_config.json): "
                    "vLLM reserves memory for the largest rank and refuses a larger one",
                    "add rank: <r> to this adapter",
                    lines,
                )
            )
    return problems


def _rank_problems(adapter: Adapter, ranks: tuple[int, ...], lines: Lines) -> list[Problem]:
    problems = []
    facts = adapter.facts
    if facts is not None and facts.refused:
        problems.append(
            _problem(
                adapter,
                "hf_id",
                f"vLLM would refuse to load {adapter.hf_id}: " + "; ".join(facts.refused),
                "use a plain LoRA adapter (merge DoRA or modules_to_save into a full checkpoint "
                "and serve that as a model)",
                lines,
            )
        )
    if adapter.hf_id and facts is None and adapter.declared_rank is None:
        problems.append(
            _problem(
                adapter,
                "hf_id",
                f"its rank is unknown: {adapter.unknown_reason}",
                "run `make lock` (it reads adapter_config.json from the Hub), or declare rank:",
                lines,
            )
        )
    locked = facts.rank if facts else None
    if locked is not None and adapter.declared_rank not in (None, locked):
        problems.append(
            _problem(
                adapter,
                "rank",
                f"rank {adapter.declared_rank}, but {adapter.hf_id}'s adapter_config.json "
                f"says r = {locked}",
                f"remove rank: (the lock's r is used) or set it to {locked}",
                lines,
            )
        )
    rank = adapter.rank
    if rank is not None and ranks and rank > ranks[-1]:
        field = "rank" if adapter.declared_rank is not None and locked is None else "hf_id"
        problems.append(
            _problem(
                adapter,
                field,
                f"rank {rank} is above {ranks[-1]}, the largest --max-lora-rank vLLM accepts "
                f"(its values: {', '.join(map(str, ranks))})",
                "serve an adapter of a lower rank, or merge this one into a checkpoint",
                lines,
            )
        )
    return problems


def _gpu_problems(
    adapter: Adapter, gpu_keys: list[str], served: list[str], lines: Lines
) -> list[Problem]:
    problems = []
    for i, gpu in enumerate(adapter.gpus):
        path = _path(adapter, "gpus", i)
        if gpu not in gpu_keys:
            near = did_you_mean(gpu, gpu_keys)
            problems.append(
                Problem(
                    format_path(path),
                    f"unknown GPU {gpu!r}; gpus: defines {', '.join(gpu_keys)}",
                    lines.get(path),
                    f"did you mean {near!r}?" if near else "define it under gpus: first",
                )
            )
        elif gpu not in served:
            problems.append(
                Problem(
                    format_path(path),
                    f"GPU {gpu!r} does not serve {adapter.model}, the adapter's base model; "
                    f"{adapter.model} is served on {', '.join(served) or 'no GPU'}",
                    lines.get(path),
                    f"remove {gpu!r}, or add it to models.{adapter.model}.gpus",
                )
            )
    return problems


def _base_problems(
    adapter: Adapter, deployments: list[Deployment], lines: Lines, warnings: list[str]
) -> list[Problem]:
    """The adapter's base_model_name_or_path against what its model loads. A per-GPU
    checkpoint is the same model by definition (`per_gpu.<gpu>.checkpoint`, e.g. an FP8
    copy), so the base may be any checkpoint the model loads on any GPU, or any of the
    model's names: compared case-insensitively."""
    base = adapter.facts.base_model if adapter.facts else None
    if base is None or not deployments:
        return []
    model = deployments[0].model
    if not _is_hub_id(base):
        warnings.append(
            f"models.{model.key}.adapters.{adapter.name}: its adapter_config.json names "
            f"{base!r} as base model, a local path: not compared with {model.key}"
        )
        return []
    known = {model.hf_id, *model.names, *(d.checkpoint.hf_id for d in deployments)}
    if base.casefold() in {name.casefold() for name in known}:
        return []
    loads = "; ".join(
        f"{d.checkpoint.hf_id} on {d.gpu.key}" for d in deployments if d.gpu.key in adapter.gpus
    )
    return [
        _problem(
            adapter,
            "hf_id",
            f"{adapter.hf_id} was trained on {base}, but {model.key} loads {loads}; vLLM "
            "would apply it anyway and answer with garbled text",
            f"serve it on a model whose hf_id is {base}; if {base} is the same weights under "
            f"another name, add it to models.{model.key}.aliases",
            lines,
        )
    ]


def _is_hub_id(name: str) -> bool:
    """org/name, as opposed to a local path a training run left in adapter_config.json."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _name_problems(plan: Plan, lines: Lines) -> list[Problem]:
    """Requests and LiteLLM routes name adapters like models: no name may mean two things."""
    owners: dict[str, str] = {}
    for model in plan.models:
        for name in model.names:
            owners.setdefault(name.casefold(), f"a name of models.{model.key}")
    litellm = {model.key: f"the LiteLLM group of models.{model.key}" for model in plan.models}
    litellm |= {
        d.route: f"the LiteLLM route of {d.model.key} on {d.gpu.key}" for d in plan.deployments
    }
    problems = []
    for adapter in plan.adapters:
        where = f"models.{adapter.model}.adapters.{adapter.name}"
        owner = owners.get(adapter.name.casefold())
        if owner is not None:
            problems.append(
                _problem(
                    adapter,
                    None,
                    f"the adapter name {adapter.name!r} is already {owner}; requests name "
                    "adapters and models alike",
                    "rename the adapter",
                    lines,
                )
            )
        owners.setdefault(adapter.name.casefold(), f"the adapter {where}")
        for route in (adapter.name, *(f"{adapter.name}-{gpu}" for gpu in adapter.gpus)):
            other = litellm.get(route)
            if other is not None and owner is None:
                problems.append(
                    _problem(
                        adapter,
                        None,
                        f"its LiteLLM name {route!r} is already {other}",
                        "rename the adapter",
                        lines,
                    )
                )
            litellm.setdefault(route, f"a LiteLLM name of the adapter {where}")
    return problems


def _once(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
