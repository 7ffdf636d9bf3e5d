"""Every registered method decides the same pruning whatever the calibration batch size.

`batch_size` only says how many sequences the pipeline runs through a block at once; the statistics
and gradients a method uses must cover every calibration sample either way. LLM-Barber once saw only
the first batch (its input capture stopped the batch loop): this invariant is the test that would
have caught it. Each method of the registry is run with `batch_size=1` and `batch_size=num_samples`
on the same tiny model and calibration ids, for its default options and for every allowed value of
each of its choice options taken one at a time (so a newly registered method and a new choice are
covered without editing this file); the weight-level methods also for 2:4 and 4:8, and LLM-Barber
for every initial mask x granularity x initial-mask stream, and from SparseGPT for each of its mask
selections.

The model is float64, because a batch of 6 sums its tokens in another order than 6 batches of 1:
in float32, SparseGPT's Hessian then differs in its last bits and near-ties of the sweep flip (it is
accumulated in float64 for a float64 model). With float64 the kept weights and channels must be
identical; only float values computed from the statistics (SparseGPT's updated weights, FLAP's bias
compensation) are compared with a tolerance.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.methods.options import option_specs
from optimum_flap.methods.registry import get_registered_method, registered_methods

NUM_SAMPLES, SEQ_LEN = 6, 16
IDS = calibration_ids(NUM_SAMPLES, SEQ_LEN)
#: methods this test cannot run, with the reason (none today; add one only with its reason)
NOT_COVERED: dict[str, str] = {}
#: options every run of a method gets: a ratio that prunes, and a Barber alpha that moves weights on
#: this tiny model (the released 0.01 moves none of its 64-wide rows; see docs/barber.md)
BASE_OPTIONS = {"barber": dict(barber_alpha=0.3)}
N_M_TYPES = ("2:4", "4:8")
#: options a choice cannot be run without (FLAP's manual structures take a number of heads)
REQUIRED_WITH = {("structure", "UL-MM"): dict(remove_heads=2), ("structure", "AL-MM"): dict(remove_heads=2)}


def _option_names(method: str) -> set[str]:
    return {spec.name for spec in option_specs(get_registered_method(method).options)}


def _variants(method: str) -> list[dict]:
    """Default options, then each allowed value of each choice option on its own; N:M for weight-level methods."""
    specs = option_specs(get_registered_method(method).options)
    variants = [{}]
    for spec in specs:
        variants += [{spec.name: choice, **REQUIRED_WITH.get((spec.name, choice), {})}
                     for choice in spec.choices or () if choice != spec.default]
    if "sparsity_type" in _option_names(method):
        variants += [{"sparsity_type": t} for t in N_M_TYPES]
    if method == "barber":  # every initial mask at every granularity; both streams; N:M from each init
        choices = {spec.name: spec.choices for spec in specs}
        for init in choices["barber_init"]:
            variants += [{"barber_init": init, "barber_granularity": g} for g in choices["barber_granularity"]]
            variants += [{"barber_init": init, "barber_init_stream": stream, **pattern}
                         for stream in choices["barber_init_stream"]
                         for pattern in ({}, {"sparsity_type": "2:4"})]
        variants += [{"barber_init": "sparsegpt", "sparsegpt_mask_selection": selection}  # applies from SparseGPT
                     for selection in choices["sparsegpt_mask_selection"]]
    unique = []
    for variant in variants:
        if variant not in unique:
            unique.append(variant)
    return unique


def _cases() -> list:
    cases = []
    for method in registered_methods():
        if method in NOT_COVERED:
            continue
        for variant in _variants(method):
            label = ",".join(f"{k}={v}" for k, v in variant.items()) or "defaults"
            cases.append(pytest.param(method, variant, id=f"{method}[{label}]"))
    return cases


def _ratio(method: str, variant: dict) -> dict:
    if "sparsity_type" in _option_names(method):
        return {} if variant.get("sparsity_type", "unstructured") != "unstructured" else {"pruning_ratio": 0.5}
    return {"pruning_ratio": 0.3}


def _pruned(dense: torch.nn.Module, method: str, variant: dict, batch_size: int) -> torch.nn.Module:
    model = copy.deepcopy(dense)
    options = {**BASE_OPTIONS.get(method, {}), **_ratio(method, variant), **variant}
    config = FlapConfig(method=method, dataset=IDS, num_samples=NUM_SAMPLES, seq_len=SEQ_LEN,
                        batch_size=batch_size, **options)
    FlapPruner(config).prune_model(model)
    return model


def test_every_registered_method_is_covered_or_listed_with_its_reason():
    assert set(NOT_COVERED) <= set(registered_methods())
    covered = {case.values[0] for case in _cases()}
    assert covered | set(NOT_COVERED) == set(registered_methods())


@pytest.mark.parametrize(("method", "variant"), _cases())
def test_batch_size_does_not_change_what_is_pruned(method, variant):
    dense = tiny_model("llama-gqa", num_hidden_layers=2).double()  # layer 1 sees layer 0's pruning
    original = dense.state_dict()
    one = _pruned(dense, method, variant, batch_size=1).state_dict()
    every = _pruned(dense, method, variant, batch_size=NUM_SAMPLES).state_dict()
    assert one.keys() == every.keys()
    changed = 0
    for name, tensor in one.items():
        other = every[name]
        assert tensor.shape == other.shape, name  # structured methods: the same widths kept
        if name.endswith("bias"):  # compensation biases come from float32 statistics
            torch.testing.assert_close(tensor, other, rtol=1e-5, atol=1e-6, msg=name)
        else:  # the same weights kept (mask methods: the same zeros; SparseGPT: the same updates)
            assert torch.equal(tensor == 0, other == 0), name
            torch.testing.assert_close(tensor, other, rtol=1e-5, atol=1e-7, msg=name)
        if name in original:
            changed += tensor.shape != original[name].shape or int((tensor == 0).sum()) > 0
    assert changed > 0  # the run pruned something
