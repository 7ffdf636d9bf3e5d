"""FlapConfig validation and serialisation, calibration data, statistics, and refused models."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from eval_fixtures import char_tokenizer
from tiny_models import calibration_ids, tiny_model

from optimum_flap import (
    BudgetError,
    CalibrationDataError,
    FlapConfig,
    FlapPruner,
    UnsupportedArchitectureError,
    __version__,
)
from optimum_flap.data import load_calibration_ids
from optimum_flap.engine.statistics import ChannelStatistics
from optimum_flap.methods.flap.scores import channel_scores, standardize


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("method", "obs", "flap, wanda-sp, magnitude-sp, cfsp, magnitude, wanda, sparsegpt, barber"),
        ("pruning_ratio", 1.0, "[0, 1)"),
        ("pruning_ratio", -0.1, "[0, 1)"),
        ("pruning_ratio", "0.2", "[0, 1)"),
        ("metric", "WIFV", "wifv, ifv, wifn"),
        ("structure", "AL-XX", "UL-UM, UL-MM, AL-MM, AL-AM"),
        ("num_samples", 0, "a positive int"),
        ("seq_len", 1.5, "a positive int"),
        ("batch_size", True, "a positive int"),
        ("min_head_groups", 0, "a positive int"),
        ("seed", "zero", "an int"),
        ("bias_compensation", "yes", "True or False"),
        ("dataset", "no-such-dataset", "'wikitext2', 'c4'"),
        ("dataset", [], "a non-empty list"),
    ],
)
def test_bad_values_name_the_field_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ValueError) as err:
        FlapConfig(**{field: value})
    message = str(err.value)
    assert f"{field}={value!r}" in message or field in message
    assert allowed in message


def test_manual_structures_need_remove_heads_and_others_refuse_it():
    with pytest.raises(ValueError, match="remove_heads=None.*UL-MM"):
        FlapConfig(structure="UL-MM")
    with pytest.raises(ValueError, match="remove_heads=4.*only applies to UL-MM, AL-MM"):
        FlapConfig(structure="AL-AM", remove_heads=4)


def test_unknown_argument_is_refused():
    with pytest.raises(ValueError, match="unknown argument.*'nsamples'"):
        FlapConfig(nsamples=12)


def test_round_trip_dict_and_json(tmp_path):
    config = FlapConfig(method="wanda-sp", pruning_ratio=0.3, structure="UL-MM", remove_heads=4,
                        dataset="c4", num_samples=64, seq_len=32, seed=3)
    data = config.to_dict()
    assert data["optimum_flap_version"] == __version__
    assert FlapConfig.from_dict(data) == config
    config.save_pretrained(tmp_path)
    assert FlapConfig.from_pretrained(tmp_path) == config
    assert json.loads((tmp_path / "flap_config.json").read_text())["structure"] == "UL-MM"


def test_recipe_round_trips_through_a_pruned_checkpoint(tmp_path):
    """The checkpoint's `pruning_config` is the recipe, the local calibration file recorded by name and SHA-256."""
    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(f"w{i % 50}" for i in range(4000)))
    config = FlapConfig(pruning_ratio=0.3, dataset=str(calib), num_samples=4, seq_len=16, batch_size=2)
    pruner = FlapPruner(config)
    pruner.prune_model(tiny_model("llama-gqa"), char_tokenizer())
    pruner.save_pretrained(tmp_path / "pruned")
    read = FlapConfig.from_pretrained(tmp_path / "pruned")
    assert read.dataset == f"calib.txt@sha256:{hashlib.sha256(calib.read_bytes()).hexdigest()}"
    assert {**read.to_dict(), "dataset": str(calib)} == config.to_dict()


def test_bias_compensation_defaults_per_method():
    assert FlapConfig(method="flap").use_bias_compensation
    assert not FlapConfig(method="wanda-sp").use_bias_compensation
    assert FlapConfig(method="magnitude-sp", bias_compensation=True).use_bias_compensation


