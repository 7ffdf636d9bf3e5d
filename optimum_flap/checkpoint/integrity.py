"""Check a local checkpoint's weight files, and that they fit its config.json, before any weight is read.

Left to the loaders, a bad checkpoint fails late or not at all: safetensors names no file for a truncated,
empty or garbled shard; an index naming a tensor its shard lacks fails deep inside the loader;
transformers fills a tensor the config expects but the files lack with random values (a warning) and
drops the tensors of a layer the config does not count, so a config that says 4 layers over 3 (or 2
over 3) prunes a model that is not the checkpoint and exits 0. Only the headers are read here (no
tensor data), so the check costs the same for any model size.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from ..streaming.checkpoint_reader import INDEX_FILE, SINGLE_FILE, find_block_list, tied_weight_names
from .save import CheckpointError


def weight_headers(directory: str | os.PathLike) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Tensor name -> (file holding it, shape), from the headers of a local safetensors checkpoint.

    Raises `CheckpointError` naming the file for an unreadable shard, an index that is not JSON, names a
    shard that is not there or a tensor its shard does not hold; `FileNotFoundError` when the directory
    holds neither `model.safetensors` nor an index.
    """
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    index = directory / INDEX_FILE
    weight_map: dict[str, str] | None = None
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index} is not a safetensors index ({type(err).__name__}: {err}); it needs a "
                                  "'weight_map' of tensor name -> shard file. Restore it.") from None
    elif (directory / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise FileNotFoundError(f"{directory} holds neither {SINGLE_FILE} nor {INDEX_FILE}: no safetensors weights.")
    headers: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for name in files:
        file = directory / name
        if not file.is_file():
            raise CheckpointError(f"{index} names the shard {name}, which is not in {directory}; restore that file "
                                  "or the index saved with these shards.")
        try:
            with safe_open(file, framework="pt") as handle:
                for tensor in handle.keys():
                    headers[tensor] = (file, tuple(handle.get_slice(tensor).get_shape()))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{file} is not a readable safetensors file ({err}); it is truncated or corrupt. "
                                  "Save the checkpoint again or restore this file.") from None
    for tensor, name in (weight_map or {}).items():
        if tensor not in headers or headers[tensor][0].name != name:
            raise CheckpointError(f"{index} maps tensor {tensor!r} to {name}, which does not hold it; restore the "
                                  "index saved with these shards.")
    return headers


def check_weights_fit_model(directory: str | os.PathLike, model: nn.Module,
                            renamed_ok: bool = False) -> dict[str, Path]:
    """Refuse, naming a tensor, a checkpoint whose tensors are not those of `model` (built from its config).

    `model` may be a skeleton on the meta device: only names and shapes are compared. Every parameter
    (tied ones aside) must be in the files with its shape, and the files must hold no decoder layer
    beyond the config's `num_hidden_layers`. Returns the weight map (tensor name -> file).

    With `renamed_ok`, files whose names share none of the model's are not compared: transformers renames
    some checkpoints' tensors while loading (legacy names), which only it knows how to read.
    """
    headers = weight_headers(directory)
    tied = tied_weight_names(model)
    if renamed_ok and not set(headers) & set(dict(model.named_parameters())):
        return {name: file for name, (file, _) in headers.items()}
    problems = []
    for name, param in model.named_parameters():
        if name in tied:
            continue
        if name not in headers:
            problems.append(f"missing tensor {name}")
        elif headers[name][1] != tuple(param.shape):
            problems.append(f"mismatched tensor {name}: weights {list(headers[name][1])}, config implies "
                            f"{list(param.shape)}")
    blocks = find_block_list(model)
    layers = len(model.get_submodule(blocks))
    layer_of = re.compile(re.escape(blocks) + r"\.(\d+)\.")
    extra = sorted((int(m.group(1)), name) for name in headers
                   if (m := layer_of.match(name)) and int(m.group(1)) >= layers)
    if extra:
        problems.append(f"unexpected tensor {extra[0][1]} (the weights hold layer {extra[0][0]}; config.json has "
                        f"num_hidden_layers={layers})")
    if problems:
        raise CheckpointError(
            f"{directory}: config.json does not match the weights ({len(problems)} problem(s)), e.g. {problems[0]}. "
            "Restore the config.json saved with these weights."
        )
    return {name: file for name, (file, _) in headers.items()}


def check_checkpoint_fits_config(directory: str | os.PathLike, model_class: Any, model_config: Any) -> None:
    """`check_weights_fit_model` against the model `model_class` builds from `model_config`, on the meta device.

    For a checkpoint about to be loaded whole: the skeleton takes no memory, so a checkpoint that does
    not fit its config is refused before loading, not pruned with re-initialised or dropped tensors.
    A directory without safetensors weights is not checked.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if not (directory / SINGLE_FILE).is_file() and not (directory / INDEX_FILE).is_file():
        return  # other weight formats (pytorch_model.bin, a GGUF file) are left to transformers
    build = model_class.from_config if model_class is AutoModelForCausalLM else model_class._from_config
    with init_empty_weights():
        skeleton = build(model_config)
    check_weights_fit_model(directory, skeleton, renamed_ok=True)
