"""Read, change and save the weights of a model dispatched by accelerate (`device_map=...`).

Modules placed on "disk" (or offloaded to CPU for a GPU run) hold meta tensors; accelerate's hooks
bring the real ones in only around their own forward. Scoring reads weights outside a forward and
surgery replaces modules, so both go through `onloaded(block)`: it brings every offloaded weight of
the block in (accelerate's `align_module_device`) and, with `write_back=True`, stores the block's
new tensors where accelerate reads them from (the offload folder for disk, the in-memory map for
CPU) and gives replaced modules the same offload hook. `iter_dispatched_state` streams the whole
state for `write_sharded_checkpoint`, one offloaded module at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from accelerate.hooks import AlignDevicesHook, add_hook_to_module
from accelerate.utils import (
    OffloadedWeightsLoader,
    align_module_device,
    has_offloaded_params,
    offload_weight,
    save_offload_index,
)
from torch import nn

from .checkpoint_reader import tied_weight_names


def _own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters and persistent buffers a module holds itself (not its children's)."""
    tensors = {name: param for name, param in module._parameters.items() if param is not None}
    tensors.update({name: buffer for name, buffer in module._buffers.items()
                    if buffer is not None and name not in module._non_persistent_buffers_set})
    return tensors


def _store(module: nn.Module, hook: AlignDevicesHook) -> None:
    """Write `module`'s current tensors to the storage `hook` loads them from."""
    loader, prefix = hook.weights_map.dataset, hook.weights_map.prefix
    written: dict[str, dict] = {}
    for name, tensor in _own_tensors(module).items():
        key = prefix + name
        if not isinstance(loader, OffloadedWeightsLoader):  # a plain state dict (accelerate.cpu_offload)
            loader[key] = tensor.detach().to("cpu").clone()
            continue
        if key in loader.state_dict or loader.save_folder is None:
            loader.state_dict[key] = tensor.detach().to("cpu").clone()
        else:  # disk: accelerate's .dat format in the offload folder, never the original checkpoint
            offload_weight(tensor.detach(), key, loader.save_folder, index=written)
            loader.index[key] = written[key]
        if key not in loader.all_keys:
            loader.all_keys.append(key)
    if written:
        save_offload_index(written, loader.save_folder)


def _rehook(module: nn.Module, old: AlignDevicesHook) -> None:
    """Give a module that replaced an offloaded one the same offload hook (its tensors go to meta)."""
    hook = AlignDevicesHook(
        execution_device=old.execution_device, offload=True, io_same_device=old.io_same_device,
        weights_map=old.weights_map, offload_buffers=old.offload_buffers, place_submodules=old.place_submodules,
        skip_keys=old.skip_keys, tied_params_map=old.tied_params_map,
    )
    add_hook_to_module(module, hook)


@contextmanager
def _forwards_keep_weights(hooks: Iterable[AlignDevicesHook]) -> Iterator[None]:
    """Forwards run inside the context leave the onloaded weights in place.

    An offload hook sends its module's weights back to the meta device after every forward; a
    method that runs the block while reading it (LLM-Barber's gradients) would then read meta tensors.
    """
    hooks = list(hooks)
    for hook in hooks:
        hook.offload = False
    try:
        yield
    finally:
        for hook in hooks:
            hook.offload = True


@contextmanager
def onloaded(
    block: nn.Module, execution_device: torch.device | str | None = None, write_back: bool = False
) -> Iterator[nn.Module]:
    """Within the context, every offloaded weight under `block` is real (on `execution_device`).

    With `write_back=True`, the tensors the offloaded modules hold when the body ends (changed in
    place, or modules replaced by surgery) become the offloaded weights; otherwise changes are lost,
    as with any accelerate offload. Modules that are not offloaded are left alone.
    """
    hooks = {name: module._hf_hook for name, module in block.named_modules() if has_offloaded_params(module)}
    with ExitStack() as stack:
        for name in hooks:
            stack.enter_context(align_module_device(block.get_submodule(name), execution_device))
        stack.enter_context(_forwards_keep_weights(hooks.values()))
        yield block
        if write_back:
            for name, hook in hooks.items():
                _store(block.get_submodule(name), hook)
    if write_back:
        for name, hook in hooks.items():
            module = block.get_submodule(name)
            if getattr(module, "_hf_hook", None) is not hook:
                _rehook(module, hook)


def iter_dispatched_state(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a dispatched model's state dict, on CPU, onloading one offloaded module at a time.

    Tied tensors are left out (as `save_pretrained` does). Feed this to `write_sharded_checkpoint`.
    """
    tied = tied_weight_names(model)
    for module_name, module in model.named_modules():
        if not _own_tensors(module):
            continue
        with align_module_device(module, "cpu") if has_offloaded_params(module) else ExitStack():
            for name, tensor in _own_tensors(module).items():
                key = f"{module_name}.{name}" if module_name else name
                if key not in tied:
                    yield key, tensor.detach().to("cpu")
