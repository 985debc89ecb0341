"""What metric families see, and the registry they are chosen from.

A family is built once per trial from the real reference (so real-only work, such as real statistics or k-NN
radii, is done once) and then scores each evaluation's fake samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gantune.registry import Registry


@dataclass
class Samples:
    """Samples with their features (and class logits when the extractor is a classifier)."""

    x: torch.Tensor
    feats: torch.Tensor
    logits: torch.Tensor | None = None


@dataclass
class Reference(Samples):
    """The real side: fixed reference samples, plus the mixture definition for 2-D data."""

    means: torch.Tensor | None = None
    std: float = 0.0


Scorer = Callable[[Samples], dict[str, float]]
Family = Callable[[Reference], Scorer]
FAMILIES: Registry[Family] = Registry("metric")
#: the keys each family's scorer returns (what a search objective may name), and the cheap families that the
#: quick collapse checks between full evaluations run
KEYS: dict[str, tuple[str, ...]] = {}
CHEAP: set[str] = set()


def family(name: str, keys: tuple[str, ...], cheap: bool = False) -> Callable[[Family], Family]:
    """Register a metric family with the keys it returns (and whether the quick checks may run it)."""

    def add(build: Family) -> Family:
        FAMILIES.add(name, build)
        KEYS[name] = keys
        if cheap:
            CHEAP.add(name)
        return build

    return add
