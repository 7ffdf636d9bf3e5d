"""The decoder weights of a (pruned) model as GGUF tensors: per-layer sizes, padding and the q/k row order.

llama.cpp sizes every layer of the `deci` architecture from its own head, key/value head and FFN counts,
so a pruned model's weights go in at their pruned shapes. Two changes are made on the way, both exact:

- **FFN padding.** Q8_0/Q4_0 quantise rows in blocks of 32; `ffn_down`'s rows are `n_ff` long, and a
  width that is no multiple of 32 would leave that matrix in f16. Zero gate/up rows (and bias entries)
  give `silu(0) * 0 = 0`, and zero `down` columns add nothing, so padding changes no output.
- **Rotary row order.** transformers rotates channel `i` with `i + head_dim/2` (rotate-half); llama.cpp's
  normal RoPE rotates neighbours `2i, 2i+1`. q/k rows (and biases) are reordered per head, with each
  layer's own head counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..architectures import DecoderArchitecture, attention_geometry
from ..streaming import shares_embeddings


class GGUFExportError(ValueError):
    """A model (or an export option) that the GGUF file cannot represent exactly."""


@dataclass(frozen=True)
class LayerSizes:
    """One decoder layer's widths, measured from its modules (not from the config)."""

    num_heads: int
    num_kv_heads: int
    ffn_width: int


def measure_layers(model: nn.Module, arch: DecoderArchitecture) -> list[LayerSizes]:
    """Each layer's widths; refuses the layers llama.cpp would load but compute differently."""
    size = attention_geometry(model.config)[2]
    sizes = []
    for index, layer in enumerate(arch.decoder_layers(model)):
        attention, mlp = arch.attention(layer), arch.mlp(layer)
        query_rows = getattr(attention, arch.query).out_features
        key_rows = getattr(attention, arch.key).out_features
        ffn_width = getattr(mlp, arch.gate).out_features
        if query_rows % size or key_rows % size:
            raise GGUFExportError(f"layer {index}: q/k projections ({query_rows}, {key_rows} rows) are not whole "
                                  f"heads of head_dim={size}")
        heads, kv_heads = query_rows // size, key_rows // size
        if heads == 0 or kv_heads == 0 or ffn_width == 0:
            # deci reads 0 heads / 0 channels as Nemotron's attention-free / FFN-free blocks, which skip
            # the residual differently from a transformers layer with an empty projection
            raise GGUFExportError(f"layer {index} has {heads} heads, {kv_heads} key/value heads and {ffn_width} FFN "
                                  "channels; llama.cpp cannot represent a layer without heads or FFN channels")
        if heads % kv_heads:
            raise GGUFExportError(f"layer {index}: {heads} query heads are not a multiple of {kv_heads} kv heads")
        sizes.append(LayerSizes(heads, kv_heads, ffn_width))
    return sizes


def padded_width(width: int, pad_to: int) -> int:
    """`width` rounded up to a multiple of `pad_to` (1 = no padding)."""
    return -(-width // pad_to) * pad_to


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """`tensor` with zero rows appended up to `rows` (dimension 0)."""
    extra = rows - tensor.shape[0]
    if extra == 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((extra, *tensor.shape[1:]))])


def pad_columns(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """`tensor` (2-D) with zero columns appended up to `columns`."""
    extra = columns - tensor.shape[1]
    if extra == 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((tensor.shape[0], extra))], dim=1)


def interleave_rotary_rows(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder each head's rows from rotate-half pairs (i, i + d/2) to neighbour pairs (2i, 2i + 1)."""
    half = tensor.shape[0] // num_heads // 2
    rest = tensor.shape[1:]
    return tensor.reshape(num_heads, 2, half, *rest).transpose(1, 2).reshape(tensor.shape)


def _linear(module: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    linear = getattr(module, name)
    return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()


def decoder_tensors(model: nn.Module, arch: DecoderArchitecture, sizes: list[LayerSizes], pad_to: int,
                    interleave_rotary: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, float32 tensor) for every weight llama.cpp's llama/deci/qwen2 graphs read."""
    base = model.get_submodule(arch.layers_path.rsplit(".", 1)[0])
    yield "token_embd.weight", base.embed_tokens.weight.detach()
    for index, (layer, size) in enumerate(zip(arch.decoder_layers(model), sizes, strict=True)):
        attention, mlp = arch.attention(layer), arch.mlp(layer)
        prefix = f"blk.{index}"
        yield f"{prefix}.attn_norm.weight", layer.input_layernorm.weight.detach()
        for gguf_name, module_name, heads in (("attn_q", arch.query, size.num_heads),
                                              ("attn_k", arch.key, size.num_kv_heads),
                                              ("attn_v", arch.value, None)):
            weight, bias = _linear(attention, module_name)
            if interleave_rotary and heads is not None:
                weight = interleave_rotary_rows(weight, heads)
                bias = None if bias is None else interleave_rotary_rows(bias, heads)
            yield f"{prefix}.{gguf_name}.weight", weight
            if bias is not None:
                yield f"{prefix}.{gguf_name}.bias", bias
        weight, bias = _linear(attention, arch.attention_output)
        yield f"{prefix}.attn_output.weight", weight
        if bias is not None:
            yield f"{prefix}.attn_output.bias", bias
        yield f"{prefix}.ffn_norm.weight", layer.post_attention_layernorm.weight.detach()
        width = padded_width(size.ffn_width, pad_to)
        for gguf_name, module_name in (("ffn_gate", arch.gate), ("ffn_up", arch.up)):
            weight, bias = _linear(mlp, module_name)
            yield f"{prefix}.{gguf_name}.weight", pad_rows(weight, width)
            if bias is not None:
                yield f"{prefix}.{gguf_name}.bias", pad_rows(bias, width)
        weight, bias = _linear(mlp, arch.mlp_output)
        yield f"{prefix}.ffn_down.weight", pad_columns(weight, width)
        if bias is not None:
            yield f"{prefix}.ffn_down.bias", bias
    yield "output_norm.weight", base.norm.weight.detach()
    if not shares_embeddings(model):  # a config that ties but a different stored lm_head: write it
        yield "output.weight", model.get_output_embeddings().weight.detach()
