"""Offline lm-eval task definitions for the seven zero-shot tasks of the pruning papers.

The YAML files here mirror lm-eval's published tasks (prompt, choices, target, metrics) but read
the local files under ``<data_dir>/zeroshot``. Their ``data_files`` hold the placeholder
``${OPTIMUM_FLAP_ZEROSHOT_DIR}`` because the data location is only known at run time;
:func:`render_tasks` writes copies with the placeholder filled into a directory that lm-eval's
``TaskManager(include_path=...)`` can index. Task names carry a ``flap_`` prefix so they can never
be confused with (or shadowed by) lm-eval's Hub-backed tasks of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

#: the placeholder in the YAML files replaced by the absolute zero-shot data directory
PLACEHOLDER = "${OPTIMUM_FLAP_ZEROSHOT_DIR}"
#: directory holding the YAML templates
TASKS_DIR = Path(__file__).resolve().parent
#: lm-eval tag grouping the seven tasks
TAG = "flap_zeroshot"

#: paper name -> local lm-eval task name, in the order the papers' tables use
STANDARD_TASKS: dict[str, str] = {
    "boolq": "flap_boolq",
    "piqa": "flap_piqa",
    "hellaswag": "flap_hellaswag",
    "winogrande": "flap_winogrande",
    "arc_easy": "flap_arc_easy",
    "arc_challenge": "flap_arc_challenge",
    "openbookqa": "flap_openbookqa",
}

#: files each task reads, relative to the zero-shot data directory (checked before lm-eval runs)
TASK_FILES: dict[str, tuple[str, ...]] = {
    "boolq": ("boolq/dev.jsonl",),
    "piqa": ("piqa/valid.jsonl", "piqa/valid-labels.lst"),
    "hellaswag": ("hellaswag/hellaswag_val.from_llamacpp.jsonl",),
    "winogrande": ("winogrande/dev.jsonl",),
    "arc_easy": ("arc_easy/arc_easy.llmfoundry.jsonl",),
    "arc_challenge": ("arc_challenge/arc_challenge.llmfoundry.jsonl",),
    "openbookqa": ("openbookqa/openbook_qa.llmfoundry.jsonl",),
}


def canonical_name(task: str) -> str:
    """Map ``"piqa"``, ``"flap_piqa"`` or ``"arc-e"`` style names to the paper name (``"piqa"``)."""
    aliases = {"arc_e": "arc_easy", "arc-e": "arc_easy", "arc_c": "arc_challenge", "arc-c": "arc_challenge",
               "obqa": "openbookqa", "openbook_qa": "openbookqa"}
    name = task.strip().lower()
    name = name.removeprefix("flap_")
    name = aliases.get(name, name)
    if name not in STANDARD_TASKS:
        raise KeyError(f"unknown zero-shot task {task!r}; available: {', '.join(STANDARD_TASKS)}")
    return name


def missing_files(zeroshot_dir: str | os.PathLike[str], tasks: list[str]) -> list[Path]:
    """Files the given tasks need that are absent under ``zeroshot_dir``."""
    root = Path(zeroshot_dir)
    return [root / f for t in tasks for f in TASK_FILES[canonical_name(t)] if not (root / f).is_file()]


class _FunctionRef(str):
    """The dotted name behind a ``!function`` tag, kept as a tag when the YAML is written back."""


class _TaskLoader(yaml.SafeLoader):
    """Safe loader that reads lm-eval's ``!function`` tag as a :class:`_FunctionRef`, nothing else."""


class _TaskDumper(yaml.SafeDumper):
    """Safe dumper that writes a :class:`_FunctionRef` back as ``!function``; every string is quoted as needed."""


_TaskLoader.add_constructor("!function", lambda loader, node: _FunctionRef(loader.construct_scalar(node)))
_TaskDumper.add_representer(_FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def _fill_placeholder(value: Any, root: str) -> Any:
    """Replace the placeholder in every plain string of a loaded task (tags and keys stay as they are)."""
    if isinstance(value, dict):
        return {key: _fill_placeholder(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_placeholder(item, root) for item in value]
    if isinstance(value, str) and not isinstance(value, _FunctionRef):
        return value.replace(PLACEHOLDER, root)
    return value


def render_tasks(zeroshot_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write the task YAML files into ``out_dir`` with the data directory filled in.

    The templates are parsed and written back with a YAML library, so the directory name is always
    one quoted string value: quotes, newlines or ``!function`` in it cannot add keys or tags.
    Returns ``out_dir``, ready for ``lm_eval.tasks.TaskManager(include_path=out_dir)``.
    """
    root = str(Path(zeroshot_dir).expanduser().resolve())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted(TASKS_DIR.glob("*.yaml")):
        task = yaml.load(src.read_text(encoding="utf-8"), Loader=_TaskLoader)  # noqa: S506 - safe loader subclass
        text = yaml.dump(_fill_placeholder(task, root), Dumper=_TaskDumper, sort_keys=False, allow_unicode=True)
        (out / src.name).write_text(text, encoding="utf-8")
    return out
