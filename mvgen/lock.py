"""deployments.lock.json: what the Hugging Face Hub said about each checkpoint, read once by
`mvgen lock` so that validate, render and plan work offline and give the same answer
everywhere.

An entry keeps the Hub's own answers verbatim (config.json, the safetensors parameter
counts by dtype, the image processor's size for Qwen-VL models; a LoRA adapter's
adapter_config.json); mvgen/hfconfig.py and mvgen/adapters.py turn them into facts each
time, so a better reading of a config needs no new lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvgen.catalog import Architecture, Checkpoint
from mvgen.errors import ConfigError, Problem
from mvgen.hfconfig import ConfigProblem, read_checkpoint

LOCK_VERSION = 1
LOCK_COMMAND = "make lock"  # what every "missing or stale" message tells the user to run


CHECKPOINT = "checkpoint"
ADAPTER = "adapter"  # a LoRA adapter's repo: only its adapter_config.json is read


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint (or LoRA adapter) deployments.yaml names, and where it names it."""

    hf_id: str
    revision: str | None
    where: str  # models.gemma-3-27b.hf_id, models.gemma-3-27b.per_gpu.l40s.checkpoint
    kind: str = CHECKPOINT

    @property
    def key(self) -> str:
        return entry_key(self.hf_id, self.revision)


def entry_key(hf_id: str, revision: str | None) -> str:
    """Lock entries are per checkpoint and revision; Hub ids are case-insensitive."""
    return f"{hf_id.lower()}@{revision}" if revision else hf_id.lower()


@dataclass(frozen=True)
class LockEntry:
    hf_id: str
    revision: str | None  # as deployments.yaml pins it (None: the default branch)
    sha: str | None  # the commit the Hub resolved it to when locked
    source: str  # where the answers came from
    config: dict[str, Any]
    parameters: dict[str, int] | None  # safetensors parameters by dtype
    preprocessor: dict[str, Any] | None = None

    def facts(self) -> tuple[Architecture, Checkpoint]:
        """Raises ConfigProblem when the config cannot be sized."""
        return read_checkpoint(
            self.hf_id,
            self.config,
            self.parameters,
            revision=self.revision,
            preprocessor=self.preprocessor,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hf_id": self.hf_id,
            "revision": self.revision,
            "sha": self.sha,
            "source": self.source,
            "safetensors_parameters": self.parameters,
            "config": self.config,
        }
        if self.preprocessor is not None:
            out["preprocessor"] = self.preprocessor
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LockEntry:
        return cls(
            hf_id=str(data["hf_id"]),
            revision=data.get("revision"),
            sha=data.get("sha"),
            source=str(data.get("source", "")),
            config=dict(data["config"]),
            parameters=(
                {str(k): int(v) for k, v in data["safetensors_parameters"].items()}
                if data.get("safetensors_parameters")
                else None
            ),
            preprocessor=data.get("preprocessor"),
        )


@dataclass(frozen=True)
class AdapterEntry:
    """A LoRA adapter's adapter_config.json as the Hub served it (vLLM reads r,
    target_modules and the features it refuses from it; base_model_name_or_path is what
    validation compares with the base model)."""

    hf_id: str
    revision: str | None
    sha: str | None
    source: str
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "hf_id": self.hf_id,
            "revision": self.revision,
            "sha": self.sha,
            "source": self.source,
            "adapter_config": self.config,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AdapterEntry:
        return cls(
            hf_id=str(data["hf_id"]),
            revision=data.get("revision"),
            sha=data.get("sha"),
            source=str(data.get("source", "")),
            config=dict(data["adapter_config"]),
        )


@dataclass(frozen=True)
class Lock:
    entries: dict[str, LockEntry] = field(default_factory=dict)
    provenance: str = ""
    adapters: dict[str, AdapterEntry] = field(default_factory=dict)
    _read: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def get(self, hf_id: str, revision: str | None) -> LockEntry | None:
        return self.entries.get(entry_key(hf_id, revision))

    def adapter(self, hf_id: str, revision: str | None) -> AdapterEntry | None:
        return self.adapters.get(entry_key(hf_id, revision))

    def has(self, ref: CheckpointRef) -> bool:
        held = self.adapters if ref.kind == ADAPTER else self.entries
        return ref.key in held

    def facts(self, hf_id: str, revision: str | None) -> tuple[Architecture, Checkpoint] | str:
        """The checkpoint's facts, or why there are none (a message naming the fix)."""
        key = entry_key(hf_id, revision)
        if key not in self._read:  # each entry is read once, however many GPUs serve it
            self._read[key] = self._facts(hf_id, revision)
        return self._read[key]

    def _facts(self, hf_id: str, revision: str | None) -> tuple[Architecture, Checkpoint] | str:
        entry = self.get(hf_id, revision)
        if entry is None:
            at = f" at revision {revision}" if revision else ""
            return f"{hf_id}{at} has no entry in the lock file: run `{LOCK_COMMAND}`"
        try:
            return entry.facts()
        except (ConfigProblem, KeyError, TypeError, ValueError) as exc:
            return f"the lock's config.json of {hf_id} cannot be sized: {exc}"