@pytest.mark.parametrize(
    "method, option, value, applies_to",
    [
        ("wanda-sp", "metric", "ifv", "flap"),
        ("magnitude-sp", "metric", "wifv", "flap"),  # refused even at its default: the user asked for it
        ("flap", "cfsp_importance", "cosine", "cfsp"),
        ("cfsp", "structure", "UL-UM", "flap, wanda-sp, magnitude-sp"),
        ("cfsp", "remove_heads", 4, "flap, wanda-sp, magnitude-sp"),
    ],
)
def test_option_of_another_method_is_refused(method, option, value, applies_to):
    with pytest.raises(ValueError) as err:
        FlapConfig(method=method, **{option: value})
    assert str(err.value) == (f"FlapConfig: option {option}={value!r} does not apply to method={method!r}; "
                              f"it applies to {applies_to}.")


def test_options_read_as_attributes_and_only_the_methods_are_serialised():
    flap = FlapConfig(metric="ifv", round_to=64)
    assert (flap.metric, flap.round_to, flap.structure, flap.cfsp_importance) == ("ifv", 64, "AL-AM", None)
    cfsp = FlapConfig(method="cfsp", cfsp_importance="mse", cfsp_prune_attention=True)
    assert (cfsp.cfsp_importance, cfsp.cfsp_prune_attention, cfsp.metric, cfsp.structure) == ("mse", True, None, None)
    data = cfsp.to_dict()
    assert set(data) == {"method", "pruning_ratio", "dataset", "num_samples", "seq_len", "seed", "batch_size",
                         "bias_compensation", "min_head_groups", "min_channels", "round_to", "cfsp_importance",
                         "cfsp_allocation", "cfsp_temperature", "cfsp_score", "cfsp_prune_attention",
                         "optimum_flap_version"}
    assert "metric" not in FlapConfig(method="wanda-sp").to_dict()
    assert FlapConfig(method="wanda-sp").to_dict()["structure"] == "AL-AM"


def test_setting_an_option_validates_it():
    config = FlapConfig(method="cfsp")
    config.cfsp_score = "weight-activation"
    assert config.to_dict()["cfsp_score"] == "weight-activation"
    with pytest.raises(ValueError, match="invalid cfsp_score='wanda'"):
        config.cfsp_score = "wanda"
    with pytest.raises(ValueError, match="option metric='ifv' does not apply to method='cfsp'"):
        config.metric = "ifv"
    assert config.cfsp_score == "weight-activation"


#: `FlapConfig.to_dict()` of the previous release: every field of every method, at its default
PREVIOUS_RELEASE_RECIPE = {
    "method": "wanda-sp", "pruning_ratio": 0.3, "metric": "wifv", "structure": "UL-MM", "remove_heads": 4,
    "dataset": "c4", "num_samples": 64, "seq_len": 32, "seed": 3, "batch_size": 8, "bias_compensation": None,
    "min_head_groups": 1, "min_channels": 1, "round_to": None, "cfsp_importance": "angular",
    "cfsp_allocation": "sigmoid", "cfsp_temperature": 1e4 / (128 * 1024), "cfsp_score": "activation",
    "cfsp_prune_attention": False, "optimum_flap_version": "0.1.0.dev0",
}


def test_recipes_of_the_previous_release_still_load(tmp_path):
    config = FlapConfig.from_dict(PREVIOUS_RELEASE_RECIPE)
    assert config == FlapConfig(method="wanda-sp", pruning_ratio=0.3, structure="UL-MM", remove_heads=4,
                                dataset="c4", num_samples=64, seq_len=32, seed=3)
    assert config.use_bias_compensation is False  # None meant "the method's default"
    cfsp = {**PREVIOUS_RELEASE_RECIPE, "method": "cfsp", "structure": "AL-AM", "remove_heads": None,
            "cfsp_importance": "cosine", "bias_compensation": True}
    assert FlapConfig.from_dict(cfsp) == FlapConfig(method="cfsp", pruning_ratio=0.3, dataset="c4", num_samples=64,
                                                    seq_len=32, seed=3, cfsp_importance="cosine",
                                                    bias_compensation=True)
    # a checkpoint's config.json stores the recipe under pruning_config
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "pruning_config": cfsp}))
    assert FlapConfig.from_pretrained(tmp_path).cfsp_importance == "cosine"


