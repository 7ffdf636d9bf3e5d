"""Write a pruned model as a checkpoint that plain transformers reloads, and load it back.

Two kinds of checkpoint (see docs/checkpoint-format.md):

* `"stock"`: every layer has the same sizes and the stock config can express them and the biases,
  so config.json keeps the stock `model_type` and no code is needed at all.
* `"flap-remote-code"`: anything else. config.json keeps the stock `model_type` too (so AutoTokenizer
  reads it without remote code), has the per-layer sizes in transformers' native `per_layer_config`,
  and an `auto_map` to the small model files saved alongside (imports torch and transformers only).
  Plain transformers loads it with `trust_remote_code=True` (`load_pruned_model` with no flag);
  without the flag, the stock class refuses the weights' shapes.

A masked model (`config.pruning_sparsity` set: zeros in dense-shaped tensors) is written like an
unpruned one, stock whenever its biases allow, with its measured sparsity in config.json.

Which biases a stock config can hold and which classes to write come from the family's spec
(`optimum_flap.architectures`). The format is chosen automatically. Saving is atomic: everything is
written to a temporary directory next to the target, which is then moved into place.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from torch import nn

from ..accounting import compensation_roles, measure_sparsity
from ..architectures import (
    ATTENTION_OUTPUT,
    GATE,
    KEY,
    MLP_OUTPUT,
    QUERY,
    ROLES,
    UP,
    VALUE,
    DecoderArchitecture,
    ModelClasses,
    get_architecture,
)
from ..layout import LAYOUT_KEY, RECIPE_KEY, SPARSITY_KEY, LayerLayout, PruningLayout
from ..models import FLAP_CLASSES, register_for_saving
from ..privacy import publishable_recipe
from .finite import check_finite, finite_stream
from .target import OutputDirectoryError, check_apart, check_output_dir, recover_swap, replace_directory

#: config.json key naming which kind of checkpoint a directory holds
FORMAT_KEY = "checkpoint_format"
STOCK_FORMAT = "stock"
REMOTE_CODE_FORMAT = "flap-remote-code"
CHECKPOINT_FORMATS = (STOCK_FORMAT, REMOTE_CODE_FORMAT)
#: config.json key holding the dense model's sizes (the stock format overwrites the global ones)
DENSE_SIZES_KEY = "dense_sizes"

_SIZE_KEYS = ("num_attention_heads", "num_key_value_heads", "intermediate_size")
#: global sizes only a stock-shaped method changes, recorded in `dense_sizes` when it does
_MODEL_SIZE_KEYS = ("hidden_size", "num_hidden_layers")
#: config keys that describe one saved form and are rebuilt on every save
_FORM_KEYS = (
    "model_type",
    "auto_map",
    "architectures",
    "per_layer_config",
    "serialize_explicit_per_layer_config",
    "transformers_version",
    "attention_output_bias",
    "mlp_output_bias",
    FORMAT_KEY,
    LAYOUT_KEY,
    RECIPE_KEY,
    SPARSITY_KEY,
    DENSE_SIZES_KEY,
)


class CheckpointError(ValueError):
    """The model cannot be written as a pruned checkpoint (inconsistent sizes, unsupported bias...)."""


@dataclass
class _Measured:
    """What the modules of a (pruned) model actually hold."""

    head_dim: int
    sizes: list[tuple[int, int, int]]
    #: role -> "has a bias" in any layer
    any_bias: dict[str, bool] = field(default_factory=dict)
    dtype: torch.dtype = torch.float32


@dataclass
class CheckpointPlan:
    """How a model will be written: which format, with which config, and why."""

    checkpoint_format: str
    config: Any
    model_class: type
    reason: str
    layout: PruningLayout
    dense_sizes: dict[str, int]
    head_dim: int
    #: per layer and projection, the fraction of zero weights of a masked model; None for a structured one
    sparsity: list[dict[str, float]] | None = None


def _config_get(config: Any, key: str, default: Any = None) -> Any:
    """Read a global config value even on a heterogeneous (per-layer) config."""
    getter = getattr(config, "_getattr_without_heterogeneous_validation", None)
    if getter is not None:
        return getter(key, default)
    return getattr(config, key, default)


def _measure(model: nn.Module, arch: DecoderArchitecture) -> _Measured:
    config = model.config
    head_dim = _config_get(config, "head_dim") or (
        _config_get(config, "hidden_size") // _config_get(config, "num_attention_heads")
    )
    any_bias = dict.fromkeys(ROLES, False)
    sizes = []
    for idx, layer in enumerate(arch.decoder_layers(model)):
        mods = arch.projections(layer)
        try:  # fused projections (Phi-3) are shared out among their roles
            widths = arch.output_widths(layer)
        except ValueError as err:
            raise CheckpointError(f"Layer {idx}: {err}") from err
        q_out, kv_out, inter = widths[QUERY], widths[KEY], widths[GATE]
        if q_out % head_dim or kv_out % head_dim or widths[VALUE] != kv_out:
            raise CheckpointError(
                f"Layer {idx}: query/key/value widths ({q_out}, {kv_out}, {widths[VALUE]}) "
                f"are not whole heads of head_dim={head_dim}."
            )
        heads, kv_heads = q_out // head_dim, kv_out // head_dim
        if (
            mods[ATTENTION_OUTPUT].in_features != q_out
            or widths[UP] != inter
            or mods[MLP_OUTPUT].in_features != inter
            or heads < 1
            or kv_heads < 1
            or inter < 1
            or heads % kv_heads
        ):
            raise CheckpointError(
                f"Layer {idx}: inconsistent pruned shapes (heads={heads}, kv_heads={kv_heads}, "
                f"o_proj in={mods[ATTENTION_OUTPUT].in_features}, gate/up/down={inter}/{widths[UP]}/"
                f"{mods[MLP_OUTPUT].in_features})."
            )
        sizes.append((heads, kv_heads, inter))
        for role, mod in mods.items():
            any_bias[role] = any_bias[role] or mod.bias is not None
    dtype = next(model.parameters()).dtype
    return _Measured(head_dim=head_dim, sizes=sizes, any_bias=any_bias, dtype=dtype)


def _layout_for(model: nn.Module, arch: DecoderArchitecture, measured: _Measured, masked: bool) -> PruningLayout:
    """The recorded layout, checked against the modules; derived from them when absent or masked.

    A masked model keeps its dense shapes, so its layout is the modules' (a structured layout recorded
    by a mask-only run describes the model it would become, not the one being saved).
    """
    attn_out, mlp_out = measured.any_bias[ATTENTION_OUTPUT], measured.any_bias[MLP_OUTPUT]
    recorded = PruningLayout.from_config(model.config)
    compensation = compensation_roles(model, arch)
    if recorded is not None and recorded.compensation_biases is not None:
        compensation = recorded.compensation_biases
    if recorded is None or masked:
        layers = [LayerLayout(h, kv, i, []) for h, kv, i in measured.sizes]
        return PruningLayout(layers, attn_out, mlp_out, compensation)
    recorded_sizes = [(la.num_attention_heads, la.num_key_value_heads, la.intermediate_size) for la in recorded.layers]
    if recorded_sizes != measured.sizes:
        raise CheckpointError(
            f"config.{LAYOUT_KEY} does not match the model's modules: recorded {recorded_sizes}, "
            f"found {measured.sizes}."
        )
    return PruningLayout(recorded.layers, attn_out, mlp_out, compensation)


def _dense_sizes(config: Any) -> dict[str, int]:
    recorded = getattr(config, DENSE_SIZES_KEY, None)
    if isinstance(recorded, dict) and all(k in recorded for k in _SIZE_KEYS):
        # a stock-shaped method (minitron) also records the dense hidden size and layer count it changed
        return {k: int(v) for k, v in recorded.items() if k in (*_SIZE_KEYS, *_MODEL_SIZE_KEYS)}
    heads = _config_get(config, "num_attention_heads")
    kv_heads = _config_get(config, "num_key_value_heads") or heads
    return {
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": _config_get(config, "intermediate_size"),
    }


def _base_config_dict(config: Any) -> dict[str, Any]:
    data = config.to_dict()
    for key in _FORM_KEYS:
        data.pop(key, None)
    # from_pretrained(gguf_file=...) records a GgufConfig (with the local .gguf path) although the
    # weights it hands over are dequantized floats; saved, it would mark the checkpoint as quantized.
    if (data.get("quantization_config") or {}).get("quant_method") == "gguf":
        del data["quantization_config"]
    return data


def _bias_flags(arch: DecoderArchitecture, measured: _Measured, config: Any) -> dict:
    """Stock bias flags needed for the input-side biases the modules carry; errors if inexpressible."""
    bias = measured.any_bias
    flags: dict[str, bool] = {}
    for flag, roles in ((arch.attention_bias_flag, (QUERY, KEY, VALUE)), (arch.mlp_bias_flag, (GATE, UP))):
        if flag:
            flags[flag] = bool(_config_get(config, flag, False) or any(bias[r] for r in roles))
    missing = [arch.path(r) for r in (QUERY, KEY, VALUE, GATE, UP) if bias[r] and not arch.bias_expressible(r)]
    if missing:
        raise CheckpointError(f"{arch.model_type} cannot hold biases on {', '.join(missing)}.")
    return flags


def _stock_blocker(arch: DecoderArchitecture, layout: PruningLayout, measured: _Measured) -> str | None:
    """Why the stock config cannot describe this model, or None if it can."""
    if not layout.is_uniform():
        return "layers have different sizes"
    for role in (ATTENTION_OUTPUT, MLP_OUTPUT):
        if measured.any_bias[role] and not arch.bias_expressible(role):
            return f"stock {arch.model_type} has no {arch.path(role)} bias"
    return None


def _classes(arch: DecoderArchitecture) -> ModelClasses:
    if arch.classes is None:
        raise CheckpointError(f"optimum-flap has no checkpoint classes for model_type={arch.model_type!r}.")
    return arch.classes


def plan_checkpoint(model: nn.Module, checkpoint_format: str = "auto") -> CheckpointPlan:
    """Decide how `model` will be saved: `"auto"` picks the stock format whenever it is exact."""
    if checkpoint_format not in ("auto", *CHECKPOINT_FORMATS):
        raise ValueError(f"checkpoint_format must be 'auto' or one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}.")
    arch = get_architecture(model)
    classes = _classes(arch)
    config = model.config
    measured = _measure(model, arch)
    masked = getattr(config, SPARSITY_KEY, None) is not None
    layout = _layout_for(model, arch, measured, masked)
    flags = _bias_flags(arch, measured, config)
    dense = _dense_sizes(config)
    base = _base_config_dict(config)
    base["head_dim"] = measured.head_dim
    if base.get("tie_word_embeddings"):  # a config that ties, over a different lm_head: save what is there
        from ..streaming import shares_embeddings

        base["tie_word_embeddings"] = shares_embeddings(model)
    extras = {
        LAYOUT_KEY: layout.to_dict(),
        RECIPE_KEY: publishable_recipe(copy.deepcopy(getattr(config, RECIPE_KEY, None))),  # no local paths
        DENSE_SIZES_KEY: dense,
    }
    sparsity = None
    if masked:  # measured again: the weights, not an earlier record, are what is saved
        sparsity = measure_sparsity(model, arch)
        extras[SPARSITY_KEY] = sparsity

    blocker = _stock_blocker(arch, layout, measured)
    stock_config = None
    if blocker is None and checkpoint_format != REMOTE_CODE_FORMAT:
        heads, kv_heads, inter = measured.sizes[0]
        stock_flags = dict(flags)
        if measured.any_bias[ATTENTION_OUTPUT] and arch.attention_bias_flag:
            stock_flags[arch.attention_bias_flag] = True
        if measured.any_bias[MLP_OUTPUT] and arch.mlp_bias_flag:
            stock_flags[arch.mlp_bias_flag] = True
        sizes = {"num_attention_heads": heads, "num_key_value_heads": kv_heads, "intermediate_size": inter}
        try:
            stock_config = classes.stock_config_class(**{**base, **sizes, **stock_flags})
        except (ValueError, TypeError, StrictDataclassError) as err:  # LlamaConfig: hidden % heads != 0
            blocker = f"the stock config rejects these sizes ({err})"
    if stock_config is not None:
        for key, value in {FORMAT_KEY: STOCK_FORMAT, **extras}.items():
            setattr(stock_config, key, value)
        return CheckpointPlan(
            STOCK_FORMAT, stock_config, classes.stock_model_class, "uniform sizes the stock config can express",
            layout, dense, measured.head_dim, sparsity,
        )
    if checkpoint_format == STOCK_FORMAT:
        raise CheckpointError(f"This model cannot be saved in the stock format: {blocker}.")

    per_layer = {
        idx: {"num_attention_heads": h, "num_key_value_heads": kv, "intermediate_size": i}
        for idx, (h, kv, i) in enumerate(measured.sizes)
    }
    flap_config = classes.flap_config_class(
        **{**base, **flags},
        attention_output_bias=measured.any_bias[ATTENTION_OUTPUT],
        mlp_output_bias=measured.any_bias[MLP_OUTPUT],
        per_layer_config=per_layer,
    )
    # write every layer's sizes, not just those that differ from the dense (global) values
    flap_config.serialize_explicit_per_layer_config = True
    for key, value in {FORMAT_KEY: REMOTE_CODE_FORMAT, **extras}.items():
        setattr(flap_config, key, value)
    reason = blocker or "requested"
    return CheckpointPlan(
        REMOTE_CODE_FORMAT, flap_config, classes.flap_model_class, reason, layout, dense, measured.head_dim, sparsity
    )


def _export_model(model: nn.Module, plan: CheckpointPlan) -> nn.Module:
    """A model of the target class whose tensors are the source model's (no copy, source untouched).

    Biases the target class has but the source lacks (e.g. the zero q/k/v biases that let a stock
    Llama hold an o_proj bias) are added as zeros; any other difference is an error.
    """
    if plan.checkpoint_format == REMOTE_CODE_FORMAT:
        register_for_saving()  # so the model files travel with the weights
    with torch.device("meta"):
        export = plan.model_class(copy.deepcopy(plan.config))
    expected = export.state_dict()
    source = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, meta in expected.items():
        tensor = source.get(key)
        if tensor is None:
            weight = source.get(key[: -len("bias")] + "weight") if key.endswith(".bias") else None
            if weight is None:
                raise CheckpointError(f"The model has no tensor for {key!r}.")
            tensor = torch.zeros(meta.shape, dtype=weight.dtype, device=weight.device)
        elif tuple(tensor.shape) != tuple(meta.shape):
            raise CheckpointError(f"{key}: shape {tuple(tensor.shape)} but the config implies {tuple(meta.shape)}.")
        state[key] = tensor
    unexpected = sorted(set(source) - set(expected))
    if unexpected:
        raise CheckpointError(f"These tensors would be lost on reload: {unexpected[:8]}.")
    export.load_state_dict(state, strict=True, assign=True)
    export.tie_weights()
    # non-persistent buffers (rotary frequencies) are never saved; keep them off the meta device anyway
    for name, buf in export.named_buffers():
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            src_buf = dict(model.named_buffers()).get(name)
            if src_buf is not None and src_buf.shape == buf.shape:
                setattr(export.get_submodule(owner) if owner else export, attr, src_buf)
    if getattr(model, "generation_config", None) is not None:
        export.generation_config = copy.deepcopy(model.generation_config)
    return export


def _export_layout(export: nn.Module) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Name -> (shape, dtype) of every tensor the export writes (tied ones left out, as `save_pretrained` does)."""
    from ..streaming import tied_weight_names

    tied = tied_weight_names(export)
    return {key: (t.shape, t.dtype) for key, t in export.state_dict().items() if key not in tied}


