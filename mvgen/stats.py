"""`mvgen stats`: per-model latency figures from the gateway's request lines.

The lines come from the app's logs through the `modal` CLI, as a user would fetch them:
`modal app logs <app> --since 1h --search mvgen.request` (modal 1.6.4: `--since` without
`--tail` fetches everything in the range, at most 35 days; `--search` filters on Modal's
side). Every container of the app writes to those logs, so the lines are picked out by
their marker (request_log.py) and anything else is ignored. docs/deploy.md explains the
figures.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mvgen.deploy import DeployError, ModalCli
from mvgen.runtime.request_log import MARKER, parse_line

# Fetching a day of logs pages through many RPCs; a metadata query's 120 s is too short.
LOGS_TIMEOUT = 600.0
MAX_SINCE_DAYS = 35  # modal 1.6.4's longest fetch range (modal/_logs.py _MAX_FETCH_RANGE)
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LINE_START = MARKER + " {"
NO_MODEL = "(none)"  # requests that named no model the gateway knows (401, 404, ...)


def check_since(since: str) -> str:
    """`--since` as modal accepts it: `30m`, `2h`, `1d` (up to 35 days) or an ISO 8601
    time; refused here with the forms, before Modal is asked."""
    relative = _RELATIVE.match(since)
    if relative:
        seconds = int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
        if seconds == 0 or seconds > MAX_SINCE_DAYS * 86400:
            raise DeployError(f"--since {since}: give between 1s and {MAX_SINCE_DAYS}d")
        return since
    try:
        datetime.fromisoformat(since)
    except ValueError:
        raise DeployError(
            f"--since {since!r} is not a time: write 30m, 2h or 1d (units s, m, h, d), "
            "or an ISO 8601 time such as 2026-03-01T08:00:00"
        ) from None
    return since


def fetch_log_text(modal: ModalCli, app: str, since: str) -> str:
    """The app's log lines that mention the marker, since `since`."""
    args = ("app", "logs", app, "--since", since, "--search", MARKER)
    done = modal.run(*args, timeout=LOGS_TIMEOUT)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        detail = " / ".join(lines[-3:]) or f"exit code {done.returncode}"
        raise DeployError(f"`modal {' '.join(args)}` failed: {detail}")
    return done.stdout


@dataclass
class Parsed:
    records: list[dict[str, Any]] = field(default_factory=list)
    unreadable: int = 0  # lines with the marker whose JSON did not parse (cut, mangled)


def parse_records(text: str, parsed: Parsed | None = None) -> Parsed:
    """The request records among `text`'s lines (added to `parsed` when given)."""
    parsed = parsed or Parsed()
    for line in text.splitlines():
        if _LINE_START not in line:
            continue  # another container's output, or a line that only names the marker
        record = parse_line(line)
        if record is None:
            parsed.unreadable += 1
        else:
            parsed.records.append(record)
    return parsed


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or
    below it (p50 of 1, 2, 3, 4 is 2). None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class ModelStats:
    model: str
    requests: int
    streamed: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    stream_tokens_per_s_p50: float | None  # after the first token, streams only
    answer_tokens_per_s_p50: float | None  # whole answers, non-streamed only
    cold_starts: int
    errors: dict[str, int]


def summarize(records: Iterable[dict[str, Any]], model: str | None = None) -> list[ModelStats]:
    """Per model (sorted; requests naming no known model last, unless `model` is given)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        key = record.get("model") if isinstance(record.get("model"), str) else NO_MODEL
        if model is None or key == model:
            groups.setdefault(key, []).append(record)
    order = sorted(groups, key=lambda k: (k == NO_MODEL, k))
    return [model_stats(key, groups[key]) for key in order]


def model_stats(model: str, records: Sequence[dict[str, Any]]) -> ModelStats:
    answered = [r for r in records if _number(r.get("ttft_ms")) and _status(r) < 400]
    ttfts = [float(r["ttft_ms"]) for r in answered]
    errors = Counter(str(r["error"]) for r in records if r.get("error"))
    return ModelStats(
        model=model,
        requests=len(records),
        streamed=sum(1 for r in records if r.get("stream") is True),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p99_ms=percentile(ttfts, 99),
        stream_tokens_per_s_p50=percentile(
            [rate for r in answered if (rate := stream_rate(r)) is not None], 50
        ),
        answer_tokens_per_s_p50=percentile(
            [rate for r in answered if (rate := answer_rate(r)) is not None], 50
        ),
        cold_starts=sum(1 for r in records if r.get("cold_start") is True),
        errors=dict(sorted(errors.items(), key=lambda item: (-item[1], item[0]))),
    )


def stream_rate(record: dict[str, Any]) -> float | None:
    """Tokens per second after the first: (tokens_out - 1) / (duration - ttft). The first
    token arrives at ttft, so the rest take the time after it."""
    tokens, ttft, duration = (record.get(k) for k in ("tokens_out", "ttft_ms", "duration_ms"))
    if record.get("stream") is not True or record.get("error"):
        return None
    if not (_number(tokens) and _number(ttft) and _number(duration)) or tokens < 2:
        return None
    decoding = (duration - ttft) / 1000
    return (tokens - 1) / decoding if decoding > 0 else None


def answer_rate(record: dict[str, Any]) -> float | None:
    """A non-streamed answer's tokens per second of its whole duration (prefill included)."""
    tokens, duration = record.get("tokens_out"), record.get("duration_ms")
    if record.get("stream") is True or record.get("error"):
        return None
    if not (_number(tokens) and _number(duration)) or tokens < 1 or duration <= 0:
        return None
    return tokens / (duration / 1000)


def stats_json(
    stats: Sequence[ModelStats], *, gpu: str, apps: Sequence[str], since: str, unreadable: int
) -> dict[str, Any]:
    return {
        "gpu": gpu,
        "apps": list(apps),
        "since": since,
        "requests": sum(s.requests for s in stats),
        "unreadable_lines": unreadable,
        "models": [
            {
                "model": s.model,
                "requests": s.requests,
                "streamed": s.streamed,
                "ttft_ms": {"p50": s.ttft_p50_ms, "p99": s.ttft_p99_ms},
                "tokens_per_s": {
                    "stream_p50": _round(s.stream_tokens_per_s_p50),
                    "answer_p50": _round(s.answer_tokens_per_s_p50),
                },
                "cold_starts": s.cold_starts,
                "errors": s.errors,
            }
            for s in stats
        ],
    }


def stats_table(stats: Sequence[ModelStats], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    columns = ("model", "requests", "streamed", "TTFT p50 ms", "TTFT p99 ms")
    columns += ("tok/s p50 stream", "tok/s p50 answer", "cold starts", "errors")
    for column in columns:
        left = column in ("model", "errors")
        table.add_column(column, overflow="fold", justify="left" if left else "right")
    for s in stats:
        errors = ", ".join(f"{code} {count}" for code, count in s.errors.items()) or "-"
        table.add_row(
            s.model,
            str(s.requests),
            str(s.streamed),
            _text(s.ttft_p50_ms),
            _text(s.ttft_p99_ms),
            _text(s.stream_tokens_per_s_p50),
            _text(s.answer_tokens_per_s_p50),
            str(s.cold_starts),
            errors,
        )
    return table


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _status(record: dict[str, Any]) -> int:
    status = record.get("status")
    return status if isinstance(status, int) else 500


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
