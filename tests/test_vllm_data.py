"""scripts/vllm_data.py: the wheel reader behind mvgen/data/vllm/<version>.json.

Regenerating the committed data needs the real wheels; that test runs only when they are
already in the wheel cache (.cache/vllm-wheels, or MVGEN_WHEEL_CACHE) and is skipped
otherwise: nothing here downloads a wheel. The interpreter itself is tested on small
synthetic wheels.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT

from mvgen.vllm_flags import DATA_DIR, available_versions


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vllm_data", ROOT / "scripts" / "vllm_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vllm_data"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


vllm_data = _load_script()


# --------------------------------------------------------- the committed files


@pytest.mark.parametrize("version", available_versions())
def test_regenerating_gives_the_committed_file(version: str) -> None:
    wheel = vllm_data.cached_wheel(version)
    if wheel is None:
        pytest.skip(
            f"the vllm {version} wheel is not in {vllm_data.cache_dir()}; "
            f"`make vllm-data VLLM={version}` downloads it"
        )
    found = vllm_data.read_wheel(wheel, version)
    assert found.unresolved == []
    committed = (DATA_DIR / f"{version}.json").read_text(encoding="utf-8")
    assert vllm_data.to_json(found) == committed, f"run `make vllm-data VLLM={version}`"


def test_data_dir_is_the_packages() -> None:
    assert vllm_data.DATA_DIR == DATA_DIR


# ------------------------------------------------ wheel cache and download


def test_cached_wheel_needs_no_download(tmp_path: Path, monkeypatch) -> None:
    wheel = tmp_path / "vllm-9.9.9-cp38-abi3-manylinux_2_31_x86_64.whl"
    wheel.write_bytes(b"")
    monkeypatch.setenv(vllm_data.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(vllm_data, "download_command", _must_not_run)
    assert vllm_data.wheel_path("9.9.9") == wheel


def _must_not_run(version: str, dest: Path) -> list[str]:
    raise AssertionError("wheel_path downloaded although the wheel was cached")


def test_download_failure_is_clear(tmp_path: Path, monkeypatch) -> None:
    fail = [sys.executable, "-c", "import sys; sys.exit('no such version')"]
    monkeypatch.setattr(vllm_data, "download_command", lambda v, d: fail)
    with pytest.raises(vllm_data.WheelDownloadError, match="vllm==9.9.9.*no such version"):
        vllm_data.wheel_path("9.9.9", tmp_path)
    assert not list(tmp_path.iterdir())  # no partial file or scratch dir left


def test_download_command_targets_linux_wheels() -> None:
    cmd = vllm_data.download_command("0.12.0", Path("/tmp/x"))
    assert "vllm==0.12.0" in cmd and "--no-deps" in cmd
    assert "--only-binary=:all:" in cmd
    assert "manylinux_2_31_x86_64" in cmd  # 0.12.0's tag
    assert "manylinux_2_28_x86_64" in cmd  # 0.33.0's tag


# ------------------------------------- the interpreter on a small synthetic wheel

FAKE_SERVE = """
from vllm.entrypoints.openai.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

class ServeSubcommand:
    name = "serve"

    def subparser_init(self, subparsers):
        serve_parser = subparsers.add_parser(self.name)
        return make_arg_parser(serve_parser)
"""

FAKE_CLI_ARGS = """
import argparse
from typing import Literal
from vllm.config import config
from vllm.engine.arg_utils import EngineArgs, get_kwargs

Kind = Literal["k2", "k1"]

@config
class FrontendArgs:
    host: str | None = None
    verbose: bool = False
    enable_thing: bool = False
    names: list[str] | None = None
    level: Literal["b", "a"] = "a"
    mode: Literal["x", "y"] | str = "x"
    kinds: list[Kind] | None = None
    origins: list[str] = None
    tool_call_parser: str | None = None

    @classmethod
    def add_cli_args(cls, parser):
        kwargs = get_kwargs(cls)
        del kwargs["origins"]["nargs"]
        group = parser.add_argument_group("Frontend")
        for key, value in kwargs.items():
            group.add_argument(f"--{key.replace('_', '-')}", **value)
        return parser

