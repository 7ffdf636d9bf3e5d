"""Refuse to write non-finite weights: the one check every writer runs before anything is published.

A NaN or inf weight gives NaN logits everywhere downstream, yet a file holding it saves, loads and even
"evaluates" (to perplexity `nan`) without complaint. The checkpoint writers (in memory and streamed),
the GGUF export and the teacher-logits cache therefore pass what they write through `check_finite`
(or `finite_stream`), which raises `NonFiniteError` naming the first bad tensor before the output is
moved into place, so nothing half-written or non-finite is left behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..methods.finite import NonFiniteError, non_finite_summary

__all__ = ["NonFiniteError", "check_finite", "check_finite_model", "finite_stream"]


def check_finite(name: str, tensor: torch.Tensor, action: str) -> None:
    """Raise `NonFiniteError` when floating-point `tensor` holds a NaN or inf (meta tensors are skipped).

    `action` says what is refused ("write the checkpoint", "export GGUF"...), `name` names the tensor.
    """
    if not tensor.is_floating_point():
        return
    problem = non_finite_summary(tensor.detach())
    if problem:
        raise NonFiniteError(
            f"Cannot {action}: tensor {name} ({tensor.dtype}) holds {problem}; only finite values are allowed. "
            "The model is broken (a learning rate too high, float16 overflow, or a corrupt checkpoint): "
            "fix or reload it and run again."
        )


def check_finite_model(model: nn.Module, action: str) -> None:
    """`check_finite` on every parameter and buffer of `model` (e.g. before evaluating or training it)."""
    for name, tensor in model.state_dict(keep_vars=True).items():
        check_finite(name, tensor, action)


def finite_stream(tensors: Iterable[tuple[str, torch.Tensor]], action: str) -> Iterator[tuple[str, torch.Tensor]]:
    """`tensors` unchanged, each checked by `check_finite` before it is handed on (for streamed writers)."""
    for name, tensor in tensors:
        check_finite(name, tensor, action)
        yield name, tensor
