"""Adversarial losses by name, and the penalties some of them need.

D sees raw logits. A relativistic loss (Jolicoeur-Martineau 2019) scores a fake against the reals under the same
D, so its G loss reads D's real logits too (``g_paired``). Each loss says which regulariser it relies on (a
gradient penalty for WGAN-GP, weight clipping for WGAN) so the training step applies it without checking loss
names."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gantune.registry import Registry


@dataclass(frozen=True)
class GANLoss:
    """``d(real_logits, fake_logits)`` and either ``g(fake_logits)`` or ``g_paired(real_logits, fake_logits)`` to
    minimise."""

    d: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor], Tensor] | None = None
    # G's loss given D's logits of a real batch as well (relativistic losses): the step scores the D step's last
    # real batch under the updated D for it, one more forward of D, so it is asked only of losses that read it
    g_paired: Callable[[Tensor, Tensor], Tensor] | None = None
    gradient_penalty: bool = False  # WGAN-GP: penalise ||grad D|| != 1 on interpolates
    weight_clipping: bool = False  # WGAN: clamp D weights after each step
    # G's gradient vanishes once D separates real from fake (a saturating G loss), so a D that wins every sample
    # means a stall (gantune.health); the other losses keep G's gradient there and a separating D is normal
    separation_stalls: bool = False
    # one-sided label smoothing (Salimans et al. 2016): ``d`` with D's real target 1 - s, for a loss with targets;
    # ``None`` where there is no target to soften (hinge, Wasserstein), and the catalogue refuses the knob there
    d_smoothed: Callable[[Tensor, Tensor, float], Tensor] | None = None
    # the logit above which D calls a sample real (its decision boundary): what adaptive augmentation's overfitting
    # signal E[sign(D(x) - boundary)] reads; ``None`` where there is none (Wasserstein critics, relativistic Ds:
    # their scores mean something only against others), and the catalogue refuses ``data.ada_target`` there. Left
    # out: 0 for a loss with ``g``, none for one with ``g_paired`` (a plugin's relativistic loss took ADA on 0)
    real_above: float | None = math.inf

    def __post_init__(self) -> None:
        if (self.g is None) == (self.g_paired is None):
            raise ValueError("a GANLoss needs one G loss: g(fake_logits) or g_paired(real_logits, fake_logits)")
        if self.real_above == math.inf:  # left out
            object.__setattr__(self, "real_above", None if self.g_paired is not None else 0.0)

    def g_loss(self, real: Tensor | None, fake: Tensor) -> Tensor:
        """G's loss on the fakes' logits (and, for ``g_paired``, the reals' logits under the same D)."""
        if self.g is not None:
            return self.g(fake)
        assert self.g_paired is not None and real is not None
        return self.g_paired(real, fake)

    def d_loss(self, smoothing: float) -> Callable[[Tensor, Tensor], Tensor]:
        """D's loss with one-sided label smoothing ``smoothing`` (0: ``d`` itself)."""
        smoothed = self.d_smoothed
        if smoothing == 0 or smoothed is None:
            return self.d
        return lambda r, f: smoothed(r, f, smoothing)


LOSSES: Registry[GANLoss] = Registry("loss")


def _bce_smoothed(r: Tensor, f: Tensor, s: float) -> Tensor:
    """Binary cross-entropy on logits with real target 1 - s (fake target 0): -(1-s) log D(x) - s log(1 - D(x))."""
    return ((1 - s) * F.softplus(-r) + s * F.softplus(r)).mean() + F.softplus(f).mean()


LOSSES.add("nonsaturating", GANLoss(
    d=lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
    g=lambda f: F.softplus(-f).mean(),
    d_smoothed=_bce_smoothed,
))
LOSSES.add("minimax", GANLoss(  # G minimises log(1 - D(G(z))) = -softplus(f): saturates early, kept for study
    d=lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
    g=lambda f: -F.softplus(f).mean(),
    separation_stalls=True,
    d_smoothed=_bce_smoothed,
))
LOSSES.add("hinge", GANLoss(
    d=lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
    g=lambda f: -f.mean(),
))
LOSSES.add("wgan", GANLoss(d=lambda r, f: f.mean() - r.mean(), g=lambda f: -f.mean(), weight_clipping=True,
                           real_above=None))
LOSSES.add("wgan-gp", GANLoss(d=lambda r, f: f.mean() - r.mean(), g=lambda f: -f.mean(), gradient_penalty=True,
                              real_above=None))
LOSSES.add("lsgan", GANLoss(
    d=lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
    g=lambda f: 0.5 * ((f - 1) ** 2).mean(),
    d_smoothed=lambda r, f, s: 0.5 * ((r - (1 - s)) ** 2).mean() + 0.5 * (f**2).mean(),
    real_above=0.5,  # targets 1 and 0
))

# relativistic pairing (RpGAN: Jolicoeur-Martineau 2019's RSGAN, the loss of R3GAN, Huang et al. 2024): each real
# scored against one fake, D pushing D(x) - D(G(z)) up and G pushing it down. The plain loss's landscape has
# mode-collapsed local minima this one has not (Sun et al. 2020); R3GAN pairs it with R1 and R2 (loss.r2_weight)
LOSSES.add("rpgan", GANLoss(
    d=lambda r, f: F.softplus(-(r - f)).mean(),
    g_paired=lambda r, f: F.softplus(-(f - r)).mean(),
))
# relativistic average (RaGAN, Jolicoeur-Martineau 2019): each real against the fakes' mean logit and each fake
# against the reals', both terms in both players' losses
LOSSES.add("ragan", GANLoss(
    d=lambda r, f: F.softplus(-(r - f.mean())).mean() + F.softplus(f - r.mean()).mean(),
    g_paired=lambda r, f: F.softplus(-(f - r.mean())).mean() + F.softplus(r - f.mean()).mean(),
))


def gradient_penalty(d: Callable[[Tensor], tuple[Tensor, Tensor]], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: E[(||grad_x D(x_hat)|| - 1)^2] at random interpolates of real and fake (Gulrajani et al.)."""
    alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out, _ = d(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(logits: Tensor, x: Tensor) -> Tensor:
    """R1: E[||grad_x D(x)||^2] at the samples ``x`` D scored ``logits`` (Mescheder et al. 2018); ``x`` must require
    grad. At real samples it is R1; at fakes, R2 (the same expectation over G's distribution)."""
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()