def _export_stream(
    layout: dict[str, tuple[torch.Size, torch.dtype]], tensors: Iterable[tuple[str, torch.Tensor]]
) -> Iterator[tuple[str, torch.Tensor]]:
    """The export model's tensors taken from a stream of the source model's, one at a time.

    The counterpart of `_export_model` for a model whose weights are not all in memory: names are
    the same, and the zero biases the target class adds (see `_export_model`) come last.
    """
    missing = dict(layout)
    for key, tensor in tensors:
        expected = missing.pop(key, None)
        if expected is None:
            raise CheckpointError(f"The export has no tensor {key!r}; it would be lost on reload.")
        if tuple(tensor.shape) != tuple(expected[0]):
            raise CheckpointError(f"{key}: shape {tuple(tensor.shape)} but the config implies {tuple(expected[0])}.")
        yield key, tensor
    for key, (shape, dtype) in missing.items():
        if not key.endswith(".bias"):
            raise CheckpointError(f"The model has no tensor for {key!r}.")
        yield key, torch.zeros(shape, dtype=dtype)


def _save_streamed(
    export: nn.Module, staging: Path, tensors: Iterable[tuple[str, torch.Tensor]], max_shard_size: int | str
) -> None:
    """What `save_pretrained` writes (config, generation config, model code), with tensors written one by one."""
    from transformers.dynamic_module_utils import custom_object_save

    from ..streaming import write_sharded_checkpoint

    export.config.dtype = str(export.dtype).split(".")[1]
    export.config.architectures = [type(export).__name__]
    if export.is_remote_code():
        custom_object_save(export, staging, config=export.config)
    export.config.save_pretrained(staging)
    if export.can_generate():
        export.generation_config.save_pretrained(staging)
    layout = _export_layout(export)
    write_sharded_checkpoint(_export_stream(layout, tensors), staging, max_shard_size=max_shard_size, layout=layout)


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    check_output_dir(target, overwrite)
    replace_directory(staging, target)


