"""The method registry: each method's options declared once, registered by name, implementation imported lazily."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import subprocess
import sys

import pytest

from optimum_flap import FlapConfig
from optimum_flap.commands.cli import add_prune_arguments, build_parser, config_from_args
from optimum_flap.configuration import CFSP_DEFAULT_TEMPERATURE, method_option_names
from optimum_flap.methods import registry
from optimum_flap.methods.options import MethodOptions, option, option_specs
from optimum_flap.methods.registry import (
    get_method_class,
    get_registered_method,
    register_method,
    registered_methods,
)

STRUCTURED = {"bias_compensation", "min_head_groups", "min_channels", "round_to"}


def _options(method: str) -> dict[str, object]:
    return {spec.name: spec.default for spec in option_specs(get_registered_method(method).options)}


def test_builtin_methods_and_their_options():
    assert registered_methods()[:4] == ("flap", "wanda-sp", "magnitude-sp", "cfsp")
    assert _options("flap") == {"bias_compensation": True, "min_head_groups": 1, "min_channels": 1, "round_to": None,
                                "structure": "AL-AM", "remove_heads": None, "post_norm_gains": True, "metric": "wifv"}
    assert set(_options("cfsp")) == STRUCTURED | {"cfsp_importance", "cfsp_allocation", "cfsp_temperature",
                                                  "cfsp_score", "cfsp_prune_attention"}
    assert _options("cfsp")["cfsp_temperature"] == CFSP_DEFAULT_TEMPERATURE == 1e4 / (128 * 1024)
    assert _options("cfsp")["bias_compensation"] is False


def test_baselines_have_flaps_options_but_the_metric():
    flap = {k: v for k, v in _options("flap").items() if k not in ("metric", "bias_compensation")}
    for baseline in ("wanda-sp", "magnitude-sp"):
        options = _options(baseline)
        assert "metric" not in options and options.pop("bias_compensation") is False
        assert options == flap


def test_an_option_shared_by_methods_has_one_type_and_one_set_of_choices():
    """The command line makes one flag per option name, so the declarations must agree (defaults may differ)."""
    shared = set(FlapConfig._field_names())
    for name in method_option_names():
        declarations = {(s.type, s.optional, s.choices, s.minimum) for m in registry.methods_with_option(name)
                        for s in option_specs(get_registered_method(m).options) if s.name == name}
        assert len(declarations) == 1, (name, declarations)
        assert name not in shared, f"method option {name!r} would shadow a FlapConfig field"


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("cfsp_temperature", float("inf"), "a finite number > 0"),
        ("cfsp_temperature", -1.0, "a finite number > 0"),
        ("cfsp_temperature", True, "a finite number > 0"),
        ("min_channels", 2.0, "a positive int"),
        ("round_to", False, "None or a positive int"),
        ("cfsp_prune_attention", 1, "True or False"),
    ],
)
def test_option_types_are_checked(field, value, allowed):
    with pytest.raises(ValueError) as err:
        FlapConfig(method="cfsp", **{field: value})
    assert str(err.value) == f"FlapConfig: invalid {field}={value!r}; allowed: {allowed}."


@dataclasses.dataclass
class ToyOptions(MethodOptions):
    alpha: float = option(0.5, "mixing weight", minimum=0)
    schedule: str = option("linear", "how the mix changes", choices=("linear", "cosine"))
    round_to: int | None = option(None, "make kept MLP widths multiples of this", minimum=1)


@pytest.fixture
def toy_method(monkeypatch):
    """A method registered for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_method("toy", ToyOptions, "collections:OrderedDict", "a toy method")
    return "toy"


def test_a_registered_method_gets_config_fields_and_command_line_flags(toy_method):
    config = FlapConfig(method="toy", alpha=2.0, schedule="cosine", dataset="c4")
    assert (config.alpha, config.schedule, config.round_to, config.metric) == (2.0, "cosine", None, None)
    assert FlapConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="option alpha=1.0 does not apply to method='flap'; it applies to toy"):
        FlapConfig(alpha=1.0)
    with pytest.raises(ValueError, match="option metric='ifv' does not apply to method='toy'; it applies to flap"):
        FlapConfig(method="toy", metric="ifv")
    args = build_parser().parse_args(["prune", "--method", "toy", "--alpha", "2", "--schedule", "cosine",
                                      "--dataset", "c4", "-o", "out"])
    assert config_from_args(args) == config
    prune = argparse.ArgumentParser(formatter_class=lambda prog: argparse.HelpFormatter(prog, width=1000))
    add_prune_arguments(prune)
    help_text = prune.format_help()
    assert "--alpha X             mixing weight [toy] (default: 0.5)" in help_text
    assert "[flap, wanda-sp, magnitude-sp, cfsp, minitron, toy] (default: unset for" in help_text  # --round-to
    assert get_method_class("toy").__name__ == "OrderedDict"


def test_registering_a_taken_name_differently_is_refused(toy_method):
    register_method("toy", ToyOptions, "collections:OrderedDict", "a toy method")  # the same again is fine
    with pytest.raises(ValueError, match="'toy' is already registered with ToyOptions"):
        register_method("toy", ToyOptions, "collections:Counter", "another")
    with pytest.raises(ValueError, match="allowed: 'package.module:ClassName'"):
        register_method("toy2", ToyOptions, "collections.Counter", "no colon")


def test_builtin_implementations_name_existing_modules():
    for method in ("flap", "wanda-sp", "magnitude-sp", "cfsp"):
        module, class_name = get_registered_method(method).implementation.split(":")
        assert importlib.util.find_spec(module) is not None and class_name.endswith("Method"), method


def test_registry_configs_and_cli_import_no_torch():
    code = ("import sys, optimum_flap.commands.cli, optimum_flap.methods.registry; "
            "from optimum_flap import FlapConfig; FlapConfig(method='cfsp'); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("first", ["optimum_flap", "transformers"])
def test_import_optimum_flap_is_light_and_leaves_the_auto_classes_alone(first):
    """`import optimum_flap` imports no torch; loading the pruned-model classes and saving one changes no Auto
    class, so stock checkpoints of every family still get the stock classes."""
    code = (f"import sys, importlib; importlib.import_module({first!r}); import optimum_flap; "
            "light = 'torch' not in sys.modules; "
            "import transformers as t; from optimum_flap.models import register_for_saving; register_for_saving(); "
            "mapping = t.AutoModelForCausalLM._model_mapping; "
            "print(light, all(mapping[getattr(t, f + 'Config')].__name__ == f + 'ForCausalLM' "
            "for f in ('Llama', 'Mistral', 'Qwen2', 'Qwen3')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