def make_arg_parser(parser):
    parser.add_argument("model_tag", nargs="?")
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--color", choices=["red", "blue"])
    parser = FrontendArgs.add_cli_args(parser)
    return EngineArgs.add_cli_args(parser)
"""

FAKE_ARG_UTILS = """
import argparse
from itertools import permutations
from vllm.config import CacheConfig
from vllm.config.cache import DROPPED

def _compute_kwargs(cls):
    pass

def get_kwargs(cls):
    pass

class EngineArgs:
    @staticmethod
    def add_cli_args(parser):
        cache_kwargs = get_kwargs(CacheConfig)
        parser.add_argument("--kv-dtype", "-kv", **cache_kwargs["cache_dtype"])
        parser.add_argument(
            "--prefix-caching", **{**cache_kwargs["prefix"], "default": None}
        )
        parser.add_argument("--sizes", **cache_kwargs["sizes"], deprecated=True)
        parser.add_argument("--pair", **cache_kwargs["pair"])
        parser.add_argument("--quantization", "-q", **cache_kwargs["quantization"])
        cache_kwargs["traces"]["choices"] += [",".join(p) for p in permutations("ab")]
        parser.add_argument("--traces", **cache_kwargs["traces"])
        cache_kwargs["backend"]["choices"].remove(DROPPED)
        parser.add_argument("--backend", **cache_kwargs["backend"])
        return parser
"""

FAKE_CONFIG = """
from vllm.config.cache import CacheConfig
from vllm.config.utils import config
"""

FAKE_CACHE = """
from typing import TYPE_CHECKING, Any, Literal, Optional
from vllm.config.utils import config

if TYPE_CHECKING:
    from vllm.model_executor.layers.quantization import QuantizationMethods
else:
    QuantizationMethods = Any

CacheDType = Literal["fp8", "auto"]
DROPPED = "old"

@config
class CacheConfig:
    cache_dtype: CacheDType = "auto"
    prefix: Optional[bool] = None
    sizes: list[int] | None = None
    pair: tuple[int, int] = (1, 2)
    quantization: QuantizationMethods | None = None
    traces: Literal["a", "b"] | None = None
    backend: Literal["new", "old"] = "new"
"""

FAKE_QUANTIZATION = """
from typing import Literal, get_args

QuantizationMethods = Literal["fp8", "awq"]
QUANTIZATION_METHODS: list[str] = list(get_args(QuantizationMethods))
"""

FAKE_TOOL_PARSERS = """
from vllm.tool_parsers.manager import ToolParserManager

_TOOL_PARSERS_TO_REGISTER = {
    "hermes": ("hermes_tool_parser", "Hermes2ProToolParser"),
    "mistral": ("mistral_tool_parser", "MistralToolParser"),
}

def register_lazy_tool_parsers():
    for name, (file_name, class_name) in _TOOL_PARSERS_TO_REGISTER.items():
        ToolParserManager.register_lazy_module(name, file_name, class_name)
"""

FAKE_EXTRA_PARSER = """
from vllm.tool_parsers.manager import ToolParserManager

@ToolParserManager.register_module(["extra_a", "extra_b"])
class ExtraParser:
    pass
"""

FAKE_ARGPARSE_UTILS = """
from argparse import ArgumentParser, BooleanOptionalAction

class EnableDisableAction(BooleanOptionalAction):
    _inverse_prefixes = {"--enable-": "--disable-", "--disable-": "--enable-"}

