"""`vllm serve` flags read from the real vLLM wheels (see docs/vllm-flags.md).

The first run downloads the 0.12.0 wheel (~470 MB) and, for the cross-check, the
0.33.0 wheel (~340 MB) into .cache/vllm-wheels; later runs work offline. A
failed 0.12.0 download fails the tests: the pinned version is never skipped.
"""

from __future__ import annotations

import contextlib
import sys
import zipfile
from pathlib import Path

import pytest

from mvgen import vllm_flags
from mvgen.vllm_flags import (
    FlagSet,
    WheelDownloadError,
    accepted_flags,
    check_serve_argv,
    parse_wheel,
    unknown_flags,
    wheel_path,
)

PINNED = "0.12.0"
NEWER = "0.33.0"

# Downloads on a fresh machine take longer than the suite's default timeout.
pytestmark = pytest.mark.timeout(900)


def _load(request: pytest.FixtureRequest, version: str, required: bool) -> FlagSet:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    # Show the download log live (the first run fetches hundreds of MB).
    live = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    try:
        with live:
            return accepted_flags(version)
    except WheelDownloadError as exc:
        if required:
            pytest.fail(f"vLLM {version} wheel unavailable: {exc}", pytrace=False)
        pytest.skip(f"vLLM {version} wheel unavailable for the cross-check: {exc}")


@pytest.fixture(scope="session")
def pinned(request: pytest.FixtureRequest) -> FlagSet:
    return _load(request, PINNED, required=True)


@pytest.fixture(scope="session")
def newer(request: pytest.FixtureRequest) -> FlagSet:
    return _load(request, NEWER, required=False)


@pytest.fixture(params=[PINNED, NEWER])
def any_version(request: pytest.FixtureRequest) -> FlagSet:
    return request.getfixturevalue("pinned" if request.param == PINNED else "newer")


def _flags_of(request: pytest.FixtureRequest, version: str) -> FlagSet:
    return request.getfixturevalue("pinned" if version == PINNED else "newer")


# ------------------------------------------------------------ the real wheels

# Each checked by hand in the 0.12.0 wheel: the add_argument call in
# vllm/engine/arg_utils.py or a FrontendArgs field in entrypoints/openai/
# cli_args.py, and the field type in vllm/config/*.py that sets its arity.
# nargs: 0 = takes no value, 1 = one value, "+" = one or more, "?" = optional.
PINNED_FLAGS = {
    "--served-model-name": "+",  # ModelConfig: str | list[str] | None
    "--max-model-len": 1,  # ModelConfig: SkipValidation[int]
    "--gpu-memory-utilization": 1,  # CacheConfig: float
    "--tensor-parallel-size": 1,  # ParallelConfig: int
    "-tp": 1,  # alias in the same add_argument call
    "--enforce-eager": 0,  # ModelConfig: bool -> BooleanOptionalAction
    "--no-enforce-eager": 0,
    "--enable-auto-tool-choice": 0,  # FrontendArgs: bool
    "--tool-call-parser": 1,  # FrontendArgs: str | None
    "--limit-mm-per-prompt": 1,  # MultiModalConfig.limit_per_prompt: dict (JSON)
    "--quantization": 1,  # ModelConfig: Literal[...] | None
    "-q": 1,
    "--host": 1,  # FrontendArgs: str | None
    "--port": 1,  # FrontendArgs: int
    "--api-key": "+",  # FrontendArgs: list[str] | None
    "--enable-sleep-mode": 0,  # ModelConfig: bool
    "--structured-outputs-config": 1,  # VllmConfig: a config dataclass (JSON)
    "--kv-cache-dtype": 1,  # CacheConfig.cache_dtype: Literal
    "--uvicorn-log-level": 1,  # FrontendArgs: Literal
    "--disable-log-requests": 0,  # explicit BooleanOptionalAction, deprecated
    "--enable-log-requests": 0,  # explicit BooleanOptionalAction
    "--swap-space": 1,  # CacheConfig: float
    "--trust-remote-code": 0,  # ModelConfig: bool
    "--enable-prefix-caching": 0,  # CacheConfig: bool
    "--max-num-seqs": 1,  # SchedulerConfig: int
    "--hf-token": "?",  # explicit nargs="?", const=True
    "--headless": 0,  # explicit store_true in make_arg_parser
    "--disable-log-stats": 0,  # explicit store_true
    "--optimization-level": 1,  # VllmConfig: OptimizationLevel (IntEnum)
    "--compilation-config": 1,  # VllmConfig: CompilationConfig (JSON)
    "-cc": 1,
    "--reasoning-parser": 1,  # StructuredOutputsConfig: str
    "--middleware": 1,  # FrontendArgs list made action="append", nargs deleted
    "--allowed-origins": 1,  # FrontendArgs list made json.loads, nargs deleted
    "--task": 1,  # deprecated but still defined in 0.12
    "--model": 1,  # still accepted in 0.12 (moved to the front by vLLM)
    "--help": 0,
}

