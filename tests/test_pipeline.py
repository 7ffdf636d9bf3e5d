"""The calibration pipeline on tiny models: propagation modes, gradients, per-layer masks, activation storage."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.architectures import get_architecture
from optimum_flap.engine import ActivationStore, CalibrationPipeline, ChannelStatistics, apply_layer_plan
from optimum_flap.engine.block_inputs import BlockBatch
from optimum_flap.methods.base import PruningMethod
from optimum_flap.plan import MaskLayerPlan, PruningPlan, StructuredLayerPlan

IDS = torch.tensor(calibration_ids(num_samples=8, seq_len=16))
BATCH = 4


def forward_in_batches(model, ids, batch_size, handles) -> None:
    """A plain full-model forward of `ids`, `batch_size` rows at a time; removes the hooks `handles` after."""
    try:
        with torch.no_grad():
            for start in range(0, ids.shape[0], batch_size):
                model(input_ids=ids[start:start + batch_size], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


def reference_layer_inputs(model, ids=IDS, batch_size=BATCH) -> list[list[torch.Tensor]]:
    """Per layer, the hidden states it receives in a plain forward of each batch (pre-hooks)."""
    layers = get_architecture(model).decoder_layers(model)
    seen: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [
        layer.register_forward_pre_hook(
            lambda _m, args, kwargs, i=i: seen[i].append((args[0] if args else kwargs["hidden_states"]).clone()),
            with_kwargs=True,
        )
        for i, layer in enumerate(layers)
    ]
    forward_in_batches(model, ids, batch_size, handles)
    return seen


def half_plan(model) -> StructuredLayerPlan:
    """Keep the even head groups and the even MLP channels."""
    kv_heads, width = model.config.num_key_value_heads, model.config.intermediate_size
    return StructuredLayerPlan(torch.arange(0, kv_heads, 2), torch.arange(0, width, 2))


class Recorder(PruningMethod):
    """Records what the pipeline shows it; returns `half_plan` from `block_done` unless propagation is dense."""

    name = "recorder"

    def __init__(self, model, propagation="dense") -> None:
        super().__init__(None, get_architecture(model))
        self.propagation = propagation
        self.model = model
        self.observed_inputs: list[list[torch.Tensor]] = []
        self.pruned_inputs: list[list[torch.Tensor]] = []

    def observers(self, block):
        self.observed_inputs.append([])
        self.pruned_inputs.append([])
        return {}

    def on_block_output(self, block, inputs, outputs):
        self.observed_inputs[block.index].append(inputs.clone())

    def on_pruned_block_output(self, block, inputs, outputs):
        self.pruned_inputs[block.index].append(inputs.clone())

    def block_done(self, block):
        return None if self.propagation == "dense" else half_plan(self.model)

    def finish(self, model):
        plans = [] if self.propagation == "dense" else [half_plan(model)] * len(self.observed_inputs)
        return PruningPlan("structured", plans)


def run(model, method, storage="device"):
    arch = get_architecture(model)
    pipeline = CalibrationPipeline(model, arch, IDS, BATCH, storage=storage,
                                   apply_plan=lambda layer, plan: apply_layer_plan(layer, arch, plan))
    return pipeline.run(method)


def assert_streams_equal(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert len(got) == len(want) == IDS.shape[0] // BATCH
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)


def test_dense_propagation_feeds_each_block_the_dense_hidden_states():
    model = tiny_model("llama-gqa")
    expected = reference_layer_inputs(model)
    method = Recorder(model, "dense")
    run(model, method)
    assert_streams_equal(method.observed_inputs, expected)
    assert not torch.allclose(expected[1][0], expected[2][0])  # the blocks really change the states


def test_pruned_propagation_feeds_each_block_the_pruned_outputs():
    model = tiny_model("llama-gqa")
    dense_reference = reference_layer_inputs(model)
    method = Recorder(model, "pruned")
    run(model, method)
    assert model.model.layers[0].mlp.down_proj.in_features == model.config.intermediate_size // 2
    expected = reference_layer_inputs(model)  # the model is now pruned
    assert_streams_equal(method.observed_inputs, expected)
    assert not torch.allclose(expected[2][0], dense_reference[2][0], atol=1e-4)


def test_both_streams_match_the_dense_and_the_pruned_model():
    model = tiny_model("qwen2")
    dense = copy.deepcopy(model)
    method = Recorder(model, "both")
    run(model, method)
    assert_streams_equal(method.observed_inputs, reference_layer_inputs(dense))
    assert_streams_equal(method.pruned_inputs, reference_layer_inputs(model))
    assert not torch.allclose(method.observed_inputs[2][0], method.pruned_inputs[2][0], atol=1e-4)


class GradientProbe(PruningMethod):
    """Differentiates a block-output loss with respect to `down_proj.weight` of block 1 on batch 0."""

    name = "gradient probe"
    needs_grad = True

    def __init__(self, model) -> None:
        super().__init__(None, get_architecture(model))
        self.gradient = None

    def block_done(self, block):
        if block.index == 1:
            loss = block.run(0).pow(2).mean()
            self.gradient = torch.autograd.grad(loss, block.module.mlp.down_proj.weight)[0]

    def finish(self, model):
        return PruningPlan("structured", [])


def test_gradient_enabled_block_run_matches_autograd_on_the_plain_block():
    model = tiny_model("llama-gqa").requires_grad_(False)
    block = copy.deepcopy(model.model.layers[1]).requires_grad_(True)
    captured = {}
    handle = model.model.layers[1].register_forward_pre_hook(
        lambda _m, args, kwargs: captured.setdefault("call", (args, kwargs)), with_kwargs=True)
    with torch.no_grad():
        model(input_ids=IDS[:BATCH], use_cache=False)
    handle.remove()
    args, kwargs = captured["call"]
    loss = block(*args, **kwargs)
    loss = (loss[0] if isinstance(loss, tuple) else loss).pow(2).mean()
    expected = torch.autograd.grad(loss, block.mlp.down_proj.weight)[0]

    probe = GradientProbe(model)
    run(model, probe)
    assert torch.isfinite(probe.gradient).all() and probe.gradient.abs().sum() > 0
    torch.testing.assert_close(probe.gradient, expected, atol=1e-7, rtol=1e-5)
    assert not model.model.layers[1].mlp.down_proj.weight.requires_grad  # restored after the block


class StatisticsProbe(PruningMethod):
    """ChannelStatistics of every block's o_proj and down_proj inputs."""

    name = "statistics probe"

    def __init__(self, model) -> None:
        super().__init__(None, get_architecture(model))
        self.stats: list[dict[str, ChannelStatistics]] = []

    def observers(self, block):
        self.stats.append({"self_attn.o_proj": ChannelStatistics(), "mlp.down_proj": ChannelStatistics()})
        return {path: s.update for path, s in self.stats[-1].items()}

    def finish(self, model):
        return PruningPlan("structured", [])


