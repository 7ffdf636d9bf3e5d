"""Distillation recovery on tiny models: the loss by hand, the logits cache against the in-memory teacher,
tokenizer checks, resuming, and periodic held-out perplexity."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner, RecoveryConfig
from optimum_flap.recovery import (
    DistillationTrainer,
    TeacherLogitsCache,
    TokenWindows,
    check_same_tokenizer,
    recover,
    teacher_identity,
    training_arguments,
)

TRAIN = calibration_ids(64, 16, seed=2)


def pruned_pair(method="flap", family="llama-gqa"):
    """(dense teacher, pruned student) of the same tiny model."""
    teacher = tiny_model(family)
    student = copy.deepcopy(teacher)
    config = FlapConfig(method=method, pruning_ratio=0.3, dataset=calibration_ids(), batch_size=4)
    FlapPruner(config).prune_model(student)
    return teacher, student


def recipe(tmp_path, teacher, **kwargs):
    kwargs.setdefault("dataset", TRAIN)
    kwargs.setdefault("seq_len", 16)
    kwargs.setdefault("max_steps", 4)
    kwargs.setdefault("rank", 4)
    kwargs.setdefault("learning_rate", 2e-2)
    kwargs.setdefault("dropout", 0.0)
    kwargs.setdefault("logging_steps", 1)
    kwargs.setdefault("training_args", {"disable_tqdm": True, "use_cpu": True})
    kwargs.setdefault("output_dir", str(tmp_path / "trainer"))
    return RecoveryConfig(objective="distillation", teacher=teacher, **kwargs)


def batch(ids, cache=None):
    from transformers import default_data_collator

    dataset = TokenWindows(torch.tensor(ids), cache)
    return default_data_collator([dataset[i] for i in range(len(dataset))])


def trainer_for(student, tmp_path, **kwargs):
    config = RecoveryConfig(output_dir=str(tmp_path / "t"), training_args={"use_cpu": True, "report_to": "none"})
    return DistillationTrainer(model=student, args=training_arguments(config), **kwargs)


@pytest.mark.parametrize("temperature, weight", [(1.0, 1.0), (2.0, 0.5)])
def test_loss_equals_hand_computed_kl(tmp_path, temperature, weight):
    teacher, student = pruned_pair()
    inputs = batch(TRAIN[:3])
    trainer = trainer_for(student, tmp_path, teacher=teacher, temperature=temperature, weight=weight)
    loss = trainer.compute_loss(student, dict(inputs))
    with torch.no_grad():
        ids = inputs["input_ids"]
        t = teacher(ids).logits[:, :-1].double()
        s = student(ids).logits[:, :-1].double()
    # KL(p || q) token by token, written out: sum_v p_v (log p_v - log q_v), averaged over 3 x 15 tokens
    expected = 0.0
    for b in range(3):
        for pos in range(15):
            p = torch.softmax(t[b, pos] / temperature, -1)
            q = torch.softmax(s[b, pos] / temperature, -1)
            expected += float((p * (p.log() - q.log())).sum())
    expected = weight * temperature**2 * expected / 45
    if weight < 1:
        nll = -torch.log_softmax(s, -1).gather(-1, ids[:, 1:, None]).mean()
        expected += (1 - weight) * float(nll)
    assert expected > 1e-3
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_cache_and_in_memory_teacher_give_the_same_loss_and_training(tmp_path):
    teacher, student = pruned_pair("cfsp", "qwen3")
    ids = torch.tensor(TRAIN)
    cache = TeacherLogitsCache.ensure(tmp_path / "cache", ids, 8, 128, lambda: teacher, batch_size=5,
                                      teacher=teacher_identity(teacher))
    metadata = json.loads((tmp_path / "cache" / "teacher_logits.json").read_text())
    assert metadata["bytes_per_token"] == 64 and len(cache) == 64
    values, indices = cache[7]
    assert values.shape == (15, 8) and indices.dtype == torch.int32
    # same loss on one batch, top-8 from the cache or from the teacher in memory
    from_cache = trainer_for(student, tmp_path, top_k=8).compute_loss(student, batch(TRAIN[:4], cache))
    in_memory = trainer_for(student, tmp_path, teacher=teacher, top_k=8).compute_loss(student, batch(TRAIN[:4]))
    assert float(in_memory) > 0.1
    torch.testing.assert_close(from_cache, in_memory)
    # and the same training run: a reused cache does not need the teacher at all
    assert TeacherLogitsCache.ensure(tmp_path / "cache", ids, 8, 128, lambda: 1 / 0,
                                     teacher=teacher_identity(teacher)).metadata == metadata
    runs = []
    for extra in ({}, {"teacher_logits_cache": str(tmp_path / "cache")}):
        config = recipe(tmp_path, teacher, distill_top_k=8, num_samples=64, **extra)
        runs.append(recover(copy.deepcopy(student), None, config))
    losses = [[e["loss"] for e in run.log_history if "loss" in e] for run in runs]
    assert len(losses[0]) == 4
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(runs[1].model(ids[:2]).logits, runs[0].model(ids[:2]).logits)
    with pytest.raises(ValueError, match="holds logits of other training windows"):
        TeacherLogitsCache.ensure(tmp_path / "cache", ids[:32], 8, 128, lambda: teacher,
                                  teacher=teacher_identity(teacher))


def test_distillation_brings_the_student_closer_to_the_teacher(tmp_path):
    teacher, student = pruned_pair()
    inputs = batch(TRAIN[:8])  # random tokens: a tiny random model fits the windows it saw, not new ones
    trainer = trainer_for(student, tmp_path, teacher=teacher)
    before = float(trainer.compute_loss(student, dict(inputs)))
    result = recover(student, None, recipe(tmp_path, teacher, dataset=TRAIN[:8] * 8, max_steps=16,
                                           learning_rate=1e-3, train_biases=True))
    after = float(trainer.compute_loss(result.model, dict(inputs)))
    assert after < 0.6 * before
    assert result.model.config.recovery["objective"] == "distillation"
    assert result.seconds_per_step > 0 and result.steps == 16


def test_full_finetuning_distills_every_parameter(tmp_path):
    teacher, student = pruned_pair()
    result = recover(student, None, recipe(tmp_path, teacher, finetuning="full", learning_rate=1e-3, max_steps=2))
    assert result.lora_config is None and result.merged
    assert result.trainable_parameters == sum(p.numel() for p in student.parameters())
    assert result.model.config.recovery["method"] == "full"


class _Vocab:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def test_a_teacher_with_another_tokenizer_is_refused(tmp_path):
    teacher, student = pruned_pair()
    other = tiny_model("llama-gqa", vocab_size=160)
    with pytest.raises(ValueError, match="teacher predicts 160 tokens and the student 128"):
        recover(student, None, recipe(tmp_path, other))
    same = {f"t{i}": i for i in range(128)}
    swapped = {**same, "t0": 1, "t1": 0}
    check_same_tokenizer(student, teacher, _Vocab(same), _Vocab(same))
    with pytest.raises(ValueError, match="tokenizer differs"):
        check_same_tokenizer(student, teacher, _Vocab(same), _Vocab(swapped))
    # a teacher directory is checked too, before any training
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="same|tokenizer"):
        recover(student, None, recipe(tmp_path, str(tmp_path / "other")))
    assert not os.path.exists(tmp_path / "trainer")


def test_resume_distillation_from_a_checkpoint(tmp_path):
    teacher, student = pruned_pair()
    cache = str(tmp_path / "cache")

    def run(**kwargs):
        config = recipe(tmp_path, teacher, save_steps=2, distill_top_k=16, teacher_logits_cache=cache)
        return recover(copy.deepcopy(student), None, config, **kwargs)

    first = run()
    assert sorted(os.listdir(tmp_path / "trainer")) == ["checkpoint-2", "checkpoint-4"]
    resumed = run(resume_from_checkpoint=str(tmp_path / "trainer" / "checkpoint-2"))
    a = [(e["step"], e["loss"]) for e in first.log_history if "loss" in e]
    b = [(e["step"], e["loss"]) for e in resumed.log_history if "loss" in e]
    assert [s for s, _ in b] == [1, 2, 3, 4] and b[:2] == a[:2]
    assert b[3][1] == pytest.approx(a[3][1], rel=1e-4)
    with torch.no_grad():
        ids = torch.tensor(TRAIN[:2])
        torch.testing.assert_close(resumed.model(ids).logits, first.model(ids).logits, atol=1e-4, rtol=1e-4)


def test_held_out_perplexity_is_logged_periodically(tmp_path):
    import math

    from optimum_flap.evaluation.perplexity import window_nlls

    teacher, student = pruned_pair()
    held_out = calibration_ids(6, 16, seed=9)
    config = recipe(tmp_path, teacher, eval_steps=2, eval_dataset=held_out, eval_windows=4)
    result = recover(student, None, config)
    assert [step for step, _ in result.eval_perplexities] == [2, 4]
    final = math.exp(window_nlls(result.model, torch.tensor(held_out[:4])).mean().item())
    assert result.eval_perplexities[-1][1] == pytest.approx(final, rel=1e-4)
    assert result.eval_perplexities[0][1] != pytest.approx(final, rel=1e-4)


def test_distillation_config_validation():
    teacher = tiny_model("llama-gqa")
    config = RecoveryConfig(objective="distillation", teacher=teacher)
    assert config.to_dict()["teacher"] == "<in-memory: LlamaForCausalLM>"
    for fields, name in [({"objective": "kd"}, "objective"),
                         ({"objective": "distillation"}, "teacher"),
                         ({"teacher": "dense-dir"}, "teacher"),
                         ({"objective": "distillation", "teacher": 3}, "teacher"),
                         ({"objective": "distillation", "teacher": "d", "distill_weight": 1.5}, "distill_weight"),
                         ({"objective": "distillation", "teacher": "d", "distill_temperature": float("inf")},
                          "distill_temperature"),
                         ({"objective": "distillation", "teacher": "d", "teacher_logits_cache": "c"}, "distill_top_k"),
                         ({"finetuning": "adapters"}, "finetuning")]:
        with pytest.raises(ValueError, match=f"RecoveryConfig: invalid {name}="):
            RecoveryConfig(**fields)


def test_recover_command_distils_saves_and_resumes(tmp_path, capsys):
    import random
    import shutil

    from eval_fixtures import char_tokenizer, tiny_llama

    from optimum_flap.checkpoint import load_pruned_model, save_pruned_model
    from optimum_flap.commands.cli import main

    tokenizer = char_tokenizer()
    teacher = tiny_llama(len(tokenizer), max_positions=64)
    teacher.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    student = copy.deepcopy(teacher)
    ids = torch.randint(4, len(tokenizer), (8, 16), generator=torch.Generator().manual_seed(0)).tolist()
    FlapPruner(FlapConfig(method="flap", pruning_ratio=0.3, dataset=ids, batch_size=4)).prune_model(student)
    save_pruned_model(student, tmp_path / "pruned", tokenizer=tokenizer)
    rng = random.Random(0)
    words = [" ".join("".join(rng.choice("abcdefgh") for _ in range(5)) for _ in range(60)) for _ in range(40)]
    (tmp_path / "train.txt").write_text("\n\n".join(words[:30]))
    (tmp_path / "held_out.txt").write_text("\n\n".join(words[30:]))
    command = ["recover", "--model", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "dense"),
               "--dataset", str(tmp_path / "train.txt"), "--seq-len", "16", "--steps", "4", "--batch-size", "2",
               "--lr", "1e-3", "--rank", "4", "--top-k", "8", "--teacher-logits-cache", str(tmp_path / "cache"),
               "--eval-steps", "2", "--eval-data", str(tmp_path / "held_out.txt"), "--eval-windows", "2",
               "--save-steps", "2", "--logging-steps", "1", "--cpu", "--output", str(tmp_path / "out")]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "held-out perplexity at step 4" in printed and "distillation" in printed
    recovered = load_pruned_model(tmp_path / "out")
    assert recovered.config.recovery["objective"] == "distillation" and recovered.config.recovery["steps"] == 4
    checkpoints = tmp_path / "out-checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["checkpoint-2", "checkpoint-4"]
    shutil.rmtree(checkpoints / "checkpoint-4")  # as if interrupted after step 3
    assert main(command + ["--resume", "--overwrite"]) == 0
    resumed = load_pruned_model(tmp_path / "out")
    window = torch.tensor(ids[:2])
    with torch.no_grad():
        torch.testing.assert_close(resumed(window).logits, recovered(window).logits, atol=1e-4, rtol=1e-4)
    assert main(["recover", "--model", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "dense"),
                 "--objective", "language-modeling", "--output", str(tmp_path / "x")]) == 2
    assert "--teacher is only used with --objective distillation" in capsys.readouterr().err
