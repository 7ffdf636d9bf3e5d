"""The output directory of a save: which directories may be replaced, and a swap that survives a kill.

Overwrite rule. `overwrite=True` replaces a directory only when nothing but a checkpoint would be
lost: the directory is empty, or it holds a `config.json`, at least one weights file, and only files
whose names a checkpoint writer produces (weights, configs, tokenizer files, the model card, the
model code shipped from `optimum_flap.models`; see `CHECKPOINT_FILE_PATTERNS`). The current
directory and its parents are never written to. Anything else is refused with the name of one file
that would have been lost.

Inputs. An output directory (a checkpoint, an offload folder, Trainer checkpoints) never lies inside,
equals or contains a directory the run reads (`check_apart`): replacing it would delete the input
before, or while, it is read. An output file (`check_output_file`) follows the overwrite rule of
directories: `overwrite=True` replaces only an earlier file of the same kind (recognised by its
leading bytes), never a directory, a file of an input or any other file.

Swap. A new checkpoint is written to a staging directory next to the target, so replacing an old
one takes two renames: target -> backup, staging -> target. A journal file
`.<name>.swap.json` is written next to the target before the first rename and removed after the
backup is deleted. If the process dies in between, the next `check_output_dir` or `recover_swap`
on that target (run by every save and by `load_pruned_model`) finishes the swap when the staged
checkpoint is still there, or puts the old one back when it is not: the target is never left
missing and neither checkpoint is lost.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import uuid
from pathlib import Path

#: names (shell patterns) of the files a checkpoint directory may hold and `overwrite=True` may delete
CHECKPOINT_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "flap_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model*.bin.index.json",
    "tokenizer*.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
    ".gitattributes",
    # the model code a remote-code checkpoint ships: the modules of optimum_flap.models
    *sorted(p.name for p in (Path(__file__).resolve().parent.parent / "models").glob("*.py") if p.stem != "__init__"),
)
#: a directory is a checkpoint only if it holds config.json and one of these
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


class OutputDirectoryError(FileExistsError):
    """The output directory cannot be written or replaced without losing something."""


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The absolute target directory for a save, after finishing any interrupted swap into it.

    Raises `OutputDirectoryError` when `path` is a file, the current directory or one of its
    parents (a swap would move it away), a non-empty directory while `overwrite` is False, or a
    directory holding a file that is not part of a checkpoint.
    """
    target = Path(path).expanduser().absolute()
    recover_swap(target)
    if target.exists() and not target.is_dir():
        raise OutputDirectoryError(f"{target} exists and is not a directory; choose a directory path.")
    _check_parent_writable(target)
    if not target.is_dir():
        return target
    cwd = Path.cwd().resolve()
    if target.resolve() == cwd or target.resolve() in cwd.parents:  # moved aside by the swap, even if empty
        raise OutputDirectoryError(
            f"Refusing to write to {target}: it is the current directory or contains it. Save to a new "
            "sub-directory instead, e.g. ./pruned-model."
        )
    if not any(target.iterdir()):
        return target
    if not overwrite:
        raise OutputDirectoryError(
            f"{target} is not empty; refusing to overwrite it. Pass overwrite=True to replace the checkpoint "
            "it holds, or choose another directory."
        )
    reason = _not_a_checkpoint(target)
    if reason is not None:
        raise OutputDirectoryError(
            f"Refusing to overwrite {target}: {reason}. overwrite=True only replaces an empty directory or a "
            "checkpoint (config.json, weights, tokenizer and card files); move that file or choose another directory."
        )
    return target


def check_apart(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], what: str = "output") -> Path:
    """The absolute `output`, after refusing one that equals, lies inside or contains an input directory.

    `inputs` maps how the user named each input (e.g. "--model") to its path; None and Hub ids (paths
    that do not exist locally) are skipped. Raises `OutputDirectoryError` naming both paths.
    """
    target = Path(output).expanduser().absolute()
    resolved = target.resolve()
    for name, source in inputs.items():
        if source is None or not os.path.exists(source):
            continue
        source_path = Path(source).expanduser().resolve()
        if resolved == source_path or source_path in resolved.parents or resolved in source_path.parents:
            relation = ("is" if resolved == source_path else "is inside" if source_path in resolved.parents
                        else "contains")
            raise OutputDirectoryError(
                f"Refusing {what} {target}: it {relation} the {name} directory {source_path}, which this run reads "
                f"and would overwrite. Choose a {what} outside {source_path} (e.g. a sibling directory)."
            )
    return target


