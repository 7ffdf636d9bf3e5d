"""Zero-shot accuracy on the seven commonsense tasks of the pruning papers, offline, via lm-eval.

The papers (FLAP, Wanda, LLM-Pruner, ...) report lm-eval's BoolQ, PIQA, HellaSwag, WinoGrande,
ARC-e, ARC-c and OpenBookQA. Re-implementing the scoring would make our numbers incomparable, so
this module only changes *where the documents come from*: the task definitions in
:mod:`optimum_flap.evaluation.tasks` reproduce lm-eval's prompts, choices, targets and metrics on
the local files, and lm-eval's own ``HFLM`` + ``simple_evaluate`` do the scoring on the model that
is already in memory (a pruned model need not be saved and reloaded to be evaluated).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..data_files import zeroshot_dir
from .tasks import STANDARD_TASKS, canonical_name, missing_files, render_tasks

#: the seven tasks of the papers, in table order
DEFAULT_TASKS: tuple[str, ...] = tuple(STANDARD_TASKS)


@dataclass
class ZeroShotResult:
    """Per-task metrics and their average, with the settings that produced them."""

    #: paper task name -> {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "num_docs", "total_docs"}
    tasks: dict[str, dict[str, float]]
    #: mean of ``acc`` over the tasks (the papers' "Average" column)
    average: float
    #: mean of ``acc_norm`` where a task has it, else ``acc`` (some papers average this mix instead)
    average_acc_norm: float
    #: documents per task cap given to lm-eval (``None`` = full test sets)
    limit: int | float | None
    num_fewshot: int = 0
    #: lm-eval version that scored the tasks
    lm_eval_version: str = ""
    #: lm-eval's full results dict (configs, versions, n-samples), for provenance
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self, include_raw: bool = False) -> dict[str, Any]:
        """Plain dict, for JSON reports (``raw`` is large and left out unless asked for)."""
        out = asdict(self)
        if not include_raw:
            out.pop("raw")
        return out


def _import_lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "zero_shot() needs lm-eval: pip install 'optimum-flap[eval]' (or 'lm-eval>=0.4.8')"
        ) from exc
    return lm_eval, HFLM, TaskManager


def _metric(values: dict[str, Any], name: str) -> float | None:
    """lm-eval keys metrics as ``"<metric>,<filter>"``; return the ``none``-filter value."""
    value = values.get(f"{name},none", values.get(name))
    if value is None or value == "N/A":
        return None
    return float(value)


def _check_files(names: list[str], data_dir: str | os.PathLike[str] | None) -> str:
    root = zeroshot_dir(data_dir)
    absent = missing_files(root, names)
    if absent:
        raise FileNotFoundError(
            "zero-shot data files not found: " + ", ".join(map(str, absent))
            + " (set OPTIMUM_FLAP_DATA_DIR or pass data_dir=<dir containing zeroshot/>)"
        )
    return str(root)


def load_tasks(
    tasks: Sequence[str] = DEFAULT_TASKS, data_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Build the local lm-eval ``Task`` objects without scoring anything.

    Useful to inspect what will be scored (``task.eval_docs``, ``task.doc_to_text(doc)``,
    ``task.doc_to_choice(doc)``, ``task.doc_to_target(doc)``) and to test the task definitions
    against lm-eval's. Returns ``{paper task name: Task}``.
    """
    _, _, TaskManager = _import_lm_eval()
    names = [canonical_name(t) for t in tasks]
    root = _check_files(names, data_dir)
    with tempfile.TemporaryDirectory(prefix="optimum_flap_tasks_") as tmp:
        manager = TaskManager(include_path=str(render_tasks(root, tmp)), include_defaults=False)
        loaded = manager.load([STANDARD_TASKS[n] for n in names])["tasks"]
    # lm-eval may key tasks by name or by a namespaced name; match on the task's own name
    by_name = {getattr(t, "config", None) and t.config.task or key: t for key, t in loaded.items()}
    return {n: by_name[STANDARD_TASKS[n]] for n in names}


