"""`RecoveryConfig`: the LoRA recovery recipe, validated at construction like `FlapConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..recipe import Recipe, is_int

RANK_ALLOCATIONS = ("importance", "uniform")
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class RecoveryConfig(Recipe):
    """Recipe for LoRA recovery fine-tuning of a pruned model (CFSP's importance-guided LoRA).

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
        output_dir: Trainer output directory (checkpoints, logs).
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
        output_dir: str = "flap-recovery",
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
        self.output_dir = output_dir
        self.logging_steps = logging_steps
        self.save_steps = save_steps
        self.save_total_limit = save_total_limit
        self.training_args = dict(training_args or {})
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first field whose value is not allowed."""
        self._validate_dataset()
        for name in ("seq_len", "batch_size", "gradient_accumulation_steps", "rank", "logging_steps"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise self._fail(name, value, "a positive int")
        for name in ("num_samples", "max_steps", "save_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise self._fail(name, value, "None or a positive int")
        if self.max_steps is None and self.num_samples is None:
            raise self._fail("num_samples", None, "a positive int when max_steps is None")
        if not is_int(self.seed):
            raise self._fail("seed", self.seed, "an int")
        if not is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise self._fail("warmup_steps", self.warmup_steps, "a non-negative int")
        for name in ("num_train_epochs", "learning_rate", "alpha"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise self._fail(name, value, "a number > 0")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise self._fail("dropout", self.dropout, "a number in [0, 1)")
        if self.rank_allocation not in RANK_ALLOCATIONS:
            raise self._fail("rank_allocation", self.rank_allocation, ", ".join(RANK_ALLOCATIONS))
        if self.rank_temperature is not None and (not _is_number(self.rank_temperature) or self.rank_temperature <= 0):
            raise self._fail("rank_temperature", self.rank_temperature, "None or a number > 0")
        if not _is_number(self.max_rank_factor) or self.max_rank_factor < 1:
            raise self._fail("max_rank_factor", self.max_rank_factor, "a number >= 1")
        if (isinstance(self.target_modules, str) or not self.target_modules
                or not all(isinstance(m, str) and m for m in self.target_modules)):
            raise self._fail("target_modules", self.target_modules, "a non-empty list of module names, e.g. "
                        f"{list(DEFAULT_TARGET_MODULES)}")
        if not isinstance(self.train_biases, bool):
            raise self._fail("train_biases", self.train_biases, "True or False")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise self._fail("output_dir", self.output_dir, "a directory path")
        if not isinstance(self.training_args, dict):
            raise self._fail("training_args", self.training_args, "a dict of TrainingArguments keyword arguments")