def save_pruned_model(
    model: nn.Module,
    save_directory: str | os.PathLike,
    tokenizer: Any = None,
    *,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    checkpoint_format: str = "auto",
    model_card: bool = True,
    base_model: str | None = None,
    tensors: Iterable[tuple[str, torch.Tensor]] | None = None,
) -> CheckpointPlan:
    """Save a pruned model (safetensors, patched config, tokenizer, recipe) to `save_directory`.

    Args:
        model: a pruned causal LM of a supported family (`optimum_flap.architectures.ARCHITECTURES`), or
            one reloaded from a pruned checkpoint. It is not modified.
        save_directory: target directory; created if missing. Must be absent or empty unless
            `overwrite=True`. Nothing appears there until the whole checkpoint is written.
        tokenizer: saved alongside when given, so `AutoTokenizer` loads from the same directory.
        max_shard_size: larger checkpoints are split into safetensors shards of this size.
        overwrite: replace a non-empty `save_directory`.
        checkpoint_format: `"auto"` (stock when exact, else `"flap-remote-code"`), `"stock"` (error
            if impossible) or `"flap-remote-code"`.
        model_card: also write a README.md model card.
        base_model: Hub id of the dense model for the card (default: the model's `name_or_path`).
        tensors: the model's tensors one at a time, for a model whose weights are not all in memory
            (`StreamedCheckpoint.iter_state()`); they are written shard by shard. A model dispatched
            by accelerate is streamed this way by default (`iter_dispatched_state`).

    Returns:
        The `CheckpointPlan` that was written (its `checkpoint_format` says which kind).
    """
    target = check_output_dir(save_directory, overwrite)
    check_apart(target, {"model": source_directory(model)}, "save_directory")  # never replace the input
    plan = plan_checkpoint(model, checkpoint_format)
    export = _export_model(model, plan)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    if tensors is None and getattr(model, "hf_device_map", None):
        from ..streaming import iter_dispatched_state

        tensors = iter_dispatched_state(model)
    try:
        if tensors is None:
            for name, tensor in export.state_dict().items():
                check_finite(name, tensor, "write the checkpoint")
            export.save_pretrained(staging, max_shard_size=max_shard_size, safe_serialization=True)
        else:
            _save_streamed(export, staging, finite_stream(tensors, "write the checkpoint"), max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if model_card:
            from .card import build_model_card

            card = build_model_card(model, plan=plan, base_model=base_model or _name_or_path(model))
            card.save(staging / "README.md")
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        _move_into_place(staging, target, overwrite)
    except (OSError, SafetensorError) as err:  # disk full, quota, I/O: say where; nothing is half-written
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OutputDirectoryError):
            raise
        outcome = (f"nothing was written to {target} and the partial files were removed. Free space or choose "
                   "another directory, then save again")
        raise write_error(err, f"writing the checkpoint for {target}", outcome) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return plan


