"""A stand-in for the Hugging Face Hub, for `mvgen lock`'s tests. It is NOT the Hub.

It answers the three requests `mvgen lock` makes through huggingface_hub, the way the Hub
answers them (status codes and the X-Error-Code header huggingface_hub reads):

- GET /api/models/<id>[/revision/<rev>]: the model's commit sha and safetensors parameter
  counts by dtype (none for a LoRA adapter's repo, which holds no safetensors.json here);
- GET /<id>/resolve/<rev>/<file>: config.json, preprocessor_config.json and a LoRA adapter's
  adapter_config.json, served from the recorded copies in tests/data/hf/;
- GET /api/models?search=<text>: ids containing the text, for "did you mean";
- GET /api/models/<id>/tree/<rev>: the repo's files, and HEAD on /resolve/ with the commit
  and ETag headers, which huggingface_hub's snapshot_download needs to fetch an adapter
  as a GPU container does before vLLM starts. Every revision serves the recorded files.

Repos listed in `gated` answer their files only to `Authorization: Bearer <token>`. Every
request is recorded, headers included, so tests can check what was sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

RECORDED = Path(__file__).resolve().parent / "data" / "hf"
# Ids the Hub's search knows besides the recorded ones: near misses to suggest.
OTHER_IDS = ("google/gemma-3-4b-it", "google/gemma-3-1b-it", "mistralai/Mistral-7B-v0.3")


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None


@dataclass
class HubStandin:
    gated: dict[str, str] = field(default_factory=dict)  # repo id -> the token that opens it
    requests: list[Recorded] = field(default_factory=list)

    @staticmethod
    def repos() -> dict[str, Path]:
        return {p.name.replace("--", "/", 1): p for p in RECORDED.iterdir() if p.is_dir()}

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/models", self.search),
                Route("/api/models/{org}/{name}", self.info),
                Route("/api/models/{org}/{name}/revision/{rev:path}", self.info),
                Route("/api/models/{org}/{name}/tree/{rev:path}", self.tree),
                Route("/{org}/{name}/resolve/{rev:path}/{file}", self.resolve),
            ]
        )

    def _record(self, request: Request) -> None:
        auth = request.headers.get("authorization")
        self.requests.append(Recorded(request.method, request.url.path, auth))

    async def info(self, request: Request) -> Response:
        self._record(request)
        repo = self._repo(request)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        hf_id = request.path_params["org"] + "/" + request.path_params["name"]
        info: dict[str, Any] = {"id": hf_id, "sha": sha_of(hf_id)}
        info["siblings"] = [{"rfilename": f.name} for f in _files(repo)]
        sizes = repo / "safetensors.json"
        if sizes.exists():  # adapters' repos have none recorded, and the Hub omits the field
            info["safetensors"] = json.loads(sizes.read_text())
        return JSONResponse(info)

    async def resolve(self, request: Request) -> Response:
        self._record(request)
        repo = self._repo(request)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        hf_id = request.path_params["org"] + "/" + request.path_params["name"]
        if hf_id in self.gated:
            sent = request.headers.get("authorization", "")
            if sent != f"Bearer {self.gated[hf_id]}":
                return _error(401, "GatedRepo", "Access to model is restricted")
        path = repo / request.path_params["file"]
        if not path.is_file():
            return _error(404, "EntryNotFound", "Entry not found")
        body = path.read_bytes()
        headers = {"X-Repo-Commit": sha_of(hf_id), "ETag": f'"{_oid(body)}"'}
        return Response(body, media_type="application/json", headers=headers)

    async def tree(self, request: Request) -> Response:
        self._record(request)
        repo = self._repo(request)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        entries = [
            {"type": "file", "path": f.name, "size": f.stat().st_size, "oid": _oid(f.read_bytes())}
            for f in _files(repo)
        ]
        return JSONResponse(entries)

    async def search(self, request: Request) -> Response:
        self._record(request)
        text = request.query_params.get("search", "").lower()
        limit = int(request.query_params.get("limit", "50"))
        ids = sorted({*self.repos(), *OTHER_IDS})
        return JSONResponse([{"id": i, "modelId": i} for i in ids if text in i.lower()][:limit])

    def _repo(self, request: Request) -> Path | None:
        hf_id = request.path_params["org"] + "/" + request.path_params["name"]
        return {k.lower(): v for k, v in self.repos().items()}.get(hf_id.lower())


def _files(repo: Path) -> list[Path]:
    """The repo's files as the Hub would list them (safetensors.json is our recording of
    the API's sizes, not a file of the repo)."""
    return sorted(f for f in repo.iterdir() if f.is_file() and f.name != "safetensors.json")


def _oid(body: bytes) -> str:
    """git's blob id of a file, which the Hub reports as its oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def sha_of(hf_id: str) -> str:
    """A commit sha for a repo, stable across runs."""
    return hashlib.sha1(hf_id.encode()).hexdigest()


def _error(status: int, code: str, message: str) -> Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def recorded_entry_parts(hf_id: str) -> dict[str, Any]:
    """What a lock entry for `hf_id` must hold, read straight from the recorded files."""
    repo = HubStandin.repos()[hf_id]
    processor = repo / "preprocessor_config.json"
    return {
        "config": json.loads((repo / "config.json").read_text()),
        "parameters": json.loads((repo / "safetensors.json").read_text())["parameters"],
        "preprocessor": (
            {"size": json.loads(processor.read_text())["size"]} if processor.exists() else None
        ),
    }
