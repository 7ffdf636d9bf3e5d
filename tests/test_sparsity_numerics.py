"""Numerics of unstructured / N:M sparsity: masks, Wanda, SparseGPT and LLM-Barber's rebuild (pure tensors)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRotaryEmbedding

from optimum_flap.engine.statistics import ChannelStatistics
from optimum_flap.methods.sparsity import (
    HessianAccumulator,
    NMPattern,
    SquaredGradientMean,
    dense_gradient_statistics,
    follows_n_m,
    input_norm,
    magnitude_scores,
    n_m_mask,
    parse_sparsity_type,
    rebuild_block_masks,
    rebuild_mask,
    rebuild_masks,
    rebuild_n_m_mask,
    sparsegpt_prune,
    unstructured_mask,
    wanda_scores,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _correlated_inputs(tokens: int, features: int, seed: int = 0) -> torch.Tensor:
    """Tokens whose channels are mixed (correlated) and unevenly scaled, as real activations are."""
    g = _generator(seed)
    mix = torch.randn(features, features, generator=g) / features**0.5 + torch.eye(features)
    return torch.randn(tokens, features, generator=g) @ mix * (0.2 + 3 * torch.rand(features, generator=g))


# ---------------------------------------------------------------- sparsity types and masks


def test_parse_sparsity_type_counts_kept_weights():
    assert parse_sparsity_type("unstructured", 0.7) is None
    assert parse_sparsity_type("2:4", 0.5) == NMPattern(2, 4)
    assert parse_sparsity_type("4:8").ratio == 0.5
    assert parse_sparsity_type("1:4").ratio == 0.75
    assert parse_sparsity_type("3:8", 0.625) == NMPattern(3, 8)


@pytest.mark.parametrize(
    ("text", "ratio", "message"),
    [("4:4", None, "0 < N < M"), ("0:4", None, "0 < N < M"), ("5:4", None, "0 < N < M"),
     ("2-4", None, "neither"), ("a:b", None, "neither"), ("2:4", 0.3, "does not match"),
     ("unstructured", 1.0, r"\[0, 1\)")],
)
def test_parse_sparsity_type_rejects(text, ratio, message):
    with pytest.raises(ValueError, match=message):
        parse_sparsity_type(text, ratio)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_unstructured_mask_exact_per_group_and_keeps_the_best(ratio):
    scores = torch.rand(24, 50, generator=_generator())
    rows = unstructured_mask(scores, ratio, "output1")
    assert (rows.sum(1) == 50 - int(50 * ratio + 1e-9)).all()
    for row_scores, keep in zip(scores, rows):
        assert row_scores[keep].min() > row_scores[~keep].max()
    columns = unstructured_mask(scores, ratio, "input1")
    assert (columns.sum(0) == 24 - int(24 * ratio + 1e-9)).all()
    assert scores.T[0][columns[:, 0]].min() > scores.T[0][~columns[:, 0]].max()
    layer = unstructured_mask(scores, ratio, "layer")
    assert layer.sum() == 1200 - int(1200 * ratio + 1e-9)
    assert scores[layer].min() > scores[~layer].max()


def test_unstructured_mask_exact_with_ties_and_rejects_bad_input():
    tied = torch.ones(4, 10)
    assert (unstructured_mask(tied, 0.5).sum(1) == 5).all()
    with pytest.raises(ValueError, match="granularity"):
        unstructured_mask(tied, 0.5, "row")
    with pytest.raises(ValueError, match="NaN"):
        unstructured_mask(torch.full((2, 4), float("nan")), 0.5)


@pytest.mark.parametrize(("kept", "group"), [(2, 4), (4, 8), (1, 4)])
def test_n_m_mask_pattern_in_every_group(kept, group):
    scores = torch.rand(16, 64, generator=_generator(1))
    keep = n_m_mask(scores, kept, group)
    assert follows_n_m(keep, kept, group)
    grouped_scores, grouped_keep = scores.reshape(16, -1, group), keep.reshape(16, -1, group)
    kept_min = grouped_scores.masked_fill(~grouped_keep, float("inf")).min(-1).values
    pruned_max = grouped_scores.masked_fill(grouped_keep, float("-inf")).max(-1).values
    assert (kept_min > pruned_max).all()
    with pytest.raises(ValueError, match="divisible by"):
        n_m_mask(torch.rand(4, 10), kept, group)


def test_wanda_and_magnitude_scores():
    x = _correlated_inputs(300, 12)
    weight = torch.randn(5, 12, generator=_generator(2))
    statistics = ChannelStatistics()
    for chunk in x.reshape(3, 100, 12):
        statistics.update(chunk)
    expected = weight.abs() * x.norm(dim=0)
    torch.testing.assert_close(wanda_scores(weight, input_norm(statistics)), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(magnitude_scores(-weight), weight.abs())
    with pytest.raises(ValueError, match="Input norm"):
        wanda_scores(weight, torch.ones(5))


# ---------------------------------------------------------------- SparseGPT


def test_hessian_accumulator_is_twice_the_token_mean_of_outer_products():
    x = _correlated_inputs(240, 10)
    accumulator = HessianAccumulator()
    for chunk in x.split([100, 40, 100]):
        accumulator.update(chunk.reshape(-1, 5, 10) if len(chunk) == 100 else chunk)
    torch.testing.assert_close(accumulator.hessian, 2 * x.T @ x / 240, rtol=1e-4, atol=1e-4)
    assert accumulator.count == 240


def _sparsegpt_setup(features: int = 192, rows: int = 48):
    x = _correlated_inputs(1024, features, seed=3)
    weight = torch.randn(rows, features, generator=_generator(4))
    hessian, statistics = HessianAccumulator(), ChannelStatistics()
    for chunk in x.split(256):
        hessian.update(chunk)
        statistics.update(chunk)
    return x, weight, hessian.hessian, wanda_scores(weight, input_norm(statistics))


def _reconstruction_error(x: torch.Tensor, weight: torch.Tensor, pruned: torch.Tensor) -> float:
    return float(((x @ (weight - pruned).T) ** 2).sum())


@pytest.mark.parametrize("sparsity_type", ["unstructured", "2:4", "4:8"])
def test_sparsegpt_beats_wanda_with_exact_sparsity(sparsity_type):
    x, weight, hessian, scores = _sparsegpt_setup()
    pattern = parse_sparsity_type(sparsity_type, 0.5)
    keep, updated = sparsegpt_prune(weight, hessian, 0.5, pattern, block_size=64)
    if pattern is None:
        assert (keep.sum(1) == 96).all()
        wanda = unstructured_mask(scores, 0.5)
    else:
        assert follows_n_m(keep, pattern.kept, pattern.group)
        wanda = n_m_mask(scores, pattern.kept, pattern.group)
    assert (updated[~keep] == 0).all()
    sparsegpt_error = _reconstruction_error(x, weight, updated)
    wanda_error = _reconstruction_error(x, weight, weight * wanda)
    assert sparsegpt_error < 0.9 * wanda_error


def test_sparsegpt_row_sparsity_exact_across_blocks_and_dead_inputs():
    x, weight, hessian, _ = _sparsegpt_setup(features=200)
    keep, updated = sparsegpt_prune(weight, hessian, 0.3, block_size=128)  # blocks of 128 and 72 columns
    assert (keep.sum(1) == 200 - 60).all()
    unchanged_mask, unchanged = sparsegpt_prune(weight, hessian, 0.0)
    assert unchanged_mask.all()
    torch.testing.assert_close(unchanged, weight)
    x[:, 7] = 0  # a dead input channel: finite result, its weights zeroed
    dead = HessianAccumulator()
    dead.update(x)
    keep, updated = sparsegpt_prune(weight, dead.hessian, 0.5)
    assert torch.isfinite(updated).all() and (updated[:, 7] == 0).all()
    with pytest.raises(ValueError, match="divisible"):
        sparsegpt_prune(weight, hessian, 1 / 3, NMPattern(2, 3))
    with pytest.raises(ValueError, match="does not match"):
        sparsegpt_prune(weight, hessian, 0.3, NMPattern(2, 4))


def test_sparsegpt_block_selection_exact_total_across_uneven_blocks():
    """"block" ranks each column block over all rows: rows differ, each block and the matrix are exact."""
    x, weight, hessian, scores = _sparsegpt_setup(features=200)
    keep, updated = sparsegpt_prune(weight, hessian, 0.3, block_size=128, mask_selection="block")
    rows = weight.shape[0]
    assert int((~keep[:, :128]).sum()) == math.floor(rows * 128 * 0.3)  # 1843 of 6144
    assert int((~keep).sum()) == math.floor(rows * 200 * 0.3)  # the second block's share makes it exact
    assert len(set((~keep).sum(1).tolist())) > 1
    assert (updated[~keep] == 0).all()
    row_keep, _ = sparsegpt_prune(weight, hessian, 0.3, block_size=128)
    assert not torch.equal(keep, row_keep)
    assert _reconstruction_error(x, weight, updated) < 0.9 * _reconstruction_error(
        x, weight, weight * unstructured_mask(scores, 0.3))
    with pytest.raises(ValueError, match="'column'; allowed: row, block"):
        sparsegpt_prune(weight, hessian, 0.3, mask_selection="column")


# ---------------------------------------------------------------- LLM-Barber rebuild


def _released_rule(scores: torch.Tensor, keep: torch.Tensor, alpha: float) -> torch.Tensor:
    """The released `mask_rebuild` thresholds for one group (valid without ties): revive S > g_k, prune S < p_k."""
    growth = scores[~keep].sort(descending=True).values
    shrink = scores[keep].sort().values
    length = min(len(growth), len(shrink))
    k = int(int((growth[:length] > shrink[:length]).sum()) * alpha)
    new = keep.clone()
    new[~keep & (scores > growth[k])] = True
    new[keep & (scores < shrink[k])] = False
    return new


@pytest.mark.parametrize("granularity", ["output1", "input1", "layer"])
def test_rebuild_matches_released_rule_and_keeps_counts(granularity):
    g = _generator(5)
    scores = torch.rand(12, 40, generator=g)
    keep = unstructured_mask(torch.rand(12, 40, generator=g), 0.5, granularity)  # a poor mask: many swaps
    new = rebuild_mask(scores, keep, 0.4, granularity)
    if granularity == "output1":
        assert torch.equal(new.sum(1), keep.sum(1))
        expected = torch.stack([_released_rule(s, k, 0.4) for s, k in zip(scores, keep)])
    elif granularity == "input1":
        assert torch.equal(new.sum(0), keep.sum(0))
        expected = torch.stack([_released_rule(s, k, 0.4) for s, k in zip(scores.T, keep.T)]).T
    else:
        assert new.sum() == keep.sum()
        expected = _released_rule(scores.flatten(), keep.flatten(), 0.4).reshape(12, 40)
    assert torch.equal(new, expected)
    assert (new & ~keep).sum() > 0
    assert torch.equal(rebuild_mask(scores, keep, 0.0, granularity), keep)


def test_rebuild_with_ties_swaps_equal_numbers():
    g = _generator(6)
    scores = torch.randint(0, 3, (10, 32), generator=g).float()  # heavy ties
    keep = unstructured_mask(torch.rand(10, 32, generator=g), 0.5)
    for alpha in (0.3, 0.7, 1.0):
        new = rebuild_mask(scores, keep, alpha)
        assert torch.equal(new.sum(1), keep.sum(1))
        assert ((new & ~keep).sum(1) == (keep & ~new).sum(1)).all()
        assert (new & ~keep).any()


def test_rebuild_block_pools_matrices():
    g = _generator(7)
    pairs = [(torch.rand(8, 16, generator=g) * scale, unstructured_mask(torch.rand(8, 16, generator=g), 0.5))
             for scale in (1.0, 3.0)]
    new = rebuild_masks(pairs, 0.5, "block")
    assert sum(int(m.sum()) for m in new) == sum(int(k.sum()) for _, k in pairs)
    assert new[1].sum() > pairs[1][1].sum()  # the higher-scored matrix wins weights from the other
    separate = rebuild_masks(pairs, 0.5, "layer")
    assert all(m.sum() == k.sum() for m, (_, k) in zip(separate, pairs))
    with pytest.raises(ValueError, match="alpha"):
        rebuild_masks(pairs, 1.5, "block")
    with pytest.raises(ValueError, match="granularity"):
        rebuild_masks(pairs, 0.5, "row")


@pytest.mark.parametrize(("kept", "group"), [(2, 4), (4, 8), (1, 4), (3, 4)])
def test_rebuild_n_m_keeps_the_pattern(kept, group):
    g = _generator(8)
    scores = torch.rand(16, 32, generator=g)
    keep = n_m_mask(torch.rand(16, 32, generator=g), kept, group)
    new = rebuild_n_m_mask(scores, keep, 0.5, group)
    assert follows_n_m(new, kept, group)
    assert (new & ~keep).sum() > 0
    grouped = scores.reshape(16, -1, group)
    dropped, stayed = (keep & ~new).reshape(16, -1, group), (keep & new).reshape(16, -1, group)
    dropped_max = grouped.masked_fill(~dropped, float("-inf")).max(-1).values
    stayed_min = grouped.masked_fill(~stayed, float("inf")).min(-1).values
    assert (dropped_max < stayed_min).all()  # each group drops its worst originally kept weights
    if kept * 2 == group:  # revived weights are the row's best pruned ones, as in the release
        for row in range(16):
            revived = scores[row][new[row] & ~keep[row]]
            not_revived = scores[row][~new[row] & ~keep[row]]
            assert revived.min() > not_revived.max()


def test_squared_gradient_mean():
    grads = torch.randn(5, 3, 4, generator=_generator(9))
    mean = SquaredGradientMean()
    for grad in grads:
        mean.update(grad)
    torch.testing.assert_close(mean.mean_square, (grads**2).mean(0))


# ---------------------------------------------------------------- Barber's block objective


def test_dense_gradient_is_taken_at_dense_weights_against_the_sparse_output():
    linear = torch.nn.Linear(6, 4, bias=False)
    keep = unstructured_mask(torch.rand(4, 6, generator=_generator(10)), 0.5)
    x = torch.randn(3, 5, 6, generator=_generator(11))
    before = linear.weight.detach().clone()
    statistics = dense_gradient_statistics(linear, [x], {"": keep})
    w = before
    error = x @ (w - w * keep).T  # dense minus sparse output
    expected = 2 * torch.einsum("bto,bti->oi", error, x) / error.numel()
    torch.testing.assert_close(statistics[""], expected**2)
    assert torch.equal(linear.weight, before) and linear.weight.grad is None
    with pytest.raises(ValueError, match="names no module"):
        dense_gradient_statistics(linear, [x], {"proj": keep})


@pytest.fixture(scope="module")
def tiny_mlp():
    """A tiny LlamaMLP, calibration inputs from a fixed seed, and each projection's input statistics."""
    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=64, intermediate_size=128)).eval()
    samples = [_correlated_inputs(32, 64, seed=20 + i).unsqueeze(0) for i in range(24)]
    statistics = {name: ChannelStatistics() for name in ("gate_proj", "up_proj", "down_proj")}
    hooks = [getattr(mlp, name).register_forward_hook(lambda m, i, o, name=name: statistics[name].update(i[0]))
             for name in statistics]
    with torch.no_grad():
        for x in samples:
            mlp(x)
    for hook in hooks:
        hook.remove()
    return mlp, samples, statistics


