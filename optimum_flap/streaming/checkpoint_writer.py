"""Write a safetensors checkpoint shard by shard from a stream of tensors.

`save_pretrained` needs the whole state dict in memory to plan its shards; here tensors arrive one at
a time (e.g. from `StreamedCheckpoint.iter_state`), a shard is written as soon as the next tensor
would overflow it, and only that shard's tensors are ever held. The file names and
`model.safetensors.index.json` follow transformers' layout, so `from_pretrained` loads the result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers.utils.hub import convert_file_size_to_int

from .checkpoint_reader import INDEX_FILE, SINGLE_FILE


def write_sharded_checkpoint(
    tensors: Iterable[tuple[str, torch.Tensor]],
    directory: str | os.PathLike,
    max_shard_size: int | str = "5GB",
) -> dict[str, str]:
    """Write `(name, tensor)` pairs as safetensors shards of at most `max_shard_size` bytes each.

    A single shard is written as `model.safetensors`; several as `model-0000i-of-0000n.safetensors`
    with `model.safetensors.index.json`. A tensor larger than `max_shard_size` gets a shard of its own.
    Tensors must not share storage (leave tied weights out). Returns the weight map (name -> file).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    limit = convert_file_size_to_int(max_shard_size)
    shards: list[list[str]] = []
    pending: dict[str, torch.Tensor] = {}
    pending_bytes = total_bytes = 0
    seen: set[str] = set()
    progress = tqdm(desc="Writing shards", unit="shard")

    def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            save_file(pending, directory / _partial_name(len(shards)), metadata={"format": "pt"})
            shards.append(list(pending))
            pending, pending_bytes = {}, 0
            progress.update()

    for name, tensor in tensors:
        if name in seen:
            raise ValueError(f"tensor {name!r} appears twice in the stream.")
        seen.add(name)
        size = tensor.numel() * tensor.element_size()
        if pending and pending_bytes + size > limit:
            flush()
        pending[name] = tensor.detach().to("cpu").contiguous()
        pending_bytes += size
        total_bytes += size
    flush()
    progress.close()
    if not shards:
        raise ValueError("no tensors to write.")
    return _name_shards(directory, shards, total_bytes)


def _partial_name(index: int) -> str:
    return f"model-{index + 1:05d}.safetensors.partial"


def _name_shards(directory: Path, shards: list[list[str]], total_bytes: int) -> dict[str, str]:
    """Rename the partial shards once their number is known, and write the index for several shards."""
    if len(shards) == 1:
        os.replace(directory / _partial_name(0), directory / SINGLE_FILE)
        return dict.fromkeys(shards[0], SINGLE_FILE)
    weight_map: dict[str, str] = {}
    for index, names in enumerate(shards):
        final = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        os.replace(directory / _partial_name(index), directory / final)
        weight_map.update(dict.fromkeys(names, final))
    index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return weight_map
