"""The Trainer pieces of recovery: the distillation loss on the Trainer path, and the callbacks that stop on a
non-finite loss, evaluate held-out perplexity periodically and keep sparse weights sparse."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from .distillation import distillation_loss, teacher_logits, teacher_targets
from .sparsity import apply_zero_masks

logger = logging.getLogger(__name__)


class NonFiniteLossError(ValueError):
    """Training produced an inf or NaN loss: a recipe value (the learning rate) is too high, or the model's
    weights or the data are broken. A ValueError, as the fix is in the input."""


class DistillationTrainer(Trainer):
    """`Trainer` whose loss is `distill_weight` x KL(teacher || student) + (1 - weight) x cross-entropy.

    The teacher's targets come from the batch (`teacher_values` / `teacher_indices`, read from a
    `TeacherLogitsCache`) or, without a cache, from `teacher` run without gradients on the same batch.
    """

    def __init__(self, *args: Any, teacher: nn.Module | None = None, temperature: float = 1.0,
                 weight: float = 1.0, top_k: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.temperature = temperature
        self.weight = weight
        self.top_k = top_k
        self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by accumulation steps

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        values = inputs.pop("teacher_values", None)
        indices = inputs.pop("teacher_indices", None)
        labels = inputs.pop("labels", None)
        if self.weight < 1:
            inputs["labels"] = labels
        outputs = model(**inputs)
        if values is None:
            if self.teacher is None:
                raise ValueError("Distillation needs a teacher or cached teacher logits in the batch.")
            device = inputs["input_ids"].device
            if next(self.teacher.parameters()).device != device:
                self.teacher.to(device)
            values, indices = teacher_targets(
                teacher_logits(self.teacher, inputs["input_ids"], inputs.get("attention_mask")), self.top_k)
        loss = self.weight * distillation_loss(outputs.logits[:, :-1], values, indices, self.temperature)
        if self.weight < 1:
            loss = loss + (1 - self.weight) * outputs.loss
        return (loss, outputs) if return_outputs else loss


class StopOnNonFiniteLoss(TrainerCallback):
    """Raise `NonFiniteLossError` as soon as a logged training loss or gradient norm is inf or NaN.

    `train_loss` (the run's mean, logged once at the end) is checked too: a run shorter than
    `logging_steps` logs nothing else.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm", "train_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    f"Training {key} became {value} at step {state.global_step}: lower the learning rate "
                    f"(now {args.learning_rate}) or check the data and the model's weights.")


class HeldOutPerplexity(TrainerCallback):
    """Every `every` optimizer steps, the perplexity on held-out windows, logged as `eval_perplexity`."""

    def __init__(self, every: int, dataset: Any, tokenizer: Any, seq_len: int, windows: int,
                 batch_size: int = 4) -> None:
        from ..evaluation.perplexity import WIKITEXT2_NAMES, check_text_file, perplexity, window_nlls

        if isinstance(dataset, str):
            if tokenizer is None:
                raise ValueError("Held-out perplexity on text needs a tokenizer; pass one or give token-id windows "
                                 "as eval_dataset.")
            if dataset.lower() not in WIKITEXT2_NAMES:
                check_text_file(dataset)  # now, not at the first evaluation after training steps
            self._score = lambda model: perplexity(model, tokenizer, dataset, seq_len=seq_len, max_windows=windows,
                                                   batch_size=batch_size, progress=False).perplexity
        else:
            ids = torch.as_tensor(dataset, dtype=torch.long)[:windows]
            self._score = lambda model: math.exp(window_nlls(model, ids, batch_size).mean().item())
        self.every = every
        self.seconds = 0.0  # time spent evaluating, so that callers can leave it out of the training time

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.every:
            return
        was_training = model.training
        start = time.perf_counter()
        try:
            value = self._score(model)
        finally:
            model.train(was_training)
            self.seconds += time.perf_counter() - start
        entry = {"step": state.global_step, "eval_perplexity": value}
        state.log_history.append(entry)
        if state.is_world_process_zero:
            logger.info("step %d: held-out perplexity %.3f", state.global_step, value)
            from tqdm.auto import tqdm

            tqdm.write(f"step {state.global_step}: held-out perplexity {value:.3f}")


class KeepZeros(TrainerCallback):
    """Full fine-tuning of a sparse model: re-zero the recorded pruned weights after every optimizer step."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            apply_zero_masks(model, self.masks)
