"""FID and KID on the evaluation device, on the extractor's features.

FID: the trace of the matrix square root of Sigma_real @ Sigma_fake equals that of the symmetric
R Sigma_fake R, with R = Sigma_real^(1/2). R is computed once per search from the real statistics (shared
through ``Reference.derived``), so an evaluation is one symmetric eigenvalue problem (``eigvalsh``, which runs on
the GPU) instead of torchmetrics' general ``eigvals`` on the CPU. Float64 throughout, like torchmetrics; the
tests check the two agree. KID is torchmetrics' polynomial-kernel MMD (``poly_mmd``) over random half-subsets
(``kid``), on the device, with its own seeded generator so that evaluation never moves the training RNG.
"""

from __future__ import annotations

import math

import torch

from gantune.metrics.base import Reference, Samples, Scorer, family

#: KID's random subsets per evaluation (torchmetrics' default is 100): 20 put its Monte Carlo error at 1/sqrt(20),
#: a fifth, of the sampling error at half-subsets (``kid``), for a fifth of the cost.
SUBSETS = 20
#: the largest subset: kernels of 1,000 x 1,000 (torchmetrics' default) bound the cost at any sample count
KID_SUBSET = 1000
KID_SEED = 0


def gaussian(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of the features, in float64."""
    x = feats.double()
    mu = x.mean(dim=0)
    d = x - mu
    return mu, d.T @ d / max(len(x) - 1, 1)


def psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (round-off negative eigenvalues clipped)."""
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def real_statistics(ref: Reference) -> dict[str, torch.Tensor]:
    mu, sigma = gaussian(ref.feats)
    return {"mu": mu, "root": psd_sqrt(sigma), "trace": sigma.trace()}


def frechet_distance(real: dict[str, torch.Tensor], feats: torch.Tensor) -> float:
    """FID between the real statistics (``real_statistics``) and these fake features."""
    mu, sigma = gaussian(feats)
    root = real["root"]
    m = root @ sigma @ root
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float((real["mu"] - mu).square().sum() + real["trace"] + sigma.trace() - 2 * tr_sqrt)


@family("fid", keys=("fid",), lower=("fid",))
def fid(ref: Reference) -> Scorer:
    real = ref.derived("fid", lambda: real_statistics(ref))

    def score(fake: Samples) -> dict[str, float]:
        return {"fid": frechet_distance(real, fake.feats)}

    return score


def kid_subset_size(n: int) -> int:
    """Subset size for ``n`` samples a side: half of them (delete-d jackknife, d = n/2), at most ``KID_SUBSET``."""
    return min(n // 2, KID_SUBSET)


@family("kid", keys=("kid", "kid_std"), lower=("kid",))
def kid(ref: Reference) -> Scorer:
    """KID over ``SUBSETS`` random subsets of m = min(n/2, ``KID_SUBSET``) reals and m fakes, drawn without
    replacement (n: the smaller side) so that torchmetrics' unbiased MMD estimator sees distinct samples (a
    bootstrap's duplicates would count k(x, x) as a cross-sample term and bias it upwards).

    ``kid`` is the mean over the subsets: a Monte Carlo estimate of the unbiased MMD^2 of all the samples (its
    mean over every pair of subsets is exactly that). ``kid_std`` is the standard error of ``kid``: from the
    subsets' spread s (ddof 1) by the delete-d jackknife (Shao & Wu 1989), SE^2 = s^2 (m / (n - m) + 1 / SUBSETS).
    The first term is the sampling error of the all-sample value between draws of n reals and n fakes (at
    m = n/2 half-samples spread just as much: factor 1), the second the Monte Carlo error of averaging
    ``SUBSETS`` subsets. It errs large where the MMD's quadratic term matters (equal distributions, subsets of a
    few hundred: 10-20% in the tests) and when the real side is the larger. Subsets of every sample (what this
    used up to 1,000, as torchmetrics with subset_size = n) are one set reordered: one value 20 times, std 0.

    The subsets come from a generator seeded with ``KID_SEED`` at every evaluation: the same subsets every
    time, and the training RNG never moves. Fewer than 4 samples a side: NaN (m < 2 has no pair to compare).
    """
    # imported here: torchmetrics pulls in scipy.signal, ~3 s of every trial process's start, for KID alone
    from torchmetrics.image.kid import poly_mmd

    real = ref.feats.float()  # float32 like torchmetrics' own use: float64 kernels cost 3x on a CPU
    if len(real) < 4:  # a folder of 3 images: every evaluation NaN, and the run ended "diverged" on bad input
        raise ValueError(f"kid needs 4 real samples or more (two a subset, half of them); the data has {len(real)}")

    def score(fake: Samples) -> dict[str, float]:
        f = fake.feats.float()
        n = min(len(real), len(f))
        m = kid_subset_size(n)
        if m < 2:
            return {"kid": math.nan, "kid_std": math.nan}
        gen = torch.Generator().manual_seed(KID_SEED)  # the same subsets at every evaluation
        values = torch.stack([
            poly_mmd(real[torch.randperm(len(real), generator=gen)[:m].to(ref.device)],
                     f[torch.randperm(len(f), generator=gen)[:m].to(ref.device)])
            for _ in range(SUBSETS)])
        se = values.std() * math.sqrt(m / (n - m) + 1 / SUBSETS)
        return {"kid": float(values.mean()), "kid_std": float(se)}

    return score
