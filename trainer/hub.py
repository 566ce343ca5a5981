"""Push a run's ``final/`` (the model and its card) to the Hugging Face Hub when the run ends.

The token comes from the environment (``HF_TOKEN``) or a saved ``hf auth login``; ``hub.repo_id``
without one fails when the config is loaded, not after training. What is uploaded is exactly the
``final/`` folder, checked first by :func:`check_upload`. A push that fails (network, permissions)
costs one warning: the model stays in the run folder, with the command that pushes it later.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub  # lazy: its API and HTTP stack load on first use

from trainer.errors import CodetuneError

REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class HubConfig:
    repo_id: str | None = None  # namespace/name: push final/ there when the run ends; None: keep it local
    private: bool = True  # a model tuned on your code is created private unless you say otherwise

    def __post_init__(self) -> None:
        if self.repo_id is None:
            return
        if not REPO_ID.fullmatch(self.repo_id):
            raise CodetuneError(f"hub.repo_id: {self.repo_id!r} is not namespace/name")
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise CodetuneError("hub.repo_id: HF_HUB_OFFLINE is set, so nothing can be pushed; unset it or drop hub.repo_id")
        if not huggingface_hub.get_token():
            raise CodetuneError("hub.repo_id: no Hugging Face token; set HF_TOKEN or run `hf auth login`")


def check_upload(folder: Path) -> list[str]:
    """The files an upload of ``folder`` sends, after checking it is a complete model with its own card.

    Raises:
        CodetuneError: a file a loadable sentence-transformers model needs is missing, or the card
            is not codetune's (its metadata would describe another model).
    """
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    names = {Path(f).name for f in files}  # a Router model keeps its modules' files in subfolders
    missing = [name for name in ("modules.json", "README.md") if name not in files]
    missing += [] if "config.json" in names else ["config.json"]
    missing += [] if names & set(WEIGHTS) else [" or ".join(WEIGHTS)]
    if missing:
        raise CodetuneError(f"hub upload {folder}: missing {', '.join(missing)}")
    meta = huggingface_hub.metadata_load(folder / "README.md") or {}
    if "codetune" not in meta.get("tags", []):
        raise CodetuneError(f"hub upload {folder}: README.md is not this run's model card")
    return files


def push(folder: Path, cfg: HubConfig, message: str) -> str | None:
    """Upload ``folder`` to ``cfg.repo_id`` (created if needed); returns the commit URL, or None after a warning."""
    check_upload(folder)
    api = huggingface_hub.HfApi()  # the token: HF_TOKEN or the saved login, as HubConfig checked
    try:
        api.create_repo(cfg.repo_id, private=cfg.private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=cfg.repo_id, folder_path=str(folder), repo_type="model", commit_message=message)
    except Exception as err:  # noqa: BLE001 -- the run is done and saved; a failed push must not undo that
        reason = " ".join(str(err).split())[:200]
        print(f"warning: pushing {folder} to {cfg.repo_id} failed ({type(err).__name__}: {reason}); the model is "
              f"saved: push it with `hf upload {cfg.repo_id} {folder} .`", file=sys.stderr)
        return None
    url = getattr(commit, "commit_url", str(commit))
    print(f"pushed {folder} to https://huggingface.co/{cfg.repo_id} ({url})")
    return url
