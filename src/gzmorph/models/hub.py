"""Model references on the Hugging Face Hub: ``hf:ORG/NAME[@REVISION]``, and their download.

Uploads: :func:`gzmorph.sharing.hub.push`.

Downloads go through ``huggingface_hub.snapshot_download``, so its cache and its
offline mode apply: ``HF_HUB_CACHE`` (or ``HF_HOME``/hub) and ``HF_HUB_OFFLINE=1``,
read when a model is resolved (not only when ``huggingface_hub`` was imported).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from gzmorph.errors import ConfigError, RunError
from gzmorph.models.extra import require

__all__ = ["HF_PREFIX", "HubRef", "parse_ref", "download"]

HF_PREFIX = "hf:"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class HubRef:
    """A model repository on the Hub and an optional revision (branch, tag or commit)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_ref(text: str | os.PathLike) -> HubRef | None:
    """The :class:`HubRef` of ``hf:ORG/NAME[@REVISION]``; ``None`` for anything else (a path)."""
    text = str(text)
    if not text.startswith(HF_PREFIX):
        return None
    repo, _, revision = text[len(HF_PREFIX):].partition("@")
    if not _REPO.match(repo) or (_ and not revision):
        raise ConfigError(f"{text!r}: a Hub model is hf:ORG/NAME or hf:ORG/NAME@REVISION")
    return HubRef(repo, revision or None)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "on", "yes", "true")


def _cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default


def download(ref: HubRef) -> Path:
    """The local folder of ``ref`` (downloaded into the Hub cache, or found there when offline)."""
    hub = require("huggingface_hub", f"loading {ref}")
    offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or bool(hub.constants.HF_HUB_OFFLINE)
    try:
        path = hub.snapshot_download(repo_id=ref.repo_id, revision=ref.revision, cache_dir=_cache_dir(),
                                     local_files_only=offline)
    except Exception as exc:  # the hub's errors are many (HTTP, cache, auth): all mean "not available"
        where = f"in the offline cache {_cache_dir() or hub.constants.HF_HUB_CACHE}" if offline else "on the Hub"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"{ref}: not found {where} ({type(exc).__name__}: {first})") from None
    return Path(path)
