"""LoRA adapters in deployments.yaml: what validation refuses, and the vLLM command lines.

The adapter is a real PEFT adapter_config.json (tests/data/hf/Adarsh5557--qwen7b-finetuned-
Smart-MCQ-Solver, r 16 on Qwen/Qwen2.5-7B-Instruct), locked offline from the recordings by
tests/data/hf/build_lock.py as the committed locks are.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli
from gateway_fixtures import API_KEY, gateway_over, standin

from mvgen.config import load_plan
from mvgen.errors import ConfigError
from mvgen.fit import assess_deployment, lora_elements
from mvgen.litellm_config import litellm_config
from mvgen.local_gateway import served_models
from mvgen.lock import lock_path, read_lock, write_lock
from mvgen.plan import Deployment, Plan
from mvgen.render import render_files
from mvgen.smoke import run_smoke, target_for
from mvgen.vllm_flags import accepted_flags, check_serve_argv

sys.path.insert(0, str(ROOT / "tests" / "data" / "hf"))
import build_lock  # noqa: E402  (tests/data/hf/build_lock.py)

MCQ = "Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver"
QWEN = "Qwen/Qwen2.5-7B-Instruct"

CONFIG = """\
workspace: acme
gpus:
  l40s: {type: L40S}
  h100: {type: H100}
models:
  qwen-7b:
    hf_id: Qwen/Qwen2.5-7B-Instruct
    max_model_len: 8192
    adapters:
      mcq: {hf_id: Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver}
      support: {path: adapters/support, rank: 64, gpus: [h100]}
  llama-8b:
    hf_id: meta-llama/Llama-3.1-8B-Instruct
    max_model_len: 8192
"""


def write(tmp_path: Path, text: str = CONFIG, *, lock: bool = True) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "deployments.yaml"
    path.write_text(textwrap.dedent(text))
    if lock:
        write_lock(lock_path(path), build_lock.build(path))
    return path


def plan_of(tmp_path: Path, text: str = CONFIG, **kw) -> Plan:
    return load_plan(write(tmp_path, text, **kw))


def errors_of(tmp_path: Path, text: str, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        plan_of(tmp_path, text, **kw)
    return info.value.render()


def pair(plan: Plan, route: str) -> Deployment:
    return next(d for d in plan.deployments if d.route == route)


def lora_modules(argv: list[str]) -> list[dict]:
    """The items after --lora-modules, parsed as vLLM's LoRAParserAction parses them."""
    start = argv.index("--lora-modules") + 1
    items = []
    for item in argv[start:]:
        if item.startswith("--"):
            break
        items.append(json.loads(item))
    return items


# --- the command line --------------------------------------------------------------------------