def _block_error(
    block: torch.nn.Module, samples: list[torch.Tensor], masks: dict[str, torch.Tensor], kwargs: dict | None = None
) -> float:
    """Sum over samples of MSE(B(x; W * M), B(x; W))."""
    state = dict(block.state_dict())
    sparse = {**state, **{f"{name}.weight": state[f"{name}.weight"] * keep for name, keep in masks.items()}}
    kwargs = kwargs or {}
    with torch.no_grad():
        return sum(
            float(torch.nn.functional.mse_loss(_hidden(functional_call(block, sparse, (x,), kwargs)),
                                               _hidden(block(x, **kwargs))))
            for x in samples
        )


def _hidden(result):
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.parametrize(
    ("sparsity_type", "granularity"),
    [("unstructured", "output1"), ("unstructured", "input1"), ("unstructured", "layer"), ("unstructured", "block"),
     ("2:4", "output1"), ("4:8", "output1")],
)
def test_barber_keeps_sparsity_and_lowers_block_error(tiny_mlp, sparsity_type, granularity):
    mlp, samples, statistics = tiny_mlp
    pattern = parse_sparsity_type(sparsity_type, 0.5)
    initial = {}
    for name, stats in statistics.items():
        scores = wanda_scores(getattr(mlp, name).weight, input_norm(stats))
        if pattern is None:
            initial[name] = unstructured_mask(scores, 0.5)
        else:
            initial[name] = n_m_mask(scores, pattern.kept, pattern.group)
    rebuilt = rebuild_block_masks(mlp, samples, initial, 0.2, granularity, pattern and pattern.group)

    for name, keep in rebuilt.items():
        old = initial[name]
        if pattern is not None:
            assert follows_n_m(keep, pattern.kept, pattern.group)
        elif granularity == "output1":
            assert torch.equal(keep.sum(1), old.sum(1))
        elif granularity == "input1":
            assert torch.equal(keep.sum(0), old.sum(0))
        elif granularity == "layer":
            assert keep.sum() == old.sum()
    assert sum(int(k.sum()) for k in rebuilt.values()) == sum(int(k.sum()) for k in initial.values())
    swaps = sum(int((rebuilt[name] & ~initial[name]).sum()) for name in rebuilt)
    assert swaps > 0
    assert _block_error(mlp, samples, rebuilt) < _block_error(mlp, samples, initial)


