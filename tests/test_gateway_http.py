"""The gateway over real HTTP on 127.0.0.1: auth, routes, request checks, passthrough,
relayed answers and the per-request log line, in front of the recording stand-in."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import openai
import pytest
from gateway_fixtures import (
    ALPHA,
    API_KEY,
    BETA,
    OTHER_KEY,
    auth,
    client,
    gateway_over,
    make_app,
    raw_http,
    serve_asgi,
    standin,
    wait_until,
)
from standin_vllm import StandinServer

from mvgen.runtime import gateway as gateway_module
from mvgen.runtime.backends import HttpBackend, UpstreamResponse, UpstreamStream
from mvgen.runtime.gateway import key_matches
from mvgen.runtime.models import ServedModel
from mvgen.runtime.request_log import parse_line

pytestmark = pytest.mark.timeout(60)

GUARDED = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
]
CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandinServer]:
    with standin(chunks=3) as server:
        yield server


@pytest.fixture(scope="module")
def url(upstream: StandinServer) -> Iterator[str]:
    with gateway_over({"alpha": upstream.url, "beta": upstream.url}, max_body_bytes=4096) as u:
        yield u


@pytest.fixture
def recorded(upstream: StandinServer) -> StandinServer:
    upstream.clear()
    upstream.config.mode = "ok"
    return upstream


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", GUARDED)
@pytest.mark.parametrize(
    "header,code",
    [
        (None, "missing_api_key"),
        ("Bearer wrong-key", "invalid_api_key"),
        (f"Basic {API_KEY}", "missing_api_key"),
        ("Bearer", "missing_api_key"),
        ("Bearer  x y", "invalid_api_key"),
        (f"Bearer {API_KEY}x", "invalid_api_key"),
        (f"Bearer {API_KEY[:-1]}", "invalid_api_key"),
    ],
)
def test_bad_or_missing_key_is_401_with_www_authenticate(
    url: str, recorded: StandinServer, method: str, path: str, header: str | None, code: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    with client(url, key=None) as c:
        response = c.request(method, path, headers=headers, json=CHAT)
    error = assert_error(response, 401, code)
    assert response.headers["www-authenticate"] == "Bearer"
    assert error["type"] == "authentication_error"
    assert recorded.requests == []


def test_scheme_is_case_insensitive(url: str) -> None:
    with client(url, key=None) as c:
        response = c.get("/v1/models", headers={"Authorization": f"bearer {API_KEY}"})
    assert response.status_code == 200


def test_several_comma_separated_keys_all_work() -> None:
    backend = HttpBackend({})
    app = make_app(backend, keys=f" {API_KEY} , {OTHER_KEY},, ")
    with serve_asgi(app) as u:
        for key in (API_KEY, OTHER_KEY):
            with client(u, key=key) as c:
                assert c.get("/v1/models").status_code == 200
        with client(u, key="third-key") as c:
            assert_error(c.get("/v1/models"), 401, "invalid_api_key")


def test_key_check_compares_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = gateway_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(gateway_module.hmac, "compare_digest", counting)
    keys = (b"first", b"second", b"third")
    assert key_matches(b"first", keys)
    assert calls == list(keys)  # no early exit on the first match
    calls.clear()
    assert not key_matches(b"nope", keys)
    assert calls == list(keys)


@pytest.mark.parametrize("keys", [None, "", " , ,"])
def test_missing_api_key_never_means_open(
    keys: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="mvgen.gateway"):
        app = make_app(HttpBackend({}), keys=keys)
    assert any("server_misconfigured" in r.getMessage() for r in caplog.records)
    with serve_asgi(app) as u, client(u) as c:
        for method, path in GUARDED:
            assert_error(c.request(method, path, json=CHAT), 500, "server_misconfigured")
        assert c.get("/health").status_code == 200


def test_no_auth_mode_needs_no_key(upstream: StandinServer) -> None:
    with gateway_over({"alpha": upstream.url}, keys=None, require_auth=False) as u:
        with client(u, key=None) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


# --- routes ------------------------------------------------------------------------------


class ExplodingBackend:
    """A backend that fails the test if the gateway calls it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def request(self, model: ServedModel, path: str, body: dict) -> UpstreamResponse:
        self.calls.append("request")
        raise AssertionError("backend called")

    async def stream(self, model: ServedModel, path: str, body: dict) -> UpstreamStream:
        self.calls.append("stream")
        raise AssertionError("backend called")

    async def aclose(self) -> None:
        pass


