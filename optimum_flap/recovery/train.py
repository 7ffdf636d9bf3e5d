"""Recovery fine-tuning of a pruned model (LoRA or full, language-modelling loss or distillation) with the
transformers `Trainer`.

Everything about *how* training runs (devices, mixed precision, gradient checkpointing, DDP/FSDP under
`accelerate launch` or `torchrun`, logging, checkpoints and resuming) is the Trainer's; this module only
builds the data (and the teacher's targets), the PEFT adapter with importance-guided ranks, and merges or
saves the result, keeping the zeros of sparse weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..architectures import get_architecture
from ..checkpoint.finite import check_finite_model
from ..checkpoint.save import source_directory
from ..checkpoint.target import check_apart, check_output_dir
from ..data import check_positions, load_calibration_ids
from ..layout import LAYOUT_KEY
from ..privacy import publishable_dataset, publishable_model_name
from .configuration import RecoveryConfig
from .distillation import check_same_tokenizer, load_teacher
from .lora import adapted_modules, build_lora_config, lora_parameter_count, measure_importance, recorded_importance
from .sparsity import apply_zero_masks, zero_masks
from .teacher_cache import TeacherLogitsCache, teacher_identity
from .trainer import DistillationTrainer, HeldOutPerplexity, KeepZeros, StopOnNonFiniteLoss

logger = logging.getLogger(__name__)

#: `model.config` key recording how a merged model was recovered
RECOVERY_KEY = "recovery"
#: sequences used to measure block importance when the model carries none (FLAP-pruned models)
_IMPORTANCE_SAMPLES = 16


class TokenWindows(torch.utils.data.Dataset):
    """Fixed-length token windows for causal-LM training (labels = inputs), with the teacher's cached top-k
    logits of each window when a `TeacherLogitsCache` is given."""

    def __init__(self, input_ids: torch.Tensor, teacher_cache: TeacherLogitsCache | None = None) -> None:
        self.input_ids = input_ids
        self.teacher_cache = teacher_cache

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        ids = self.input_ids[idx]
        item = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
        if self.teacher_cache is not None:
            item["teacher_values"], item["teacher_indices"] = self.teacher_cache[idx]
        return item


@dataclass
class RecoveryResult:
    """What `recover` produced: the model (merged, or the PEFT model) and how it was trained."""

    model: nn.Module
    lora_config: Any
    ranks: list[int]
    importance: list[float] | None
    adapter_parameters: int
    train_seconds: float  # Trainer.train wall time, the periodic held-out evaluation left out
    merged: bool
    log_history: list[dict[str, Any]] = field(default_factory=list)
    trainable_parameters: int = 0
    steps: int = 0

    @property
    def seconds_per_step(self) -> float | None:
        """Wall time per optimizer step of this run (None when no step ran)."""
        return self.train_seconds / self.steps if self.steps else None

    @property
    def eval_perplexities(self) -> list[tuple[int, float]]:
        """(step, held-out perplexity) of each periodic evaluation (`RecoveryConfig.eval_steps`)."""
        return [(e["step"], e["eval_perplexity"]) for e in self.log_history if "eval_perplexity" in e]

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


def training_arguments(config: RecoveryConfig, output_dir: str | None = None):
    """The `TrainingArguments` for `config` (its `training_args` override the derived values); `output_dir`
    stands in for `config.output_dir` when that is None."""
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=config.output_dir or output_dir,
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
        logging_nan_inf_filter=False,  # a NaN loss must show, so that StopOnNonFiniteLoss stops the run
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
    extra_callbacks: list[Any] | None = None,
) -> RecoveryResult:
    """Fine-tune a pruned `model` (FLAP- or CFSP-pruned, in memory or reloaded) with LoRA or fully, on
    next-token labels or distilled from `config.teacher`.

    Args:
        model: the pruned causal LM; under LoRA its weights stay frozen, its biases too unless
            `config.train_biases`. Sparse weights (zeros from unstructured or N:M pruning) keep their zeros in
            the merged or fully fine-tuned model.
        tokenizer: tokenizes `config.dataset` (not needed for token ids); saved with the model; compared with
            the teacher's tokenizer under distillation.
        config: the recovery recipe.
        merge: fold the adapters into the pruned weights (`merge_and_unload`) and return a plain pruned
            model; False returns the PEFT model (whose adapters are dense: zeros are kept only on merge).
            Ignored under full fine-tuning.
        save_directory: where to save, on the main process only: the merged model as a pruned checkpoint
            (reloads with `AutoModelForCausalLM.from_pretrained`), or the adapter alone when `merge=False`.
        resume_from_checkpoint: passed to `Trainer.train` (a checkpoint path under `config.output_dir`, or True
            for the latest).
        importance: block importances for `"importance"` ranks; default: those a CFSP run recorded on
            `model.config`, else measured on the first training sequences.
        overwrite: replace a non-empty `save_directory`.
        extra_callbacks: `transformers.TrainerCallback`s, run after the package's own (for example a periodic
            evaluation of the model being trained, as `benchmarks/recovery.py` does).

    Raises:
        ValueError: the teacher does not share the student's tokenizer, or the teacher-logits cache holds
            other windows.
        NonFiniteLossError: the training loss became inf or NaN.
        NonFiniteError: the model's weights are not finite, before or after training (nothing is saved).
    """
    arch = get_architecture(model)
    check_finite_model(model, "recover the model")  # NaN weights train to NaN and would be saved
    if save_directory is not None and int(os.environ.get("RANK", "0")) == 0:  # the saving rank, before training
        check_output_dir(save_directory, overwrite)
        check_apart(save_directory, {"model": source_directory(model)}, "save_directory")
    num_samples = config.num_samples or (
        config.max_steps * config.batch_size * config.gradient_accumulation_steps * _world_size()
    )
    ids = load_calibration_ids(config.dataset, tokenizer, num_samples, config.seq_len, config.seed)
    check_positions(model.config, ids.shape[1], "training seq_len")
    layout = getattr(model.config, LAYOUT_KEY, None)
    with contextlib.ExitStack() as stack:
        scratch = None if config.output_dir else stack.enter_context(tempfile.TemporaryDirectory(prefix="flap-"))
        args = training_arguments(config, scratch)
        teacher, teacher_cache = _distillation_teacher(model, tokenizer, config, ids, args)
        if config.finetuning == "lora":
            trained, lora_config, ranks, importance, masks = _add_adapters(model, arch, ids, config, importance, args)
        else:
            trained, lora_config, ranks = model, None, []
            model.requires_grad_(True)
            masks = zero_masks(model)
        trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        callbacks = [StopOnNonFiniteLoss()]
        held_out = None
        if config.eval_steps:
            held_out = HeldOutPerplexity(config.eval_steps, config.eval_dataset, tokenizer, config.seq_len,
                                         config.eval_windows, config.batch_size)
            callbacks.append(held_out)
        if config.finetuning == "full" and masks:
            callbacks.append(KeepZeros(masks))
        trainer = _trainer(trained, args, TokenWindows(ids, teacher_cache), callbacks + list(extra_callbacks or []),
                           config, teacher)
        _check_resume_fits(trained, resume_from_checkpoint, lora=config.finetuning == "lora")
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        seconds = time.perf_counter() - start - (held_out.seconds if held_out else 0.0)
        trained = trainer.model
        trained.eval()
        result_model: nn.Module = trained
        merged = merge or config.finetuning == "full"
        if merged:
            if config.finetuning == "lora":
                result_model = trained.merge_and_unload()
            apply_zero_masks(result_model, masks)
            if layout is not None and getattr(result_model.config, LAYOUT_KEY, None) is None:
                setattr(result_model.config, LAYOUT_KEY, layout)
            record = _recovery_record(config, ranks, trainer.state.global_step, tuple(ids.shape))
            setattr(result_model.config, RECOVERY_KEY, record)
        check_finite_model(result_model, "keep the recovered model")  # e.g. a learning rate too high
        if save_directory is not None:
            _save(trainer, result_model, trained, merged, tokenizer, save_directory, overwrite)
    return RecoveryResult(
        model=result_model, lora_config=lora_config, ranks=ranks, importance=importance,
        adapter_parameters=trainable if config.finetuning == "lora" else 0, train_seconds=seconds, merged=merged,
        log_history=list(trainer.state.log_history), trainable_parameters=trainable,
        steps=int(trainer.state.global_step),
    )


def _check_resume_fits(trained: nn.Module, checkpoint: str | os.PathLike | bool | None, lora: bool) -> None:
    """Refuse, before training, a Trainer checkpoint saved from another model (its tensors differ in name or shape).

    The Trainer would find out only when loading it, with torch's "size mismatch" for a tensor deep in a list.
    """
    if not isinstance(checkpoint, (str, os.PathLike)):
        return  # None, or True: the Trainer picks its own latest checkpoint
    file = Path(checkpoint) / ("adapter_model.safetensors" if lora else "model.safetensors")
    if not file.is_file():
        return  # another layout (sharded, or another fine-tuning): the Trainer reports it
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    state = get_peft_model_state_dict(trained) if lora else trained.state_dict()
    expected = {name: tuple(tensor.shape) for name, tensor in state.items()}
    with safe_open(file, framework="pt") as handle:
        saved = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    problems = [f"tensor {name} is {list(shape)} there and {list(expected[name])} here"
                for name, shape in sorted(saved.items()) if name in expected and expected[name] != shape]
    problems += [f"it holds tensor {name}, which this model has not" for name in sorted(set(saved) - set(expected))]
    if lora:
        problems += [f"it lacks tensor {name}" for name in sorted(set(expected) - set(saved))]
    if problems:
        raise ValueError(f"resume_from_checkpoint={os.fspath(checkpoint)!r} was saved while training another model "
                         f"({len(problems)} tensor(s) differ), e.g. {problems[0]}. Resume only from this model's "
                         "own checkpoints (another checkpoint directory), or start without resuming.")


def _add_adapters(model, arch, ids, config, importance, args):
    """(PEFT model, LoraConfig, block ranks, importances, zero masks of the adapted weights)."""
    from peft import get_peft_model
    from transformers import set_seed

    if config.rank_allocation == "importance" and importance is None:
        importance = recorded_importance(model)
        if importance is None:
            logger.info("No recorded block importance: measuring it on %d training sequences.", _IMPORTANCE_SAMPLES)
            importance = measure_importance(model, arch, ids[:_IMPORTANCE_SAMPLES])
    lora_config, ranks = build_lora_config(model, arch, config, importance)
    masks = zero_masks(model, [name for block in adapted_modules(model, arch, config.target_modules)
                               for name, _ in block])
    if args.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    set_seed(config.seed)  # the adapters' random initialisation, so that a run is reproducible
    peft_model = get_peft_model(model, lora_config)
    logger.info("LoRA ranks per block: %s (%d adapter parameters)", ranks, lora_parameter_count(peft_model))
    return peft_model, lora_config, ranks, importance, masks


def _distillation_teacher(model, tokenizer, config, ids, args):
    """(in-memory teacher or None, teacher-logits cache or None) for `config`; checks the tokenizer first."""
    if config.objective != "distillation":
        return None, None
    loaded: dict[str, nn.Module] = {}

    def get_teacher() -> nn.Module:
        if "model" not in loaded:
            teacher, teacher_tokenizer = load_teacher(config.teacher)
            check_same_tokenizer(model, teacher, tokenizer, teacher_tokenizer)
            check_positions(teacher.config, ids.shape[1], "training seq_len (the teacher's)")
            loaded["model"] = teacher
        return loaded["model"]

    vocab = model.get_output_embeddings().weight.shape[0]
    if config.teacher_logits_cache is None:
        return get_teacher(), None
    if isinstance(config.teacher, nn.Module):
        get_teacher()  # in memory anyway: check its vocabulary even when the cache is reused
    cache = TeacherLogitsCache.ensure(config.teacher_logits_cache, ids, config.distill_top_k, vocab, get_teacher,
                                      batch_size=config.batch_size, device=args.device,
                                      teacher=teacher_identity(config.teacher))
    loaded.clear()  # the teacher is not needed while training
    return None, cache


def _trainer(model, args, dataset, callbacks, config, teacher):
    from transformers import Trainer, default_data_collator

    common = dict(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator,
                  callbacks=callbacks)
    if config.objective == "distillation":
        return DistillationTrainer(teacher=teacher, temperature=config.distill_temperature,
                                   weight=config.distill_weight, top_k=config.distill_top_k, **common)
    return Trainer(**common)


def _recovery_record(config: RecoveryConfig, ranks: list[int], steps: int,
                     windows: tuple[int, ...]) -> dict[str, Any]:
    """What `model.config.recovery` records about the run: publishable (no local path), and the windows'
    `[num_samples, seq_len]` as they ran (pre-tokenized ids set them, not the config)."""
    record = {
        "method": config.finetuning, "objective": config.objective, "steps": int(steps),
        "learning_rate": config.learning_rate, "num_samples": int(windows[0]), "seq_len": int(windows[1]),
        "dataset": publishable_dataset(config.dataset) if isinstance(config.dataset, str) else "<in-memory>",
        "train_biases": config.train_biases,
    }
    if config.finetuning == "lora":
        record.update(rank_allocation=config.rank_allocation, rank=config.rank, alpha=config.alpha, ranks=ranks)
    if config.objective == "distillation":
        record.update(distill_temperature=config.distill_temperature, distill_weight=config.distill_weight,
                      distill_top_k=config.distill_top_k,
                      teacher=publishable_model_name(os.fspath(config.teacher))
                      if isinstance(config.teacher, (str, os.PathLike)) else "<in-memory>")
    return record


def _save(trainer, result_model, trained, merged, tokenizer, save_directory, overwrite) -> None:
    if trainer.is_world_process_zero():
        if merged:
            from ..checkpoint import save_pruned_model

            save_pruned_model(result_model, save_directory, tokenizer=tokenizer, overwrite=overwrite)
        else:
            trained.save_pretrained(save_directory)
            if tokenizer is not None:
                tokenizer.save_pretrained(save_directory)
    trainer.accelerator.wait_for_everyone()
