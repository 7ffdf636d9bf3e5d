"""The contract between the calibration pipeline and a pruning method (interface for the rebuild).

A method never loops over layers and never edits the model. The pipeline (`optimum_flap.engine`)
walks the decoder blocks and calls the method's hooks; the pruner applies the plans the method
returns. This mirrors llm-compressor, whose modifiers react to the events of a separate sequential
pipeline.

Hooks, in the order the pipeline calls them:

1. `check(model)` (called by the pruner, before it loads calibration data): refuse, from shapes alone,
   a recipe that could only fail after calibrating.
2. per decoder block `i` (the block is on the execution device; `block` is the pipeline's
   `BlockContext`: `.module`, `.index`, `.layer_type`, `.inputs(batch, stream)`, `.run(batch, stream)`):
   - `observers(block)`: module path (relative to the block) -> function receiving that module's
     input tensor, attached while the block runs over the calibration batches;
   - `on_block_output(block, inputs, outputs)`: each batch's block input and output hidden states
     (for block-level statistics such as CFSP's angular importance);
   - `block_done(block)`: called once the block has run on every batch. A sequential method
     (`propagation` "pruned" or "both") returns the block's layer plan here: the pipeline applies it
     before it propagates the block's outputs. It may run the block again through the block context
     (with gradients when `needs_grad`). One-shot methods keep their small statistics and return None.
   - `on_pruned_block_output(block, inputs, outputs)`: once the plan is applied ("pruned") and for the
     pruned stream ("both"), each batch's input and output through the pruned block.
3. `finish(model)`: after the last block; returns the `PruningPlan` (one-shot methods decide here;
   sequential ones return the plans they already produced).

Class attributes tell the pipeline what the method needs:
- `propagation`: "dense" (the next block sees the dense block's outputs: one-shot FLAP/CFSP),
  "pruned" (it sees the pruned block's outputs: magnitude, Wanda, SparseGPT and LLM-Barber, which
  compares each sub-block with its dense self on the pruned stream's inputs), or "both" (two
  streams, for a method comparing a pruned block with its dense twin on the dense stream's inputs).
- `needs_grad`: the block is run with autograd enabled when the method asks for it.
- `plan_kind`: "structured" or "mask".
- `supports_distributed`: the method can calibrate under torch.distributed, each rank on its share
  of the samples: its `all_reduce` (called by the pipeline after a block is observed on every batch,
  before `block_done`) merges the block's statistics so that every rank decides the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from torch import nn

    from ..plan import MaskLayerPlan, PlanKind, PruningPlan, StructuredLayerPlan

Propagation = Literal["dense", "pruned", "both"]


class PruningMethod:
    """Base class of every method; subclasses live in `optimum_flap/methods/<name>/` (see `get_method_class`)."""

    name: ClassVar[str]
    plan_kind: ClassVar[PlanKind] = "structured"
    propagation: ClassVar[Propagation] = "dense"
    needs_grad: ClassVar[bool] = False
    supports_distributed: ClassVar[bool] = False

    def __init__(self, config: Any, architecture: Any) -> None:
        self.config = config
        self.architecture = architecture

    #: the windows the pruner held out of the pipeline for this method (see `held_out_samples`), or None
    held_out_ids: Any = None

    def held_out_samples(self) -> int:
        """Calibration windows to keep out of the pipeline and hand to the method (to score whole models)."""
        return 0

    def needs_calibration(self) -> bool:
        """False for methods that score weights only (magnitude): the pipeline then runs no data."""
        return True

    def check(self, model: nn.Module) -> None:
        """Refuse, from the model's shapes alone, a recipe that could only fail after calibrating."""

    def observers(self, block: Any) -> dict[str, Any]:
        return {}

    def on_block_output(self, block: Any, inputs: Any, outputs: Any) -> None:
        """Per batch: the block's input and output hidden states on the observed stream (see `propagation`)."""

    def all_reduce(self) -> None:
        """Merge the current block's statistics across torch.distributed ranks (see `supports_distributed`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge its statistics across processes.")

    def block_done(self, block: Any) -> StructuredLayerPlan | MaskLayerPlan | None:
        return None

    def on_pruned_block_output(self, block: Any, inputs: Any, outputs: Any) -> None:
        """Per batch, after the block's plan is applied: the pruned block's input and output hidden states."""

    def finish(self, model: nn.Module) -> PruningPlan:
        raise NotImplementedError
