"""Progressive growing (Karras et al. 2018) of the DCGAN nets (``model.progressive``).

Training starts at ``start`` px and doubles to the data's resolution. At each new resolution G's new block and
its toRGB output fade in (alpha 0 -> 1) against the 2x nearest-upsampled output of the previous resolution's
toRGB, and D's new fromRGB and block fade in against the 2x average-pooled input through the previous fromRGB.

Both nets keep the rest of the pipeline unaware of the growing: G always returns full-resolution images (the
current resolution's output nearest-upsampled), D takes full-resolution images and average-pools them to the
current resolution first. So real images are seen at the current resolution (during a fade, blended with the
previous one as G's output is: ``Growing.fade_reals``), metrics and grids see full-size images, and the trainer
only calls ``GrowthSchedule.apply`` each step. The schedule is a function of the
generator step, so a resumed run (or a PBT member cloned from another) is at the right stage; the stage is also
kept in buffers, so a saved generator (``generator.pt``, a best generator saved mid-growth) loads at its stage.
The resolution in use is a plain attribute (control flow: ``torch.compile`` recompiles once per resolution), the
fade's alpha a buffer used in arithmetic (no recompile each step, and ``torch.func.functional_call``, which
``loss.unroll`` calls D through, sees a copy of the same value).

The blocks are the DCGAN ones (``gantune.gan.nets._conv_block``, ``NormSpec``), so norms, spectral norm,
minibatch-stddev, minibatch discrimination and ``model.d_dropout`` work as in the plain nets. Channels at the
resolution 4 * 2^b are ``width * 2^max(stages - 1 - b, 0)``: those of the plain DCGAN, with the full
resolution (where the plain G's last layer makes the image directly) keeping ``width``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gantune.config import ModelConfig, ProgressiveConfig, TrialConfig
from gantune.gan.nets import GROWN, Arch, MinibatchDiscrimination, MinibatchStdDev, _conv_block, _conv_stages, _dcgan
from gantune.gan.norms import NormSpec


@dataclass(frozen=True)
class GrowthSchedule:
    """Which resolution the nets are at, and the fade's alpha, after ``done`` generator steps.

    ``stage_steps`` at the start resolution; then for each of the ``levels`` doublings ``fade_steps`` of fade
    (alpha rising linearly from 0) and ``stage_steps`` at alpha 1; the full resolution keeps what is left of
    ``train.steps``. Without ``model.progressive.stage_steps``, the steps the fades leave are shared equally by the
    ``levels + 1`` resolutions. ``end`` (the last fade's end) must fall before ``train.steps`` (the catalogue
    checks it), so the last steps and the saved generator are at the full resolution with alpha 1."""

    levels: int
    fade_steps: int
    stage_steps: int

    @classmethod
    def of(cls, p: ProgressiveConfig | None, resolution: int, steps: int) -> GrowthSchedule | None:
        """The schedule of ``model.progressive`` for this resolution and ``train.steps``; None when it grows
        nothing (off, or ``start`` at the data's resolution)."""
        if p is None or p.start >= resolution:
            return None
        levels = int(math.log2(resolution // p.start))
        stage = p.stage_steps if p.stage_steps is not None else max(0, (steps - levels * p.fade_steps) //
                                                                     (levels + 1))
        return cls(levels, p.fade_steps, stage)

    @classmethod
    def of_config(cls, cfg: TrialConfig) -> GrowthSchedule | None:
        return cls.of(cfg.model.progressive, cfg.data.resolution, cfg.train.steps)

    @property
    def end(self) -> int:
        """Generator steps until the last fade is complete."""
        return self.levels * (self.stage_steps + self.fade_steps)

    def at(self, done: int) -> tuple[int, float]:
        """(level, alpha) after ``done`` generator steps: level 0 is the start resolution, ``levels`` the data's."""
        k, into = divmod(max(done, 0), self.stage_steps + self.fade_steps)
        if k >= self.levels:
            return self.levels, 1.0
        if into < self.stage_steps:
            return k, 1.0
        return k + 1, (into - self.stage_steps) / self.fade_steps

    def apply(self, done: int, *nets: nn.Module | None) -> None:
        """Put each growing net (G, D, the EMA G) at the stage of ``done`` steps; others are left alone."""
        level, alpha = self.at(done)
        for net in nets:
            if isinstance(net, Growing):
                net.set_progress(level, alpha)


class Growing(nn.Module):
    """The stage of a growing net: ``level`` (0 = the start resolution) and ``fading`` as attributes for control
    flow, with ``grow_level`` and ``grow_alpha`` buffers that carry them through state dicts."""

    grow_level: torch.Tensor
    grow_alpha: torch.Tensor

    def __init__(self, start: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.first = _conv_stages(start)  # block index of the start resolution (4 * 2^b px)
        self.top = _conv_stages(resolution)
        self.level, self.fading = 0, False
        self.register_buffer("grow_level", torch.zeros((), dtype=torch.long))
        self.register_buffer("grow_alpha", torch.ones(()))
        self.register_load_state_dict_post_hook(_restore_stage)

    @property
    def current(self) -> int:
        """Block index of the resolution in use."""
        return self.first + self.level

    def set_progress(self, level: int, alpha: float) -> None:
        if not 0 <= level <= self.top - self.first or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"stage ({level}, {alpha}) outside 0..{self.top - self.first} levels, alpha in [0, 1]")
        if level != self.level:
            self.grow_level.fill_(level)
        if alpha != float(self._alpha_now):
            self.grow_alpha.fill_(alpha)
            self._alpha_now = alpha
        self.level, self.fading = level, level > 0 and alpha < 1.0

    _alpha_now: float = 1.0  # the value last written to grow_alpha (read back without a device sync)

    def fade_reals(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution reals as D should see them at this stage: during a fade, the previous resolution's
        version (2x average-pooled at the current resolution, nearest-upsampled back) blended into the current one
        by the fade's alpha, as G's output is (Karras et al. 2018, appendix A.1: else D tells the fading fakes
        from sharp reals by their blur alone); ``x`` itself otherwise."""
        if not self.fading:
            return x
        factor = 2 * self.resolution // (4 * 2**self.current)  # full resolution -> the previous stage's
        low = F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="nearest")
        return low + self.grow_alpha * (x - low)


def _restore_stage(module: nn.Module, incompatible: Any) -> None:
    """After ``load_state_dict``: the attributes follow the loaded buffers (one host sync, at load only)."""
    assert isinstance(module, Growing)
    module.level, module._alpha_now = int(module.grow_level), float(module.grow_alpha)
    module.fading = module.level > 0 and module._alpha_now < 1.0


def _channels(width: int, top: int, b: int) -> int:
    return width * 2 ** max(top - 1 - b, 0)


def _to_full(x: torch.Tensor, resolution: int) -> torch.Tensor:
    factor = resolution // x.shape[-1]
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


class ProgressiveGenerator(Growing):
    """z -> 4x4 -> ... -> the current resolution (DCGAN blocks) -> toRGB (1x1 conv, tanh), faded against the
    previous resolution's toRGB, nearest-upsampled to the full resolution."""

    def __init__(self, z_dim: int, width: int, depth: int, norm: NormSpec, channels: int, resolution: int,
                 start: int) -> None:
        super().__init__(start, resolution)
        bias = not norm.has_bias_norm
        ch = _channels(width, self.top, 0)
        base = _conv_block(z_dim, ch, norm, nn.ReLU(), nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=bias))
        for _ in range(depth - 1):
            base += _conv_block(ch, ch, norm, nn.ReLU(), nn.Conv2d(ch, ch, 3, 1, 1, bias=bias))
        self.base = nn.Sequential(*base)
        blocks: list[nn.Module] = []  # blocks[b - 1]: 4 * 2^(b-1) px -> 4 * 2^b px
        for b in range(1, self.top + 1):
            c_in, c_out = _channels(width, self.top, b - 1), _channels(width, self.top, b)
            layers = _conv_block(c_in, c_out, norm, nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias))
            for _ in range(depth - 1):
                layers += _conv_block(c_out, c_out, norm, nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(  # to_rgb[b - first]
            nn.Sequential(nn.Conv2d(_channels(width, self.top, b), channels, 1), nn.Tanh())
            for b in range(self.first, self.top + 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = prev = self.base(z.view(z.shape[0], -1, 1, 1))
        for b in range(1, self.current + 1):
            prev, h = h, self.blocks[b - 1](h)
        out = self.to_rgb[self.current - self.first](h)
        if self.fading:
            low = F.interpolate(self.to_rgb[self.current - 1 - self.first](prev), scale_factor=2, mode="nearest")
            out = low + self.grow_alpha * (out - low)
        return _to_full(out, self.resolution)


class ProgressiveDiscriminator(Growing):
    """full-resolution image -> average-pooled to the current resolution -> fromRGB (1x1 conv, no norm) -> DCGAN
    blocks -> 4x4 -> logit; the new resolution's fromRGB and block faded against the previous fromRGB on the
    2x-pooled input. Features (for feature matching) are the 4x4 maps, the same size at every stage."""

    def __init__(self, width: int, depth: int, norm: NormSpec, mbstd: bool, channels: int, resolution: int,
                 start: int, mbdisc: int = 0, mbdisc_dim: int = 16) -> None:
        super().__init__(start, resolution)
        bias = not norm.has_bias_norm
        self.from_rgb = nn.ModuleList(  # from_rgb[b - first]
            nn.Sequential(norm.wrap(nn.Conv2d(channels, _channels(width, self.top, b), 1)), nn.LeakyReLU(0.2))
            for b in range(self.first, self.top + 1))
        blocks: list[nn.Module] = []  # blocks[b - 1]: 4 * 2^b px -> 4 * 2^(b-1) px
        for b in range(1, self.top + 1):
            c_in, c_out = _channels(width, self.top, b), _channels(width, self.top, b - 1)
            layers: list[nn.Module] = []
            for _ in range(depth - 1):
                layers += _conv_block(c_in, c_in, norm, nn.LeakyReLU(0.2), nn.Conv2d(c_in, c_in, 3, 1, 1, bias=bias))
            layers += _conv_block(c_in, c_out, norm, nn.LeakyReLU(0.2), nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        ch = _channels(width, self.top, 0)
        base: list[nn.Module] = []
        for _ in range(depth - 1):
            base += _conv_block(ch, ch, norm, nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, 1, 1, bias=bias))
        self.base = nn.Sequential(*base)
        self.mbstd = MinibatchStdDev() if mbstd else None
        self.mbdisc = MinibatchDiscrimination(ch * 16, mbdisc, mbdisc_dim) if mbdisc else None  # 4x4 maps
        self.head = norm.wrap(nn.Conv2d(ch + int(mbstd) + mbdisc, 1, 4, 1, 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cur = self.current
        pool = self.resolution // (4 * 2**cur)
        x = F.avg_pool2d(x, pool) if pool > 1 else x
        h = self.from_rgb[cur - self.first](x)
        if cur > 0:
            h = self.blocks[cur - 1](h)
        if self.fading:
            low = self.from_rgb[cur - 1 - self.first](F.avg_pool2d(x, 2))
            h = low + self.grow_alpha * (h - low)
        for b in range(cur - 1, 0, -1):
            h = self.blocks[b - 1](h)
        h = self.base(h)
        features = h.flatten(1)
        if self.mbstd is not None:
            h = self.mbstd(h)
        if self.mbdisc is not None:
            o = self.mbdisc(features).to(h.dtype)
            h = torch.cat([h, o[:, :, None, None].expand(-1, -1, *h.shape[2:])], dim=1)
        return self.head(h).flatten(), features


def _start(c: ModelConfig) -> int:
    assert c.progressive is not None  # nets.build_* pick GROWN only with model.progressive on
    return c.progressive.start


GROWN.add("dcgan", Arch(
    generator=lambda c, shape: _dcgan(ProgressiveGenerator(c.z_dim, c.g_width, c.g_depth, NormSpec(c.g_norm),
                                                           shape[0], shape[-1], _start(c))),
    discriminator=lambda c, shape: _dcgan(ProgressiveDiscriminator(
        c.d_width, c.d_depth, NormSpec(c.d_norm), c.minibatch_std, shape[0], shape[-1], _start(c),
        c.minibatch_disc, c.minibatch_disc_dim)),
))
