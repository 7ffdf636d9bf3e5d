"""Options of FLAP and of its structured baselines wanda-sp and magnitude-sp (one engine, one set of structures)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import StructuredOptions, option

METRICS = ("wifv", "ifv", "wifn")
STRUCTURES = ("UL-UM", "UL-MM", "AL-MM", "AL-AM")
#: structures whose attention budget is a fixed number of heads (`remove_heads`) rather than the ratio
MANUAL_STRUCTURES = ("UL-MM", "AL-MM")


@dataclass
class StructuredBaselineOptions(StructuredOptions):
    """Options of wanda-sp and magnitude-sp: the budget structure on top of the common structured options.

    Bias compensation is FLAP's contribution, so the baselines default to without it (FLAP's Table 1).
    """

    structure: str = option("AL-AM", "budget structure: uniform (UL) or adaptive (AL) across layers, manual (MM) "
                            "or adaptive (AM) between attention and MLP", choices=STRUCTURES)
    remove_heads: int | None = option(None, "attention heads to remove in total, required by UL-MM and AL-MM (with "
                                      "grouped-query attention a multiple of the group size)", minimum=0)
    post_norm_gains: bool = option(True, "on families with a norm after each sub-block (Gemma 2/3, OLMo-2), score "
                                   "channels by what reaches the residual stream through that norm's gain; no "
                                   "effect on pre-norm families")

    def check(self) -> None:
        if self.structure in MANUAL_STRUCTURES and self.remove_heads is None:
            raise ValueError(f"FlapConfig: invalid remove_heads=None; allowed: a non-negative int (required by "
                             f"structure={self.structure!r}).")
        if self.structure not in MANUAL_STRUCTURES and self.remove_heads is not None:
            raise ValueError(f"FlapConfig: invalid remove_heads={self.remove_heads!r}; allowed: None for "
                             f"structure={self.structure!r}; it only applies to {', '.join(MANUAL_STRUCTURES)}.")


@dataclass
class FlapOptions(StructuredBaselineOptions):
    """FLAP (An et al., AAAI 2024): the fluctuation metric (§3.1); bias compensation (§3.3) is on by default."""

    bias_compensation: bool = option(True, "fold the mean contribution of removed channels into the output bias")
    metric: str = option("wifv", "FLAP fluctuation metric: weighted input feature variance (wifv), input feature "
                         "variance (ifv) or weighted input feature norm (wifn)", choices=METRICS)
