"""The commands README.md and docs/*.md tell a user to type work as written after the two
set-up commands, on a machine without uv on PATH: every shell line in their code blocks
names a make target that exists, or a tool set-up puts in .venv/bin with subcommands and
options it really has, or a file that exists. Nothing says `uv run` or a bare `mvgen`."""

from __future__ import annotations

import re
import shlex
import sys
from functools import cache
from pathlib import Path

import click
import pytest
from conftest import ROOT

from mvgen.cli import main as mvgen_cli

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
# Programs a user is expected to have already; what they do is not ours to check.
SYSTEM_TOOLS = {"apt-get", "curl", "docker", "echo", "openssl", "cd", "$EDITOR"}
VENV_BIN = Path(sys.executable).parent  # the environment the tests (and make) run in


def shell_lines(path: Path) -> list[str]:
    """Command lines of the shell code blocks (```bash and friends; `$ ` lines of console)."""
    lines = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S):
        if lang not in SHELL_BLOCKS:
            continue
        for line in body.splitlines():
            if lang == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line:
                lines.append(line)
    return lines


COMMANDS = [
    (path.relative_to(ROOT).as_posix(), line) for path in DOCS for line in shell_lines(path)
]


def test_the_docs_have_commands_to_check() -> None:
    where = {doc for doc, _ in COMMANDS}
    assert {"README.md", "docs/deploy.md", "docs/plan.md"} <= where
    assert any(line.startswith(".venv/bin/mvgen ") for _, line in COMMANDS)


@cache
def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


def check_mvgen(args: list[str]) -> None:
    """The subcommand exists and takes every option given."""
    command: click.Command = mvgen_cli
    while args and isinstance(command, click.Group) and not args[0].startswith("-"):
        name = args.pop(0)
        assert name in command.commands, f"mvgen has no command {name!r}"
        command = command.commands[name]
    known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    known |= {"--help", "-h"}
    for arg in args:
        if arg.startswith("-"):
            option = arg.split("=", 1)[0]
            assert option in known, f"`mvgen {command.name}` has no option {option}"


def check_modal(args: list[str]) -> None:
    from modal.cli.entry_point import entrypoint_cli

    command: click.Command = entrypoint_cli
    while args and isinstance(command, click.Group) and not args[0].startswith("-"):
        name = args.pop(0)
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"modal has no command {name!r}"
        command = sub


def check_one(words: list[str]) -> None:
    program, args = words[0], words[1:]
    while "=" in program and not program.startswith((".", "/")):  # VAR=value before a command
        program, args = args[0], args[1:]
    assert program != "uv", "uv is not on PATH after set-up: write .venv/bin/<tool>"
    assert program not in ("mvgen", "modal", "pytest", "python"), (
        f"`{program}` is not on PATH after set-up: write .venv/bin/{program}"
    )
    if program in SYSTEM_TOOLS or program == "export":
        return
    if program == "make":
        targets = [a for a in args if "=" not in a and not a.startswith("-")]
        assert targets, "a bare `make` only prints help"
        missing = [t for t in targets if t not in make_targets()]
        assert not missing, f"no make target {missing}"
        return
    if program == "cp":
        assert (ROOT / args[0]).exists(), f"{args[0]} does not exist"
        return
    assert program.startswith(".venv/bin/"), f"unknown program {program!r}"
    tool = program.removeprefix(".venv/bin/")
    assert (VENV_BIN / tool).is_file(), f"set-up installs no {program}"
    if tool == "mvgen":
        check_mvgen(args)
    elif tool == "modal":
        check_modal(args)
    elif tool in ("python", "pytest"):
        paths = [a for a in args if not a.startswith("-") and "/" in a]
        for pattern in paths[:1]:
            assert list(ROOT.glob(pattern)), f"{pattern} does not exist"


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}: {c}" for d, c in COMMANDS])
def test_each_documented_command_names_something_that_exists(doc: str, line: str) -> None:
    for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
        check_one(shlex.split(part))


def test_no_doc_says_uv_run() -> None:
    """uv is bootstrapped under .cache when missing, so `uv run` is not a command users have."""
    offenders = [p.name for p in DOCS if "uv run" in p.read_text()]
    assert not offenders


def test_the_checks_catch_a_wrong_command() -> None:
    for wrong in (
        "uv run mvgen plan",
        "mvgen plan",
        ".venv/bin/mvgen plan --diffs",
        ".venv/bin/mvgen deploi --gpu h100",
        "make deplo GPU=h100",
        ".venv/bin/modal secrets create x K=v",
        ".venv/bin/python benchmarks/nope.py",
    ):
        with pytest.raises(AssertionError):
            check_one(shlex.split(wrong))
