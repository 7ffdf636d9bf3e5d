"""`FlapPruner`: load a model, calibrate, prune, and save, shaped like optimum's `GPTQQuantizer`."""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any

import torch
from torch import nn

from .accounting import achieved_ratio, decoder_linear_parameters, kept_parameters
from .architectures import (
    MLP_OUTPUT,
    DecoderArchitecture,
    UnsupportedArchitectureError,
    attention_geometry,
    get_architecture,
)
from .checkpoint import CheckpointPlan, check_output_dir, save_pruned_model
from .configuration import FlapConfig
from .data import load_calibration_ids
from .engine import CalibrationPipeline, apply_layer_plan
from .engine.activations import STORAGES, Storage
from .layout import RECIPE_KEY, PruningLayout
from .methods import get_method_class
from .plan import PruningReport, StructuredLayerPlan
from .prunable import check_prunable
from .surgery import record_layout, record_sparsity
from .utils.model_ref import resolve_model_reference

logger = logging.getLogger(__name__)


class FlapPruner:
    """Prunes a transformers causal LM with the recipe in a `FlapConfig`.

    Use `FlapPruner.from_pretrained(model_id, config=...)` then `prune()`, or
    `FlapPruner(config).prune_model(model, tokenizer)` for a model already in memory.

    Args:
        config: the pruning recipe.
        device: where decoder blocks run during calibration (default: where the model is). A model
            kept on CPU can be calibrated on a GPU one block at a time.
        activations: where calibration hidden states wait between blocks: "device" (default), "cpu"
            or "disk" (one file per batch in a temporary directory), for calibration sets larger
            than the device's memory.
    """

    def __init__(
        self, config: FlapConfig, device: str | torch.device | None = None, activations: Storage = "device"
    ) -> None:
        if not isinstance(config, FlapConfig):
            raise TypeError(f"config must be a FlapConfig, got {type(config).__name__}.")
        if activations not in STORAGES:
            raise ValueError(f"Unknown activations storage {activations!r}; allowed: {', '.join(STORAGES)}.")
        self.config = config
        self.device = device
        self.activations = activations
        self.model: nn.Module | None = None
        self.tokenizer: Any = None
        self.report: PruningReport | None = None
        self.layout: PruningLayout | None = None

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        config: FlapConfig,
        device: str | torch.device | None = None,
        **model_kwargs: Any,
    ) -> FlapPruner:
        """Load a model and its tokenizer (keyword arguments go to `AutoModelForCausalLM.from_pretrained`)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        model_name_or_path = resolve_model_reference(model_name_or_path)  # a mistyped path fails now, not in 60 s
        get_architecture(AutoConfig.from_pretrained(model_name_or_path))
        model_kwargs.setdefault("dtype", "auto")
        pruner = cls(config, device=device)
        pruner.model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **model_kwargs)
        pruner.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        return pruner

    def prune(self, save_directory: str | os.PathLike | None = None, **save_kwargs: Any) -> nn.Module:
        """Prune the model loaded by `from_pretrained`; returns it (also kept as `self.model`).

        With `save_directory`, the directory is checked before pruning (so a run of minutes never ends
        on "directory not empty") and the pruned model is saved there afterwards; `save_kwargs`
        (`overwrite`, `checkpoint_format`, ...) go to `save_pretrained`.
        """
        if self.model is None:
            raise RuntimeError("No model loaded: use FlapPruner.from_pretrained(...) or prune_model(model, tokenizer).")
        if save_directory is not None:
            check_output_dir(save_directory, save_kwargs.get("overwrite", False))
        model = self.prune_model(self.model, self.tokenizer)
        if save_directory is not None:
            self.save_pretrained(save_directory, **save_kwargs)
        return model

    def prune_model(self, model: nn.Module, tokenizer: Any = None, physical: bool = True) -> nn.Module:
        """Prune `model` in place and return it.

        With `physical=False` the dense shapes are kept and removed rows are zeroed instead (the same
        function, for inspection and comparison; such a model is not smaller).

        An already pruned model can be pruned again: `pruning_ratio` is then a fraction of its current
        decoder parameters, and the recorded layout keeps naming head groups by their dense index.
        """
        arch = check_prunable(model)
        previous = PruningLayout.from_config(model.config)
        config = self.config
        start = time.perf_counter()
        decoder_before = decoder_linear_parameters(model, arch)
        total_before = sum(p.numel() for p in model.parameters())
        plans = self._plans(model, arch, tokenizer, physical)
        heads, kv_heads, _ = attention_geometry(model.config)
        layout = record_layout(model, arch, _relative_to_dense(plans, previous), heads // kv_heads)
        setattr(model.config, RECIPE_KEY, config.to_dict())
        if not physical:
            record_sparsity(model, arch)
        decoder_after = kept_parameters(model, arch, physical)
        self.report = PruningReport(
            method=config.method,
            structure=config.structure,
            target_ratio=config.pruning_ratio,
            achieved_ratio=achieved_ratio(decoder_before, decoder_after),
            decoder_parameters_before=decoder_before,
            decoder_parameters_after=decoder_after,
            parameters_before=total_before,
            parameters_after=sum(p.numel() for p in model.parameters()),
            seconds=time.perf_counter() - start,
        )
        logger.info(self.report.summary())
        self.model, self.tokenizer, self.layout = model, tokenizer, layout
        return model

    def _plans(self, model: nn.Module, arch, tokenizer: Any, physical: bool) -> list[StructuredLayerPlan]:
        """Run the method through the calibration pipeline, which applies each layer's plan in place."""
        config = self.config
        if config.pruning_ratio == 0 and not config.remove_heads:
            # nothing to remove: the model stays exactly as it was
            return [_keep_everything(layer, arch) for layer in arch.decoder_layers(model)]
        config = _keep_heads_where_required(model, arch, config)
        method = get_method_class(config.method)(config, arch)
        method.check(model)
        _log_fixed_attention(model, config)
        ids = None
        if method.needs_calibration():
            ids = load_calibration_ids(config.dataset, tokenizer, config.num_samples, config.seq_len, config.seed,
                                       vocab_size=model.config.vocab_size)
        pipeline = CalibrationPipeline(
            model, arch, ids, config.batch_size, device=self.device, storage=self.activations,
            apply_plan=lambda layer, plan: apply_layer_plan(layer, arch, plan, physical),
        )
        was_training, use_cache = model.training, getattr(model.config, "use_cache", None)
        model.eval()
        try:
            plan = pipeline.run(method)
        finally:
            model.train(was_training)
            if use_cache is not None:
                model.config.use_cache = use_cache
        for key, value in plan.config_records.items():
            setattr(model.config, key, value)
        return plan.layers

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> CheckpointPlan:
        """Save the pruned model, its tokenizer and the recipe (see `FlapPruner.save`)."""
        if self.model is None:
            raise RuntimeError("Nothing to save: prune a model first.")
        return self.save(self.model, save_directory, tokenizer=self.tokenizer, **kwargs)

    @staticmethod
    def save(
        model: nn.Module, save_directory: str | os.PathLike, tokenizer: Any = None, **kwargs: Any
    ) -> CheckpointPlan:
        """Write safetensors, the patched config, the tokenizer and the recipe to `save_directory`.

        Keyword arguments go to `save_pruned_model` (`overwrite`, `max_shard_size`, `checkpoint_format`);
        the returned plan says which checkpoint kind was written and why.
        """
        return save_pruned_model(model, save_directory, tokenizer=tokenizer, **kwargs)

    @staticmethod
    def recover(model: nn.Module, tokenizer: Any, recovery_config: Any, **kwargs: Any) -> nn.Module:
        """Recovery fine-tuning of a pruned model (LoRA or full; next-token labels, or distillation from the
        dense model with `RecoveryConfig(objective="distillation", teacher=...)`); returns it merged (or the
        PEFT model with `merge=False`).

        Keyword arguments (`merge`, `save_directory`, `resume_from_checkpoint`, ...) go to
        `optimum_flap.recovery.recover`, which returns the full `RecoveryResult` (timings, log history with
        the periodic held-out perplexities).
        """
        from .recovery import recover

        return recover(model, tokenizer, recovery_config, **kwargs).model


