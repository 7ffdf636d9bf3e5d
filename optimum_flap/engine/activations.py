"""Where the calibration hidden states live between blocks: on the execution device, on CPU, or on disk.

The pipeline keeps one hidden-state tensor per calibration batch and stream. On a GPU the whole
calibration set may not fit beside a block, so the store can park it in host memory or in one
safetensors file per batch (a temporary directory removed by `close`); `get` always hands the
tensor back on the execution device.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

Storage = Literal["device", "cpu", "disk"]
STORAGES: tuple[str, ...] = ("device", "cpu", "disk")


class ActivationStore:
    """One tensor per calibration batch, indexed by batch number."""

    def __init__(self, storage: Storage, device: torch.device) -> None:
        if storage not in STORAGES:
            raise ValueError(f"Unknown activation storage {storage!r}; allowed: {', '.join(STORAGES)}.")
        self.storage = storage
        self.device = torch.device(device)
        self._tensors: dict[int, torch.Tensor] = {}
        self._directory = tempfile.TemporaryDirectory(prefix="optimum-flap-activations-") if storage == "disk" else None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _path(self, index: int) -> Path:
        return Path(self._directory.name) / f"batch-{index:06d}.safetensors"

    def put(self, index: int, tensor: torch.Tensor) -> None:
        tensor = tensor.detach()
        if self.storage == "disk":
            save_file({"hidden_states": tensor.contiguous().cpu()}, str(self._path(index)))
        else:
            self._tensors[index] = tensor.to(self.device if self.storage == "device" else "cpu")
        self._count = max(self._count, index + 1)

    def get(self, index: int) -> torch.Tensor:
        if not 0 <= index < self._count:
            raise IndexError(f"Batch {index} is not stored (0 to {self._count - 1}).")
        if self.storage == "disk":
            return load_file(str(self._path(index)), device=str(self.device))["hidden_states"]
        return self._tensors[index].to(self.device)

    def close(self) -> None:
        """Free the tensors and delete the files of a disk store."""
        self._tensors.clear()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