def test_previous_release_recipe_with_a_set_option_of_another_method_is_refused():
    with pytest.raises(ValueError, match="option metric='ifv' does not apply to method='wanda-sp'; it applies to flap"):
        FlapConfig.from_dict({**PREVIOUS_RELEASE_RECIPE, "metric": "ifv"})


def test_unsupported_model_lists_supported_architectures():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    supported = "gemma2, gemma3_text, granite, llama, mistral, olmo2, phi3, qwen2, qwen3, smollm3"
    with pytest.raises(UnsupportedArchitectureError, match=f"model_type='gpt2'.*{supported}"):
        FlapPruner(FlapConfig(dataset=calibration_ids())).prune_model(model)


def test_remove_heads_must_be_whole_gqa_groups_and_fails_before_calibrating(tmp_path):
    # the dataset file does not exist yet: reading it would fail differently, so the check came first
    config = FlapConfig(structure="AL-MM", remove_heads=3, dataset=calibration_ids())
    config.dataset = str(tmp_path / "missing.txt")
    with pytest.raises(BudgetError, match="remove_heads=3 is not a multiple of the group size 2"):
        FlapPruner(config).prune_model(tiny_model("llama-gqa"))


def test_impossible_manual_budget_is_a_clear_error():
    config = FlapConfig(structure="AL-MM", remove_heads=48, dataset=calibration_ids())
    with pytest.raises(BudgetError, match="Cannot remove 48 head groups: only 21 can go"):
        FlapPruner(config).prune_model(tiny_model("llama-mha"))


class CharTokenizer:
    """Enough of a tokenizer for the data loader: one id per character."""

    def __call__(self, text, add_special_tokens=False):
        if isinstance(text, list):
            return {"input_ids": [[ord(c) % 128 for c in t] for t in text]}
        return {"input_ids": [ord(c) % 128 for c in text]}


def test_stream_sampling_is_deterministic_and_seed_dependent(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text("\n".join(f"line {i} of the calibration text" for i in range(200)))
    a = load_calibration_ids(str(path), CharTokenizer(), 8, 32, seed=0)
    b = load_calibration_ids(str(path), CharTokenizer(), 8, 32, seed=0)
    c = load_calibration_ids(str(path), CharTokenizer(), 8, 32, seed=1)
    assert a.shape == (8, 32) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_documents_are_sampled_from_long_enough_records(tmp_path):
    path = tmp_path / "docs.jsonl"
    records = [{"text": "short"}] * 5 + [{"text": "x" * 50 + str(i) * 50} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in records))
    ids = load_calibration_ids(str(path), CharTokenizer(), 6, 40, seed=0)
    assert ids.shape == (6, 40)
    assert not (ids == ord("s")).all(dim=1).any()  # no window from the short records


def test_too_little_text_is_a_clear_error(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("only a few characters")
    with pytest.raises(CalibrationDataError, match="fewer than num_samples x seq_len = 4 x 16 = 64"):
        load_calibration_ids(str(path), CharTokenizer(), 4, 16, seed=0)


def test_bad_records_and_suffixes_are_clear_errors(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"content": "no text field"}))
    with pytest.raises(CalibrationDataError, match="string 'text' field"):
        load_calibration_ids(str(path), CharTokenizer(), 1, 4, seed=0)
    other = tmp_path / "data.csv"
    other.write_text("a,b")
    with pytest.raises(CalibrationDataError, match="allowed suffixes: .txt, .raw, .tokens, .jsonl, .json"):
        load_calibration_ids(str(other), CharTokenizer(), 1, 4, seed=0)


