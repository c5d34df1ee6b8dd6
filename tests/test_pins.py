"""The images pin what the tests run: the runtime's packages at the versions installed
here, and the vLLM version deployments.yaml names."""

from __future__ import annotations

from importlib.metadata import version

from conftest import ROOT

from mvgen.config import load_plan
from mvgen.render import RUNTIME_PACKAGES


def test_runtime_pins_match_the_tested_versions() -> None:
    for pin in RUNTIME_PACKAGES:
        name, _, pinned = pin.partition("==")
        assert pinned, f"{pin} is not pinned"
        assert version(name) == pinned, f"tests run {name} {version(name)}, images get {pinned}"


def test_generated_images_install_exact_versions() -> None:
    plan = load_plan(ROOT / "deployments.yaml")
    for app in plan.apps:
        source = (ROOT / "generated" / app.filename).read_text()
        assert f'"vllm=={plan.image.vllm}"' in source
        for pin in RUNTIME_PACKAGES:
            assert source.count(f'"{pin}"') == 2, f"{pin} missing from an image in {app.filename}"
