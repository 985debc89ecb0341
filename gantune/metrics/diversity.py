"""Diversity ratio and k-NN manifold estimates: precision and recall (Kynkäänniemi et al. 2019), density and
coverage (Naeem et al. 2020).

Both run on the evaluation device. The real side (mean pairwise distance, k-NN radii) is computed once per
search (``Reference.derived``); distance matrices are built in blocks of ``BLOCK`` columns, so memory stays
at ``n_real x BLOCK`` floats whatever the sample count. Distances are float64 (``base.distances``).
"""

from __future__ import annotations

import torch

from gantune.metrics.base import CollapseSignal, Reference, Samples, Scorer, distances, family

PAIRWISE_SAMPLES = 1000
#: the real samples' mean pairwise distance below which they have no spread to compare with
MIN_SPREAD = 1e-12
K = 5
BLOCK = 2048


def mean_pairwise_distance(feats: torch.Tensor) -> float:
    x = feats[:PAIRWISE_SAMPLES].double()
    return float(torch.pdist(x).mean())


@family("diversity", keys=("diversity",), cheap=True,
        collapse=(CollapseSignal("diversity", "min_diversity", "diversity ratio", ceiling="max_diversity"),))
def diversity(ref: Reference) -> Scorer:
    real = float(ref.derived("diversity", lambda: {"mpd": torch.tensor(mean_pairwise_distance(ref.feats))})["mpd"])
    if not real > MIN_SPREAD:  # a ratio to no spread: 7e9 for any generator, read as a divergence
        raise ValueError(f"diversity is the samples' spread over the real data's, and the real samples' features "
                         f"do not differ (mean pairwise distance {real:.3g}): give data whose samples differ, or "
                         "measure without diversity")

    def score(fake: Samples) -> dict[str, float]:
        return {"diversity": mean_pairwise_distance(fake.feats) / real}

    return score


def kth_nn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour among the others (blocks of ``BLOCK`` points)."""
    # +1: the point itself is at distance 0
    return torch.cat([distances(block, x).kthvalue(k + 1, dim=1).values for block in x.split(BLOCK)])


@family("prdc", keys=("precision", "recall", "density", "coverage"),
        collapse=(CollapseSignal("recall", "min_recall", "recall"),),
        higher=("precision", "recall", "coverage"))  # density: about 1 on the data itself, above it when crowded
def prdc(ref: Reference) -> Scorer:
    real = ref.feats.double()
    if len(real) <= K:  # the k-NN radius of a real sample is its K-th neighbour's distance
        raise ValueError(f"prdc needs more than {K} real samples (each one's radius is its {K}th nearest "
                         f"neighbour's); the data has {len(real)}")
    real_r = ref.derived("prdc", lambda: {"radius": kth_nn_radius(real, K)})["radius"]

    def score(fake: Samples) -> dict[str, float]:
        f = fake.feats.double()
        fake_r = kth_nn_radius(f, K)
        precise = torch.zeros(len(f), dtype=torch.bool, device=f.device)  # fake inside some real ball
        density = torch.zeros(len(f), device=f.device)  # real balls each fake is in
        recalled = torch.zeros(len(real), dtype=torch.bool, device=f.device)  # real inside some fake ball
        nearest = torch.full((len(real),), float("inf"), dtype=f.dtype, device=f.device)  # nearest fake of each real
        for start in range(0, len(f), BLOCK):
            d = distances(real, f[start:start + BLOCK])  # (n_real, block)
            inside_real = d < real_r[:, None]
            precise[start:start + BLOCK] = inside_real.any(dim=0)
            density[start:start + BLOCK] = inside_real.sum(dim=0).float()
            recalled |= (d < fake_r[None, start:start + BLOCK]).any(dim=1)
            nearest = torch.minimum(nearest, d.min(dim=1).values)
        return {
            "precision": float(precise.float().mean()),
            "recall": float(recalled.float().mean()),
            "density": float(density.mean() / K),
            "coverage": float((nearest < real_r).float().mean()),
        }

    return score
