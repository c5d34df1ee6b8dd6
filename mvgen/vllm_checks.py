"""`mvgen validate`'s checks of vLLM options, offline, against the data committed for
`image.vllm` (mvgen/vllm_flags.py): every flag and choice value in `extra_args`, the
`tool_parser`, `reasoning_parser` and `quantization` fields, flags mvgen sets itself, and
secrets, which must never reach the generated files (they are committed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

from mvgen.errors import Problem, did_you_mean, format_path
from mvgen.loader import Lines
from mvgen.plan import Deployment, Plan, YamlPath
from mvgen.vllm_flags import (
    FlagSet,
    FlagUse,
    VllmDataMissing,
    accepted_flags,
    check_serve_argv,
    normalise_flag,
    scan_serve_argv,
)

# Options mvgen renders from a field (by argparse dest, so every spelling and alias is
# caught). A second copy in extra_args wins in vLLM (argparse keeps the last) while the plan,
# the fit check and LiteLLM go by the field.
FIELD_FOR_DEST = {
    "model": "hf_id (or per_gpu.<gpu>.checkpoint)",
    "revision": "revision",
    "served_model_name": "served_name and aliases",
    "max_model_len": "max_model_len",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "tensor_parallel_size": "gpu_count",
    "max_num_seqs": "max_num_seqs",
    "enforce_eager": "fast_boot",
    "enable_auto_tool_choice": "tool_parser",
    "tool_call_parser": "tool_parser",
    "reasoning_parser": "reasoning_parser",
    "limit_mm_per_prompt": "limit_mm_per_prompt",
    "quantization": "quantization",
    "enable_sleep_mode": "gpu_snapshot",
    # LoRA: mvgen renders them from adapters: (and the fit check counts their memory)
    "enable_lora": "adapters",
    "lora_modules": "adapters",
    "max_lora_rank": "adapters (the largest adapter rank, rounded up)",
    "max_loras": "max_loras",
    "runner": "kind",
    "task": "kind",  # deprecated in 0.12 for --runner/--convert, which kind renders
}
# Options that would cut the gateway off from vLLM, which it reaches over plain HTTP on
# 127.0.0.1:8000.
GATEWAY_LINK_DESTS = {"host", "port", "uds", "ssl_keyfile", "ssl_certfile", "ssl_ca_certs"}
GATEWAY_LINK_DESTS |= {"headless"}  # no API server at all
# Options whose value is a secret, and where it belongs instead.
SECRET_DESTS = {
    "api_key": "the gateway checks keys from the Modal secret in secrets.api_key; "
    "vLLM behind it must not check its own",
    "hf_token": "vLLM reads the token from the Modal secret in secrets.huggingface",
}
# Values that look like credentials (never echoed back).
SECRET_VALUES = (
    ("an API key (sk-...)", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{8,}")),
    ("a Hugging Face token (hf_...)", re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,}")),
    ("a GitHub token", re.compile(r"(?<![A-Za-z0-9])(gh[oprsu]|github_pat)_[A-Za-z0-9_]{20,}")),
    ("an AWS access key", re.compile(r"(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![A-Z0-9])")),
    ("a bearer token", re.compile(r"(?i)\bbearer\s+\S{8,}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)
SHOWN_CHOICES = 12


def vllm_options(plan: Plan, lines: Lines, warnings: list[str]) -> list[Problem]:
    """Every vLLM option problem, each once even when many pairs share the setting."""
    version = plan.image.vllm
    try:
        flags = accepted_flags(version)
    except VllmDataMissing as exc:
        hint = f"run `make vllm-data VLLM={version}`, or pick a version listed"
        return [Problem("image.vllm", str(exc), lines.get(("image", "vllm")), hint)]
    found: dict[tuple[str, str], Problem] = {}

    def add(path: YamlPath, message: str, hint: str | None) -> None:
        problem = Problem(format_path(path), message, lines.get(path), hint)
        found.setdefault((problem.path, problem.message), problem)

    for d in plan.deployments:
        for path, message, hint in _field_findings(d, flags):
            add(path, message, hint)
        for finding in extra_args_findings(version, d.settings.extra_args):
            path = _extra_path(d, finding.index)
            if finding.warning:
                note = f"{format_path(path)}: {finding.message}"
                if note not in warnings:
                    warnings.append(note)
            else:
                add(path, finding.message, finding.hint)
    return list(found.values())


# -- the fields mvgen renders into flags ---------------------------------------------

# field -> (option, what its values are, the option a plugin with more names needs)
PARSER_FIELDS = {
    "tool_parser": ("--tool-call-parser", "a tool-call parser", "--tool-parser-plugin"),
    "reasoning_parser": ("--reasoning-parser", "a reasoning parser", "--reasoning-parser-plugin"),
}


def _field_findings(d: Deployment, flags: FlagSet) -> Iterator[tuple[YamlPath, str, str]]:
    model = d.model
    for name, (option, what, plugin) in PARSER_FIELDS.items():
        value = getattr(model, name)
        plugged = any(
            normalise_flag(arg.split("=", 1)[0]) == plugin for arg in d.settings.extra_args
        )
        if value and not plugged:
            problem = _value_problem(flags, option, value, what)
            if problem:
                message, hint = problem
                if not hint.startswith("did you mean"):
                    hint += f" (a parser of your own needs {plugin} in extra_args)"
                yield ("models", model.key, name), message, hint
    quantization = d.settings.quantization
    if quantization:
        problem = _value_problem(flags, "--quantization", quantization, "a quantization method")
        if problem:
            path = d.setting_paths.get("quantization", ("models", model.key, "quantization"))
            yield path, *problem


def _value_problem(flags: FlagSet, option: str, value: str, what: str) -> tuple[str, str] | None:
    flag = flags.get(option)
    if flag is None or flag.accepts(value):
        return None
    message = f"{value!r} is not {what} in vLLM {flags.version}"
    return message, _choices_hint(value, flag.choices or ())


# -- extra_args -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    index: int  # extra_args item
    message: str
    hint: str | None = None
    warning: bool = False


@lru_cache(maxsize=1024)
def extra_args_findings(version: str, extra_args: tuple[str, ...]) -> tuple[Finding, ...]:
    """What is wrong with extra_args in vLLM `version`, by item. mvgen's own flags come
    before them and take fixed numbers of values, so extra_args are read on their own.
    Cached: most pairs share their extra_args."""
    if not extra_args:
        return ()
    flags = accepted_flags(version)
    argv = ["vllm", "serve", "<model>", *extra_args]
    offset = 3
    findings = _secret_values(extra_args)
    done = {f.index + offset for f in findings}  # argv indices already reported
    for use in scan_serve_argv(argv, flags):
        if use.flag is not None:
            found = _known_flag(use, flags)
            findings += [replace(f, index=f.index - offset) for f in found if f.index not in done]
            done |= {f.index for f in found if not f.warning and f.index == use.index}
    for problem in check_serve_argv(argv, flags):
        if problem.index is None or problem.index in done:
            continue
        if problem.reason != "value not among its choices":  # reported with the value
            findings.append(
                _flag_problem(problem.index - offset, problem.token, problem.reason, flags)
            )
    return tuple(sorted(findings, key=lambda f: f.index))


def _secret_values(extra_args: tuple[str, ...]) -> list[Finding]:
    findings = []
    for i, arg in enumerate(extra_args):
        kind = next((kind for kind, pattern in SECRET_VALUES if pattern.search(arg)), None)
        if kind is not None:
            findings.append(
                Finding(
                    i,
                    f"looks like {kind}: generated files are committed, so a secret must not "
                    "be in deployments.yaml (the value is not shown here)",
                    "keep it in a Modal secret (`modal secret create`), named under secrets:",
                )
            )
    return findings


def _known_flag(use: FlagUse, flags: FlagSet) -> list[Finding]:
    """A flag mvgen owns, refused whole (at the flag's index), or values outside its
    choices (at each value's index); a deprecation warning either way."""
    flag = use.flag
    assert flag is not None
    found = []
    if flag.deprecated:
        found.append(
            Finding(use.index, f"{use.written} is deprecated in vLLM {flags.version}", warning=True)
        )
    if flag.dest in SECRET_DESTS:
        found.append(
            Finding(
                use.index,
                f"{use.written} would put a secret into the generated files, which are committed",
                f"remove it: {SECRET_DESTS[flag.dest]}",
            )
        )
    elif flag.dest in FIELD_FOR_DEST:
        field = FIELD_FOR_DEST[flag.dest]
        found.append(
            Finding(
                use.index,
                f"mvgen sets {use.written} itself, from {field}: a second copy would change "
                "vLLM but not the plan, the fit check or LiteLLM",
                f"remove it from extra_args and set {field} instead",
            )
        )
    elif flag.dest in GATEWAY_LINK_DESTS:
        found.append(
            Finding(
                use.index,
                f"{use.written} would cut the gateway off from vLLM, which it reaches over "
                "plain HTTP on 127.0.0.1:8000 (mvgen sets --host and --port)",
                "remove it from extra_args",
            )
        )
    elif not use.dotted:
        for index, value in use.values:
            if not flag.accepts(value):
                message = f"{value!r} is not a value of {use.written} in vLLM {flags.version}"
                found.append(Finding(index, message, _choices_hint(value, flag.choices or ())))
    return found


def _flag_problem(index: int, token: str, reason: str, flags: FlagSet) -> Finding:
    if reason.startswith("not a vllm serve flag"):
        near = did_you_mean(token.split(".", 1)[0], flags.flags)
        hint = f"did you mean {near!r}?" if near else "`vllm serve --help` lists them"
        return Finding(
            index, f"{token!r} is not a `vllm serve` option in vLLM {flags.version}", hint
        )
    return Finding(index, f"{token!r}: {reason}")


def _extra_path(d: Deployment, index: int) -> YamlPath:
    paths = d.extra_args_paths
    if index < len(paths):
        return paths[index]
    return ("models", d.model.key, "per_gpu", d.gpu.key, "extra_args", index)


def _choices_hint(value: str, choices: tuple[str | int, ...]) -> str:
    names = [str(c) for c in choices]
    near = did_you_mean(value, names)
    if near:
        return f"did you mean {near!r}?"
    shown = ", ".join(names[:SHOWN_CHOICES])
    more = f", … ({len(names)} in all)" if len(names) > SHOWN_CHOICES else ""
    return f"one of: {shown}{more}"