def forward_statistics(model) -> list[dict[str, ChannelStatistics]]:
    """The same statistics from forward pre-hooks on plain full-model forwards."""
    paths = ("self_attn.o_proj", "mlp.down_proj")
    stats = [{path: ChannelStatistics() for path in paths} for _ in model.model.layers]
    handles = [
        layer.get_submodule(path).register_forward_pre_hook(lambda _m, args, s=s: s.update(args[0]))
        for layer, per_layer in zip(model.model.layers, stats) for path, s in per_layer.items()
    ]
    forward_in_batches(model, IDS, BATCH, handles)
    return stats


def pipeline_statistics(model, storage="device") -> list[dict[str, ChannelStatistics]]:
    probe = StatisticsProbe(model)
    run(model, probe, storage)
    return probe.stats


def statistics_match(actual, expected) -> bool:
    return all(
        torch.allclose(a[path].mean, e[path].mean, atol=1e-6, rtol=1e-5)
        and torch.allclose(a[path].variance, e[path].variance, atol=1e-6, rtol=1e-5)
        for a, e in zip(actual, expected) for path in e
    )


SLIDING = dict(sliding_window=4, num_hidden_layers=4)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_each_layer_gets_the_mask_of_its_attention_type(attn_implementation, monkeypatch):
    model = tiny_model("qwen2", use_sliding_window=True, max_window_layers=2, **SLIDING)
    model.config._attn_implementation = attn_implementation
    assert set(model.config.layer_types) == {"full_attention", "sliding_attention"}
    expected = forward_statistics(model)
    assert statistics_match(pipeline_statistics(model), expected)

    # the former behaviour, block 0's mask for every layer, gives the sliding layers other statistics
    first = model.config.layer_types[0]
    monkeypatch.setattr(BlockBatch, "kwargs_for",
                        lambda self, _type: {**self.kwargs, "attention_mask": self.masks[first]})
    old = pipeline_statistics(model)
    assert statistics_match(old[:2], expected[:2])
    assert not statistics_match(old[2:], expected[2:])