def _keep_heads_where_required(model: nn.Module, arch, config: FlapConfig) -> FlapConfig:
    """The recipe with every head group kept where the family cannot lose heads (OLMo-2); MLP channels still prune.

    A recipe that asks for heads by count (`remove_heads`) is refused before calibrating; the others
    run with `min_head_groups` raised to the model's key/value heads.
    """
    reason, min_groups = arch.head_removal_refused, getattr(config, "min_head_groups", None)
    _, kv_heads, _ = attention_geometry(model.config)
    if reason is None or min_groups is None or min_groups >= kv_heads:
        return config
    if config.remove_heads:
        raise UnsupportedArchitectureError(
            f"{arch.model_type}: attention heads cannot be removed because {reason}; got remove_heads="
            f"{config.remove_heads}. Use remove_heads=0, or a structure that sets its own head budget "
            "(UL-UM, AL-AM): every head is then kept and MLP channels are pruned."
        )
    logger.info("%s: keeping every attention head because %s; only MLP channels are pruned.", arch.model_type, reason)
    kept = copy.deepcopy(config)
    kept.min_head_groups = kv_heads
    return kept


def _log_fixed_attention(model: nn.Module, config: FlapConfig) -> None:
    """Say so when every layer's attention must stay whole: its minimum of head groups is all it has."""
    min_groups = getattr(config, "min_head_groups", None)
    _, kv_heads, _ = attention_geometry(model.config)
    if min_groups is not None and kv_heads <= min_groups:
        what = "one key/value head" if kv_heads == 1 else f"{kv_heads} key/value heads"
        logger.info(
            "%s: the model has %s per layer and every layer keeps min_head_groups=%d head group(s), so no "
            "attention head is removed; only MLP channels are pruned.", config.method, what, min_groups
        )


def _keep_everything(layer: nn.Module, arch: DecoderArchitecture) -> StructuredLayerPlan:
    """Keep every head group and channel the layer has now (an already pruned layer keeps its sizes)."""
    channels = arch.projections(layer)[MLP_OUTPUT].in_features
    return StructuredLayerPlan(torch.arange(arch.head_groups(layer)), torch.arange(channels))


def _relative_to_dense(plans: list[StructuredLayerPlan], previous: PruningLayout | None) -> list[StructuredLayerPlan]:
    """Plans whose kept head groups are dense indices: a re-pruned layer's index i is the i-th group it had kept.

    Only the recorded layout reads them; the plans applied to the modules index the layer as it was.
    """
    if previous is None or len(previous.layers) != len(plans):
        return plans
    if not all(isinstance(plan, StructuredLayerPlan) for plan in plans):
        return plans
    mapped = []
    for plan, before in zip(plans, previous.layers):
        if len(before.kept_head_groups) > int(plan.kept_groups.max()):
            dense = torch.tensor(before.kept_head_groups)[plan.kept_groups.cpu()]
            plan = StructuredLayerPlan(dense, plan.kept_channels)
        mapped.append(plan)
    return mapped
