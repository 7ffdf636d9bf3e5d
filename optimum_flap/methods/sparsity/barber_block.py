"""LLM-Barber's block objective: gradient statistics of one block, and the block's rebuilt masks.

As the released code (`lib/blockgpt.py`), for each calibration sample x (the *sparse* stream's block
input) the loss is L = MSE(y_sparse, B(x; W_dense)) with y_sparse = B(x; W * M) held constant, and the
gradient is taken at the **dense** weights. The block runs in float32 (float64 for a float64 block)
through `functional_call` on its own parameters (copies only when the model is not in that precision);
the module is never modified and no second copy of the model is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from .barber import (
    BARBER_GRANULARITIES,
    SquaredGradientMean,
    barber_scores,
    check_alpha,
    rebuild_masks,
    rebuild_n_m_mask,
)
from .masks import check_granularity


def _output(result: Any) -> torch.Tensor:
    """The hidden states of a block call (attention modules return a tuple)."""
    return result[0] if isinstance(result, tuple) else result


def _compute_dtype(block: nn.Module) -> torch.dtype:
    """float32, or float64 for a float64 block (the objective is never computed below float32)."""
    dtypes = {p.dtype for p in block.parameters() if p.is_floating_point()}
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _float_state(block: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`dtype` detached copies of the block's floating parameters and buffers (others unchanged)."""
    state = dict(block.named_parameters())
    state.update(block.named_buffers())
    return {name: t.detach().to(dtype) if t.is_floating_point() else t for name, t in state.items()}


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors (also inside tuples, e.g. rotary (cos, sin)) in `dtype`; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value


def _weight_names(block: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Module path -> parameter name of its weight, checking every mask names a weight of its shape."""
    modules = dict(block.named_modules())
    names = {}
    for path, mask in masks.items():
        module = modules.get(path)
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise ValueError(
                f"Mask {path!r} names no module with a weight in the block; modules: {sorted(modules)[1:]}."
            )
        if module.weight.shape != mask.shape:
            raise ValueError(f"Mask {path!r} has shape {tuple(mask.shape)}, its weight {tuple(module.weight.shape)}.")
        names[path] = f"{path}.weight" if path else "weight"  # "" is the block itself
    return names


#: one calibration sample: the block input, or (block input, keyword arguments for this sample's call)
Sample = torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]


def _call_arguments(sample: Sample, block_kwargs: Mapping[str, Any],
                    dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, Any]]:
    x, own = sample if isinstance(sample, tuple) else (sample, {})
    return x.to(dtype), {name: _cast(value, dtype) for name, value in {**block_kwargs, **own}.items()}


def dense_gradient_statistics(
    block: nn.Module,
    samples: Iterable[Sample],
    masks: Mapping[str, torch.Tensor],
    block_kwargs: Mapping[str, Any] | None = None,
    sparse_weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """E_n[g_n^2] for each masked weight, g_n = dL_n/dW at W_dense, L_n = MSE(B(x_n; W*M), B(x_n; W_dense)).

    `samples` holds the block inputs, one calibration sample per element, each optionally paired with
    its own call keywords; `block_kwargs` go to every block call (position embeddings, attention mask);
    `masks` maps module paths inside the block to keep-masks. `sparse_weights` replaces W*M in the
    sparse block (SparseGPT's reconstructed weights). Memory: the sparse targets are computed first,
    then the masked copies are freed; the gradient is taken on the block's own (float32) weights, so
    beyond activations at most two weight-sized tensors per masked matrix live at once (E[g^2], g).
    """
    names = _weight_names(block, masks)
    samples = list(samples)
    if not samples:
        raise ValueError("No calibration samples were given to the Barber objective.")
    dtype = _compute_dtype(block)
    state = _float_state(block, dtype)
    given = dict(sparse_weights or {})
    sparse_state = {
        **state,
        **{names[p]: (given[p] if p in given else state[names[p]] * m).to(state[names[p]]) for p, m in masks.items()},
    }
    common = dict(block_kwargs or {})
    with torch.no_grad():
        targets = [_output(functional_call(block, sparse_state, (x,), kwargs))
                   for x, kwargs in (_call_arguments(s, common, dtype) for s in samples)]
    del sparse_state
    dense_weights = {names[p]: state[names[p]].detach().requires_grad_(True) for p in masks}
    dense_state = {**state, **dense_weights}
    statistics = {path: SquaredGradientMean() for path in masks}
    with torch.enable_grad():
        for sample, target in zip(tqdm(samples, desc="Barber gradients", leave=False), targets):
            x, kwargs = _call_arguments(sample, common, dtype)
            loss = nn.functional.mse_loss(target, _output(functional_call(block, dense_state, (x,), kwargs)))
            grads = torch.autograd.grad(loss, list(dense_weights.values()))
            for path, grad in zip(masks, grads):
                statistics[path].update(grad)
            del grads
    return {path: s.mean_square for path, s in statistics.items()}


def rebuild_block_masks(
    block: nn.Module,
    samples: Iterable[Sample],
    masks: Mapping[str, torch.Tensor],
    alpha: float,
    granularity: str = "output1",
    n_m_group: int | None = None,
    block_kwargs: Mapping[str, Any] | None = None,
    sparse_weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The block's rebuilt keep-masks from its dense weights, its initial masks and calibration inputs.

    Unstructured masks are rebuilt at `granularity` (`barber.BARBER_GRANULARITIES`); N:M masks
    (`n_m_group` = M) per output row with the in-group rebuild, which requires "output1" as the release.
    `sparse_weights` are the sparse block's weights where they are not W*M (see `dense_gradient_statistics`).
    """
    if n_m_group is not None and granularity != "output1":
        raise ValueError(f"N:M masks are rebuilt per output row; granularity must be 'output1', got {granularity!r}.")
    check_granularity(granularity, BARBER_GRANULARITIES)  # before the gradient pass, not after it
    check_alpha(alpha)
    gradients = dense_gradient_statistics(block, samples, masks, block_kwargs, sparse_weights)
    modules = dict(block.named_modules())
    scores = {}
    for path in masks:  # each statistic is freed once scored: one weight-sized float per matrix at a time
        scores[path] = barber_scores(modules[path].weight, gradients.pop(path))
    initial = {path: mask.to(scores[path].device) for path, mask in masks.items()}  # on the weights' device
    if n_m_group is not None:
        return {path: rebuild_n_m_mask(scores[path], initial[path], alpha, n_m_group) for path in masks}
    rebuilt = rebuild_masks([(scores[path], initial[path]) for path in masks], alpha, granularity)
    return dict(zip(masks, rebuilt))