def test_barber_rejects_bad_arguments_before_calibrating(tiny_mlp):
    mlp, _, _ = tiny_mlp

    def never_read():
        raise AssertionError("calibration samples were read before the arguments were checked")
        yield

    masks = {"up_proj": n_m_mask(mlp.up_proj.weight.abs(), 2, 4)}
    with pytest.raises(ValueError, match="output1"):
        rebuild_block_masks(mlp, never_read(), masks, 0.1, "layer", 4)
    with pytest.raises(ValueError, match="granularity"):
        rebuild_block_masks(mlp, never_read(), masks, 0.1, "row")
    with pytest.raises(ValueError, match="alpha"):
        rebuild_block_masks(mlp, never_read(), masks, 2.0)


def test_barber_attention_block_with_block_kwargs():
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)
    torch.manual_seed(1)
    attention = LlamaAttention(config, layer_idx=0).eval()
    samples = [_correlated_inputs(16, 64, seed=40 + i).unsqueeze(0) for i in range(8)]
    kwargs = {"position_embeddings": LlamaRotaryEmbedding(config)(samples[0], torch.arange(16)[None]),
              "attention_mask": None}
    masks = {name: unstructured_mask(getattr(attention, name).weight.abs(), 0.5)
             for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    rebuilt = rebuild_block_masks(attention, samples, masks, 0.2, "block", block_kwargs=kwargs)
    assert sum(int(k.sum()) for k in rebuilt.values()) == sum(int(k.sum()) for k in masks.values())
    assert sum(int((rebuilt[name] & ~masks[name]).sum()) for name in rebuilt) > 0
    assert _block_error(attention, samples, rebuilt, kwargs) < _block_error(attention, samples, masks, kwargs)
