"""`RecoveryConfig`: the recovery recipe (LoRA or full fine-tuning, language-modelling loss or distillation),
validated at construction like `FlapConfig`."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..recipe import Recipe, is_int

if TYPE_CHECKING:
    from torch import nn

RANK_ALLOCATIONS = ("importance", "uniform")
OBJECTIVES = ("language-modeling", "distillation")
FINETUNING = ("lora", "full")
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _is_module(value: Any) -> bool:
    """A torch module; without torch imported nothing can be one (this module must not import torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool): inf and NaN learning rates train to a NaN model."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RecoveryConfig(Recipe):
    """Recipe for recovery fine-tuning of a pruned model: CFSP's importance-guided LoRA (or full fine-tuning),
    trained on next-token labels or distilled from the dense model.

    Args:
        dataset: training text, as `FlapConfig.dataset` (`"c4"`, `"wikitext2"`, a local file, texts or ids).
        num_samples: training sequences; None means `max_steps x batch_size x gradient_accumulation_steps x
            world size` (required when `max_steps` is None).
        seq_len: tokens per training sequence.
        seed: data sampling and training seed.
        max_steps: optimizer steps; None trains `num_train_epochs` over `num_samples` sequences.
        num_train_epochs: epochs when `max_steps` is None.
        learning_rate: peak AdamW learning rate.
        batch_size: sequences per device per step.
        gradient_accumulation_steps: micro-batches per optimizer step.
        warmup_steps: linear warm-up steps.
        rank: base LoRA rank r: every layer's rank under `"uniform"`, the mean budget under `"importance"`.
        alpha: LoRA alpha for the base rank; each layer gets alpha x r_l / r, so alpha / r_l is constant.
        dropout: LoRA dropout.
        rank_allocation: `"importance"` (per-layer ranks follow the coarse block importance, same total
            adapter parameters as uniform) or `"uniform"`.
        rank_temperature: temperature of the sigmoid that turns importances into rank weights; None uses
            the pruning run's `cfsp_temperature` (or the CFSP default).
        max_rank_factor: no layer's rank exceeds this multiple of `rank`.
        target_modules: projection names that get adapters (explicit module names are passed to PEFT).
        train_biases: also train the biases of the adapted projections (FLAP/CFSP compensation biases
            included; PEFT `bias="lora_only"`); False keeps them frozen.
        finetuning: `"lora"` (adapters, merged afterwards) or `"full"` (every parameter trains).
        objective: `"language-modeling"` (next-token cross-entropy) or `"distillation"` (KL divergence from the
            teacher's next-token distribution, see `optimum_flap.recovery.distillation`).
        teacher: the distillation teacher, normally the unpruned model: a checkpoint directory or an in-memory
            model. It must share the student's tokenizer (same vocabulary), else recovery refuses to start.
        distill_temperature: softmax temperature T of both distributions; the KL is scaled by T^2.
        distill_weight: loss = w x KL + (1 - w) x cross-entropy; 1 is pure distillation.
        distill_top_k: keep the teacher's k largest logits per token (renormalised over those k); None keeps the
            full distribution. Required with `teacher_logits_cache`.
        teacher_logits_cache: directory where the teacher's top-k logits of the training windows are computed
            once (safetensors shards, 8 bytes per token per k) and reused, so the teacher is not in memory while
            training; None runs the teacher in the same process at every step.
        eval_steps: evaluate perplexity on a held-out slice every this many optimizer steps (None: never);
            logged as `eval_perplexity` in the Trainer's log history.
        eval_dataset: the held-out text (`"wikitext2"` or a local file, needs a tokenizer) or token-id windows.
        eval_windows: held-out windows of `seq_len` tokens (the first ones of `eval_dataset`).
        output_dir: Trainer output directory (checkpoints, logs). None (the default) trains in a temporary
            directory removed afterwards, so nothing is left behind; intermediate checkpoints (`save_steps`)
            need an explicit directory.
        logging_steps, save_steps, save_total_limit: Trainer logging and checkpointing (save_steps None: no
            intermediate checkpoints).
        training_args: extra `transformers.TrainingArguments` keyword arguments (bf16, gradient_checkpointing,
            fsdp, use_cpu, report_to, ...); they override the values derived from this config.
    """

    def __init__(
        self,
        dataset: str | Sequence[str] | Sequence[Sequence[int]] = "c4",
        num_samples: int | None = None,
        seq_len: int = 128,
        seed: int = 0,
        max_steps: int | None = 100,
        num_train_epochs: float = 1.0,
        learning_rate: float = 2e-4,
        batch_size: int = 4,
        gradient_accumulation_steps: int = 1,
        warmup_steps: int = 0,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        rank_allocation: str = "importance",
        rank_temperature: float | None = None,
        max_rank_factor: float = 4.0,
        target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
        train_biases: bool = False,
        finetuning: str = "lora",
        objective: str = "language-modeling",
        teacher: str | os.PathLike | nn.Module | None = None,
        distill_temperature: float = 1.0,
        distill_weight: float = 1.0,
        distill_top_k: int | None = None,
        teacher_logits_cache: str | os.PathLike | None = None,
        eval_steps: int | None = None,
        eval_dataset: str | Sequence[Sequence[int]] = "wikitext2",
        eval_windows: int = 16,
        output_dir: str | None = None,
        logging_steps: int = 10,
        save_steps: int | None = None,
        save_total_limit: int | None = 2,
        training_args: dict[str, Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.num_samples = num_samples
        self.seq_len = seq_len
        self.seed = seed
        self.max_steps = max_steps
        self.num_train_epochs = num_train_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.warmup_steps = warmup_steps
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.rank_allocation = rank_allocation
        self.rank_temperature = rank_temperature
        self.max_rank_factor = max_rank_factor
        self.target_modules = list(target_modules) if not isinstance(target_modules, str) else target_modules
        self.train_biases = train_biases
        self.finetuning = finetuning
        self.objective = objective
        self.teacher = os.fspath(teacher) if isinstance(teacher, os.PathLike) else teacher
        self.distill_temperature = distill_temperature
        self.distill_weight = distill_weight
        self.distill_top_k = distill_top_k
        self.teacher_logits_cache = (os.fspath(teacher_logits_cache) if isinstance(teacher_logits_cache, os.PathLike)
                                     else teacher_logits_cache)
        self.eval_steps = eval_steps
        self.eval_dataset = eval_dataset
        self.eval_windows = eval_windows
        self.output_dir = output_dir
        self.logging_steps = logging_steps
        self.save_steps = save_steps
        self.save_total_limit = save_total_limit
        self.training_args = dict(training_args or {})
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first field whose value is not allowed."""
        self._validate_dataset()
        for name in ("seq_len", "batch_size", "gradient_accumulation_steps", "rank", "logging_steps", "eval_windows"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise self._fail(name, value, "a positive int")
        for name in ("num_samples", "max_steps", "save_steps", "save_total_limit", "eval_steps", "distill_top_k"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise self._fail(name, value, "None or a positive int")
        if self.max_steps is None and self.num_samples is None:
            raise self._fail("num_samples", None, "a positive int when max_steps is None")
        if not is_int(self.seed):
            raise self._fail("seed", self.seed, "an int")
        if not is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise self._fail("warmup_steps", self.warmup_steps, "a non-negative int")
        for name in ("num_train_epochs", "learning_rate", "alpha", "distill_temperature"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise self._fail(name, value, "a finite number > 0")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise self._fail("dropout", self.dropout, "a finite number in [0, 1)")
        if self.rank_allocation not in RANK_ALLOCATIONS:
            raise self._fail("rank_allocation", self.rank_allocation, ", ".join(RANK_ALLOCATIONS))
        if self.rank_temperature is not None and (not _is_number(self.rank_temperature) or self.rank_temperature <= 0):
            raise self._fail("rank_temperature", self.rank_temperature, "None or a finite number > 0")
        if not _is_number(self.max_rank_factor) or self.max_rank_factor < 1:
            raise self._fail("max_rank_factor", self.max_rank_factor, "a finite number >= 1")
        if (isinstance(self.target_modules, str) or not self.target_modules
                or not all(isinstance(m, str) and m for m in self.target_modules)):
            raise self._fail("target_modules", self.target_modules, "a non-empty list of module names, e.g. "
                        f"{list(DEFAULT_TARGET_MODULES)}")
        if not isinstance(self.train_biases, bool):
            raise self._fail("train_biases", self.train_biases, "True or False")
        if self.finetuning not in FINETUNING:
            raise self._fail("finetuning", self.finetuning, ", ".join(FINETUNING))
        self._validate_distillation()
        if not isinstance(self.eval_dataset, str) and not (
                hasattr(self.eval_dataset, "__len__") and len(self.eval_dataset) > 0
                and not isinstance(self.eval_dataset[0], str)):
            raise self._fail("eval_dataset", type(self.eval_dataset).__name__,
                             "'wikitext2', a local text file or a non-empty list of token-id windows")
        if self.output_dir is not None and (not isinstance(self.output_dir, str) or not self.output_dir):
            raise self._fail("output_dir", self.output_dir, "None (a temporary directory) or a directory path")
        if self.output_dir is None and self.save_steps is not None:
            raise self._fail("output_dir", None, f"a directory path when save_steps={self.save_steps} "
                             "(checkpoints need somewhere to stay)")
        if not isinstance(self.training_args, dict):
            raise self._fail("training_args", self.training_args, "a dict of TrainingArguments keyword arguments")

    def _validate_distillation(self) -> None:
        if self.objective not in OBJECTIVES:
            raise self._fail("objective", self.objective, ", ".join(OBJECTIVES))
        distilling = self.objective == "distillation"
        if distilling and self.teacher is None:
            raise self._fail("teacher", None, "a checkpoint directory or a model when objective='distillation'")
        if not distilling and (self.teacher is not None or self.teacher_logits_cache is not None):
            field = "teacher" if self.teacher is not None else "teacher_logits_cache"
            raise self._fail(field, getattr(self, field), "None unless objective='distillation'")
        if self.teacher is not None and not (_is_module(self.teacher)
                                             or (isinstance(self.teacher, str) and self.teacher)):
            raise self._fail("teacher", self.teacher, "a checkpoint directory or a model")
        if not _is_number(self.distill_weight) or not 0 <= self.distill_weight <= 1:
            raise self._fail("distill_weight", self.distill_weight, "a finite number in [0, 1]")
        if self.teacher_logits_cache is not None:
            if not isinstance(self.teacher_logits_cache, str) or not self.teacher_logits_cache:
                raise self._fail("teacher_logits_cache", self.teacher_logits_cache, "None or a directory path")
            if self.distill_top_k is None:
                raise self._fail("distill_top_k", None, "a positive int with teacher_logits_cache (the full "
                                 "distribution costs 4 bytes x vocabulary per token)")

    def to_dict(self) -> dict[str, Any]:
        """As `Recipe.to_dict`; an in-memory teacher or held-out set is summarised, never copied."""
        teacher = self.teacher
        self.teacher = None if _is_module(teacher) else teacher
        try:
            out = super().to_dict()
        finally:
            self.teacher = teacher
        if _is_module(teacher):
            out["teacher"] = f"<in-memory: {type(teacher).__name__}>"
        if not isinstance(self.eval_dataset, str):
            out["eval_dataset"] = f"<in-memory: {len(self.eval_dataset)} items>"
        return out