def test_adapters_render_one_lora_modules_flag_with_the_rank_rounded_up(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    h100 = pair(plan, "qwen-7b-h100").vllm_command()
    l40s = pair(plan, "qwen-7b-l40s").vllm_command()
    # h100 loads both (ranks 16 and 64): 64 is a value vLLM accepts, one slot each
    assert h100[h100.index("--enable-lora") :][:5] == [
        "--enable-lora",
        "--max-lora-rank",
        "64",
        "--max-loras",
        "2",
    ]
    assert h100.count("--lora-modules") == 1  # argparse would keep only the last copy
    assert lora_modules(h100) == [
        {
            "name": "mcq",
            "path": f"/root/.cache/huggingface/lora/{MCQ.replace('/', '--')}/main",
            "base_model_name": QWEN,
        },
        {
            "name": "support",
            "path": "/root/.cache/huggingface/adapters/support",
            "base_model_name": QWEN,
        },
    ]
    # support names h100 only: l40s loads mcq alone, at its own rank
    assert l40s[l40s.index("--max-lora-rank") + 1] == "16"
    assert l40s[l40s.index("--max-loras") + 1] == "1"
    assert [m["name"] for m in lora_modules(l40s)] == ["mcq"]
    # a model without adapters gets no LoRA flag at all
    llama = pair(plan, "llama-8b-h100").vllm_command()
    assert not [a for a in llama if "lora" in a]
    flags = accepted_flags(plan.image.vllm)
    for d in plan.deployments:
        assert not check_serve_argv(d.vllm_command(), flags), d.route


@pytest.mark.parametrize(("rank", "expected"), [(1, "1"), (4, "8"), (12, "16"), (300, "320")])
def test_max_lora_rank_is_the_smallest_value_vllm_accepts_that_holds_the_rank(
    tmp_path: Path, rank: int, expected: str
) -> None:
    text = CONFIG.replace("rank: 64", f"rank: {rank}")
    argv = pair(plan_of(tmp_path, text), "qwen-7b-h100").vllm_command()
    assert argv[argv.index("--max-lora-rank") + 1] == max(expected, "16", key=int)


def test_max_loras_is_a_setting_and_spare_adapters_stay_in_host_memory(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "    max_model_len: 8192\n    adapters:", "    max_loras: 1\n    adapters:"
    )
    argv = pair(plan_of(tmp_path, text), "qwen-7b-h100").vllm_command()
    assert argv[argv.index("--max-loras") + 1] == "1"
    assert argv[argv.index("--max-cpu-loras") + 1] == "2"  # both adapters, not one
    # the default: one slot per adapter, at most four
    many = "".join(f"      a{i}: {{path: adapters/a{i}, rank: 8}}\n" for i in range(6))
    text = CONFIG.replace("      support: {path: adapters/support, rank: 64, gpus: [h100]}\n", many)
    argv = pair(plan_of(tmp_path, text), "qwen-7b-h100").vllm_command()
    assert argv[argv.index("--max-loras") + 1] == "4"
    assert argv[argv.index("--max-cpu-loras") + 1] == "7"


def test_a_pinned_revision_gets_its_own_folder(tmp_path: Path) -> None:
    text = CONFIG.replace(f"{{hf_id: {MCQ}}}", f"{{hf_id: {MCQ}, revision: refs/pr/1}}")
    path = write(tmp_path, text, lock=False)
    lock = build_lock.build(path)
    assert [e.revision for e in lock.adapters.values()] == ["refs/pr/1"]
    write_lock(lock_path(path), lock)
    d = pair(load_plan(path), "qwen-7b-l40s")
    [mcq] = d.adapters
    assert mcq.local_dir.endswith("/Adarsh5557--qwen7b-finetuned-Smart-MCQ-Solver/refs--pr--1")
    assert mcq.download() == {"repo_id": MCQ, "revision": "refs/pr/1", "local_dir": mcq.local_dir}
    assert mcq.source == f"{MCQ}@refs/pr/1"


# --- what validation refuses -------------------------------------------------------------------

BAD = [
    (
        "an adapter on a GPU its base is not served on",
        CONFIG.replace("    max_model_len: 8192\n    adapters:", "    gpus: [l40s]\n    adapters:"),
        ["models.qwen-7b.adapters.support.gpus[0]", "'h100' does not serve qwen-7b"],
    ),
    (
        "an unknown GPU",
        CONFIG.replace("gpus: [h100]", "gpus: [h10]"),
        ["adapters.support.gpus[0]", "unknown GPU 'h10'", "did you mean 'h100'"],
    ),
    (
        "a name that is another model's short name",
        CONFIG.replace("support: {", "llama-8b: {"),
        ["adapters.llama-8b", "already a name of models.llama-8b"],
    ),
    (
        "a name that is an alias, in another case",
        CONFIG.replace("  llama-8b:\n", "  llama-8b:\n    aliases: [MCQ]\n"),
        ["adapters.mcq", "already a name of models.llama-8b"],
    ),
    (
        "a name that is a LiteLLM route",
        CONFIG.replace("support: {", "llama-8b-h100: {"),
        ["adapters.llama-8b-h100", "the LiteLLM route of llama-8b on h100"],
    ),
    (
        "hf_id and path",
        CONFIG.replace("{path: adapters/support,", f"{{hf_id: {MCQ}, path: adapters/support,"),
        ["adapters.support", "both hf_id and path"],
    ),
    (
        "neither hf_id nor path",
        CONFIG.replace("{path: adapters/support, rank: 64,", "{rank: 64,"),
        ["adapters.support", "neither", "hf_id: org/name"],
    ),
    (
        "a Volume adapter without its rank",
        CONFIG.replace("rank: 64, ", ""),
        ["adapters.support", "needs rank:"],
    ),
    (
        "a path inside the Hub cache",
        CONFIG.replace("adapters/support", "hub/support"),
        ["adapters.support.path", "inside hub/"],
    ),
    (
        "a revision without hf_id",
        CONFIG.replace("rank: 64,", "rank: 64, revision: v1,"),
        ["adapters.support.revision", "pins a Hub repo"],
    ),
    (
        "a rank vLLM 0.12 does not accept",
        CONFIG.replace("rank: 64", "rank: 1024"),
        ["adapters.support.rank", "rank 1024 is above 512", "320, 512"],
    ),
    (
        "a declared rank the lock contradicts",
        CONFIG.replace(f"{{hf_id: {MCQ}}}", f"{{hf_id: {MCQ}, rank: 8}}"),
        ["adapters.mcq.rank", "rank 8", "r = 16"],
    ),
    (
        "an adapter trained on another model",
        CONFIG.replace(f"      mcq: {{hf_id: {MCQ}}}\n", "")
        + f"    adapters:\n      mcq: {{hf_id: {MCQ}}}\n",  # on llama-8b
        [
            "models.llama-8b.adapters.mcq.hf_id",
            f"trained on {QWEN}, but llama-8b loads meta-llama/Llama-3.1-8B-Instruct",
            "models.llama-8b.aliases",
        ],
    ),
    (
        "LoRA flags in extra_args",
        CONFIG.replace(
            "  llama-8b:\n", "  llama-8b:\n    extra_args: [--enable-lora, --max-loras, '2']\n"
        ),
        [
            "models.llama-8b.extra_args[0]",
            "mvgen sets --enable-lora itself, from adapters",
            "models.llama-8b.extra_args[1]",
            "set max_loras instead",
        ],
    ),
    (
        "--lora-modules in extra_args",
        CONFIG.replace(
            "  llama-8b:\n", "  llama-8b:\n    extra_args: [--lora-modules, 'x=org/x']\n"
        ),
        ["extra_args[0]", "--lora-modules itself, from adapters"],
    ),
]


@pytest.mark.parametrize(("what", "text", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_validation_refuses(tmp_path: Path, what: str, text: str, fragments: list[str]) -> None:
    rendered = errors_of(tmp_path, text)
    for fragment in fragments:
        assert fragment in rendered, f"{what}: {fragment!r} not in\n{rendered}"


def test_an_adapter_without_a_lock_entry_names_make_lock(tmp_path: Path) -> None:
    path = write(tmp_path)
    data = json.loads(lock_path(path).read_text())
    del data["adapters"]
    lock_path(path).write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    text = info.value.render()
    assert "models.qwen-7b.adapters.mcq.hf_id" in text
    assert "has no entry in the lock file" in text and "make lock" in text and "rank:" in text
    # declaring the rank is enough to render offline
    path.write_text(CONFIG.replace(f"{{hf_id: {MCQ}}}", f"{{hf_id: {MCQ}, rank: 16}}"))
    argv = pair(load_plan(path), "qwen-7b-l40s").vllm_command()
    assert argv[argv.index("--max-lora-rank") + 1] == "16"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "bias: 'all'"),
        ({"peft_type": "IA3"}, "peft_type is 'IA3'"),
    ],
)
def test_an_adapter_vllm_would_refuse_to_load(tmp_path: Path, change: dict, expected: str) -> None:
    path = write(tmp_path)
    data = json.loads(lock_path(path).read_text())
    [entry] = data["adapters"].values()
    entry["adapter_config"].update(change)
    lock_path(path).write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert "vLLM would refuse to load" in info.value.render()
    assert expected in info.value.render()


