"""The images install exactly what is locked: locks/*-image.txt (made by `make image-lock`)
pin every package for the Plan's vLLM, Python and mvgen's runtime packages, and the
generated apps, imported under the real `modal` package, build from those files with a
pinned uv."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import modal
import pytest
from conftest import BASE_CONFIG, ROOT, run_cli
from modal._image import _Image
from modal._utils.async_utils import synchronizer

from mvgen.config import load_plan
from mvgen.image_lock import UV_VERSION, lock_inputs, pinned, recorded_inputs, stale_locks
from mvgen.render import RUNTIME_PACKAGES

BUILDER_VERSION = "2025.06"  # an image builder version modal 1.6.4 knows


def test_runtime_pins_match_the_tested_versions() -> None:
    for pin in RUNTIME_PACKAGES:
        name, _, pinned_version = pin.partition("==")
        assert pinned_version, f"{pin} is not pinned"
        assert version(name) == pinned_version, (
            f"tests run {name} {version(name)}, images get {pinned_version}"
        )


# ----------------------------------------------------------------- the locks


def test_committed_locks_match_the_plan() -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    assert stale_locks(plan, RUNTIME_PACKAGES, ROOT) == []


@pytest.mark.parametrize("image", ["vllm", "gateway"])
def test_each_lock_pins_its_inputs(image: str) -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    wanted = next(i for i in lock_inputs(plan, RUNTIME_PACKAGES) if i.image == image)
    text = (ROOT / wanted.path).read_text()
    pins = pinned(text)
    for requirement in wanted.packages:
        name, _, exact = requirement.partition("==")
        assert pins.get(name) == exact, f"{wanted.path} pins {name} {pins.get(name)}"
    # Every line is a pin or a comment: nothing floats.
    body = [ln for ln in text.splitlines() if ln and not ln.lstrip().startswith("#")]
    assert body and all(re.fullmatch(r"[A-Za-z0-9._-]+==[^\s;]+", ln) for ln in body)
    if image == "vllm":
        assert "torch" in pins and len(pins) > 100  # the whole tree, not just vllm
    else:
        assert "torch" not in pins and "vllm" not in pins


def test_a_new_vllm_makes_only_the_gpu_lock_stale(write_config) -> None:
    plan = load_plan(write_config(BASE_CONFIG + "image:\n  vllm: 0.33.0\n"))
    problems = stale_locks(plan, RUNTIME_PACKAGES, ROOT)
    assert len(problems) == 1
    assert problems[0].startswith("locks/vllm-image.txt is stale")
    assert '"vllm==0.12.0"' in problems[0] and '"vllm==0.33.0"' in problems[0]
    assert "make image-lock" in problems[0]


def test_a_new_runtime_package_makes_both_locks_stale() -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    problems = stale_locks(plan, (*RUNTIME_PACKAGES, "aiohttp==3.14.5"), ROOT)
    assert [p.split(" is ")[0] for p in problems] == [
        "locks/vllm-image.txt",
        "locks/gateway-image.txt",
    ]


def test_another_python_makes_both_locks_stale(write_config) -> None:
    plan = load_plan(write_config(BASE_CONFIG + "image:\n  python: '3.11'\n"))
    assert len(stale_locks(plan, RUNTIME_PACKAGES, ROOT)) == 2


def test_missing_or_unreadable_locks(tmp_path: Path) -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "vllm-image.txt").write_text("# inputs: {not json\nvllm==0.12.0\n")
    problems = stale_locks(plan, RUNTIME_PACKAGES, tmp_path)
    assert problems[0].startswith("locks/vllm-image.txt is stale: made from unknown inputs")
    assert problems[1] == "locks/gateway-image.txt is missing: run `make image-lock`"


def test_inputs_line_round_trips() -> None:
    for inputs in lock_inputs(load_plan(ROOT / "deployments.yaml"), RUNTIME_PACKAGES):
        assert recorded_inputs("# header\n" + inputs.to_comment() + "\nx==1\n") == inputs
    assert recorded_inputs("x==1\n# inputs: {}\n") is None  # only the header counts


def test_render_warns_about_a_stale_lock(write_config, tmp_path: Path) -> None:
    config = write_config(BASE_CONFIG + "image:\n  vllm: 0.33.0\n")
    out = tmp_path / "out"
    shutil.copytree(ROOT / "locks", out / "locks")
    result = run_cli("render", "--config", str(config), "--output-dir", str(out))
    assert result.exit_code == 0  # rendering needs no network; the lock is a separate step
    assert "warning: locks/vllm-image.txt is stale" in result.stderr


def test_makefile_bootstraps_the_uv_the_images_use() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert f"uv=={UV_VERSION}" in makefile


# ------------------------------------------- the images of the generated apps


def import_app(path: Path) -> ModuleType:
    name = f"pins_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def dockerfile_layers(image: modal.Image) -> list:
    """The Dockerfile commands and context files of every layer, as `modal deploy` would
    build them. modal has no public accessor offline, so this walks the layers' loader
    closures (modal 1.6.4 is pinned; a change there fails here, not silently)."""
    specs = []
    stack = [synchronizer._translate_in(image)]
    while stack:
        layer = stack.pop()
        load = layer._load
        cells = dict(
            zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__), strict=True)
        )
        if cells.get("dockerfile_function"):
            specs.append(cells["dockerfile_function"](BUILDER_VERSION))
        for value in cells.values():
            if isinstance(value, _Image):
                stack.append(value)
            elif isinstance(value, dict):
                stack += [v for v in value.values() if isinstance(v, _Image)]
    return specs


def install_layers(image: modal.Image) -> list:
    # Modal's own debian_slim base runs `pip install --upgrade pip wheel uv`: not ours.
    return [s for s in dockerfile_layers(image) if any("uv pip install" in c for c in s.commands)]


@pytest.mark.parametrize(
    "app_file", sorted((ROOT / "generated").glob("*.py")), ids=lambda p: p.stem
)
def test_generated_images_install_the_locks(app_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the lock paths do not depend on where deploy runs
    module = import_app(app_file)
    for image, lock in (
        (module.vllm_image, "vllm-image.txt"),
        (module.gateway_image, "gateway-image.txt"),
    ):
        (layer,) = install_layers(image)  # one install step, from the lock only
        copy_uv, copy_lock, install = layer.commands[1:]
        assert copy_uv == f"COPY --from=ghcr.io/astral-sh/uv:{UV_VERSION} /uv /.uv/uv"
        assert copy_lock.endswith(f"/.uv/0/{lock}")
        assert install.endswith(f"--requirements /.uv/0/{lock}")  # no unpinned extras
        (source,) = layer.context_files.values()
        assert Path(source) == ROOT / "locks" / lock
