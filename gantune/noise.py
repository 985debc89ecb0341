"""Evaluation noise: how far two measurements of one set of weights, on fresh samples each, lie apart.

A metric measured on a finite sample of a generator (FID on 2,500 samples) is itself a random number; a rung
cutoff that ranks trials by it ranks that noise too. Two evaluations of the same weights (``eval.repeat``) differ
by noise alone, so their differences measure it without a model of the metric. Pure Python: the benchmark and
the scheduler share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def rung_noise(pairs: Iterable[tuple[float, float]]) -> float:
    """The standard deviation of one evaluation, from pairs ``(a, b)`` of evaluations of the same weights:
    ``sqrt(mean((a - b)^2) / 2)`` (the difference of two independent measurements has twice the variance of one).

    Pairs with a non-finite value are left out; NaN when fewer than two remain (one difference is no estimate).
    Pooling pairs of different trials assumes they share one noise level, as trials at one rung roughly do.
    """
    diffs = [(a - b) ** 2 for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(diffs) < 2:
        return math.nan
    return math.sqrt(sum(diffs) / len(diffs) / 2)
