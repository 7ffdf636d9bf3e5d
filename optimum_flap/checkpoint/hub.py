"""Upload a pruned checkpoint to the Hugging Face Hub, with a model card."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import create_repo, upload_folder
from torch import nn

from .card import build_model_card
from .save import _name_or_path, save_pruned_model


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    tokenizer: Any = None,
    *,
    commit_message: str = "Upload pruned model (optimum-flap)",
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str = "5GB",
    checkpoint_format: str = "auto",
    base_model: str | None = None,
) -> Any:
    """Save `model` (and `tokenizer`) exactly as `save_pruned_model` does, then upload the folder.

    The README.md is a model card naming the base model, the recipe, the achieved ratio, the
    parameter counts and how to load the checkpoint. Returns huggingface_hub's `CommitInfo`.
    """
    create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    base_model = base_model or _name_or_path(model)
    with tempfile.TemporaryDirectory(prefix="optimum-flap-push-") as tmp:
        folder = Path(tmp) / "checkpoint"
        plan = save_pruned_model(
            model,
            folder,
            tokenizer,
            max_shard_size=max_shard_size,
            checkpoint_format=checkpoint_format,
            model_card=False,
        )
        card = build_model_card(model, plan=plan, base_model=base_model, repo_id=repo_id)
        card.save(folder / "README.md")
        return upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=commit_message,
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )
