"""The locks the generated images install from: locks/vllm-image.txt and
locks/gateway-image.txt, beside generated/.

`make image-lock` (scripts/lock_images.py) makes them with `uv pip compile` for Linux
x86-64 and the image's Python, and records in each the inputs it was made from. A lock
whose recorded inputs differ from what the Plan asks for is stale: the tests, `mvgen
render` and `mvgen deploy` say so, naming the command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mvgen.plan import Plan

LOCK_DIR = "locks"
# Wheels that run on glibc 2.35: Ubuntu 22.04, the base of the default CUDA image (Debian 12
# under debian_slim has 2.36). Modal's containers are x86-64.
PLATFORM = "x86_64-manylinux_2_35"
# The uv that installs the locks in the images (Modal copies ghcr.io/astral-sh/uv:<version>;
# without a version it takes uv:latest). The Makefile bootstraps the same version.
UV_VERSION = "0.13.9"
COMMAND = "make image-lock"
INPUTS_PREFIX = "# inputs: "


@dataclass(frozen=True)
class LockInputs:
    """What a lock is made from; recorded in the lock as one JSON comment line."""

    image: str  # "vllm" (the GPU image) or "gateway"
    packages: tuple[str, ...]  # the requirements uv resolves
    python: str
    platform: str = PLATFORM

    @property
    def path(self) -> str:
        return f"{LOCK_DIR}/{self.image}-image.txt"

    def to_comment(self) -> str:
        body = {**asdict(self), "packages": list(self.packages)}
        return INPUTS_PREFIX + json.dumps(body, sort_keys=True)


def lock_inputs(plan: Plan, runtime_packages: Sequence[str]) -> list[LockInputs]:
    """The two locks a Plan needs: the GPU image's (pinned vLLM plus mvgen's runtime
    packages) and the gateway image's (the runtime packages only)."""
    python = plan.image.python
    return [
        LockInputs("vllm", (f"vllm=={plan.image.vllm}", *runtime_packages), python),
        LockInputs("gateway", tuple(runtime_packages), python),
    ]


def recorded_inputs(text: str) -> LockInputs | None:
    """The inputs line of a lock's text, or None when it has none or it is unreadable."""
    for line in text.splitlines():
        if line.startswith(INPUTS_PREFIX):
            try:
                data = json.loads(line.removeprefix(INPUTS_PREFIX))
                data["packages"] = tuple(data["packages"])
                return LockInputs(**data)
            except (ValueError, TypeError, KeyError):
                return None
        if line and not line.startswith("#"):
            break  # past the header
    return None


def pinned(text: str) -> dict[str, str]:
    """Package name -> version, from a lock's `name==version` lines."""
    found = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith((" ", "#")):
            found[name.lower()] = version
    return found


def stale_locks(plan: Plan, runtime_packages: Sequence[str], root: Path) -> list[str]:
    """Why each lock under `root` does not match the Plan; empty when all do."""
    problems = []
    for wanted in lock_inputs(plan, runtime_packages):
        path = root / wanted.path
        if not path.is_file():
            problems.append(f"{wanted.path} is missing: run `{COMMAND}`")
            continue
        have = recorded_inputs(path.read_text(encoding="utf-8"))
        if have != wanted:
            was = have.to_comment().removeprefix(INPUTS_PREFIX) if have else "unknown inputs"
            problems.append(
                f"{wanted.path} is stale: made from {was}, the config needs "
                f"{wanted.to_comment().removeprefix(INPUTS_PREFIX)}; run `{COMMAND}` "
                "and commit the result"
            )
    return problems
