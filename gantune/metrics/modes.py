"""Mode and class coverage: the collapse signals.

2-D mixtures follow PacGAN/VEEGAN: a sample is high quality (HQ) when it lies within 3 sigma (Euclidean) of
its nearest mean; a mode is covered when it has at least one HQ sample; ``mode_kl`` is the KL divergence of
the HQ samples' mode histogram from uniform. For an exact 2-D Gaussian, 1 - exp(-4.5) = 98.9% of samples
are within 3 sigma. Digits use the classifier's predicted classes, a class covered with at least a tenth of its
fair share of the samples (n / 10k: a stray misclassification is no class). Stacked digits (stacked MNIST:
VEEGAN, PacGAN) classify each channel: a sample's mode is its triple of digits, one of 1,000.
"""

from __future__ import annotations

import math

import torch

from gantune.config import TrialConfig
from gantune.data import DATASETS, channels_of, is_points
from gantune.metrics.base import CollapseSignal, Reference, Samples, Scorer, distances, family
from gantune.metrics.features import INCEPTION_CLASSES, built_in_extractor

#: classes of one channel of stacked digits: the digits classifier's
DIGIT_CLASSES = 10
#: gantune's extractors that give digit logits (10 a sample, or 10 a channel)
DIGIT_LOGITS = ("digits", "stacked_digits")
MODES_NEED = "the modes metric needs a 2-D mixture (ring8, grid25)"
CLASSES_NEED = "the classes metric needs a classifier extractor (digits, or a plugin's that gives class logits)"
CLASSES_IMAGENET = "the classes metric reads the data's classes: Inception's 1,008 ImageNet classes are not them"
CLASSES_STACKED = "the classes metric reads one class a sample: stacked digits have one a channel (use stacked_modes)"
CLASSES_PER_CHANNEL = ("the classes metric reads one class a sample: the stacked_digits extractor reads one a "
                       "channel (use eval.extractor: digits)")
STACKED_NEED = ("the stacked_modes metric needs stacked digits and per-channel digit logits (data stacked_digits, "
                "extractor stacked_digits)")


def stacked_channels(cfg: TrialConfig) -> bool:
    """Whether the config's samples are images of several channels read by the per-channel digits extractor."""
    return (built_in_extractor(cfg) == "stacked_digits" and not is_points(cfg.data)
            and channels_of(cfg.data) > 1)


def _fits_modes(cfg: TrialConfig) -> str | None:
    return None if is_points(cfg.data) else MODES_NEED


def _fits_classes(cfg: TrialConfig) -> str | None:
    extractor = built_in_extractor(cfg)
    if extractor is None:
        return None
    if stacked_channels(cfg):  # stacked_modes reads stacked digits; other images want the digits extractor
        return CLASSES_STACKED if DATASETS.get(cfg.data.name).stack else CLASSES_PER_CHANNEL
    return None if extractor in DIGIT_LOGITS else CLASSES_NEED


def _fits_stacked(cfg: TrialConfig) -> str | None:
    """Stacked digits' modes: a folder of photos read channel by channel as digits has none."""
    if built_in_extractor(cfg) is None:
        return None
    return None if stacked_channels(cfg) and DATASETS.get(cfg.data.name).stack else STACKED_NEED


def histogram_kl(counts: torch.Tensor) -> float:
    """KL(p || uniform) of a histogram; log K (one-bin collapse) when the histogram is empty."""
    k = counts.numel()
    total = counts.sum()
    if total == 0:
        return math.log(k)
    p = counts.double() / total
    nz = p > 0
    return float((p[nz] * (p[nz] * k).log()).sum())


@family("modes", keys=("modes", "mode_coverage", "hq", "mode_kl"), cheap=True,
        collapse=(CollapseSignal("mode_coverage", "min_coverage", "mode coverage", gate=("hq", "min_hq")),),
        higher=("modes", "mode_coverage", "hq"), lower=("mode_kl",), fits=_fits_modes)
def modes(ref: Reference) -> Scorer:
    if ref.means is None:
        raise ValueError(MODES_NEED)
    means = ref.means
    radius = 3 * ref.std
    k = len(means)

    def score(fake: Samples) -> dict[str, float]:
        dist, nearest = distances(fake.x, means).min(dim=1)
        hq = dist < radius
        counts = torch.bincount(nearest[hq], minlength=k)
        covered = int((counts > 0).sum())
        return {"modes": float(covered), "mode_coverage": covered / k, "hq": float(hq.float().mean()),
                "mode_kl": histogram_kl(counts)}

    return score


@family("classes", keys=("classes", "class_coverage", "class_kl"), cheap=True,
        collapse=(CollapseSignal("class_coverage", "min_coverage", "class coverage"),),
        higher=("classes", "class_coverage"), lower=("class_kl",), fits=_fits_classes)
