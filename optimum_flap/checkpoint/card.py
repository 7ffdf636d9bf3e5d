"""Model card (README.md) for a pruned checkpoint: what was pruned, how much, and how to load it."""

from __future__ import annotations

import html
import json
import os
import re
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from ..accounting import (
    achieved_ratio,
    biased_roles,
    decoder_linear_parameters,
    layout_parameters,
    nonzero_decoder_parameters,
)
from ..architectures import get_architecture
from ..layout import RECIPE_KEY
from ..privacy import publishable_model_name

if TYPE_CHECKING:
    from .save import CheckpointPlan

CARD_TAGS = ["pruned", "flap", "structured-pruning", "optimum-flap"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def pruning_stats(model: nn.Module, plan: CheckpointPlan) -> dict[str, Any]:
    """Parameter counts of the pruned model and the ratio actually removed.

    `achieved_ratio` is the fraction of the decoder layers' linear parameters (weights and biases of
    q/k/v/o/gate/up/down) removed, counted by `optimum_flap.accounting` exactly as the pruner's report
    counts it; embeddings, norms and the LM head are not counted. A structured checkpoint is counted
    from its layout (the dense model is gone), a masked one from its non-zero entries.
    """
    arch = get_architecture(model)
    compensation = plan.layout.compensation_biases or ()
    if plan.sparsity is not None:
        dense_linear = decoder_linear_parameters(model, arch, without_bias_of=compensation)
        pruned_linear = nonzero_decoder_parameters(model, arch)
    else:
        dense_linear, pruned_linear = layout_parameters(
            plan.layout, model.config.hidden_size, plan.head_dim, plan.dense_sizes, biased_roles(model, arch)
        )
    total = sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once
    return {
        "total_parameters": total,
        "dense_decoder_linear_parameters": dense_linear,
        "pruned_decoder_linear_parameters": pruned_linear,
        "achieved_ratio": achieved_ratio(dense_linear, pruned_linear),
    }


def _hub_id(base_model: str | None) -> str | None:
    """`base_model` if it looks like a Hub repo id (a local path is not valid card metadata)."""
    if base_model and _HUB_ID.fullmatch(base_model) and not os.path.exists(base_model):
        return base_model
    return None


#: characters with a meaning in markdown inside a line (links, emphasis, code, tables); `<`, `>`, `&` are
#: HTML-escaped, and line-start markers (`#`, `-`, `---`) cannot occur as every value is joined into one line
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()|~!])")


def _text(value: Any) -> str:
    """`value` as inert markdown text: one line (no heading, list or front matter can start), markdown
    punctuation backslash-escaped, then `<`, `>`, `&` and quotes as HTML entities.

    Every user-supplied string in the card (model and directory names, recipe values, config fields) goes
    through here, or into a fenced block by `_fenced`: a card is published as is.
    """
    line = " ".join(str(value).split())
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", line), quote=True)


def _fenced(language: str, body: str) -> list[str]:
    """A fenced code block of `body` whose fence is longer than any run of backticks inside it (so it cannot
    be closed early), as card lines."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", body, fence]


def _size_table(plan: CheckpointPlan) -> list[str]:
    return [
        "Per-layer sizes (query heads / key-value heads / MLP channels):",
        "",
        "| layer | heads | kv heads | MLP channels |",
        "|---|---|---|---|",
        *(
            f"| {i} | {la.num_attention_heads} | {la.num_key_value_heads} | {la.intermediate_size} |"
            for i, la in enumerate(plan.layout.layers)
        ),
    ]


def _sparsity_table(sparsity: list[dict[str, float]]) -> list[str]:
    modules = list(sparsity[0])
    return [
        "Per-layer sparsity (fraction of zero weights in each projection):",
        "",
        "| layer | " + " | ".join(f"`{m}`" for m in modules) + " |",  # module paths of our family specs
        "|---|" + "---|" * len(modules),
        *(f"| {i} | " + " | ".join(f"{layer[m]:.4f}" for m in modules) + " |" for i, layer in enumerate(sparsity)),
    ]


def _recipe_as_used(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe with `bias_compensation` resolved: `None` only means "the method's default", so show that value."""
    if "bias_compensation" not in recipe or recipe["bias_compensation"] is not None:
        return recipe
    from ..configuration import FlapConfig

    try:
        used = FlapConfig.from_dict(recipe).use_bias_compensation
    except (TypeError, ValueError):  # a recipe this version cannot rebuild: show it as stored
        return recipe
    return {**recipe, "bias_compensation": used}


