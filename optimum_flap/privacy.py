"""What a checkpoint may say about the machine it was made on: names and hashes, never local paths.

A checkpoint is meant to be published (`push_to_hub` uploads config.json and README.md as they are),
so the recipe and the model card record a local calibration file as its file name plus the SHA-256
of its content (enough to check that two runs used the same data) and a local base model as its
directory name.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import PurePath
from typing import Any

#: a recorded local calibration file: `<file name>@sha256:<hex digest, or "unknown" if it was gone>`
RECORDED_DATASET = re.compile(r"^(?P<name>[^/\\]+)@sha256:(?P<digest>[0-9a-f]{64}|unknown)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_recorded_dataset(dataset: Any) -> bool:
    """True for a dataset string written by `publishable_recipe` in place of a local file path."""
    return isinstance(dataset, str) and RECORDED_DATASET.match(dataset) is not None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publishable_dataset(dataset: Any) -> Any:
    """`dataset` with a local file path replaced by `<file name>@sha256:<digest>`; names are kept."""
    if not isinstance(dataset, str) or is_recorded_dataset(dataset):
        return dataset
    if os.path.isfile(dataset):
        return f"{PurePath(dataset).name}@sha256:{file_sha256(dataset)}"
    if "/" in dataset or "\\" in dataset or dataset.startswith("~"):
        return f"{PurePath(dataset.replace(chr(92), '/')).name}@sha256:unknown"
    return dataset  # a dataset name such as "wikitext2"


def publishable_recipe(recipe: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a recipe dict (`FlapConfig.to_dict()`) safe to publish: no local calibration path."""
    if recipe is None:
        return None
    out = dict(recipe)
    if "dataset" in out:
        out["dataset"] = publishable_dataset(out["dataset"])
    return out


def publishable_model_name(name_or_path: str | None) -> str | None:
    """A Hub id as is; a local model directory (or file) as its last path component."""
    if not name_or_path:
        return name_or_path
    if _HUB_ID.fullmatch(name_or_path) and not os.path.exists(name_or_path):
        return name_or_path
    return PurePath(os.path.normpath(os.path.expanduser(name_or_path))).name or name_or_path
