"""Inference speed and memory of a (pruned) causal LM: prefill latency, decode throughput, memory.

Structured pruning is only worth it if the smaller model is actually faster, and one timing is not a
measurement: the first calls pay for allocation, kernel selection and cache warm-up, and later ones
jitter. So every number here is the median of ``repeats`` timed runs after ``warmup`` untimed ones,
reported with its spread (quartiles, min and max). Prefill (one forward over the prompt, building the
KV cache) and decode (one token per step, greedy, reusing the cache) are timed separately because
pruning attention heads and MLP channels affects the compute-bound prefill and the memory-bound
decode differently.
"""

from __future__ import annotations

import inspect
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .sparse_kernels import semi_structured_weights

DEFAULT_PROMPT = (
    "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest "
    "structure in Paris. Its base is square, measuring 125 metres on each side. During its "
    "construction, the Eiffel Tower surpassed the Washington Monument to become the tallest "
    "man-made structure in the world, a title it held for 41 years. "
)


@dataclass(frozen=True)
class Stat:
    """Median and spread of repeated measurements."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @property
    def iqr(self) -> float:
        """Inter-quartile range, the spread robust to one slow outlier run."""
        return self.q3 - self.q1

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        vals = sorted(float(v) for v in values)
        if not vals:
            raise ValueError("no measurements")
        if len(vals) > 1:
            q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
        else:
            q1 = q3 = vals[0]
        return cls(statistics.median(vals), q1, q3, vals[0], vals[-1], len(vals))


@dataclass(frozen=True)
class BatchSpeed:
    """Timings at one batch size."""

    batch_size: int
    #: wall time of the prompt forward pass (KV cache included), milliseconds
    prefill_ms: Stat
    #: generated tokens per second over the decode phase, all sequences of the batch counted
    decode_tokens_per_s: Stat
    #: wall time of one decode step (one token for every sequence), milliseconds
    decode_ms_per_step: Stat


@dataclass
class SpeedReport:
    """What :func:`speed` measured, and under which conditions."""

    device: str
    dtype: str
    prompt_len: int
    new_tokens: int
    warmup: int
    repeats: int
    #: one entry per batch size, in the order requested
    batches: list[BatchSpeed]
    #: highest memory seen during the runs (see ``peak_memory_method``), bytes
    peak_memory_bytes: int
    #: ``peak_memory_bytes`` minus the level just before the runs (activations, KV cache), bytes
    peak_memory_delta_bytes: int
    #: how memory was measured, e.g. ``"cuda.max_memory_allocated"`` or ``"rss sampled with psutil"``
    peak_memory_method: str
    #: bytes held by the model's parameters (``numel * element_size``)
    parameter_bytes: int
    num_parameters: int
    #: CPU threads torch used, host and library versions (timings depend on them)
    environment: dict[str, Any] = field(default_factory=dict)
    #: how 2:4 sparse weights were run: semi-structured sparse kernels on a GPU that has them, or why
    #: no sparse speed-up is measured (see `optimum_flap.evaluation.sparse_kernels`)
    sparse_kernels: str = ""

    def batch(self, batch_size: int) -> BatchSpeed:
        """The entry for ``batch_size``."""
        for b in self.batches:
            if b.batch_size == batch_size:
                return b
        raise KeyError(batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON reports."""
        return asdict(self)


def parameter_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes, count) of the model's parameters, shared (tied) tensors counted once."""
    seen: set[int] = set()
    nbytes = count = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        nbytes += p.numel() * p.element_size()
        count += p.numel()
    return nbytes, count


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _CpuPeakMemory:
    """Peak resident set size of this process while active.

    torch's CPU allocator calls ``malloc`` directly, so ``tracemalloc`` does not see tensors; the
    resident set size does. With psutil, RSS is sampled every ``interval`` seconds in a thread (a
    spike shorter than that can be missed); without it, ``ru_maxrss`` is used, the process's
    lifetime high-water mark, whose delta is 0 when an earlier phase (model loading) peaked higher.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil

            self._process: Any = psutil.Process()
            self.method = f"CPU RSS sampled every {interval * 1000:g} ms with psutil"
        except ImportError:  # pragma: no cover - psutil is nearly always present
            self._process = None
            self.method = "CPU ru_maxrss high-water mark (resource.getrusage)"

    def _rss(self) -> int:
        if self._process is not None:
            return int(self._process.memory_info().rss)
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> _CpuPeakMemory:
        self.baseline = self.peak = self._rss()
        if self._process is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self._rss())


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yield a dict filled on exit with ``peak``, ``baseline`` and ``method``."""
    out: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out.update(
            peak=torch.cuda.max_memory_allocated(device),
            baseline=baseline,
            method="cuda.max_memory_allocated (tensors only; excludes the CUDA context and allocator cache)",
        )
    else:
        with _CpuPeakMemory() as mem:
            yield out
        out.update(peak=mem.peak, baseline=mem.baseline, method=mem.method)


