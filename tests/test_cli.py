"""The command line, run as a user runs it: real subprocesses on a tiny model saved to disk.

`prune` and `eval` go through `python -m optimum_flap.commands.cli` and the `optimum-flap` console
script (when installed), registration through `optimum-cli`, and bad arguments must end with one
line on stderr, exit status 2 and no traceback. Every subprocess pays the torch/transformers import
(several seconds on a loaded machine), so the prune run is shared and independent runs go in parallel.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ckpt_tiny_model, ckpt_tiny_tokenizer

from optimum_flap import FlapConfig, load_pruned_model
from optimum_flap.commands.cli import build_parser, config_from_args, main, option_flag
from optimum_flap.methods.options import option_specs
from optimum_flap.methods.registry import get_registered_method, registered_methods

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}
CLI = [sys.executable, "-m", "optimum_flap.commands.cli"]
TIMEOUT = 120


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=TIMEOUT)


def _words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = [" ".join(f"w{rng.randrange(120)}" for _ in range(20)) for _ in range(n // 20)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A tiny Llama + word-level tokenizer saved to disk, calibration/eval text files, one pruned copy."""
    root = tmp_path_factory.mktemp("cli")
    model_dir = root / "dense"
    ckpt_tiny_model("llama", kv_heads=2, num_layers=3).save_pretrained(model_dir)
    ckpt_tiny_tokenizer().save_pretrained(model_dir)
    calib, text = root / "calib.txt", root / "eval.txt"
    calib.write_text(_words(2000, seed=1))
    text.write_text(_words(600, seed=2))
    pruned, report = root / "pruned", root / "report.json"
    result = _run(CLI + ["prune", "--model", str(model_dir), "--method", "flap", "--ratio", "0.3",
                         "--dataset", str(calib), "--num-samples", "8", "--seq-len", "16", "--batch-size", "4",
                         "--output", str(pruned), "--json", str(report)])
    return {"root": root, "dense": model_dir, "calib": calib, "text": text, "pruned": pruned, "report": report,
            "prune_result": result}


