"""Uploading a model package to the Hugging Face Hub (references and downloads: :mod:`gzmorph.models.hub`)."""

from __future__ import annotations

from pathlib import Path

from gzmorph.models.extra import require
from gzmorph.models.hub import HubRef

__all__ = ["push"]


def push(package: str | Path, ref: HubRef, private: bool = False) -> str:
    """Upload a model package folder to ``ref`` (created when missing); returns the commit URL."""
    hub = require("huggingface_hub", f"pushing to {ref}")
    api = hub.HfApi()
    api.create_repo(repo_id=ref.repo_id, repo_type="model", exist_ok=True, private=private)
    info = api.upload_folder(repo_id=ref.repo_id, repo_type="model", folder_path=str(package),
                             revision=ref.revision, commit_message=f"gzmorph model package {Path(package).name}")
    return str(getattr(info, "commit_url", info))