def _prompt_ids(tokenizer: Any, prompt_len: int, vocab_size: int, seed: int) -> torch.Tensor:
    """``prompt_len`` token ids: real text when a tokenizer is given (realistic routing of
    embeddings/attention), else random ids."""
    if tokenizer is not None:
        text = DEFAULT_PROMPT
        ids = tokenizer(text, add_special_tokens=False).input_ids
        while len(ids) < prompt_len:
            text += DEFAULT_PROMPT
            ids = tokenizer(text, add_special_tokens=False).input_ids
        return torch.tensor(ids[:prompt_len], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (prompt_len,), generator=gen)


def _forward_kwargs(model: nn.Module) -> dict[str, Any]:
    """Ask for last-position logits only when the model supports it, as ``generate`` does: the
    full ``[batch, prompt, vocab]`` logits would dominate prefill time and memory of small models."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def _timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


@torch.inference_mode()
def _one_run(
    model: nn.Module, prompt: torch.Tensor, new_tokens: int, extra: dict[str, Any]
) -> tuple[float, list[float]]:
    """Prefill then greedy decode; return (prefill seconds, per-step decode seconds)."""
    device = prompt.device
    out, prefill_s = _timed(device, lambda: model(input_ids=prompt, use_cache=True, **extra))
    past = out.past_key_values
    token = out.logits[:, -1:].argmax(-1)
    steps = []
    for _ in range(new_tokens):
        out, step_s = _timed(
            device, lambda t=token, p=past: model(input_ids=t, past_key_values=p, use_cache=True, **extra)
        )
        past = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        steps.append(step_s)
    return prefill_s, steps


def speed(
    model: nn.Module,
    tokenizer: Any = None,
    batch_sizes: Sequence[int] = (1, 8),
    prompt_len: int = 128,
    new_tokens: int = 32,
    warmup: int = 2,
    repeats: int = 5,
    seed: int = 0,
) -> SpeedReport:
    """Measure prefill latency, decode throughput and peak memory of ``model`` where it sits.

    Args:
        model: causal LM with a KV cache (``use_cache=True`` / ``past_key_values``); measured on its
            current device and dtype, in eval mode.
        tokenizer: used to build a real-text prompt; ``None`` uses random token ids.
        batch_sizes: batch sizes to measure (the same prompt repeated); default 1 and 8.
        prompt_len: prompt tokens per sequence (the prefill length).
        new_tokens: decode steps after the prefill (greedy; no early stop at EOS).
        warmup: untimed runs per batch size before measuring.
        repeats: timed runs per batch size; medians and quartiles are over these.
        seed: seed for random prompt ids.

    A model with 2:4 sparse Linear weights runs through PyTorch's semi-structured sparse kernels on a
    CUDA GPU of compute capability 8.0 or newer (its weights are restored afterwards); elsewhere the
    report's ``sparse_kernels`` says that no sparse speed-up is measured.

    Returns:
        A :class:`SpeedReport`.
    """
    if prompt_len < 1 or new_tokens < 1 or repeats < 1 or warmup < 0:
        raise ValueError("need prompt_len >= 1, new_tokens >= 1, repeats >= 1, warmup >= 0")
    from ..data import check_positions

    check_positions(getattr(model, "config", None), prompt_len + new_tokens, "prompt_len + new_tokens")
    device = _model_device(model)
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 32000)
    prompt = _prompt_ids(tokenizer, prompt_len, vocab, seed).to(device)
    extra = _forward_kwargs(model)
    was_training = model.training
    model.eval()
    batches: list[BatchSpeed] = []
    try:
        with semi_structured_weights(model) as sparse_kernels, _peak_memory(device) as mem:
            for bs in batch_sizes:
                ids = prompt.unsqueeze(0).expand(int(bs), -1).contiguous()
                for _ in range(warmup):
                    _one_run(model, ids, new_tokens, extra)
                prefill, tps, step_ms = [], [], []
                for _ in range(repeats):
                    p_s, steps = _one_run(model, ids, new_tokens, extra)
                    prefill.append(p_s * 1e3)
                    tps.append(int(bs) * new_tokens / sum(steps))
                    step_ms.append(statistics.median(steps) * 1e3)
                batches.append(BatchSpeed(int(bs), Stat.of(prefill), Stat.of(tps), Stat.of(step_ms)))
    finally:
        model.train(was_training)
    nbytes, count = parameter_bytes(model)
    dtype = next((str(p.dtype).removeprefix("torch.") for p in model.parameters()), "unknown")
    env = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return SpeedReport(
        device=str(device),
        dtype=dtype,
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        warmup=warmup,
        repeats=repeats,
        batches=batches,
        peak_memory_bytes=int(mem["peak"]),
        peak_memory_delta_bytes=max(0, int(mem["peak"]) - int(mem["baseline"])),
        peak_memory_method=str(mem["method"]),
        parameter_bytes=nbytes,
        num_parameters=count,
        environment=env,
        sparse_kernels=sparse_kernels,
    )
