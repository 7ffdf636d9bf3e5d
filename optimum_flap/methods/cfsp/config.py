"""Options of CFSP (Wang et al., COLING 2025): coarse block budgets, fine channel scores."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import StructuredOptions, option

IMPORTANCE_METRICS = ("angular", "cosine", "mse")
ALLOCATIONS = ("sigmoid", "uniform")
CHANNEL_SCORES = ("activation", "weight-activation")
#: the released CFSP code divides summed importances by 1e4 over 128 x 1024 tokens; on a mean that is this
CFSP_DEFAULT_TEMPERATURE = 1e4 / (128 * 1024)


@dataclass
class CfspOptions(StructuredOptions):
    """CFSP's options; the defaults reproduce the released code (FFN-only pruning, activation scores)."""

    cfsp_importance: str = option("angular", "block importance between a block's input and output hidden states "
                                  "(CFSP §3.1)", choices=IMPORTANCE_METRICS)
    cfsp_allocation: str = option("sigmoid", "per-block budget: sigmoid of the centred importances (CFSP §3.2) "
                                  "or uniform (the ablation)", choices=ALLOCATIONS)
    cfsp_temperature: float = option(CFSP_DEFAULT_TEMPERATURE, "temperature of the sigmoid allocation (smaller: "
                                     "budgets vary more across blocks)", minimum=0)
    cfsp_score: str = option("activation", "channel score inside a block: activation norm (the released code) or "
                             "weight x activation (the paper's form)", choices=CHANNEL_SCORES)
    cfsp_prune_attention: bool = option(False, "also remove attention head groups (CFSP prunes the FFN only)")
