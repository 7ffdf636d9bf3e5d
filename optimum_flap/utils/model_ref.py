"""Decide at once whether a model reference is a local checkpoint or a Hub id.

transformers treats any string that is not an existing directory as a Hub id and retries the network
for about a minute before failing, so a mistyped local path (``out/typo``) looks like a hang. The rule,
in one place for the CLI and `FlapPruner.from_pretrained`:

* an existing directory is a local checkpoint and must hold a ``config.json``;
* anything else is a Hub id only if it has the Hub's form (``name`` or ``org/name``) and does not
  start inside an existing local directory (``out/typo`` when ``out/`` exists is a local path);
* offline (``HF_HUB_OFFLINE=1``), a Hub id must already be in the local Hub cache.

Everything else fails immediately with `ModelNotFoundError`, naming the reference.
"""

from __future__ import annotations

import os

#: the file every transformers checkpoint directory has
CONFIG_FILE = "config.json"


class ModelNotFoundError(FileNotFoundError):
    """The model reference is neither a local checkpoint directory nor a usable Hub id."""


def resolve_model_reference(name_or_path: str | os.PathLike) -> str:
    """Return the local directory or Hub id that `name_or_path` names, or raise `ModelNotFoundError`."""
    reference = os.fspath(name_or_path)
    local = os.path.expanduser(reference)
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, CONFIG_FILE)):
            raise ModelNotFoundError(f"{reference} has no {CONFIG_FILE}: not a model checkpoint directory")
        return local
    if os.path.exists(local):
        raise ModelNotFoundError(f"{reference} is a file, not a model checkpoint directory")
    if not _is_hub_id(reference):
        raise ModelNotFoundError(f"model directory not found: {reference} (and it is not a Hub id 'org/name')")
    if "/" in reference and os.path.isdir(reference.split("/", 1)[0]):
        raise ModelNotFoundError(f"model directory not found: {reference}")
    if _hub_offline() and not _in_hub_cache(reference):
        raise ModelNotFoundError(
            f"{reference} is not a local directory and not in the Hub cache (HF_HUB_OFFLINE is set)"
        )
    return reference


def _is_hub_id(reference: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if reference.startswith(("~", ".")) or os.path.isabs(reference):
        return False
    try:
        validate_repo_id(reference)
    except HFValidationError:
        return False
    return True


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, CONFIG_FILE), str)
