"""resolve_device: accepts what the machine has, names the bad value and the alternatives otherwise."""

from __future__ import annotations

import pytest
import torch

from optimum_flap.utils.devices import available_devices, resolve_device


def test_cpu_and_none():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) is None


def test_bad_name_is_one_line_value_error():
    with pytest.raises(ValueError, match=r"device='tpu0' is not a device name; available: cpu"):
        resolve_device("tpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_gpu():
    with pytest.raises(ValueError, match=r"^device='cuda' is not available on this machine; available: cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device=0 is not available"):
        resolve_device(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_with_gpu():
    count = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device(count - 1) == torch.device(f"cuda:{count - 1}")
    assert f"cuda:{count - 1}" in available_devices()
    with pytest.raises(ValueError, match=f"device='cuda:{count}' is not available"):
        resolve_device(f"cuda:{count}")