def test_the_base_may_be_the_models_per_gpu_checkpoint_or_any_of_its_names(
    tmp_path: Path,
) -> None:
    path = write(tmp_path)
    data = json.loads(lock_path(path).read_text())
    [entry] = data["adapters"].values()
    config = entry["adapter_config"]
    # another spelling of the model's hf_id: compared case-insensitively
    config["base_model_name_or_path"] = "qwen/qwen2.5-7b-INSTRUCT"
    lock_path(path).write_text(json.dumps(data))
    assert load_plan(path).adapters
    # a quantized copy of the same weights: refused until named as an alias
    config["base_model_name_or_path"] = "unsloth/Qwen2.5-7B-Instruct-bnb-4bit"
    lock_path(path).write_text(json.dumps(data))
    with pytest.raises(ConfigError):
        load_plan(path)
    path.write_text(
        CONFIG.replace(
            "    max_model_len: 8192\n    adapters:",
            "    max_model_len: 8192\n    aliases: [unsloth/Qwen2.5-7B-Instruct-bnb-4bit]\n"
            "    adapters:",
        )
    )
    assert load_plan(path).adapters
    # a local path from the training run cannot be compared: a warning, not a refusal
    config["base_model_name_or_path"] = "/workspace/models/qwen"
    lock_path(path).write_text(json.dumps(data))
    plan = load_plan(path)
    assert [w for w in plan.warnings if "a local path: not compared" in w]