def test_named_dataset_offline_names_the_local_alternative(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setenv("OPTIMUM_FLAP_DATA_DIR", str(tmp_path))  # no local copy: the Hub is tried

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CalibrationDataError, match="sample_c4-rp1.jsonl"):
        load_calibration_ids("c4", CharTokenizer(), 4, 16, seed=0)
    with pytest.raises(CalibrationDataError, match="wiki.valid.tokens"):
        load_calibration_ids("wikitext2", CharTokenizer(), 4, 16, seed=0)


def test_named_datasets_read_the_local_files_under_the_data_root(monkeypatch, tmp_path):
    import datasets

    def offline(*args, **kwargs):
        raise AssertionError("the Hub must not be used when the local file exists")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("OPTIMUM_FLAP_DATA_DIR", str(tmp_path))
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.valid.tokens").write_text("abcdefghij" * 20)
    (tmp_path / "c4").mkdir()
    (tmp_path / "c4" / "sample_c4-rp1.jsonl").write_text('{"text": "%s"}\n' % ("klmnopqrst" * 20))
    wiki = load_calibration_ids("wikitext2", CharTokenizer(), 4, 16, seed=0)
    c4 = load_calibration_ids("c4", CharTokenizer(), 4, 16, seed=0)
    assert wiki.shape == c4.shape == (4, 16)
    assert wiki.tolist() == load_calibration_ids(str(tmp_path / "wikitext2" / "wiki.valid.tokens"),
                                                 CharTokenizer(), 4, 16, seed=0).tolist()
    assert set(c4.flatten().tolist()).isdisjoint(set(wiki.flatten().tolist()))


def test_pretokenized_ids_are_used_verbatim_and_validated():
    ids = calibration_ids(3, 5)
    assert load_calibration_ids(ids, None, 99, 99, seed=0).tolist() == ids
    with pytest.raises(CalibrationDataError, match="equal-length"):
        load_calibration_ids([[1, 2, 3], [1, 2]], None, 2, 3, seed=0)


def test_list_of_strings_is_a_stream():
    texts = [f"sentence number {i} in a list" for i in range(30)]
    ids = load_calibration_ids(texts, CharTokenizer(), 4, 24, seed=0)
    assert ids.shape == (4, 24)


def test_statistics_match_a_direct_float64_computation_for_fp16_inputs():
    torch.manual_seed(0)
    chunks = [(torch.randn(3, 17, 6) * 4 + 1000).half() for _ in range(5)]
    stats = ChannelStatistics()
    for chunk in chunks:
        stats.update(chunk)
    everything = torch.cat([c.reshape(-1, 6) for c in chunks]).double()
    assert stats.count == 5 * 3 * 17
    torch.testing.assert_close(stats.mean.double(), everything.mean(0), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(stats.variance.double(), everything.var(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stats.mean_square.double(), (everything**2).mean(0), rtol=1e-5, atol=1e-2)


def test_metric_formulas_against_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(50, 4) * torch.tensor([1.0, 2.0, 0.5, 3.0])
    w = torch.randn(3, 4)
    stats = ChannelStatistics()
    stats.update(x)
    var = x.var(0)
    torch.testing.assert_close(channel_scores("flap", "ifv", w, stats), var)
    torch.testing.assert_close(channel_scores("flap", "wifv", w, stats), var * (w**2).sum(0))
    torch.testing.assert_close(channel_scores("flap", "wifn", w, stats),
                               (w.abs() * (x**2).mean(0).sqrt()).mean(0))
    torch.testing.assert_close(channel_scores("wanda-sp", "wifv", w, stats), w.abs().mean(0) * x.norm(dim=0))
    torch.testing.assert_close(channel_scores("magnitude-sp", "wifv", w, None), w.norm(dim=0))
    z = standardize(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert z.mean().abs() < 1e-6 and (z.std() - 1).abs() < 1e-6
