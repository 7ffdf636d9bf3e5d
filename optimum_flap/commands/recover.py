"""``optimum-flap recover``: fine-tune a pruned checkpoint (LoRA or full), on next-token labels or distilled
from the dense model, with a progress bar, periodic held-out perplexity and resumable Trainer checkpoints.

    optimum-flap recover --model pruned-dir --teacher smollm2 --steps 200 --output recovered-dir
    optimum-flap recover --model pruned-dir --teacher smollm2 --steps 200 --output recovered-dir --resume
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

#: command-line option -> `RecoveryConfig` field (only the options the user gives are passed)
_FIELDS = {
    "dataset": "dataset", "num_samples": "num_samples", "seq_len": "seq_len", "seed": "seed", "steps": "max_steps",
    "batch_size": "batch_size", "grad_accum": "gradient_accumulation_steps", "lr": "learning_rate",
    "warmup_steps": "warmup_steps", "rank": "rank", "alpha": "alpha", "rank_allocation": "rank_allocation",
    "finetuning": "finetuning", "train_biases": "train_biases", "temperature": "distill_temperature",
    "distill_weight": "distill_weight", "top_k": "distill_top_k", "teacher_logits_cache": "teacher_logits_cache",
    "eval_steps": "eval_steps", "eval_data": "eval_dataset", "eval_windows": "eval_windows",
    "save_steps": "save_steps", "logging_steps": "logging_steps",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``recover``; recipe options map to the `RecoveryConfig` field of (nearly) the same name."""
    from ..recovery.configuration import FINETUNING, OBJECTIVES, RANK_ALLOCATIONS

    parser.add_argument("--model", required=True, metavar="DIR", help="pruned checkpoint directory to recover")
    parser.add_argument("--teacher", metavar="DIR",
                        help="dense checkpoint to distil from (same tokenizer), or 'smollm2'; implies "
                        "--objective distillation")
    parser.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="training loss (default: distillation with --teacher, else language-modeling)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "auto"), default="float32",
                        help="dtype to load the models in (default: %(default)s)")
    recipe = parser.add_argument_group("recipe (RecoveryConfig fields; defaults are RecoveryConfig's)")
    recipe.add_argument("--dataset", help="training text: 'c4', 'wikitext2' or a local text/.jsonl file")
    recipe.add_argument("--num-samples", type=int, metavar="N", help="training windows (default: steps x batch)")
    recipe.add_argument("--seq-len", type=int, metavar="N", help="tokens per training window")
    recipe.add_argument("--seed", type=int, help="data sampling and training seed")
    recipe.add_argument("--steps", type=int, metavar="N", help="optimizer steps")
    recipe.add_argument("--batch-size", type=int, metavar="N", help="windows per device per step")
    recipe.add_argument("--grad-accum", type=int, metavar="N", help="micro-batches per optimizer step")
    recipe.add_argument("--lr", type=float, metavar="LR", help="peak AdamW learning rate")
    recipe.add_argument("--warmup-steps", type=int, metavar="N", help="linear warm-up steps")
    recipe.add_argument("--finetuning", choices=FINETUNING, help="LoRA adapters (merged) or every parameter")
    recipe.add_argument("--rank", type=int, metavar="R", help="base LoRA rank")
    recipe.add_argument("--alpha", type=float, metavar="A", help="LoRA alpha for the base rank")
    recipe.add_argument("--rank-allocation", choices=RANK_ALLOCATIONS, help="per-block LoRA ranks")
    recipe.add_argument("--train-biases", action=argparse.BooleanOptionalAction, default=None,
                        help="also train the adapted projections' biases (compensation biases included)")
    recipe.add_argument("--temperature", type=float, metavar="T", help="distillation temperature")
    recipe.add_argument("--distill-weight", type=float, metavar="W",
                        help="loss = W x KL + (1 - W) x cross-entropy")
    recipe.add_argument("--top-k", type=int, metavar="K", help="teacher logits kept per token (default: all)")
    recipe.add_argument("--teacher-logits-cache", metavar="DIR",
                        help="compute the teacher's top-k logits once into DIR (needs --top-k); the teacher is "
                        "then not in memory while training")
    run = parser.add_argument_group("evaluation, checkpoints and hardware")
    run.add_argument("--eval-steps", type=int, default=50, metavar="N",
                     help="held-out perplexity every N steps (default: %(default)s; 0: never)")
    run.add_argument("--eval-data", default="wikitext2", metavar="DATA",
                     help="held-out text: 'wikitext2' or a local file (default: %(default)s)")
    run.add_argument("--eval-windows", type=int, default=16, metavar="N", help="held-out windows (default: 16)")
    run.add_argument("--save-steps", type=int, default=100, metavar="N",
                     help="Trainer checkpoint every N steps (default: %(default)s)")
    run.add_argument("--logging-steps", type=int, metavar="N", help="log the training loss every N steps")
    run.add_argument("--checkpoint-dir", metavar="DIR",
                     help="Trainer checkpoints (default: OUTPUT-checkpoints next to --output)")
    run.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --checkpoint-dir")
    run.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    run.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    run.add_argument("--output", "-o", required=True, metavar="DIR", help="directory for the recovered checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def _config(args: argparse.Namespace, checkpoint_dir: str) -> Any:
    from ..recovery import RecoveryConfig
    from .cli import CLIError, resolve_model

    fields = {field: getattr(args, option) for option, field in _FIELDS.items() if getattr(args, option) is not None}
    if fields.get("eval_steps") == 0:
        del fields["eval_steps"]
    objective = args.objective or ("distillation" if args.teacher else "language-modeling")
    if objective == "distillation":
        if not args.teacher:
            raise CLIError("--objective distillation needs --teacher")
        fields["teacher"] = resolve_model(args.teacher, None)
    elif args.teacher:
        raise CLIError("--teacher is only used with --objective distillation")
    training_args: dict[str, Any] = {"use_cpu": args.cpu}
    if args.bf16:
        training_args["bf16"] = True
    return RecoveryConfig(objective=objective, output_dir=checkpoint_dir, training_args=training_args, **fields)


def run(args: argparse.Namespace) -> int:
    """Validate, load, recover, save; print how training went."""
    from ..checkpoint.target import check_apart, check_output_dir
    from .cli import CLIError, resolve_model  # here, not at import: cli.py imports this module

    output = os.path.normpath(args.output)
    check_apart(output, {"--model": args.model, "--teacher": args.teacher}, "--output")  # local paths as given
    if os.path.isdir(output) and os.listdir(output) and not args.overwrite:
        raise CLIError(f"--output {args.output} is not empty; pass --overwrite to replace it")
    checkpoint_dir = args.checkpoint_dir or f"{output}-checkpoints"
    config = _config(args, checkpoint_dir)  # validates the recipe before anything is loaded
    if config.eval_steps and isinstance(config.eval_dataset, str):
        from ..evaluation.perplexity import WIKITEXT2_NAMES

        data = config.eval_dataset
        if data.lower() not in WIKITEXT2_NAMES and not os.path.isfile(os.path.expanduser(data)):
            raise CLIError(f"--eval-data {args.eval_data} is neither 'wikitext2' nor an existing file")
    resume = None
    if args.resume:
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(checkpoint_dir) if os.path.isdir(checkpoint_dir) else None
        if resume is None:
            raise CLIError(f"--resume: no checkpoint-N directory in {checkpoint_dir}")
    model_path = resolve_model(args.model, None)
    check_output_dir(output, args.overwrite)  # the output rule of prune, before training
    inputs = {"--model": model_path, "--teacher": config.teacher if isinstance(config.teacher, str) else None}
    check_apart(output, inputs, "--output")  # even with --overwrite
    check_apart(checkpoint_dir, inputs, "--checkpoint-dir")
    if config.teacher_logits_cache is not None:
        check_apart(config.teacher_logits_cache, inputs, "--teacher-logits-cache")

    import torch
    from transformers import AutoTokenizer

    from ..checkpoint import load_pruned_model
    from ..recovery import recover

    print(f"[optimum-flap] loading {model_path}", file=sys.stderr, flush=True)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = load_pruned_model(model_path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_path, config=model.config)
    result = recover(model, tokenizer, config, save_directory=output, resume_from_checkpoint=resume,
                     overwrite=args.overwrite)
    rows = [("objective", config.objective), ("fine-tuning", config.finetuning), ("steps", str(result.steps)),
            ("seconds per step", f"{result.seconds_per_step:.3f}" if result.seconds_per_step else "-"),
            ("final training loss", f"{result.final_loss:.4f}" if result.final_loss is not None else "-")]
    rows += [(f"held-out perplexity at step {step}", f"{value:.3f}") for step, value in result.eval_perplexities]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    print(f"saved the recovered checkpoint to {output} (Trainer checkpoints in {checkpoint_dir})")
    return 0
