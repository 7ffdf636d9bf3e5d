"""FLAP and wanda-sp on tiny post-norm models: scores in residual units against today's allocation.

The models are `tests/norm_models.py::postnorm_model` (Gemma 2, Gemma 3, OLMo-2; 4 layers, hidden 64,
96 MLP channels, 2 head groups of 2 heads) with post-norm gains 10x apart by layer (MLP 1, 0.1, 1, 0.1;
attention 0.1, 1, 0.1, 1). Each is pruned at 0.3 with 32 x 32 random-token calibration windows and
compared with the dense model on 8 x 32 held-out windows: mean KL(dense || pruned) of the next-token
distributions. Rows: `post_norm_gains=False` (today's scores), the default, and two ablations of the
default: per-layer standardization (the paper's) of the residual-unit scores, and bias compensation
with the plain calibration mean instead of the 1/rms^2-weighted one.

`--bos-scale S` starts every calibration and held-out window with the BOS token (id 1) and multiplies
its embedding by S, a stand-in for the massive activations real models have at BOS, so that the 1/rms^2
token weights vary; `--seeds N` repeats every row over model seeds 0..N-1 and prints the geometric mean
of the KLs, then each seed's (kept widths are those of seed 0).

    python benchmarks/post_norm_gains.py
    python benchmarks/post_norm_gains.py --seeds 5 --bos-scale 30
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from norm_models import POSTNORM_FAMILIES, kl_to_dense, postnorm_model  # noqa: E402
from tiny_models import calibration_ids  # noqa: E402

from optimum_flap import FlapConfig, FlapPruner  # noqa: E402
from optimum_flap.engine.statistics import ChannelStatistics  # noqa: E402
from optimum_flap.methods.flap import method as flap_method  # noqa: E402

HELD_OUT = torch.tensor(calibration_ids(num_samples=8, seq_len=32, seed=7))
CALIBRATION = torch.tensor(calibration_ids(num_samples=32, seq_len=32))
BOS = 1


def with_bos(ids: torch.Tensor, bos_scale: float | None) -> torch.Tensor:
    """The windows with BOS first when `bos_scale` is set."""
    if bos_scale is None:
        return ids
    ids = ids.clone()
    ids[:, 0] = BOS
    return ids


@contextmanager
def per_layer_standardization() -> Iterator[None]:
    """Ablation: residual-unit scores standardized per layer and module type, as the paper does."""
    select = flap_method.select
    with mock.patch.object(flap_method, "select", lambda *a, **k: select(*a, **{**k, "across_layers": False})):
        yield


@contextmanager
def plain_mean_compensation() -> Iterator[None]:
    """Ablation: compensate with the plain mean of the projection inputs, not the 1/rms^2-weighted one."""
    observers, finish = flap_method.FlapFamilyMethod.observers, flap_method.FlapFamilyMethod.finish
    plain_means: list[dict[str, ChannelStatistics]] = []

    def observe(self, block):
        found = observers(self, block)
        plain = {path: ChannelStatistics() for path in self._stats}
        plain_means.append(plain)
        def both(f, stats):
            def observer(x):
                if stats is not None:
                    stats.update(x)
                f(x)
            return observer

        return {path: both(f, plain.get(path)) for path, f in found.items()}

    def decide(self, model):
        for calibration, plain in zip(self.calibration, plain_means):
            attention, mlp = (plain[self.architecture.attention_output_path()],
                              plain[self.architecture.mlp_output_path()])
            calibration.attention_mean, calibration.mlp_mean = attention.mean, mlp.mean
        return finish(self, model)

    with mock.patch.object(flap_method.FlapFamilyMethod, "observers", observe), \
            mock.patch.object(flap_method.FlapFamilyMethod, "finish", decide):
        yield


def run(family: str, options: dict, ablation=None, seed: int = 0, bos_scale: float | None = None
        ) -> tuple[list[int], list[int], float]:
    dense = postnorm_model(family, seed=seed)
    if bos_scale is not None:
        with torch.no_grad():
            dense.model.embed_tokens.weight[BOS] *= bos_scale
    pruned = copy.deepcopy(dense)
    config = FlapConfig(pruning_ratio=0.3, dataset=with_bos(CALIBRATION, bos_scale).tolist(), batch_size=8,
                        **options)
    with ablation() if ablation else nullcontext():
        FlapPruner(config).prune_model(pruned)
    layers = pruned.model.layers
    head_dim = dense.config.head_dim
    return ([layer.mlp.down_proj.in_features for layer in layers],
            [layer.self_attn.o_proj.in_features // head_dim for layer in layers],
            kl_to_dense(dense, pruned, with_bos(HELD_OUT, bos_scale)))


def main() -> None:
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="model seeds 0..N-1 (default 1)")
    parser.add_argument("--bos-scale", type=float, default=None, help="BOS first, its embedding times this")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    print("| family | method, structure | scores | MLP channels kept per layer | heads kept | KL to dense |")
    print("|---|---|---|---|---|---|")
    for family in POSTNORM_FAMILIES:
        for method, structure, compensation in (("flap", "AL-AM", True), ("flap", "AL-AM", False),
                                                ("wanda-sp", "AL-AM", False), ("flap", "UL-UM", True)):
            options = dict(method=method, structure=structure)
            if method == "flap":
                options["bias_compensation"] = compensation
            label = f"{method} {structure}" + ("" if method != "flap" else ", compensation" if compensation else
                                               ", no compensation")
            rows = [("today (post_norm_gains=False)", dict(options, post_norm_gains=False), None),
                    ("residual units (default)", options, None)]
            if structure == "AL-AM" and method == "flap":
                rows.append(("ablation: per-layer standardization", options, per_layer_standardization))
            if compensation:
                rows.append(("ablation: plain-mean compensation", options, plain_mean_compensation))
            for name, row_options, ablation in rows:
                results = [run(family, row_options, ablation, seed, args.bos_scale) for seed in range(args.seeds)]
                kls = [kl for _, _, kl in results]
                kl_text = f"{kls[0]:.3g}" if len(kls) == 1 else (
                    f"{math.exp(sum(map(math.log, kls)) / len(kls)):.3g} ({', '.join(f'{kl:.3g}' for kl in kls)})")
                kept, heads, _ = results[0]
                print(f"| {family} | {label} | {name} | {kept} | {heads} | {kl_text} |")


if __name__ == "__main__":
    main()
