"""Open a local safetensors checkpoint lazily and materialise a decoder one block at a time.

The model is built as a skeleton on the meta device (`accelerate.init_empty_weights`: parameters
take no memory, buffers such as the rotary `inv_freq` are computed for real since they are never
saved). The modules outside the decoder blocks (embeddings, final norm, lm_head) are read once;
each block's tensors are read from the shards with `safetensors.safe_open` when `load_block` asks,
and handed back to the meta device by `release_block`. A block changed in between (pruned) can be
written to an offload folder (`offload_block`: one safetensors file per block, written without
syncing and read back lazily like the checkpoint); from then on it is read from there, with its new
shapes, so the original checkpoint is never modified. The block files go to a subfolder of the offload
folder private to this object (`run_offload_folder`), removed by `close()` or when the object is
garbage-collected, so two runs sharing one offload folder never read each other's blocks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..utils.memory import return_freed_memory

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

#: skeleton model -> the checkpoint streaming it, so code given only the model can read its weights
_STREAMING: weakref.WeakKeyDictionary[nn.Module, StreamedCheckpoint] = weakref.WeakKeyDictionary()


def streamed_checkpoint_of(model: nn.Module) -> StreamedCheckpoint | None:
    """The `StreamedCheckpoint` whose skeleton `model` is, or None for a model that holds its weights."""
    return _STREAMING.get(model)


def checkpoint_weight_map(path: str | os.PathLike) -> dict[str, Path]:
    """Tensor name -> shard file of a local checkpoint, single-file or sharded (from the index)."""
    from ..checkpoint.integrity import weight_headers  # every file's header checked, naming a bad one

    return {name: file for name, (file, _) in weight_headers(path).items()}


def run_offload_folder(folder: str | os.PathLike, owner: object | None = None) -> Path:
    """A new subfolder of `folder` private to one run, deleted with its files when `owner` is garbage-collected.

    Without `owner` the caller registers the deletion (`weakref.finalize(obj, shutil.rmtree, path, True)`)
    once the object that reads the files exists.

    Block and weight files are named by block or tensor, not by run: two runs writing into the same
    folder would read each other's files. The deletion runs at interpreter exit at the latest.
    """
    parent = Path(folder)
    parent.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    if owner is not None:
        weakref.finalize(owner, shutil.rmtree, run, True)
    return run


def _state_names(module: nn.Module) -> list[str]:
    """The names `module.state_dict()` would have: parameters and persistent buffers, without copying."""
    return list(module.state_dict(keep_vars=True).keys())


def shares_embeddings(model: nn.Module) -> bool:
    """Whether the output embedding (lm_head) is the input embedding, so a checkpoint may leave it out.

    `tie_word_embeddings=True` is not enough: transformers loads a checkpoint that says so but stores a
    different `lm_head.weight` untied (and warns), and what is saved or exported must be that model.
    A weight on the meta device (offloaded) is taken as the config says.
    """
    if not getattr(model.config, "tie_word_embeddings", False):
        return False
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if inputs is None or outputs is None or outputs.weight is inputs.weight:
        return True
    if outputs.weight.is_meta or inputs.weight.is_meta:
        return True
    return outputs.weight.shape == inputs.weight.shape and bool(torch.equal(outputs.weight, inputs.weight))


def tied_weight_names(model: nn.Module) -> set[str]:
    """Tensors that share another's storage when the config ties them; checkpoints leave them out."""
    if not shares_embeddings(model):
        return set()
    return set(getattr(model, "all_tied_weights_keys", None) or {})


def find_block_list(model: nn.Module) -> str:
    """The qualified name of the `nn.ModuleList` holding the decoder blocks (`"model.layers"` for Llama)."""
    num_layers = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return name
    raise ValueError(f"{type(model).__name__} has no ModuleList of num_hidden_layers={num_layers} decoder blocks.")