def build_model_card(
    model: nn.Module, *, plan: CheckpointPlan, base_model: str | None = None, repo_id: str | None = None
) -> ModelCard:
    """A `huggingface_hub.ModelCard` describing a pruned checkpoint.

    Card data: `base_model` (when it is a Hub id), the tags `pruned`, `flap`,
    `structured-pruning`, `optimum-flap`, `library_name: transformers`. Body: the recipe, the
    achieved ratio, parameter counts, per-layer sizes (a masked model: per-layer sparsity), and how to
    load the checkpoint.
    """
    from .save import REMOTE_CODE_FORMAT

    stats = pruning_stats(model, plan)
    recipe = _recipe_as_used(getattr(plan.config, RECIPE_KEY, None) or {})
    family = get_architecture(model).model_type
    hub_base = _hub_id(base_model)
    data = ModelCardData(
        base_model=hub_base,
        tags=list(CARD_TAGS),
        library_name="transformers",
        pipeline_tag="text-generation",
    )
    # a Python string literal in the snippets; no backtick, so it cannot close their fence
    name = json.dumps(repo_id or "path/to/this/checkpoint").replace("`", "\\u0060")
    local_name = publishable_model_name(base_model)  # a local directory is named, its path is not published
    source = (f"[{_text(hub_base)}](https://huggingface.co/{hub_base})" if hub_base
              else _text(local_name or "a dense model"))
    ratio = stats["achieved_ratio"]
    what = ("Weights were set to zero in place (the tensors keep their dense shapes);" if plan.sparsity is not None
            else "Attention heads and MLP channels were removed;")
    lines = [
        f"# {_text(repo_id.split('/')[-1]) if repo_id else 'Pruned model'}",
        "",
        f"A {'sparse' if plan.sparsity is not None else 'structurally pruned'} version of {source} "
        f"({_text(family)} architecture), produced with "
        "optimum-flap "
        f"({_text(recipe.get('method', 'flap'))}, structure {_text(recipe.get('structure', 'n/a'))}). "
        f"{what} no weights were retrained.",
        "",
        "## Pruning results",
        "",
        "| | value |",
        "|---|---|",
        f"| requested ratio | {_text(recipe.get('pruning_ratio', 'n/a'))} |",
        f"| achieved ratio (decoder linear parameters removed) | {ratio:.4f} |",
        f"| decoder linear parameters, dense | {stats['dense_decoder_linear_parameters']:,} |",
        f"| decoder linear parameters, pruned | {stats['pruned_decoder_linear_parameters']:,} |",
        f"| total parameters (pruned model) | {stats['total_parameters']:,} |",
        f"| checkpoint format | `{plan.checkpoint_format}` |",
        "",
        *(_size_table(plan) if plan.sparsity is None else _sparsity_table(plan.sparsity)),
        "",
        "## Recipe",
        "",
        *_fenced("json", json.dumps(recipe, indent=2, sort_keys=True, default=str)),
        "",
        "## How to load",
        "",
    ]
    if plan.checkpoint_format == REMOTE_CODE_FORMAT:
        lines += [
            "The layers have different sizes, so this checkpoint ships a small model definition "
            "(`modeling_flap_*.py`, importing only torch and transformers). With plain transformers:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained({name}, trust_remote_code=True)',
            f'tokenizer = AutoTokenizer.from_pretrained({name})  # a stock tokenizer: no flag needed',
            "```",
            "",
            "or, with optimum-flap installed (its own classes, no flag):",
            "",
            "```python",
            "from optimum_flap import load_pruned_model",
            "",
            f'model = load_pruned_model({name})',
            "```",
        ]
    else:
        lines += [
            "This is a stock transformers checkpoint; no extra code is needed:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained({name})',
            f'tokenizer = AutoTokenizer.from_pretrained({name})',
            "```",
        ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)
