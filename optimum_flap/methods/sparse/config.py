"""Options of the weight-level (unstructured and N:M) methods: magnitude, Wanda and SparseGPT."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import MethodOptions, option
from .patterns import SPARSEGPT_MASK_SELECTIONS, parse_sparsity_type


@dataclass
class SparsityOptions(MethodOptions):
    """The sparsity pattern; `pruning_ratio` is then the fraction of decoder linear weights set to zero.

    An N:M pattern fixes the ratio at 1 - N/M: `FlapConfig` takes it as the default and refuses another.
    """

    sparsity_type: str = option("unstructured", "'unstructured', or 'N:M' to keep N of every M consecutive weights "
                                "along the input dimension (e.g. 2:4, 4:8; sparsity 1 - N/M)")

    def check(self) -> None:
        try:
            parse_sparsity_type(self.sparsity_type)
        except ValueError as error:
            raise ValueError(f"FlapConfig: invalid sparsity_type={self.sparsity_type!r}; {error}") from None

    def implied_pruning_ratio(self) -> float | None:
        pattern = parse_sparsity_type(self.sparsity_type)
        return pattern.ratio if pattern is not None else None

    def check_pruning_ratio(self, ratio: float) -> None:
        try:
            parse_sparsity_type(self.sparsity_type, ratio)
        except ValueError as error:
            raise ValueError(f"FlapConfig: invalid pruning_ratio={ratio!r}; {error}") from None


@dataclass
class SparseGPTOptions(SparsityOptions):
    """SparseGPT's options: the sparsity pattern and how each column block chooses its unstructured mask."""

    sparsegpt_mask_selection: str = option("row", "SparseGPT's unstructured mask in each 128-column block: 'row' = "
                                           "the same count in every output row (every row exactly at the ratio); "
                                           "'block' = one threshold over all rows of the block (as the release). "
                                           "N:M is chosen per row either way", choices=SPARSEGPT_MASK_SELECTIONS)
