"""2:4 sparse kernels for speed measurements: PyTorch's semi-structured sparse tensors on recent GPUs.

A 2:4 model (at most 2 non-zeros in every 4 consecutive weights along the input dimension) runs
faster only through kernels that skip the zeros. PyTorch's `torch.sparse.to_sparse_semi_structured`
provides them on NVIDIA GPUs of compute capability 8.0 or newer (fp16 / bf16). Everywhere else the
zeros go through dense kernels, and a speed report says that no sparse speed-up is measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

#: semi-structured sparse kernels need this CUDA compute capability (Ampere) or newer
MIN_CAPABILITY = (8, 0)


def is_two_four(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive weights along the input dimension has at most 2 non-zeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.detach().reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def two_four_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's Linear modules whose weight follows the 2:4 pattern, by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and is_two_four(m.weight)}


def unsupported_reason(device: torch.device) -> str | None:
    """Why 2:4 kernels cannot run on `device` (None when they can)."""
    if device.type != "cuda":
        return f"on {device.type} the zero weights run through dense kernels: no sparse speed-up is measured"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (f"compute capability {capability[0]}.{capability[1]} has no semi-structured sparse kernels "
                "(8.0 or newer needed): no sparse speed-up is measured")
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return "this PyTorch has no torch.sparse.to_sparse_semi_structured: no sparse speed-up is measured"
    return None


@contextmanager
def semi_structured_weights(model: nn.Module) -> Iterator[str]:
    """Run the model's 2:4 Linears through semi-structured sparse kernels inside the block; restore after.

    Yields a one-line description of what was done (or why nothing was), for the speed report.
    """
    linears = two_four_linears(model)
    device = next(model.parameters()).device
    if not linears:
        yield "no 2:4 Linear layers: dense kernels"
        return
    reason = unsupported_reason(device)
    if reason is not None:
        yield f"{len(linears)} 2:4 Linear layers; {reason}"
        return
    originals: dict[str, nn.Parameter] = {}
    failures = 0
    for name, linear in linears.items():
        try:
            sparse = torch.sparse.to_sparse_semi_structured(linear.weight.detach())
        except (RuntimeError, ValueError):  # shape or dtype the kernels do not take: stays dense
            failures += 1
            continue
        originals[name] = linear.weight
        linear.weight = nn.Parameter(sparse, requires_grad=False)
    try:
        skipped = f", {failures} left dense (shape or dtype not supported)" if failures else ""
        yield (f"2:4 semi-structured sparse kernels (torch.sparse.to_sparse_semi_structured) on {len(originals)} "
               f"of {len(linears)} 2:4 Linear layers{skipped}")
    finally:
        for name, weight in originals.items():
            linears[name].weight = weight
