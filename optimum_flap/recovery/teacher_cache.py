"""The teacher's top-k next-token logits of the training windows, computed once and kept on disk.

With the cache the teacher runs once over the training data before training, and is not in memory while
the student trains. Each shard is a safetensors file of `SHARD_SEQUENCES` windows holding `values`
(float32, `[n, seq_len - 1, k]`) and `indices` (int32, same shape): 8 bytes per token per k, e.g. k = 64
costs 512 bytes a token, 210 MB for 800 steps x 4 windows x 128 tokens (the full distribution of a
49,152-token vocabulary would cost 196 KB a token). A metadata file written last records the fingerprint
of the windows (a SHA-256 of their token ids), k, the vocabulary size and the teacher (`teacher_identity`:
a SHA-256 of its weights): a cache is reused only for exactly the same windows, k and teacher, and
refused otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint.finite import check_finite
from .distillation import teacher_logits, teacher_targets

METADATA_FILE = "teacher_logits.json"
SHARD_SEQUENCES = 256
BYTES_PER_TOKEN_PER_K = 8  # float32 value + int32 index


def fingerprint(input_ids: torch.Tensor) -> str:
    """SHA-256 of the training windows' token ids (shape included)."""
    ids = input_ids.to(torch.int64).contiguous()
    digest = hashlib.sha256(str(tuple(ids.shape)).encode())
    digest.update(ids.numpy().tobytes())
    return digest.hexdigest()


def teacher_identity(teacher: str | os.PathLike | nn.Module) -> str:
    """A SHA-256 naming the teacher's weights, so that a cache built for one teacher is not reused for another.

    A local checkpoint directory: the digest of its config.json and weight files' contents (names and
    bytes). A model in memory: the digest of its state dict (names, dtypes, shapes, bytes). Anything else
    (a Hub id): the id itself, as given.
    """
    from ..privacy import file_sha256

    digest = hashlib.sha256()
    if isinstance(teacher, nn.Module):
        for name, tensor in teacher.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
    directory = Path(teacher).expanduser()
    if not directory.is_dir():
        return f"id:{os.fspath(teacher)}"
    patterns = ("config.json", "*.safetensors", "pytorch_model*.bin")
    files = sorted(p for pattern in patterns for p in directory.glob(pattern))
    for file in files:
        digest.update(f"{file.name}:{file_sha256(file)}".encode())
    return digest.hexdigest()


