"""Importance-guided LoRA ranks (CFSP's IG-LoRA) as a PEFT `LoraConfig` with `rank_pattern`/`alpha_pattern`.

Every adapted projection of decoder block l gets rank r_l. Under `"uniform"` r_l = r. Under
`"importance"` the weights w_l = s_l / mean(s), s_l = sigmoid((I_l - mean I) / T), come from the same
sigmoid as CFSP's pruning budget, and

    r_l ~ w_l * r * sum_l c_l / sum_l w_l c_l,     c_l = sum over the block's adapted Linears of (in + out)

so the adapter parameter count sum_l r_l c_l equals the uniform r * sum_l c_l (a LoRA pair on an
(in, out) Linear costs r (in + out)). Ranks are integers >= 1 and <= max_rank_factor * r, fitted greedily
to the budget, which they match within one rank step of one block (< max_l c_l parameters).
A more important block (one that changes its hidden states more) gets more rank. alpha_l = alpha r_l / r
keeps the LoRA scaling alpha / r equal in every block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from ..architectures import DecoderArchitecture
from ..configuration import CFSP_DEFAULT_TEMPERATURE
from ..engine import CalibrationPipeline
from ..methods.base import PruningMethod
from ..methods.cfsp.importance import BlockImportance
from ..methods.cfsp.method import BLOCK_IMPORTANCE_KEY
from ..plan import PruningPlan
from .configuration import RecoveryConfig


def adapted_modules(model: nn.Module, arch: DecoderArchitecture, target_modules: Sequence[str]):
    """Per decoder block, the `(full name, Linear)` pairs that get adapters (non-empty Linears only)."""
    layers = arch.decoder_layers(model)
    prefix = next(name for name, module in model.named_modules() if module is layers)
    targets = set(target_modules)
    blocks = []
    for idx, layer in enumerate(layers):
        found = []
        for name, module in layer.named_modules():
            if (isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets
                    and module.in_features > 0 and module.out_features > 0):
                found.append((f"{prefix}.{idx}.{name}", module))
        blocks.append(found)
    return blocks


def block_costs(blocks) -> list[int]:
    """LoRA parameters per unit of rank in each block: sum of (in + out) of its adapted Linears."""
    return [sum(m.in_features + m.out_features for _, m in block) for block in blocks]


def layer_ranks(
    importance: Sequence[float] | None,
    costs: Sequence[int],
    rank: int,
    allocation: str = "importance",
    temperature: float = CFSP_DEFAULT_TEMPERATURE,
    max_rank_factor: float = 4.0,
) -> list[int]:
    """Integer rank of each block; `"importance"` matches the uniform adapter parameter count (see module doc)."""
    n = len(costs)
    if allocation == "uniform":
        return [rank] * n
    if importance is None or len(importance) != n:
        raise ValueError(f"Importance-guided ranks need one importance per block ({n}), got {importance!r}.")
    from ..methods.cfsp.allocation import sigmoid_weights

    weights = sigmoid_weights(importance, temperature).tolist()
    budget = rank * sum(costs)
    cap = max(rank, math.floor(max_rank_factor * rank))
    ideal = [w * budget / sum(wi * c for wi, c in zip(weights, costs)) for w in weights]
    # clamp to [1, cap] and spread what the clamp freed over the others (a few passes suffice)
    for _ in range(n):
        clamped = [min(max(x, 1.0), cap) for x in ideal]
        free = [i for i, x in enumerate(ideal) if 1.0 < x < cap]
        spent = sum(x * c for x, c in zip(clamped, costs))
        if not free or abs(spent - budget) < 1e-6:
            ideal = clamped
            break
        scale_base = sum(clamped[i] * costs[i] for i in free)
        factor = (budget - (spent - scale_base)) / scale_base
        ideal = [x * factor if i in free else x for i, x in enumerate(clamped)]
    ranks = [min(max(math.floor(x), 1), cap) for x in ideal]
    left = budget - sum(r * c for r, c in zip(ranks, costs))
    order = sorted(range(n), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    grown = True
    while grown:
        grown = False
        for i in order:
            if ranks[i] < cap and costs[i] <= left:
                ranks[i] += 1
                left -= costs[i]
                grown = True
                break
    return ranks


def recorded_importance(model: nn.Module) -> list[float] | None:
    """Block importances recorded by a CFSP run on `model.config` (also after save and reload)."""
    record = getattr(model.config, BLOCK_IMPORTANCE_KEY, None)
    if isinstance(record, dict) and record.get("values"):
        return [float(v) for v in record["values"]]
    return None


class _BlockImportanceProbe(PruningMethod):
    """Records each block's CFSP importance on the dense stream; decides nothing."""

    name = "block importance"

    def __init__(self, metric: str, architecture: DecoderArchitecture) -> None:
        super().__init__(None, architecture)
        self.metric = metric
        self.values: list[float] = []
        self._current: BlockImportance | None = None

    def observers(self, block) -> dict:
        self._current = BlockImportance(self.metric)
        return {}

    def on_block_output(self, block, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        self._current.update(inputs, outputs)

    def block_done(self, block) -> None:
        self.values.append(self._current.value)

    def finish(self, model: nn.Module) -> PruningPlan:
        return PruningPlan(kind="structured", layers=[])


def measure_importance(
    model: nn.Module, arch: DecoderArchitecture, input_ids: torch.Tensor, metric: str = "angular",
    batch_size: int = 4,
) -> list[float]:
    """Block importances of (an already pruned) `model` on `input_ids`, through the calibration pipeline."""
    probe = _BlockImportanceProbe(metric, arch)
    was_training = model.training
    model.eval()
    try:
        CalibrationPipeline(model, arch, input_ids, batch_size).run(probe)
    finally:
        model.train(was_training)
    return probe.values


def build_lora_config(
    model: nn.Module,
    arch: DecoderArchitecture,
    config: RecoveryConfig,
    importance: Sequence[float] | None = None,
):
    """The PEFT `LoraConfig` (explicit target module names, per-module rank/alpha patterns) and the block ranks."""
    from peft import LoraConfig

    blocks = adapted_modules(model, arch, config.target_modules)
    if not any(blocks):
        raise ValueError(f"No Linear named {config.target_modules} in the decoder blocks.")
    temperature = config.rank_temperature
    if temperature is None:
        recipe = getattr(model.config, "pruning_config", None) or {}
        temperature = recipe.get("cfsp_temperature") or CFSP_DEFAULT_TEMPERATURE
    ranks = layer_ranks(importance, block_costs(blocks), config.rank, config.rank_allocation, temperature,
                        config.max_rank_factor)
    names = [name for block in blocks for name, _ in block]
    rank_pattern, alpha_pattern = {}, {}
    for block, r in zip(blocks, ranks):
        for name, _ in block:
            key = re.escape(name)
            rank_pattern[key] = r
            alpha_pattern[key] = config.alpha * r / config.rank
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=names,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        bias="lora_only" if config.train_biases else "none",
        task_type="CAUSAL_LM",
    )
    return lora_config, ranks


def lora_parameter_count(peft_model: nn.Module) -> int:
    """Parameters of the LoRA A and B matrices actually present in a PEFT model."""
    return sum(p.numel() for name, p in peft_model.named_parameters() if "lora_A" in name or "lora_B" in name)
