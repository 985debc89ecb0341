"""Class-conditional GANs (``model.conditional``): conditional normalisation in G, a projection discriminator.

Both are wrappers around the unconditional nets of ``gantune.gan.nets``, so any registered architecture becomes
conditional without a second set of nets:

* G: every normalisation layer with a learned gain and bias (batch, layer, group, instance norm) is swapped for
  the same normalisation without them, followed by a per-class gain (initialised to 1) and bias (to 0) looked up
  in an ``nn.Embedding`` (conditional batch norm: de Vries et al. 2017, Miyato & Koyama 2018). At initialisation
  every class has the unconditional net's affine (1, 0). ``ConditionalGenerator(z, y)`` hands ``y`` to those
  layers for the duration of one forward pass.
* D: the projection discriminator (Miyato & Koyama 2018): ``logit = head(phi(x)) + <embed(y), phi(x)>`` with
  ``phi(x)`` the features every gantune discriminator already returns (the flattened 4x4 maps of DCGAN, the last
  hidden layer of the MLP). With spectral norm in D, the class embedding is spectrally normalised too, as in the
  authors' code.

The number of classes comes from the data (``gantune.data.RealData.n_classes``) and, for exported weights, from
the embeddings' shape (``state_classes``), so a weights file needs nothing beside its config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gantune.config import TrialConfig
from gantune.data import RealData, known_classes
from gantune.errors import GantuneError

#: the activation norms (``model.g_norm``) whose layers in G carry a gain and bias to condition
CONDITIONAL_NORMS = ("batch", "layer", "instance")

#: a normalisation layer type -> (the same normalisation without its affine, its feature count)
_PLAIN: dict[type, Callable[[Any], tuple[nn.Module, int]]] = {
    nn.BatchNorm1d: lambda m: (nn.BatchNorm1d(m.num_features, m.eps, m.momentum, affine=False), m.num_features),
    nn.BatchNorm2d: lambda m: (nn.BatchNorm2d(m.num_features, m.eps, m.momentum, affine=False), m.num_features),
    nn.GroupNorm: lambda m: (nn.GroupNorm(m.num_groups, m.num_channels, m.eps, affine=False), m.num_channels),
    nn.LayerNorm: lambda m: (nn.LayerNorm(m.normalized_shape, m.eps, elementwise_affine=False),
                             int(m.normalized_shape[0])),
    nn.InstanceNorm2d: lambda m: (nn.InstanceNorm2d(m.num_features, m.eps, m.momentum, affine=False,
                                                    track_running_stats=m.track_running_stats), m.num_features),
}


class ConditionalNorm(nn.Module):
    """A normalisation without its own affine, then a gain and bias per class: ``norm(x) * gain[y] + bias[y]``.

    ``labels`` is set by the enclosing ``ConditionalGenerator`` for one forward pass (the layers sit inside the
    unconditional net's ``nn.Sequential``, which passes one tensor on)."""

    def __init__(self, norm: nn.Module, features: int, n_classes: int) -> None:
        super().__init__()
        self.norm = norm
        self.features = features
        self.class_gain = nn.Embedding(n_classes, features)
        self.class_bias = nn.Embedding(n_classes, features)
        nn.init.ones_(self.class_gain.weight)
        nn.init.zeros_(self.class_bias.weight)
        self.labels: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.labels is None:
            raise GantuneError("a conditional generator was called without class labels")
        shape = (x.shape[0], self.features, *([1] * (x.ndim - 2)))
        return self.norm(x) * self.class_gain(self.labels).view(shape) + self.class_bias(self.labels).view(shape)


def condition_norms(net: nn.Module, n_classes: int) -> int:
    """Swap ``net``'s affine normalisation layers for ``ConditionalNorm`` in place; how many were swapped."""
    swapped = 0
    for module in list(net.modules()):
        for name, child in module.named_children():
            plain = _PLAIN.get(type(child))
            if plain is None or not _affine(child):
                continue
            norm, features = plain(child)
            setattr(module, name, ConditionalNorm(norm, features, n_classes))
            swapped += 1
    return swapped


def _affine(m: nn.Module) -> bool:
    return bool(getattr(m, "affine", getattr(m, "elementwise_affine", False)))


class ConditionalGenerator(nn.Module):
    """``G(z, y)``: the unconditional generator ``net`` with its normalisation layers conditioned on ``y``."""

    def __init__(self, net: nn.Module, n_classes: int) -> None:
        super().__init__()
        if condition_norms(net, n_classes) == 0:
            raise GantuneError(f"model.conditional: this generator ({type(net).__name__}) has no normalisation "
                               f"layer with a gain and bias to condition (model.g_norm: one of "
                               f"{', '.join(CONDITIONAL_NORMS)})")
        self.net = net
        self.n_classes = n_classes

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        norms = [m for m in self.net.modules() if isinstance(m, ConditionalNorm)]
        for m in norms:
            m.labels = y
        try:
            return self.net(z)
        finally:
            for m in norms:
                m.labels = None


class ProjectionDiscriminator(nn.Module):
    """``D(x, y)``: the unconditional discriminator's logit plus ``<embed(y), features(x)>``; returns
    ``(logits, features)`` as every discriminator does (feature matching and the minibatch layers are unchanged)."""

    def __init__(self, net: nn.Module, n_classes: int, features: int, spectral: bool) -> None:
        super().__init__()
        self.net = net
        self.n_classes = n_classes
        embed = nn.Embedding(n_classes, features)
        nn.init.xavier_uniform_(embed.weight)  # the authors' initialiser
        self.class_embed = spectral_norm(embed) if spectral else embed

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits, feat = self.net(x)
        return logits + (self.class_embed(y) * feat).sum(dim=1), feat


def feature_size(net: nn.Module, shape: tuple[int, ...]) -> int:
    """The size of the features ``net`` returns for one sample of ``shape``: a probe in eval mode, so no
    batch-norm statistic or spectral-norm vector moves."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            _, feat = net(torch.zeros(2, *shape))
    finally:
        net.train(was)
    return int(feat.shape[1])


def conditional_generator(net: nn.Module, n_classes: int) -> ConditionalGenerator:
    return ConditionalGenerator(net, n_classes)


def projection_discriminator(net: nn.Module, n_classes: int, shape: tuple[int, ...],
                             spectral: bool) -> ProjectionDiscriminator:
    """``net`` (built on the CPU, before it moves to the device) as a projection discriminator."""
    return ProjectionDiscriminator(net, n_classes, feature_size(net, shape), spectral)


def classes_of(net: nn.Module) -> int:
    """How many classes ``net`` is conditioned on (0: an unconditional net)."""
    return int(getattr(net, "n_classes", 0)) if isinstance(net, (ConditionalGenerator,
                                                                ProjectionDiscriminator)) else 0


def state_classes(state: Mapping[str, Tensor]) -> int:
    """The number of classes a conditional generator's ``state_dict`` was trained on (0 when it has no class
    embeddings): the rows of its class gains."""
    for key, value in state.items():
        if key.endswith("class_gain.weight"):
            return int(value.shape[0])
    return 0


def balanced_labels(n: int, n_classes: int, generator: torch.Generator | None = None,
                    device: torch.device | None = None) -> Tensor:
    """``n`` labels uniform over the classes and as balanced as ``n`` allows: random permutations of all classes
    laid end to end, so every class appears ``n // n_classes`` or one more times (and with fewer samples than
    classes, a random subset of them appears once). Metrics on such samples compare with an unconditional run's
    on a class-balanced dataset."""
    device = device or (generator.device if generator is not None else torch.device("cpu"))
    reps = -(-n // n_classes)
    perms = [torch.randperm(n_classes, generator=generator, device=device) for _ in range(reps)]
    return torch.cat(perms)[:n] if perms else torch.zeros(0, dtype=torch.long, device=device)


#: at most this many classes get a row of the sample grid
GRID_CLASSES = 10


def grid_labels(n_classes: int, size: int) -> tuple[Tensor, int]:
    """The labels of a conditional sample grid of about ``size`` samples and its row length: one row per class
    (the first ``GRID_CLASSES``, fewer when ``size`` is smaller: never more samples than ``size``), so each row
    shows what the generator makes of one class."""
    rows = max(1, min(n_classes, GRID_CLASSES, size))
    cols = max(1, size // rows)
    return torch.arange(rows).repeat_interleave(cols), cols


@dataclass(frozen=True)
class Labelled:
    """The labelled side of the real data a conditional GAN trains on: ``sample(n) -> (images, labels)``."""

    sample: Callable[[int], tuple[Tensor, Tensor]]
    n_classes: int


def check_enough(cfg: TrialConfig, k: int) -> None:
    """A conditional GAN needs two classes or more: a ``GantuneError`` naming what to change."""
    if k < 2:
        hint = " (put each class's images in its own subfolder of data.path)" if cfg.data.name == "folder" else ""
        found = "one class" if k == 1 else "no class labels"
        raise GantuneError(f"model.conditional: data {cfg.data.name!r} has {found}; a conditional GAN needs at "
                           f"least two{hint}")


def check_classes(cfg: TrialConfig) -> None:
    """``check_enough`` before a run starts, where the data's file names tell its classes (a folder's
    subfolders); other data is checked once it is loaded (``labelled_data``)."""
    k = known_classes(cfg.data) if cfg.model.conditional else None
    if k is not None:
        check_enough(cfg, k)


def labelled_data(cfg: TrialConfig, data: RealData) -> Labelled | None:
    """What ``GANTrainer`` needs of the data to train conditionally (``None`` for an unconditional config); a
    ``GantuneError`` naming what to change when the loaded data has fewer than two classes, or no images of a
    class below its highest (a ``max_images`` subset of a labelled set: that class would be learnt from nothing)."""
    if not cfg.model.conditional:
        return None
    k = data.n_classes
    check_enough(cfg, k)
    present = set() if data.labels is None or data.stack else set(data.labels.unique().tolist())
    if present and len(present) < k:
        missing = sorted(set(range(k)) - present)
        raise GantuneError(f"model.conditional: data {cfg.data.name!r} has images of {len(present)} of its {k} "
                           f"classes (none of class {', '.join(map(str, missing[:5]))}"
                           f"{', ...' if len(missing) > 5 else ''}), and a "
                           "conditional GAN needs images of every class" + (
                               "; raise data.max_images" if cfg.data.max_images is not None else ""))
    return Labelled(data.sample_labelled, k)
