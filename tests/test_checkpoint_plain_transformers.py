"""Pruned checkpoints load in a fresh process where optimum_flap cannot be imported at all."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import torch
from conftest import ckpt_make_pruned, ckpt_tiny_model, ckpt_tiny_tokenizer
from package_free import WITHOUT_OPTIMUM_FLAP
from safetensors.torch import save_file
from transformers import AutoTokenizer

from optimum_flap.checkpoint import REMOTE_CODE_FORMAT, STOCK_FORMAT, save_pruned_model

IDS = [[1, 5, 9, 33, 4, 77, 12, 100], [1, 64, 3, 3, 90, 21, 8, 50]]

CASES = {
    # name: (family, dense kv heads, per-layer (kv groups kept, channels kept), output biases)
    "llama-mha-hetero": ("llama", 4, [(1, 40), (4, 96), (3, 7)], True),
    "llama-gqa-hetero": ("llama", 2, [(1, 40), (2, 96), (1, 7)], True),
    "llama-gqa-minimum": ("llama", 2, [(1, 1)] * 3, True),
    "mistral-hetero": ("mistral", 2, [(1, 40), (2, 96), (1, 7)], True),
    "mistral-minimum": ("mistral", 2, [(1, 1)] * 3, True),
    "qwen2-hetero": ("qwen2", 2, [(1, 40), (2, 96), (1, 7)], True),
    "qwen2-uniform-nobias": ("qwen2", 2, [(1, 48)] * 3, False),
    "qwen3-hetero": ("qwen3", 2, [(1, 40), (2, 96), (1, 7)], True),
    "qwen3-minimum": ("qwen3", 2, [(1, 1)] * 3, True),
}

# Runs with `python -I` (no cwd / PYTHONPATH on sys.path) and a finder that refuses optimum_flap,
# so only torch + transformers (+ their dependencies) are available.
CHILD = WITHOUT_OPTIMUM_FLAP + textwrap.dedent(
    r"""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cases = json.loads(sys.argv[1])
    results = {}
    for name, case in cases.items():
        out = {}
        if case["format"] == "flap-remote-code":
            try:
                AutoModelForCausalLM.from_pretrained(case["dir"])
                out["no_flag"] = "loaded"
            except RuntimeError as err:  # the stock class, built at the dense sizes, refuses the weights
                out["no_flag"] = "ignore_mismatched_sizes" in str(err)
            model = AutoModelForCausalLM.from_pretrained(case["dir"], trust_remote_code=True)
        else:
            model = AutoModelForCausalLM.from_pretrained(case["dir"])
        expected = load_file(case["expected"])
        with torch.no_grad():
            logits = model(expected["ids"]).logits
            tokens = model.generate(expected["ids"][:1], max_new_tokens=10, do_sample=False, pad_token_id=0)
        out["class"] = type(model).__module__ + "." + type(model).__name__
        out["max_diff"] = (logits - expected["logits"]).abs().max().item()
        out["same_tokens"] = torch.equal(tokens, expected["tokens"])
        out["tokenizer"] = AutoTokenizer.from_pretrained(case["dir"])("w3 w4 w100")["input_ids"]
        results[name] = out
    results["optimum_flap_imported"] = any(m.split(".")[0] == "optimum_flap" for m in sys.modules)
    print("\nRESULTS=" + json.dumps(results))
    """
)


def test_loads_without_optimum_flap(tmp_path):
    ids = torch.tensor(IDS)
    cases = {}
    for name, (family, kv_heads, layers, bias) in CASES.items():
        model = ckpt_make_pruned(
            ckpt_tiny_model(family, kv_heads=kv_heads), layers, attention_output_bias=bias, mlp_output_bias=bias
        )
        with torch.no_grad():
            logits = model(ids).logits
            tokens = model.generate(ids[:1], max_new_tokens=10, do_sample=False, pad_token_id=0)
        ckpt = tmp_path / name
        plan = save_pruned_model(model, ckpt, ckpt_tiny_tokenizer())
        save_file({"ids": ids, "logits": logits, "tokens": tokens}, str(tmp_path / f"{name}.expected.safetensors"))
        cases[name] = {
            "dir": str(ckpt),
            "format": plan.checkpoint_format,
            "expected": str(tmp_path / f"{name}.expected.safetensors"),
            # what AutoTokenizer gives here, with optimum_flap imported
            "tokens": AutoTokenizer.from_pretrained(ckpt)("w3 w4 w100")["input_ids"],
        }
    assert cases["llama-gqa-minimum"]["format"] == STOCK_FORMAT
    assert cases["qwen2-uniform-nobias"]["format"] == STOCK_FORMAT
    assert cases["mistral-minimum"]["format"] == REMOTE_CODE_FORMAT

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, json.dumps(cases)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULTS=")), None)
    assert line is not None, proc.stdout[-3000:]
    results = json.loads(line.removeprefix("RESULTS="))
    assert results.pop("optimum_flap_imported") is False
    for name, out in results.items():
        assert out["max_diff"] <= 1e-5, (name, out)
        assert out["same_tokens"], (name, out)
        assert out["tokenizer"] == cases[name]["tokens"], (name, out)
        if cases[name]["format"] == REMOTE_CODE_FORMAT:
            assert out["no_flag"] is True, (name, out)  # refuses the weights, does not half-load
            assert out["class"].startswith("transformers_modules."), (name, out)
        else:
            assert out["class"].startswith("transformers.models."), (name, out)


def test_shipped_code_is_small_and_imports_only_torch_transformers(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("qwen3"), [(1, 40), (2, 96), (1, 7)])
    save_pruned_model(model, tmp_path / "ckpt")
    files = sorted((tmp_path / "ckpt").glob("*.py"))
    assert [f.name for f in files] == ["configuration_flap_qwen3.py", "flap_common.py", "modeling_flap_qwen3.py"]
    allowed = {"torch", "transformers", "huggingface_hub"}  # huggingface_hub: transformers' own @strict configs
    for path in files:
        source = path.read_text()
        assert len(source.splitlines()) < 120, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, (path.name, ast.dump(node))
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] in allowed, (path.name, node.module)
                else:
                    assert node.level == 1, path.name  # sibling files only
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"exec", "eval", "open", "__import__"}, path.name
