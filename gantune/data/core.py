"""The core of ``gantune.data``: the real data a trial draws from (``RealData``), the dataset registry and what
the rest of gantune asks of a config's data (its shape, channels, labels, whether it is there). The built-in
datasets register themselves from ``points``, ``digits`` and ``images``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gantune.config import DataConfig
from gantune.errors import DataError
from gantune.registry import Registry


@dataclass
class Mixture:
    """A mixture of isotropic Gaussians with equal weights, sampled on the fly."""

    means: torch.Tensor  # (K, 2)
    std: float


#: the seeds of the metrics' reference draw and of the real-vs-real floor's (``RealData.reference``, ``twin``)
REFERENCE_SEED, TWIN_SEED = 12345, 54321


class RealData:
    """Samples of the real distribution, drawn with a seeded generator on the training device.

    Points are drawn fresh from the mixture each batch (an infinite dataset); images are a tensor held on
    the device and indexed at random, so a training step never waits on a data loader. A stacked dataset
    (``stack`` > 0) holds a pool of one-channel images and composes each sample from ``stack`` of them drawn
    independently, uniformly with replacement, one per channel (``stack``): its every batch is fresh draws too.
    """

    def __init__(self, name: str, device: torch.device, seed: int, *, mixture: Mixture | None = None,
                 images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 heldout: torch.Tensor | None = None, stack: int = 0) -> None:
        """``images``: float in [-1, 1], or uint8 in [0, 255] (kept so, converted per batch); with ``stack``, the
        one-channel pool a sample stacks ``stack`` of (``labels`` are then the pool's). ``heldout``: real images no
        trial trains on (with ``stack``, the held-out pool), the metrics' reference when the dataset has them."""
        self.name = name
        self.stack = stack
        self.device = device
        self.mixture = mixture
        self.images = images.to(device) if images is not None else None
        self.labels = labels
        self._labels: torch.Tensor | None = None  # on the device, when a conditional GAN first asks
        self.heldout = heldout
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        if mixture is not None:
            self._means = mixture.means.to(device)

    @property
    def is_points(self) -> bool:
        return self.mixture is not None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(2,)`` or ``(C, H, W)``."""
        if self.images is None:
            return (2,)
        return (self.stack, *self.images.shape[2:]) if self.stack else tuple(self.images.shape[1:])

    def __len__(self) -> int:
        """How many distinct training samples there are (a stacked dataset: every ordered choice from the pool)."""
        return 0 if self.images is None else int(self.images.shape[0]) ** max(self.stack, 1)

    @property
    def n_classes(self) -> int:
        """Classes a conditional GAN can condition on: labels 0 to K - 1 (a stacked dataset: 10^stack, its
        samples' labels read as decimal numbers); 0 without labels, or with unknown ones (-1)."""
        if self.labels is None or self.labels.numel() == 0 or int(self.labels.min()) < 0:
            return 0
        return 10**self.stack if self.stack else int(self.labels.max()) + 1

    def sample_labelled(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of ``n`` real samples with their class labels, on the device (a dataset with labels only)."""
        assert self.images is not None and self.labels is not None
        if self._labels is None:
            self._labels = self.labels.to(self.device)
        if self.stack:
            draws = torch.randint(self.images.shape[0], (n, self.stack), generator=self.gen, device=self.device)
            return as_float(stack(self.images, draws)), stack_labels(self._labels, draws)
        idx = torch.randint(self.images.shape[0], (n,), generator=self.gen, device=self.device)
        return as_float(self.images[idx]), self._labels[idx]

    def sample(self, n: int) -> torch.Tensor:
        """A batch of ``n`` real samples on the device."""
        if self.mixture is not None:
            k = torch.randint(len(self._means), (n,), generator=self.gen, device=self.device)
            noise = torch.randn(n, 2, generator=self.gen, device=self.device)
            return self._means[k] + self.mixture.std * noise
        assert self.images is not None
        if self.stack:
            draws = torch.randint(self.images.shape[0], (n, self.stack), generator=self.gen, device=self.device)
            return as_float(stack(self.images, draws))
        idx = torch.randint(self.images.shape[0], (n,), generator=self.gen, device=self.device)
        return as_float(self.images[idx])

    @property
    def reference_split(self) -> str:
        """Where the metrics' reference comes from: ``heldout`` images, fresh ``draws`` of a mixture, or the
        ``train`` images themselves (a dataset without a held-out split: its metrics flatter memorisation)."""
        return "draws" if self.mixture is not None else "heldout" if self.heldout is not None else "train"

    @property
    def reference_size(self) -> int:
        """How many distinct reference samples there are (unbounded for a mixture)."""
        return (2**62 if self.mixture is not None else len(self.heldout) ** max(self.stack, 1)
                if self.heldout is not None else len(self))

    def reference(self, n: int, seed: int = REFERENCE_SEED) -> torch.Tensor:
        """A fixed set of real samples for metrics, the same for every trial of a search: from the held-out
        split when the dataset has one."""
        return self._fixed(n, seed, self.heldout if self.heldout is not None else self.images)

    def twin(self, n: int, seed: int = TWIN_SEED) -> torch.Tensor | None:
        """A fixed set of ``n`` real training samples, scored like a generator's to give the real-vs-real floor
        of every metric (what a generator that drew fresh samples of the training data would get). Where the
        reference is the training images themselves (a folder, torchvision data) they are drawn from the images
        outside the reference, and there is no floor (``None``) when fewer than ``n`` lie outside it: the floor
        scored the reference's own images, FID 0 once ``n`` reached the folder's size."""
        if not self._twin_apart():
            return self._fixed(n, seed, self.images)
        index = self._apart_index(n, seed)
        assert self.images is not None
        return None if index is None else as_float(self.images.cpu()[index])

    def _twin_apart(self) -> bool:
        """Whether the twin is drawn apart from the reference: plain images without a held-out split."""
        return self.mixture is None and self.heldout is None and not self.stack

    def _apart_index(self, n: int, seed: int) -> torch.Tensor | None:
        """``n`` seeded indices of training images outside ``reference(min(n, len(self)))``, ``None`` when fewer
        than ``n`` are (the Evaluator's reference has ``n`` samples, or all there are)."""
        count = len(self)
        if 2 * n > count:
            return None
        inside = torch.zeros(count, dtype=torch.bool)
        inside[self._pick(n, REFERENCE_SEED, count)] = True
        outside = torch.arange(count)[~inside]
        return outside[self._pick(n, seed, len(outside))]

    @staticmethod
    def _pick(n: int, seed: int, count: int) -> torch.Tensor:
        """The indices ``_fixed`` draws: ``n`` of ``count`` (all of them when ``n >= count``) in a seeded order.
        Never file order: a folder's sorted paths group its classes, and a metric that reads a prefix of the
        reference (the diversity ratio's first 1,000) would see the first classes only."""
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n]

    def _fixed(self, n: int, seed: int, images: torch.Tensor | None) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.mixture is not None:
            k = torch.randint(len(self.mixture.means), (n,), generator=g)
            return self.mixture.means[k] + self.mixture.std * torch.randn(n, 2, generator=g)
        assert images is not None
        imgs = images.cpu()
        if self.stack:
            return as_float(stack(imgs, torch.randint(len(imgs), (n, self.stack), generator=g)))
        return as_float(imgs[self._pick(n, seed, len(imgs))])

    def twin_labels(self, n: int, seed: int = TWIN_SEED) -> torch.Tensor | None:
        """The class labels of ``twin(n, seed)``'s samples, drawn as it draws them (None without labels, or
        without a twin): the real-vs-real floor of the conditional metrics."""
        if self.n_classes == 0 or self.images is None:
            return None
        assert self.labels is not None
        labels = self.labels.cpu()
        if self.stack:
            g = torch.Generator().manual_seed(seed)
            return stack_labels(labels, torch.randint(len(labels), (n, self.stack), generator=g))
        index = self._apart_index(n, seed) if self._twin_apart() else self._pick(n, seed, len(labels))
        return None if index is None else labels[index]


def stack(pool: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """One-channel images ``(P, 1, H, W)`` stacked by ``draws`` ``(n, depth)`` of pool indices into samples
    ``(n, depth, H, W)``: channel j of sample i is image ``draws[i, j]``."""
    return pool[draws].flatten(1, 2)


def stack_labels(labels: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """A stacked sample's mode as one int: its channels' digit labels read as a decimal number, first channel
    first ((3, 0, 7) -> 307), so one label per sample as for the other datasets, 0 to 10^depth - 1."""
    weights = 10 ** torch.arange(draws.shape[1] - 1, -1, -1, device=draws.device)
    return (labels.to(draws.device)[draws] * weights).sum(dim=1)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [-1, 1] (float images as float32: a plugin's float64 failed the first layer)."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


#: ITU-R 601 luma, as PIL's ``convert("L")`` weighs RGB (what a folder's colour images become in one channel)
LUMA = (0.299, 0.587, 0.114)


def _fit(images: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """Resize (N, C, H, W) images in [-1, 1] to the configured resolution and channel count, as a folder's images
    are read: one channel of colour by luma (a plain mean read pure green as -0.33, PIL's L as 0.18), and a
    non-square image cropped to its centre square (stretched before)."""
    images = as_float(images)
    if cfg.channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif cfg.channels == 1 and images.shape[1] == 3:
        images = (images * images.new_tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    h, w = images.shape[-2:]
    if h != w:
        side = min(h, w)
        images = images[..., (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    if images.shape[-1] != cfg.resolution or images.shape[-2] != cfg.resolution:
        images = F.interpolate(images, size=(cfg.resolution, cfg.resolution), mode="bilinear",
                               align_corners=False, antialias=images.shape[-1] > cfg.resolution)
    return images.clamp(-1, 1).contiguous()


Builder = Callable[[DataConfig], "tuple[Mixture | None, torch.Tensor | None, torch.Tensor | None]"]
HeldOut = Callable[[DataConfig], torch.Tensor]
Checker = Callable[[DataConfig], None]
Channels = Callable[[DataConfig], int]
#: whether a dataset's samples have class labels: True, False, or None when only loading the data tells
Labelled = Callable[[DataConfig], "bool | None"]
#: a dataset's class count as its file names tell it, before anything is decoded (0: no class labels)
Classes = Callable[[DataConfig], int]
#: what a dataset's files are, without decoding them: ``{"images": count, "digest": ...}``
Listing = Callable[[DataConfig], "dict[str, Any]"]
#: what a run on the dataset as configured should be told before it starts (a folder of greyscale images as RGB)
Notes = Callable[[DataConfig], "list[str]"]


@dataclass(frozen=True)
class Dataset:
    """A dataset by name: how to build it (its training images), whether it is 2-D points, the ``data`` fields
    it needs, its held-out images (the metrics' reference) when it has a split, a cheap ``check`` that the
    data is there (``DataError`` otherwise), run once before a search or a run starts, its own channel count
    (``data.channels`` overrides it) and ``stack``: how many one-channel images of its pool each sample stacks
    as its channels (0: the images are the samples); ``labelled``: whether its samples carry class labels (what
    ``model.conditional`` conditions on; ``None``: known once the data is loaded) and, for such a dataset,
    ``classes``: its class count from its file names (a folder's: its subfolders), checked before a run starts;
    ``listing``: what its files are (a folder's: their names and sizes), which a resumed run must still find;
    ``notes``: warnings about the data as configured, said before a run or a search starts."""

    build: Builder
    points: bool = False
    needs: tuple[str, ...] = ()
    heldout: HeldOut | None = None
    check: Checker | None = None
    channels: Channels = lambda cfg: 3
    stack: int = 0
    labelled: Labelled = lambda cfg: False
    classes: Classes | None = None
    listing: Listing | None = None
    notes: Notes | None = None


DATASETS: Registry[Dataset] = Registry("dataset")


def dataset(name: str, points: bool = False, needs: tuple[str, ...] = (), heldout: HeldOut | None = None,
            check: Checker | None = None, channels: Channels | int = 3,
            stack: int = 0, labelled: Labelled | bool = False,
            classes: Classes | None = None, listing: Listing | None = None,
            notes: Notes | None = None) -> Callable[[Builder], Builder]:
    """Register a dataset builder (the config then accepts ``data.name: <name>``)."""
    count = channels if callable(channels) else (lambda cfg: channels)
    has_labels = labelled if callable(labelled) else (lambda cfg: labelled)

    def add(build: Builder) -> Builder:
        DATASETS.add(name, Dataset(build, points, needs, heldout, check, count, stack, has_labels, classes,
                                     listing, notes))
        return build

    return add


def check_data(cfg: DataConfig) -> None:
    """Fail with one ``DataError`` line when the configured data is not there, before anything is written: a
    search whose every trial would fail on it must not start. Datasets without a ``check`` pass, unless they stack
    images and the config asks for another channel count."""
    ds = DATASETS.get(cfg.name)
    _check_stack(cfg)
    if ds.check is not None and all(getattr(cfg, field) for field in ds.needs):
        ds.check(cfg)


def decode_ahead(cfg: DataConfig) -> None:
    """Build a dataset of files (one with a ``listing``: a folder) now, into its cache: its ``check`` decodes one
    file, so a broken one further on failed every trial of a search as each loaded the data (and each paid the
    decode up to it). Run once by a search before its trials start; they then read the cache."""
    ds = DATASETS.get(cfg.name)
    if ds.listing is not None and all(getattr(cfg, f) for f in ds.needs):
        ds.build(cfg)


def stack_problem(cfg: DataConfig) -> str | None:
    """A stacked dataset has one channel per stacked image: its pool cannot be refitted to another count."""
    ds = DATASETS.get(cfg.name)
    if ds.stack and channels_of(cfg) != ds.stack:
        return f"data.channels: {cfg.name} stacks {ds.stack} images, one a channel; leave channels unset " \
               f"(got {cfg.channels})"
    return None


def _check_stack(cfg: DataConfig) -> None:
    if (problem := stack_problem(cfg)) is not None:
        raise DataError(problem)


def _check_built(name: str, ds: Dataset, mixture: Any, images: Any, heldout: Any, labels: Any = None) -> None:
    """What a dataset's builder returned is what its kind needs (a plugin's wrong shape failed deep in torch, a
    traceback; its pixels in [0, 255] trained as they were): 2-D points a ``Mixture``; images ``(N, C, H, W)``
    tensors of 1 or 3 channels, uint8 or floats in [-1, 1]; labels one whole number per image."""
    if ds.points:
        if not isinstance(mixture, Mixture):
            raise DataError(f"data.name: dataset {name!r} is 2-D points, and its builder returned "
                            f"{type(mixture).__name__} for the mixture: expected a gantune.data.Mixture")
        return
    for what, t in [("images", images), *([("held-out images", heldout)] if heldout is not None else [])]:
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or (t.shape[1] not in (1, 3) and not ds.stack) \
                or min(t.shape) == 0:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise DataError(f"data.name: dataset {name!r} returned {what} of shape {shape}: expected a tensor "
                            "(N, C, H, W) with 1 or 3 channels, values in [-1, 1]")
        # a float64 tensor failed the first convolution (a traceback); pixels in [0, 255] trained as they were
        if t.dtype != torch.uint8 and not t.is_floating_point():
            raise DataError(f"data.name: dataset {name!r} returned {what} of dtype {t.dtype}: expected uint8 "
                            "pixels or floats in [-1, 1]")
        if t.is_floating_point():
            low, high = (float(v) for v in t.aminmax())  # no copy of the images (abs() made one)
            if not -1 - 1e-3 <= low <= high <= 1 + 1e-3:  # NaN fails it too
                raise DataError(f"data.name: dataset {name!r} returned {what} with values from {low:g} to "
                                f"{high:g}: expected floats in [-1, 1] (or uint8 pixels)")
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype == torch.bool
                               or labels.is_floating_point() or labels.is_complex() or len(labels) != len(images)):
        got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else \
            type(labels).__name__
        raise DataError(f"data.name: dataset {name!r} returned labels {got} for {len(images)} images: expected "
                        "one whole-number class a image, a 1-D tensor")
    if labels is not None and len(labels) and int(labels.min()) < 0 and not bool((labels == -1).all()):
        # one negative label read the whole set as unlabelled: "has no class labels" of a labelled dataset
        raise DataError(f"data.name: dataset {name!r} returned labels from {int(labels.min())} to "
                        f"{int(labels.max())}: expected classes 0 to K - 1 (or -1 for every image: labels unknown)")


def load_data(cfg: DataConfig, device: torch.device, seed: int) -> RealData:
    """Build the configured dataset on ``device``; errors name the config key to fix."""
    ds = DATASETS.get(cfg.name)
    _check_stack(cfg)
    mixture, images, labels = ds.build(cfg)
    heldout = ds.heldout(cfg) if ds.heldout is not None else None
    _check_built(cfg.name, ds, mixture, images, heldout, labels)
    if labels is not None:
        labels = labels.long()  # uint8 or int16 classes failed D's class embedding mid-training
    fitted = DataConfig(**{**cfg.__dict__, "channels": channels_of(cfg)})
    want = (channels_of(cfg), cfg.resolution, cfg.resolution)
    # to data.resolution too (a plugin's builder gets no resizing of its own: 16-px images under resolution 8
    # were read by the 8-px critic as 25 samples each, and under 32 failed in a convolution, a traceback)
    if images is not None and not ds.stack and tuple(images.shape[1:]) != want:
        images = _fit(images, fitted)
    if heldout is not None and not ds.stack and tuple(heldout.shape[1:]) != want:
        heldout = _fit(heldout, fitted)
    return RealData(cfg.name, device, seed, mixture=mixture, images=images, labels=labels, heldout=heldout,
                    stack=ds.stack)


def is_labelled(cfg: DataConfig) -> bool | None:
    """Whether the configured dataset's samples carry class labels (``None``: known once it is loaded)."""
    return DATASETS.get(cfg.name).labelled(cfg)


def mixture_means(cfg: DataConfig) -> torch.Tensor | None:
    """The true means of a 2-D mixture dataset, which plots of a generator's points draw beside them (a plugin's
    too: a table of the built-in ones left them out); ``None`` for image data."""
    if not DATASETS.get(cfg.name).points:
        return None
    mixture = DATASETS.get(cfg.name).build(cfg)[0]
    return None if mixture is None else mixture.means


def subset_missing(cfg: DataConfig, missing: list[str], total: int, whose: str) -> DataError:
    """The refusal of a conditional run on a ``max_images`` subset without images of some class: the generator
    would learn that class from nothing."""
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return DataError(f"data.max_images: its subset of {cfg.max_images} leaves out {len(missing)} of {whose} {total} "
                     f"classes ({shown}), and a conditional GAN needs images of every class; raise data.max_images")


def known_classes(cfg: DataConfig) -> int | None:
    """The dataset's class count where its file names tell it without decoding anything (a folder's top-level
    subfolders; 0: images directly under ``path``), else ``None``."""
    ds = DATASETS.get(cfg.name)
    return None if ds.classes is None or not all(getattr(cfg, f) for f in ds.needs) else ds.classes(cfg)


def data_listing(cfg: DataConfig) -> dict[str, Any] | None:
    """What the configured dataset's files are (``Dataset.listing``); ``None`` for one that lists none."""
    ds = DATASETS.get(cfg.name)
    return None if ds.listing is None or not all(getattr(cfg, f) for f in ds.needs) else ds.listing(cfg)


def listing_change(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How a folder changed between two ``data_listing`` readings, in a few words; ``None`` when it did not."""
    if now == then:
        return None
    return (f"{then.get('images')} images then, {now.get('images')} now" if then.get("images") != now.get("images")
            else f"{now.get('images')} images then and now, other names or sizes")


def data_notes(cfg: DataConfig) -> list[str]:
    """What to say of the configured data before a run starts (``Dataset.notes``)."""
    ds = DATASETS.get(cfg.name)
    return [] if ds.notes is None or not all(getattr(cfg, f) for f in ds.needs) else ds.notes(cfg)


def data_label(cfg: DataConfig) -> str:
    """Which data a config trains on and is scored against, in a few words (``grid25``, ``folder /data/cats``,
    ``torchvision CIFAR10 /data``): trials on other data were measured differently. Only what the dataset reads:
    2-D points are drawn (and stacked digits from the whole pool), so a ``max_images`` searched beside them told
    trials on the same data apart (the ranking then kept only the newest trial's "data")."""
    loaded = not is_points(cfg) and not DATASETS.get(cfg.name).stack  # stacked samples are drawn from all the pool
    parts = [cfg.name, cfg.dataset, cfg.path, f"max_images {cfg.max_images}" if loaded and cfg.max_images else None]
    return " ".join(str(p) for p in parts if p)


def measured_on(cfg: DataConfig) -> str:
    """``data_label`` and, for images, the resolution: what a trial's values depend on of its data, as the ranking
    compares it (``gantune.provenance`` records both), so a space whose trials differ in either is told so."""
    return data_label(cfg) + ("" if is_points(cfg) else f" at {cfg.resolution} px")


def is_points(cfg: DataConfig) -> bool:
    """Whether the configured dataset is 2-D points (else images)."""
    return DATASETS.get(cfg.name).points


def channels_of(cfg: DataConfig) -> int:
    """Configured channel count, else the dataset's own (greyscale sets have 1)."""
    if cfg.channels is not None:
        return cfg.channels
    return DATASETS.get(cfg.name).channels(cfg)


def pil_mode(cfg: DataConfig) -> str:
    """The PIL mode images are converted to before decoding: greyscale or RGB, by the channel count."""
    return "L" if channels_of(cfg) == 1 else "RGB"


def data_shape(cfg: DataConfig) -> tuple[int, ...]:
    """Shape of one sample, without loading the data (for building networks)."""
    return (2,) if is_points(cfg) else (channels_of(cfg), cfg.resolution, cfg.resolution)
