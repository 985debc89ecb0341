"""scikit-learn's bundled 8x8 digits, split once (``digits_split``): GANs train on the train split, metrics compare
against the held-out one; and stacked MNIST (VEEGAN, PacGAN) built from them: three digits a sample, one per
channel, 1,000 modes (``gantune.data.core.stack``)."""

from __future__ import annotations

import numpy as np
import torch

from gantune.config import DataConfig
from gantune.data.core import _fit, dataset, subset_missing

#: the digits' fixed split: a stratified 20% held out with scikit-learn's ``train_test_split`` (seed 0)
DIGITS_HELDOUT, DIGITS_SPLIT_SEED = 0.2, 0
#: the digits' classes, 0 to 9
DIGITS_CLASSES = 10


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


def _digits_classes(cfg: DataConfig) -> int:
    """The digits' 10 classes (asked by conditional runs only): a ``max_images`` subset missing one is refused, as
    a folder's is; read off the loaded subset's labels, a subset of one 3 had "4 classes"."""
    labels = digits_split("train")[1][: cfg.max_images]
    missing = sorted(set(range(DIGITS_CLASSES)) - set(labels.tolist()))
    if missing:
        raise subset_missing(cfg, [str(k) for k in missing], DIGITS_CLASSES, "the digits'")
    return DIGITS_CLASSES


@dataset("digits", heldout=_digits_heldout, channels=1, labelled=True, classes=_digits_classes)
def _digits(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor]:
    x, y = digits_split("train")
    x, y = x[: cfg.max_images], y[: cfg.max_images]  # the split is shuffled: the first N are a random subset
    return None, _fit(torch.from_numpy(x), cfg), torch.from_numpy(y)


#: digits a ``stacked_digits`` sample stacks, one a channel: 10^3 = 1,000 modes (stacked MNIST's)
STACKED_DIGITS = 3


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
