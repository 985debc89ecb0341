"""The 2-D Gaussian mixtures of PacGAN's Table 1: ring8 (8 modes on the unit circle, sd 0.01) and grid25 (a 5x5
grid at -4..4 in steps of 2, sd 0.05), sampled fresh for every batch."""

from __future__ import annotations

import math

import torch

from gantune.config import DataConfig
from gantune.data.core import Mixture, dataset


def ring8_means() -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).float()


def grid25_means() -> torch.Tensor:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis)


@dataset("ring8", points=True)
def _ring8(cfg: DataConfig) -> tuple[Mixture, None, None]:
    return Mixture(ring8_means(), 0.01), None, None


@dataset("grid25", points=True)
def _grid25(cfg: DataConfig) -> tuple[Mixture, None, None]:
    return Mixture(grid25_means(), 0.05), None, None
