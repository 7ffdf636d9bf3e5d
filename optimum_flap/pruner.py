"""`FlapPruner`: load a model, calibrate, prune, and save, shaped like optimum's `GPTQQuantizer`."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .accounting import achieved_ratio, decoder_linear_parameters, decoder_linear_weights, kept_parameters
from .architectures import (
    MLP_OUTPUT,
    DecoderArchitecture,
    UnsupportedArchitectureError,
    attention_geometry,
    get_architecture,
)
from .checkpoint import CheckpointPlan, check_output_dir, plan_checkpoint, pruned_model_class, save_pruned_model
from .checkpoint.integrity import check_checkpoint_fits_config
from .checkpoint.save import DENSE_SIZES_KEY, checkpoint_config
from .checkpoint.save import source_directory as _source_directory
from .checkpoint.target import check_apart
from .configuration import FlapConfig
from .data import CalibrationDataError, check_positions, is_token_ids, load_calibration_ids
from .engine import CalibrationPipeline, apply_layer_plan
from .engine.activations import STORAGES, Storage
from .engine.distributed import distributed_world, is_main_process, shard_for_rank
from .engine.residence import StreamedBlocks
from .layout import RECIPE_KEY, PruningLayout
from .methods import get_method_class
from .plan import MaskLayerPlan, ModelShapePlan, PlanKind, PruningReport, StructuredLayerPlan
from .prunable import check_prunable
from .surgery import apply_model_shape, record_layout, record_sparsity
from .utils.devices import resolve_device
from .utils.model_ref import resolve_model_reference

if TYPE_CHECKING:
    from .streaming import StreamedCheckpoint

logger = logging.getLogger(__name__)


class FlapPruner:
    """Prunes a transformers causal LM with the recipe in a `FlapConfig`.

    Use `FlapPruner.from_pretrained(model_id, config=...)` then `prune()`, or
    `FlapPruner(config).prune_model(model, tokenizer)` for a model already in memory (or dispatched
    by accelerate, layers on "cpu" or "disk" included). `from_pretrained(path, config=...,
    offload_folder=DIR)` streams a local checkpoint block by block instead of loading it.

    Under torch.distributed (`torchrun`, `accelerate launch`) each rank calibrates on its share of
    the samples, the statistics are merged exactly, every rank gets the same plan and only rank 0 saves.

    Args:
        config: the pruning recipe.
        device: where decoder blocks run during calibration (default: where the model is). A model
            kept on CPU or disk can be calibrated on a GPU one block at a time. A device this machine
            does not have is refused here, with the devices it has.
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
        self.device = resolve_device(device)
        self.activations = activations
        #: the checkpoint being streamed when `from_pretrained` got an `offload_folder` (else None)
        self.streamed: StreamedCheckpoint | None = None
        self.model: nn.Module | None = None
        self.tokenizer: Any = None
        self.report: PruningReport | None = None
        self.layout: PruningLayout | None = None
        #: (samples, tokens) of the calibration batch the last prune ran on (None: no calibration)
        self._calibrated_shape: tuple[int, int] | None = None

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        config: FlapConfig,
        device: str | torch.device | None = None,
        activations: Storage = "device",
        offload_folder: str | os.PathLike | None = None,
        **model_kwargs: Any,
    ) -> FlapPruner:
        """Load a model and its tokenizer (keyword arguments go to `AutoModelForCausalLM.from_pretrained`).

        With `offload_folder` and no `device_map`, nothing is loaded: the model is a skeleton on the
        meta device over the local safetensors checkpoint (`streaming.StreamedCheckpoint`), `prune()`
        reads, calibrates and prunes one decoder block at a time (pruned blocks go to `offload_folder`)
        and `save_pretrained` writes shard by shard. With a `device_map`, `offload_folder` goes to
        transformers, for the layers accelerate places on "disk".
        """
        model_name_or_path = resolve_model_reference(model_name_or_path)  # a mistyped path fails now, not in 60 s
        model_class = pruned_model_class(model_name_or_path, model_kwargs)  # a pruned checkpoint: our class
        model_config = checkpoint_config(model_name_or_path, model_class)
        get_architecture(model_config)
        pruner = cls(config, device=device, activations=activations)
        tokenizer = _load_tokenizer(model_name_or_path, model_config, config)  # before the model: fails now
        model_kwargs.setdefault("dtype", "auto")
        if offload_folder is not None:  # block files must never land in the checkpoint being read
            check_apart(offload_folder, {"model": model_name_or_path}, "offload_folder")
        rank, world_size = distributed_world()
        if offload_folder is not None and world_size > 1:  # ranks write the same files: one folder each
            offload_folder = os.path.join(offload_folder, f"rank{rank}")
        if offload_folder is not None and model_kwargs.get("device_map") is None:
            from .streaming import StreamedCheckpoint

            unused = sorted(set(model_kwargs) - {"dtype", "device_map"})
            if unused:
                raise ValueError(f"Streaming from {model_name_or_path} takes no {', '.join(unused)}; "
                                 "allowed: dtype (or device_map to load with accelerate instead).")
            dtype = model_kwargs["dtype"]
            if isinstance(dtype, str) and dtype != "auto":
                dtype = getattr(torch, dtype, dtype)
            if dtype != "auto" and not isinstance(dtype, torch.dtype):
                raise ValueError(f"dtype={dtype!r} is not a torch dtype; use e.g. 'bfloat16', torch.float16 or 'auto'.")
            pruner.streamed = StreamedCheckpoint(
                model_name_or_path, dtype=None if dtype == "auto" else dtype, offload_folder=offload_folder
            )
            pruner.streamed.load_non_block()
            pruner.model = pruner.streamed.model
        else:
            run_folder = None
            if offload_folder is not None:  # a folder of this run only: weight files are named by tensor
                from .streaming import run_offload_folder

                run_folder = model_kwargs["offload_folder"] = str(run_offload_folder(offload_folder))
            if os.path.isdir(model_name_or_path) and "gguf_file" not in model_kwargs:  # else re-initialised or dropped
                check_checkpoint_fits_config(model_name_or_path, model_class, model_config)
            try:
                pruner.model = model_class.from_pretrained(model_name_or_path, **model_kwargs)
            except BaseException:
                if run_folder is not None:
                    shutil.rmtree(run_folder, ignore_errors=True)
                raise
            if run_folder is not None:
                weakref.finalize(pruner.model, shutil.rmtree, run_folder, True)
        pruner.tokenizer = tokenizer
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
            check_apart(save_directory, {"model": _source_directory(self.model)}, "save_directory")
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
        kind, plans, shape = self._plans(model, arch, tokenizer, physical)
        if shape is not None:  # a stock-shaped method's model-wide cuts: hidden size, layers
            plans = _apply_model_shape(model, arch, shape, plans)
            if self.streamed is not None and model is self.streamed.model and shape.kept_layers is not None:
                self.streamed.keep_blocks(shape.kept_layers)
        layout = None
        if kind == "structured":  # a mask plan keeps every shape: there is no layout to record
            heads, kv_heads, _ = attention_geometry(model.config)
            layout = record_layout(model, arch, _relative_to_dense(plans, previous), heads // kv_heads)
        setattr(model.config, RECIPE_KEY, _recipe_as_run(config, self._calibrated_shape))
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
            shape_search=list(shape.search) if shape is not None else [],
        )
        logger.info(self.report.summary())
        self.model, self.tokenizer, self.layout = model, tokenizer, layout
        return model

    def _plans(self, model: nn.Module, arch, tokenizer: Any, physical: bool
               ) -> tuple[PlanKind, list, ModelShapePlan | None]:
        """Run the method through the calibration pipeline, which applies each layer's plan in place.

        Returns the plan's kind ("structured" or "mask"), its layer plans and its model-wide cuts (or None).
        """
        config = self.config
        self._calibrated_shape = None
        method_class = get_method_class(config.method)
        if config.pruning_ratio == 0 and not config.remove_heads:
            # nothing to remove: the model stays exactly as it was
            if method_class.plan_kind == "mask":
                return "mask", [MaskLayerPlan({}) for _ in arch.decoder_layers(model)], None
            return "structured", [_keep_everything(layer, arch) for layer in arch.decoder_layers(model)], None
        config = _keep_heads_where_required(model, arch, config)
        method = method_class(config, arch)
        method.check(model)
        _log_fixed_attention(model, config)
        rank, world_size = distributed_world()
        if world_size > 1 and not method.supports_distributed:
            raise ValueError(f"method={config.method!r} cannot calibrate across {world_size} processes; "
                             "run it in a single process.")
        ids = None
        if method.needs_calibration():
            held_out = method.held_out_samples()
            ids = load_calibration_ids(config.dataset, tokenizer, config.num_samples + held_out, config.seq_len,
                                       config.seed, vocab_size=model.config.vocab_size)
            check_positions(model.config, ids.shape[1], "calibration seq_len")
            if held_out:  # the same windows on every rank; token-id datasets give what they hold
                held_out = min(held_out, len(ids) // 2) or len(ids)
                method.held_out_ids = ids[-held_out:]
                ids = ids[:-held_out] if held_out < len(ids) else ids
            self._calibrated_shape = (int(ids.shape[0]), int(ids.shape[1]))  # token ids: not the config's
            ids = shard_for_rank(ids, rank, world_size)
        streamed = self.streamed is not None and model is self.streamed.model
        pipeline = CalibrationPipeline(
            model, arch, ids, config.batch_size, device=self.device, storage=self.activations,
            apply_plan=lambda layer, plan: apply_layer_plan(layer, arch, plan, physical),
            blocks=StreamedBlocks(self.streamed, self.device or torch.device("cpu")) if streamed else None,
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
        return plan.kind, plan.layers, plan.shape

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> CheckpointPlan:
        """Save the pruned model, its tokenizer and the recipe (see `FlapPruner.save`).

        A streamed model is written shard by shard from its checkpoint and offload folder.
        """
        if self.model is None:
            raise RuntimeError("Nothing to save: prune a model first.")
        if self.streamed is not None and self.model is self.streamed.model:
            kwargs.setdefault("tensors", self.streamed.iter_state())
        return self.save(self.model, save_directory, tokenizer=self.tokenizer, **kwargs)

    @staticmethod
    def save(
        model: nn.Module, save_directory: str | os.PathLike, tokenizer: Any = None, **kwargs: Any
    ) -> CheckpointPlan:
        """Write safetensors, the patched config, the tokenizer and the recipe to `save_directory`.

        Keyword arguments go to `save_pruned_model` (`overwrite`, `max_shard_size`, `checkpoint_format`);
        the returned plan says which checkpoint kind was written and why. Under torch.distributed only
        rank 0 writes; the other ranks get the same plan and wait until the checkpoint is written.
        """
        if distributed_world()[1] == 1:
            return save_pruned_model(model, save_directory, tokenizer=tokenizer, **kwargs)
        import torch.distributed as dist

        plan = (save_pruned_model(model, save_directory, tokenizer=tokenizer, **kwargs) if is_main_process()
                else plan_checkpoint(model, kwargs.get("checkpoint_format", "auto")))
        dist.barrier()
        return plan

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


def _recipe_as_run(config: FlapConfig, calibrated_shape: tuple[int, int] | None) -> dict[str, Any]:
    """The recipe to record: pre-tokenized ids set num_samples and seq_len by their shape, not the config's."""
    recipe = config.to_dict()
    if calibrated_shape is not None:
        recipe["num_samples"], recipe["seq_len"] = calibrated_shape
    return recipe


def _load_tokenizer(path: str | os.PathLike, model_config: Any, recipe: FlapConfig) -> Any:
    """The checkpoint's tokenizer, or None when it has none and the recipe calibrates on token ids.

    The model's config is passed so that config.json is not read again by the stock config class (see
    flap_common). A checkpoint without a tokenizer can be pruned on token ids (and is saved without
    one); text calibration data is refused here, before the model is loaded.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, config=model_config)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        if is_token_ids(recipe.dataset):
            logger.warning("No tokenizer loaded from %s (%s); calibrating on the given token ids, and the pruned "
                           "checkpoint is saved without a tokenizer.", path, reason)
            return None
        dataset = f"dataset={recipe.dataset!r}" if isinstance(recipe.dataset, str) else "the dataset of texts"
        raise CalibrationDataError(
            f"{path} has no tokenizer transformers can load ({reason}); {dataset} is text and needs one. Add the "
            "tokenizer files to that directory, or pass token ids as dataset."
        ) from None


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


def _apply_model_shape(model: nn.Module, arch: DecoderArchitecture, shape: ModelShapePlan,
                       plans: list[StructuredLayerPlan]) -> list[StructuredLayerPlan]:
    """Apply a plan's model-wide cuts after its layer plans; the plans of the layers kept, in order.

    The dense model's global sizes are recorded first (`dense_sizes`), since the config takes the new ones.
    """
    config = model.config
    if getattr(config, DENSE_SIZES_KEY, None) is None:
        heads, kv_heads, _ = attention_geometry(config)
        setattr(config, DENSE_SIZES_KEY, {"num_attention_heads": heads, "num_key_value_heads": kv_heads,
                                          "intermediate_size": int(config.intermediate_size),
                                          "hidden_size": int(config.hidden_size),
                                          "num_hidden_layers": int(config.num_hidden_layers)})
    apply_model_shape(model, arch, shape)
    return plans if shape.kept_layers is None else [plans[i] for i in shape.kept_layers]


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
    mapped = []
    for plan, before in zip(plans, previous.layers):
        if len(before.kept_head_groups) > int(plan.kept_groups.max()):
            dense = torch.tensor(before.kept_head_groups)[plan.kept_groups.cpu()]
            plan = StructuredLayerPlan(dense, plan.kept_channels)
        mapped.append(plan)
    return mapped
