"""Which recovery recipe recovers pruned SmolLM2-135M most per optimizer step, on this machine.

FLAP-20% (AL-AM, WIFV, bias compensation) is pruned once from the dense float32 model (calibration on the
training part of the C4 sample) and recovered from the same pruned weights by every recipe of the grid:
{language-modelling loss, distillation from the dense model} x {LoRA with importance-guided ranks, full
fine-tuning}, with the same data, batch, steps and tokens. The runs differ only in the loss and in which
weights train. Each learning rate comes from a short sweep (`--sweep-steps` steps of the language-modelling
loss per value, chosen by held-out C4 perplexity; distillation uses the value its fine-tuning mode won;
where the largest value of a sweep wins, it is doubled, twice at most). The best recipe of the grid (lowest
held-out C4 perplexity at the last step) is then run on CFSP-30%, and on the stock-shaped `minitron` 20% model
when that method is registered; temperature 2 and a 50/50 mix with the
language-modelling loss are two extra distillation rows.

Every `--eval-every` steps and at the end, each run records WikiText-2 test and held-out C4 perplexity (the
last `--c4-eval-docs` documents of the sample, never used for calibration or training) and the mean
per-token KL divergence KL(dense || recovered) on `--kl-windows` held-out C4 windows; at the end also
zero-shot accuracy on the seven shared tasks (`--zero-shot-limit` documents each), as for the dense and the
pruned models. The probes time 20 steps of the language-modelling loss, of distillation with the teacher in
memory and of distillation from the top-k teacher-logits cache, each in a fresh process (peak memory).

The grid is long (hours on two cores), so the script is resumable: every finished run is written to the JSON
as it ends, and a rerun skips what is there. Run it in several sittings, in the background with one thread
when other work shares the cores:

    OMP_NUM_THREADS=1 nohup python benchmarks/recovery.py > recovery.log 2>&1 &   # resumes where it stopped
    python benchmarks/recovery.py --report                                        # tables and plot only
    python benchmarks/recovery.py --steps 4 --sweep-steps 2 --eval-every 2 --eval-windows 2 --kl-windows 2 \\
        --zero-shot-limit 2 --probe-steps 2 --calibration-samples 8 --output out/recovery-smoke \\
        --work-dir out/recovery-smoke-work                                        # smoke test (minutes)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from _common import load_dense, model_name, pyplot, save_figure
from transformers import TrainerCallback

from optimum_flap import FlapConfig, FlapPruner, RecoveryConfig
from optimum_flap.checkpoint import load_pruned_model, save_pruned_model
from optimum_flap.data import load_calibration_ids
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation.perplexity import perplexity
from optimum_flap.evaluation.zero_shot import zero_shot
from optimum_flap.methods.registry import registered_methods
from optimum_flap.recovery import TeacherLogitsCache, recover
from optimum_flap.recovery.teacher_cache import teacher_identity

DATA = str(data_dir())
VARIANTS = {
    "flap-20": dict(method="flap", pruning_ratio=0.2),
    "cfsp-30": dict(method="cfsp", pruning_ratio=0.3),
    "minitron-20": dict(method="minitron", pruning_ratio=0.2),
}
OBJECTIVES = ("language-modeling", "distillation")
FINETUNING = ("lora", "full")
#: learning rates of the sweep, per fine-tuning mode (LoRA adapters start at zero and take larger steps)
SWEEP = {"lora": (5e-4, 1e-3, 2e-3), "full": (2e-5, 5e-5, 1e-4)}


@dataclass
class Run:
    """One recovery run: the pruned model it starts from and its recipe; `key` names it in the JSON."""

    key: str
    stage: str
    variant: str
    objective: str
    finetuning: str
    steps: int
    learning_rate: float
    distill_temperature: float = 1.0
    distill_weight: float = 1.0
    final_eval: bool = True  # zero-shot at the end (the sweep scores perplexity only)


@dataclass
class Evaluator:
    """WikiText-2 and held-out C4 perplexity, and the mean KL(dense || model) on held-out C4 windows."""

    tokenizer: Any
    wikitext: str
    c4_eval: list[str]
    windows: int
    kl_ids: torch.Tensor
    dense_log_probs: torch.Tensor = field(repr=False)

    @classmethod
    def build(cls, dense, tokenizer, args, c4_eval: list[str]) -> Evaluator:
        kl_ids = load_calibration_ids(c4_eval, tokenizer, args.kl_windows, 128, seed=2)
        return cls(tokenizer, args.wikitext, c4_eval, args.eval_windows, kl_ids, _log_probs(dense, kl_ids))

    def __call__(self, model) -> dict[str, float]:
        kwargs = dict(seq_len=128, max_windows=self.windows, batch_size=8, progress=False)
        was_training = model.training
        model.eval()
        try:
            out = {"wikitext2": perplexity(model, self.tokenizer, self.wikitext, **kwargs).perplexity,
                   "c4": perplexity(model, self.tokenizer, self.c4_eval, **kwargs).perplexity,
                   "kl_from_dense": _mean_kl(self.dense_log_probs, _log_probs(model, self.kl_ids))}
        finally:
            model.train(was_training)
        return out


@torch.no_grad()
def _log_probs(model, ids: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    return torch.cat([torch.log_softmax(model(input_ids=ids[i:i + batch_size]).logits.float(), dim=-1)
                      for i in range(0, ids.shape[0], batch_size)])


def _mean_kl(teacher: torch.Tensor, student: torch.Tensor) -> float:
    """Mean over tokens of KL(teacher || student) = sum_v p_t (log p_t - log p_s), in nats."""
    return float((teacher.exp() * (teacher - student)).sum(-1).mean())


class EvaluateEvery(TrainerCallback):
    """Evaluate the model being trained every `every` optimizer steps; the time it takes is kept apart."""

    def __init__(self, every: int, evaluator: Evaluator) -> None:
        self.every, self.evaluator = every, evaluator
        self.curve: list[dict[str, float]] = []
        self.seconds = 0.0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or not self.every or state.global_step % self.every:
            return
        start = time.perf_counter()
        self.curve.append({"step": state.global_step, **self.evaluator(model)})
        self.seconds += time.perf_counter() - start
        print(f"  step {state.global_step}: {_fmt(self.curve[-1])}", flush=True)


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k != "step")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="dense checkpoint dir (default: SmolLM2-135M)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every grid run")
    parser.add_argument("--sweep-steps", type=int, default=30, help="steps of each learning-rate sweep run")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--calibration-samples", type=int, default=128)
    parser.add_argument("--c4", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--c4-eval-docs", type=int, default=100, help="last C4 documents held out for evaluation")
    parser.add_argument("--wikitext", default=os.path.join(DATA, "wikitext2", "wiki.test.raw"))
    parser.add_argument("--eval-windows", type=int, default=64, help="128-token windows per perplexity set")
    parser.add_argument("--kl-windows", type=int, default=16, help="held-out C4 windows of the KL from dense")
    parser.add_argument("--zero-shot-limit", type=int, default=100, help="documents per zero-shot task")
    parser.add_argument("--probe-steps", type=int, default=20, help="steps of each time/memory probe (0: none)")
    parser.add_argument("--cache-top-k", type=int, default=64, help="k of the teacher-logits cache probe")
    parser.add_argument("--stages", nargs="+", default=["sweep", "grid", "best", "extra", "probes"],
                        choices=["sweep", "grid", "best", "extra", "probes"])
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--report", action="store_true", help="print the tables and plot from the JSON only")
    parser.add_argument("--work-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "optimum-flap",
                                                           "bench-recovery"), help="pruned checkpoints kept here")
    parser.add_argument("--output", default="benchmarks/results/recovery")
    return parser.parse_args()


class Results:
    """The JSON of finished runs, rewritten atomically after each one (so an interrupted grid resumes)."""

    def __init__(self, path: str, protocol: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"protocol": protocol, "models": {}, "runs": {}, "probes": []}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
            if {k: v for k, v in stored["protocol"].items() if k in PROTOCOL_KEYS} != \
                    {k: v for k, v in protocol.items() if k in PROTOCOL_KEYS}:
                raise SystemExit(f"{path} was written with another protocol; give another --output")
            self.data.update({k: stored.get(k, self.data[k]) for k in ("models", "runs", "probes")})

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, self.path)


#: protocol fields that must match for stored runs to be reused
PROTOCOL_KEYS = ("model", "pruning", "batch", "evaluation")


def c4_split(path: str, held_out: int) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents) of the C4 sample jsonl."""
    with open(path, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    return docs[:-held_out], docs[-held_out:]


def zero_shot_mean(model, tokenizer, limit: int) -> dict[str, Any]:
    result = zero_shot(model, tokenizer, limit=limit, batch_size=8, bootstrap_iters=0)
    return {"mean": result.average, "tasks": {name: row["acc"] for name, row in result.tasks.items()}}


def pruned_model(variant: str, args, dense, tokenizer, train_docs):
    """The pruned model of `variant` (pruned once, then reloaded from the work directory)."""
    path = os.path.join(args.work_dir, f"{variant}-{args.calibration_samples}x{args.seq_len}")
    if not os.path.exists(os.path.join(path, "config.json")):
        config = FlapConfig(dataset=train_docs, num_samples=args.calibration_samples, seq_len=args.seq_len, seed=0,
                            **VARIANTS[variant])
        pruner = FlapPruner(config)
        model = pruner.prune_model(copy.deepcopy(dense), tokenizer)
        print(pruner.report.summary(), flush=True)
        save_pruned_model(model, path, tokenizer=tokenizer, overwrite=True)
    return load_pruned_model(path, dtype=torch.float32).eval()


def plan_runs(stage: str, results: Results, args) -> list[Run]:
    """The runs of `stage`, with the learning rates and the best recipe the earlier stages measured."""
    runs = results.data["runs"]
    rates = {ft: sweep_rates(ft, runs) for ft in FINETUNING}
    if stage == "sweep":
        return [Run(f"sweep {ft} lr={lr:g}", "sweep", "flap-20", "language-modeling", ft, args.sweep_steps, lr,
                    final_eval=False) for ft in FINETUNING for lr in rates[ft]]
    best_lr = {}
    for ft in FINETUNING:
        swept = {r["learning_rate"]: r for r in runs.values() if r["stage"] == "sweep" and r["finetuning"] == ft}
        if not set(rates[ft]) <= set(swept):
            return []  # the sweep is not finished
        best_lr[ft] = min(swept.values(), key=lambda r: r["final"]["c4"])["learning_rate"]
    if stage == "grid":
        return [Run(f"flap-20 {obj} {ft}", "grid", "flap-20", obj, ft, args.steps, best_lr[ft])
                for ft in FINETUNING for obj in OBJECTIVES]
    grid = [r for r in runs.values() if r["stage"] == "grid"]
    if len(grid) < len(OBJECTIVES) * len(FINETUNING):
        return []
    best = min(grid, key=lambda r: r["final"]["c4"])
    if stage == "best":
        variants = ["cfsp-30"] + (["minitron-20"] if "minitron" in registered_methods() else [])
        return [Run(f"{v} {best['objective']} {best['finetuning']}", "best", v, best["objective"],
                    best["finetuning"], args.steps, best["learning_rate"]) for v in variants]
    if stage == "extra":
        ft = best["finetuning"]
        return [Run(f"flap-20 distillation {ft} T=2", "extra", "flap-20", "distillation", ft, args.steps,
                    best_lr[ft], distill_temperature=2.0),
                Run(f"flap-20 distillation {ft} 50/50 with LM", "extra", "flap-20", "distillation", ft,
                    args.steps, best_lr[ft], distill_weight=0.5)]
    return []


def sweep_rates(finetuning: str, runs: dict[str, Any]) -> list[float]:
    """The sweep's learning rates: `SWEEP`, doubled up to twice more while the largest finished one wins."""
    rates = list(SWEEP[finetuning])
    done = {r["learning_rate"]: r["final"]["c4"] for r in runs.values()
            if r["stage"] == "sweep" and r["finetuning"] == finetuning}
    while (len(rates) < len(SWEEP[finetuning]) + 2 and set(rates) <= set(done)
           and min(rates, key=done.__getitem__) == rates[-1]):
        rates.append(rates[-1] * 2)
    return rates


def recovery_config(run: Run, args, train_docs, dense) -> RecoveryConfig:
    fields: dict[str, Any] = dict(
        dataset=train_docs, seq_len=args.seq_len, seed=1, max_steps=run.steps, batch_size=args.batch,
        learning_rate=run.learning_rate, rank=args.rank, alpha=2.0 * args.rank, finetuning=run.finetuning,
        objective=run.objective, logging_steps=10, training_args={"disable_tqdm": True})
    if run.objective == "distillation":
        fields.update(teacher=dense, distill_temperature=run.distill_temperature, distill_weight=run.distill_weight)
    return RecoveryConfig(**fields)


def execute(run: Run, args, context: dict[str, Any]) -> dict[str, Any]:
    """Train `run` from its pruned model; its curve, final figures and (for grid runs) zero-shot accuracy."""
    model = context["pruned"](run.variant)
    every = args.eval_every if run.final_eval else None
    evaluate_every = EvaluateEvery(every or 0, context["evaluator"])
    config = recovery_config(run, args, context["train_docs"], context["dense"])
    torch.manual_seed(0)
    result = recover(model, context["tokenizer"], config, extra_callbacks=[evaluate_every])
    train_seconds = result.train_seconds - evaluate_every.seconds
    curve = evaluate_every.curve
    final = curve[-1] if curve and curve[-1]["step"] == run.steps else {"step": run.steps,
                                                                         **context["evaluator"](result.model)}
    record = {**asdict(run), "tokens": run.steps * args.batch * args.seq_len,
              "seconds_per_step": train_seconds / max(result.steps, 1), "trainable_parameters":
              result.trainable_parameters, "final_loss": result.final_loss, "curve": curve,
              "final": {k: v for k, v in final.items() if k != "step"}}
    if not all(math.isfinite(v) for v in record["final"].values()):
        raise SystemExit(f"{run.key}: non-finite result {record['final']}")
    if run.final_eval and args.zero_shot_limit:
        record["zero_shot"] = zero_shot_mean(result.model, context["tokenizer"], args.zero_shot_limit)
    return record


def describe_model(name: str, model, context, args) -> dict[str, Any]:
    out = {"parameters": sum(p.numel() for p in model.parameters()), **context["evaluator"](model)}
    if args.zero_shot_limit:
        out["zero_shot"] = zero_shot_mean(model, context["tokenizer"], args.zero_shot_limit)
    print(f"{name}: {_fmt({k: v for k, v in out.items() if k != 'zero_shot'})}", flush=True)
    return out


def main() -> None:
    args = parse_args()
    protocol = {
        "model": "SmolLM2-135M-Instruct float32" if args.model is None else model_name(args.model),
        "pruning": f"{args.calibration_samples} x {args.seq_len} tokens of the first {1000 - args.c4_eval_docs} "
                   "C4-sample documents, seed 0",
        "batch": f"{args.batch} x {args.seq_len} tokens of the same C4 documents (seed 1), linear decay, no "
                 f"warm-up; LoRA rank {args.rank} (importance-guided), alpha {2 * args.rank}",
        "evaluation": f"{args.eval_windows} windows of 128 tokens of WikiText-2 test and of the last "
                      f"{args.c4_eval_docs} C4-sample documents; KL on {args.kl_windows} held-out C4 windows; "
                      f"zero-shot {args.zero_shot_limit} documents per task",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    results = Results(args.output + ".json", protocol)
    if not args.report:
        run_pending(args, results)
    print_tables(results.data)
    plot(results.data, args.output + ".png")


def run_pending(args, results: Results) -> None:
    dense_dir, tokenizer, dense = load_dense(args.model)
    train_docs, c4_eval = c4_split(args.c4, args.c4_eval_docs)
    evaluator = Evaluator.build(dense, tokenizer, args, c4_eval)
    cache: dict[str, Any] = {}

    def pruned(variant: str):
        if variant not in cache:
            cache.clear()
            cache[variant] = pruned_model(variant, args, dense, tokenizer, train_docs)
        return copy.deepcopy(cache[variant])

    context = dict(dense=dense, tokenizer=tokenizer, train_docs=train_docs, evaluator=evaluator, pruned=pruned)
    models = results.data["models"]
    if "dense" not in models:
        models["dense"] = describe_model("dense", dense, context, args)
        results.save()
    new_runs = 0
    for stage in ("sweep", "grid", "best", "extra"):
        if stage not in args.stages:
            continue
        while pending := [r for r in plan_runs(stage, results, args) if r.key not in results.data["runs"]]:
            run = pending[0]
            if args.max_runs is not None and new_runs >= args.max_runs:
                return
            if run.variant not in models:
                models[run.variant] = describe_model(run.variant, pruned(run.variant), context, args)
                results.save()
            print(f"run {run.key}: lr {run.learning_rate:g}, {run.steps} steps", flush=True)
            record = execute(run, args, context)
            results.data["runs"][run.key] = record
            results.save()
            new_runs += 1
            print(f"run {run.key}: {_fmt(record['final'])}, {record['seconds_per_step']:.2f} s/step", flush=True)
    if "probes" in args.stages and args.probe_steps and not results.data["probes"]:
        results.data["probes"] = run_probes(args, dense_dir, tokenizer, dense, pruned("flap-20"), train_docs)
        results.save()


def probe(pruned_dir: str, config_dict: dict, result_queue) -> None:
    """In a fresh process: train `config_dict` on the saved pruned model; report s/step and peak memory."""
    from transformers import AutoTokenizer

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
                                          batch_size=args.batch, teacher=teacher_identity(dense_dir))
        build_seconds = time.perf_counter() - start
        cache_mb = sum(os.path.getsize(os.path.join(cache_dir, n)) for n in cache.metadata["shards"]) / 2**20
        modes = [("language-modeling", {}), ("distillation, teacher in memory", {"distill_top_k": args.cache_top_k}),
                 ("distillation, teacher-logits cache", {"distill_top_k": args.cache_top_k,
                                                         "teacher_logits_cache": cache_dir})]
        for name, extra in modes:
            objective = "language-modeling" if name == "language-modeling" else "distillation"
            fields = dict(dataset=train_docs, seq_len=args.seq_len, seed=1, max_steps=args.probe_steps,
                          batch_size=args.batch, rank=args.rank, alpha=2.0 * args.rank, objective=objective,
                          training_args={"disable_tqdm": True}, **extra)
            if objective == "distillation":
                fields["teacher"] = dense_dir
            queue = context.Queue()
            process = context.Process(target=probe, args=(pruned_dir, RecoveryConfig(**fields).to_dict() | {
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


def print_tables(data: dict[str, Any]) -> None:
    models, runs = data["models"], data["runs"]
    if "dense" not in models:
        print("no results yet")
        return
    dense = models["dense"]

    def zs(entry) -> str:
        return f"{100 * entry['zero_shot']['mean']:.2f}" if "zero_shot" in entry else "-"

    print("\n| model | objective | trained | lr | steps | tokens | s/step | WikiText-2 | C4 | KL from dense | "
          "zero-shot mean |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, entry in models.items():
        print(f"| {name} | - | - | - | 0 | 0 | - | {entry['wikitext2']:.2f} | {entry['c4']:.2f} | "
              f"{entry['kl_from_dense']:.4f} | {zs(entry)} |")
    for r in runs.values():
        extra = "" if r["distill_temperature"] == 1 and r["distill_weight"] == 1 else \
            f" (T={r['distill_temperature']:g}, weight {r['distill_weight']:g})"
        f = r["final"]
        print(f"| {r['variant']} | {r['objective']}{extra} | {r['finetuning']} | {r['learning_rate']:g} | "
              f"{r['steps']} | {r['tokens']:,} | {r['seconds_per_step']:.2f} | {f['wikitext2']:.2f} | {f['c4']:.2f} | "
              f"{f['kl_from_dense']:.4f} | {zs(r)} |")
    grid = [r for r in runs.values() if r["stage"] == "grid"]
    if grid:
        best = min(grid, key=lambda r: r["final"]["c4"])
        print(f"\nbest of the grid by held-out C4 perplexity: {best['key']} (WikiText-2 "
              f"{best['final']['wikitext2'] / dense['wikitext2']:.3f}x dense)")
    for p in data.get("probes", []):
        print(f"probe {p['mode']}: {p['seconds_per_step']:.3f} s/step, peak RSS {p['peak_rss_mb']:.0f} MB"
              + (f", cache {p['cache_mb']} MB" if "cache_mb" in p else ""))


def plot(data: dict[str, Any], path: str) -> None:
    """Held-out C4 perplexity against steps for the grid runs (from the pruned model at step 0)."""
    grid = [r for r in data["runs"].values() if r["stage"] == "grid" and r["curve"]]
    plt = pyplot() if grid else None
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    start = data["models"].get("flap-20", {}).get("c4")
    for r in grid:
        points = ([(0, start)] if start else []) + [(p["step"], p["c4"]) for p in r["curve"]]
        ax.plot(*zip(*points), "-" if r["objective"] == "distillation" else "--", marker="o",
                label=f"{r['objective']}, {r['finetuning']} (lr {r['learning_rate']:g})")
    ax.axhline(data["models"]["dense"]["c4"], color="gray", linestyle=":", label="dense")
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("held-out C4 perplexity")
    ax.set_title("FLAP-20% SmolLM2-135M recovery")
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