def test_prune_subprocess_saves_a_reloadable_smaller_model(workspace):
    result = workspace["prune_result"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = result.stdout.splitlines()[0]
    assert summary.startswith("flap AL-AM: removed") and "parameters" in summary and " s" in summary
    assert "[optimum-flap] pruning" in result.stderr  # progress goes to stderr, results to stdout

    dense = load_pruned_model(workspace["dense"])
    pruned = load_pruned_model(workspace["pruned"])
    n_dense, n_pruned = (sum(p.numel() for p in m.parameters()) for m in (dense, pruned))
    assert n_pruned < n_dense
    report = json.loads(workspace["report"].read_text())
    assert report["report"]["parameters_after"] == n_pruned
    assert 0.2 < report["report"]["achieved_ratio"] < 0.4
    assert report["recipe"]["num_samples"] == 8
    with torch.no_grad():
        logits = pruned(torch.tensor([[1, 5, 9, 13]])).logits
    assert torch.isfinite(logits).all()


def test_eval_subprocess_prints_table_and_json(workspace, tmp_path):
    out = tmp_path / "eval.json"
    script = shutil.which("optimum-flap")  # the console script, when the package is installed
    command = [script] if script else CLI
    result = _run(command + ["eval", "--model", str(workspace["pruned"]), "--ppl-data", str(workspace["text"]),
                             "--seq-len", "32", "--max-windows", "4", "--json", str(out)])
    assert result.returncode == 0, result.stderr
    assert "| metric" in result.stdout and "perplexity" in result.stdout
    data = json.loads(out.read_text())
    assert data["perplexity"]["num_windows"] == 4 and data["perplexity"]["seq_len"] == 32
    assert math.isfinite(data["perplexity"]["perplexity"]) and data["perplexity"]["perplexity"] > 1
    assert f"{data['perplexity']['perplexity']:.3f}" in result.stdout


def test_bad_arguments_exit_2_with_one_line(workspace, tmp_path):
    cases = {
        "ratio": ["prune", "--model", str(workspace["dense"]), "--ratio", "1.5", "-o", str(tmp_path / "a")],
        "structure": ["prune", "--model", str(workspace["dense"]), "--structure", "XX-YY", "-o", str(tmp_path / "b")],
        "missing model": ["prune", "--model", str(tmp_path / "no-such-model"), "-o", str(tmp_path / "c")],
    }
    # in parallel: each process spends most of its time importing torch and transformers
    procs = {name: subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for name, args in cases.items()}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 2, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (name, stderr)
        assert "error:" in lines[0] and "Traceback" not in stderr, (name, stderr)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["prune", "--ratio", "0.2", "-o", "{out}"], "exactly one of --model and --gguf"),
        (["prune", "--gguf", "{root}/missing.gguf", "-o", "{out}"], "GGUF file not found"),
        (["prune", "--model", "{dense}", "--structure", "AL-MM", "-o", "{out}"], "remove_heads"),
        (["prune", "--model", "{dense}", "--dataset", "{root}/nope.txt", "-o", "{out}"], "dataset"),
        (["prune", "--model", "{dense}", "--dataset", "{calib}", "-o", "{dense}"], "it is the --model directory"),
        (["prune", "--model", "{root}", "-o", "{out}"], "no config.json"),
        (["prune", "--model", "{dense}", "--ratio", "abc", "-o", "{out}"], "invalid float value"),
        (["eval", "--model", "{dense}", "--tasks", "nosuchtask"], "unknown zero-shot task"),
        (["eval", "--model", "{dense}", "--ppl-data", "{root}/missing.txt"], "missing.txt"),
        (["eval", "--model", "{dense}", "--ppl-data", "none"], "nothing to evaluate"),
        (["benchmark", "--model", "{dense}", "--pruned", "{root}"], "not a checkpoint directory"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_in_process(workspace, tmp_path, capsys, args, message):
    """The same entry point in-process, for the cases that need no separate interpreter."""
    fields = {"root": workspace["root"], "dense": workspace["dense"], "calib": workspace["calib"],
              "out": tmp_path / "out"}
    argv = [a.format(**fields) for a in args]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse errors
        status = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and "error:" in err[0] and message in err[0], err


def test_prune_runs_a_baseline_in_process(workspace, tmp_path, capsys):
    """Flags map onto FlapConfig (wanda-sp, UL-UM, no bias compensation) and the checkpoint reloads."""
    out = tmp_path / "wanda"
    status = main(["prune", "--model", str(workspace["dense"]), "--method", "wanda-sp", "--structure", "UL-UM",
                   "--ratio", "0.25", "--dataset", str(workspace["calib"]), "--num-samples", "4", "--seq-len", "16",
                   "--no-bias-compensation", "-o", str(out)])
    assert status == 0
    assert capsys.readouterr().out.startswith("wanda-sp UL-UM: removed")
    recipe = json.loads((out / "config.json").read_text())["pruning_config"]
    assert recipe["method"] == "wanda-sp" and recipe["bias_compensation"] is False
    assert load_pruned_model(out) is not None


def test_optimum_cli_registration():
    """`optimum-cli flap` is found through the optimum.commands.register namespace."""
    optimum_cli = shutil.which("optimum-cli")
    if optimum_cli is None:
        pytest.skip("optimum-cli is not installed")
    root_help = _run([optimum_cli, "--help"])
    if "flap" not in root_help.stdout:
        pytest.skip("optimum_flap is not installed (pip install -e .): optimum.commands.register.flap not found")
    # the registration file must not import torch: optimum-cli loads it for every command
    probe = _run([sys.executable, "-c", "import sys, optimum.commands.register.flap; "
                  "print('torch' in sys.modules, 'optimum_flap' in sys.modules)"])
    assert probe.stdout.split() == ["False", "False"], probe.stderr
    flap_help = _run([optimum_cli, "flap", "--help"])
    assert flap_help.returncode == 0, flap_help.stderr
    assert "usage: optimum-cli flap" in flap_help.stdout
    for command in ("prune", "eval", "benchmark"):
        assert command in flap_help.stdout


# ---------------------------------------------------------------- the recipe flags, generated from the registry


def _other_value(spec):
    """A valid value of option `spec` that is not its default."""
    if spec.choices is not None:
        return next(choice for choice in spec.choices if choice != spec.default)
    if spec.type is bool:
        return not spec.default
    if spec.type is int:
        return 8 if spec.default is None else spec.default + 2
    # minitron's free-form strings and fractions below 1: a value they accept
    bounded = {"minitron_axes": "ffn,depth", "target_shape": "intermediate_size=64", "max_width_pruning": 0.3,
               "max_depth_pruning": 0.3}
    return bounded[spec.name] if spec.name in bounded else spec.default * 3


def _flags(options: dict) -> list[str]:
    argv = []
    for name, value in options.items():
        flag = option_flag(name)
        argv += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    return argv


@pytest.mark.parametrize("method", registered_methods())
def test_every_option_of_every_method_is_reachable_from_the_command_line(method):
    """Each option set away from its default on the command line gives the FlapConfig built in Python."""
    options = {spec.name: _other_value(spec) for spec in option_specs(get_registered_method(method).options)}
    if "remove_heads" in options:  # the one option that needs another: a manual structure
        options["structure"] = "AL-MM"
    ratio = 0.35
    if "barber_granularity" in options:  # an N:M sparsity type would need the output1 granularity
        del options["sparsity_type"]
    elif "sparsity_type" in options:  # an N:M pattern fixes the ratio
        options["sparsity_type"], ratio = "2:4", 0.5
    shared = {"pruning_ratio": ratio, "dataset": "c4", "num_samples": 16, "seq_len": 64, "seed": 5, "batch_size": 2}
    argv = ["prune", "--model", "m", "-o", "out", "--method", method, "--ratio", str(ratio), "--dataset", "c4",
            "--num-samples", "16", "--seq-len", "64", "--seed", "5", "--batch-size", "2", *_flags(options)]
    from_cli = config_from_args(build_parser().parse_args(argv))
    expected = FlapConfig(method=method, **shared, **options)
    assert from_cli == expected
    defaults = FlapConfig(method=method).to_dict()
    changed = {k for k, v in from_cli.to_dict().items() if v != defaults[k]}
    assert changed == {*shared, *options}  # every field moved: none is unreachable


def test_flags_not_given_keep_the_methods_defaults():
    parse = build_parser().parse_args
    assert config_from_args(parse(["prune", "-o", "x"])) == FlapConfig()
    wanda = config_from_args(parse(["prune", "-o", "x", "--method", "wanda-sp"]))
    assert wanda == FlapConfig(method="wanda-sp") and wanda.use_bias_compensation is False
    assert config_from_args(parse(["prune", "-o", "x", "--no-bias-compensation"])).use_bias_compensation is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "wanda-sp", "--metric", "ifv"],
         "--metric does not apply to --method wanda-sp; it applies to flap"),
        (["--cfsp-importance", "cosine"], "--cfsp-importance does not apply to --method flap; it applies to cfsp"),
        (["--method", "cfsp", "--no-cfsp-prune-attention", "--structure", "UL-UM"],
         "--structure does not apply to --method cfsp; it applies to flap, wanda-sp, magnitude-sp"),
        (["--method", "cfsp", "--cfsp-temperature", "0"], "invalid cfsp_temperature=0.0; allowed: a finite number > 0"),
    ],
)
def test_option_of_another_method_is_a_one_line_usage_error(tmp_path, capsys, argv, message):
    status = main(["prune", "--model", str(tmp_path / "not-needed"), "-o", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("optimum-flap: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_version_and_help_import_no_torch(tmp_path):
    """--version, --help and every sub-command's --help answer without importing torch or transformers.

    Those imports are what made them slow (seconds); here they are made impossible: a `torch` and a
    `transformers` package that raise on import shadow the real ones, and every command must still succeed.
    """
    for name in ("torch", "transformers"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} imported by the CLI')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), ENV.get("PYTHONPATH", "")])}
    outputs = {}
    for argv in (["--version"], ["--help"], ["prune", "--help"], ["eval", "--help"], ["benchmark", "--help"],
                 ["recover", "--help"], ["export-gguf", "--help"]):
        result = subprocess.run(CLI + argv, capture_output=True, text=True, env=env, timeout=TIMEOUT)
        assert result.returncode == 0, (argv, result.stderr)
        outputs[argv[0]] = result.stdout
    assert "--cfsp-prune-attention, --no-cfsp-prune-attention" in outputs["prune"]
    assert "{prune,eval,benchmark,recover,export-gguf}" in outputs["--help"]
