"""Dense-vs-pruned inference speed, timed side by side.

Used by ``optimum-flap benchmark`` and ``benchmarks/speed.py``. On a shared or throttling machine two
models timed one after the other see different loads, and the difference can exceed the effect being
measured. So the models are timed in interleaved rounds (every round times each model once, in an
order rotated from round to round) and each pruned/dense ratio is the median of the per-round ratios:
both sides of a ratio ran seconds apart, under nearly the same load.

The *ideal* speed-up is dense parameter bytes / pruned parameter bytes: what a purely
weight-bandwidth-bound model would gain. Embeddings and the LM head are not pruned, so on a small
model the ideal is well below 1 / (1 - ratio).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ..evaluation.speed import Stat, parameter_bytes, speed


def compare_speed(
    models: Mapping[str, nn.Module],
    tokenizer: Any = None,
    batch_sizes: Sequence[int] = (1, 8),
    prompt_len: int = 128,
    new_tokens: int = 32,
    repeats: int = 5,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every model in ``models`` (the first is the reference) in ``repeats`` interleaved rounds.

    Returns a JSON-ready dict: ``models`` (per model: parameters, parameter bytes, and per batch size
    the median / quartiles of prefill ms and decode tokens/s) and ``ratios`` (per non-reference model
    and batch size: the median paired speed-ups and the ideal).
    """
    names = list(models)
    if not names:
        raise ValueError("no models to time")
    for name in names:  # untimed runs: allocation, kernel selection, caches
        if warmup:
            speed(models[name], tokenizer, batch_sizes, prompt_len, new_tokens, warmup=warmup - 1, repeats=1)
    prefill: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in names}
    decode: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in names}
    environment: dict[str, Any] = {}
    for round_idx in range(repeats):
        shift = round_idx % len(names)
        for name in names[shift:] + names[:shift]:
            report = speed(models[name], tokenizer, batch_sizes, prompt_len, new_tokens, warmup=0, repeats=1)
            environment = report.environment
            for batch in report.batches:
                prefill[name][batch.batch_size].append(batch.prefill_ms.median)
                decode[name][batch.batch_size].append(batch.decode_tokens_per_s.median)
        if progress is not None:
            progress(f"timing round {round_idx + 1}/{repeats} done")

    reference = names[0]
    out_models: dict[str, Any] = {}
    for name in names:
        nbytes, count = parameter_bytes(models[name])
        out_models[name] = {
            "parameters": count,
            "parameter_bytes": nbytes,
            "batches": {
                str(b): {"prefill_ms": _stat(prefill[name][b]), "decode_tokens_per_s": _stat(decode[name][b])}
                for b in batch_sizes
            },
        }
    ratios: dict[str, Any] = {}
    ref_bytes = out_models[reference]["parameter_bytes"]
    for name in names[1:]:
        ideal = ref_bytes / out_models[name]["parameter_bytes"]
        ratios[name] = {}
        for b in batch_sizes:
            prefill_speedup = [r / p for r, p in zip(prefill[reference][b], prefill[name][b])]
            decode_speedup = [p / r for r, p in zip(decode[reference][b], decode[name][b])]
            ratios[name][str(b)] = {
                "ideal": ideal,
                "prefill_speedup": _stat(prefill_speedup),
                "decode_speedup": _stat(decode_speedup),
                "prefill_fraction_of_ideal": statistics.median(prefill_speedup) / ideal,
                "decode_fraction_of_ideal": statistics.median(decode_speedup) / ideal,
            }
    return {
        "reference": reference,
        "protocol": {"batch_sizes": list(batch_sizes), "prompt_len": prompt_len, "new_tokens": new_tokens,
                     "repeats": repeats, "warmup": warmup,
                     "timing": "interleaved rounds, order rotated each round; ratios are medians of per-round "
                               "ratios", "environment": environment},
        "models": out_models,
        "ratios": ratios,
    }


def _stat(values: Sequence[float]) -> dict[str, float]:
    stat = Stat.of(values)
    return {"median": stat.median, "q1": stat.q1, "q3": stat.q3, "min": stat.min, "max": stat.max, "n": stat.n}


def speed_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (model, batch size), for tables and plots."""
    rows = []
    reference = result["reference"]
    for name, model in result["models"].items():
        for batch, timing in model["batches"].items():
            ratio = result["ratios"].get(name, {}).get(batch)
            rows.append({
                "model": name,
                "batch_size": int(batch),
                "parameters": model["parameters"],
                "prefill_ms": timing["prefill_ms"]["median"],
                "decode_tokens_per_s": timing["decode_tokens_per_s"]["median"],
                "ideal": ratio["ideal"] if ratio else 1.0,
                "prefill_speedup": ratio["prefill_speedup"]["median"] if ratio else 1.0,
                "decode_speedup": ratio["decode_speedup"]["median"] if ratio else 1.0,
                "is_reference": name == reference,
            })
    return rows


def speed_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: absolute medians, paired speed-ups, and the ideal (parameter-bytes) speed-up."""
    width = max(len("model"), *(len(r["model"]) for r in rows))
    header = (f"| {'model':<{width}} | batch | {'parameters':>11} | prefill ms | decode tok/s | prefill x | "
              f"decode x | ideal x |")
    lines = [header, "|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']:<{width}} | {r['batch_size']:>5} | {r['parameters']:>11,} | {r['prefill_ms']:>10.1f} | "
            f"{r['decode_tokens_per_s']:>12.1f} | {r['prefill_speedup']:>9.2f} | {r['decode_speedup']:>8.2f} | "
            f"{r['ideal']:>7.2f} |"
        )
    return "\n".join(lines)
