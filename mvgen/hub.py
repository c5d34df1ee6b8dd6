"""Read a checkpoint's facts from the Hugging Face Hub for `mvgen lock`: its config.json, its
safetensors parameter counts by dtype (the Hub's model API computes them from the
safetensors headers), and for Qwen-VL models the image processor's size; for a LoRA
adapter, its adapter_config.json.

huggingface_hub does the HTTP; HF_ENDPOINT picks the Hub (tests point it at a stand-in on
127.0.0.1) and HF_TOKEN opens gated models such as Gemma. The token is never printed.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any

from mvgen.lock import ADAPTER, AdapterEntry, CheckpointRef, LockEntry

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 30.0
SEARCH_LIMIT = 50  # ids per Hub search when naming the nearest ones
QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


class HubError(Exception):
    """The Hub refused or lacks something: a message for the user, naming the fix."""


class HubUnreachable(HubError):
    """No answer from the Hub at all (offline, DNS, timeout)."""


@dataclass(frozen=True)
class Hub:
    endpoint: str
    token: str | None

    @classmethod
    def from_env(cls) -> Hub:
        endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT
        return cls(endpoint, os.environ.get("HF_TOKEN") or None)

    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token or False)

    def fetch(self, ref: CheckpointRef) -> LockEntry | AdapterEntry:
        """One lock entry, read from the Hub."""
        if ref.kind == ADAPTER:
            return self.fetch_adapter(ref)
        api = self.api()
        info = self._call(
            ref,
            api.model_info,
            ref.hf_id,
            revision=ref.revision,
            expand=["sha", "safetensors"],
            timeout=TIMEOUT_S,
        )
        sha = info.sha or ref.revision
        config = self._json(ref, "config.json", sha)
        if config is None:
            raise HubError(f"{ref.where}: {ref.hf_id} has no config.json; vLLM cannot load it")
        preprocessor = None
        if config.get("model_type") in QWEN_VL_TYPES:
            processor = self._json(ref, "preprocessor_config.json", sha) or {}
            preprocessor = {"size": processor["size"]} if "size" in processor else None
        # None for a checkpoint without safetensors (vLLM 0.12 also loads *.bin): the fit
        # then sizes its weights from config.json's shapes.
        parameters = dict(info.safetensors.parameters) if info.safetensors else None
        return LockEntry(
            hf_id=ref.hf_id,
            revision=ref.revision,
            sha=sha,
            source=self.endpoint,
            config=config,
            parameters=parameters,
            preprocessor=preprocessor,
        )

    def fetch_adapter(self, ref: CheckpointRef) -> AdapterEntry:
        """A LoRA adapter's adapter_config.json, at the commit its revision names now."""
        info = self._call(
            ref,
            self.api().model_info,
            ref.hf_id,
            revision=ref.revision,
            expand=["sha"],
            timeout=TIMEOUT_S,
        )
        sha = info.sha or ref.revision
        config = self._json(ref, "adapter_config.json", sha)
        if not isinstance(config, dict):
            raise HubError(
                f"{ref.where}: {ref.hf_id} has no adapter_config.json, so it is not a PEFT "
                "LoRA adapter vLLM can load"
            )
        return AdapterEntry(ref.hf_id, ref.revision, sha, self.endpoint, config)

    def _json(self, ref: CheckpointRef, filename: str, revision: str | None) -> dict | None:
        """A JSON file of the repo, or None when the repo has no such file."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(ref.hf_id, filename, revision=revision, endpoint=self.endpoint)

        def get() -> Any:
            headers = build_hf_headers(token=self.token or False)
            response = get_session().get(
                url, headers=headers, timeout=TIMEOUT_S, follow_redirects=True
            )
            hf_raise_for_status(response)
            return response.json()

        try:
            return self._call(ref, get)
        except _Missing:
            return None

    def _call(self, ref: CheckpointRef, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Hub request, turning huggingface_hub's errors into messages."""
        import httpx
        from huggingface_hub import errors

        try:
            return fn(*args, **kwargs)
        except errors.GatedRepoError:
            raise HubError(
                f"{ref.where}: {ref.hf_id} is gated: accept its licence on "
                f"https://huggingface.co/{ref.hf_id} and set HF_TOKEN to a read token "
                "of that account, then run `make lock` again"
            ) from None
        except errors.RevisionNotFoundError:
            raise HubError(
                f"{ref.where}: {ref.hf_id} has no revision {ref.revision!r}; "
                "use a commit, branch or tag the repository has"
            ) from None
        except errors.EntryNotFoundError:
            raise _Missing from None
        except errors.RepositoryNotFoundError:
            raise HubError(self.not_found(ref)) from None
        except errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise HubError(f"{ref.where}: the Hub answered {status} for {ref.hf_id}") from None
        except (httpx.TransportError, OSError) as exc:
            raise HubUnreachable(f"cannot reach {self.endpoint}: {_reason(exc)}") from None
        except ValueError as exc:  # a body that is not JSON
            raise HubError(f"{ref.where}: unreadable answer for {ref.hf_id}: {exc}") from None

    def not_found(self, ref: CheckpointRef) -> str:
        """A 404, with the nearest ids the Hub's search finds."""
        text = f"{ref.where}: no model {ref.hf_id!r} on the Hub (or it is private)"
        try:
            near = self.nearest(ref.hf_id)
        except Exception:  # the suggestion is a courtesy; the 404 is the message
            near = []
        return text + (f"; did you mean {', '.join(near)}?" if near else "")

    def nearest(self, hf_id: str, count: int = 3) -> list[str]:
        """Ids close to a mistyped one: search by the name and shorter forms of it."""
        author, _, name = hf_id.partition("/")
        terms = [name]
        if "-" in name:
            terms.append(name.rsplit("-", 1)[0])
        found: set[str] = set()
        api = self.api()
        for term in terms:
            found |= {m.id for m in api.list_models(search=term, limit=SEARCH_LIMIT)}
            if found:
                break
        ranked = sorted(
            found,
            key=lambda other: -difflib.SequenceMatcher(None, hf_id.lower(), other.lower()).ratio(),
        )
        return ranked[:count]


class _Missing(Exception):
    """The repo exists but lacks the file asked for."""


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
