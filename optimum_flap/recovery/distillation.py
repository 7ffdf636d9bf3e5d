"""Knowledge distillation from the dense model: the loss, the teacher, and the tokenizer check.

The student learns the teacher's whole next-token distribution instead of the one observed label (Hinton et
al. 2015; Minitron, Muralidharan et al. 2024, Sec. 3, distils pruned widths from the unpruned model). Per
token, with temperature T, teacher probabilities p = softmax(z_t / T) and student log-probabilities
log q = log_softmax(z_s / T):

    KL(p || q) = sum_v p_v (log p_v - log q_v),     loss = T^2 x mean over tokens of KL

(the T^2 keeps gradient sizes independent of T). With top-k the teacher keeps its k largest logits per token,
renormalised over those k, and the sum runs over them, q still normalised over the full vocabulary; that
is what a cache of top-k logits can reproduce, and the in-memory teacher uses the same truncation so both
paths give the same loss.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def teacher_targets(logits: torch.Tensor, top_k: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, vocabulary indices) the loss compares with: the k largest per token, or all (indices None)."""
    logits = logits.float()
    if top_k is None or top_k >= logits.shape[-1]:
        return logits, None
    values, indices = logits.topk(top_k, dim=-1)
    return values, indices.to(torch.int32)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_indices: torch.Tensor | None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """T^2 x mean per-token KL(teacher || student) (module docstring); logits `[..., vocab]` or top-k `[..., k]`."""
    student_log_probs = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    if teacher_indices is not None:
        student_log_probs = student_log_probs.gather(-1, teacher_indices.long())
    teacher_log_probs = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return kl.mean() * temperature**2


def _vocab_size(model: nn.Module) -> int:
    return model.get_output_embeddings().weight.shape[0]


def check_same_tokenizer(student: nn.Module, teacher: nn.Module, student_tokenizer: Any = None,
                         teacher_tokenizer: Any = None) -> None:
    """Refuse a teacher whose next-token distribution is over another vocabulary than the student's.

    The output layers must have the same size, and when both tokenizers are known their vocabularies
    (token -> id) must be identical: a KL between distributions over different token ids is meaningless.
    """
    student_vocab, teacher_vocab = _vocab_size(student), _vocab_size(teacher)
    if student_vocab != teacher_vocab:
        raise ValueError(f"The teacher predicts {teacher_vocab} tokens and the student {student_vocab}: "
                         "distillation needs a teacher with the student's tokenizer.")
    if student_tokenizer is not None and teacher_tokenizer is not None:
        if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
            raise ValueError("The teacher's tokenizer differs from the student's (different token ids): "
                             "distillation needs a teacher with the student's tokenizer.")


def load_teacher(teacher: str | nn.Module, dtype: torch.dtype | None = None) -> tuple[nn.Module, Any]:
    """(teacher model in eval mode with frozen parameters, its tokenizer or None) from a directory or a model."""
    tokenizer = None
    if isinstance(teacher, nn.Module):
        model = teacher
    else:
        from transformers import AutoTokenizer

        from ..checkpoint import load_pruned_model

        logger.info("Loading the distillation teacher from %s", teacher)
        model = load_pruned_model(teacher, **({"dtype": dtype} if dtype is not None else {}))
        try:
            tokenizer = AutoTokenizer.from_pretrained(teacher)
        except (OSError, ValueError):
            logger.warning("No tokenizer next to the teacher %s: checking the vocabulary size only.", teacher)
    model.eval().requires_grad_(False)
    return model, tokenizer


@torch.no_grad()
def teacher_logits(teacher: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """The teacher's logits predicting tokens 1..L-1 of each window (positions 0..L-2), inference only."""
    return teacher(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
