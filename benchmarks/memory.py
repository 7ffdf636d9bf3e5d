"""Memory and time of pruning a checkpoint in memory against streaming it from disk to disk.

Builds a synthetic Llama-architecture checkpoint (random weights, grouped-query attention, several
safetensors shards, a local word-level tokenizer), written shard by shard so building it never needs
the whole model in memory. Then prunes it with FLAP (20%, AL-AM) twice, each in a fresh process:

* in memory: `FlapPruner.from_pretrained(path)` loads every weight, `prune()`, `save_pretrained()`;
* streamed:  `FlapPruner.from_pretrained(path, offload_folder=DIR)` builds the model on the meta
  device and reads one decoder block at a time, `prune()`, `save_pretrained()` writes shard by shard.

While each runs, a thread samples the process's resident memory every 20 ms from /proc/self/status:
`VmRSS` (everything resident, including pages of the memory-mapped checkpoint, which the kernel
can drop at will) and `RssAnon` (anonymous memory: what the process really holds). Prints a table
with the checkpoint size, both peaks, wall time, and whether the two saved checkpoints are
tensor-for-tensor equal; writes JSON.

    python benchmarks/memory.py --layers 16 24 --hidden-size 2048 --intermediate-size 5504
    python benchmarks/memory.py --layers 2 --hidden-size 1024 --intermediate-size 2752 --build-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from optimum_flap.streaming import checkpoint_weight_map, write_sharded_checkpoint

MODES = ("in-memory", "streamed")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", type=int, default=[16, 24], help="one checkpoint per layer count")
    parser.add_argument("--hidden-size", type=int, default=2048)
    parser.add_argument("--intermediate-size", type=int, default=5504)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--shard-size", default="500MB", help="safetensors shard size of the synthetic checkpoint")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workdir", default=None, help="where checkpoints are written (default: a temporary dir)")
    parser.add_argument("--build-only", action="store_true", help="build one checkpoint and measure only that")
    parser.add_argument("--output", default="benchmarks/results/memory")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)  # internal: one measured prune
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--save-to", help=argparse.SUPPRESS)
    return parser.parse_args()


# -- measuring ------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    """One `kB` field of /proc/self/status (Linux), e.g. `VmRSS` or `RssAnon`."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} field (this benchmark needs Linux).")


class PeakMemory:
    """Peak resident (`VmRSS`) and anonymous (`RssAnon`) memory of this process, sampled in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_rss = self.peak_anon = 0
        self.baseline_rss = self.baseline_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, _status_kib("VmRSS") * 1024)
        self.peak_anon = max(self.peak_anon, _status_kib("RssAnon") * 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.baseline_rss, self.baseline_anon = _status_kib("VmRSS") * 1024, _status_kib("RssAnon") * 1024
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# -- the synthetic checkpoint ---------------------------------------------------------------------------


def synthetic_config(args: argparse.Namespace, num_layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.seq_len), tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2, pad_token_id=0, dtype="float32",
    )


def _random_tensors(config, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """The Llama state dict with random weights, generated one tensor at a time (deterministic in `seed`)."""
    from transformers import LlamaForCausalLM

    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in LlamaForCausalLM(config).state_dict().items()}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            yield name, 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:  # std 1/sqrt(fan_in) keeps activations of the same scale through the blocks
            yield name, torch.randn(shape, generator=generator) / shape[-1] ** 0.5


def _word_level_tokenizer(vocab_size: int):
    """A local word-level tokenizer over the synthetic vocabulary (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials)}
    vocab.update({f"w{i}": len(specials) + i for i in range(vocab_size - len(specials))})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def build_checkpoint(args: argparse.Namespace, num_layers: int, directory: Path, seed: int = 0) -> int:
    """Write the synthetic checkpoint (config, shards, index, tokenizer) to `directory`; returns its bytes."""
    config = synthetic_config(args, num_layers)
    write_sharded_checkpoint(_random_tensors(config, seed), directory, max_shard_size=args.shard_size)
    config.save_pretrained(directory)
    _word_level_tokenizer(args.vocab_size).save_pretrained(directory)
    return checkpoint_bytes(directory)


def checkpoint_bytes(directory: Path) -> int:
    return sum(file.stat().st_size for file in set(checkpoint_weight_map(directory).values()))


# -- the two measured prunes ----------------------------------------------------------------------------


def _flap_config(args: argparse.Namespace):
    from optimum_flap import FlapConfig

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, args.vocab_size, (args.num_samples, args.seq_len), generator=generator).tolist()
    return FlapConfig(method="flap", pruning_ratio=args.ratio, structure="AL-AM", dataset=ids,
                      num_samples=args.num_samples, seq_len=args.seq_len, batch_size=args.batch_size, seed=0)


def prune_in_memory(checkpoint: Path, save_to: Path, config) -> None:
    """Load every weight, prune, save: the memory baseline."""
    from optimum_flap import FlapPruner

    pruner = FlapPruner.from_pretrained(checkpoint, config=config)
    pruner.prune()
    pruner.save_pretrained(save_to)