def write_error(err: Exception, doing: str, outcome: str) -> OSError:
    """An `OSError` (the class and errno of `err` when it has one) saying what was being written and what is left."""
    reason = getattr(err, "strerror", None) or str(err)
    message = f"{reason} while {doing}; {outcome}."
    errno = getattr(err, "errno", None)
    return type(err)(errno, message) if isinstance(err, OSError) and errno is not None else OSError(message)


def _name_or_path(model: nn.Module) -> str | None:
    return getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None) or None


def source_directory(model: nn.Module) -> str | None:
    """The local directory `model` was loaded from (a save must never replace it), or None."""
    name = _name_or_path(model)
    return name if name and os.path.isdir(name) else None


def load_pruned_model(path: str | os.PathLike, *, strict: bool = True, **kwargs: Any) -> nn.Module:
    """Load a checkpoint written by `save_pretrained` (either kind), in the dtype it was saved in.

    A local directory is checked first: it must exist, an interrupted overwrite of it is finished
    (see `checkpoint.target`), and every safetensors file must be readable. With `strict` (the
    default) a config that does not match the weights (a missing, unexpected or differently shaped
    tensor) is a `CheckpointError` naming the tensor, instead of a model with re-initialised weights.
    Keyword arguments go to `from_pretrained` (`device_map`, `dtype`, ...).
    """
    kwargs.setdefault("dtype", "auto")
    local = _is_local(path)
    if local:
        _check_local_checkpoint(Path(path).expanduser())
    check = strict and not kwargs.get("output_loading_info")  # a caller asking for the report reads it itself
    if check:
        kwargs.update(output_loading_info=True, ignore_mismatched_sizes=True)
    try:
        model_class = pruned_model_class(path, kwargs)
        if local:
            checkpoint_config(path, model_class)  # a tampered config.json fails here, naming it
        loaded = model_class.from_pretrained(path, **kwargs)
    except OSError as err:
        if local:
            raise
        raise OSError(f"{path} is not a local directory and could not be loaded from the Hub: {err}") from err
    if not check:
        return loaded
    model, info = loaded
    problems = [f"mismatched tensor {key}: weights {list(saved)}, config implies {list(expected)}"
                for key, saved, expected in sorted(info.get("mismatched_keys") or ())]
    problems += [f"{kind} tensor {key}" for kind in ("missing", "unexpected")
                 for key in sorted(info.get(f"{kind}_keys") or ())]
    if problems:
        raise CheckpointError(
            f"{path}: config.json does not match the weights ({len(problems)} tensors), e.g. {problems[0]}. "
            "Restore the config.json saved with these weights, or pass strict=False to accept re-initialised "
            "tensors."
        )
    return model


