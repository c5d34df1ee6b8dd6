"""Generator speed: validate and render time for synthetic configs of growing size.

    uv run python benchmarks/bench_generator.py [--sizes 1,10,100,500] [--repeat 3]

Prints a table and whether the targets are met; asserts nothing (docs/benchmarks.md).
Each size is N models x 5 GPUs, in gpu and in legacy mode (legacy with the endpoint limit
raised so the config is valid). Times are the best of --repeat runs, in a fresh temp dir:
"validate" loads and checks the config, "+render" also renders every file in memory,
"+write" also writes them to disk (what `mvgen render` does).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from mvgen.config import load_plan
from mvgen.render import render_files, write_files

GPUS = {"l40s": "L40S", "a100": "A100-80GB", "h100": "H100", "h200": "H200", "b200": "B200"}
ROOT = Path(__file__).resolve().parent.parent
RENDER_TARGET = 3.0  # seconds for 500 models x 5 GPUs, validate to written files
CLI_TARGET = 0.5  # seconds for `mvgen --help` and `mvgen validate`


def synthetic_config(models: int, mode: str) -> dict:
    return {
        "mode": mode,
        "workspace": "bench",
        "endpoint_limit": models * len(GPUS) + 1,
        "gpus": {key: {"type": name} for key, name in GPUS.items()},
        "models": {
            f"m{i:03d}": {"hf_id": f"org/model-{i}", "max_model_len": 8192} for i in range(models)
        },
    }


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(models: int, mode: str, repeat: int) -> tuple[int, float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deployments.yaml"
        path.write_text(yaml.safe_dump(synthetic_config(models, mode)))
        plan = load_plan(path)
        validate = best_of(repeat, lambda: load_plan(path))
        render = best_of(repeat, lambda: render_files(load_plan(path)))

        def write() -> None:
            with tempfile.TemporaryDirectory() as out:
                write_files(render_files(load_plan(path)), Path(out))

        full = best_of(repeat, write)
        return len(plan.apps), validate, render, full


def cli_start(args: list[str], repeat: int) -> float:
    cmd = [sys.executable, "-m", "mvgen", *args]
    return best_of(repeat, lambda: subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True))


def machine() -> str:
    model = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as cpuinfo:  # Linux; the processor name is clearer
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def verdict(seconds: float, limit: float) -> str:
    return f"{seconds:.3f} s (target < {limit:g} s: {'met' if seconds < limit else 'NOT met'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,500")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'models x gpus':>14} {'mode':>7} {'apps':>5} {'validate s':>11} "
          f"{'+render s':>10} {'+write s':>9}")  # fmt: skip
    largest: dict[str, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in ("gpu", "legacy"):
            apps, validate, render, full = measure(size, mode, args.repeat)
            print(f"{size:>6} x {len(GPUS):<5} {mode:>7} {apps:>5} {validate:>11.3f} "
                  f"{render:>10.3f} {full:>9.3f}")  # fmt: skip
            if size == 500:
                largest[mode] = full
    for mode, full in largest.items():
        print(f"500 x {len(GPUS)} {mode}, config to files: {verdict(full, RENDER_TARGET)}")
    print(f"CLI start-up, best of {args.repeat}:")
    for cli_args in (["--help"], ["validate"]):
        seconds = cli_start(cli_args, args.repeat)
        print(f"  mvgen {' '.join(cli_args):<10} {verdict(seconds, CLI_TARGET)}")


if __name__ == "__main__":
    main()