class StreamedCheckpoint:
    """A causal LM whose weights stay in a local safetensors checkpoint until a block is needed.

    Args:
        path: directory with `config.json` and `model.safetensors` or sharded safetensors with
            `model.safetensors.index.json`.
        dtype: dtype of the materialised tensors; default the dtype stored in the checkpoint.
        device: where `load_non_block` and `load_block` put tensors unless told otherwise.
        offload_folder: where `offload_block` writes changed blocks (a safetensors file per block).
            Required only for `offload_block`.
        model_config: a transformers config to use instead of the one in `path`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        offload_folder: str | os.PathLike | None = None,
        model_config: Any = None,
    ) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        self.path = Path(path)
        self.weight_map = checkpoint_weight_map(self.path)
        self._files = ExitStack()
        self._handles: dict[Path, Any] = {}
        self.dtype = dtype or self._stored_dtype()
        self.device = torch.device(device)
        self.offload_folder = Path(offload_folder) if offload_folder is not None else None
        if self.offload_folder is not None:
            from ..checkpoint.target import check_apart

            check_apart(self.offload_folder, {"checkpoint": self.path}, "offload_folder")
        self._run_folder: Path | None = None  # created by the first offload_block (see run_offload_folder)
        self._offloaded: dict[str, Path] = {}  # tensor name -> the offload file holding its current value
        self._offload_writes = 0
        #: tensor name -> the name it is stored under, for blocks renumbered by `keep_blocks`
        self._aliases: dict[str, str] = {}
        from ..checkpoint import pruned_model_class

        # a pruned checkpoint keeps the stock model_type: its per-layer sizes need our class, as in memory
        model_class = pruned_model_class(self.path)
        if model_config is None:
            config_class = AutoConfig if model_class is AutoModelForCausalLM else model_class.config_class
            model_config = config_class.from_pretrained(self.path)
        build = model_class.from_config if model_class is AutoModelForCausalLM else model_class._from_config
        with init_empty_weights():  # buffers stay real: non-persistent ones (rotary) are computed here
            self.model = build(model_config, dtype=self.dtype).eval()
        self.blocks_prefix = find_block_list(self.model)
        self.blocks: nn.ModuleList = self.model.get_submodule(self.blocks_prefix)
        from ..checkpoint.integrity import check_weights_fit_model

        check_weights_fit_model(self.path, self.model)  # a config that lies fails here, naming a tensor
        _STREAMING[self.model] = self
        #: indices of the blocks materialised now, and the most ever materialised at once
        self.loaded: set[int] = set()
        self.peak_loaded = 0

    # -- reading --------------------------------------------------------------------------------------

    def _handle(self, file: Path) -> Any:
        if file not in self._handles:
            self._handles[file] = self._files.enter_context(safe_open(file, framework="pt", device="cpu"))
        return self._handles[file]

    def _stored_dtype(self) -> torch.dtype:
        """The dtype of the first floating-point tensor in the checkpoint (read from its header only)."""
        names = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
        for name, file in self.weight_map.items():
            stored = self._handle(file).get_slice(name).get_dtype()
            if stored in names:
                return names[stored]
        return torch.float32

    def read(self, name: str) -> torch.Tensor:
        """One tensor, from the offload folder if its block was offloaded, else from the checkpoint."""
        name = self._aliases.get(name, name)
        if name in self._offloaded:
            return self._handle(self._offloaded[name]).get_tensor(name)
        if name not in self.weight_map:
            raise KeyError(f"{name!r} is in the model but not in the checkpoint at {self.path}.")
        return self._handle(self.weight_map[name]).get_tensor(name)

    def _materialise(self, module: nn.Module, prefix: str, device: torch.device) -> None:
        for local in _state_names(module):
            set_module_tensor_to_device(module, local, device, value=self.read(prefix + local), dtype=self.dtype)

    # -- the modules outside the blocks ---------------------------------------------------------------

    def load_non_block(self, device: str | torch.device | None = None) -> None:
        """Materialise everything outside the decoder blocks (embeddings, final norm, lm_head, rotary) on `device`."""
        device = torch.device(device) if device is not None else self.device
        tied = tied_weight_names(self.model)
        if tied and self._stores_different_tied_weights(tied):  # what transformers does: keep them untied
            self.model.config.tie_word_embeddings = False
            tied = set()
        block_prefix = self.blocks_prefix + "."
        for name in _state_names(self.model):
            if not name.startswith(block_prefix) and name not in tied:
                set_module_tensor_to_device(self.model, name, device, value=self.read(name), dtype=self.dtype)
        for name, buffer in self.model.named_buffers():  # computed ones (rotary), never in the checkpoint
            if not name.startswith(block_prefix) and not buffer.is_meta:
                set_module_tensor_to_device(self.model, name, device)
        if tied:
            self.model.tie_weights()

    def _stores_different_tied_weights(self, tied: set[str]) -> bool:
        """True when the checkpoint stores a tied tensor (lm_head) whose values differ from its source's."""
        sources = getattr(self.model, "all_tied_weights_keys", None) or {}
        for name in tied:
            source = sources.get(name)
            if name in self.weight_map and source in self.weight_map:
                stored, shared = self.read(name), self.read(source)
                if stored.shape != shared.shape or not torch.equal(stored, shared):
                    return True
        return False

    # -- one block at a time --------------------------------------------------------------------------

    def _block(self, index: int) -> tuple[nn.Module, str]:
        if not 0 <= index < len(self.blocks):
            raise IndexError(f"block {index} does not exist; the model has {len(self.blocks)} blocks.")
        return self.blocks[index], f"{self.blocks_prefix}.{index}."

    def load_block(self, index: int, device: str | torch.device | None = None) -> nn.Module:
        """Put block `index`'s real tensors into the model (on `device`) and return the block."""
        block, prefix = self._block(index)
        self._materialise(block, prefix, torch.device(device) if device is not None else self.device)
        self.loaded.add(index)
        self.peak_loaded = max(self.peak_loaded, len(self.loaded))
        return block

    def release_block(self, index: int) -> None:
        """Return block `index`'s tensors to the meta device (their shapes are kept), freeing memory."""
        block, _ = self._block(index)
        for local in _state_names(block):
            set_module_tensor_to_device(block, local, "meta")
        self.loaded.discard(index)
        return_freed_memory()

    def offload_block(self, index: int) -> None:
        """Write block `index`'s current tensors (e.g. pruned) to the offload folder; later reads use them."""
        if self.offload_folder is None:
            raise ValueError("offload_block needs an offload_folder; pass offload_folder=DIR to StreamedCheckpoint.")
        if self._run_folder is None:
            self._run_folder = run_offload_folder(self.offload_folder, self)
        block, prefix = self._block(index)
        tensors: dict[str, torch.Tensor] = {}
        for local, tensor in block.state_dict().items():
            if tensor.is_meta:
                raise ValueError(f"block {index} is not loaded ({prefix}{local} is on the meta device).")
            tensors[prefix + local] = tensor.detach().to("cpu").contiguous()
        # a new file each time: an earlier version of the block may still be memory-mapped for reading
        self._offload_writes += 1
        file = self._run_folder / f"block-{index:05d}-{self._offload_writes:05d}.safetensors"
        try:
            save_file(tensors, file, metadata={"format": "pt"})
        except (OSError, SafetensorError) as err:  # e.g. no space left: no half-written block stays behind
            from ..checkpoint.save import write_error

            file.unlink(missing_ok=True)
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            raise write_error(err, f"writing pruned block {index} ({size:,} bytes) to the offload folder "
                              f"{self.offload_folder}", "the partial file was removed. Give an offload folder with "
                              "room for the pruned model") from err
        self._offloaded.update(dict.fromkeys(tensors, file))

    def keep_blocks(self, kept: list[int]) -> None:
        """Follow the model's block list cut to blocks `kept` (renumbered from 0; depth pruning).

        Call after the model's list was replaced: block j's tensors are then read under old block
        `kept[j]`'s names, from the offload folder or the checkpoint.
        """
        prefix = self.blocks_prefix + "."
        names = set(self.weight_map) | set(self._offloaded) | set(self._aliases)
        aliases = {}
        for new_index, old_index in enumerate(kept):
            old_prefix = f"{prefix}{old_index}."
            for name in names:
                if name.startswith(old_prefix):
                    renamed = f"{prefix}{new_index}.{name[len(old_prefix):]}"
                    aliases[renamed] = self._aliases.get(name, name)
        self._aliases = {name: stored for name, stored in self._aliases.items() if not name.startswith(prefix)}
        self._aliases.update(aliases)
        self.blocks = self.model.get_submodule(self.blocks_prefix)
        self.loaded.clear()

    # -- the whole model, tensor by tensor -----------------------------------------------------------

    def iter_state(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of the model's current state dict, one at a time, in state-dict order.

        Tensors come from the module where they are materialised, else from the offload folder or
        the checkpoint; tied tensors are left out (as `save_pretrained` does). Feed this to
        `write_sharded_checkpoint` to save without holding the whole model.
        """
        tied = tied_weight_names(self.model)
        for name, tensor in self.model.state_dict(keep_vars=True).items():
            if name in tied:
                continue
            if not tensor.is_meta:
                yield name, tensor.detach()
                continue
            yield name, self.read(name).to(self.dtype)
            return_freed_memory()  # the consumer is done with the tensors read before this one

    def close(self) -> None:
        """Close the shard files (the memory maps of the checkpoint) and delete this run's offloaded blocks."""
        self._files.close()
        self._handles.clear()
        if self._run_folder is not None:
            shutil.rmtree(self._run_folder, ignore_errors=True)
            self._run_folder = None  # a later read of an offloaded block fails naming its file

    def __enter__(self) -> StreamedCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
