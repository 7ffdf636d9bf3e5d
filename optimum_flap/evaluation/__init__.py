"""Evaluation of (pruned) causal LMs: perplexity, zero-shot accuracy and inference speed.

Three questions are asked of every pruned model, each with the protocol of the papers so numbers
can be compared with published ones:

- :func:`perplexity`: WikiText-2 perplexity (FLAP protocol, returned with the value);
- :func:`zero_shot`: lm-eval accuracy on BoolQ, PIQA, HellaSwag, WinoGrande, ARC-e, ARC-c and
  OpenBookQA, offline from local files;
- :func:`speed`: prefill latency, decode throughput and memory.

lm-eval is imported only when :func:`zero_shot` runs, so the rest works without it. The functions
share their submodules' names; import helpers with ``from optimum_flap.evaluation.speed import ...``.
"""

from __future__ import annotations

from .perplexity import PerplexityResult, perplexity
from .speed import BatchSpeed, SpeedReport, Stat, speed
from .zero_shot import DEFAULT_TASKS, ZeroShotResult, load_tasks, zero_shot

__all__ = [
    "DEFAULT_TASKS",
    "BatchSpeed",
    "PerplexityResult",
    "SpeedReport",
    "Stat",
    "ZeroShotResult",
    "load_tasks",
    "perplexity",
    "speed",
    "zero_shot",
]