def test_health_is_open_and_never_touches_the_backend() -> None:
    backend = ExplodingBackend()
    with serve_asgi(make_app(backend)) as u, client(u, key=None) as c:
        for _ in range(3):
            response = c.get("/health")
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}
        assert c.head("/health").status_code == 200
        assert c.get("/v1/models").status_code == 401
    assert backend.calls == []


def test_models_lists_every_served_name(url: str) -> None:
    with client(url) as c:
        body = c.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == sorted([ALPHA, BETA])
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])


VLLM_OPEN_ROUTES = [
    "/invocations",
    "/tokenize",
    "/detokenize",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/pause",
    "/sleep",
    "/wake_up",
    "/version",
    "/ping",
    "/load",
    # vLLM 0.12's pooling routes outside /v1, open even with its --api-key
    "/rerank",
    "/score",
    "/v2/rerank",
    "/pooling",
    "/classify",
    "/v1/embeddings/",
    "/v1/responses",
    "/v2/models",
    "/",
    "/V1/models",
    "/v1/models/",
    "/v1/chat/completions/",
    "/v1/completions/",
]


@pytest.mark.parametrize("path", VLLM_OPEN_ROUTES)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_other_route_is_404(
    url: str, recorded: StandinServer, method: str, path: str
) -> None:
    with client(url) as c:
        response = c.request(method, path, json=CHAT)
    assert_error(response, 404, "not_found")
    assert recorded.requests == []


RAW_TRICKS = [
    "POST /v1/../invocations",
    "POST /v1/%2e%2e/invocations",
    "POST /v1/%2E%2E/invocations",
    "POST /%69nvocations",
    "POST /invocations%2F",
    "POST /v1/chat%2Fcompletions",
    "POST /v1%2Fchat%2Fcompletions",
    "POST //v1/chat/completions",
    "POST /v1//chat/completions",
    "POST /v1/./chat/completions",
    "POST /v1/chat/completions/.",
    "POST /v1/chat/completions/..",
    "GET /v1/models%2F",
    "GET /v1/models/.",
    "GET /health/../invocations",
    "GET /health/..%2Finvocations",
    "GET /v1/models%00",
    "POST /invocations?model=alpha",
    "POST /tokenize/",
]


@pytest.mark.parametrize("line", RAW_TRICKS)
def test_encoded_and_dotted_paths_are_404(url: str, recorded: StandinServer, line: str) -> None:
    headers = {**auth(), "Content-Type": "application/json", "Content-Length": "2"}
    assert raw_http(url, f"{line} HTTP/1.1", headers, body=b"{}") == 404
    assert recorded.requests == []


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/completions"),
        ("DELETE", "/v1/chat/completions"),
        ("POST", "/v1/models"),
        ("POST", "/health"),
        ("PATCH", "/v1/models"),
    ],
)
def test_wrong_method_is_405(url: str, method: str, path: str) -> None:
    with client(url) as c:
        response = c.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"]


