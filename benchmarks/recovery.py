"""Recovery of pruned SmolLM2-135M: language-modelling loss against distillation from the dense model.

FLAP-20% and CFSP-30% are pruned once each from the dense float32 model (calibration on the training part
of the C4 sample). Each pruned model is then recovered with LoRA from the same pruned weights, once per
objective and step budget, with the same data, batch, tokens, learning rate and rank: the objectives differ
only in the loss (next-token cross-entropy against T^2 x KL from the dense model's distribution). Every
recovered model is scored on WikiText-2 test and on held-out C4 documents (the last `--c4-eval-docs` of the
sample, never used for calibration or training). The largest budget of each run also logs held-out
WikiText-2 perplexity every `--curve-every` steps, to find the step where distillation reaches the
language-modelling run's final perplexity on the same curve windows (`--seq-len` tokens each).

Wall time per step and peak memory of the three ways to train (language-modelling loss, distillation with
the teacher in memory, distillation from the teacher-logits cache) are measured in fresh processes
(`--probe-steps` steps each), so that one run's memory does not hide another's.

    OMP_NUM_THREADS=2 python benchmarks/recovery.py                       # 50, 200 and 800 steps
    OMP_NUM_THREADS=2 python benchmarks/recovery.py --steps 2 4 --eval-windows 2 --probe-steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import tempfile
import time

import torch
from _common import load_dense, pyplot, save_figure

from optimum_flap import FlapConfig, FlapPruner, RecoveryConfig
from optimum_flap.checkpoint import save_pruned_model
from optimum_flap.data import load_calibration_ids
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation.perplexity import perplexity
from optimum_flap.recovery import TeacherLogitsCache, recover

DATA = str(data_dir())
VARIANTS = {"flap-20": dict(method="flap", pruning_ratio=0.2), "cfsp-30": dict(method="cfsp", pruning_ratio=0.3)}
OBJECTIVES = ("language-modeling", "distillation")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="dense checkpoint dir (default: SmolLM2-135M)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 200, 800], help="step budgets")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None, help="teacher logits per token in the grid (all)")
    parser.add_argument("--cache-top-k", type=int, default=64, help="k of the teacher-logits cache probe")
    parser.add_argument("--calibration-samples", type=int, default=128)
    parser.add_argument("--c4", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--c4-eval-docs", type=int, default=100, help="last C4 documents held out for evaluation")
    parser.add_argument("--wikitext", default=os.path.join(DATA, "wikitext2", "wiki.test.raw"))
    parser.add_argument("--eval-windows", type=int, default=64, help="128-token windows per evaluation set")
    parser.add_argument("--curve-every", type=int, default=50, help="held-out perplexity every N steps (largest "
                        "budget only; 0: never)")
    parser.add_argument("--probe-steps", type=int, default=20, help="steps of each time/memory probe (0: none)")
    parser.add_argument("--output", default="benchmarks/results/recovery")
    return parser.parse_args()


def c4_split(path: str, held_out: int) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents) of the C4 sample jsonl."""
    with open(path, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    return docs[:-held_out], docs[-held_out:]


def evaluate(model, tokenizer, args, c4_eval) -> dict[str, float]:
    kwargs = dict(seq_len=128, max_windows=args.eval_windows, batch_size=8, progress=False)
    return {"wikitext2": perplexity(model, tokenizer, args.wikitext, **kwargs).perplexity,
            "c4": perplexity(model, tokenizer, c4_eval, **kwargs).perplexity}


def recipe(args, train_docs, steps: int, objective: str, teacher=None, **overrides) -> RecoveryConfig:
    fields = dict(dataset=train_docs, seq_len=args.seq_len, seed=1, max_steps=steps, batch_size=args.batch,
                  learning_rate=args.lr, rank=args.rank, alpha=2.0 * args.rank, logging_steps=10,
                  objective=objective, training_args={"disable_tqdm": True})
    if objective == "distillation":
        fields.update(teacher=teacher, distill_temperature=args.temperature, distill_top_k=args.top_k)
    fields.update(overrides)
    return RecoveryConfig(**fields)


def probe(pruned_dir: str, teacher_dir: str, config_dict: dict, result_queue) -> None:
    """In a fresh process: train `config_dict` on the saved pruned model; report s/step and peak memory."""
    from transformers import AutoTokenizer

    from optimum_flap.checkpoint import load_pruned_model

    torch.manual_seed(0)
    model = load_pruned_model(pruned_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(pruned_dir)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = recover(model, tokenizer, RecoveryConfig.from_dict(config_dict))
    peak = {"peak_rss_mb": peak_rss_mb()}
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result_queue.put({"seconds_per_step": result.seconds_per_step, **peak})


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM on Linux (getrusage's maxrss survives exec, so a spawned
    child would report its parent's peak), getrusage elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_probes(args, dense_dir, tokenizer, dense, pruned_model, train_docs) -> list[dict]:
    """Time and peak memory of LM, in-memory distillation and cached distillation, each in a fresh process."""
    rows = []
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        pruned_dir = os.path.join(tmp, "pruned")
        save_pruned_model(pruned_model, pruned_dir, tokenizer=tokenizer)
        cache_dir = os.path.join(tmp, "cache")
        ids = load_calibration_ids(train_docs, tokenizer, args.probe_steps * args.batch, args.seq_len, 1)
        start = time.perf_counter()
        cache = TeacherLogitsCache.ensure(cache_dir, ids, args.cache_top_k, dense.config.vocab_size, lambda: dense,
                                          batch_size=args.batch)
        build_seconds = time.perf_counter() - start
        cache_mb = sum(os.path.getsize(os.path.join(cache_dir, n)) for n in cache.metadata["shards"]) / 2**20
        modes = [("language-modeling", {}), ("distillation, teacher in memory", {"distill_top_k": args.cache_top_k}),
                 ("distillation, teacher-logits cache", {"distill_top_k": args.cache_top_k,
                                                         "teacher_logits_cache": cache_dir})]
        for name, extra in modes:
            objective = "language-modeling" if name == "language-modeling" else "distillation"
            config = recipe(args, train_docs, args.probe_steps, objective, teacher=dense_dir, **extra)
            queue = context.Queue()
            process = context.Process(target=probe, args=(pruned_dir, dense_dir, config.to_dict() | {
                "dataset": train_docs}, queue))
            process.start()
            measured = queue.get()
            process.join()
            row = {"mode": name, "steps": args.probe_steps, "top_k": extra.get("distill_top_k"), **measured}
            if "teacher_logits_cache" in extra:
                row.update(cache_mb=round(cache_mb, 3), cache_build_seconds=round(build_seconds, 1))
            rows.append(row)
            print(f"probe {name}: {row['seconds_per_step']:.3f} s/step, peak RSS {row['peak_rss_mb']:.0f} MB",
                  flush=True)
    return rows


def first_step_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, value in curve if value <= target), None)


def main() -> None:
    args = parse_args()
    dense_dir, tokenizer, dense = load_dense(args.model)
    train_docs, c4_eval = c4_split(args.c4, args.c4_eval_docs)
    dense_ppl = evaluate(dense, tokenizer, args, c4_eval)
    print(f"dense: {dense_ppl}", flush=True)
    rows, curves, probes = [], {}, []
    for variant in args.variants:
        config = FlapConfig(dataset=train_docs, num_samples=args.calibration_samples, seq_len=args.seq_len, seed=0,
                            **VARIANTS[variant])
        pruned = FlapPruner(config).prune_model(copy.deepcopy(dense), tokenizer)
        rows.append({"variant": variant, "objective": "none", "steps": 0, **evaluate(pruned, tokenizer, args, c4_eval)})
        print(f"{variant} pruned: {rows[-1]}", flush=True)
        for objective in OBJECTIVES:
            for steps in args.steps:
                curve = args.curve_every if steps == max(args.steps) and args.curve_every else None
                config = recipe(args, train_docs, steps, objective, teacher=dense, eval_steps=curve,
                                eval_dataset=args.wikitext, eval_windows=args.eval_windows)
                result = recover(copy.deepcopy(pruned), tokenizer, config)
                row = {"variant": variant, "objective": objective, "steps": steps,
                       "tokens": steps * args.batch * args.seq_len, "seconds_per_step": result.seconds_per_step,
                       "final_loss": result.final_loss, **evaluate(result.model, tokenizer, args, c4_eval)}
                rows.append(row)
                if curve:
                    curves[f"{variant} {objective}"] = result.eval_perplexities
                print(f"{variant} {objective} {steps} steps: wikitext2 {row['wikitext2']:.2f}, c4 {row['c4']:.2f}, "
                      f"{row['seconds_per_step']:.3f} s/step", flush=True)
                del result
        if args.probe_steps and variant == args.variants[0]:
            probes = run_probes(args, dense_dir, tokenizer, dense, pruned, train_docs)
        del pruned
    summary = summarise(rows, curves, dense_ppl, max(args.steps))
    protocol = {
        "model": "SmolLM2-135M-Instruct float32", "pruning": f"{args.calibration_samples} x {args.seq_len} tokens "
        f"of the first {1000 - args.c4_eval_docs} C4-sample documents, seed 0",
        "recovery": f"LoRA rank {args.rank} (importance-guided), alpha {2 * args.rank}, lr {args.lr} linear decay, "
                    f"batch {args.batch} x {args.seq_len} tokens of the same C4 documents (seed 1); distillation: "
                    f"T = {args.temperature}, top-k {args.top_k or 'all'}, weight 1",
        "evaluation": f"{args.eval_windows} windows of 128 tokens of WikiText-2 test and of the last "
                      f"{args.c4_eval_docs} C4-sample documents",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    print_tables(rows, probes, summary, dense_ppl)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump({"protocol": protocol, "dense": dense_ppl, "runs": rows, "curves": curves, "probes": probes,
                   "summary": summary}, f, indent=2)
    print(f"wrote {args.output}.json")
    plot(rows, dense_ppl, args.output + ".png")


def summarise(rows, curves, dense_ppl, largest: int) -> list[dict]:
    """Per variant: final perplexities, the ratio to dense, and the step where distillation reaches LM's final."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        final = {r["objective"]: r for r in rows if r["variant"] == variant and r["steps"] == largest}
        if set(final) != set(OBJECTIVES):
            continue
        lm_final = final["language-modeling"]["wikitext2"]
        lm_curve = curves.get(f"{variant} language-modeling")  # same windows as the distillation curve
        reach = first_step_reaching(curves.get(f"{variant} distillation", []), lm_curve[-1][1]) if lm_curve else None
        out.append({"variant": variant, "steps": largest, "lm_wikitext2": lm_final,
                    "distillation_wikitext2": final["distillation"]["wikitext2"],
                    "distillation_over_dense": final["distillation"]["wikitext2"] / dense_ppl["wikitext2"],
                    "distillation_reaches_lm_final_at_step": reach})
    return out


def print_tables(rows, probes, summary, dense_ppl) -> None:
    print(f"\ndense: WikiText-2 {dense_ppl['wikitext2']:.2f}, C4 {dense_ppl['c4']:.2f}\n")
    print("| model | objective | steps | WikiText-2 ppl | C4 ppl | s/step |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        per_step = f"{r['seconds_per_step']:.3f}" if r.get("seconds_per_step") else "-"
        print(f"| {r['variant']} | {r['objective']} | {r['steps']} | {r['wikitext2']:.2f} | {r['c4']:.2f} | "
              f"{per_step} |")
    if probes:
        print("\n| training | top-k | s/step | peak RSS (MB) | peak CUDA (MB) | cache (MB) |")
        print("|---|---:|---:|---:|---:|---:|")
        for p in probes:
            print(f"| {p['mode']} | {p['top_k'] or '-'} | {p['seconds_per_step']:.3f} | {p['peak_rss_mb']:.0f} | "
                  f"{p.get('peak_cuda_mb', '-')} | {p.get('cache_mb', '-')} |")
    for s in summary:
        print(f"\n{s['variant']}: after {s['steps']} steps LM {s['lm_wikitext2']:.2f}, distillation "
              f"{s['distillation_wikitext2']:.2f} ({s['distillation_over_dense']:.2f}x dense); distillation reaches "
              f"LM's final perplexity at step {s['distillation_reaches_lm_final_at_step']}")


def plot(rows, dense_ppl, path: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for objective, style in zip(OBJECTIVES, ("--", "-")):
            points = sorted((r["steps"], r["wikitext2"]) for r in rows
                            if r["variant"] == variant and r["objective"] == objective)
            if points:
                ax.plot(*zip(*points), style, marker="o", label=f"{variant} {objective}")
    ax.axhline(dense_ppl["wikitext2"], color="gray", linestyle=":", label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("optimizer steps (log)")
    ax.set_ylabel("WikiText-2 perplexity")
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
