"""Write a lock file for a deployments.yaml without the Hugging Face Hub, from the recorded
copies in this folder (README.md says where each came from).

    python tests/data/hf/build_lock.py tests/data/seed-deployments.yaml

This is how the committed locks were made where the Hub is unreachable; `make lock` with
network access replaces every entry with the Hub's own answers. Checkpoints with no
recorded config.json here are refused, except the two pre-quantized FP8 checkpoints of the
seed (DERIVED below), whose entries are the base model's recorded config.json with the
quantization_config their model cards describe and parameter counts computed from the
shapes: each such entry says so in its `source`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from mvgen.loader import load_yaml
from mvgen.lock import (
    AdapterEntry,
    Lock,
    LockEntry,
    lock_path,
    wanted_adapters,
    wanted_checkpoints,
    write_lock,
)

HERE = Path(__file__).resolve().parent
PROVENANCE = (
    "Built by tests/data/hf/build_lock.py without network access (the Hugging Face Hub was "
    "unreachable where this lock was made): each config.json (and Qwen-VL image size) is the "
    "recorded copy in tests/data/hf/<org>--<name>/ and each safetensors parameter count the "
    "published figure recorded there, except entries whose source says 'derived'. Run "
    "`make lock` with network access to replace them with the Hub's own answers."
)


def recorded(hf_id: str, revision: str | None) -> LockEntry:
    folder = HERE / hf_id.replace("/", "--")
    processor = folder / "preprocessor_config.json"
    return LockEntry(
        hf_id=hf_id,
        revision=revision,
        sha=None,
        source=f"recorded: tests/data/hf/{folder.name}",
        config=_json(folder / "config.json"),
        parameters=_json(folder / "safetensors.json")["parameters"],
        preprocessor={"size": _json(processor)["size"]} if processor.exists() else None,
    )


def recorded_adapter(hf_id: str, revision: str | None) -> AdapterEntry:
    folder = HERE / hf_id.replace("/", "--")
    return AdapterEntry(
        hf_id=hf_id,
        revision=revision,
        sha=None,
        source=f"recorded: tests/data/hf/{folder.name}",
        config=_json(folder / "adapter_config.json"),
    )


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _linear_params(hidden: int, layers: int, q: int, kv: int, mlp: list[tuple[int, int]]):
    """(weights, output rows, 128x128 blocks) of a decoder's quantized linear layers."""
    shapes = [(q, hidden), (kv, hidden), (kv, hidden), (hidden, q), *mlp]
    weights = sum(o * i for o, i in shapes) * layers
    rows = sum(o for o, _ in shapes) * layers
    blocks = sum(math.ceil(o / 128) * math.ceil(i / 128) for o, i in shapes) * layers
    return weights, rows, blocks


def gemma_fp8_dynamic(hf_id: str, revision: str | None) -> LockEntry:
    """RedHatAI/gemma-3-27b-it-FP8-dynamic: llm-compressor FP8_DYNAMIC, language-model linear
    weights in fp8 with one bf16 scale per output row; embeddings, norms, the vision tower
    and the projector stay bf16 (RedHat's cards: "Only the weights and activations of the
    linear operators within transformers blocks of the language model are quantized")."""
    base = recorded("google/gemma-3-27b-it", None)
    fp8, rows, _ = _linear_params(
        5376, 62, 32 * 128, 16 * 128, [(21504, 5376)] * 2 + [(5376, 21504)]
    )
    total = base.parameters["BF16"]
    config = {
        **base.config,
        "quantization_config": {"format": "float-quantized", "quant_method": "compressed-tensors"},
    }
    return LockEntry(
        hf_id=hf_id,
        revision=revision,
        sha=None,
        source=(
            "derived: config.json of google/gemma-3-27b-it (recorded) with the compressed-tensors "
            "quantization_config of RedHat's FP8-dynamic checkpoints; parameters computed from "
            "the shapes (fp8 linear weights of the 62 decoder layers, bf16 scales and the rest)"
        ),
        config=config,
        parameters={"F8_E4M3": fp8, "BF16": total - fp8 + rows},
    )


def qwen_vl_fp8(hf_id: str, revision: str | None) -> LockEntry:
    """Qwen/Qwen3-VL-30B-A3B-Instruct-FP8: Qwen's fine-grained fp8 (128x128 blocks, one bf16
    scale per block) of the language model's linear layers, experts included; embeddings,
    lm_head, router, norms and (cautiously) the vision tower stay bf16."""
    base = recorded("Qwen/Qwen3-VL-30B-A3B-Instruct", None)
    experts = [(768, 2048), (768, 2048), (2048, 768)] * 128
    fp8, _, blocks = _linear_params(2048, 48, 32 * 128, 4 * 128, experts)
    total = base.parameters["BF16"]
    config = {
        **base.config,
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        },
    }
    return LockEntry(
        hf_id=hf_id,
        revision=revision,
        sha=None,
        source=(
            "derived: config.json of Qwen/Qwen3-VL-30B-A3B-Instruct (recorded) with the "
            "block-fp8 quantization_config of Qwen's FP8 checkpoints; parameters computed from "
            "the shapes (fp8 attention and expert weights, bf16 block scales and the rest)"
        ),
        config=config,
        parameters={"F8_E4M3": fp8, "BF16": total - fp8 + blocks},
        preprocessor=base.preprocessor,
    )


DERIVED = {
    "RedHatAI/gemma-3-27b-it-FP8-dynamic": gemma_fp8_dynamic,
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8": qwen_vl_fp8,
}


def build(config_path: Path) -> Lock:
    data, _ = load_yaml(config_path)
    entries = {}
    for ref in wanted_checkpoints(data):
        folder = HERE / ref.hf_id.replace("/", "--")
        if ref.hf_id in DERIVED:
            entries[ref.key] = DERIVED[ref.hf_id](ref.hf_id, ref.revision)
        elif (folder / "config.json").exists():
            entries[ref.key] = recorded(ref.hf_id, ref.revision)
        else:
            raise SystemExit(f"no recording of {ref.hf_id} in {HERE}: run `make lock` online")
    adapters = {}
    for ref in wanted_adapters(data):
        if not (HERE / ref.hf_id.replace("/", "--") / "adapter_config.json").exists():
            raise SystemExit(f"no recording of {ref.hf_id} in {HERE}: run `make lock` online")
        adapters[ref.key] = recorded_adapter(ref.hf_id, ref.revision)
    return Lock(entries, PROVENANCE, adapters)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    write_lock(lock_path(target), build(target))
    print(f"wrote {lock_path(target)}")