# Absent from every add_argument call and every FrontendArgs field of 0.12.0.
PINNED_ABSENT = [
    "--guided-decoding-backend",  # replaced by --structured-outputs-config
    "--made-up-flag",
    "--no-disable-log-stats",  # store_true: no --no- form
    "--no-headless",
    "--no-swap-space",  # not a bool
    "--disable-enforce-eager",  # --enable/--disable pairs only exist from 0.33
    "--device",
    "--max-model",  # a prefix: argparse would take it, a template must not
]


def test_pinned_parse_is_complete(pinned: FlagSet) -> None:
    assert pinned.unresolved == ()
    for member in (
        "vllm/entrypoints/cli/serve.py",
        "vllm/entrypoints/openai/cli_args.py",
        "vllm/engine/arg_utils.py",
        "vllm/utils/argparse_utils.py",
        "vllm/config/model.py",
        "vllm/config/cache.py",
    ):
        assert member in pinned.sources
    assert len(pinned) > 200


@pytest.mark.parametrize(("flag", "nargs"), PINNED_FLAGS.items())
def test_pinned_accepts(pinned: FlagSet, flag: str, nargs: int | str) -> None:
    assert flag in pinned, f"{flag} missing from vLLM {PINNED}"
    assert pinned.flags[flag].nargs == nargs


@pytest.mark.parametrize("flag", PINNED_ABSENT)
def test_pinned_rejects(pinned: FlagSet, flag: str) -> None:
    assert flag not in pinned


def test_pinned_deprecations(pinned: FlagSet) -> None:
    deprecated = {f.option for f in pinned.flags.values() if f.deprecated}
    assert {"--task", "--disable-log-requests", "--cuda-graph-sizes"} <= deprecated
    assert "--enforce-eager" not in deprecated


# (flag, in 0.12.0, in 0.33.0), read from both wheels: the parser must see the
# difference, so it reads the versions' own definitions and not a fixed list.
ACROSS_VERSIONS = [
    ("--swap-space", True, False),
    ("--task", True, False),
    ("--disable-log-requests", True, True),  # 0.33: EnableDisableAction alias
    ("--disable-sleep-mode", False, True),  # the same, from --enable-sleep-mode
    ("--disable-enforce-eager", False, False),  # only --enable-/--disable- pair
    ("--enforce-eager", True, True),
    ("--structured-outputs-config", True, True),
    ("--guided-decoding-backend", False, False),
]


@pytest.mark.parametrize("version", [PINNED, NEWER])
@pytest.mark.parametrize(("flag", "in_pinned", "in_newer"), ACROSS_VERSIONS)
def test_flag_across_versions(
    request: pytest.FixtureRequest,
    version: str,
    flag: str,
    in_pinned: bool,
    in_newer: bool,
) -> None:
    flags = _flags_of(request, version)
    expected = in_pinned if version == PINNED else in_newer
    assert (flag in flags) is expected


def test_newer_parse_is_complete(newer: FlagSet) -> None:
    assert newer.unresolved == ()
    assert "vllm/entrypoints/common/cli_args.py" in newer.sources
    # 0.33's --disable-log-requests only flips enable_log_requests back off.
    assert newer.flags["--disable-log-requests"].dest == "enable_log_requests"
    assert newer.flags["--hf-token"].nargs == "?"  # from `bool | str | None`


