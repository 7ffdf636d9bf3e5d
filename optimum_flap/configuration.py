"""`FlapConfig`: the pruning recipe, validated at construction and serialisable like HF configs.

The shape follows transformers' quantization configs and optimum's `GPTQQuantizer`: keyword
arguments, `to_dict`/`from_dict`, JSON files, and a version stamp so a checkpoint says which
release produced it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .recipe import Recipe, is_int
from .version import __version__

CONFIG_NAME = "flap_config.json"

METHODS = ("flap", "wanda-sp", "magnitude-sp", "cfsp")
METRICS = ("wifv", "ifv", "wifn")
STRUCTURES = ("UL-UM", "UL-MM", "AL-MM", "AL-AM")
MANUAL_STRUCTURES = ("UL-MM", "AL-MM")
CFSP_IMPORTANCE = ("angular", "cosine", "mse")
CFSP_ALLOCATIONS = ("sigmoid", "uniform")
CFSP_SCORES = ("activation", "weight-activation")
#: the released CFSP code divides summed importances by 1e4 over 128 x 1024 tokens; on a mean that is this
CFSP_DEFAULT_TEMPERATURE = 1e4 / (128 * 1024)

#: Bias compensation is the paper's; the baselines are reported without it, as in FLAP's Table 1.
_DEFAULT_BIAS_COMPENSATION = {"flap": True, "wanda-sp": False, "magnitude-sp": False, "cfsp": False}


class FlapConfig(Recipe):
    """Recipe for one pruning run.

    Args:
        method: `"flap"` (fluctuation metric), or the baselines `"wanda-sp"` (|W|·‖x‖ column score)
            and `"magnitude-sp"` (weight column norm). All three share one engine and the structures.
        pruning_ratio: fraction of the decoder's linear-layer parameters to remove, in [0, 1).
        metric: FLAP fluctuation metric, `"wifv"` (default), `"ifv"` or `"wifn"`; only used by `"flap"`.
        structure: `"AL-AM"` (one global threshold, default), `"AL-MM"`, `"UL-MM"` or `"UL-UM"`.
        remove_heads: attention heads to remove in total, required by the manual structures
            (`"UL-MM"`, `"AL-MM"`). With grouped-query attention it must be a multiple of the
            group size, since a key/value head and its query heads are removed together.
        dataset: calibration text: `"wikitext2"`, `"c4"`, a local file (`.txt`, `.raw`, `.tokens`,
            `.jsonl`/`.json` with a `text` field), a list of strings, or pre-tokenized ids.
        num_samples: number of calibration sequences (the paper uses 1024).
        seq_len: tokens per calibration sequence (the paper uses 128).
        seed: sampling seed; the same seed gives the same calibration set and the same model.
        batch_size: calibration sequences per forward call; changes speed and memory, not results.
        bias_compensation: fold the mean contribution of removed channels into the output bias.
            Defaults to True for `"flap"` and False for the baselines.
        min_head_groups: key/value head groups every layer keeps (at least 1).
        min_channels: MLP channels every layer keeps (at least 1).
        round_to: make kept MLP widths multiples of this (hardware-aligned widths, CFSP's "cuda
            friendly" option uses 128); None keeps exact widths. Applies to `"cfsp"` and, after
            selection, to the FLAP-family structures' per-layer channel counts.
        cfsp_importance: CFSP block importance between a block's input and output hidden states:
            `"angular"` (default), `"cosine"` or `"mse"`.
        cfsp_allocation: CFSP per-block budget: `"sigmoid"` of the centred importances (default) or
            `"uniform"` (the ablation).
        cfsp_temperature: temperature of the sigmoid allocation (smaller: budgets vary more across
            blocks). The default reproduces the released code's 1e4 on 128 x 1024 tokens.
        cfsp_score: CFSP channel score inside a block: `"activation"` (the released code's default,
            which reduces to the activation norm) or `"weight-activation"` (the paper's form).
        cfsp_prune_attention: CFSP also removes attention head groups (off by default, as CFSP).
    """

    def __init__(
        self,
        method: str = "flap",
        pruning_ratio: float = 0.2,
        metric: str = "wifv",
        structure: str = "AL-AM",
        remove_heads: int | None = None,
        dataset: str | Sequence[str] | Sequence[Sequence[int]] = "wikitext2",
        num_samples: int = 1024,
        seq_len: int = 128,
        seed: int = 0,
        batch_size: int = 8,
        bias_compensation: bool | None = None,
        min_head_groups: int = 1,
        min_channels: int = 1,
        round_to: int | None = None,
        cfsp_importance: str = "angular",
        cfsp_allocation: str = "sigmoid",
        cfsp_temperature: float = CFSP_DEFAULT_TEMPERATURE,
        cfsp_score: str = "activation",
        cfsp_prune_attention: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("optimum_flap_version", None)
        if kwargs:
            raise ValueError(
                f"FlapConfig: unknown argument(s) {sorted(kwargs)}; allowed: {sorted(self._field_names())}."
            )
        self.method = method
        self.pruning_ratio = pruning_ratio
        self.metric = metric
        self.structure = structure
        self.remove_heads = remove_heads
        self.dataset = dataset
        self.num_samples = num_samples
        self.seq_len = seq_len
        self.seed = seed
        self.batch_size = batch_size
        self.bias_compensation = bias_compensation
        self.min_head_groups = min_head_groups
        self.min_channels = min_channels
        self.round_to = round_to
        self.cfsp_importance = cfsp_importance
        self.cfsp_allocation = cfsp_allocation
        self.cfsp_temperature = cfsp_temperature
        self.cfsp_score = cfsp_score
        self.cfsp_prune_attention = cfsp_prune_attention
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first field whose value is not allowed."""
        if self.method not in METHODS:
            raise self._fail("method", self.method, ", ".join(METHODS))
        if isinstance(self.pruning_ratio, bool) or not isinstance(self.pruning_ratio, (int, float)) or not (
            0.0 <= self.pruning_ratio < 1.0
        ):
            raise self._fail("pruning_ratio", self.pruning_ratio, "a number in [0, 1)")
        if self.metric not in METRICS:
            raise self._fail("metric", self.metric, ", ".join(METRICS))
        if self.structure not in STRUCTURES:
            raise self._fail("structure", self.structure, ", ".join(STRUCTURES))
        if self.structure in MANUAL_STRUCTURES:
            if not is_int(self.remove_heads) or self.remove_heads < 0:
                raise self._fail(
                    "remove_heads", self.remove_heads,
                    f"a non-negative int (required by structure={self.structure!r})",
                )
        elif self.remove_heads is not None:
            raise self._fail("remove_heads", self.remove_heads, f"None for structure={self.structure!r}; "
                        f"it only applies to {', '.join(MANUAL_STRUCTURES)}")
        for name in ("num_samples", "seq_len", "batch_size", "min_head_groups", "min_channels"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise self._fail(name, value, "a positive int")
        if not is_int(self.seed):
            raise self._fail("seed", self.seed, "an int")
        if self.bias_compensation is not None and not isinstance(self.bias_compensation, bool):
            raise self._fail("bias_compensation", self.bias_compensation, "True, False or None (method default)")
        if self.round_to is not None and (not is_int(self.round_to) or self.round_to < 1):
            raise self._fail("round_to", self.round_to, "None or a positive int")
        for name, allowed in (("cfsp_importance", CFSP_IMPORTANCE), ("cfsp_allocation", CFSP_ALLOCATIONS),
                              ("cfsp_score", CFSP_SCORES)):
            if getattr(self, name) not in allowed:
                raise self._fail(name, getattr(self, name), ", ".join(allowed))
        if isinstance(self.cfsp_temperature, bool) or not isinstance(self.cfsp_temperature, (int, float)) or not (
            self.cfsp_temperature > 0 and self.cfsp_temperature != float("inf")
        ):
            raise self._fail("cfsp_temperature", self.cfsp_temperature, "a finite number > 0")
        if not isinstance(self.cfsp_prune_attention, bool):
            raise self._fail("cfsp_prune_attention", self.cfsp_prune_attention, "True or False")
        self._validate_dataset()

    @property
    def use_bias_compensation(self) -> bool:
        """The effective bias-compensation switch (the method's default when left as None)."""
        if self.bias_compensation is None:
            return _DEFAULT_BIAS_COMPENSATION[self.method]
        return self.bias_compensation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, stamped with the package version. Large in-memory datasets are summarised."""
        return {**super().to_dict(), "optimum_flap_version": __version__}

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> FlapConfig:
        """Read the recipe from a directory written by `save_pretrained` (or a pruned checkpoint)."""
        path = os.path.join(directory, CONFIG_NAME)
        if os.path.isfile(path):
            return cls.from_json_file(path)
        config_path = os.path.join(directory, "config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                recipe = json.load(f).get("pruning_config")
            if recipe is not None:
                return cls.from_dict(recipe)
        raise FileNotFoundError(f"No {CONFIG_NAME} nor a config.json with a 'pruning_config' in {directory!r}.")

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        os.makedirs(directory, exist_ok=True)
        self.to_json_file(os.path.join(directory, CONFIG_NAME))
