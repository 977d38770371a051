"""Upload staged folders as they are: ``create_repo(exist_ok=True)`` then ``upload_folder`` per target.

The token comes from the caller (an environment variable named in the config); it is passed to ``HfApi`` and
never logged or written anywhere.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from negsynth_hf.publish.staging import UploadTarget

logger = logging.getLogger(__name__)


@dataclass
class UploadResult:
    repo_id: str
    repo_type: str
    url: str
    commit_url: str | None


def hub_token(token_env: str = "HF_TOKEN") -> str | None:
    """The token from ``$token_env`` (None: huggingface_hub falls back to the saved login)."""
    return os.environ.get(token_env) or None


def upload_targets(
    targets: list[UploadTarget],
    *,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload with negsynth_hf",
    api=None,
) -> list[UploadResult]:
    """Create each repo (idempotent) and upload its staged folder verbatim."""
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    results = []
    for target in targets:
        folder = Path(target.folder)
        if not (folder / "README.md").is_file():
            raise FileNotFoundError(f"{folder} has no README.md: stage it first (negsynth publish --dry_run).")
        repo = api.create_repo(target.repo_id, exist_ok=True, private=private, repo_type=target.repo_type)
        logger.info("uploading %s to %s (%s)", folder, target.repo_id, target.repo_type)
        commit = api.upload_folder(
            repo_id=target.repo_id,
            folder_path=str(folder),
            repo_type=target.repo_type,
            commit_message=commit_message,
        )
        results.append(
            UploadResult(
                repo_id=target.repo_id,
                repo_type=target.repo_type,
                url=str(getattr(repo, "url", repo)),
                commit_url=str(getattr(commit, "commit_url", commit)) if commit is not None else None,
            )
        )
    return results
