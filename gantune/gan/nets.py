"""Generator and discriminator networks: an MLP for 2-D points, DCGAN-style convnets for images.

Every discriminator returns ``(logits, features)``: the features (the layer before the last) serve
feature matching, the minibatch-stddev and minibatch-discrimination layers without a second forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gantune.config import ModelConfig, TrialConfig
from gantune.data import is_points
from gantune.gan.norms import NormSpec
from gantune.registry import Registry


class MinibatchStdDev(nn.Module):
    """Appends the mean (over features) of the per-feature std across the minibatch (Karras et al. 2018).

    Gives D a direct view of sample diversity, so a collapsed generator is easy to tell apart.
    """

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        # groups of ``group`` samples (StyleGAN's 4) where n divides, else of 2; an odd batch is one group: groups of
        # one sample have std 0 whatever G does, and the feature said nothing for half of a searched batch range
        g = math.gcd(self.group, n)
        g = n if g == 1 else g
        y = x.reshape(g, n // g, *x.shape[1:])
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (n/g, ...)
        std = std.flatten(1).mean(dim=1)  # (n/g,)
        std = std.repeat(g)  # back to n, sample i uses group i % (n/g)
        shape = (n, 1, *x.shape[2:])
        return torch.cat([x, std.view(-1, *([1] * (x.ndim - 1))).expand(shape)], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016): ``kernels`` (B) closeness features of each sample to the rest.

    M = f T (T: A x B x C), c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_1), o(x_i)_b = sum_j c_b(x_i, x_j) over the
    whole minibatch, j = i included as in the paper (a constant 1 the last layer's bias absorbs; the authors'
    code leaves it out). A collapsed batch gives o_b = batch size for every sample, so D can see collapse that
    no single sample shows. L1, not L2: its gradient stays finite at distance 0 (identical samples, the self term).
    The pairwise differences are materialised, (n, n, B, C), because ``torch.cdist`` (8x faster) has no double
    backward, which the penalties and ``loss.unroll`` need: at batch 256 with B x C = 50 x 5, 1.5 s a step on one
    CPU thread. Like minibatch-stddev it mixes samples, so WGAN-GP and R1 then differentiate a batch-dependent D;
    both are allowed, as minibatch-stddev is (StyleGAN pairs it with R1).
    """

    def __init__(self, in_features: int, kernels: int, dim: int) -> None:
        super().__init__()
        self.kernels, self.dim = kernels, dim
        # a kernel's L1 distance starts of the order of the features' RMS: exp(-distance) is neither 0 nor 1
        self.T = nn.Parameter(torch.randn(in_features, kernels * dim) / (dim * math.sqrt(in_features)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(n, A) features -> (n, B) similarities; pairwise (n, n, B, C) in memory."""
        m = (f @ self.T).view(f.shape[0], self.kernels, self.dim)
        dist = (m.unsqueeze(1) - m.unsqueeze(0)).abs().sum(-1)  # (n, n, B)
        return torch.exp(-dist).sum(1)


def _mlp_block(n_in: int, n_out: int, norm: NormSpec, act: nn.Module) -> list[nn.Module]:
    return [norm.wrap(nn.Linear(n_in, n_out, bias=not norm.has_bias_norm)), norm.layer(n_out, False), act]


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, depth: int, norm: NormSpec, out_dim: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n = z_dim
        for _ in range(depth):
            layers += _mlp_block(n, width, norm, nn.ReLU())
            n = width
        layers.append(nn.Linear(n, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int, depth: int, norm: NormSpec, mbstd: bool, in_dim: int = 2,
                 mbdisc: int = 0, mbdisc_dim: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n = in_dim
        for _ in range(depth):
            layers += _mlp_block(n, width, norm, nn.LeakyReLU(0.2))
            n = width
        self.body = nn.Sequential(*layers)
        self.mbstd = MinibatchStdDev() if mbstd else None
        self.mbdisc = MinibatchDiscrimination(n, mbdisc, mbdisc_dim) if mbdisc else None
        self.head = norm.wrap(nn.Linear(n + int(mbstd) + mbdisc, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        features = h
        if self.mbstd is not None:
            h = self.mbstd(h)
        if self.mbdisc is not None:
            h = torch.cat([h, self.mbdisc(features).to(h.dtype)], dim=1)
        return self.head(h).squeeze(1), features


def _conv_stages(resolution: int) -> int:
    """Number of 2x up/down-sampling stages between 4x4 and the image."""
    return int(math.log2(resolution)) - 2


def _conv_block(c_in: int, c_out: int, norm: NormSpec, act: nn.Module, conv: nn.Module) -> list[nn.Module]:
    return [norm.wrap(conv), norm.layer(c_out, True), act]


class DCGANGenerator(nn.Module):
    """z -> 4x4 -> ... -> resolution, channels halving at each 2x upsampling (Radford et al. 2016)."""

    def __init__(self, z_dim: int, width: int, depth: int, norm: NormSpec, channels: int, resolution: int) -> None:
        super().__init__()
        stages = _conv_stages(resolution)
        ch = width * 2 ** (stages - 1)
        bias = not norm.has_bias_norm
        layers: list[nn.Module] = _conv_block(
            z_dim, ch, norm, nn.ReLU(), nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=bias))
        for stage in range(stages):
            for _ in range(depth - 1):  # extra 3x3 convs at this resolution
                layers += _conv_block(ch, ch, norm, nn.ReLU(), nn.Conv2d(ch, ch, 3, 1, 1, bias=bias))
            if stage == stages - 1:
                break
            layers += _conv_block(ch, ch // 2, norm, nn.ReLU(), nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=bias))
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """image -> ... -> 4x4 -> logit, channels doubling at each 2x downsampling; no norm on the first layer."""

    def __init__(self, width: int, depth: int, norm: NormSpec, mbstd: bool, channels: int, resolution: int,
                 mbdisc: int = 0, mbdisc_dim: int = 16) -> None:
        super().__init__()
        stages = _conv_stages(resolution)
        bias = not norm.has_bias_norm
        ch = width
        layers: list[nn.Module] = [norm.wrap(nn.Conv2d(channels, ch, 4, 2, 1)), nn.LeakyReLU(0.2)]
        for stage in range(stages):
            for _ in range(depth - 1):
                layers += _conv_block(ch, ch, norm, nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, 1, 1, bias=bias))
            if stage == stages - 1:
                break
            layers += _conv_block(ch, ch * 2, norm, nn.LeakyReLU(0.2), nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=bias))
            ch *= 2
        self.body = nn.Sequential(*layers)
        self.mbstd = MinibatchStdDev() if mbstd else None
        self.mbdisc = MinibatchDiscrimination(ch * 16, mbdisc, mbdisc_dim) if mbdisc else None  # 4x4 maps
        self.head = norm.wrap(nn.Conv2d(ch + int(mbstd) + mbdisc, 1, 4, 1, 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        features = h.flatten(1)
        if self.mbstd is not None:
            h = self.mbstd(h)
        if self.mbdisc is not None:  # one map per kernel, constant over the 4x4 positions (as minibatch-stddev)
            o = self.mbdisc(features).to(h.dtype)
            h = torch.cat([h, o[:, :, None, None].expand(-1, -1, *h.shape[2:])], dim=1)
        return self.head(h).flatten(), features


def _init_weights(m: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) conv/linear weights, zero biases. A spectrally normalised weight's power
    iteration starts again on the new weight (15 steps, as torch's ``spectral_norm`` runs on wrapping): its
    vectors were the replaced weight's, so a layer's first training steps ran at about 1.3x its norm (one
    iteration a forward) and the net as built, in eval mode, at up to 1,842x."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        w = getattr(m, "parametrizations", None)
        weight = w.weight.original if w is not None else m.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        for p in w.weight if w is not None else ():
            if (power := getattr(p, "_power_method", None)) is not None:  # torch's spectral norm (no public API)
                with torch.no_grad():
                    power(p._reshape_weight_to_matrix(weight), 15)


def _dcgan(net: nn.Module) -> nn.Module:
    net.apply(_init_weights)
    return net


Builder = Callable[[ModelConfig, tuple[int, ...]], nn.Module]


@dataclass(frozen=True)
class Arch:
    generator: Builder
    discriminator: Builder
    points: bool = False  # for 2-D points (else images); ``arch: auto`` picks the first registered for the data


ARCHS: Registry[Arch] = Registry("architecture")
ARCHS.add("mlp", Arch(
    generator=lambda c, shape: MLPGenerator(c.z_dim, c.g_width, c.g_depth, NormSpec(c.g_norm), shape[0]),
    discriminator=lambda c, shape: MLPDiscriminator(c.d_width, c.d_depth, NormSpec(c.d_norm), c.minibatch_std,
                                                    shape[0], c.minibatch_disc, c.minibatch_disc_dim),
    points=True,
))
ARCHS.add("dcgan", Arch(
    generator=lambda c, shape: _dcgan(
        DCGANGenerator(c.z_dim, c.g_width, c.g_depth, NormSpec(c.g_norm), shape[0], shape[-1])),
    discriminator=lambda c, shape: _dcgan(
        DCGANDiscriminator(c.d_width, c.d_depth, NormSpec(c.d_norm), c.minibatch_std, shape[0], shape[-1],
                           c.minibatch_disc, c.minibatch_disc_dim)),
))


def resolve_arch(cfg: TrialConfig) -> str:
    """``model.arch``, or with ``auto`` the first registered architecture for the data's kind (points or images)."""
    if cfg.model.arch != "auto":
        return cfg.model.arch
    points = is_points(cfg.data)
    return next(a for a in ARCHS.names() if ARCHS.get(a).points == points)


#: the growing twin of an architecture (``model.progressive``), by the architecture's name; ``gantune.gan.progressive``
#: registers dcgan's (the catalogue refuses ``model.progressive`` for an architecture without one)
GROWN: Registry[Arch] = Registry("progressively grown architecture")


def _arch_of(cfg: ModelConfig, arch: str, shape: tuple[int, ...]) -> Arch:
    """``arch``, or its growing twin when ``model.progressive`` starts below the data's resolution."""
    grows = cfg.progressive is not None and len(shape) == 3 and cfg.progressive.start < shape[-1]
    return GROWN.get(arch) if grows else ARCHS.get(arch)


def build_generator(cfg: ModelConfig, arch: str, shape: tuple[int, ...]) -> nn.Module:
    return _arch_of(cfg, arch, shape).generator(cfg, shape)


def build_discriminator(cfg: ModelConfig, arch: str, shape: tuple[int, ...]) -> nn.Module:
    return add_dropout(_arch_of(cfg, arch, shape).discriminator(cfg, shape), cfg.d_dropout)


#: the activations dropout follows in D
_ACTIVATIONS = (nn.LeakyReLU, nn.ReLU)


def add_dropout(net: nn.Module, p: float) -> nn.Module:
    """``net`` with dropout ``p`` after each hidden activation (``model.d_dropout``): each activation module becomes
    ``Sequential(activation, Dropout)``. Activations hold no weights, so the state-dict keys stay those of the net
    without dropout. Dropout acts in train mode only, as ``nn.Dropout`` does; G is never given it."""
    if p <= 0:
        return net
    found = False
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, _ACTIVATIONS):
                setattr(module, name, nn.Sequential(child, nn.Dropout(p)))
                found = True
    if not found:
        raise ValueError(f"model.d_dropout: this discriminator ({type(net).__name__}) has no activation modules "
                         "to put dropout after")
    return net
