"""`DecoderArchitecture`: everything optimum-flap knows about one decoder family, as data.

A spec says where the decoder layers and their projections are, which projections share one fused
Linear (Phi-3's `qkv_proj` = [q | k | v] rows, `gate_up_proj` = [gate | up] rows), which biases the
family has and which of them its stock config can express, which normalisation modules travel with a
head, and which stock and optimum-flap classes load it. The surgery, the parameter accounting and the
checkpoint writer read the spec; none of them branches on the model type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

#: the seven projections of a decoder layer, by role; a spec maps each role to a module name
QUERY, KEY, VALUE, ATTENTION_OUTPUT = "query", "key", "value", "attention_output"
GATE, UP, MLP_OUTPUT = "gate", "up", "mlp_output"
ATTENTION_ROLES = (QUERY, KEY, VALUE, ATTENTION_OUTPUT)
MLP_ROLES = (GATE, UP, MLP_OUTPUT)
ROLES = ATTENTION_ROLES + MLP_ROLES
#: roles whose *input* columns are pruned (and whose bias takes FLAP's compensation); the others lose rows
OUTPUT_ROLES = (ATTENTION_OUTPUT, MLP_OUTPUT)


@dataclass(frozen=True)
class ModelClasses:
    """The stock classes of a family and the optimum-flap classes for its pruned (per-layer) form."""

    stock_config_class: type
    stock_model_class: type
    flap_config_class: type
    flap_model_class: type


@dataclass(frozen=True)
class DecoderArchitecture:
    """The spec of one decoder family (one frozen instance per family, in `architectures/<family>.py`).

    Projection fields hold the module name inside the attention (`attention_name`) or MLP
    (`mlp_name`) block. Roles that name the same module are fused: their rows are stacked in role order
    (query, key, value; gate, up).
    """

    model_type: str
    #: stock config flag that adds a bias to q/k/v *and* o_proj, if the family has one
    attention_bias_flag: str | None = None
    #: stock config flag that adds a bias to gate/up *and* down_proj, if the family has one
    mlp_bias_flag: str | None = None
    #: roles that always carry a bias, with no config flag (Qwen2's q/k/v)
    fixed_bias_roles: frozenset[str] = frozenset()
    #: modules (relative to the attention block) with one slice per query head, cut with their heads
    per_head_norms: tuple[str, ...] = ()
    #: modules (relative to the attention block) of size head_dim shared by all heads: never cut (Qwen3's
    #: q_norm / k_norm)
    shared_head_norms: tuple[str, ...] = ()
    #: the stock attention reads its head counts from its config at every forward (Phi-3's qkv split), so
    #: a pruned layer's attention gets a config view with its own counts
    attention_sizes_in_config: bool = False
    #: why attention heads cannot be removed from this family (then every head group is kept and only
    #: MLP channels are pruned), or None
    head_removal_refused: str | None = None
    #: norms a layer applies to its attention / MLP output before the residual add (module names in the decoder
    #: layer: Gemma's `post_attention_layernorm`, `post_feedforward_layernorm`), None in pre-norm families. A
    #: change in the sub-block's output reaches the residual stream rescaled by that norm (see engine/post_norm.py)
    attention_post_norm: str | None = None
    mlp_post_norm: str | None = None
    #: classes that load the stock and the per-layer checkpoint; None where checkpoints are not supported
    classes: ModelClasses | None = None
    layers_path: str = "model.layers"
    attention_name: str = "self_attn"
    mlp_name: str = "mlp"
    query: str = "q_proj"
    key: str = "k_proj"
    value: str = "v_proj"
    attention_output: str = "o_proj"
    gate: str = "gate_proj"
    up: str = "up_proj"
    mlp_output: str = "down_proj"
    #: the norm after the last decoder layer (cut with the hidden size)
    final_norm_path: str = "model.norm"
    #: config lists with one entry per decoder layer, trimmed when layers are removed
    per_layer_config_lists: tuple[str, ...] = ("layer_types", "no_rope_layers")
    #: the forward multiplies the embeddings by sqrt(config.hidden_size) (Gemma), so a smaller hidden size
    #: needs the saved embedding weights rescaled to keep the pruned model's function
    embeddings_scaled_by_sqrt_hidden: bool = False
    #: norms (the post-norms included) multiply by (offset + weight): 1.0 for Gemma's (1 + weight) RMSNorm, 0.0
    #: for the usual ones
    norm_weight_offset: float = 0.0

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def attention(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.attention_name)

    def mlp(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.mlp_name)

    def path(self, role: str) -> str:
        """Module path of a role, relative to a decoder layer (e.g. `"self_attn.q_proj"`)."""
        block = self.attention_name if role in ATTENTION_ROLES else self.mlp_name
        return f"{block}.{getattr(self, role)}"

    def attention_output_path(self) -> str:
        """Module path, relative to a decoder layer, whose input holds the per-head channels."""
        return self.path(ATTENTION_OUTPUT)

    def mlp_output_path(self) -> str:
        """Module path, relative to a decoder layer, whose input holds the MLP channels."""
        return self.path(MLP_OUTPUT)

    def post_norm_path(self, role: str) -> str | None:
        """Module path, relative to a decoder layer, of the norm after the sub-block of output `role`, if any."""
        return self.attention_post_norm if role == ATTENTION_OUTPUT else self.mlp_post_norm

    def fused_roles(self, role: str) -> tuple[str, ...]:
        """The roles stored in the same Linear as `role`, in row order (just `(role,)` when unfused)."""
        group = ATTENTION_ROLES if role in ATTENTION_ROLES else MLP_ROLES
        return tuple(r for r in group if self.path(r) == self.path(role))

    def projection_paths(self) -> dict[str, str]:
        """Distinct projection modules of a layer: path -> the roles it holds (fused ones share a path)."""
        paths: dict[str, str] = {}
        for role in ROLES:
            paths.setdefault(self.path(role), role)
        return {path: self.fused_roles(role) for path, role in paths.items()}

    def projections(self, layer: nn.Module) -> dict[str, nn.Linear]:
        """role -> Linear of one decoder layer (fused roles map to the same module)."""
        return {role: layer.get_submodule(self.path(role)) for role in ROLES}

    def output_widths(self, layer: nn.Module) -> dict[str, int]:
        """role -> its output width in one decoder layer, a fused module's rows shared out in role order.

        A fused module's height is a whole number of units: a head group (`group_size * head_dim` query
        rows, `head_dim` key rows, `head_dim` value rows) or an MLP channel (a gate row and an up row).
        """
        group_size, head_dim = self.head_geometry(layer)
        unit = {QUERY: group_size * head_dim, KEY: head_dim, VALUE: head_dim, GATE: 1, UP: 1}
        widths: dict[str, int] = {}
        for path, roles in self.projection_paths().items():
            height = layer.get_submodule(path).out_features
            if len(roles) == 1:
                widths[roles[0]] = height
                continue
            count, rest = divmod(height, sum(unit[r] for r in roles))
            if rest:
                raise ValueError(f"{path}: {height} rows are not whole units of {', '.join(roles)}.")
            widths.update({role: count * unit[role] for role in roles})
        return widths

    def set_projection(self, layer: nn.Module, role: str, linear: nn.Linear) -> None:
        block = self.attention(layer) if role in ATTENTION_ROLES else self.mlp(layer)
        setattr(block, getattr(self, role), linear)

    def head_geometry(self, layer: nn.Module) -> tuple[int, int]:
        """(query heads per key/value head, head_dim) of one decoder layer, from its attention module."""
        attention = self.attention(layer)
        return int(attention.num_key_value_groups), int(attention.head_dim)

    def head_groups(self, layer: nn.Module) -> int:
        """Key/value head groups the layer has now (a pruned layer has fewer than its config says)."""
        group_size, head_dim = self.head_geometry(layer)
        return self.projections(layer)[ATTENTION_OUTPUT].in_features // (group_size * head_dim)

    def config_has_bias(self, config: Any, role: str) -> bool:
        """Whether the stock config `config` gives projection `role` a bias."""
        if role in self.fixed_bias_roles:
            return True
        flag = self.attention_bias_flag if role in ATTENTION_ROLES else self.mlp_bias_flag
        return bool(flag and getattr(config, flag, False))

    def bias_expressible(self, role: str) -> bool:
        """Whether the stock config can describe a bias on `role` at all (through a flag or always on)."""
        flag = self.attention_bias_flag if role in ATTENTION_ROLES else self.mlp_bias_flag
        return flag is not None or role in self.fixed_bias_roles


def attention_geometry(config: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head_dim) of the dense model.

    A reloaded per-layer checkpoint keeps the dense sizes as its config's global values, but transformers
    refuses attribute reads of those (they vary per layer), so they are read from the instance's own values.
    """
    own = vars(config) if getattr(config, "is_heterogeneous", False) else None

    def read(name: str) -> Any:
        return own.get(name) if own is not None else getattr(config, name, None)

    heads = read("num_attention_heads")
    kv_heads = read("num_key_value_heads") or heads
    head_dim = read("head_dim") or read("hidden_size") // heads
    return heads, kv_heads, head_dim
