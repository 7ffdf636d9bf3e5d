"""SparseGPT (Frantar & Alistarh 2023, arXiv 2301.00774): mask selection with optimal-brain-surgeon weight updates.

The layer-wise problem min ||W X - W' X||^2 over masked W' has Hessian H = 2 X X^T. Columns are swept
left to right; each pruned weight's error is spread over the not-yet-processed columns of its row
through the upper Cholesky factor U of H^-1 (§3.1, Algorithm 1 in §3.4). Which weights go is decided
once per block of `block_size` columns by the saliency w^2 / U_jj^2 (§3.2, adaptive mask selection),
or per group of M columns for N:M (§3.3).

The unstructured selection has two rules (`mask_selection`): `"row"` (the default) keeps the same
count in every output row of each column block (Wanda's comparison group, so every row has exactly
the requested sparsity); `"block"` ranks each column block over all its rows at once, as the release
(`tmp <= sort(tmp.flatten())[int(numel * sparsity)]`), but zeroes exactly the block's share of
floor(numel * ratio) weights where the release zeroes one more and its ties. H is averaged over tokens
rather than sequences (a common scale, which dampening relative to the diagonal makes irrelevant).
"""

from __future__ import annotations

import torch

from ..sparse.patterns import SPARSEGPT_MASK_SELECTIONS
from .masks import NMPattern, check_ratio, first_ranked, parse_sparsity_type, pruned_count


class HessianAccumulator:
    """H = 2/n * sum_t x_t x_t^T over the n calibration tokens of a Linear's input, in float32.

    float64 inputs are accumulated in float64: a float64 model is what makes runs with different
    batch sizes (different summation orders) agree to the last bit of the masks.
    """

    def __init__(self) -> None:
        self.count = 0
        self.hessian: torch.Tensor | None = None

    def update(self, inputs: torch.Tensor) -> None:
        """Add a batch `[..., in_features]` of inputs (every leading position is one token)."""
        x = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.promote_types(inputs.dtype, torch.float32))
        if self.hessian is None:
            self.hessian = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        total = self.count + x.shape[0]
        self.hessian.mul_(self.count / total).addmm_(x.T, x, alpha=2.0 / total)
        self.count = total


def _inverse_cholesky(hessian: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damping * mean(diag H) * I)^-1."""
    h = hessian.clone()
    h.diagonal().add_(damping * h.diagonal().mean())
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError as error:
        raise ValueError(
            f"The Hessian is not positive definite after dampening {damping!r}; use a larger damping "
            "or more calibration tokens."
        ) from error


def _block_selection(saliency: torch.Tensor, start: int, end: int, ratio: float, mask_selection: str) -> torch.Tensor:
    """Pruned-mask of the column block `[start, end)` from its saliency `w^2 / U_jj^2` `[rows, end - start]`.

    `"row"`: the block's share of each row's floor(cols * ratio); `"block"`: its share of the matrix's
    floor(rows * cols * ratio), ranked over all rows at once (the release's per-block threshold).
    Shares are differences of cumulative counts, so the totals are exact over uneven blocks.
    """
    rows = saliency.shape[0]
    if mask_selection == "row":
        share = pruned_count(end, ratio) - pruned_count(start, ratio)
        return first_ranked(saliency, torch.full((rows,), share, device=saliency.device), descending=False)
    share = pruned_count(rows * end, ratio) - pruned_count(rows * start, ratio)
    flat = first_ranked(saliency.reshape(1, -1), torch.full((1,), share, device=saliency.device), descending=False)
    return flat.reshape(saliency.shape)


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    ratio: float,
    pattern: NMPattern | None = None,
    block_size: int = 128,
    damping: float = 0.01,
    mask_selection: str = "row",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep-mask, updated weight) for `weight` `[out, in]` at sparsity `ratio`, N:M when `pattern` is given.

    `mask_selection` (unstructured only; N:M is chosen per row in every group of M) is `"row"`: each
    column block zeroes its share of floor(in * ratio) weights in every row, or `"block"`: its share
    of floor(out * in * ratio) weights over all rows at once, as the released code (§3.2).

    `hessian` is `HessianAccumulator.hessian` of the layer's inputs. Dead inputs (H_jj == 0) get
    H_jj = 1 and their weights are zeroed, as the release does (they never affect the output). The
    returned weight has the input's dtype and is zero wherever the mask is False.
    """
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian shape {tuple(hessian.shape)} does not match the weight's {cols} input features.")
    check_ratio(ratio)
    if pattern is not None:
        parse_sparsity_type(str(pattern), ratio)  # the ratio must be the pattern's
        if cols % pattern.group or block_size % pattern.group:
            raise ValueError(
                f"N:M pattern {pattern} needs in_features ({cols}) and block_size ({block_size}) "
                f"divisible by {pattern.group}."
            )
    if damping <= 0:
        raise ValueError(f"damping must be positive, got {damping!r}.")
    if mask_selection not in SPARSEGPT_MASK_SELECTIONS:
        raise ValueError(f"Unknown SparseGPT mask selection {mask_selection!r}; allowed: "
                         f"{', '.join(SPARSEGPT_MASK_SELECTIONS)}.")
    w = weight.detach().to(torch.promote_types(weight.dtype, torch.float32)).clone()  # float64 stays float64
    h = hessian.detach().to(device=w.device, dtype=w.dtype).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = _inverse_cholesky(h, damping)
    pruned = torch.zeros_like(w, dtype=torch.bool)

    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = w[:, start:end].clone()
        u_block = u[start:end, start:end]
        diag = u_block.diagonal()
        errors = torch.zeros_like(block)
        block_pruned = pruned[:, start:end]
        if pattern is None:  # the unstructured mask of the whole block, chosen before its sweep
            block_pruned |= _block_selection(block**2 / diag**2, start, end, ratio, mask_selection)
        for i in range(end - start):
            if pattern is not None and i % pattern.group == 0:
                group = slice(i, i + pattern.group)
                counts = torch.full((rows,), pattern.group - pattern.kept, device=w.device)
                block_pruned[:, group] = first_ranked(
                    block[:, group] ** 2 / diag[group] ** 2, counts, descending=False
                )
            column = block[:, i]
            quantized = column.masked_fill(block_pruned[:, i], 0.0)
            error = (column - quantized) / diag[i]
            block[:, i:] -= error.unsqueeze(1) * u_block[i, i:].unsqueeze(0)  # OBS update of the rest of the block
            block[:, i] = quantized
            errors[:, i] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ u[start:end, end:]  # lazy update of the columns after the block
    return ~pruned, w.to(weight.dtype)
