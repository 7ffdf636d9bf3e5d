"""GGUF export: metadata and per-layer tensor shapes read back with gguf's reader, exact padding, the
rotary row order, refusals; and, where llama-cpp-python is installed, llama.cpp's logits and tokens."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from conftest import CKPT_HEAD_DIM, CKPT_HIDDEN, ckpt_make_pruned, ckpt_tiny_model
from tokenizers import ByteLevelBPETokenizer
from torch import nn
from transformers import PreTrainedTokenizerFast
from transformers.models.llama.modeling_llama import rotate_half

from optimum_flap.export import GGUFExportError, to_gguf
from optimum_flap.export.tensors import interleave_rotary_rows, pad_columns, pad_rows

TEXTS = ["the quick brown fox jumps over the lazy dog", "pruned models run fast on laptops 1234",
         "hello world, hello llama", "Tokenizers split text into pieces: 42 apples!"]


def byte_level_tokenizer(split: str = "gpt-2") -> PreTrainedTokenizerFast:
    """A byte-level BPE trained locally on a few sentences, SmolLM2-style specials.

    `split` picks the pre-tokenizer: GPT-2's regex, SmolLM's single digits, or Llama 3's / Qwen2's regex.
    """
    from tokenizers import Regex, pre_tokenizers

    from optimum_flap.export.tokenizer import LLAMA3_SPLIT, QWEN2_SPLIT

    backend = ByteLevelBPETokenizer()
    if split == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                         pre_tokenizers.ByteLevel(add_prefix_space=False)])
    elif split in ("llama-bpe", "qwen2"):
        pattern = Regex(LLAMA3_SPLIT if split == "llama-bpe" else QWEN2_SPLIT)
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(pattern, behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.train_from_iterator(TEXTS * 20, vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                            "<|im_end|>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend._tokenizer, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", unk_token="<|endoftext|>", pad_token="<|im_end|>")
    tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    return tokenizer


def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE (byte fallback, '▁' spaces, BOS added) like Llama 2's and Mistral's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    backend.train_from_iterator(TEXTS * 20, trainers.BpeTrainer(vocab_size=340, special_tokens=specials,
                                                                show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def with_vocab(model: nn.Module, tokenizer: PreTrainedTokenizerFast) -> nn.Module:
    model.resize_token_embeddings(len(tokenizer))
    model.config.bos_token_id, model.config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def fields(reader: gguf.GGUFReader) -> dict:
    return {name: field.contents() for name, field in reader.fields.items()}


def tensor(reader: gguf.GGUFReader, name: str) -> gguf.ReaderTensor:
    return next(t for t in reader.tensors if t.name == name)


@pytest.fixture
def pruned_llama():
    """Layers of different sizes (GQA group 2, head_dim 16); FFN widths 40, 70, 96 (not all multiples of 32)."""
    return with_vocab(ckpt_make_pruned(ckpt_tiny_model("llama"), [(2, 40), (1, 70), (2, 96)]), byte_level_tokenizer())


def test_per_layer_metadata_and_shapes(pruned_llama, tmp_path):
    path = tmp_path / "pruned.gguf"
    assert to_gguf(pruned_llama, path, outtype="f32", tokenizer=byte_level_tokenizer()) == "deci"
    reader = gguf.GGUFReader(path)
    meta = fields(reader)
    assert meta["general.architecture"] == "deci"
    assert meta["deci.attention.head_count"] == [4, 2, 4]
    assert meta["deci.attention.head_count_kv"] == [2, 1, 2]
    assert meta["deci.feed_forward_length"] == [64, 96, 96]  # 40 and 70 padded to multiples of 32
    assert (meta["deci.attention.key_length"], meta["deci.rope.dimension_count"]) == (CKPT_HEAD_DIM, CKPT_HEAD_DIM)
    assert meta["deci.block_count"] == 3 and meta["deci.embedding_length"] == CKPT_HIDDEN
    for index, (heads, kv_heads, width) in enumerate([(4, 2, 64), (2, 1, 96), (4, 2, 96)]):
        shape = {t.name.split(".", 2)[2]: list(t.shape) for t in reader.tensors if t.name.startswith(f"blk.{index}.")}
        # gguf lists dimensions innermost first: [in_features, out_features]
        assert shape["attn_q.weight"] == [CKPT_HIDDEN, heads * CKPT_HEAD_DIM]
        assert shape["attn_k.weight"] == shape["attn_v.weight"] == [CKPT_HIDDEN, kv_heads * CKPT_HEAD_DIM]
        assert shape["attn_output.weight"] == [heads * CKPT_HEAD_DIM, CKPT_HIDDEN]
        assert shape["ffn_gate.weight"] == shape["ffn_up.weight"] == [CKPT_HIDDEN, width]
        assert shape["ffn_down.weight"] == [width, CKPT_HIDDEN]
        assert shape["attn_output.bias"] == shape["ffn_down.bias"] == [CKPT_HIDDEN]  # compensation biases
    layer = pruned_llama.model.layers[0]
    down = np.asarray(tensor(reader, "blk.0.ffn_down.weight").data)
    np.testing.assert_array_equal(down[:, :40], layer.mlp.down_proj.weight.detach().numpy())
    assert not down[:, 40:].any()
    gate = np.asarray(tensor(reader, "blk.0.ffn_gate.weight").data)
    assert gate.shape == (64, CKPT_HIDDEN) and not gate[40:].any()
    query = torch.from_numpy(np.asarray(tensor(reader, "blk.1.attn_q.weight").data).copy())
    assert torch.equal(query, interleave_rotary_rows(pruned_llama.model.layers[1].self_attn.q_proj.weight, 2))
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert len(meta["tokenizer.ggml.tokens"]) == len(byte_level_tokenizer())
    assert meta["tokenizer.ggml.eos_token_id"] == byte_level_tokenizer().eos_token_id
    assert "<|im_start|>" in meta["tokenizer.chat_template"]


def test_uniform_prune_uses_stock_llama(tmp_path):
    tokenizer = byte_level_tokenizer()
    model = with_vocab(ckpt_make_pruned(ckpt_tiny_model("mistral"), [(1, 48)] * 3), tokenizer)
    assert to_gguf(model, tmp_path / "uniform.gguf", outtype="f16", tokenizer=tokenizer) == "llama"
    reader = gguf.GGUFReader(tmp_path / "uniform.gguf")
    meta = fields(reader)
    assert (meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]) == (2, 1)
    assert meta["llama.feed_forward_length"] == 64
    assert tensor(reader, "blk.2.attn_q.weight").tensor_type == gguf.GGMLQuantizationType.F16
    assert tensor(reader, "blk.2.attn_norm.weight").tensor_type == gguf.GGMLQuantizationType.F32


def test_qwen2_dense_is_stock_and_pruned_is_deci_with_qkv_biases(tmp_path):
    tokenizer = byte_level_tokenizer()
    dense = with_vocab(ckpt_tiny_model("qwen2"), tokenizer)
    assert to_gguf(dense, tmp_path / "dense.gguf", outtype="f32", tokenizer=tokenizer) == "qwen2"
    reader = gguf.GGUFReader(tmp_path / "dense.gguf")
    bias = np.asarray(tensor(reader, "blk.0.attn_q.bias").data)
    np.testing.assert_array_equal(bias, dense.model.layers[0].self_attn.q_proj.bias.detach().numpy())  # no reorder
    pruned = with_vocab(ckpt_make_pruned(ckpt_tiny_model("qwen2"), [(1, 48)] * 3), tokenizer)
    assert to_gguf(pruned, tmp_path / "pruned.gguf", outtype="f32", tokenizer=tokenizer) == "deci"
    reader = gguf.GGUFReader(tmp_path / "pruned.gguf")
    key_bias = torch.from_numpy(np.asarray(tensor(reader, "blk.0.attn_k.bias").data).copy())
    assert torch.equal(key_bias, interleave_rotary_rows(pruned.model.layers[0].self_attn.k_proj.bias, 1))
    assert tensor(reader, "blk.0.attn_v.bias").shape.tolist() == [CKPT_HEAD_DIM]


def test_q8_0_quantises_padded_ffn_and_keeps_partial_blocks_f16(pruned_llama, tmp_path):
    tokenizer = byte_level_tokenizer()
    to_gguf(pruned_llama, tmp_path / "padded.gguf", outtype="q8_0", tokenizer=tokenizer)
    to_gguf(pruned_llama, tmp_path / "exact.gguf", outtype="q8_0", pad_to=1, tokenizer=tokenizer)
    padded, exact = gguf.GGUFReader(tmp_path / "padded.gguf"), gguf.GGUFReader(tmp_path / "exact.gguf")
    q8, f16 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16
    assert tensor(padded, "blk.0.ffn_down.weight").tensor_type == q8
    assert tensor(exact, "blk.0.ffn_down.weight").tensor_type == f16  # rows of 40: no whole Q8_0 blocks
    assert list(tensor(exact, "blk.0.ffn_down.weight").shape) == [40, CKPT_HIDDEN]
    assert tensor(padded, "blk.1.attn_output.weight").tensor_type == q8  # 2 heads x 16 = one block
    assert fields(padded)["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0


def test_padding_is_exact_in_transformers(pruned_llama):
    ids = torch.randint(0, len(byte_level_tokenizer()), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = pruned_llama(ids).logits
        for mlp in (layer.mlp for layer in pruned_llama.model.layers):
            width = -(-mlp.gate_proj.out_features // 32) * 32
            for name in ("gate_proj", "up_proj"):
                getattr(mlp, name).weight = nn.Parameter(pad_rows(getattr(mlp, name).weight, width))
            mlp.down_proj.weight = nn.Parameter(pad_columns(mlp.down_proj.weight, width))
        assert pruned_llama.model.layers[1].mlp.down_proj.weight.shape[1] == 96
        after = pruned_llama(ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_interleaved_rows_rotate_as_neighbour_pairs():
    """transformers' rotate-half RoPE on the original rows equals llama.cpp's pairwise RoPE on the reordered ones."""
    heads, head_dim, positions = 2, 8, torch.arange(5)
    weight = torch.randn(heads * head_dim, 6)
    x = torch.randn(5, 6)
    angles = positions[:, None] / 10000 ** (torch.arange(0, head_dim, 2) / head_dim)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    hf = (x @ weight.T).view(5, heads, head_dim)
    hf = hf * cos[:, None] + rotate_half(hf) * sin[:, None]
    ggml = (x @ interleave_rotary_rows(weight, heads).T).view(5, heads, head_dim // 2, 2)
    c, s = angles.cos()[:, None], angles.sin()[:, None]
    rotated = torch.stack([ggml[..., 0] * c - ggml[..., 1] * s, ggml[..., 0] * s + ggml[..., 1] * c], -1)
    torch.testing.assert_close(interleave_rotary_rows(hf.reshape(5, -1).T, heads).T, rotated.reshape(5, -1))


def test_sentencepiece_tokenizer_metadata(tmp_path):
    tokenizer = sentencepiece_tokenizer()
    model = with_vocab(ckpt_tiny_model("llama"), tokenizer)
    to_gguf(model, tmp_path / "spm.gguf", outtype="f32", tokenizer=tokenizer)
    meta = fields(gguf.GGUFReader(tmp_path / "spm.gguf"))
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_space_prefix"] is True
    assert meta["tokenizer.ggml.add_bos_token"] is True
    types, tokens, scores = (meta[f"tokenizer.ggml.{k}"] for k in ("token_type", "tokens", "scores"))
    assert types[tokens.index("<0x41>")] == gguf.TokenType.BYTE and types[1] == gguf.TokenType.CONTROL
    first_merge = "".join(json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"][0])
    assert scores[tokens.index(first_merge)] == -1.0 and min(scores) < -10


@pytest.mark.parametrize(("build", "message"), [
    (lambda: ckpt_tiny_model("qwen3"), "q_norm"),
    (lambda: ckpt_make_pruned(ckpt_tiny_model("llama"), [(2, 40), (2, 0), (2, 96)]), "without heads or FFN"),
], ids=["qwen3", "layer-without-ffn"])
def test_refuses_what_llama_cpp_would_compute_differently(build, message, tmp_path):
    tokenizer = byte_level_tokenizer()
    with pytest.raises(GGUFExportError, match=message):
        to_gguf(with_vocab(build(), tokenizer), tmp_path / "x.gguf", tokenizer=tokenizer)
    assert list(tmp_path.iterdir()) == []


def test_rejects_bad_options(pruned_llama, tmp_path):
    with pytest.raises(GGUFExportError, match="outtype='q3'"):
        to_gguf(pruned_llama, tmp_path / "x.gguf", outtype="q3")
    with pytest.raises(GGUFExportError, match="pad_to=0"):
        to_gguf(pruned_llama, tmp_path / "x.gguf", pad_to=0)


def test_command_exports_a_saved_checkpoint(pruned_llama, tmp_path, capsys):
    from optimum_flap.checkpoint import save_pruned_model
    from optimum_flap.commands.cli import main

    save_pruned_model(pruned_llama, tmp_path / "ckpt", tokenizer=byte_level_tokenizer())
    output = tmp_path / "model.gguf"
    assert main(["export-gguf", "--model", str(tmp_path / "ckpt"), "--output", str(output), "--outtype", "q8_0"]) == 0
    assert "llama.cpp architecture deci, q8_0" in capsys.readouterr().out
    assert fields(gguf.GGUFReader(output))["deci.feed_forward_length"] == [64, 96, 96]
    assert main(["export-gguf", "--model", str(tmp_path / "ckpt"), "--output", str(output)]) == 2
    assert "--overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# llama.cpp itself (llama-cpp-python builds from source: these run only where it is installed)
# ---------------------------------------------------------------------------------------------------

def llama3_rope_model() -> nn.Module:
    """Llama 3 RoPE scaling (original context 32, so the scaled low frequencies matter within 100 tokens)."""
    config = ckpt_tiny_model("llama").config
    config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    torch.manual_seed(0)
    model = type(ckpt_tiny_model("llama"))(config).eval()
    return ckpt_make_pruned(model, [(2, 40), (1, 70), (2, 96)])


CASES = {
    "llama-deci": (lambda: ckpt_make_pruned(ckpt_tiny_model("llama"), [(2, 40), (1, 70), (2, 96)]), "deci"),
    "mistral-uniform": (lambda: ckpt_make_pruned(ckpt_tiny_model("mistral"), [(1, 48)] * 3), "llama"),
    "qwen2-deci": (lambda: ckpt_make_pruned(ckpt_tiny_model("qwen2"), [(2, 40), (1, 70), (1, 96)]), "deci"),
    "qwen2-dense": (lambda: ckpt_tiny_model("qwen2"), "qwen2"),
    "llama3-rope": (llama3_rope_model, "deci"),
}


def _llama(path, n_ctx: int = 64):
    llama_cpp = pytest.importorskip("llama_cpp")
    # float32 KV cache: llama.cpp's default f16 cache alone moves these logits by ~5e-3
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, n_threads=1, verbose=False, seed=0,
                           type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)


@pytest.mark.parametrize("case", list(CASES))
def test_llama_cpp_matches_transformers(case, tmp_path):
    pytest.importorskip("llama_cpp")
    build, architecture = CASES[case]
    tokenizer = byte_level_tokenizer()
    model = with_vocab(build(), tokenizer)
    assert to_gguf(model, tmp_path / "m.gguf", outtype="f32", tokenizer=tokenizer) == architecture
    names = {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert ("rope_freqs.weight" in names) == (case == "llama3-rope")
    llm = _llama(tmp_path / "m.gguf", n_ctx=160)
    ids = tokenizer(" ".join(TEXTS * 3))["input_ids"][:100]
    llm.eval(ids)
    ours = np.asarray(llm.scores[: len(ids)])
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(reference).max() > 1.0  # logits far from uniform, so the comparison means something
    assert np.abs(ours - reference).max() < 1e-3
    with torch.no_grad():
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, min_new_tokens=12,
                                eos_token_id=None)[0, len(ids):].tolist()
    llm.reset()
    generated = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        generated.append(token)
        if len(generated) == 12:
            break
    assert generated == greedy


@pytest.mark.parametrize("split", ["gpt-2", "smollm", "llama-bpe", "qwen2"])
def test_byte_level_pre_tokenizer_names(split, tmp_path):
    tokenizer = byte_level_tokenizer(split)
    to_gguf(with_vocab(ckpt_tiny_model("llama"), tokenizer), tmp_path / "t.gguf", outtype="f32", tokenizer=tokenizer)
    assert fields(gguf.GGUFReader(tmp_path / "t.gguf"))["tokenizer.ggml.pre"] == split


@pytest.mark.parametrize("kind", ["gpt-2", "smollm", "llama-bpe", "qwen2", "sentencepiece"])
def test_llama_cpp_tokenizes_like_transformers(kind, tmp_path):
    pytest.importorskip("llama_cpp")
    tokenizer = sentencepiece_tokenizer() if kind == "sentencepiece" else byte_level_tokenizer(kind)
    to_gguf(with_vocab(ckpt_tiny_model("llama"), tokenizer), tmp_path / "t.gguf", outtype="f32", tokenizer=tokenizer)
    llm = _llama(tmp_path / "t.gguf")
    for text in [*TEXTS, "  leading spaces and\ttabs\nnew lines", "unseen wörds ünïcode 🙂 9876543210"]:
        expected = tokenizer(text)["input_ids"]
        add_bos = bool(expected) and expected[0] == tokenizer.bos_token_id
        assert llm.tokenize(text.encode(), add_bos=add_bos, special=False) == expected, text


def test_q4_0_comes_from_llama_cpp_quantiser(pruned_llama, tmp_path):
    pytest.importorskip("llama_cpp")
    tokenizer = byte_level_tokenizer()
    assert to_gguf(pruned_llama, tmp_path / "q4.gguf", outtype="q4_0", tokenizer=tokenizer) == "deci"
    reader = gguf.GGUFReader(tmp_path / "q4.gguf")
    assert tensor(reader, "blk.0.ffn_down.weight").tensor_type == gguf.GGMLQuantizationType.Q4_0  # padded to 64
    assert fields(reader)["deci.feed_forward_length"] == [64, 96, 96]
    assert [p.name for p in tmp_path.iterdir()] == ["q4.gguf"]  # the f32 intermediate is gone
    llm = _llama(tmp_path / "q4.gguf")
    assert llm.tokenize(TEXTS[0].encode(), add_bos=False, special=False) == tokenizer(TEXTS[0])["input_ids"]