def prune_streamed(checkpoint: Path, save_to: Path, config) -> None:
    """Meta skeleton, one block read at a time, pruned blocks offloaded, saved shard by shard."""
    from optimum_flap import FlapPruner

    with tempfile.TemporaryDirectory(dir=save_to.parent, prefix=".offload-") as offload_folder:
        pruner = FlapPruner.from_pretrained(checkpoint, config=config, offload_folder=offload_folder)
        pruner.prune()
        pruner.save_pretrained(save_to)


def measure(args: argparse.Namespace) -> dict:
    """One measured prune, in this (fresh) process."""
    torch.set_num_threads(args.threads)
    prune = {"in-memory": prune_in_memory, "streamed": prune_streamed}[args.worker]
    config = _flap_config(args)
    with PeakMemory() as memory:
        start = time.perf_counter()
        prune(Path(args.checkpoint), Path(args.save_to), config)
        seconds = time.perf_counter() - start
    return {"mode": args.worker, "seconds": seconds, "peak_rss": memory.peak_rss, "peak_anon": memory.peak_anon,
            "baseline_rss": memory.baseline_rss, "baseline_anon": memory.baseline_anon}


def same_tensors(left: Path, right: Path) -> bool:
    """Whether two checkpoints hold the same tensor names with equal values, read one tensor at a time."""
    from safetensors import safe_open

    left_map, right_map = checkpoint_weight_map(left), checkpoint_weight_map(right)
    if set(left_map) != set(right_map):
        return False
    for name in sorted(left_map):
        with safe_open(left_map[name], framework="pt") as a, safe_open(right_map[name], framework="pt") as b:
            if not torch.equal(a.get_tensor(name), b.get_tensor(name)):
                return False
    return True


# -- driver ---------------------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace, mode: str, checkpoint: Path, save_to: Path) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--checkpoint", str(checkpoint),
           "--save-to", str(save_to), "--vocab-size", str(args.vocab_size), "--ratio", str(args.ratio),
           "--num-samples", str(args.num_samples), "--seq-len", str(args.seq_len),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} prune of {checkpoint} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_build(args: argparse.Namespace, num_layers: int, directory: Path) -> dict:
    """Build one checkpoint under the sampler (shows the builder holds about one shard)."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        size = build_checkpoint(args, num_layers, directory)
        seconds = time.perf_counter() - start
    shards = len(set(checkpoint_weight_map(directory).values()))
    return {"layers": num_layers, "checkpoint_bytes": size, "shards": shards, "build_seconds": seconds,
            "build_peak_rss": memory.peak_rss, "build_peak_anon": memory.peak_anon,
            "build_baseline_anon": memory.baseline_anon}


def table(rows: list[dict]) -> str:
    """Markdown table; time is also shown relative to the in-memory prune of the same checkpoint."""
    header = ("| layers | checkpoint GB | mode | peak RSS GB | peak anon GB | anon / checkpoint | seconds | "
              "x in-memory time | same tensors |")
    lines = [header, "|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|"]
    baseline = {r["layers"]: r["seconds"] for r in rows if r["mode"] == "in-memory"}
    for r in rows:
        lines.append(f"| {r['layers']} | {r['checkpoint_bytes'] / 1e9:.2f} | {r['mode']} | {r['peak_rss'] / 1e9:.2f} | "
                     f"{r['peak_anon'] / 1e9:.2f} | {r['peak_anon'] / r['checkpoint_bytes']:.0%} | "
                     f"{r['seconds']:.1f} | {r['seconds'] / baseline[r['layers']]:.2f} | {r['same_tensors']} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(measure(args)), flush=True)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="flap-memory-"))
    builds, rows = [], []
    for num_layers in args.layers[:1] if args.build_only else args.layers:
        checkpoint = workdir / f"llama-{num_layers}l"
        build = measure_build(args, num_layers, checkpoint)
        builds.append(build)
        print(f"built {checkpoint}: {build['checkpoint_bytes'] / 1e9:.2f} GB in {build['shards']} shards, "
              f"{build['build_seconds']:.1f} s, peak anon {build['build_peak_anon'] / 1e9:.2f} GB", flush=True)
        if args.build_only:
            break
        results = {mode: run_worker(args, mode, checkpoint, workdir / f"pruned-{num_layers}l-{mode}") for mode in MODES}
        same = same_tensors(workdir / f"pruned-{num_layers}l-in-memory", workdir / f"pruned-{num_layers}l-streamed")
        for result in results.values():
            rows.append({**result, "layers": num_layers, "checkpoint_bytes": build["checkpoint_bytes"],
                         "same_tensors": same})
    if rows:
        print(table(rows))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump({"arguments": {k: v for k, v in vars(args).items() if k not in ("worker", "checkpoint", "save_to")},
                   "builds": builds, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