def classes(ref: Reference) -> Scorer:
    if ref.depth > 1:
        raise ValueError(CLASSES_STACKED)
    if ref.logits is None:
        raise ValueError(CLASSES_NEED)
    k = ref.logits.shape[1]  # the classifier's classes: the digits' 10, or a plugin classifier's own
    if k == INCEPTION_CLASSES:
        raise ValueError(CLASSES_IMAGENET)

    def score(fake: Samples) -> dict[str, float]:
        assert fake.logits is not None
        counts = torch.bincount(fake.logits.argmax(dim=1), minlength=k)
        # a class counts as covered with at least a tenth of its fair share: stray misclassifications don't count
        covered = int((counts >= max(1.0, len(fake.logits) / (10 * k))).sum())
        return {"classes": float(covered), "class_coverage": covered / k, "class_kl": histogram_kl(counts)}

    return score


def attainable_modes(k: int, n: int) -> float:
    """Modes a generator that is exactly uniform over ``k`` covers on average with ``n`` samples:
    k (1 - (1 - 1/k)^n); 999.99 of 1,000 at the published 26,000 samples, 393 at 500."""
    return k * -math.expm1(n * math.log1p(-1 / k))


@family("stacked_modes", keys=("stacked_modes", "stacked_coverage", "stacked_kl", "stacked_channel_kl",
                                "stacked_confidence"), cheap=True,
        collapse=(CollapseSignal("stacked_coverage", "min_coverage", "stacked-digit mode coverage"),),
        higher=("stacked_modes", "stacked_coverage", "stacked_confidence"), lower=("stacked_kl", "stacked_channel_kl"),
        fits=_fits_stacked)
def stacked_modes(ref: Reference) -> Scorer:
    """Stacked MNIST's mode count and KL (VEEGAN, PacGAN), on the ``stacked_digits`` extractor's per-channel
    logits: each channel's digit is the classifier's argmax, a sample's mode the digits read first channel first
    (10^C modes for C channels: 1,000).

    ``stacked_modes``: modes with at least one sample (the published protocol draws 26,000; here whatever
    ``eval.n_samples`` is). ``stacked_kl``: sum of p ln(p / 10^-C) over the non-empty modes (natural log, the
    exact uniform reference); a uniform generator still reads about 999 / (2 n) from the finite sample (0.019
    at 26,000). ``stacked_coverage``: the modes over those an exactly uniform generator covers on average at this
    n (``attainable_modes``, capped at 1): the collapse signal, so that a quick check on few samples (500: at
    most 393 modes) does not read as a collapse; at 26,000 it is modes / 1,000. The classifier's misreadings
    (held-out accuracy 99.72% a digit, so about 0.9972^3 = 99.2% of real triples are read exactly) move samples
    between modes: stray modes around a collapsed generator's one, a little KL on real triples
    (``benchmarks/stacked_floor.py`` measures what real stacked digits score).

    Two keys say where a high KL comes from. ``stacked_channel_kl``: the sum over channels of each channel's digit
    histogram's KL from uniform over 10, which is exactly the part of ``stacked_kl`` that the channels' own digit
    frequencies explain (the rest is the channels' dependence, finite-sample noise included). ``stacked_confidence``:
    the classifier's mean top probability over the channels' digits (real held-out digits: about 0.99), low
    when generated digits are ambiguous. Ambiguous digits tend to be read as the same few digits, so an uneven
    channel histogram with low confidence points at sample quality, not at missing or dropped modes.
    """
    if ref.logits is None or ref.depth < 2:  # 10 logits a channel: ``load_reference`` checked
        raise ValueError(STACKED_NEED)
    depth = ref.depth
    k = DIGIT_CLASSES**depth

    def score(fake: Samples) -> dict[str, float]:
        assert fake.logits is not None
        logits = fake.logits.reshape(len(fake.logits), depth, DIGIT_CLASSES)
        digits = logits.argmax(dim=2)
        place = DIGIT_CLASSES ** torch.arange(depth - 1, -1, -1, device=digits.device)
        counts = torch.bincount((digits * place).sum(dim=1), minlength=k)
        covered = int((counts > 0).sum())
        return {"stacked_modes": float(covered),
                "stacked_coverage": min(1.0, covered / attainable_modes(k, len(digits))),
                "stacked_kl": histogram_kl(counts),
                "stacked_channel_kl": sum(histogram_kl(torch.bincount(digits[:, c], minlength=DIGIT_CLASSES))
                                          for c in range(depth)),
                "stacked_confidence": float(logits.float().softmax(dim=2).amax(dim=2).mean())}

    return score