# --- request checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,code",
    [
        (b"", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b'{"model": "alpha",}', "invalid_json"),
        (b'{"model": "alpha", "temperature": NaN}', "invalid_json"),
        (b'{"model": "alpha", "x": Infinity}', "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"[" * 2000 + b"]" * 2000, "invalid_json"),
        (b"[]", "invalid_request"),
        (b'"alpha"', "invalid_request"),
        (b"null", "invalid_request"),
        (b"42", "invalid_request"),
        (b"{}", "missing_model"),
        (b'{"messages": []}', "missing_model"),
        (b'{"model": 7}', "invalid_model"),
        (b'{"model": ["alpha"]}', "invalid_model"),
        (b'{"model": ""}', "invalid_model"),
        (b'{"model": "alpha", "stream": "yes"}', "invalid_stream"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_malformed_requests_are_400(
    url: str, recorded: StandinServer, path: str, content: bytes, code: str
) -> None:
    with client(url) as c:
        response = c.post(path, content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400, code)
    assert recorded.requests == []


def test_unknown_model_is_404_listing_the_names(url: str, recorded: StandinServer) -> None:
    with client(url) as c:
        response = c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    error = assert_error(response, 404, "model_not_found")
    assert "gpt-4o" in error["message"]
    assert ALPHA in error["message"] and BETA in error["message"]
    assert recorded.requests == []


def test_missing_model_error_lists_the_names(url: str) -> None:
    with client(url) as c:
        error = assert_error(c.post("/v1/completions", json={"prompt": "x"}), 400, "missing_model")
    assert ALPHA in error["message"]


def test_body_over_the_limit_is_413(url: str, recorded: StandinServer) -> None:
    big = {**CHAT, "padding": "x" * 5000}
    with client(url) as c:
        assert_error(c.post("/v1/chat/completions", json=big), 413, "request_too_large")
        # Without Content-Length (chunked upload) the limit holds on the streamed body.
        chunks = iter([json.dumps(big).encode()[i : i + 1000] for i in range(0, 6000, 1000)])
        response = c.post("/v1/chat/completions", content=chunks)
        assert_error(response, 413, "request_too_large")
        # Just under the limit passes.
        fits = {**CHAT, "padding": "x" * 3800}
        assert len(json.dumps(fits)) <= 4096
        assert c.post("/v1/chat/completions", json=fits).status_code == 200
    assert len(recorded.completion_requests()) == 1


def test_lying_content_length_cannot_sneak_a_big_body_in(url: str, recorded: StandinServer) -> None:
    body = json.dumps({**CHAT, "padding": "x" * 6000}).encode()
    headers = {**auth(), "Content-Type": "application/json", "Content-Length": "100"}
    status = raw_http(url, "POST /v1/chat/completions HTTP/1.1", headers, body=body)
    assert status in (400, 413)  # the server reads only 100 bytes: invalid JSON
    assert recorded.requests == []


# --- passthrough -------------------------------------------------------------------------


RICH_BODY = {
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe — ünïcode ✓"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ],
    "structured_outputs": {"choice": ["Positive", "Negative"]},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": {"type": "object", "required": ["name"]}},
    },
    "tools": [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ],
    "tool_choice": "auto",
    "top_k": 20,
    "temperature": 0.25,
    "max_tokens": 2,
    "seed": 12345678901234567890,
    "some_future_vllm_extra": {"nested": [1, 2.5, None, True]},
}


@pytest.mark.parametrize(
    "name,served",
    [("alpha", ALPHA), (ALPHA, ALPHA), ("ORG/alpha-7b-IT", ALPHA), ("alpha-chat", ALPHA),
     ("beta", BETA), ("Org/Beta-1B", BETA)],
)  # fmt: skip
def test_body_is_forwarded_unchanged_except_model(
    url: str, recorded: StandinServer, name: str, served: str
) -> None:
    with client(url) as c:
        response = c.post("/v1/chat/completions", json={**RICH_BODY, "model": name})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == served
    [seen] = recorded.completion_requests()
    assert seen.path == "/v1/chat/completions"
    assert seen.body == {**RICH_BODY, "model": served}


def test_completions_body_with_echo_is_forwarded(url: str, recorded: StandinServer) -> None:
    body = {"model": "beta", "prompt": "Once upon a time", "echo": True, "max_tokens": 2,
            "structured_outputs": {"regex": "[a-z]+"}}  # fmt: skip
    with client(url) as c:
        response = c.post("/v1/completions", json=body)
    assert response.json()["choices"][0]["text"] == "Once upon a timetok0 tok1 "
    assert recorded.completion_requests()[0].body == {**body, "model": BETA}


def test_client_credentials_and_hop_by_hop_headers_are_not_forwarded(
    url: str, recorded: StandinServer
) -> None:
    headers = {
        "Connection": "keep-alive, X-Secret-Hop",
        "Keep-Alive": "timeout=5",
        "X-Secret-Hop": "hop",
        "Proxy-Authorization": "Basic cHJveHk6cHc=",
        "Cookie": "session=abc",
        "TE": "trailers",
        "Upgrade": "h2c",
        "X-Forwarded-For": "10.0.0.1",
    }
    with client(url) as c:
        assert c.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    [seen] = recorded.completion_requests()
    forbidden = {"authorization", "proxy-authorization", "cookie", "keep-alive", "te", "upgrade",
                 "x-secret-hop", "x-forwarded-for"}  # fmt: skip
    assert forbidden.isdisjoint(seen.headers), seen.headers
    assert all(API_KEY not in value for value in seen.headers.values())


def test_each_model_goes_to_its_own_upstream() -> None:
    with standin() as a, standin() as b, gateway_over({"alpha": a.url, "beta": b.url}) as u:
        with client(u) as c:
            c.post("/v1/chat/completions", json={**CHAT, "model": "beta"})
            c.post("/v1/completions", json={"model": "alpha", "prompt": "x"})
        assert [(r.path, r.body["model"]) for r in a.requests] == [("/v1/completions", ALPHA)]
        assert [(r.path, r.body["model"]) for r in b.requests] == [("/v1/chat/completions", BETA)]


@pytest.mark.parametrize("status", [400, 422, 429, 500, 503])
def test_upstream_status_and_error_body_come_back(
    url: str, recorded: StandinServer, status: int
) -> None:
    recorded.config.mode = "error"
    recorded.config.error_status = status
    try:
        with client(url) as c:
            response = c.post("/v1/chat/completions", json=CHAT)
    finally:
        recorded.config.mode = "ok"
    assert response.status_code == status
    assert response.json()["error"]["message"] == "Stand-in error as configured."
    assert response.json()["error"]["code"] == status  # vLLM's body, not rewritten


# --- the OpenAI SDK as a client --------------------------------------------------------------


def sdk(url: str, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=15)


def test_openai_sdk_round_trip(url: str, recorded: StandinServer) -> None:
    api = sdk(url)
    assert sorted(m.id for m in api.models.list()) == sorted([ALPHA, BETA])
    chat = api.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        extra_body={"structured_outputs": {"choice": ["yes", "no"]}, "top_k": 5},
    )
    assert chat.model == ALPHA
    assert chat.choices[0].message.content == "tok0 tok1 "
    text = api.completions.create(model="beta", prompt="Say", echo=True, max_tokens=1)
    assert text.choices[0].text == "Saytok0 "
    bodies = [r.body for r in recorded.completion_requests()]
    assert bodies[0]["structured_outputs"] == {"choice": ["yes", "no"]}
    assert bodies[0]["top_k"] == 5


def test_openai_sdk_errors_map_to_its_exceptions(url: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(url, key="wrong").models.list()
    with pytest.raises(openai.NotFoundError, match="Available models"):
        sdk(url).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


# --- one log line per request ----------------------------------------------------------------


def test_one_log_line_per_request_without_key_or_prompt(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret_prompt = "SECRET-PROMPT-MARKER-8472"
    caplog.set_level(logging.INFO, logger="mvgen.gateway")
    with client(url) as c:
        c.post(
            "/v1/chat/completions",
            json={**CHAT, "messages": [{"role": "user", "content": secret_prompt}]},
        )
        c.get("/v1/models", headers={"Authorization": "Bearer wrong-" + secret_prompt})
        c.post("/v1/completions", json={"model": "nope", "prompt": secret_prompt})
        c.get(f"/v1/models?api_key={API_KEY}")
        c.get("/invocations")
        with c.stream("POST", "/v1/completions", json={"model": "beta", "prompt": secret_prompt,
                                                       "stream": True}) as r:  # fmt: skip
            r.read()

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if parse_line(r.getMessage())]

    wait_until(lambda: len(lines()) >= 6, 5, "log lines missing")
    logged = lines()
    assert len(logged) == 6
    fields = [parse_line(line) or {} for line in logged]
    assert [f["status"] for f in fields] == [200, 401, 404, 200, 404, 200]
    assert [f["route"] for f in fields] == [
        "/v1/chat/completions", "/v1/models", "/v1/completions", "/v1/models", "(unknown)",
        "/v1/completions",
    ]  # fmt: skip
    assert [f["error"] for f in fields] == [
        None, "invalid_api_key", "model_not_found", None, "not_found", None
    ]  # fmt: skip
    assert fields[0]["model"] == "alpha" and fields[5]["model"] == "beta"
    assert fields[5]["stream"] is True
    for f in fields:
        assert f["duration_ms"] >= 0 and f["bytes_out"] > 0
    assert fields[0]["bytes_in"] > 0
    text = "\n".join(logged)
    assert secret_prompt not in text and API_KEY not in text and "wrong-" not in text
