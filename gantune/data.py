"""Real data for a trial: built-in 2-D mixtures and images, kept on the training device.

Exact definitions because results are compared with published tables: ring8 and grid25 follow PacGAN;
digits is scikit-learn's bundled 8x8 set scaled to [-1, 1], split once (``digits_split``): GANs train on the
train split, metrics compare against the held-out split. stacked_digits is stacked MNIST (VEEGAN, PacGAN) built
from those digits: three digits a sample, one per channel, 1,000 modes (``stack``). Nothing is downloaded unless the
config says
``download: true``. Folder and torchvision images are decoded once per search into a cached uint8 tensor
file (``$GANTUNE_CACHE_DIR``) and kept as uint8 on the device: a trial neither decodes them again nor holds
them in float32 (4x the memory); batches are converted as they are drawn.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gantune.config import DataConfig
from gantune.errors import DataError
from gantune.events import first_line
from gantune.registry import Registry
from gantune.rundir import cache_dir, cached

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TORCHVISION_DATASETS = ("CIFAR10", "MNIST", "FashionMNIST", "CelebA")
GREY_TORCHVISION = ("MNIST", "FashionMNIST")


@dataclass
class Mixture:
    """A mixture of isotropic Gaussians with equal weights, sampled on the fly."""

    means: torch.Tensor  # (K, 2)
    std: float


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

    def reference(self, n: int, seed: int = 12345) -> torch.Tensor:
        """A fixed set of real samples for metrics, the same for every trial of a search: from the held-out
        split when the dataset has one."""
        return self._fixed(n, seed, self.heldout if self.heldout is not None else self.images)

    def twin(self, n: int, seed: int = 54321) -> torch.Tensor:
        """A fixed set of ``n`` real training samples, scored like a generator's to give the real-vs-real floor
        of every metric (what a generator that reproduced the training data would get)."""
        return self._fixed(n, seed, self.images)

    def _fixed(self, n: int, seed: int, images: torch.Tensor | None) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.mixture is not None:
            k = torch.randint(len(self.mixture.means), (n,), generator=g)
            return self.mixture.means[k] + self.mixture.std * torch.randn(n, 2, generator=g)
        assert images is not None
        imgs = images.cpu()
        if self.stack:
            return as_float(stack(imgs, torch.randint(len(imgs), (n, self.stack), generator=g)))
        if n >= len(imgs):
            return as_float(imgs)
        return as_float(imgs[torch.randperm(len(imgs), generator=g)[:n]])

    def twin_labels(self, n: int, seed: int = 54321) -> torch.Tensor | None:
        """The class labels of ``twin(n, seed)``'s samples, drawn as ``_fixed`` draws them (None without
        labels): the real-vs-real floor of the conditional metrics."""
        if self.n_classes == 0 or self.images is None:
            return None
        assert self.labels is not None
        g = torch.Generator().manual_seed(seed)
        labels = self.labels.cpu()
        if self.stack:
            return stack_labels(labels, torch.randint(len(labels), (n, self.stack), generator=g))
        if n >= len(labels):
            return labels
        return labels[torch.randperm(len(labels), generator=g)[:n]]

    def get_state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)


Builder = Callable[[DataConfig], "tuple[Mixture | None, torch.Tensor | None, torch.Tensor | None]"]
HeldOut = Callable[[DataConfig], torch.Tensor]
Checker = Callable[[DataConfig], None]
Channels = Callable[[DataConfig], int]
#: whether a dataset's samples have class labels: True, False, or None when only loading the data tells
Labelled = Callable[[DataConfig], "bool | None"]
#: a dataset's class count as its file names tell it, before anything is decoded (0: no class labels)
Classes = Callable[[DataConfig], int]


@dataclass(frozen=True)
class Dataset:
    """A dataset by name: how to build it (its training images), whether it is 2-D points, the ``data`` fields
    it needs, its held-out images (the metrics' reference) when it has a split, a cheap ``check`` that the
    data is there (``DataError`` otherwise), run once before a search or a run starts, its own channel count
    (``data.channels`` overrides it) and ``stack``: how many one-channel images of its pool each sample stacks
    as its channels (0: the images are the samples); ``labelled``: whether its samples carry class labels (what
    ``model.conditional`` conditions on; ``None``: known once the data is loaded) and, for such a dataset,
    ``classes``: its class count from its file names (a folder's: its subfolders), checked before a run starts."""

    build: Builder
    points: bool = False
    needs: tuple[str, ...] = ()
    heldout: HeldOut | None = None
    check: Checker | None = None
    channels: Channels = lambda cfg: 3
    stack: int = 0
    labelled: Labelled = lambda cfg: False
    classes: Classes | None = None


DATASETS: Registry[Dataset] = Registry("dataset")


def dataset(name: str, points: bool = False, needs: tuple[str, ...] = (), heldout: HeldOut | None = None,
            check: Checker | None = None, channels: Channels | int = 3,
            stack: int = 0, labelled: Labelled | bool = False,
            classes: Classes | None = None) -> Callable[[Builder], Builder]:
    """Register a dataset builder (the config then accepts ``data.name: <name>``)."""
    count = channels if callable(channels) else (lambda cfg: channels)
    has_labels = labelled if callable(labelled) else (lambda cfg: labelled)

    def add(build: Builder) -> Builder:
        DATASETS.add(name, Dataset(build, points, needs, heldout, check, count, stack, has_labels, classes))
        return build

    return add


def check_data(cfg: DataConfig) -> None:
    """Fail with one ``DataError`` line when the configured data is not there, before anything is written: a
    search whose every trial would fail on it must not start. Datasets without a ``check`` pass, unless they stack
    images and the config asks for another channel count."""
    ds = DATASETS.get(cfg.name)
    _check_stack(cfg, ds)
    if ds.check is not None and all(getattr(cfg, field) for field in ds.needs):
        ds.check(cfg)


def _check_stack(cfg: DataConfig, ds: Dataset) -> None:
    """A stacked dataset has one channel per stacked image: its pool cannot be refitted to another count."""
    if ds.stack and channels_of(cfg) != ds.stack:
        raise DataError(f"data.channels: {cfg.name} stacks {ds.stack} images, one a channel; leave channels unset "
                        f"(got {cfg.channels})")


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


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float in [-1, 1] (float images pass through)."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images


def _fit(images: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """Resize (N, C, H, W) images in [-1, 1] to the configured resolution and channel count."""
    images = as_float(images)
    if cfg.channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif cfg.channels == 1 and images.shape[1] == 3:
        images = images.mean(dim=1, keepdim=True)
    if images.shape[-1] != cfg.resolution or images.shape[-2] != cfg.resolution:
        images = F.interpolate(images, size=(cfg.resolution, cfg.resolution), mode="bilinear",
                               align_corners=False, antialias=images.shape[-1] > cfg.resolution)
    return images.clamp(-1, 1).contiguous()


#: the digits' fixed split: a stratified 20% held out with scikit-learn's ``train_test_split`` (seed 0)
DIGITS_HELDOUT, DIGITS_SPLIT_SEED = 0.2, 0


def digits_split(part: str) -> tuple[np.ndarray, np.ndarray]:
    """One part (``train``: 1,437 digits, ``heldout``: 360) of scikit-learn's 1,797 8x8 digits, as
    ``(images in [-1, 1] of shape (N, 1, 8, 8), labels)``. GANs and the digits classifier train on ``train``;
    FID/KID/PRDC compare against ``heldout``, which neither has seen."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0 * 2 - 1)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, bunch.target.astype(np.int64), test_size=DIGITS_HELDOUT,
                                              stratify=bunch.target, random_state=DIGITS_SPLIT_SEED)
    return (x_tr, y_tr) if part == "train" else (x_te, y_te)


def _digits_heldout(cfg: DataConfig) -> torch.Tensor:
    return _fit(torch.from_numpy(digits_split("heldout")[0]), cfg)


@dataset("digits", heldout=_digits_heldout, channels=1, labelled=True)
def _digits(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor]:
    x, y = digits_split("train")
    x, y = x[: cfg.max_images], y[: cfg.max_images]  # the split is shuffled: the first N are a random subset
    return None, _fit(torch.from_numpy(x), cfg), torch.from_numpy(y)


#: digits a ``stacked_digits`` sample stacks, one a channel: 10^3 = 1,000 modes (stacked MNIST's)
STACKED_DIGITS = 3


def stack(pool: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """One-channel images ``(P, 1, H, W)`` stacked by ``draws`` ``(n, depth)`` of pool indices into samples
    ``(n, depth, H, W)``: channel j of sample i is image ``draws[i, j]``."""
    return pool[draws].flatten(1, 2)


def stack_labels(labels: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """A stacked sample's mode as one int: its channels' digit labels read as a decimal number, first channel
    first ((3, 0, 7) -> 307), so one label per sample as for the other datasets, 0 to 10^depth - 1."""
    weights = 10 ** torch.arange(draws.shape[1] - 1, -1, -1, device=draws.device)
    return (labels.to(draws.device)[draws] * weights).sum(dim=1)


def _digit_pool(part: str, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the digits at the configured resolution, one channel: the pool stacked digits draw from."""
    x, y = digits_split(part)
    return _fit(torch.from_numpy(x), DataConfig(**{**cfg.__dict__, "channels": 1})), torch.from_numpy(y)


def _stacked_heldout(cfg: DataConfig) -> torch.Tensor:
    return _digit_pool("heldout", cfg)[0]


@dataset("stacked_digits", heldout=_stacked_heldout, channels=STACKED_DIGITS, stack=STACKED_DIGITS, labelled=True)
def _stacked_digits(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor]:
    """Stacked MNIST from scikit-learn's digits: each sample is three digits drawn independently and uniformly
    with replacement from the train split's 1,437, one per channel (1,000 modes, 1,437^3 distinct samples), drawn
    fresh for every batch; the metrics' reference stacks the 360 held-out digits the same way (46.7 million
    distinct samples), so neither FID nor the mode count sees a training digit. The pool is the digits at the
    configured resolution, in [-1, 1]; labels are the pool's digit labels (``stack_labels`` gives a sample's
    mode)."""
    return None, *_digit_pool("train", cfg)


def _center_crop_resize(img: object, size: int) -> np.ndarray:
    from PIL import Image

    assert isinstance(img, Image.Image)
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))


def _to_nchw(arrays: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(arrays))
    return (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous()


def _decoded(ident: dict[str, Any], decode: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``decode()``'s uint8 images (and labels), cached under what identifies them: decoded once per search."""
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return cached(cache_dir() / f"data-{ident['name']}-{digest}.pt", decode)


def _image_files(cfg: DataConfig) -> tuple[Path, list[Path]]:
    """The folder's image files, in the order they are loaded (at most ``max_images``)."""
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise DataError(f"data.path: image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"data.path: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return root, files[: cfg.max_images]


def _eight_bit(im: Any) -> Any:
    """A single-channel image of more than 8 bits as 8-bit ``L``: PIL's ``convert`` clips 16-bit and 32-bit
    integers at 255 (a 16-bit ramp read as almost all white) and a float image's [0, 1] to black. 16-bit values
    scale by 1/257 (65,535 -> 255); a float image in [0, 1] by 255, one in [0, 255] stays; anything else has no
    known scale and is refused (``ValueError``). Modes ``I`` and ``F`` do not say their range, so it is read off
    each image: a 32-bit integer image whose values stay within 0-255 is taken as 8-bit, a float one within 0-1
    as [0, 1]."""
    from PIL import Image

    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im
    a = np.asarray(im, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{im.mode} image with non-finite pixel values")
    top = float(a.max(initial=0.0))
    if float(a.min(initial=0.0)) < 0 or (im.mode == "F" and top > 255) or top > 65535:
        raise ValueError(f"{im.mode} pixel values from {a.min():g} to {top:g} have no known scale (expected "
                         "8 or 16 bits, or floats in [0, 1] or [0, 255])")
    scale = (255.0 if top <= 1 else 1.0) if im.mode == "F" else (1 / 257 if im.mode != "I" or top > 255 else 1.0)
    return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8))


def _decode_image(f: Path, mode: str, resolution: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(f) as im:
            return _center_crop_resize(_eight_bit(im).convert(mode), resolution)
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise DataError(f"data.path: cannot read image {f}: {err}") from None


def _check_folder(cfg: DataConfig) -> None:
    """The folder exists, holds images, and the first one decodes."""
    _, files = _image_files(cfg)
    _decode_image(files[0], pil_mode(cfg), cfg.resolution)


def folder_labels(root: Path, files: list[Path]) -> torch.Tensor | None:
    """Class labels of a folder with one subfolder per class (as torchvision's ImageFolder: the index of the
    top-level subfolder in sorted order); ``None`` when an image lies directly under ``root``."""
    parts = [f.relative_to(root).parts for f in files]
    if any(len(p) < 2 for p in parts):
        return None
    index = {name: i for i, name in enumerate(sorted({p[0] for p in parts}))}
    return torch.tensor([index[p[0]] for p in parts])


def _folder_classes(cfg: DataConfig) -> int:
    labels = folder_labels(*_image_files(cfg))
    return 0 if labels is None else len(set(labels.tolist()))


@dataset("folder", needs=("path",), check=_check_folder, labelled=lambda cfg: None, classes=_folder_classes)
def _folder(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor | None]:
    root, files = _image_files(cfg)
    mode = pil_mode(cfg)

    def decode() -> dict[str, torch.Tensor]:
        return {"images": _to_nchw([_decode_image(f, mode, cfg.resolution) for f in files])}

    # an added, removed or rewritten file changes the key
    stats = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    # decode 2: images of more than 8 bits scaled, not clipped (a cache of the clipped ones is not reused)
    ident = {"name": "folder", "root": str(root.resolve()), "files": stats, "mode": mode, "res": cfg.resolution,
             "decode": 2}
    return None, _decoded(ident, decode)["images"], folder_labels(root, files)


def _torchvision_class(cfg: DataConfig) -> Any:
    if cfg.dataset not in TORCHVISION_DATASETS:
        raise DataError(f"data.dataset: {cfg.dataset!r} is not one of {', '.join(TORCHVISION_DATASETS)}")
    try:
        import torchvision
    except ImportError:
        raise DataError("data.name: torchvision datasets need torchvision (pip install 'gantune[torchvision]')") \
            from None
    return getattr(torchvision.datasets, cfg.dataset)


def _torchvision_dataset(cfg: DataConfig, download: bool) -> Any:
    root = Path(cfg.path or "")
    kwargs = {"split": "train"} if cfg.dataset == "CelebA" else {"train": True}
    try:
        return _torchvision_class(cfg)(root=str(root), download=download, **kwargs)
    except (RuntimeError, FileNotFoundError) as err:
        hint = "" if cfg.download else " (set data.download: true to fetch it)"
        raise DataError(f"data.path: {cfg.dataset} not found under {root}{hint}: {first_line(err)}") from None


def _check_torchvision(cfg: DataConfig) -> None:
    """torchvision is there and, unless the config asks to download the dataset, so is the dataset under
    ``path`` (opened, not decoded; nothing is downloaded here)."""
    if cfg.download:
        _torchvision_class(cfg)
    else:
        _torchvision_dataset(cfg, download=False)


@dataset("torchvision", needs=("path", "dataset"), check=_check_torchvision,
         channels=lambda cfg: 1 if cfg.dataset in GREY_TORCHVISION else 3,
         labelled=lambda cfg: cfg.dataset != "CelebA")  # CelebA's targets are attributes, not one class
def _torchvision(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor | None]:
    root = Path(cfg.path or "")
    ds = _torchvision_dataset(cfg, cfg.download)
    n = len(ds) if cfg.max_images is None else min(len(ds), cfg.max_images)
    mode = pil_mode(cfg)

    def decode() -> dict[str, torch.Tensor]:
        imgs, labels = [], []
        for i in range(n):
            img, label = ds[i]
            imgs.append(_center_crop_resize(img.convert(mode), cfg.resolution))
            labels.append(int(label) if isinstance(label, int) else -1)
        return {"images": _to_nchw(imgs), "labels": torch.tensor(labels)}

    ident = {"name": "torchvision", "dataset": cfg.dataset, "root": str(root.resolve()), "n": n, "mode": mode,
             "res": cfg.resolution}
    stored = _decoded(ident, decode)
    return None, stored["images"], stored["labels"]


def load_data(cfg: DataConfig, device: torch.device, seed: int) -> RealData:
    """Build the configured dataset on ``device``; errors name the config key to fix."""
    ds = DATASETS.get(cfg.name)
    _check_stack(cfg, ds)
    mixture, images, labels = ds.build(cfg)
    heldout = ds.heldout(cfg) if ds.heldout is not None else None
    fitted = DataConfig(**{**cfg.__dict__, "channels": channels_of(cfg)})
    if images is not None and not ds.stack and images.shape[1] != channels_of(cfg):
        images = _fit(images, fitted)
    if heldout is not None and not ds.stack and heldout.shape[1] != channels_of(cfg):
        heldout = _fit(heldout, fitted)
    return RealData(cfg.name, device, seed, mixture=mixture, images=images, labels=labels, heldout=heldout,
                    stack=ds.stack)


def is_labelled(cfg: DataConfig) -> bool | None:
    """Whether the configured dataset's samples carry class labels (``None``: known once it is loaded)."""
    return DATASETS.get(cfg.name).labelled(cfg)


def known_classes(cfg: DataConfig) -> int | None:
    """The dataset's class count where its file names tell it without decoding anything (a folder's top-level
    subfolders; 0: images directly under ``path``), else ``None``."""
    ds = DATASETS.get(cfg.name)
    return None if ds.classes is None or not all(getattr(cfg, f) for f in ds.needs) else ds.classes(cfg)


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
