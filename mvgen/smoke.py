"""The smoke test (`mvgen test`): prove a live endpoint does what the seed promises.

It waits through a cold start (polling with backoff, following Modal's 303, honouring
503 + Retry-After), then runs timed checks: auth on /v1/models, every configured model
listed, and per model by its kind: for a chat model chat, echo, streaming, response_format
json_object/json_schema, structured_outputs regex/choice/grammar/json, for vision models an
image input and, for each LoRA adapter, a chat naming it; for an embedding model
embeddings, rerank and score; for a reranker rerank and score.
Every answer is checked by what it must be (a JSON Schema, a full regex match, a member
of a finite grammar's language), not just by its status code. A host that does not
resolve fails at once: no cold start makes a DNS name appear.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from mvgen.plan import App
from mvgen.pngdata import data_url, solid_png

DEFAULT_READY_TIMEOUT = 600.0  # a cold start loads weights onto a GPU: minutes
REQUEST_TIMEOUT = 180.0  # Modal answers 303 after 150 s, so a longer read sees that
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 15.0
RETRY_STATUSES = frozenset({503})  # "not ready yet": Modal queueing, gateway cold start
# ... except a start that failed: waiting does not fix it (docs/gateway.md).
FINAL_ERROR_CODES = frozenset({"model_failed_to_start"})

CHAT_PROMPT = "Reply with one short, friendly sentence."
ECHO_PROMPT = "The capital of France is"
CHOICES = ("Positive", "Negative", "Neutral")
EMAIL_REGEX = r"\w+@\w+\.com"
# The seed's SELECT grammar: finite, so the answer's membership can be checked exactly.
SQL_GRAMMAR = (
    'root ::= "SELECT " column " FROM " table\n'
    'column ::= "id" | "name"\n'
    'table ::= "users" | "orders"'
)
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "city"],
}
JSON_TOKENS = 300  # room for a small object; a cut-off answer would not parse
# Pooling checks: texts to embed, and a query with one obviously relevant document, which
# is not the first, so that an unordered answer cannot pass.
EMBED_INPUTS = ("The quick brown fox.", "A slow green turtle.", "Paris is the capital of France.")
RERANK_QUERY = "What is the capital of France?"
RERANK_DOCUMENTS = (
    "Bananas are rich in potassium.",
    "Paris is the capital and largest city of France.",
    "The Pacific is the largest ocean on Earth.",
)
RELEVANT = 1  # the index of the relevant document


class CheckFailed(Exception):
    """The endpoint answered, but not as it must."""


class GaveUp(Exception):
    """The endpoint did not become ready within the wait allowed."""


# --- what to test ----------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeModel:
    key: str  # requests use the short name, which also proves alias routing
    served_name: str  # what /v1/models must list
    vision: bool
    adapters: tuple[str, ...] = ()  # LoRA adapters the app loads for it
    kind: str = "chat"  # chat, embed or rerank: which checks apply


@dataclass(frozen=True)
class Target:
    app: str
    url: str
    models: tuple[SmokeModel, ...]  # everything the app serves
    tested: tuple[SmokeModel, ...]  # the models the per-model checks run on


def target_for(app: App, url: str, model: str | None = None) -> Target:
    models = tuple(
        SmokeModel(
            d.model.key,
            d.model.served_name,
            bool(d.model.architecture and d.model.architecture.vision and not d.model.pooling),
            tuple(a.name for a in d.adapters),
            d.model.kind,
        )
        for d in app.deployments
    )
    tested = tuple(m for m in models if model is None or m.key == model)
    return Target(app.name, url.rstrip("/"), models, tested)


@dataclass(frozen=True)
class CheckResult:
    app: str
    check: str
    model: str  # "-" for checks of the endpoint as a whole
    status: str  # "pass", "FAIL" or "skip"
    detail: str
    latency: float | None  # seconds of request time, cold-start waiting excluded

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


# --- HTTP with cold-start patience -----------------------------------------------------


class Endpoint:
    """One endpoint. Every request waits through "not ready" answers (503, refused or
    dropped connections) until `ready_timeout`, reporting what it waits for."""

    def __init__(
        self,
        url: str,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        progress: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.ready_timeout = ready_timeout
        self.waited = 0.0  # seconds spent waiting, so latencies can leave it out
        self._progress = progress or (lambda text: None)
        self._sleep = sleep
        # follow_redirects: a request past 150 s gets Modal's 303 to its result URL,
        # which httpx then fetches with GET (same origin, so the key travels along).
        self._client = httpx.Client(
            base_url=self.url,
            follow_redirects=True,
            timeout=httpx.Timeout(request_timeout, connect=15.0),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def request(
        self, method: str, path: str, *, what: str, key: str | None = None, body: Any = None
    ) -> httpx.Response:
        response = self._send(method, path, what=what, key=key, body=body)
        try:
            response.read()
        finally:
            response.close()
        return response

    @contextlib.contextmanager
    def stream(
        self, path: str, *, what: str, key: str | None, body: Any
    ) -> Iterator[httpx.Response]:
        response = self._send("POST", path, what=what, key=key, body=body)
        try:
            yield response
        finally:
            response.close()

    def _send(
        self, method: str, path: str, *, what: str, key: str | None, body: Any
    ) -> httpx.Response:
        started = time.monotonic()
        deadline = started + self.ready_timeout
        backoff = FIRST_BACKOFF
        while True:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            request = self._client.build_request(method, path, headers=headers, json=body)
            retry_after: float | None = None
            try:
                response = self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                if _unresolvable(exc):  # no cold start makes a name resolve: do not wait
                    raise GaveUp(self._unresolvable_message(exc)) from None
                reason = f"{type(exc).__name__} {exc}".strip()
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                response.read()
                response.close()
                if error_code(response) in FINAL_ERROR_CODES:
                    return response
                reason = f"{response.status_code} {error_message(response)}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            elapsed = time.monotonic() - started
            if elapsed >= self.ready_timeout:
                raise GaveUp(
                    f"gave up after {elapsed:.0f} s waiting for {what} (--timeout "
                    f"{self.ready_timeout:.0f}); last answer: {reason}"
                )
            wait = retry_after if retry_after is not None else backoff
            wait = max(0.05, min(wait, deadline - time.monotonic()))
            self._progress(
                f"waiting for {what}: {reason} — {elapsed:.0f} s elapsed, next try in "
                f"{wait:.0f} s (gives up after {self.ready_timeout:.0f} s)"
            )
            self._sleep(wait)
            self.waited += wait
            backoff = min(backoff * 1.6, MAX_BACKOFF)

    def _unresolvable_message(self, exc: Exception) -> str:
        host = httpx.URL(self.url).host
        return (
            f"{host} does not resolve ({exc}): check the workspace in the URL "
            "(`modal profile current`, or `workspace:` in deployments.yaml) and that the app "
            "is deployed (`make deploy GPU=...`)"
        )


def _unresolvable(exc: BaseException) -> bool:
    """A DNS lookup that failed (socket.gaierror somewhere in httpx's exception chain)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from either of its forms (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(response: httpx.Response) -> str:
    """The OpenAI-shaped error message, or the start of whatever the body is."""
    error = _error_object(response)
    if error.get("message"):
        return str(error["message"])[:400]  # room for a failed start's cause
    return response.text[:200].strip()


def error_code(response: httpx.Response) -> str | None:
    code = _error_object(response).get("code")
    return str(code) if code is not None else None


def _error_object(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


# --- checks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    endpoint: Endpoint
    target: Target
    api_key: str


def _ok_json(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise CheckFailed(f"{response.status_code}: {error_message(response)}")
    try:
        return response.json()
    except ValueError:
        raise CheckFailed(f"200 but the body is not JSON: {response.text[:80]!r}") from None


def _expect_status(response: httpx.Response, status: int) -> str:
    if response.status_code != status:
        raise CheckFailed(
            f"expected {status}, got {response.status_code}: {error_message(response)}"
        )
    return str(status)


def _chat(ctx: Context, model: SmokeModel, what: str, **fields: Any) -> str:
    body = {"model": model.key, "temperature": 0, "max_tokens": 64, **fields}
    r = ctx.endpoint.request(
        "POST", "/v1/chat/completions", what=f"{model.key} {what}", key=ctx.api_key, body=body
    )
    data = _ok_json(r)
    try:
        content = data["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise CheckFailed(f"no choices[0].message in {json.dumps(data)[:120]}") from None
    return content if isinstance(content, str) else ""


def _completion(ctx: Context, model: SmokeModel, what: str, **fields: Any) -> str:
    body = {"model": model.key, "temperature": 0, "max_tokens": 16, **fields}
    r = ctx.endpoint.request(
        "POST", "/v1/completions", what=f"{model.key} {what}", key=ctx.api_key, body=body
    )
    data = _ok_json(r)
    try:
        text = data["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise CheckFailed(f"no choices[0].text in {json.dumps(data)[:120]}") from None
    return text if isinstance(text, str) else ""


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _short(text: str, limit: int = 48) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def check_health(ctx: Context, model: SmokeModel | None) -> str:
    r = ctx.endpoint.request("GET", "/health", what="/health (the endpoint to start)")
    return _expect_status(r, 200) + " without a key"


def check_models_no_key(ctx: Context, model: SmokeModel | None) -> str:
    r = ctx.endpoint.request("GET", "/v1/models", what="/v1/models")
    return _expect_status(r, 401) + " without a key"


def check_wrong_key(ctx: Context, model: SmokeModel | None) -> str:
    wrong = "mvgen-smoke-wrong-" + secrets.token_hex(8)
    r = ctx.endpoint.request("GET", "/v1/models", what="/v1/models", key=wrong)
    return _expect_status(r, 401) + " with a wrong key"


def check_models(ctx: Context, model: SmokeModel | None) -> str:
    r = ctx.endpoint.request("GET", "/v1/models", what="/v1/models", key=ctx.api_key)
    if r.status_code == 401:
        raise CheckFailed("401: the key was refused; is it the one in the vllm-api-key secret?")
    data = _ok_json(r)
    listed = {str(card.get("id", "")).casefold() for card in data.get("data") or []}
    missing = [m.served_name for m in ctx.target.models if m.served_name.casefold() not in listed]
    missing += [a for m in ctx.target.models for a in m.adapters if a.casefold() not in listed]
    if missing:
        raise CheckFailed(f"not listed: {', '.join(missing)}")
    adapters = sum(len(m.adapters) for m in ctx.target.models)
    return f"lists all {len(ctx.target.models)} models" + (
        f" and {adapters} adapters" if adapters else ""
    )


def check_chat(ctx: Context, model: SmokeModel) -> str:
    text = _chat(ctx, model, "chat completion (a cold start loads it)", messages=_user(CHAT_PROMPT))
    if not text.strip():
        raise CheckFailed("empty content")
    return _short(text)


def check_echo(ctx: Context, model: SmokeModel) -> str:
    text = _completion(ctx, model, "completion", prompt=ECHO_PROMPT, echo=True, max_tokens=8)
    if not text.startswith(ECHO_PROMPT):
        raise CheckFailed(f"text does not start with the prompt: {_short(text)}")
    return _short(text)


def check_stream(ctx: Context, model: SmokeModel) -> str:
    body = {
        "model": model.key,
        "messages": _user(CHAT_PROMPT),
        "max_tokens": 64,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with ctx.endpoint.stream(
        "/v1/chat/completions", what=f"{model.key} stream", key=ctx.api_key, body=body
    ) as r:
        if r.status_code != 200:
            r.read()
            raise CheckFailed(f"{r.status_code}: {error_message(r)}")
        pieces, chunks, done = read_sse(r.iter_lines())
    text = "".join(pieces)
    if not done:
        raise CheckFailed(f"stream ended without data: [DONE] after {chunks} chunks")
    if not text.strip():
        raise CheckFailed(f"{chunks} chunks but no content")
    return f"{chunks} chunks: {_short(text, 36)}"


def read_sse(lines: Iterator[str]) -> tuple[list[str], int, bool]:
    """Content pieces, data-chunk count and whether [DONE] came; an error event fails."""
    pieces: list[str] = []
    chunks = 0
    for line in lines:
        if not line.startswith("data:"):
            continue  # comments (keep-alives), event names, blank separators
        payload = line[5:].strip()
        if payload == "[DONE]":
            return pieces, chunks, True
        chunks += 1
        try:
            event = json.loads(payload)
        except ValueError:
            raise CheckFailed(f"chunk {chunks} is not JSON: {payload[:60]!r}") from None
        if isinstance(event, dict) and event.get("error"):
            raise CheckFailed(f"error in the stream: {json.dumps(event['error'])[:120]}")
        for choice in event.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                pieces.append(content)
    return pieces, chunks, False


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CheckFailed(f"not valid JSON ({exc}): {_short(text)}") from None


def _validate(value: Any, schema: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise CheckFailed(f"does not match the schema: {exc.message}") from None


def check_json_object(ctx: Context, model: SmokeModel) -> str:
    text = _chat(
        ctx,
        model,
        "json_object",
        messages=_user("List three colors as a JSON object."),
        response_format={"type": "json_object"},
        max_tokens=JSON_TOKENS,
    )
    value = _parse_json(text)
    if not isinstance(value, dict):
        raise CheckFailed(f"JSON, but not an object: {_short(text)}")
    return _short(text)


def check_json_schema(ctx: Context, model: SmokeModel) -> str:
    text = _chat(
        ctx,
        model,
        "json_schema",
        messages=_user("Extract: John is 30 years old and lives in NYC"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA},
        },
        max_tokens=JSON_TOKENS,
    )
    _validate(_parse_json(text), PERSON_SCHEMA)
    return _short(text)


def check_regex(ctx: Context, model: SmokeModel) -> str:
    text = _chat(
        ctx,
        model,
        "regex",
        messages=_user("Generate an email address for Alan Turing, who works at Enigma."),
        structured_outputs={"regex": EMAIL_REGEX},
        max_tokens=32,
    )
    if not re.fullmatch(EMAIL_REGEX, text):
        raise CheckFailed(f"does not fully match {EMAIL_REGEX}: {_short(text)}")
    return _short(text)


def check_choice(ctx: Context, model: SmokeModel) -> str:
    text = _chat(
        ctx,
        model,
        "choice",
        messages=_user("Classify the sentiment: vLLM is wonderful!"),
        structured_outputs={"choice": list(CHOICES)},
        max_tokens=8,
    )
    if text not in CHOICES:
        raise CheckFailed(f"{_short(text)} is not one of {', '.join(CHOICES)}")
    return _short(text)


def check_grammar(ctx: Context, model: SmokeModel) -> str:
    text = _chat(
        ctx,
        model,
        "grammar",
        messages=_user("Generate a SQL query that reads one column of a table."),
        structured_outputs={"grammar": SQL_GRAMMAR},
        max_tokens=16,
    )
    language = finite_language(SQL_GRAMMAR)
    if text not in language:
        raise CheckFailed(f"{_short(text)} is not in the grammar's {len(language)} sentences")
    return _short(text)


def check_so_json(ctx: Context, model: SmokeModel) -> str:
    text = _completion(
        ctx,
        model,
        "structured_outputs json",
        prompt="Generate a person object for John, 30, from NYC:",
        structured_outputs={"json": PERSON_SCHEMA},
        max_tokens=JSON_TOKENS,
    )
    _validate(_parse_json(text), PERSON_SCHEMA)
    return _short(text)


def check_vision(ctx: Context, model: SmokeModel) -> str:
    content = [
        {"type": "text", "text": "What colour is this image? Answer in one word."},
        {"type": "image_url", "image_url": {"url": data_url(solid_png())}},
    ]
    text = _chat(ctx, model, "image input", messages=[{"role": "user", "content": content}])
    if not text.strip():
        raise CheckFailed("empty content")
    return _short(text)


def check_adapters(ctx: Context, model: SmokeModel) -> str:
    """A chat naming each adapter: vLLM answers with the adapter's name as "model" only
    when it applied it (and 404 when it has no adapter of that name)."""
    for adapter in model.adapters:
        body = {
            "model": adapter,
            "temperature": 0,
            "max_tokens": 16,
            "messages": _user(CHAT_PROMPT),
        }
        what = f"{adapter} (LoRA adapter of {model.key}) chat"
        r = ctx.endpoint.request(
            "POST", "/v1/chat/completions", what=what, key=ctx.api_key, body=body
        )
        answered = _ok_json(r).get("model")
        if answered != adapter:
            raise CheckFailed(f"asked for adapter {adapter!r}, answered by {answered!r}")
    return f"{len(model.adapters)} adapter(s) answer under their own names"


# --- pooling models: embeddings, rerank, score ------------------------------------------


def _pooling(ctx: Context, model: SmokeModel, path: str, what: str, **fields: Any) -> Any:
    r = ctx.endpoint.request(
        "POST",
        path,
        what=f"{model.key} {what}",
        key=ctx.api_key,
        body={"model": model.key, **fields},
    )
    data = _ok_json(r)
    if not isinstance(data, dict):
        raise CheckFailed(f"not a JSON object: {json.dumps(data)[:120]}")
    return data


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CheckFailed(f"{what} is not a finite number: {json.dumps(value)[:40]}")
    return float(value)


def _indexed(items: Any, count: int, what: str) -> list[dict[str, Any]]:
    """`items` as a list of objects whose `index` values are 0..count-1, each once."""
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise CheckFailed(f"{what} is not a list of objects")
    indices = [item.get("index") for item in items]
    if sorted(i for i in indices if isinstance(i, int)) != list(range(count)):
        raise CheckFailed(f"{what} has indices {indices[:10]}, not each of 0..{count - 1} once")
    return items


def check_embeddings(ctx: Context, model: SmokeModel) -> str:
    data = _pooling(
        ctx,
        model,
        "/v1/embeddings",
        "embeddings (a cold start loads it)",
        input=list(EMBED_INPUTS),
        encoding_format="float",
    )
    items = _indexed(data.get("data"), len(EMBED_INPUTS), "data")
    lengths = set()
    for item in items:
        vector = item.get("embedding")
        if not isinstance(vector, list) or not vector:
            raise CheckFailed(f"embedding {item['index']} is not a list of numbers")
        for value in vector:
            _number(value, f"a value of embedding {item['index']}")
        lengths.add(len(vector))
    if len(lengths) != 1:
        raise CheckFailed(f"vectors of different lengths: {sorted(lengths)}")
    return f"{len(items)} vectors of {lengths.pop()} floats"


def check_rerank(ctx: Context, model: SmokeModel) -> str:
    data = _pooling(
        ctx,
        model,
        "/v1/rerank",
        "rerank",
        query=RERANK_QUERY,
        documents=list(RERANK_DOCUMENTS),
    )
    results = _indexed(data.get("results"), len(RERANK_DOCUMENTS), "results")
    scores = [_number(r.get("relevance_score"), "a relevance_score") for r in results]
    if scores != sorted(scores, reverse=True):
        raise CheckFailed(f"results are not ordered by relevance: {[round(x, 3) for x in scores]}")
    if results[0]["index"] != RELEVANT:
        raise CheckFailed(
            f"document {results[0]['index']} ranks first, not the relevant one ({RELEVANT}): "
            f"{_short(RERANK_DOCUMENTS[results[0]['index']])}"
        )
    return f"relevant document first ({scores[0]:.3f} > {scores[1]:.3f})"


def check_score(ctx: Context, model: SmokeModel) -> str:
    data = _pooling(
        ctx, model, "/v1/score", "score", text_1=RERANK_QUERY, text_2=list(RERANK_DOCUMENTS)
    )
    items = _indexed(data.get("data"), len(RERANK_DOCUMENTS), "data")
    scores = {item["index"]: _number(item.get("score"), "a score") for item in items}
    best = max(scores, key=lambda i: scores[i])
    if best != RELEVANT:
        raise CheckFailed(f"document {best} scores highest, not the relevant one ({RELEVANT})")
    return f"{len(items)} scores, the relevant document highest ({scores[best]:.3f})"


AppCheck = Callable[[Context, "SmokeModel | None"], str]
ModelCheck = Callable[[Context, SmokeModel], str]

APP_CHECKS: tuple[tuple[str, AppCheck], ...] = (
    ("health", check_health),
    ("models-no-key", check_models_no_key),
    ("wrong-key", check_wrong_key),
    ("models", check_models),
)
# "chat" comes first: it absorbs the model's cold start, so later latencies are warm.
MODEL_CHECKS: tuple[tuple[str, ModelCheck], ...] = (
    ("chat", check_chat),
    ("completion-echo", check_echo),
    ("stream", check_stream),
    ("json-object", check_json_object),
    ("json-schema", check_json_schema),
    ("so-regex", check_regex),
    ("so-choice", check_choice),
    ("so-grammar", check_grammar),
    ("so-json", check_so_json),
    ("vision", check_vision),
    ("adapters", check_adapters),
)
# The first check of each kind absorbs the cold start, like "chat".
POOLING_CHECKS: dict[str, tuple[tuple[str, ModelCheck], ...]] = {
    "embed": (("embeddings", check_embeddings), ("rerank", check_rerank), ("score", check_score)),
    "rerank": (("rerank", check_rerank), ("score", check_score)),
}
CHECK_NAMES = tuple(
    dict.fromkeys(name for name, _ in APP_CHECKS + MODEL_CHECKS + sum(POOLING_CHECKS.values(), ()))
)


def checks_for(model: SmokeModel) -> list[tuple[str, ModelCheck]]:
    if model.kind in POOLING_CHECKS:
        return list(POOLING_CHECKS[model.kind])
    wanted = {"vision": model.vision, "adapters": bool(model.adapters)}
    return [(n, c) for n, c in MODEL_CHECKS if wanted.get(n, True)]


# --- running ---------------------------------------------------------------------------


def run_smoke(
    targets: Sequence[Target],
    api_key: str,
    *,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> list[CheckResult]:
    results: list[CheckResult] = []
    for target in targets:
        endpoint = Endpoint(
            target.url,
            ready_timeout=ready_timeout,
            request_timeout=request_timeout,
            progress=progress,
            sleep=sleep,
            transport=transport,
        )
        try:
            results += _run_target(Context(endpoint, target, api_key), progress)
        finally:
            endpoint.close()
    return results


def _run_target(ctx: Context, progress: Callable[[str], None] | None) -> list[CheckResult]:
    """Checks in order; a wait that runs out skips what would only wait again."""
    results = []
    for name, check in APP_CHECKS:
        result, gave_up = _timed(ctx, name, None, check, progress)
        results.append(result)
        if gave_up and name == "health":
            return results + _skipped(ctx, "the endpoint never became ready", with_app=True)
    for model in ctx.target.tested:
        for name, model_check in checks_for(model):
            result, gave_up = _timed(ctx, name, model, model_check, progress)
            results.append(result)
            if gave_up and name == checks_for(model)[0][0]:  # the check that waits
                reason = f"{model.key} never became ready"
                results += [_skip(ctx, n, model.key, reason) for n, _ in checks_for(model)[1:]]
                break
    return results


def _timed(
    ctx: Context,
    name: str,
    model: SmokeModel | None,
    check: Callable[[Context, Any], str],
    progress: Callable[[str], None] | None,
) -> tuple[CheckResult, bool]:
    """Run one check; the latency leaves out time spent waiting for a cold start."""
    label = model.key if model else "-"
    if progress:
        progress(f"checking {name} on {label}")
    waited = ctx.endpoint.waited
    started = time.monotonic()
    status, gave_up = "pass", False
    try:
        detail = check(ctx, model)
    except GaveUp as exc:
        status, detail, gave_up = "FAIL", str(exc), True
    except CheckFailed as exc:
        status, detail = "FAIL", str(exc)
    except httpx.HTTPError as exc:
        status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
    latency = max(0.0, time.monotonic() - started - (ctx.endpoint.waited - waited))
    return CheckResult(ctx.target.app, name, label, status, detail, latency), gave_up


def _skip(ctx: Context, name: str, model: str, reason: str) -> CheckResult:
    return CheckResult(ctx.target.app, name, model, "skip", f"not run: {reason}", None)


def _skipped(ctx: Context, reason: str, *, with_app: bool) -> list[CheckResult]:
    out = []
    if with_app:
        out += [_skip(ctx, n, "-", reason) for n, _ in APP_CHECKS[1:]]
    for model in ctx.target.tested:
        out += [_skip(ctx, n, model.key, reason) for n, _ in checks_for(model)]
    return out


# --- finite grammars -------------------------------------------------------------------

_RULE_RE = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*::=\s*(.*)$")
_TOKEN_RE = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z_][\w-]*)|(\|)|(\S))')


def finite_language(grammar: str, start: str = "root") -> set[str]:
    """Every sentence of a grammar made of quoted literals, rule names and `|`.

    Enough for the check's own grammar; anything else (repetition, classes, recursion)
    is refused, because its language would not be a finite set to compare against.
    """
    rules: dict[str, list[list[tuple[bool, str]]]] = {}
    for line in grammar.splitlines():
        if not line.strip():
            continue
        match = _RULE_RE.match(line)
        if not match:
            raise ValueError(f"not a rule: {line!r}")
        rules[match.group(1)] = _alternatives(match.group(2))

    def expand(name: str, seen: frozenset[str]) -> set[str]:
        if name not in rules:
            raise ValueError(f"undefined rule {name!r}")
        if name in seen:
            raise ValueError(f"rule {name!r} is recursive: the language is not finite")
        sentences: set[str] = set()
        for sequence in rules[name]:
            partial = {""}
            for is_literal, value in sequence:
                options = {value} if is_literal else expand(value, seen | {name})
                partial = {p + o for p in partial for o in options}
            sentences |= partial
        return sentences

    return expand(start, frozenset())


def _alternatives(body: str) -> list[list[tuple[bool, str]]]:
    alternatives: list[list[tuple[bool, str]]] = [[]]
    for literal, name, bar, other in _TOKEN_RE.findall(body):
        if other:
            raise ValueError(f"unsupported grammar syntax {other!r}")
        if bar:
            alternatives.append([])
        elif name:
            alternatives[-1].append((False, name))
        else:
            alternatives[-1].append((True, json.loads(f'"{literal}"')))
    return alternatives


# --- reporting -------------------------------------------------------------------------


def format_latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def results_table(results: Sequence[CheckResult], targets: Sequence[Target]) -> Any:
    from rich.table import Table

    failed = sum(r.failed for r in results)
    passed = sum(r.status == "pass" for r in results)
    urls = ", ".join(t.url for t in targets)
    title = f"smoke test of {urls}: {passed} passed, {failed} failed"
    table = Table(title=title, title_justify="left")
    several = len({t.app for t in targets}) > 1
    columns = (["app"] if several else []) + ["check", "model", "result", "latency", "detail"]
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in ("check", "latency"))
    style = {
        "pass": "[green]pass[/green]",
        "FAIL": "[red]FAIL[/red]",
        "skip": "[yellow]skip[/yellow]",
    }
    for r in results:
        row = [r.check, r.model, style[r.status], format_latency(r.latency), r.detail]
        table.add_row(*([r.app] if several else []), *row, end_section=False)
    return table


def results_json(results: Sequence[CheckResult], targets: Sequence[Target]) -> dict[str, Any]:
    return {
        "ok": not any(r.failed for r in results),
        "targets": [{"app": t.app, "url": t.url} for t in targets],
        "results": [
            {**asdict(r), "latency": None if r.latency is None else round(r.latency, 4)}
            for r in results
        ],
    }
