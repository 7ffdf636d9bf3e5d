"""LoRA recovery fine-tuning of a pruned model with the transformers `Trainer`.

Everything about *how* training runs (devices, mixed precision, gradient checkpointing, DDP/FSDP under
`accelerate launch` or `torchrun`, logging, checkpoints and resuming) is the Trainer's; this module only
builds the data, the PEFT adapter with importance-guided ranks, and merges or saves the result.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..architectures import get_architecture
from ..data import load_calibration_ids
from ..layout import LAYOUT_KEY
from .configuration import RecoveryConfig
from .lora import build_lora_config, lora_parameter_count, measure_importance, recorded_importance

logger = logging.getLogger(__name__)

#: `model.config` key recording how a merged model was recovered
RECOVERY_KEY = "recovery"
#: sequences used to measure block importance when the model carries none (FLAP-pruned models)
_IMPORTANCE_SAMPLES = 16


class TokenWindows(torch.utils.data.Dataset):
    """Fixed-length token windows for causal-LM training (labels = inputs)."""

    def __init__(self, input_ids: torch.Tensor) -> None:
        self.input_ids = input_ids

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        ids = self.input_ids[idx]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


@dataclass
class RecoveryResult:
    """What `recover` produced: the model (merged, or the PEFT model) and how it was trained."""

    model: nn.Module
    lora_config: Any
    ranks: list[int]
    importance: list[float] | None
    adapter_parameters: int
    train_seconds: float
    merged: bool
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_loss(self) -> float | None:
        """The last logged training loss (the run's mean `train_loss` when no step was logged)."""
        losses = [entry["loss"] for entry in self.log_history if "loss" in entry]
        if losses:
            return losses[-1]
        means = [entry["train_loss"] for entry in self.log_history if "train_loss" in entry]
        return means[-1] if means else None


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(config: RecoveryConfig):
    """The `TrainingArguments` for `config` (its `training_args` override the derived values)."""
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        num_train_epochs=config.num_train_epochs,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
    )
    kwargs.update(config.training_args)
    return TrainingArguments(**kwargs)


def recover(
    model: nn.Module,
    tokenizer: Any,
    config: RecoveryConfig,
    *,
    merge: bool = True,
    save_directory: str | os.PathLike | None = None,
    resume_from_checkpoint: str | bool | None = None,
    importance: list[float] | None = None,
    overwrite: bool = False,
) -> RecoveryResult:
    """Fine-tune LoRA adapters on a pruned `model` (FLAP- or CFSP-pruned, in memory or reloaded).

    Args:
        model: the pruned causal LM; its weights stay frozen, its biases too unless `config.train_biases`.
        tokenizer: tokenizes `config.dataset` (not needed for token ids); saved with the model.
        config: the recovery recipe.
        merge: fold the adapters into the pruned weights (`merge_and_unload`) and return a plain pruned
            model; False returns the PEFT model.
        save_directory: where to save, on the main process only: the merged model as a pruned checkpoint
            (reloads with `AutoModelForCausalLM.from_pretrained`), or the adapter alone when `merge=False`.
        resume_from_checkpoint: passed to `Trainer.train` (a checkpoint path under `config.output_dir`, or True
            for the latest).
        importance: block importances for `"importance"` ranks; default: those a CFSP run recorded on
            `model.config`, else measured on the first training sequences.
        overwrite: replace a non-empty `save_directory`.
    """
    from peft import get_peft_model
    from transformers import Trainer, default_data_collator

    arch = get_architecture(model)
    num_samples = config.num_samples or (
        config.max_steps * config.batch_size * config.gradient_accumulation_steps * _world_size()
    )
    ids = load_calibration_ids(config.dataset, tokenizer, num_samples, config.seq_len, config.seed)
    if config.rank_allocation == "importance" and importance is None:
        importance = recorded_importance(model)
        if importance is None:
            logger.info("No recorded block importance: measuring it on %d training sequences.", _IMPORTANCE_SAMPLES)
            importance = measure_importance(model, arch, ids[:_IMPORTANCE_SAMPLES])
    lora_config, ranks = build_lora_config(model, arch, config, importance)
    layout = getattr(model.config, LAYOUT_KEY, None)
    args = training_arguments(config)
    if args.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, lora_config)
    adapter_parameters = lora_parameter_count(peft_model)
    logger.info("LoRA ranks per block: %s (%d adapter parameters)", ranks, adapter_parameters)
    trainer = Trainer(model=peft_model, args=args, train_dataset=TokenWindows(ids), data_collator=default_data_collator)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    peft_model = trainer.model
    peft_model.eval()
    result_model: nn.Module = peft_model
    if merge:
        result_model = peft_model.merge_and_unload()
        if layout is not None and getattr(result_model.config, LAYOUT_KEY, None) is None:
            setattr(result_model.config, LAYOUT_KEY, layout)
        setattr(result_model.config, RECOVERY_KEY, {
            "method": "lora", "rank_allocation": config.rank_allocation, "rank": config.rank,
            "alpha": config.alpha, "ranks": ranks, "steps": int(trainer.state.global_step),
            "learning_rate": config.learning_rate, "seq_len": config.seq_len,
            "dataset": config.dataset if isinstance(config.dataset, str) else "<in-memory>",
            "train_biases": config.train_biases,
        })
    if save_directory is not None:
        if trainer.is_world_process_zero():
            if merge:
                from ..checkpoint import save_pruned_model

                save_pruned_model(result_model, save_directory, tokenizer=tokenizer, overwrite=overwrite)
            else:
                peft_model.save_pretrained(save_directory)
                if tokenizer is not None:
                    tokenizer.save_pretrained(save_directory)
        trainer.accelerator.wait_for_everyone()
    return RecoveryResult(
        model=result_model, lora_config=lora_config, ranks=ranks, importance=importance,
        adapter_parameters=adapter_parameters, train_seconds=seconds, merged=merge,
        log_history=list(trainer.state.log_history),
    )