def check_output_file(path: str | os.PathLike, overwrite: bool, magic: bytes, kind: str,
                      inputs: dict[str, str | os.PathLike | None] | None = None) -> Path:
    """The absolute target file of an export, after the output rule of files (module docstring).

    A new file may go anywhere, an input directory included (it replaces nothing). An existing file is
    replaced only with `overwrite` and only when it starts with `magic` (an earlier `kind` file); one of
    an input directory (`inputs`, as in `check_apart`), a directory or any other file is refused with
    `OutputDirectoryError`.
    """
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        example = target / f"model.{kind.lower()}"
        raise OutputDirectoryError(f"{kind} output {target} is a directory; give a file path, e.g. {example}.")
    if not target.exists():
        return target
    if not overwrite:
        raise OutputDirectoryError(f"{kind} output {target} exists; pass overwrite=True (--overwrite) to replace it.")
    with open(target, "rb") as f:
        head = f.read(len(magic))
    if head != magic:
        check_apart(target, inputs or {}, what=f"{kind} output")  # a file of the model being read: say so
        raise OutputDirectoryError(
            f"Refusing to overwrite {target}: it is not a {kind} file (it does not start with {magic!r}), so it was "
            f"not written by an earlier export. overwrite replaces only a {kind} file; choose another path."
        )
    return target


def _check_parent_writable(target: Path) -> None:
    """The save stages next to `target` and renames into it: refuse now a parent that cannot take files."""
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirectoryError(f"Cannot create {target}: {parent} is a file, not a directory; choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirectoryError(f"Cannot write to {target}: {parent} is read-only for this user; choose a "
                                   "writable directory.")


def _not_a_checkpoint(directory: Path) -> str | None:
    """Why replacing `directory` could lose something that is not a checkpoint (naming a file), or None."""
    entries = sorted(directory.iterdir())
    for entry in entries:
        if not entry.is_file() or entry.is_symlink() or not _matches(entry.name, CHECKPOINT_FILE_PATTERNS):
            return f"it holds {entry.name!r}, which is not part of a checkpoint and would be deleted"
    names = [entry.name for entry in entries]
    if "config.json" not in names:
        return f"it holds no config.json, so it is not a checkpoint, and {names[0]!r} would be deleted"
    if not any(_matches(name, WEIGHT_FILE_PATTERNS) for name in names):
        return "it holds a config.json but no weights file, so it is not a checkpoint ('config.json' would be deleted)"
    return None


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def journal_path(target: Path) -> Path:
    """Where the swap journal of `target` lives: a hidden file next to it."""
    return target.with_name(f".{target.name}.swap.json")


def replace_directory(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the complete directory `staging` to `target`, replacing `target` if it exists.

    Both must be on the same filesystem (the staging directory is created next to the target).
    Replacing goes through a journal so a kill at any point is recovered by `recover_swap`.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    backup = target.with_name(f".{target.name}.replaced-{uuid.uuid4().hex[:8]}")
    journal = journal_path(target)
    _write_journal(journal, {"staging": staging.name, "backup": backup.name})
    try:
        os.replace(target, backup)
    except BaseException:
        journal.unlink(missing_ok=True)
        raise
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)  # a failure (not a kill): put the old checkpoint back at once
        journal.unlink(missing_ok=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    journal.unlink(missing_ok=True)


def _write_journal(journal: Path, entry: dict[str, str]) -> None:
    """Write and flush the journal before any rename; a half-written one means no rename happened."""
    try:
        with open(journal, "w", encoding="utf-8") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        journal.unlink(missing_ok=True)
        raise


def recover_swap(target: str | os.PathLike) -> str | None:
    """Finish or roll back a swap into `target` that a killed process left half done.

    Returns `"finished"` (the staged checkpoint is now at `target`), `"rolled back"` (the old one is
    back) or None when there was nothing to recover.
    """
    target = Path(target).expanduser().absolute()
    journal = journal_path(target)
    if not journal.is_file():
        return None
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
        staging, backup = target.with_name(entry["staging"]), target.with_name(entry["backup"])
    except (ValueError, KeyError, TypeError):  # killed while writing the journal: no rename happened yet
        journal.unlink()
        return None
    outcome = None
    if staging.is_dir():
        if target.exists():
            if backup.exists():  # cannot happen through replace_directory; keep both rather than guess
                raise OutputDirectoryError(
                    f"Cannot recover the interrupted save into {target}: {backup.name} and {staging.name} both "
                    f"exist next to it. Keep the one you want as {target.name} and delete {journal.name}."
                )
            os.replace(target, backup)
        os.replace(staging, target)
        outcome = "finished"
    elif target.exists():  # killed after the second rename, while deleting the backup
        outcome = "finished"
    elif backup.is_dir():
        os.replace(backup, target)
        outcome = "rolled back"
    shutil.rmtree(backup, ignore_errors=True)
    journal.unlink()
    return outcome
