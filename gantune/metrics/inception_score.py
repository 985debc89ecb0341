"""Inception Score (Salimans et al. 2016) on the extractor's classifier: IS = exp(E_x KL(p(y|x) || p(y))).

p(y|x) is the softmax of the class logits the extractor gives with its features: Inception-v3's 1,008 classes on
images (``logits_unbiased``, what torchmetrics' ``InceptionScore`` reads by default; the weights must be on disk,
else the config is refused at load), the digits classifier's 10 on digits, and on stacked digits the joint of the
channels' digits: the product of the channels' posteriors, a distribution over 10^C classes (1,000 for three
channels) read first channel first, as ``stacked_modes`` reads a triple. p(y) is the mean of p(y|x) over the
samples. Samples spread evenly over K classes, each read with certainty, score K (the maximum); one class, or
posteriors that say nothing, score 1.

The standard protocol: the samples in ``SPLITS`` splits, a score each, and their mean (``is``) and standard
deviation (``is_std``, ddof 1, as torchmetrics). The splits' sizes differ by one at most: torchmetrics' ``chunk``
makes the same splits when n is a multiple of 10, and at n = 91 nine of 10 and one of 1, which scores at most 1
(and n = 12 gets six splits). Like torchmetrics the samples are shuffled before splitting,
here with a generator seeded with ``IS_SEED`` at every evaluation (the same splits every time; the training RNG
never moves); in float64 with 0 log 0 = 0, where torchmetrics' float32 reads a certain posterior (a probability
that underflows to 0 in a class no sample of its split has) as NaN; the tests check the two agree otherwise.

A split of m samples scores at most m (the KL averages to a mutual information, at most log m), and p(y) from
few samples reads the classes unevenly: values at different ``eval.n_samples`` are different numbers, and the
1,000 classes of stacked digits need thousands of samples (the held-out stacks score about 92 at 1,000 samples,
760 at 26,000). Higher is better: an objective ``is`` is maximised. The reference samples' own value (the
held-out digits') is the evaluator's provenance ``reference_values``; the training samples' is the ``floor``.
"""

from __future__ import annotations

import math

import torch

from gantune.metrics.base import Reference, Samples, Scorer, family
from gantune.metrics.modes import DIGIT_CLASSES

#: splits of the standard protocol (Salimans et al.; torchmetrics' and torch-fidelity's default)
SPLITS = 10
IS_SEED = 0


def log_posteriors(logits: torch.Tensor, depth: int = 1) -> torch.Tensor:
    """log p(y|x) in float64: the softmax of ``logits`` (``depth`` 1), or for ``depth`` channels of
    ``DIGIT_CLASSES`` logits each the joint of their digits, log p(d1|x) + ... + log p(dC|x) over the 10^C
    triples, the first channel the most significant digit."""
    logits = logits.double()
    if depth == 1:
        return logits.log_softmax(dim=1)
    per = logits.reshape(len(logits), depth, DIGIT_CLASSES).log_softmax(dim=2)
    joint = per[:, 0]
    for c in range(1, depth):
        joint = (joint[:, :, None] + per[:, c, None, :]).flatten(1)
    return joint


def inception_score(logits: torch.Tensor, depth: int = 1, splits: int = SPLITS) -> tuple[float, float]:
    """(mean, std) over ``splits`` shuffled splits of exp(mean_x KL(p(y|x) || p(y))) (see the module's doc); the
    joint posteriors of stacked digits are built a split at a time (26,000 x 1,000 at once would be 200 MB).
    Fewer samples than splits: as many splits as samples; one split: std NaN."""
    order = torch.randperm(len(logits), generator=torch.Generator().manual_seed(IS_SEED)).to(logits.device)
    scores = []
    for chunk in logits[order].tensor_split(min(splits, len(logits))):  # sizes differ by one at most
        log_p = log_posteriors(chunk, depth)
        log_py = torch.logsumexp(log_p, dim=0) - math.log(len(log_p))
        p = log_p.exp()
        kl = torch.where(p > 0, p * (log_p - log_py), 0.0).sum(dim=1)  # 0 log 0 = 0 (one-hot posteriors)
        scores.append(kl.mean().exp())
    values = torch.stack(scores)
    return float(values.mean()), float(values.std()) if len(values) > 1 else math.nan


@family("is", keys=("is", "is_std"), higher=("is",), one_sample=True, logits=True)
def inception_score_family(ref: Reference) -> Scorer:
    if ref.logits is None:
        raise ValueError("the is metric needs class posteriors: the digits or stacked_digits extractor, or "
                         "inception (with its weights on disk)")
    depth = ref.depth  # 1, or one digit a channel (stacked digits)

    def score(fake: Samples) -> dict[str, float]:
        assert fake.logits is not None
        mean, std = inception_score(fake.logits, depth)
        return {"is": mean, "is_std": std}

    return score
