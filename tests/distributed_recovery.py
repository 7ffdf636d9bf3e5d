"""Recovery under torchrun on CPU (gloo).

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_recovery.py OUT

Both ranks prune the same tiny model identically (same seed and data), train LoRA with DDP through the
Trainer, and rank 0 saves the merged pruned model to OUT/merged.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from tiny_models import calibration_ids, tiny_model  # noqa: E402

from optimum_flap import FlapConfig, FlapPruner, RecoveryConfig  # noqa: E402
from optimum_flap.recovery import recover  # noqa: E402


def main() -> None:
    out = sys.argv[1]
    torch.set_num_threads(1)
    model = tiny_model("llama-gqa")
    pruner = FlapPruner(FlapConfig(method="cfsp", pruning_ratio=0.3, dataset=calibration_ids(), batch_size=4))
    pruner.prune_model(model)
    config = RecoveryConfig(dataset=calibration_ids(64, 16, seed=2), seq_len=16, max_steps=3, batch_size=2, rank=4,
                            learning_rate=1e-2, output_dir=os.path.join(out, "trainer"),
                            training_args={"use_cpu": True, "disable_tqdm": True, "ddp_backend": "gloo"})
    result = recover(model, None, config, save_directory=os.path.join(out, "merged"))
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(out, "rank0.json"), "w") as f:
            json.dump({"world_size": int(os.environ.get("WORLD_SIZE", "1")), "ranks": result.ranks,
                       "widths": [layer.mlp.gate_proj.out_features for layer in result.model.model.layers],
                       "steps": result.model.config.recovery["steps"]}, f)


if __name__ == "__main__":
    main()
