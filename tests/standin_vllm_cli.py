"""A stand-in for the `vllm` executable, for tests only. It is NOT vLLM.

Tests install it as `vllm` first on PATH (see `install_standin_vllm`), so the generated
apps run their real `vllm serve ...` command line against it. It records what it was
started with (argv, the names of its environment variables, the HF_TOKEN it got) as one
JSON line in $STANDIN_VLLM_RECORD, then either serves the OpenAI-compatible stand-in
(tests/standin_vllm.py) on $STANDIN_VLLM_PORT (or --port), or, with $STANDIN_VLLM_FAIL
set, prints what vLLM 0.12.0 prints for that failure and exits 1 after
$STANDIN_VLLM_FAIL_AFTER seconds.

The failure texts are built from the messages in vLLM 0.12.0's source (file named next
to each) and in the libraries it runs (PyTorch, huggingface_hub, argparse); only the
surrounding log lines are abridged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from standin_vllm import StandinConfig, StandinServer

LOADING = "INFO 12-05 10:00:02 [gpu_model_runner.py:3468] Starting to load model {model}..."
LOADED = (
    "INFO 12-05 10:01:40 [gpu_model_runner.py:3550] Model loading took 23.3216 GiB memory "
    "and 96.412345 seconds"
)
ENGINE_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {}"  # vllm/v1/engine/utils.py
)

FAILURES: dict[str, list[str]] = {
    # torch's allocator message, raised while the loader fills the GPU
    "oom-load": [
        LOADING,
        "Loading safetensors checkpoint shards:  45% Completed | 5/11 [00:41<00:49,  8.21s/it]",
        "(EngineCore_DP0 pid=211) ERROR 12-05 10:01:02 [core.py:843] EngineCore failed to start.",
        "(EngineCore_DP0 pid=211) torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
        "1.24 GiB. GPU 0 has a total capacity of 44.39 GiB of which 812.00 MiB is free.",
        ENGINE_FAILED,
    ],
    # vllm/v1/core/kv_cache_utils.py, check_enough_kv_cache_memory
    "kv-cache": [
        LOADING,
        LOADED,
        "(EngineCore_DP0 pid=211) ValueError: To serve at least one request with the "
        "models's max seq len (131072), (16.00 GiB KV cache is needed, which is larger than "
        "the available KV cache memory (9.61 GiB). Based on the available memory, the "
        "estimated maximum model length is 78736. Try increasing `gpu_memory_utilization` or "
        "decreasing `max_model_len` when initializing the engine.",
        ENGINE_FAILED,
    ],
    # huggingface_hub's GatedRepoError, logged by vllm/transformers_utils/repo_utils.py
    "gated": [
        "ERROR 12-05 10:00:01 [repo_utils.py:63] Error retrieving file list: 401 Client Error. "
        "(Request ID: Root=1-6753) Cannot access gated repo for url "
        "https://huggingface.co/api/models/google/gemma-3-12b-it/tree/main?recursive=True. "
        "Access to model google/gemma-3-12b-it is restricted. You must have access to it and "
        "be authenticated to access it. Please log in.",
        "ValueError: Invalid repository ID or local directory specified: "
        "'google/gemma-3-12b-it'.",  # vllm/transformers_utils/config.py
    ],
    # argparse, from vLLM's FlexibleArgumentParser
    "unknown-arg": [
        "usage: vllm serve [model_tag] [options]",
        "vllm serve: error: unrecognized arguments: --max-num-sequences 16",
    ],
    # PyTorch's driver check (torch/cuda/__init__.py), at CUDA initialisation
    "driver": [
        "RuntimeError: The NVIDIA driver on your system is too old (found version 12020). "
        "Please update your GPU driver by downloading and installing a new version from the "
        "URL: http://www.nvidia.com/Download/index.aspx",
    ],
    # nothing vLLM-specific: the fallback reports the last error line
    "other": [
        "INFO 12-05 10:00:00 [api_server.py:1772] vLLM API server version 0.12.0",
        "AssertionError: something unexpected hf_abcdefghijklmnopqrstuvwxyz0123456789",
    ],
}


def failure_output(failure: str, model: str) -> list[str]:
    return [line.replace("{model}", model) for line in FAILURES[failure]]


def main() -> None:
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("subcommand")
    parser.add_argument("model")
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--lora-modules", nargs="+", default=[])
    parser.add_argument("--port", type=int, default=8000)
    args, _ = parser.parse_known_args()
    _record(args.model)
    failure = os.environ.get("STANDIN_VLLM_FAIL")
    if failure:
        time.sleep(float(os.environ.get("STANDIN_VLLM_FAIL_AFTER", "0")))
        for line in failure_output(failure, args.model):
            print(line, flush=True)
        sys.exit(1)
    port = int(os.environ.get("STANDIN_VLLM_PORT") or args.port)
    config = StandinConfig(
        # vLLM answers to each LoRA adapter's name as to the model's
        served_names=(args.served_model_name or [args.model]) + lora_names(args.lora_modules),
        ready_after=float(os.environ.get("STANDIN_VLLM_READY_AFTER", "0")),
    )
    print(f"stand-in vLLM (not vLLM) for {args.model} on 127.0.0.1:{port}", flush=True)
    asyncio.run(StandinServer(config, port=port).serve())


def lora_names(items: list[str]) -> list[str]:
    """Adapter names from --lora-modules items, read as vLLM 0.12's LoRAParserAction reads
    them (vllm/entrypoints/openai/cli_args.py): `name=path`, or a JSON object whose keys are
    LoRAModulePath's (name, path, base_model_name); anything else ends the stand-in."""
    names = []
    for item in items:
        if "=" in item and "," not in item:
            names.append(item.split("=", 1)[0])
            continue
        fields = json.loads(item)
        unknown = set(fields) - {"name", "path", "base_model_name"}
        if unknown or not {"name", "path"} <= set(fields):
            sys.exit(f"Invalid fields for --lora-modules: {item}")
        names.append(fields["name"])
    return names


def _record(model: str) -> None:
    path = os.environ.get("STANDIN_VLLM_RECORD")
    if not path:
        return
    entry = {
        "argv": sys.argv[1:],
        "model": model,
        "env_names": sorted(os.environ),
        "hf_token": os.environ.get("HF_TOKEN"),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def install_standin_vllm(bin_dir: Path) -> Path:
    """Write a `vllm` executable into `bin_dir` that runs this stand-in."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "vllm"
    tests = Path(__file__).resolve().parent
    exe.write_text(
        f"#!{sys.executable}\n"
        "# Stand-in for vLLM, written by tests/standin_vllm_cli.py. It is NOT vLLM.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(tests)!r})\n"
        "from standin_vllm_cli import main\n"
        "main()\n"
    )
    exe.chmod(0o755)
    return exe


def recorded_starts(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


if __name__ == "__main__":
    main()