class TeacherLogitsCache:
    """Read access to a complete cache directory: `cache[i]` is window i's `(values, indices)`."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.metadata = _read_metadata(self.directory / METADATA_FILE)
        self._shards = self._open_shards()

    def _open_shards(self) -> list:
        """Every shard's handle, after checking that together they hold each window's `[seq_len - 1, k]` rows.

        A truncated, missing or short shard is refused here, naming it, not found by an index error mid-training.
        """
        from safetensors import SafetensorError, safe_open

        meta = self.metadata
        handles, rows = [], 0
        for name in meta["shards"]:
            file = self.directory / name
            try:
                handle = safe_open(str(file), framework="pt")
                shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in ("values", "indices")}
            except (SafetensorError, OSError) as err:
                raise ValueError(f"teacher_logits_cache {self.directory}: {file} is missing, truncated or corrupt "
                                 f"({err}); delete the directory to compute the cache again.") from None
            wanted = (meta["seq_len"] - 1, meta["top_k"])
            if shapes["values"] != shapes["indices"] or shapes["values"][1:] != wanted:
                raise ValueError(f"teacher_logits_cache {self.directory}: {file} holds {shapes}; every window needs "
                                 f"{list(wanted)} values and indices. Delete the directory to compute it again.")
            check_finite(f"values of {file}", handle.get_tensor("values"),  # a NaN target trains a NaN model
                         "use the teacher-logits cache (delete it to recompute)")
            handles.append(handle)
            rows += shapes["values"][0]
        if rows != meta["num_sequences"]:
            raise ValueError(f"teacher_logits_cache {self.directory}: its shards hold {rows} windows, its "
                             f"{METADATA_FILE} says {meta['num_sequences']}; delete the directory to compute it again.")
        return handles

    def __len__(self) -> int:
        return int(self.metadata["num_sequences"])

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        shard, row = divmod(int(idx), int(self.metadata["shard_sequences"]))
        handle = self._shards[shard]
        return handle.get_slice("values")[row:row + 1][0], handle.get_slice("indices")[row:row + 1][0]

    @classmethod
    def ensure(
        cls,
        directory: str | os.PathLike,
        input_ids: torch.Tensor,
        top_k: int,
        vocab_size: int,
        get_teacher: Callable[[], nn.Module],
        batch_size: int = 4,
        device: torch.device | str | None = None,
        *,
        teacher: str,
    ) -> TeacherLogitsCache:
        """Open the cache of `input_ids` in `directory`, computing it first (with `get_teacher()`) if absent.

        `teacher` is the `teacher_identity` of the teacher that `get_teacher()` returns. Raises `ValueError`
        when `directory` holds a cache of other windows, another k, another vocabulary or another teacher.
        """
        directory = Path(directory)
        expected = {"fingerprint": fingerprint(input_ids), "top_k": int(top_k), "vocab_size": int(vocab_size),
                    "num_sequences": int(input_ids.shape[0]), "seq_len": int(input_ids.shape[1]),
                    "teacher": teacher}
        meta_path = directory / METADATA_FILE
        if meta_path.is_file():
            found = _read_metadata(meta_path)
            different = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
            if different:
                listed = ", ".join(f"{k}: cached {a!r}, now {b!r}" for k, (a, b) in different.items())
                raise ValueError(f"teacher_logits_cache {directory} holds logits of other training windows or "
                                 f"settings ({listed}); use another directory or delete it.")
            return cls(directory)
        cls._build(directory, input_ids, top_k, get_teacher(), batch_size, device, expected)
        return cls(directory)

    @staticmethod
    def _build(directory: Path, input_ids: torch.Tensor, top_k: int, teacher: nn.Module, batch_size: int,
               device: torch.device | str | None, metadata: dict) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        device = device or next(teacher.parameters()).device
        teacher.to(device)
        shards = []
        bar = tqdm(total=input_ids.shape[0], desc=f"teacher top-{top_k} logits", unit="seq")
        for shard_start in range(0, input_ids.shape[0], SHARD_SEQUENCES):
            values, indices = [], []
            for start in range(shard_start, min(shard_start + SHARD_SEQUENCES, input_ids.shape[0]), batch_size):
                stop = min(start + batch_size, shard_start + SHARD_SEQUENCES, input_ids.shape[0])
                logits = teacher_logits(teacher, input_ids[start:stop].to(device))
                top_values, top_indices = teacher_targets(logits, top_k)
                check_finite(f"the teacher's logits of windows {start}..{stop - 1}", top_values,
                             "write the teacher-logits cache")
                values.append(top_values.cpu())
                indices.append(top_indices.cpu() if top_indices is not None else
                               torch.arange(logits.shape[-1], dtype=torch.int32).expand_as(logits).clone())
                bar.update(stop - start)
            name = f"shard-{len(shards):05d}.safetensors"
            save_file({"values": torch.cat(values).contiguous(), "indices": torch.cat(indices).contiguous()},
                      str(directory / name))
            shards.append(name)
        bar.close()
        metadata = {**metadata, "shards": shards, "shard_sequences": SHARD_SEQUENCES,
                    "bytes_per_token": BYTES_PER_TOKEN_PER_K * top_k}
        with open(directory / METADATA_FILE, "w", encoding="utf-8") as f:  # last: marks the cache complete
            json.dump(metadata, f, indent=2)


def _read_metadata(path: Path) -> dict:
    """The cache's metadata file; `ValueError` naming it when it is not the JSON object a build writes."""
    keys = ("fingerprint", "top_k", "vocab_size", "num_sequences", "seq_len", "shards", "shard_sequences")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        missing = [key for key in keys if key not in metadata]
    except (ValueError, TypeError) as err:
        raise ValueError(f"teacher_logits_cache: {path} is not valid JSON ({err}); delete its directory to compute "
                         "the cache again.") from None
    if missing:
        raise ValueError(f"teacher_logits_cache: {path} lacks {', '.join(missing)}; delete its directory to compute "
                         "the cache again.")
    return metadata
