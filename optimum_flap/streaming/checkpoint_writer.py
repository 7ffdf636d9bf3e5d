"""Write a safetensors checkpoint shard by shard from a stream of tensors.

`save_pretrained` needs the whole state dict in memory to plan its shards; here tensors arrive one at
a time (e.g. from `StreamedCheckpoint.iter_state`), a shard is written as soon as the next tensor
would overflow it, and only that shard's tensors are ever held. When the names, shapes and dtypes
are known beforehand (a meta model's state dict), the shards and their safetensors headers are
planned first and each tensor is written to its place as it arrives: only one tensor is held. The
file names and `model.safetensors.index.json` follow transformers' layout, so `from_pretrained`
loads the result.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors.torch import _TYPES as SAFETENSORS_DTYPES
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers.utils.hub import convert_file_size_to_int

from .checkpoint_reader import INDEX_FILE, SINGLE_FILE


def write_sharded_checkpoint(
    tensors: Iterable[tuple[str, torch.Tensor]],
    directory: str | os.PathLike,
    max_shard_size: int | str = "5GB",
    layout: Mapping[str, tuple[torch.Size, torch.dtype]] | None = None,
) -> dict[str, str]:
    """Write `(name, tensor)` pairs as safetensors shards of at most `max_shard_size` bytes each.

    A single shard is written as `model.safetensors`; several as `model-0000i-of-0000n.safetensors`
    with `model.safetensors.index.json`. A tensor larger than `max_shard_size` gets a shard of its own.
    Tensors must not share storage (leave tied weights out). Returns the weight map (name -> file).

    With `layout` (name -> (shape, dtype) of every tensor, in shard order), the tensors may come in
    any order and are written straight into their planned shard: memory holds one tensor, not one shard.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    limit = convert_file_size_to_int(max_shard_size)
    if layout is not None:
        return _write_planned(tensors, directory, limit, layout)
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


def _nbytes(shape: torch.Size, dtype: torch.dtype) -> int:
    return torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()


def _plan_shards(layout: Mapping[str, tuple[torch.Size, torch.dtype]], limit: int) -> list[list[str]]:
    """Group names into shards in layout order, a new shard whenever the next tensor would overflow."""
    shards: list[list[str]] = []
    used = 0
    for name, (shape, dtype) in layout.items():
        size = _nbytes(shape, dtype)
        if not shards or (shards[-1] and used + size > limit):
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def _write_header(file: BinaryIO, names: list[str], layout: Mapping[str, tuple[torch.Size, torch.dtype]]) -> dict:
    """Write a safetensors header (8-byte length, JSON padded to 8 bytes); return name -> data start."""
    dtype_names = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        shape, dtype = layout[name]
        end = offset + _nbytes(shape, dtype)
        header[name] = {"dtype": dtype_names[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    file.write(struct.pack("<Q", len(encoded)) + encoded)
    file.truncate(8 + len(encoded) + offset)
    return {name: 8 + len(encoded) + header[name]["data_offsets"][0] for name in names}


def _write_planned(
    tensors: Iterable[tuple[str, torch.Tensor]], directory: Path, limit: int,
    layout: Mapping[str, tuple[torch.Size, torch.dtype]],
) -> dict[str, str]:
    """Headers first, then each arriving tensor's bytes at its offset in its shard file."""
    shards = _plan_shards(layout, limit)
    if not shards:
        raise ValueError("no tensors to write.")
    place: dict[str, tuple[int, int]] = {}  # name -> (shard, byte offset in the file)
    with ExitStack() as files:
        handles = [files.enter_context(open(directory / _partial_name(i), "wb")) for i in range(len(shards))]
        for index, (handle, names) in enumerate(zip(handles, shards)):
            place.update({name: (index, start) for name, start in _write_header(handle, names, layout).items()})
        for name, tensor in tqdm(tensors, total=len(layout), desc="Writing tensors", unit="tensor"):
            if name not in place:
                raise ValueError(f"tensor {name!r} is not in the layout, or appears twice in the stream.")
            shape, dtype = layout[name]
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"tensor {name!r} is {tuple(tensor.shape)} {tensor.dtype}; the layout says "
                                 f"{tuple(shape)} {dtype}.")
            index, start = place.pop(name)
            handles[index].seek(start)
            handles[index].write(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
    if place:
        raise ValueError(f"the stream ended without {len(place)} tensor(s) of the layout, e.g. {sorted(place)[:4]}.")
    return _name_shards(directory, shards, sum(_nbytes(*layout[n]) for names in shards for n in names))


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