def checkpoint_config(path: str | os.PathLike, model_class: type) -> Any:
    """The config `model_class` reads from `path`; `CheckpointError` naming config.json when it is invalid.

    The config classes validate on construction (`per_layer_config` sizes, types), raising huggingface_hub's
    strict-dataclass errors, or an `AttributeError` for a `per_layer_config` that is not a mapping.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config_class = AutoConfig if model_class is AutoModelForCausalLM else model_class.config_class
    try:
        return config_class.from_pretrained(path)
    except (StrictDataclassError, AttributeError, TypeError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(
            f"{Path(path) / 'config.json'} is not a valid {config_class.__name__}: {reason}. per_layer_config maps "
            "each layer index to ints >= 1 num_attention_heads (a multiple of num_key_value_heads), "
            "num_key_value_heads and intermediate_size; restore the config.json saved with these weights."
        ) from None


def pruned_model_class(path: str | os.PathLike, kwargs: dict[str, Any] | None = None) -> type:
    """The `Flap<Family>ForCausalLM` that config.json's `architectures` names, else `AutoModelForCausalLM`.

    Without the flag, `AutoModelForCausalLM` reads a pruned checkpoint's config.json with the stock
    config class (it keeps the stock model_type) and builds the stock model, which refuses the weights.
    """
    from transformers import AutoModelForCausalLM, PretrainedConfig

    hub = {key: kwargs[key] for key in ("revision", "token", "cache_dir", "local_files_only") if key in (kwargs or {})}
    architectures = PretrainedConfig.get_config_dict(path, **hub)[0].get("architectures") or []
    ours = {model_class.__name__: model_class for _, model_class in FLAP_CLASSES}
    if architectures and architectures[0] in ours:
        return ours[architectures[0]]
    return AutoModelForCausalLM


def _is_local(path: str | os.PathLike) -> bool:
    """A path meant as a local directory rather than a Hub repo id (`org/name`)."""
    text = os.fspath(path)
    if isinstance(path, Path) or os.path.exists(text) or text.startswith((".", "~", os.sep)):
        return True
    return not re.fullmatch(r"[\w.-]+/[\w.-]+", text)


def _check_local_checkpoint(directory: Path) -> None:
    """Fail early, naming the directory or file, on what transformers reports with a deep traceback."""
    recover_swap(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"No checkpoint directory at {directory}; give the directory a save wrote (or a Hub id, org/name)."
        )
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} holds no config.json, so it is not a checkpoint directory.")
    from .integrity import weight_headers

    if any(directory.glob("*.safetensors")) or any(directory.glob("*.safetensors.index.json")):
        weight_headers(directory)  # every shard and the index, naming a bad file
