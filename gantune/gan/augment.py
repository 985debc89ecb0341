"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of the images D sees.

With little data D memorises the real set and G's gradient stops meaning anything. Augmenting every input of D,
real and fake alike, with transforms that are differentiable in the image lets G learn through them, so D cannot
tell real from fake by the augmentation and the generated distribution is not pulled towards augmented images.
The policies follow the authors' DiffAugment_pytorch.py (github.com/mit-han-lab/data-efficient-gans): translation
by up to 1/8 of the side with zero padding, cutout of a square half the side, and colour (brightness, saturation,
contrast) for images in [-1, 1]. Each op draws per-sample parameters from ``generator`` (the global RNG when
``None``), so a seeded generator reproduces them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gantune.registry import Registry

AugmentOp = Callable[[Tensor, "torch.Generator | None"], Tensor]

TRANSLATION_RATIO = 0.125  # the largest shift, as a fraction of the image side
CUTOUT_RATIO = 0.5  # the side of the cut-out square, as a fraction of the image side


def _rand(n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``n`` uniform draws in [0, 1) shaped to broadcast over (N, C, H, W), on ``x``'s device and dtype."""
    device = generator.device if generator is not None else x.device
    return torch.rand(n, 1, 1, 1, generator=generator, device=device).to(x.device, x.dtype)


def _randint(low: int, high: int, n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, (n, 1, 1), generator=generator, device=device).to(x.device)


def brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Add one uniform offset in [-0.5, 0.5) per image."""
    return x + (_rand(x.shape[0], x, generator) - 0.5)


def saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Scale each pixel's distance from its channel mean by a factor in [0, 2) per image."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x.shape[0], x, generator) * 2) + mean


def contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Scale each image's distance from its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x.shape[0], x, generator) + 0.5) + mean


def translation(x: Tensor, generator: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its side each way; uncovered pixels are 0.

    ``out[i, :, r, c] = x[i, :, r + dy_i, c + dx_i]`` where that lies in the image, else 0.
    """
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-sh, sh + 1, n, x, generator)
    dx = _randint(-sw, sw + 1, n, x, generator)
    # indices into the image padded by one zero pixel on each side: out-of-range sources land on the border
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero one square of side ``ratio`` of the image per image, centred anywhere (clipped at the edges)."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - size_h % 2), n, x, generator)
    cx = _randint(0, w + (1 - size_w % 2), n, x, generator)
    top, left = cy - size_h // 2, cx - size_w // 2
    r = torch.arange(h, device=x.device).view(1, h, 1)
    c = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (r >= top) & (r < top + size_h) & (c >= left) & (c < left + size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


#: policy name -> its ops, applied in order (the authors' AUGMENT_FNS)
AUGMENTS: Registry[tuple[AugmentOp, ...]] = Registry("augmentation")
AUGMENTS.add("translation", (translation,))
AUGMENTS.add("cutout", (cutout,))
AUGMENTS.add("color", (brightness, saturation, contrast))


def check_augment(policies: Sequence[str]) -> None:
    """``ValueError`` naming the first unregistered or repeated policy (the catalogue's check of ``data.augment``):
    ``[translation, translation]`` shifted images twice as far, on two coins under ADA, without a word."""
    for i, name in enumerate(policies):
        AUGMENTS.validate(name)
        if name in policies[:i]:
            raise ValueError(f"{name} is named twice (each policy applies once: give it once)")


def diff_augment(x: Tensor, policies: Sequence[str], p: float | Tensor = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """``x`` through each policy in turn; with ``p`` below 1 each image goes through each policy with probability
    ``p``, on its own (ADA's per-sample probability, Karras et al. 2020). One coin for the whole batch augmented
    reals and fakes on separate coins, so a D step could see augmented reals beside plain fakes, and a batch-norm
    D batch statistics of augmented images only. ``p`` may be a tensor on ``x``'s device (adaptive augmentation's,
    which moves every few steps): read there, never on the host, so a step does not wait on the GPU for it."""
    fixed = not isinstance(p, Tensor)
    if not policies or (fixed and p <= 0):
        return x
    for name in policies:
        out = x
        for op in AUGMENTS.get(name):
            out = op(out, generator)
        x = out if fixed and p >= 1 else torch.where(_rand(x.shape[0], x, generator) < p, out, x)
    return x


class AdaptiveP:
    """Adaptive augmentation's probability (ADA, Karras et al. 2020, section 3): starts at 0; every ``INTERVAL``
    D steps it moves by sign(r_t - target) x (the real images D saw) / (``kimg`` x 1,000), clamped to [0, 1],
    where r_t = E[sign(D(x) - boundary)] over those steps' augmented reals: D calling more of them real than the
    target says it overfits them, and more augmentation follows. Held on the device (no host sync a step)."""

    INTERVAL = 4  # D steps between adjustments (ADA's 4 minibatches)

    def __init__(self, target: float, kimg: float, boundary: float, device: torch.device) -> None:
        self.target, self.images, self.boundary = target, kimg * 1000.0, boundary
        self.p = torch.zeros((), device=device)
        self._signs = torch.zeros((), device=device)
        self._seen = 0
        self._steps = 0

    def observe(self, real_logits: Tensor) -> None:
        """One D step's logits of its (augmented) reals."""
        self._signs += torch.sign(real_logits.detach().float() - self.boundary).sum()
        self._seen += real_logits.numel()
        self._steps += 1
        if self._steps % self.INTERVAL == 0:
            step = torch.sign(self._signs / self._seen - self.target) * (self._seen / self.images)
            self.p = (self.p + step).clamp(0.0, 1.0)
            self._signs.zero_()
            self._seen = 0

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p.detach().cpu(), "signs": self._signs.detach().cpu(), "seen": self._seen,
                "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = state["p"].to(self.p.device)
        self._signs = state["signs"].to(self._signs.device)
        self._seen, self._steps = int(state["seen"]), int(state["steps"])
