"""Options of LLM-Barber (Su et al. 2024): the initial mask, the comparison group and the swap fraction."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from ..sparse.config import SparseGPTOptions
from ..sparse.patterns import parse_sparsity_type

BARBER_INITS = ("wanda", "sparsegpt", "magnitude")
BARBER_GRANULARITY_CHOICES = ("output1", "input1", "layer", "block")
#: where the initial masks are computed: the initial method's own pruned stream (as the release, which
#: prunes the whole model with it first) or the stream of the already rebuilt layers (one pass)
BARBER_INIT_STREAMS = ("initial", "rebuilt")


@dataclass
class BarberOptions(SparseGPTOptions):
    """LLM-Barber's options; the defaults are the released scripts' Wanda setting (output1, alpha 0.01).

    `sparsegpt_mask_selection` applies when SparseGPT makes the initial mask (`barber_init="sparsegpt"`).
    """

    barber_init: str = option("wanda", "initial mask that LLM-Barber rebuilds", choices=BARBER_INITS)
    barber_granularity: str = option("output1", "comparison group of the rebuild: output row, input column, "
                                     "matrix (layer) or all matrices of the attention or MLP block (block)",
                                     choices=BARBER_GRANULARITY_CHOICES)
    barber_alpha: float = option(0.01, "fraction of the score-raising swaps made in each group, in [0, 1]")
    barber_keep_reconstruction: bool = option(False, "keep SparseGPT's updated values for surviving weights "
                                              "(default: survivors return to their dense values)")
    barber_init_stream: str = option("initial", "inputs the initial masks are computed on: 'initial' = the "
                                     "initial method's own pruned stream, every projection scored from one pass "
                                     "of the dense layer (as the release); 'rebuilt' = the stream of the already "
                                     "rebuilt layers, the MLP scored after the attention's rebuild",
                                     choices=BARBER_INIT_STREAMS)

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.barber_alpha <= 1.0:
            raise ValueError(f"FlapConfig: invalid barber_alpha={self.barber_alpha!r}; allowed: a number in [0, 1].")
        if parse_sparsity_type(self.sparsity_type) is not None and self.barber_granularity != "output1":
            raise ValueError(f"FlapConfig: invalid barber_granularity={self.barber_granularity!r}; allowed: output1 "
                             f"with sparsity_type={self.sparsity_type!r} (N:M masks are rebuilt per output row).")
        if self.barber_keep_reconstruction and self.barber_init != "sparsegpt":
            raise ValueError("FlapConfig: invalid barber_keep_reconstruction=True; allowed: False with "
                             f"barber_init={self.barber_init!r} (only SparseGPT reconstructs weights).")
