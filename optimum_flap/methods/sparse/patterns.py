"""Sparsity types ("unstructured", "N:M") and their implied ratio; torch-free so `FlapConfig` can check them.

N:M convention: "N:M" means **N weights are kept** in every group of M consecutive weights along the
input dimension (the hardware meaning of 2:4 sparse tensor cores), so the sparsity is 1 - N/M. For
2:4 and 4:8 this equals the released Wanda / SparseGPT / LLM-Barber code, whose `prune_n` counts the
*zeroed* weights (prune_n = M - N); for other patterns ("1:4" = 75% sparse here) the two differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: SparseGPT's unstructured selection inside a column block (arXiv 2301.00774 §3.2): the same count in every
#: output row ("row"), or one ranking over all rows of the block ("block", as the released code)
SPARSEGPT_MASK_SELECTIONS = ("row", "block")


@dataclass(frozen=True)
class NMPattern:
    """Keep `kept` of every `group` consecutive weights along the input dimension."""

    kept: int
    group: int

    @property
    def ratio(self) -> float:
        """Fraction of weights zeroed."""
        return 1.0 - self.kept / self.group

    def __str__(self) -> str:
        return f"{self.kept}:{self.group}"


def check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"Sparsity ratio must be in [0, 1), got {ratio!r}.")


def parse_sparsity_type(text: str, ratio: float | None = None) -> NMPattern | None:
    """`"unstructured"` -> None; `"N:M"` -> NMPattern(N kept of M), checked against `ratio` when given.

    Raises ValueError for malformed text, for N outside 1..M-1, and for a `ratio` other than 1 - N/M.
    """
    if text == "unstructured":
        if ratio is not None:
            check_ratio(ratio)
        return None
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"Sparsity type {text!r} is neither 'unstructured' nor 'N:M' with integers N < M (e.g. '2:4')."
        )
    kept, group = (int(p) for p in parts)
    if not 0 < kept < group:
        raise ValueError(
            f"Sparsity type {text!r}: N (weights kept per group) must satisfy 0 < N < M, got N={kept}, M={group}."
        )
    pattern = NMPattern(kept, group)
    if ratio is not None and not math.isclose(ratio, pattern.ratio, abs_tol=1e-9):
        raise ValueError(
            f"Sparsity type {text!r} keeps {kept} of every {group} weights, i.e. sparsity {pattern.ratio:g}; "
            f"the requested ratio {ratio!r} does not match."
        )
    return pattern