def test_swap_space_rejected_by_newer_only(pinned: FlagSet, newer: FlagSet) -> None:
    argv = ["vllm", "serve", "m/x", "--swap-space", "4", "--enforce-eager"]
    assert unknown_flags(argv, pinned) == []
    assert unknown_flags(argv, newer) == ["--swap-space"]


def test_cached_json_is_reused(pinned: FlagSet) -> None:
    wheel = wheel_path(PINNED)  # cached by the fixture: no download here
    cache = wheel.with_name(wheel.name + ".flags.json")
    assert cache.exists()
    assert accepted_flags(PINNED) == pinned


# ------------------------------------------------------------- argv checking

EXAMPLE = [
    "vllm",
    "serve",
    "google/gemma-3-12b-it",
    "--served-model-name",
    "a",
    "b",
    "--max-model-len",
    "32768",
    "--enforce-eager",
    "--limit-mm-per-prompt",
    '{"image": 4}',
]


def test_example_command_is_accepted(any_version: FlagSet) -> None:
    assert unknown_flags(EXAMPLE, any_version) == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--max-model-len=32768"],
        ["--max_model_len", "32768"],  # vLLM turns _ into - itself
        ["--gpu-memory-utilization", "0.9", "--port", "8000", "--host", "0.0.0.0"],
        ["--structured-outputs-config", '{"backend": "xgrammar"}'],
        ["--structured-outputs-config.backend", "xgrammar"],  # dotted JSON key
        ["-cc.cudagraph_mode=FULL"],
        ["-O0"],
        ["-O", "3"],
        ["-tp", "2", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
        ["--api-key", "k1", "k2", "--enable-sleep-mode"],
        ["--hf-token"],  # optional value
        ["--hf-token", "hf_x"],
        ["--no-enable-prefix-caching", "--seed", "-1"],  # negative number value
    ],
)
def test_accepted_forms(pinned: FlagSet, extra: list[str]) -> None:
    assert unknown_flags([*EXAMPLE, *extra], pinned) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--guided-decoding-backend", "xgrammar"], ["--guided-decoding-backend"]),
        (["--made-up-flag=1", "--port", "8000"], ["--made-up-flag"]),
        (["--made_up_flag"], ["--made_up_flag"]),  # reported as written
        (["--enforce-eager=true"], ["--enforce-eager"]),  # takes no value
        (["--max-model-len"], ["--max-model-len"]),  # missing its value
        (["--enforce-eager", "stray"], ["stray"]),
        (["--max-model", "1024"], ["--max-model"]),  # no prefixes
        (["--nope.key", "1"], ["--nope.key"]),
        (["--enforce-eager.key", "1"], ["--enforce-eager.key"]),  # no JSON value
    ],
)
def test_rejected_forms(pinned: FlagSet, extra: list[str], expected: list[str]):
    assert unknown_flags([*EXAMPLE, *extra], pinned) == expected


def test_api_key_value_never_reported(pinned: FlagSet) -> None:
    problems = check_serve_argv([*EXAMPLE, "--api-keys=sk-secret"], pinned)
    assert [p.token for p in problems] == ["--api-keys"]
    assert "sk-secret" not in repr(problems)


def test_flag_before_model(any_version: FlagSet) -> None:
    argv = ["vllm", "serve", "--max-model-len", "4096", "--enforce-eager", "org/m"]
    assert unknown_flags(argv, any_version) == [
        "--max-model-len",
        "--enforce-eager",
        "org/m",
    ]
    reasons = [p.reason for p in check_serve_argv(argv, any_version)]
    assert reasons[0] == "flag before the model"


def test_missing_model(pinned: FlagSet) -> None:
    # --served-model-name takes every word up to the next flag: no model is left.
    argv = ["vllm", "serve", "--served-model-name", "a", "org/m", "--port", "8000"]
    assert unknown_flags(argv, pinned) == ["--served-model-name", "<model>"]


def test_not_a_serve_command(pinned: FlagSet) -> None:
    with pytest.raises(ValueError, match="vllm serve"):
        unknown_flags(["python", "-m", "vllm.entrypoints.openai.api_server"], pinned)


# ----------------------------------------------- cache and download behaviour


