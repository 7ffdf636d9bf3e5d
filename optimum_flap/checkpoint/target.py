"""The one rule for output directories, checked before any long work starts.

A directory that will receive a checkpoint must be absent or empty, unless the caller says
`overwrite`. Pruning SmolLM2 takes minutes on a CPU; finding out afterwards that the result cannot be
saved wastes them, so the CLI, `FlapPruner.prune(save_directory=...)`, the example and the writer all
call `check_output_dir` first, and they all refuse the same directories with the same message.
"""

from __future__ import annotations

import os
from pathlib import Path


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Return `path` as an absolute `Path` if a checkpoint may be written there; raise otherwise.

    Raises:
        FileExistsError: `path` is a file, or a non-empty directory and `overwrite` is false.
    """
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"output directory {path} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output directory {path} is not empty; choose another directory, or pass overwrite=True "
            "(--overwrite on the command line) to replace its contents"
        )
    return target
