"""Turn a user's `device` argument into a `torch.device`, failing early with what this machine offers."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """The device strings this machine can run on: "cpu", "cuda" and "cuda:N" per GPU, "mps" if present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
        devices.extend(f"cuda:{index}" for index in range(torch.cuda.device_count()))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | int | torch.device | None) -> torch.device | None:
    """Validate `device` ("cpu", "cuda", "cuda:1", 0, a `torch.device`) against this machine.

    `None` stays `None` (callers then keep the model where it is). Raises a one-line `ValueError`
    naming the bad value and the available devices, instead of a CUDA error deep inside a forward.
    """
    if device is None:
        return None
    available = available_devices()
    try:
        resolved = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device name; available: {', '.join(available)}") from error
    name = resolved.type if resolved.index is None else f"{resolved.type}:{resolved.index}"
    if name not in available:
        raise ValueError(f"device={device!r} is not available on this machine; available: {', '.join(available)}")
    return resolved
