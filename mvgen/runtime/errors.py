"""OpenAI-shaped errors shared by the gateway, the backends and the pool server.

Stdlib only: this module is imported inside both the gateway container and the GPU
container, and its values cross the Modal wire as plain data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# OpenAI's SDKs only look at the status code and `error.message`; `type` follows
# OpenAI's own vocabulary so clients that branch on it behave sensibly.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    """The OpenAI error `type` for an HTTP status."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(message: str, code: str, status: int) -> dict[str, Any]:
    """`{"error": {"message", "type", "code"}}`, the shape every gateway error uses."""
    return {"error": {"message": message, "type": error_type_for(status), "code": code}}


def error_json(message: str, code: str, status: int) -> bytes:
    return json.dumps(error_body(message, code, status)).encode()


class ApiError(Exception):
    """An error answered to the client as an OpenAI-shaped JSON body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.extra_headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.code, self.status)

    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def to_wire(self) -> dict[str, Any]:
        """Plain picklable form, so a pool container can hand an error to the gateway."""
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ApiError:
        return cls(
            int(data["status"]),
            str(data["code"]),
            str(data["message"]),
            retry_after=data.get("retry_after"),
        )


class UpstreamError(ApiError):
    """The model server could not be reached or answered something unusable."""


class UpstreamUnavailable(UpstreamError):
    """Connections refused (vLLM refuses them while it loads): retry later."""

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(503, "upstream_unavailable", message, retry_after=retry_after)


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(504, "upstream_timeout", message)


class UpstreamProtocolError(UpstreamError):
    """Reset connections, malformed HTTP, or a success body that is not JSON."""

    def __init__(self, message: str, code: str = "bad_upstream_response") -> None:
        super().__init__(502, code, message)


class ModelNotDeployed(ApiError):
    def __init__(self, name: str) -> None:
        super().__init__(
            503,
            "model_not_deployed",
            f"Model '{name}' is configured but not deployed behind this gateway.",
        )


def embedded_error_status(data: Any) -> int | None:
    """The status of an error vLLM 0.12 answers with HTTP 200: a route whose handler the
    model lacks (embeddings on a chat model, chat on an embedder, ...) returns its
    `ErrorResponse` object instead of a JSONResponse, which FastAPI serialises with the
    route's default 200 (vllm/entrypoints/pooling/*/api_router.py, api_server.py). The body
    is `{"error": {"message", "type", "param", "code": 400}}`; its code is the status
    (502 when it is no HTTP error status). None for any other body."""
    if not isinstance(data, dict) or set(data) != {"error"} or not isinstance(data["error"], dict):
        return None
    code = data["error"].get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return 502


def relay_error_content(status: int, content: bytes) -> bytes:
    """An upstream error body as JSON: unchanged when it already is JSON, else wrapped
    in an OpenAI-shaped error that quotes the start of what the upstream said."""
    try:
        json.loads(content)
    except (ValueError, RecursionError):
        snippet = content[:200].decode("utf-8", errors="replace").strip()
        message = f"The model server answered HTTP {status}: {snippet or '(empty body)'}"
        return error_json(message, "upstream_error", status)
    return content


class ModelFailedToStart(ApiError):
    """vLLM failed to start for this model; the message says why, in words.

    `retry_after` is set when the gateway has stopped starting the model (a crash loop):
    it is the time left until it tries again.
    """

    def __init__(self, name: str, cause: str, *, retry_after: int | None = None) -> None:
        message = f"Model '{name}' failed to start: {cause}."
        if retry_after is not None:
            message += (
                f" It failed to start several times in a row, so it is not started again "
                f"for {retry_after} s; fix deployments.yaml and redeploy (a changed vLLM "
                "command starts afresh)."
            )
        super().__init__(503, "model_failed_to_start", message, retry_after=retry_after)
