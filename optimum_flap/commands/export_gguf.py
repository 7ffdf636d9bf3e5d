"""``optimum-flap export-gguf``: write a dense or pruned checkpoint as one GGUF file for llama.cpp / Ollama."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``export-gguf``."""
    from ..export.outtypes import OUTTYPES, WRITER_TYPES

    parser.add_argument("--model", required=True, metavar="DIR",
                        help="checkpoint directory (dense, or pruned by optimum-flap), or 'smollm2'")
    parser.add_argument("--output", "-o", required=True, metavar="FILE", help="GGUF file to write")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16",
                        help=f"tensor type; {', '.join(WRITER_TYPES)} are written directly, the others come from "
                        "llama.cpp's quantiser and need llama-cpp-python (default: %(default)s)")
    parser.add_argument("--pad-to", type=int, default=32, metavar="N",
                        help="zero-pad FFN widths to a multiple of N so every matrix quantises; exact; "
                        "1 disables (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    """Export, then print the file, its llama.cpp architecture and size."""
    from ..export import to_gguf
    from .cli import CLIError, resolve_model

    if os.path.isdir(args.output):  # found before encoding, not by the write at the end
        raise CLIError(f"--output {args.output} is a directory; give the GGUF file to write, e.g. "
                       f"{os.path.join(args.output, 'model.gguf')}")
    if os.path.exists(args.output) and not args.overwrite:
        raise CLIError(f"--output {args.output} exists; pass --overwrite to replace it")
    model_dir = resolve_model(args.model, None)
    if not os.path.isdir(model_dir):
        raise CLIError(f"--model {args.model} is not a local checkpoint directory")
    architecture = to_gguf(model_dir, args.output, outtype=args.outtype, pad_to=args.pad_to)
    size_mb = os.path.getsize(args.output) / 2**20
    print(f"wrote {args.output}: llama.cpp architecture {architecture}, {args.outtype}, {size_mb:.1f} MiB")
    return 0
