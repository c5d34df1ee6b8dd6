"""Inside the GPU container: fetch the pool's LoRA adapters from the Hugging Face Hub before
vLLM starts.

vLLM 0.12 downloads an adapter named by repo id itself, but only at the repo's default
branch (vllm/lora/utils.py get_adapter_absolute_path calls snapshot_download without a
revision), and a failed download surfaces only as "No adapter found". So each adapter is
fetched here, at its pinned revision, into the folder on the Hugging Face cache Volume that
the rendered `--lora-modules` names (mvgen/plan.py Adapter.local_dir); a later start finds
it there and only checks it is current. A failure stops the start with its reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("mvgen.vllm")


class AdapterDownloadError(RuntimeError):
    """An adapter could not be fetched; the message says which and why (never a token)."""


def download_adapters(adapters: Iterable[Mapping[str, Any]], token: str | None) -> None:
    """Fetch every adapter with a `download` spec ({"repo_id", "revision", "local_dir"},
    from the MODELS literal); adapters on the Volume have none."""
    for adapter in adapters:
        spec = adapter.get("download")
        if spec:
            _download(adapter["name"], spec, token)


def _download(name: str, spec: Mapping[str, Any], token: str | None) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = spec["repo_id"], spec.get("revision")
    what = f"LoRA adapter {name!r} ({repo}{'@' + revision if revision else ''})"
    log.info("fetching %s into %s", what, spec["local_dir"])
    try:
        snapshot_download(
            repo_id=repo,
            revision=revision,
            local_dir=spec["local_dir"],
            token=token or None,
            endpoint=os.environ.get("HF_ENDPOINT") or None,  # a mirror, as vLLM would use
        )
    except GatedRepoError:
        raise AdapterDownloadError(
            f"{what} is gated: accept its terms on the Hub with the account whose token is in "
            "the Hugging Face secret"
        ) from None
    except RevisionNotFoundError:
        raise AdapterDownloadError(f"{what}: the repo has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise AdapterDownloadError(
            f"{what}: no such repo on the Hub, or it is private and the token cannot read it"
        ) from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise AdapterDownloadError(
            f"could not download {what}: {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"