def test_an_adapter_trained_on_any_checkpoint_of_the_model_passes(tmp_path: Path) -> None:
    """gemma-3-27b loads RedHat's FP8 copy of itself on l40s: an adapter naming either id is
    for this model, on every GPU."""
    text = """\
    workspace: acme
    gpus:
      l40s: {type: L40S}
      h100: {type: H100}
    models:
      gemma-3-27b:
        hf_id: google/gemma-3-27b-it
        max_model_len: 8192
        per_gpu:
          l40s: {checkpoint: RedHatAI/gemma-3-27b-it-FP8-dynamic}
        adapters:
          mcq: {hf_id: Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver}
    """
    path = write(tmp_path, text)
    data = json.loads(lock_path(path).read_text())
    [entry] = data["adapters"].values()
    for base in ("RedHatAI/gemma-3-27b-it-FP8-dynamic", "google/gemma-3-27b-it"):
        entry["adapter_config"]["base_model_name_or_path"] = base
        lock_path(path).write_text(json.dumps(data))
        assert {d.gpu.key for d in load_plan(path).deployments if d.adapters} == {"l40s", "h100"}
    entry["adapter_config"]["base_model_name_or_path"] = "google/gemma-3-12b-it"
    lock_path(path).write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    text = info.value.render()
    assert "trained on google/gemma-3-12b-it, but gemma-3-27b loads" in text
    assert "RedHatAI/gemma-3-27b-it-FP8-dynamic on l40s; google/gemma-3-27b-it on h100" in text


def test_the_lock_reads_back_what_build_lock_wrote(tmp_path: Path) -> None:
    path = write(tmp_path)
    lock = read_lock(lock_path(path))
    assert lock is not None
    [entry] = lock.adapters.values()
    recorded = ROOT / "tests/data/hf/Adarsh5557--qwen7b-finetuned-Smart-MCQ-Solver"
    assert entry.config == json.loads((recorded / "adapter_config.json").read_text())
    facts = load_plan(path).adapters[0].facts
    assert facts is not None
    assert (facts.rank, facts.base_model, len(facts.target_modules)) == (16, QWEN, 7)


# --- LiteLLM routes ----------------------------------------------------------------------------


