"""Recovery launched with torchrun, two CPU processes (gloo): finishes, saves on rank 0, reloads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch

from optimum_flap.checkpoint import load_pruned_model

HERE = os.path.dirname(__file__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_processes_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           os.path.join(HERE, "distributed_recovery.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((tmp_path / "rank0.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 3
    reloaded = load_pruned_model(tmp_path / "merged")
    widths = [layer.mlp.gate_proj.out_features for layer in reloaded.model.layers]
    assert widths == info["widths"] and all(w < 96 for w in widths)
    assert reloaded.config.pruning_layout["layers"][0]["intermediate_size"] == widths[0]
    with torch.no_grad():
        out = reloaded(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(out).all()