def test_mistral_sliding_window_statistics_match_a_full_forward():
    model = tiny_model("mistral", **SLIDING)
    assert model.config.sliding_window < IDS.shape[1]
    assert statistics_match(pipeline_statistics(model), forward_statistics(model))


def test_activation_storage_does_not_change_statistics():
    model = tiny_model("llama-gqa")
    on_device = pipeline_statistics(model, "device")
    for storage in ("cpu", "disk"):
        other = pipeline_statistics(model, storage)
        for a, b in zip(on_device, other):
            for path in a:
                assert torch.equal(a[path].mean, b[path].mean) and torch.equal(a[path].variance, b[path].variance)


def test_disk_store_round_trips_and_cleans_up():
    store = ActivationStore("disk", torch.device("cpu"))
    tensor = torch.randn(2, 3, 4)
    store.put(0, tensor)
    directory = Path(store._directory.name)
    assert torch.equal(store.get(0), tensor) and len(list(directory.iterdir())) == 1
    store.close()
    assert not directory.exists()
    with pytest.raises(ValueError, match="allowed: device, cpu, disk"):
        ActivationStore("gpu", torch.device("cpu"))


def test_mask_plan_zeroes_masked_entries_and_copies_weights():
    model = tiny_model("llama-gqa")
    layer = model.model.layers[0]
    arch = get_architecture(model)
    weight = layer.mlp.up_proj.weight
    mask = torch.rand_like(weight) > 0.5
    new = torch.randn_like(weight)
    apply_layer_plan(layer, arch, MaskLayerPlan({"mlp.up_proj": mask}, {"mlp.up_proj": new}))
    assert torch.equal(layer.mlp.up_proj.weight, new * mask)
    with pytest.raises(ValueError, match="shape"):
        apply_layer_plan(layer, arch, MaskLayerPlan({"mlp.up_proj": mask.T}))


def test_pruner_result_does_not_depend_on_activation_storage():
    config = FlapConfig(dataset=calibration_ids(), batch_size=4, pruning_ratio=0.3)
    models = {}
    for storage in ("device", "disk"):
        models[storage] = FlapPruner(config, activations=storage).prune_model(tiny_model("qwen2"))
    for (name, a), b in zip(models["device"].state_dict().items(), models["disk"].state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="allowed: device, cpu, disk"):
        FlapPruner(config, activations="gpu")


def test_a_method_needing_data_without_ids_is_refused():
    model = tiny_model("llama-gqa")
    pipeline = CalibrationPipeline(model, get_architecture(model), None)
    with pytest.raises(ValueError, match="needs calibration data"):
        pipeline.run(Recorder(model))
