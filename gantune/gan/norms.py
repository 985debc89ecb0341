"""Normalisation layers by name.

Activation norms (batch, layer, instance, none) are layers placed after a linear/conv layer; ``spectral``
is a weight normalisation wrapped around that linear/conv layer, so it combines with any of them
(``spectral+layer``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gantune.config import parse_norm
from gantune.errors import GantuneError
from gantune.registry import Registry

#: builder(num_features, spatial) returning the layer placed after a linear (spatial=False) or conv layer.
NormBuilder = Callable[[int, bool], nn.Module]


@dataclass(frozen=True)
class Norm:
    """An activation norm and the facts the config checks combinations against."""

    build: NormBuilder
    shift: bool = True  # has its own bias: the layer before it needs none
    per_sample: bool = True  # False when it mixes samples of a batch (breaks per-sample gradient penalties)
    needs_maps: bool = False  # only meaningful on image feature maps, not on 2-D points


NORMS: Registry[Norm] = Registry("normalisation")
NORMS.add("none", Norm(lambda n, spatial: nn.Identity(), shift=False))
NORMS.add("batch", Norm(lambda n, spatial: nn.BatchNorm2d(n) if spatial else nn.BatchNorm1d(n), per_sample=False))
NORMS.add("layer", Norm(lambda n, spatial: nn.GroupNorm(1, n) if spatial else nn.LayerNorm(n)))
NORMS.add("instance", Norm(lambda n, spatial: nn.InstanceNorm2d(n, affine=True) if spatial else nn.Identity(),
                           needs_maps=True))


class NormSpec:
    """A parsed ``model.g_norm`` / ``model.d_norm`` string such as ``spectral+layer``."""

    def __init__(self, spec: str) -> None:
        parsed = parse_norm(spec)
        if parsed is None:
            raise GantuneError(f"{spec!r} is not a normalisation")
        self.activation, self.spectral = parsed
        self.norm = NORMS.get(self.activation)

    def wrap(self, layer: nn.Module) -> nn.Module:
        """Apply spectral normalisation to a weight layer when asked."""
        return spectral_norm(layer) if self.spectral else layer

    def layer(self, n: int, spatial: bool) -> nn.Module:
        return self.norm.build(n, spatial)

    @property
    def has_bias_norm(self) -> bool:
        """True when the activation norm has its own shift, so the preceding layer needs no bias."""
        return self.norm.shift
