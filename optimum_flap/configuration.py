"""`FlapConfig`: the pruning recipe, validated at construction and serialisable like HF configs.

The shape follows transformers' quantization configs and optimum's `GPTQQuantizer`: keyword
arguments, `to_dict`/`from_dict`, JSON files, and a version stamp so a checkpoint says which
release produced it.

The fields shared by every method (method, ratio, calibration data) live here; each method's own
options are declared once in its folder (`optimum_flap/methods/<name>/config.py`) and registered
with it (`optimum_flap.methods.registry`). `FlapConfig` builds the chosen method's options object
and reads its fields as its own, so `config.metric` or `config.cfsp_importance` work as before; an
option of another method is refused. Importing this module imports no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .methods.cfsp.config import CFSP_DEFAULT_TEMPERATURE
from .methods.options import MethodOptions, option_specs
from .methods.registry import get_registered_method, methods_with_option, registered_methods
from .recipe import Recipe, is_int
from .version import __version__

CONFIG_NAME = "flap_config.json"
#: `pruning_ratio` when neither the caller nor the method's options (an N:M pattern) set it
DEFAULT_PRUNING_RATIO = 0.2

__all__ = ["CFSP_DEFAULT_TEMPERATURE", "CONFIG_NAME", "DEFAULT_PRUNING_RATIO", "FlapConfig", "method_option_names"]


def method_option_names() -> tuple[str, ...]:
    """Every option of every registered method, each once, in registration order."""
    names: dict[str, None] = {}
    for method in registered_methods():
        names.update(dict.fromkeys(s.name for s in option_specs(get_registered_method(method).options)))
    return tuple(names)


def _option_defaults(name: str) -> list[Any]:
    """The defaults `name` has in the methods that have it (an option may default differently per method)."""
    return [spec.default for method in methods_with_option(name)
            for spec in option_specs(get_registered_method(method).options) if spec.name == name]


class FlapConfig(Recipe):
    """Recipe for one pruning run: the fields every method shares plus the chosen method's options.

    Args:
        method: a registered method: `"flap"` (fluctuation metric), the baselines `"wanda-sp"`
            (|W|·‖x‖ column score) and `"magnitude-sp"` (weight column norm), or `"cfsp"`.
        pruning_ratio: fraction of the decoder's linear-layer parameters to remove, in [0, 1); for the
            weight-level methods (magnitude, wanda, sparsegpt, barber) the fraction of decoder linear
            weights set to zero. None: 0.2, or 1 - N/M for an N:M `sparsity_type`.
        dataset: calibration text: `"wikitext2"`, `"c4"`, a local file (`.txt`, `.raw`, `.tokens`,
            `.jsonl`/`.json` with a `text` field), a list of strings, or pre-tokenized ids.
        num_samples: number of calibration sequences (the paper uses 1024).
        seq_len: tokens per calibration sequence (the paper uses 128).
        seed: sampling seed; the same seed gives the same calibration set and the same model.
        batch_size: calibration sequences per forward call; changes speed and memory, not results.
        **options: the method's own options (see README, or ``optimum-flap prune --help``):
            flap: `metric`, `structure`, `remove_heads`, `bias_compensation` (default True),
            `min_head_groups`, `min_channels`, `round_to`; wanda-sp and magnitude-sp: the same
            without `metric`, `bias_compensation` defaulting to False; cfsp: `cfsp_importance`,
            `cfsp_allocation`, `cfsp_temperature`, `cfsp_score`, `cfsp_prune_attention`,
            `bias_compensation` (default False), `min_head_groups`, `min_channels`, `round_to`.
            `bias_compensation=None` means the method's default (what older releases wrote).

    Raises:
        ValueError: naming the field, the value and what is allowed; for an option of another
            method, naming the option, the method and the methods it applies to.
    """

    def __init__(
        self,
        method: str = "flap",
        pruning_ratio: float | None = None,
        dataset: str | Sequence[str] | Sequence[Sequence[int]] = "wikitext2",
        num_samples: int = 1024,
        seq_len: int = 128,
        seed: int = 0,
        batch_size: int = 8,
        **options: Any,
    ) -> None:
        options.pop("optimum_flap_version", None)
        if not isinstance(method, str):
            raise self._fail("method", method, ", ".join(registered_methods()))
        registration = get_registered_method(method)
        self._check_option_names(method, options)
        if "bias_compensation" in options and options["bias_compensation"] is None:
            del options["bias_compensation"]
        self.method = method
        self.method_options: MethodOptions = registration.options(**options)
        if pruning_ratio is None:
            implied = self.method_options.implied_pruning_ratio()
            pruning_ratio = DEFAULT_PRUNING_RATIO if implied is None else implied
        self.pruning_ratio = pruning_ratio
        self.dataset = dataset
        self.num_samples = num_samples
        self.seq_len = seq_len
        self.seed = seed
        self.batch_size = batch_size
        self.validate()

    @classmethod
    def _check_option_names(cls, method: str, options: dict[str, Any]) -> None:
        known = method_option_names()
        unknown = sorted(name for name in options if name not in known)
        if unknown:
            raise ValueError(f"FlapConfig: unknown argument(s) {unknown}; allowed: "
                             f"{sorted(cls._field_names() + known)}.")
        own = {spec.name for spec in option_specs(get_registered_method(method).options)}
        for name in options:
            if name not in own:
                raise ValueError(f"FlapConfig: option {name}={options[name]!r} does not apply to method={method!r}; "
                                 f"it applies to {', '.join(methods_with_option(name))}.")

    def validate(self) -> None:
        """Raise `ValueError` naming the first shared field whose value is not allowed (options check themselves)."""
        if isinstance(self.pruning_ratio, bool) or not isinstance(self.pruning_ratio, (int, float)) or not (
            0.0 <= self.pruning_ratio < 1.0
        ):
            raise self._fail("pruning_ratio", self.pruning_ratio, "a number in [0, 1)")
        self.method_options.check_pruning_ratio(self.pruning_ratio)
        for name in ("num_samples", "seq_len", "batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise self._fail(name, value, "a positive int")
        if not is_int(self.seed):
            raise self._fail("seed", self.seed, "an int")
        self._validate_dataset()

    def __getattr__(self, name: str) -> Any:
        """The method's options read as fields; another method's option reads as None (it does not apply)."""
        options = self.__dict__.get("method_options")
        if options is not None and name in options.__dataclass_fields__:
            return getattr(options, name)
        if options is not None and name in method_option_names():
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        options = self.__dict__.get("method_options")
        if options is None or name not in method_option_names():
            super().__setattr__(name, value)
            return
        self._check_option_names(self.method, {name: value})
        self.method_options = type(options)(**{**options.to_dict(), name: value})

    @property
    def use_bias_compensation(self) -> bool:
        """Whether the mean contribution of removed channels is folded into the output bias."""
        return self.method_options.bias_compensation

    def to_dict(self) -> dict[str, Any]:
        """The shared fields and the method's options only, stamped with the package version.

        Large in-memory datasets are summarised. Another method's options are not written (older
        releases wrote every field; `from_dict` still reads those).
        """
        return {**super().to_dict(), **self.method_options.to_dict(), "optimum_flap_version": __version__}

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> FlapConfig:
        """Build from `to_dict`'s output, or from a dict of an older release that stored every field.

        Options of other methods are dropped when they hold their default (so an old wanda-sp recipe
        with `metric: "wifv"` loads); one set to anything else is refused as in the constructor.
        """
        method = overrides.get("method", config_dict.get("method", "flap"))
        own = set(get_registered_method(method).options.__dataclass_fields__) if isinstance(method, str) else set()
        kept = {
            name: value for name, value in config_dict.items()
            if name in own or name not in method_option_names() or value not in _option_defaults(name)
        }
        return cls(**{**kept, **overrides})

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