class FlexibleArgumentParser(ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", BooleanOptionalAction, EnableDisableAction)
"""

FAKE_MEMBERS = {
    "vllm/entrypoints/cli/serve.py": FAKE_SERVE,
    "vllm/entrypoints/openai/cli_args.py": FAKE_CLI_ARGS,
    "vllm/engine/arg_utils.py": FAKE_ARG_UTILS,
    "vllm/config/__init__.py": FAKE_CONFIG,
    "vllm/config/cache.py": FAKE_CACHE,
    "vllm/config/utils.py": "def config(cls):\n    return cls\n",
    "vllm/utils/argparse_utils.py": FAKE_ARGPARSE_UTILS,
    "vllm/model_executor/layers/quantization/__init__.py": FAKE_QUANTIZATION,
    "vllm/tool_parsers/__init__.py": FAKE_TOOL_PARSERS,
    "vllm/tool_parsers/extra_parser.py": FAKE_EXTRA_PARSER,
}


def _fake_wheel(path: Path, **replace: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in FAKE_MEMBERS.items():
            archive.writestr(name, replace.get(name, text))
    return path


def test_interpreter_on_synthetic_wheel(tmp_path: Path) -> None:
    found = vllm_data.read_wheel(_fake_wheel(tmp_path / "fake.whl"), "0.0.0")
    options = {name: (o.nargs, o.choices) for name, o in found.options.items()}
    assert options == {
        "--headless": (0, None),
        "--color": (1, ("red", "blue")),  # an explicit choices= list
        "--host": (1, None),
        "--verbose": (0, None),
        "--no-verbose": (0, None),
        "--enable-thing": (0, None),
        "--no-enable-thing": (0, None),
        "--disable-thing": (0, None),  # EnableDisableAction, registered by the parser
        "--names": ("+", None),
        "--level": (1, ("a", "b")),  # a Literal: sorted, as vLLM sorts them
        "--mode": (1, None),  # Literal | str: any string passes
        "--kinds": ("+", ("k1", "k2")),  # a list of Literal: each element checked
        "--origins": (1, None),  # its nargs was deleted before add_argument
        "--tool-call-parser": (1, ("extra_a", "extra_b", "hermes", "mistral")),
        "--kv-dtype": (1, ("auto", "fp8")),
        "-kv": (1, ("auto", "fp8")),
        "--prefix-caching": (0, None),
        "--no-prefix-caching": (0, None),
        "--sizes": ("+", None),
        "--pair": (2, None),
        # Any at run time (the Literal is only for type checkers); vLLM checks the
        # value against QUANTIZATION_METHODS after parsing.
        "--quantization": (1, ("awq", "fp8")),
        "-q": (1, ("awq", "fp8")),
        "--traces": (1, None),  # `+=` of a comprehension: not followed
        "--backend": (1, ("new",)),  # .remove(DROPPED) followed
        "-h": (0, None),
        "--help": (0, None),
    }
    assert found.options["--sizes"].deprecated
    assert found.unresolved == []
    assert found.unchecked == ["--traces"]
    where = found.options["--quantization"].choices_from
    assert where == "vllm/model_executor/layers/quantization/__init__.py: QUANTIZATION_METHODS"


def test_written_data_round_trips(tmp_path: Path) -> None:
    from mvgen.vllm_flags import FlagSet

    wheel = _fake_wheel(tmp_path / "fake.whl")
    target = vllm_data.write_data("0.0.0", wheel, tmp_path / "out")
    import json

    flags = FlagSet.from_data(json.loads(target.read_text()))
    assert flags.version == "0.0.0"
    assert flags.flags["--kinds"].choices == ("k1", "k2")
    assert flags.unchecked == ("--traces",)
    assert vllm_data.to_json(vllm_data.read_wheel(wheel, "0.0.0")) == target.read_text()


def test_an_option_it_cannot_name_writes_nothing(tmp_path: Path) -> None:
    odd = FAKE_CLI_ARGS.replace(
        'parser.add_argument("--headless", action="store_true")',
        "parser.add_argument(make_name(), action='store_true')",
    )
    wheel = _fake_wheel(tmp_path / "fake.whl", **{"vllm/entrypoints/openai/cli_args.py": odd})
    with pytest.raises(vllm_data.WheelParseError, match="cli_args.py:"):
        vllm_data.write_data("0.0.0", wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_registry_it_cannot_read_fails(tmp_path: Path) -> None:
    empty = "from vllm.tool_parsers.manager import ToolParserManager\n"
    members = {"vllm/tool_parsers/__init__.py": empty, "vllm/tool_parsers/extra_parser.py": ""}
    wheel = _fake_wheel(tmp_path / "fake.whl", **members)
    with pytest.raises(vllm_data.WheelParseError, match="ToolParserManager"):
        vllm_data.read_wheel(wheel, "0.0.0")
