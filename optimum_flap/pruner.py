"""`FlapPruner`: load a model, calibrate, prune, and save, shaped like optimum's `GPTQQuantizer`."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
from torch import nn

from .accounting import achieved_ratio, decoder_linear_parameters, decoder_linear_weights, kept_parameters
from .architectures import attention_geometry, get_architecture
from .checkpoint import CheckpointPlan, save_pruned_model
from .configuration import FlapConfig
from .data import load_calibration_ids
from .engine import CalibrationPipeline, apply_layer_plan
from .engine.activations import STORAGES, Storage
from .layout import RECIPE_KEY, PruningLayout
from .methods import get_method_class
from .plan import MaskLayerPlan, PlanKind, PruningReport, StructuredLayerPlan
from .surgery import record_layout, record_sparsity

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

        get_architecture(AutoConfig.from_pretrained(model_name_or_path))
        model_kwargs.setdefault("dtype", "auto")
        pruner = cls(config, device=device)
        pruner.model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **model_kwargs)
        pruner.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        return pruner

    def prune(self) -> nn.Module:
        """Prune the model loaded by `from_pretrained`; returns it (also kept as `self.model`)."""
        if self.model is None:
            raise RuntimeError("No model loaded: use FlapPruner.from_pretrained(...) or prune_model(model, tokenizer).")
        return self.prune_model(self.model, self.tokenizer)

    def prune_model(self, model: nn.Module, tokenizer: Any = None, physical: bool = True) -> nn.Module:
        """Prune `model` in place and return it.

        With `physical=False` the dense shapes are kept and removed rows are zeroed instead (the same
        function, for inspection and comparison; such a model is not smaller).
        """
        arch = get_architecture(model)
        config = self.config
        start = time.perf_counter()
        decoder_before = decoder_linear_parameters(model, arch)
        total_before = sum(p.numel() for p in model.parameters())
        kind, plans = self._plans(model, arch, tokenizer, physical)
        layout = None
        if kind == "structured":  # a mask plan keeps every shape: there is no layout to record
            heads, kv_heads, _ = attention_geometry(model.config)
            layout = record_layout(model, arch, plans, heads // kv_heads)
        setattr(model.config, RECIPE_KEY, config.to_dict())
        if kind == "mask" or not physical:
            record_sparsity(model, arch)
        decoder_after = kept_parameters(model, arch, physical)
        if kind == "mask":  # the ratio of a sparse method is of weights zeroed (biases are not pruned)
            decoder_before, decoder_after = decoder_linear_weights(model, arch)
        self.report = PruningReport(
            method=config.method,
            structure=config.structure,
            kind=kind,
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

    def _plans(self, model: nn.Module, arch, tokenizer: Any, physical: bool) -> tuple[PlanKind, list]:
        """Run the method through the calibration pipeline, which applies each layer's plan in place.

        Returns the plan's kind ("structured" or "mask") and its layer plans.
        """
        config = self.config
        method_class = get_method_class(config.method)
        if config.pruning_ratio == 0 and not config.remove_heads:
            # nothing to remove: the model stays exactly as it was
            if method_class.plan_kind == "mask":
                return "mask", [MaskLayerPlan({}) for _ in arch.decoder_layers(model)]
            return "structured", [_keep_everything(model.config) for _ in arch.decoder_layers(model)]
        method = method_class(config, arch)
        method.check(model)
        ids = None
        if method.needs_calibration():
            ids = load_calibration_ids(config.dataset, tokenizer, config.num_samples, config.seq_len, config.seed)
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
        return plan.kind, plan.layers

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
        """LoRA recovery fine-tuning of a pruned model; returns it merged (or the PEFT model with `merge=False`).

        Keyword arguments (`merge`, `save_directory`, `resume_from_checkpoint`, ...) go to
        `optimum_flap.recovery.recover`, which returns the full `RecoveryResult`.
        """
        from .recovery import recover

        return recover(model, tokenizer, recovery_config, **kwargs).model


def _keep_everything(config) -> StructuredLayerPlan:
    _, kv_heads, _ = attention_geometry(config)
    return StructuredLayerPlan(torch.arange(kv_heads), torch.arange(config.intermediate_size))

