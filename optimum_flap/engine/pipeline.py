"""The calibration pipeline: one loop over the decoder blocks, driving a method through its hooks.

The model is never run end to end on the calibration set. Block 0's inputs are captured once, then
each block is moved to the execution device, runs every batch, and its outputs become the next
block's inputs. Peak memory is one block plus the calibration hidden states (kept on the device, on
CPU or on disk, see `ActivationStore`). The method (`optimum_flap.methods.base.PruningMethod`) sees
module inputs through observers and block inputs/outputs through `on_block_output`; the plans it
returns are applied through the `apply_plan` callback the pruner gives, so the pipeline never edits
weights itself. Hook order and propagation modes are described in `docs/architecture.md`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from ..architectures import DecoderArchitecture
from ..plan import MaskLayerPlan, PruningPlan, StructuredLayerPlan
from .activations import STORAGES, ActivationStore, Storage
from .block_inputs import BlockBatch, capture_block_inputs, layer_attention_type
from .distributed import distributed_world
from .residence import BlockResidence, DispatchedBlocks, InMemoryBlocks

if TYPE_CHECKING:
    from ..methods.base import PruningMethod

LayerPlanType = StructuredLayerPlan | MaskLayerPlan
#: applies one layer's plan to that decoder layer in place (given by the pruner)
ApplyPlan = Callable[[nn.Module, LayerPlanType], None]
STREAMS = ("dense", "pruned")


class BlockContext:
    """What a method's hooks receive for the block being calibrated.

    `module` is the decoder layer (on the execution device while its hooks run); `run` feeds one
    stored batch through it again, with autograd on when the method declares `needs_grad`.
    """

    def __init__(self, pipeline: CalibrationPipeline, index: int, module: nn.Module, grad: bool) -> None:
        self.index = index
        self.module = module
        self.layer_type = layer_attention_type(pipeline.model.config, index)
        self.grad = grad
        self._pipeline = pipeline

    @property
    def num_batches(self) -> int:
        return len(self._pipeline.batches)

    def inputs(self, batch: int, stream: str | None = None) -> torch.Tensor:
        """Block input hidden states of calibration batch `batch` in `stream`.

        Streams: "dense" (propagation "dense"), "pruned" ("pruned"), both under "both"; None is the
        stream the observers see (the first one).
        """
        return self._pipeline.store(stream or self._pipeline.observed_stream).get(batch)

    def run(self, batch: int, stream: str | None = None) -> torch.Tensor:
        """The block's output on one stored batch; differentiable when the method `needs_grad`."""
        with torch.set_grad_enabled(self.grad):
            return self._pipeline.forward(self.module, self.layer_type, batch, self.inputs(batch, stream))


