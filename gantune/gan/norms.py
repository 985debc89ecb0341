"""Normalisation layers by name.

Activation norms (batch, layer, instance, none) are layers placed after a linear/conv layer; ``spectral``
is a weight normalisation wrapped around that linear/conv layer, so it combines with any of them
(``spectral+layer``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gantune.registry import Registry

#: name -> builder(num_features, spatial) returning the layer placed after a linear (spatial=False) or conv.
NormBuilder = Callable[[int, bool], nn.Module]
NORMS: Registry[NormBuilder] = Registry("normalisation")

NORMS.add("none", lambda n, spatial: nn.Identity())
NORMS.add("batch", lambda n, spatial: nn.BatchNorm2d(n) if spatial else nn.BatchNorm1d(n))
NORMS.add("layer", lambda n, spatial: nn.GroupNorm(1, n) if spatial else nn.LayerNorm(n))
NORMS.add("instance", lambda n, spatial: nn.InstanceNorm2d(n, affine=True) if spatial else nn.Identity())


class NormSpec:
    """A parsed ``model.g_norm`` / ``model.d_norm`` string such as ``spectral+layer``."""

    def __init__(self, spec: str) -> None:
        parts = spec.split("+")
        self.spectral = "spectral" in parts
        acts = [p for p in parts if p != "spectral"]
        self.activation = acts[0] if acts else "none"
        self._build = NORMS.get(self.activation)

    def wrap(self, layer: nn.Module) -> nn.Module:
        """Apply spectral normalisation to a weight layer when asked."""
        return spectral_norm(layer) if self.spectral else layer

    def layer(self, n: int, spatial: bool) -> nn.Module:
        return self._build(n, spatial)

    @property
    def has_bias_norm(self) -> bool:
        """True when the activation norm has its own shift, so the preceding layer needs no bias."""
        return self.activation in ("batch", "layer", "instance")
