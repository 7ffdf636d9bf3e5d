"""Model card content and push_to_hub (upload mocked: there is no network in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ckpt_make_pruned, ckpt_tiny_model, ckpt_tiny_tokenizer
from huggingface_hub import ModelCard

from optimum_flap.checkpoint import CARD_TAGS, hub, load_pruned_model, plan_checkpoint, pruning_stats

RECIPE = {"method": "flap", "pruning_ratio": 0.3, "structure": "AL-AM", "metric": "wifv", "num_samples": 8}


def _model(layers=((1, 40), (2, 96), (1, 7))):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), list(layers), recipe=dict(RECIPE))
    model.config._name_or_path = "org/tiny-llama"
    return model


def test_pruning_stats():
    model = _model()
    stats = pruning_stats(model, plan_checkpoint(model))
    hidden, hd = 64, 16
    dense_layer = 2 * hidden * 4 * hd + 2 * hidden * 2 * hd + 3 * hidden * 96
    sizes = [(2, 1, 40), (4, 2, 96), (2, 1, 7)]
    # weights and biases: the dense llama had none, the pruned one has o_proj and down_proj biases
    pruned = sum(2 * hidden * h * hd + 2 * hidden * kv * hd + 3 * hidden * i + 2 * hidden for h, kv, i in sizes)
    assert stats["dense_decoder_linear_parameters"] == 3 * dense_layer
    assert stats["pruned_decoder_linear_parameters"] == pruned
    assert stats["achieved_ratio"] == pytest.approx(1 - pruned / (3 * dense_layer))
    assert stats["total_parameters"] == sum(p.numel() for p in model.parameters())


@pytest.fixture
def uploads(monkeypatch):
    calls = {"create_repo": [], "upload_folder": []}

    def fake_create_repo(repo_id, **kwargs):
        calls["create_repo"].append((repo_id, kwargs))

    def fake_upload_folder(*, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        # snapshot what would have been uploaded; the temp dir is gone after push_to_hub returns
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        calls["upload_folder"].append({"repo_id": repo_id, "files": files, "folder": folder, **kwargs})
        return "commit-info"

    monkeypatch.setattr(hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(hub, "upload_folder", fake_upload_folder)
    return calls


def test_push_to_hub_saves_then_uploads(tmp_path, uploads):
    model = _model()
    result = hub.push_to_hub(model, "me/tiny-llama-flap", ckpt_tiny_tokenizer(), private=True, token="tok")
    assert result == "commit-info"
    assert uploads["create_repo"] == [
        ("me/tiny-llama-flap", {"token": "tok", "private": True, "repo_type": "model", "exist_ok": True})
    ]
    (upload,) = uploads["upload_folder"]
    assert upload["repo_id"] == "me/tiny-llama-flap" and upload["token"] == "tok"
    assert not upload["folder"].exists()  # temporary directory cleaned up
    files = upload["files"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "modeling_flap_llama.py",
                 "configuration_flap_llama.py", "flap_common.py"):
        assert name in files, sorted(files)
    config = json.loads(files["config.json"])
    assert config["checkpoint_format"] == "flap-remote-code" and config["pruning_config"] == RECIPE

    # the uploaded folder is a loadable checkpoint
    local = tmp_path / "uploaded"
    local.mkdir()
    for name, data in files.items():
        (local / name).write_bytes(data)
    with torch.no_grad():
        ids = torch.tensor([[1, 2, 3, 4]])
        torch.testing.assert_close(load_pruned_model(local)(ids).logits, model(ids).logits, atol=1e-5, rtol=0)

    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "org/tiny-llama"
    assert card.data.tags == CARD_TAGS
    assert card.data.library_name == "transformers"
    text = card.text
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny-llama-flap", trust_remote_code=True)' in text
    assert 'AutoTokenizer.from_pretrained("me/tiny-llama-flap")  #' in text  # no flag: a stock tokenizer
    assert 'load_pruned_model("me/tiny-llama-flap")' in text
    stats = pruning_stats(model, plan_checkpoint(model))
    assert f"{stats['achieved_ratio']:.4f}" in text
    assert f"{stats['total_parameters']:,}" in text
    assert f"{stats['dense_decoder_linear_parameters']:,}" in text
    assert '"structure": "AL-AM"' in text and '"pruning_ratio": 0.3' in text
    assert "| 2 | 2 | 1 | 7 |" in text  # per-layer sizes table


def test_stock_card_says_no_code_needed(uploads):
    hub.push_to_hub(_model([(1, 48)] * 3), "me/uniform", base_model="meta-llama/Llama-2-7b-hf")
    card = ModelCard(uploads["upload_folder"][0]["files"]["README.md"].decode())
    assert card.data.base_model == "meta-llama/Llama-2-7b-hf"
    assert "trust_remote_code" not in card.text
    assert "`stock`" in card.text


def test_local_path_is_not_used_as_base_model(tmp_path, uploads):
    model = _model()
    model.config._name_or_path = str(tmp_path)
    hub.push_to_hub(model, "me/x")
    card = ModelCard(uploads["upload_folder"][0]["files"]["README.md"].decode())
    assert card.data.base_model is None


def test_failed_upload_propagates_and_cleans_up(monkeypatch):
    seen = []

    def failing_upload(*, folder_path, **kwargs):
        seen.append(Path(folder_path))
        raise ConnectionError("no network")

    monkeypatch.setattr(hub, "create_repo", lambda *a, **k: None)
    monkeypatch.setattr(hub, "upload_folder", failing_upload)
    with pytest.raises(ConnectionError):
        hub.push_to_hub(_model(), "me/x")
    assert seen and not seen[0].exists()
