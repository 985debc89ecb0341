"""The small digits classifier used as the feature extractor for FID/KID and class coverage on ``digits``.

Trained by ``python -m gantune.metrics.train_digits_classifier`` on scikit-learn's digits; the weights
ship with the package (``weights/digits_classifier.pt``, float16, ~170 KB).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = "digits_classifier.pt"
FEATURES = 64
CLASSES = 10


class DigitsNet(nn.Module):
    """8x8 greyscale digit -> (64 penultimate features, 10 logits). Inputs in [-1, 1] at any resolution."""

    num_features = FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, FEATURES)
        self.head = nn.Linear(FEATURES, CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != 8:
            x = F.interpolate(x, size=(8, 8), mode="area")
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.head(f)


def weights_path() -> Path:
    return Path(str(resources.files("gantune.metrics") / "weights" / WEIGHTS))


def load_digits_net(device: torch.device) -> DigitsNet:
    net = DigitsNet()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device).eval().requires_grad_(False)
