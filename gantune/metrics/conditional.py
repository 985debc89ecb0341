"""Whether a class-conditional generator (``model.conditional``) makes the class it is asked for.

The digits classifier reads each generated sample; the sample's conditioning label is what it should read. On
stacked digits a label is a triple of digits (``gantune.data.stack_labels``: 307 is 3, 0, 7 first channel first)
and a sample reads as its label only when all three channels do.
"""

from __future__ import annotations

import torch

from gantune.config import TrialConfig
from gantune.data import DATASETS, channels_of, known_classes
from gantune.errors import DataError
from gantune.metrics.base import Reference, Samples, Scorer, family
from gantune.metrics.features import built_in_extractor
from gantune.metrics.modes import DIGIT_CLASSES, DIGIT_LOGITS, stacked_channels

COND_NEED = "the conditional metric needs a classifier extractor (digits, stacked_digits)"

#: a class counts as covered when at least this share of the samples generated for it reads as it
COND_HIT = 0.5


def predicted_classes(logits: torch.Tensor, depth: int) -> torch.Tensor:
    """The classifier's class per sample: the argmax, or with ``depth`` channels of per-channel digit logits, the
    channels' digits read as a decimal number (first channel first), as stacked labels are."""
    if depth == 1:
        return logits.argmax(dim=1)
    digits = logits.reshape(len(logits), depth, DIGIT_CLASSES).argmax(dim=2)
    return (digits * DIGIT_CLASSES ** torch.arange(depth - 1, -1, -1, device=digits.device)).sum(dim=1)


def _fits_conditional(cfg: TrialConfig) -> str | None:
    """A digit classifier reads the class a sample was made for (Inception's ImageNet classes are not the data's
    labels, 2-D points' coordinates are no classes)."""
    extractor = built_in_extractor(cfg)
    if extractor is None:
        return None
    if extractor not in DIGIT_LOGITS:
        return COND_NEED
    digits = DIGIT_CLASSES ** (channels_of(cfg.data) if stacked_channels(cfg) else 1)
    stack = DATASETS.get(cfg.data.name).stack  # stacked digits' labels are their digits read as one number
    try:  # a folder's subfolders; a config read where its data is not (to sample its generator) is not judged
        classes = DIGIT_CLASSES**stack if stack else known_classes(cfg.data)
    except DataError:
        classes = None
    if classes is not None and classes != digits:
        return (f"the conditional metric reads the digit classifier's class as the label a sample was made for: "
                f"this data's {classes} classes are not its {digits}")
    return None


@family("conditional", keys=("cond_accuracy", "cond_class_coverage"), cheap=True,
        higher=("cond_accuracy", "cond_class_coverage"), fits=_fits_conditional)
def conditional(ref: Reference) -> Scorer:
    """``cond_accuracy``: the share of generated samples the classifier reads as the class they were generated
    for (chance: 1 / classes). ``cond_class_coverage``: the share of the classes sampled in this evaluation
    (every class when there are at least as many samples as classes: the labels are balanced) for which at least
    ``COND_HIT`` (half) of the samples generated for that class read as it, so a generator that makes the right
    class for some labels and ignores the others scores the share it gets right. Both are 0 to 1, higher is
    better, and need the labels the samples were generated for (a conditional run's evaluations carry them; the
    real-vs-real floor uses the real samples' own labels)."""
    if ref.logits is None:
        raise ValueError(COND_NEED)
    depth = ref.depth

    def score(fake: Samples) -> dict[str, float]:
        if fake.labels is None or fake.logits is None or len(fake.labels) == 0:
            return {}
        labels = fake.labels.to(fake.logits.device)
        hit = predicted_classes(fake.logits, depth) == labels
        k = int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=k)
        hits = torch.bincount(labels[hit], minlength=k)
        sampled = counts > 0
        covered = sampled & (hits >= COND_HIT * counts)
        return {"cond_accuracy": float(hit.float().mean()),
                "cond_class_coverage": float(covered.sum()) / max(int(sampled.sum()), 1)}

    return score
