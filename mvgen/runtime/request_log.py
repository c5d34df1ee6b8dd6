"""The gateway's log line per request: a fixed marker, then one JSON object.

`mvgen stats` finds the lines by the marker among everything else an app's containers
print (vLLM's own output, other loggers), so the marker is part of the message itself,
whatever the log format around it. Only values the gateway makes are logged: never a
header, a query string or a body, so never a key or a prompt. docs/gateway.md, *Logs*,
explains every field and its limits.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "mvgen.request"
_START = MARKER + " {"
_DECODER = json.JSONDecoder()

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_record(
    scope: dict[str, Any],
    *,
    route: str,
    status: int,
    bytes_in: int,
    bytes_out: int,
    started: float,
    ended: float,
    gpu: str | None,
) -> dict[str, Any]:
    """The fields of one request's line. `started`/`ended` and the state's
    `first_token_at` are time.perf_counter() readings."""
    state = scope.get("state") or {}
    first = state.get("first_token_at")
    method = scope.get("method", "")
    return {
        "method": method if method in METHODS else "(other)",
        "route": route,
        "model": state.get("model"),
        "adapter": state.get("adapter"),  # a LoRA adapter's name; `model` is its base
        "gpu": gpu,
        "stream": bool(state.get("stream")),
        "status": status,
        "ttft_ms": _ms(first - started) if first is not None else None,
        "tokens_out": state.get("tokens_out"),
        "duration_ms": _ms(ended - started),
        "cold_start": state.get("cold_start"),
        "error": error_code(state, status),
        "stream_error": state.get("stream_error"),
        "client_disconnected": bool(state.get("client_disconnected")),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
    }


def error_code(state: dict[str, Any], status: int) -> str | None:
    """Why the request did not get a whole, successful answer; None when it did."""
    code = state.get("error") or state.get("stream_error")
    if code:
        return str(code)
    if state.get("client_disconnected"):
        return "client_disconnected"
    return f"http_{status}" if status >= 400 else None


def format_line(record: dict[str, Any]) -> str:
    return _START[:-1] + json.dumps(record, separators=(",", ":"))


def parse_line(line: str) -> dict[str, Any] | None:
    """The record in one log line, wherever the marker is (log formats put a time and a
    logger name before it); None for any other line, or a damaged one."""
    at = line.find(_START)
    if at < 0:
        return None
    try:
        record, _ = _DECODER.raw_decode(line, at + len(MARKER) + 1)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