def test_litellm_routes_and_groups_per_adapter_on_the_base_endpoints(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    cfg = yaml.safe_load(render_files(plan)["litellm/config.yaml"])
    by_name: dict[str, list[dict]] = {}
    for entry in cfg["model_list"]:
        by_name.setdefault(entry["model_name"], []).append(entry)
    # one route per adapter x GPU that loads it, on the base's endpoint, the adapter's name
    for route, gpu in (("mcq-l40s", "l40s"), ("mcq-h100", "h100"), ("support-h100", "h100")):
        [entry] = by_name[route]
        [base] = by_name[f"qwen-7b-{gpu}"]
        assert entry["litellm_params"]["model"] == f"hosted_vllm/{route.rsplit('-', 1)[0]}"
        assert entry["litellm_params"]["api_base"] == base["litellm_params"]["api_base"]
        assert entry["litellm_params"]["api_base"].endswith(f"vllm-{gpu}-serve.modal.run/v1")
        assert entry["model_info"] == base["model_info"]
    assert "support-l40s" not in by_name  # support names h100 only
    # groups: the base model's order (cheapest first), on the adapter's GPUs
    mcq = by_name["mcq"]
    assert [(e["litellm_params"]["order"], e["litellm_params"]["api_base"]) for e in mcq] == [
        (1, by_name["qwen-7b-l40s"][0]["litellm_params"]["api_base"]),
        (2, by_name["qwen-7b-h100"][0]["litellm_params"]["api_base"]),
    ]
    assert all(e["litellm_params"]["model"] == "hosted_vllm/mcq" for e in mcq)
    assert [e["litellm_params"]["order"] for e in by_name["support"]] == [1]
    # the file is exactly the data, adapters included
    data = litellm_config(plan)
    groups = [d for g in data["groups"] for d in g["deployments"]]
    assert cfg["model_list"] == data["routes"] + groups
    assert "<adapter>-<gpu>, <adapter>" in render_files(plan)["litellm/config.yaml"]


# --- adapter memory in the fit -----------------------------------------------------------------

# Qwen/Qwen2.5-7B-Instruct's config.json (tests/data/hf): hidden 3584, 28 heads of 128,
# 4 KV heads, MLP 18944, 28 layers; no LoRA on embeddings for Qwen2 in vLLM 0.12. Per layer,
# per adapter slot and unit of rank, (slices x input + outputs) of each linear layer:
QKV = 3 * 3584 + (3584 + 2 * 512)  # 15,360: three A matrices, q + k + v outputs
O_PROJ = 3584 + 3584  # 7,168
GATE_UP = 2 * 3584 + 2 * 18944  # 45,056
DOWN = 18944 + 3584  # 22,528
QWEN_ELEMENTS = 28 * (QKV + O_PROJ + GATE_UP + DOWN)  # 2,523,136


def test_adapter_memory_is_vllms_preallocation_by_hand(tmp_path: Path) -> None:
    assert QWEN_ELEMENTS == 2_523_136
    plan = plan_of(tmp_path)
    without = plan_of(tmp_path / "none", CONFIG.split("    adapters:")[0] + LLAMA_ONLY)
    for route, slots, rank in (("qwen-7b-h100", 2, 64), ("qwen-7b-l40s", 1, 16)):
        d = pair(plan, route)
        assert lora_elements(d.architecture.lora, 1) == QWEN_ELEMENTS
        fit = assess_deployment(d)
        expected = slots * rank * 2 * QWEN_ELEMENTS  # bf16, the model's dtype ("auto")
        assert fit.lora_bytes == expected  # h100: 645,922,816 B; l40s: 80,740,352 B
        base = assess_deployment(pair(without, route))
        assert fit.weight_bytes - base.weight_bytes == pytest.approx(expected)
        assert base.kv_budget_bytes - fit.kv_budget_bytes == pytest.approx(expected)
    assert assess_deployment(pair(plan, "llama-8b-h100")).lora_bytes == 0


LLAMA_ONLY = """\
  llama-8b:
    hf_id: meta-llama/Llama-3.1-8B-Instruct
    max_model_len: 8192
"""


def test_lora_elements_of_other_shapes_by_hand(tmp_path: Path) -> None:
    """Tensor parallelism, a model with embedding LoRA (Llama) and fused experts (Qwen3-VL
    MoE, 128 experts of width 768 and a router), from the committed seed lock."""
    text = """\
    workspace: acme
    gpus:
      h100: {type: H100}
    models:
      gemma-3-27b: {hf_id: google/gemma-3-27b-it, max_model_len: 8192}
      qwen3-vl-30b:
        hf_id: Qwen/Qwen3-VL-30B-A3B-Instruct
        max_model_len: 8192
        limit_mm_per_prompt: {image: 1, video: 0}
      llama-8b: {hf_id: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 8192}
    """
    plan = plan_of(tmp_path, text)
    gemma = pair(plan, "gemma-3-27b-h100").architecture.lora
    # hidden 5376, 32 heads and 16 KV heads of 128, MLP 21504, 62 layers
    one_gpu = (3 * 5376 + 4096 + 4096) + (4096 + 5376) + (2 * 5376 + 2 * 21504) + (21504 + 5376)
    assert lora_elements(gemma, 1) == 62 * one_gpu == 7_094_784
    two_gpus = (3 * 5376 + 2048 + 2048) + (2048 + 5376) + (2 * 5376 + 21504) + (10752 + 5376)
    assert lora_elements(gemma, 2) == 62 * two_gpus
    vl = pair(plan, "qwen3-vl-30b-h100").architecture.lora
    attention = (3 * 2048 + 4096 + 2 * 512) + (4096 + 2048)
    experts = 128 * ((2048 + 2 * 768) + (768 + 2048))  # w13 fused: one A, a 2 x 768 B
    router = 2048 + 128
    assert lora_elements(vl, 1) == 48 * (attention + experts + router) == 40_261_632
    llama = pair(plan, "llama-8b-h100").architecture.lora
    layer = (3 * 4096 + 4096 + 2 * 1024) + (4096 + 4096) + (2 * 4096 + 2 * 14336) + (14336 + 4096)
    embeddings = 2 * (128_256 + 4096)  # embed_tokens and lm_head over the vocabulary
    assert lora_elements(llama, 1) == 32 * layer + embeddings


def test_adapters_that_leave_no_room_are_refused_with_max_loras_1(tmp_path: Path) -> None:
    text = """\
    workspace: acme
    gpus:
      l4: {type: L4}
    models:
      qwen-7b:
        hf_id: Qwen/Qwen2.5-7B-Instruct
        max_model_len: 4096
        max_num_seqs: 64
        adapters:
          big: {path: adapters/big, rank: 512}
          small: {path: adapters/small, rank: 8}
    """
    rendered = errors_of(tmp_path, text)
    assert "models.qwen-7b.per_gpu.l4" in rendered
    assert "with 4.8 GiB of LoRA adapter buffers" in rendered  # 2 x 512 x 2 B x 2,523,136
    assert "max_loras: 1" in rendered
    plan = plan_of(
        tmp_path, text.replace("max_num_seqs: 64", "max_num_seqs: 64\n        max_loras: 1")
    )
    assert plan.deployments[0].max_loras == 1


def test_plan_shows_the_adapters_and_their_memory(tmp_path: Path) -> None:
    config = write(tmp_path)
    out = ["--config", str(config), "--output-dir", str(tmp_path)]
    rows = {
        m["route"]: m
        for a in json.loads(run_cli("plan", "--json", *out).stdout)["apps"]
        for m in a["models"]
    }
    h100 = rows["qwen-7b-h100"]
    assert h100["adapters"] == {
        "names": ["mcq", "support"],
        "ranks": [16, 64],
        "max_lora_rank": 64,
        "max_loras": 2,
    }
    assert h100["fit"]["lora_gib"] == round(2 * 64 * 2 * QWEN_ELEMENTS / 1024**3, 2) == 0.6
    assert rows["llama-8b-h100"]["adapters"] is None
    table = run_cli("plan", *out).stdout
    assert "2 x r64: 0.60 GiB" in table and "1 x r16: 0.08 GiB" in table


def test_a_model_type_mvgen_cannot_size_leaves_the_fit_unknown(tmp_path: Path) -> None:
    text = CONFIG.replace(
        "    hf_id: Qwen/Qwen2.5-7B-Instruct\n",
        "    hf_id: Qwen/Qwen2.5-7B-Instruct\n    architecture: {params_b: 7.6, layers: 28, "
        "kv_heads: 4, head_dim: 128, max_context: 32768}\n",
    )
    plan = plan_of(tmp_path, text)
    notes = [w for w in plan.warnings if "qwen-7b" in w and "fit unknown" in w]
    assert notes and all("LoRA buffers" in note for note in notes)


# --- the smoke test ----------------------------------------------------------------------------


@pytest.mark.parametrize("knows_adapters", [True, False])
def test_the_smoke_test_asks_each_adapter_by_name(tmp_path: Path, knows_adapters: bool) -> None:
    """Against the mvgen gateway in front of the vLLM stand-in, which answers to the adapters'
    names only when it was told them, as vLLM with --lora-modules."""
    plan = plan_of(tmp_path)
    app = next(a for a in plan.apps if a.gpu.key == "h100")
    names = [QWEN, "mcq", "support"] if knows_adapters else [QWEN]
    names += ["meta-llama/Llama-3.1-8B-Instruct"]
    with standin(served_names=names) as server:
        upstreams = {"qwen-7b": server.url, "llama-8b": server.url}
        with gateway_over(upstreams, models=served_models(plan)) as url:
            results = run_smoke([target_for(app, url, "qwen-7b")], API_KEY, ready_timeout=10)
    [check] = [r for r in results if r.check == "adapters"]
    [models] = [r for r in results if r.check == "models"]
    assert models.status == "pass" and "and 2 adapters" in models.detail
    if knows_adapters:
        assert check.status == "pass", check.detail
        asked = [r.body["model"] for r in server.completion_requests()]
        assert "mcq" in asked and "support" in asked
    else:
        assert check.status == "FAIL" and "404" in check.detail
    # a model without adapters has no such check
    assert not [r for r in results if r.check == "adapters" and r.model != "qwen-7b"]
