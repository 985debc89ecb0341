"""Diversity ratio and k-NN manifold estimates (precision, recall, density, coverage; Naeem et al. 2020)."""

from __future__ import annotations

import torch

from gantune.metrics.base import CollapseSignal, Reference, Samples, Scorer, family

PAIRWISE_SAMPLES = 1000
K = 5


def mean_pairwise_distance(feats: torch.Tensor) -> float:
    x = feats[:PAIRWISE_SAMPLES].double()
    return float(torch.pdist(x).mean())


@family("diversity", keys=("diversity",), cheap=True,
        collapse=(CollapseSignal("diversity", "min_diversity", "diversity ratio"),))
def diversity(ref: Reference) -> Scorer:
    real = mean_pairwise_distance(ref.feats.cpu())

    def score(fake: Samples) -> dict[str, float]:
        return {"diversity": mean_pairwise_distance(fake.feats.cpu()) / max(real, 1e-12)}

    return score


def _kth_nn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


@family("prdc", keys=("precision", "recall", "density", "coverage"),
        collapse=(CollapseSignal("recall", "min_recall", "recall"),))
def prdc(ref: Reference) -> Scorer:
    real = ref.feats.cpu().float()
    real_r = _kth_nn_radius(real, K)

    def score(fake: Samples) -> dict[str, float]:
        f = fake.feats.cpu().float()
        fake_r = _kth_nn_radius(f, K)
        d = torch.cdist(real, f)  # (n_real, n_fake)
        inside_real = d < real_r[:, None]
        return {
            "precision": float(inside_real.any(dim=0).float().mean()),
            "recall": float((d < fake_r[None, :]).any(dim=1).float().mean()),
            "density": float(inside_real.sum(dim=0).float().mean() / K),
            "coverage": float((d.min(dim=1).values < real_r).float().mean()),
        }

    return score