def lock_path(config_path: Path) -> Path:
    """deployments.yaml -> deployments.lock.json, beside it."""
    return config_path.with_name(f"{config_path.stem}.lock.json")


def read_lock(path: Path) -> Lock | None:
    """The lock file, or None when there is none. A damaged one is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _lock_error(path, f"cannot read it: {exc}") from None
    try:
        data = json.loads(text)
        if data.get("lock_version") != LOCK_VERSION:
            raise _lock_error(
                path,
                f"lock_version {data.get('lock_version')!r} is not {LOCK_VERSION}, "
                "written by another mvgen",
            )
        entries = [LockEntry.from_json(e) for e in data["checkpoints"].values()]
        adapters = [AdapterEntry.from_json(e) for e in data.get("adapters", {}).values()]
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _lock_error(path, f"not a lock file mvgen can read ({exc})") from None
    return Lock(
        {entry_key(e.hf_id, e.revision): e for e in entries},
        str(data.get("provenance", "")),
        {entry_key(e.hf_id, e.revision): e for e in adapters},
    )


def _lock_error(path: Path, message: str) -> ConfigError:
    return ConfigError([Problem("(lock)", f"{path.name}: {message}", hint=f"run `{LOCK_COMMAND}`")])


def lock_text(lock: Lock) -> str:
    """Deterministic JSON: sorted entries, two-space indent, a final newline."""
    body = {
        "lock_version": LOCK_VERSION,
        "generated_by": "mvgen lock",
        "provenance": lock.provenance,
        "checkpoints": {k: lock.entries[k].to_json() for k in sorted(lock.entries)},
    }
    if lock.adapters:  # absent without adapters, so such locks read as they always did
        body["adapters"] = {k: lock.adapters[k].to_json() for k in sorted(lock.adapters)}
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def write_lock(path: Path, lock: Lock) -> None:
    """Write beside the target, then rename: a failure leaves the old lock whole."""
    tmp = path.with_name(f".{path.name}.mvgen-tmp")
    tmp.write_text(lock_text(lock), encoding="utf-8")
    os.replace(tmp, path)


def wanted_checkpoints(data: Mapping[str, Any]) -> list[CheckpointRef]:
    """Every checkpoint a schema-valid deployments.yaml serves, each once, in file order."""
    refs: dict[str, CheckpointRef] = {}
    for key, spec in data.get("models", {}).items():
        main = CheckpointRef(spec["hf_id"], spec.get("revision"), f"models.{key}.hf_id")
        refs.setdefault(main.key, main)
        for gpu, settings in (spec.get("per_gpu") or {}).items():
            if settings.get("checkpoint"):
                where = f"models.{key}.per_gpu.{gpu}.checkpoint"
                ref = CheckpointRef(settings["checkpoint"], settings.get("revision"), where)
                refs.setdefault(ref.key, ref)
    return list(refs.values())


def wanted_adapters(data: Mapping[str, Any]) -> list[CheckpointRef]:
    """Every LoRA adapter on the Hub a schema-valid deployments.yaml names, each once.
    Adapters on a Volume (`path:`) are not on the Hub: they declare their rank."""
    refs: dict[str, CheckpointRef] = {}
    for key, spec in data.get("models", {}).items():
        for name, adapter in (spec.get("adapters") or {}).items():
            if adapter.get("hf_id"):
                where = f"models.{key}.adapters.{name}.hf_id"
                ref = CheckpointRef(adapter["hf_id"], adapter.get("revision"), where, ADAPTER)
                refs.setdefault(ref.key, ref)
    return list(refs.values())


def missing_entries(lock: Lock | None, refs: Iterable[CheckpointRef]) -> list[CheckpointRef]:
    return [r for r in refs if lock is None or not lock.has(r)]


def refreshed(
    lock: Lock | None,
    refs: list[CheckpointRef],
    fetch: Callable[[CheckpointRef], LockEntry | AdapterEntry],
    *,
    only_missing: bool,
    provenance: str,
) -> tuple[Lock, list[CheckpointRef]]:
    """The lock for exactly `refs` (checkpoints and adapters): entries fetched anew (or,
    with only_missing, only those absent), entries no longer named dropped. Returns it and
    the refs fetched."""
    old: dict[str, Mapping[str, Any]] = {
        CHECKPOINT: lock.entries if lock else {},
        ADAPTER: lock.adapters if lock else {},
    }
    new: dict[str, dict[str, Any]] = {CHECKPOINT: {}, ADAPTER: {}}
    fetched = []
    for ref in refs:
        if only_missing and ref.key in old[ref.kind]:
            new[ref.kind][ref.key] = old[ref.kind][ref.key]
            continue
        new[ref.kind][ref.key] = fetch(ref)
        fetched.append(ref)
    before = lock.provenance if lock else ""
    if not fetched or len(fetched) == len(refs) or not before:
        text = before if not fetched and before else provenance
    else:
        text = f"{before} Since then: {provenance} (each entry's source says which)."
    return Lock(new[CHECKPOINT], text, new[ADAPTER]), fetched