class CalibrationPipeline:
    """Feeds calibration ids through a decoder block by block and calls a method's hooks.

    Args:
        model: a causal LM whose decoder layout `architecture` describes (in eval mode).
        architecture: the family adapter.
        input_ids: calibration batch `[num_samples, seq_len]`; None only for a method whose
            `needs_calibration()` is False (its hooks still run once per block, without batches).
        batch_size: sequences per block call.
        device: where blocks run (default: where the model is). Blocks are moved there one at a time
            and back afterwards; models dispatched by accelerate (`device_map=...`) stay where they are.
        storage: where hidden states wait between blocks: "device", "cpu" or "disk".
        apply_plan: applies a layer plan in place; without it, plans are returned but not applied.
        blocks: where the blocks live (`engine.residence`); default: in memory, or accelerate's
            placement for a dispatched model. A `StreamedBlocks` reads them from a checkpoint.

    Under torch.distributed each rank passes its own share of `input_ids`; the method's statistics
    are merged across ranks (`PruningMethod.all_reduce`) after each block is observed, before it is scored.
    """

    def __init__(
        self,
        model: nn.Module,
        architecture: DecoderArchitecture,
        input_ids: torch.Tensor | None,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        storage: Storage = "device",
        apply_plan: ApplyPlan | None = None,
        blocks: BlockResidence | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        if storage not in STORAGES:
            raise ValueError(f"Unknown activation storage {storage!r}; allowed: {', '.join(STORAGES)}.")
        self.model = model
        self.layers = architecture.decoder_layers(model)
        self.input_ids = input_ids
        self.batch_size = batch_size
        self.dispatched = bool(getattr(model, "hf_device_map", None))
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if blocks is None:
            blocks = (DispatchedBlocks if self.dispatched else InMemoryBlocks)(self.layers, self.device)
        self.blocks = blocks
        self.storage = storage
        self.apply_plan = apply_plan
        self.batches: list[BlockBatch] = []
        self._stores: dict[str, ActivationStore] = {}
        #: the stream the observers and `on_block_output` see: "pruned" under propagation "pruned"
        self.observed_stream = "dense"

    # ------------------------------------------------------------------ inputs and storage

    def store(self, stream: str) -> ActivationStore:
        if stream not in self._stores:
            raise ValueError(f"No {stream!r} stream in this run; streams: {', '.join(self._stores) or 'none'}.")
        return self._stores[stream]

    def _capture(self, streams: tuple[str, ...]) -> None:
        embed_device = self.model.get_input_embeddings().weight.device
        if not self.dispatched and embed_device.type == "meta":
            raise ValueError("The model's embeddings are on the meta device; load real weights first.")
        moved = self._move_outside_layers(self.device)
        try:
            hidden, self.batches = capture_block_inputs(
                self.model, self.layers, self.input_ids, self.batch_size, self.device if moved else embed_device,
            )
        finally:
            if moved:
                self._move_outside_layers(moved)
        for stream in streams:
            self._stores[stream] = ActivationStore(self.storage, self.device)
            for i, states in enumerate(hidden):
                self._stores[stream].put(i, states)

    def _move_outside_layers(self, device: torch.device) -> torch.device | None:
        """Move the modules outside the decoder blocks (embeddings, rotary) to `device`; return the old one."""
        old = self.model.get_input_embeddings().weight.device
        if self.dispatched or old == device:
            return None
        prefix = next(name for name, module in self.model.named_modules() if module is self.layers)
        for name, module in self.model.named_modules():
            if name == prefix or name.startswith(prefix + "."):
                continue
            for param in module.parameters(recurse=False):
                param.data = param.data.to(device)
            for key, buffer in module.named_buffers(recurse=False):
                module._buffers[key] = buffer.to(device)
        return old

    @contextmanager
    def _on_device(self, idx: int, grad: bool) -> Iterator[nn.Module]:
        """Keep block `idx` on the execution device (and trainable when `grad`) while it is calibrated."""
        with self.blocks.running(idx) as block:
            # by name: a plan applied inside the block replaces its Linear modules and their parameters
            trainable = {name: p.requires_grad for name, p in block.named_parameters()} if grad else {}
            if grad:
                block.requires_grad_(True)
            try:
                yield block
            finally:
                for name, param in block.named_parameters():
                    if name in trainable:
                        param.requires_grad_(trainable[name])

    def forward(self, block: nn.Module, layer_type: str, batch: int, hidden: torch.Tensor) -> torch.Tensor:
        output = block(hidden, **self.batches[batch].kwargs_for(layer_type))
        return output[0] if isinstance(output, tuple) else output

    # ------------------------------------------------------------------ the loop

    def run(self, method: PruningMethod) -> PruningPlan:
        """Calibrate every block with `method`, apply its plans through `apply_plan`, return the plan.

        `method.check` is the caller's to run first, before loading calibration data.
        """
        propagation = method.propagation
        if propagation not in ("dense", "pruned", "both"):
            raise ValueError(f"Unknown propagation {propagation!r}; allowed: dense, pruned, both.")
        calibrate = method.needs_calibration()
        if calibrate and self.input_ids is None:
            raise ValueError(f"{type(method).__name__} needs calibration data; pass input_ids to the pipeline.")
        streams = STREAMS if propagation == "both" else (propagation,)
        self.observed_stream = streams[0]
        applied: set[int] = set()
        name = getattr(method, "name", type(method).__name__)
        try:
            if calibrate:
                self._capture(streams)
            for idx in tqdm(range(len(self.layers)), desc=f"{name}: calibrating", unit="block"):
                if self._run_block(method, idx, calibrate):
                    applied.add(idx)
            plan = method.finish(self.model)
        finally:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
        if plan.layers and len(plan.layers) != len(self.layers):
            raise ValueError(
                f"{type(method).__name__} planned {len(plan.layers)} layers; the model has {len(self.layers)}."
            )
        if self.apply_plan is not None:
            pending = [idx for idx in range(len(plan.layers)) if idx not in applied]
            for idx in tqdm(pending, desc=f"{name}: pruning", unit="block", disable=len(pending) < 2):
                self._apply(plan.layers[idx], idx)
        return plan

    def _run_block(self, method: PruningMethod, idx: int, calibrate: bool) -> bool:
        """Calibrate block `idx`; True when its plan was applied before propagating."""
        with self._on_device(idx, method.needs_grad) as module:
            context = BlockContext(self, idx, module, method.needs_grad)
            if not calibrate:
                return self._apply(self._block_done(method, context), idx)
            observed_next = ActivationStore(self.storage, self.device)
            self._observe(method, context, observed_next)
            if distributed_world()[1] > 1:
                method.all_reduce()
            applied = self._apply(self._block_done(method, context), idx)
            if method.propagation == "pruned" and applied:  # the next block sees the pruned outputs
                observed_next.close()
                observed_next = ActivationStore(self.storage, self.device)
                self._propagate(method, context, "pruned", observed_next)
            elif method.propagation == "both":
                pruned_next = ActivationStore(self.storage, self.device)
                self._propagate(method, context, "pruned", pruned_next)
                self._replace("pruned", pruned_next)
            self._replace(self.observed_stream, observed_next)
            return applied

    def _block_done(self, method: PruningMethod, context: BlockContext) -> LayerPlanType | None:
        """The method's `block_done`, with the block's weights readable (offloaded ones brought in)."""
        with self.blocks.reading(context.index):
            return method.block_done(context)

    def _observe(self, method: PruningMethod, context: BlockContext, outputs: ActivationStore) -> None:
        """Run the block on the observed stream with the method's observers, storing its outputs."""
        observers = method.observers(context)
        handles = [
            context.module.get_submodule(path).register_forward_pre_hook(_input_hook(observer))
            for path, observer in observers.items()
        ]
        try:
            with torch.no_grad():
                for batch in range(len(self.batches)):
                    inputs = context.inputs(batch)
                    output = self.forward(context.module, context.layer_type, batch, inputs)
                    method.on_block_output(context, inputs, output)
                    outputs.put(batch, output)
        finally:
            for handle in handles:
                handle.remove()

    def _propagate(self, method: PruningMethod, context: BlockContext, stream: str,
                   outputs: ActivationStore) -> None:
        """Run the (now pruned) block on `stream`; the method sees each batch through `on_pruned_block_output`."""
        with torch.no_grad():
            for batch in range(len(self.batches)):
                inputs = context.inputs(batch, stream)
                output = self.forward(context.module, context.layer_type, batch, inputs)
                method.on_pruned_block_output(context, inputs, output)
                outputs.put(batch, output)

    def _replace(self, stream: str, outputs: ActivationStore) -> None:
        """The block's outputs become the stream's inputs for the next block."""
        self._stores[stream].close()
        self._stores[stream] = outputs

    def _apply(self, layer_plan: LayerPlanType | None, idx: int) -> bool:
        """Apply a layer plan to block `idx` where the block lives, so that the change is kept."""
        if layer_plan is None or self.apply_plan is None:
            return False
        with self.blocks.changing(idx) as module:
            self.apply_plan(module, layer_plan)
        return True


def _input_hook(observer: Callable[[torch.Tensor], None]) -> Callable[[nn.Module, tuple], None]:
    def hook(_module: nn.Module, args: tuple) -> None:
        observer(args[0])

    return hook
