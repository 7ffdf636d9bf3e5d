"""What a minitron-pruned model feeds into: a GGUF file with the stock llama.cpp architecture, and recovery."""

from __future__ import annotations

import copy

import gguf
import torch
from test_distillation import TRAIN, batch, recipe, trainer_for
from test_export_gguf import byte_level_tokenizer, fields, tensor, with_vocab
from tiny_models import calibration_ids, tiny_model
from transformers import AutoModelForCausalLM

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.export import to_gguf
from optimum_flap.recovery import recover

SHAPE = dict(hidden_size=48, num_key_value_heads=2, intermediate_size=64, num_hidden_layers=3)


def pruned(model, **options):
    config = FlapConfig(method="minitron", dataset=calibration_ids(num_samples=12, seq_len=16), batch_size=4,
                        target_shape=SHAPE, depth_importance="block", **options)
    FlapPruner(config).prune_model(model)
    return model


def test_gguf_export_writes_the_stock_llama_architecture(tmp_path):
    tokenizer = byte_level_tokenizer()
    model = pruned(with_vocab(tiny_model("llama-gqa", num_hidden_layers=4), tokenizer))
    assert to_gguf(model, tmp_path / "minitron.gguf", outtype="f16", tokenizer=tokenizer) == "llama"
    reader = gguf.GGUFReader(tmp_path / "minitron.gguf")
    meta = fields(reader)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.embedding_length"] == 48 and meta["llama.block_count"] == 3
    assert (meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]) == (4, 2)
    assert meta["llama.attention.key_length"] == 8 and meta["llama.feed_forward_length"] == 64
    assert list(tensor(reader, "blk.2.attn_q.weight").shape) == [48, 32]  # gguf lists (columns, rows)
    assert list(tensor(reader, "token_embd.weight").shape) == [48, len(tokenizer)]
    assert not any(name.startswith("blk.3.") for name in (t.name for t in reader.tensors))


def test_recovery_distils_a_minitron_model_unchanged(tmp_path):
    teacher = tiny_model("llama-gqa", num_hidden_layers=4)
    student = pruned(copy.deepcopy(teacher))
    inputs = batch(TRAIN[:8])
    trainer = trainer_for(student, tmp_path, teacher=teacher)
    before = float(trainer.compute_loss(student, dict(inputs)))
    result = recover(student, None, recipe(tmp_path, teacher, dataset=TRAIN[:8] * 8, max_steps=16,
                                           learning_rate=1e-3, train_biases=True))
    after = float(trainer.compute_loss(result.model, dict(inputs)))
    assert after < 0.8 * before
    assert result.model.config.hidden_size == 48 and len(result.model.model.layers) == 3
    ids = torch.tensor(calibration_ids(num_samples=2, seq_len=10, seed=7))
    with torch.no_grad():
        expected = result.model(input_ids=ids).logits
    plan = FlapPruner.save(result.model, tmp_path / "recovered")
    assert plan.checkpoint_format == "stock"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "recovered").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
