"""The benchmark scripts are not run by the suite (they need the real model and minutes to hours), but
their imports are: a renamed module must break a test, not the next person who runs a benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))


def test_every_benchmark_script_imports():
    assert "sparsity" in SCRIPTS and "recovery" in SCRIPTS  # the glob found the scripts
    # one child process: the scripts import their helpers as top-level modules, as `python benchmarks/X.py` does
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        f"for name in {SCRIPTS!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert callable(module.main), name\n"
        # an ablation row whose N:M pattern holds the separator of the row spec
        "sys.argv = ['sparsity.py', '--methods', '--rows', 'barber:sparsegpt:2:4:output1:0.1:keep']\n"
        "row, = importlib.import_module('sparsity').recipes(importlib.import_module('sparsity').parse_args())\n"
        "assert (row['sparsity_type'], row['barber_granularity'], row['barber_alpha'], "
        "row['barber_keep_reconstruction']) == ('2:4', 'output1', 0.1, True), row\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