def test_cached_wheel_needs_no_download(tmp_path: Path, monkeypatch) -> None:
    wheel = tmp_path / "vllm-9.9.9-cp38-abi3-manylinux_2_31_x86_64.whl"
    wheel.write_bytes(b"")
    monkeypatch.setenv(vllm_flags.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(vllm_flags, "_download_command", _must_not_run)
    assert wheel_path("9.9.9") == wheel


def _must_not_run(version: str, dest: Path) -> list[str]:
    raise AssertionError("wheel_path downloaded although the wheel was cached")


def test_download_failure_is_clear(tmp_path: Path, monkeypatch) -> None:
    fail = [sys.executable, "-c", "import sys; sys.exit('no such version')"]
    monkeypatch.setattr(vllm_flags, "_download_command", lambda v, d: fail)
    with pytest.raises(WheelDownloadError, match="vllm==9.9.9.*no such version"):
        wheel_path("9.9.9", tmp_path)
    assert not list(tmp_path.iterdir())  # no partial file or scratch dir left


def test_download_command_targets_linux_wheels() -> None:
    cmd = vllm_flags._download_command(PINNED, Path("/tmp/x"))
    assert "vllm==0.12.0" in cmd and "--no-deps" in cmd
    assert "--only-binary=:all:" in cmd
    assert "manylinux_2_31_x86_64" in cmd  # 0.12.0's tag
    assert "manylinux_2_28_x86_64" in cmd  # 0.33.0's tag


# ------------------------------------- the interpreter on a small synthetic wheel

FAKE_SERVE = """
from vllm.entrypoints.openai.cli_args import make_arg_parser

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

@config
class FrontendArgs:
    host: str | None = None
    verbose: bool = False
    enable_thing: bool = False
    names: list[str] | None = None
    level: Literal["a", "b"] = "a"
    origins: list[str] = None

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
    parser = FrontendArgs.add_cli_args(parser)
    return EngineArgs.add_cli_args(parser)
"""

FAKE_ARG_UTILS = """
import argparse
from vllm.config import CacheConfig

def _compute_kwargs(cls):
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
        return parser
"""

FAKE_CONFIG = """
from vllm.config.cache import CacheConfig
from vllm.config.utils import config
"""

FAKE_CACHE = """
from typing import Literal, Optional
from vllm.config.utils import config

CacheDType = Literal["auto", "fp8"]

@config
class CacheConfig:
    cache_dtype: CacheDType = "auto"
    prefix: Optional[bool] = None
    sizes: list[int] | None = None
    pair: tuple[int, int] = (1, 2)
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


def _fake_wheel(path: Path) -> Path:
    serve = FAKE_SERVE + "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    members = {
        "vllm/entrypoints/cli/serve.py": serve,
        "vllm/entrypoints/openai/cli_args.py": FAKE_CLI_ARGS,
        "vllm/engine/arg_utils.py": FAKE_ARG_UTILS + "\ndef get_kwargs(cls):\n    pass\n",
        "vllm/config/__init__.py": FAKE_CONFIG,
        "vllm/config/cache.py": FAKE_CACHE,
        "vllm/config/utils.py": "def config(cls):\n    return cls\n",
        "vllm/utils/argparse_utils.py": FAKE_ARGPARSE_UTILS,
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_interpreter_on_synthetic_wheel(tmp_path: Path) -> None:
    flags = parse_wheel(_fake_wheel(tmp_path / "fake.whl"), "0.0.0")
    nargs = {name: flag.nargs for name, flag in flags.flags.items()}
    assert nargs == {
        "--headless": 0,
        "--host": 1,
        "--verbose": 0,
        "--no-verbose": 0,
        "--enable-thing": 0,
        "--no-enable-thing": 0,
        "--disable-thing": 0,  # EnableDisableAction, registered by the parser
        "--names": "+",
        "--level": 1,
        "--origins": 1,  # its nargs was deleted before add_argument
        "--kv-dtype": 1,
        "-kv": 1,
        "--prefix-caching": 0,
        "--no-prefix-caching": 0,
        "--sizes": "+",
        "--pair": 2,
        "-h": 0,
        "--help": 0,
    }
    assert flags.flags["--sizes"].deprecated
    assert flags.unresolved == ()
