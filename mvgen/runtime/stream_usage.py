"""A stream's token count for the request log, from vLLM's own usage event.

One SSE chunk is not one token (vLLM batches tokens per chunk with --stream-interval and
skips chunks it has nothing to say in), so the count comes from the usage event vLLM
sends last, before `data: [DONE]`, when the request asks for it. The gateway asks for it
when the client did not (`ask_for_usage`) and then drops that event before the client
sees it (`UsageTap`). docs/gateway.md, *Logs*, has the sources.

The relay's hot loop only looks at how each chunk ends: vLLM's content events end with
`]}` (chat: `choices` is the last field) or `null}` (completions: `"usage":null`), then a
blank line. Any other chunk (the usage event ends with `}}`, then `[DONE]`, an error
event, an event cut in two, another server's framing) takes UsageTap.feed, which holds
back an unfinished event until its end arrives, so the usage event is always seen whole.
"""

from __future__ import annotations

import json
import re
from typing import Any

# vLLM 0.12 dumps the usage event compactly, fields in declaration order (pydantic
# model_dump_json): {"id":..,"object":..,"created":..,"model":..,"choices":[],"usage":{..}}
USAGE_MARK = b'"choices":[],"usage":'
ERROR_MARK = b'{"error"'
PLAIN_ENDINGS = (b"]}\n\n", b"l}\n\n")
# An unfinished event is held back at most this long; past it, it is relayed as it comes.
# The usage event is a few hundred bytes, so a longer one cannot be it, and a stream never
# holds more than about one read from the upstream.
MAX_HELD_BYTES = 64 * 1024

_EVENT = re.compile(rb".*?(?:\r\n\r\n|\n\n|\r\r)", re.S)
_EVENT_ENDS = (b"\r\n\r\n", b"\n\n", b"\r\r")


def ask_for_usage(body: dict[str, Any]) -> bool:
    """Make a stream request ask for its usage event; True when the client had not asked,
    so the gateway must drop the event. vLLM's rule (entrypoints/utils.py
    should_include_usage): any `stream_options` object asks unless its `include_usage`
    is false or null; `continuous_usage_stats` only counts when it does."""
    options = body.get("stream_options")
    if options is None:
        body["stream_options"] = {"include_usage": True}
        return True
    if not isinstance(options, dict):
        return False  # vLLM answers 400; nothing to add
    if options.get("include_usage", True):
        return False
    body["stream_options"] = {**options, "include_usage": True, "continuous_usage_stats": False}
    return True


class UsageTap:
    """One stream's usage bookkeeping; `feed` is only called for chunks that do not end
    like a plain content event (see the module docstring)."""

    __slots__ = ("strip", "tokens", "upstream_error", "held")

    def __init__(self, strip: bool) -> None:
        self.strip = strip  # drop the usage event: the client did not ask for it
        self.tokens: int | None = None  # usage.completion_tokens, once seen
        self.upstream_error = False  # an `{"error": ...}` event came from the upstream
        self.held = b""  # the start of an event whose end has not arrived

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to relay now: whole events only, the usage event dropped if `strip`."""
        data = self.held + chunk if self.held else chunk
        end = _last_event_end(data)
        rest = data[end:]
        if len(rest) > MAX_HELD_BYTES:
            self.held = b""
            return self._scan(data[:end]) + rest
        self.held = rest
        return self._scan(data[:end])

    def flush(self) -> bytes:
        """What is still held when the stream ends: an unfinished event, relayed as is."""
        rest, self.held = self.held, b""
        return rest

    def _scan(self, events: bytes) -> bytes:
        """`events` (whole events), without the usage event if `strip`; notes its count."""
        if USAGE_MARK not in events and ERROR_MARK not in events:
            return events
        kept = []
        for event in _EVENT.findall(events):
            payload = _payload(event) if USAGE_MARK in event or ERROR_MARK in event else None
            if _is_usage(payload):
                tokens = payload["usage"].get("completion_tokens")
                if isinstance(tokens, int) and not isinstance(tokens, bool):
                    self.tokens = tokens
                if self.strip:
                    continue
            elif isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                self.upstream_error = True
            kept.append(event)
        return b"".join(kept)


def _last_event_end(data: bytes) -> int:
    """Where the last whole event of `data` ends (0: none has)."""
    end = 0
    for mark in _EVENT_ENDS:
        found = data.rfind(mark)
        if found >= 0:
            end = max(end, found + len(mark))
    return end


def _is_usage(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and payload.get("choices") == []
        and isinstance(payload.get("usage"), dict)
    )


def _payload(event: bytes) -> Any:
    """An event's `data:` lines as JSON; None when it is not JSON (e.g. [DONE])."""
    lines = [line[5:] for line in event.splitlines() if line.startswith(b"data:")]
    data = b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
