"""Mode and class coverage: the collapse signals.

2-D mixtures follow PacGAN/VEEGAN: a sample is high quality (HQ) when it lies within 3 sigma (Euclidean) of
its nearest mean; a mode is covered when it has at least one HQ sample; ``mode_kl`` is the KL divergence of
the HQ samples' mode histogram from uniform. For an exact 2-D Gaussian, 1 - exp(-4.5) = 98.9% of samples
are within 3 sigma. Digits use the classifier's predicted classes the same way.
"""

from __future__ import annotations

import math

import torch

from gantune.metrics.base import CollapseSignal, Reference, Samples, Scorer, family


def histogram_kl(counts: torch.Tensor) -> float:
    """KL(p || uniform) of a histogram; log K (one-bin collapse) when the histogram is empty."""
    k = counts.numel()
    total = counts.sum()
    if total == 0:
        return math.log(k)
    p = counts.double() / total
    nz = p > 0
    return float((p[nz] * (p[nz] * k).log()).sum())


@family("modes", keys=("modes", "mode_coverage", "hq", "mode_kl"), cheap=True,
        collapse=(CollapseSignal("mode_coverage", "min_coverage", "mode coverage", gate=("hq", "min_hq")),))
def modes(ref: Reference) -> Scorer:
    if ref.means is None:
        raise ValueError("the modes metric needs a 2-D mixture (ring8, grid25)")
    means = ref.means
    radius = 3 * ref.std
    k = len(means)

    def score(fake: Samples) -> dict[str, float]:
        dist, nearest = torch.cdist(fake.x.float(), means).min(dim=1)
        hq = dist < radius
        counts = torch.bincount(nearest[hq], minlength=k)
        covered = int((counts > 0).sum())
        return {"modes": float(covered), "mode_coverage": covered / k, "hq": float(hq.float().mean()),
                "mode_kl": histogram_kl(counts)}

    return score


@family("classes", keys=("classes", "class_coverage", "class_kl"), cheap=True,
        collapse=(CollapseSignal("class_coverage", "min_coverage", "class coverage"),))
def classes(ref: Reference) -> Scorer:
    if ref.logits is None:
        raise ValueError("the classes metric needs a classifier extractor (digits)")
    k = ref.logits.shape[1]

    def score(fake: Samples) -> dict[str, float]:
        assert fake.logits is not None
        counts = torch.bincount(fake.logits.argmax(dim=1), minlength=k)
        # a class counts as covered with at least a tenth of its fair share: stray misclassifications don't count
        covered = int((counts >= max(1.0, len(fake.logits) / (10 * k))).sum())
        return {"classes": float(covered), "class_coverage": covered / k, "class_kl": histogram_kl(counts)}

    return score