def zero_shot(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[str] = DEFAULT_TASKS,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 8,
    num_fewshot: int = 0,
    max_length: int | None = None,
    bootstrap_iters: int = 1000,
    **evaluate_kwargs: Any,
) -> ZeroShotResult:
    """Score ``model`` on local copies of lm-eval's zero-shot tasks.

    Args:
        model: an in-memory causal LM (e.g. a freshly pruned one); lm-eval's ``HFLM`` wraps it as is,
            on whatever device it already sits.
        tokenizer: its tokenizer.
        tasks: paper names (``"boolq"``, ``"piqa"``, ``"hellaswag"``, ``"winogrande"``,
            ``"arc_easy"``, ``"arc_challenge"``, ``"openbookqa"``) or their ``flap_`` task names.
        data_dir: the data root (containing ``zeroshot/``) or the ``zeroshot`` directory itself;
            default ``$OPTIMUM_FLAP_DATA_DIR`` or ``../shared/data``.
        limit: documents per task (the first ones, in file order), for quick checks; ``None`` = all.
        batch_size: ``HFLM`` batch size (an int or ``"auto"``); changes speed, not scores.
        num_fewshot: few-shot examples; the papers use 0.
        max_length: context cap passed to ``HFLM`` (default: the model's own).
        bootstrap_iters: passed to lm-eval; any value > 0 turns on standard errors. acc and
            acc_norm are means, whose stderr lm-eval computes in closed form (no resampling), so
            the value itself costs nothing here; 0 drops the ``*_stderr`` entries.
        **evaluate_kwargs: passed on to ``lm_eval.simple_evaluate``.

    Returns:
        A :class:`ZeroShotResult`, keyed by paper task names.
    """
    lm_eval, HFLM, TaskManager = _import_lm_eval()
    names = [canonical_name(t) for t in tasks]
    if not names:
        raise ValueError("no tasks given")
    root = _check_files(names, data_dir)
    from ..checkpoint.finite import check_finite_model

    check_finite_model(model, "evaluate zero-shot accuracy")  # NaN logits would still rank answers

    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    try:
        with tempfile.TemporaryDirectory(prefix="optimum_flap_tasks_") as tmp:
            manager = TaskManager(include_path=str(render_tasks(root, tmp)), include_defaults=False)
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[STANDARD_TASKS[n] for n in names],
                task_manager=manager,
                num_fewshot=num_fewshot,
                limit=limit,
                bootstrap_iters=bootstrap_iters,
                log_samples=False,
                **evaluate_kwargs,
            )
    finally:
        model.train(was_training)
    if out is None:  # non-zero rank in a distributed run
        raise RuntimeError("lm-eval returned no results (non-main process?)")

    per_task: dict[str, dict[str, float]] = {}
    n_samples = out.get("n-samples", {})
    for name in names:
        values = out["results"][STANDARD_TASKS[name]]
        row: dict[str, float] = {}
        for metric in ("acc", "acc_norm"):
            value = _metric(values, metric)
            if value is not None:
                row[metric] = value
                stderr = _metric(values, f"{metric}_stderr")
                if stderr is not None:
                    row[f"{metric}_stderr"] = stderr
        counts = n_samples.get(STANDARD_TASKS[name], {})
        row["num_docs"] = int(counts.get("effective", 0))
        row["total_docs"] = int(counts.get("original", 0))
        per_task[name] = row

    accs = [r["acc"] for r in per_task.values()]
    norms = [r.get("acc_norm", r["acc"]) for r in per_task.values()]
    return ZeroShotResult(
        tasks=per_task,
        average=math.fsum(accs) / len(accs),
        average_acc_norm=math.fsum(norms) / len(norms),
        limit=limit,
        num_fewshot=num_fewshot,
        lm_eval_version=getattr(lm_eval, "__version__", ""),
        raw=out,
    )
