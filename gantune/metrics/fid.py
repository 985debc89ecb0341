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
    """Subset size for ``n`` samples a side: half of them, at most ``KID_SUBSET`` (subsets of every sample are one
    set reordered; half-subsets differ, so their mean averages over many)."""
    return min(n // 2, KID_SUBSET)


def _zetas(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Unbiased estimates of the first- and second-order variance components (zeta_1, zeta_2) of the MMD^2
    U-statistic with the cubic polynomial kernel, from m reals ``x`` paired with m fakes ``y`` (m >= 4), in
    float64. With h the U-statistic's kernel on the pairs z_i = (x_i, y_i), zeta_1 = E[h_ij h_ik] - (E h)^2 and
    zeta_2 = E[h_ij^2] - (E h)^2, each expectation averaged over distinct indices only, so each is unbiased. The
    sums of Sutherland et al. 2017 that this replaced read zeta_1 low: by about 2 zeta_2 / m^2 where the
    distributions match (a variance (1 - 4/m)x the true one), and the variance 0.68x on the digits classifier's
    features (``benchmarks/kid_std.py``). The kernel is torchmetrics' own, the one ``poly_mmd`` scores with."""
    from torchmetrics.image.kid import poly_kernel  # imported here, as poly_mmd (scipy.signal's start-up cost)

    x, y = x.double(), y.double()
    m = len(x)
    kxy = poly_kernel(x, y)
    h = poly_kernel(x, x) + poly_kernel(y, y) - kxy - kxy.T
    h.fill_diagonal_(0)
    rows = h.sum(1)
    total, squares, row_squares = float(rows.sum()), float((h * h).sum()), float(rows @ rows)
    # E[h_ij h_kl] over four distinct indices: all products, less those sharing a pair or one index (total * total:
    # a float's ** raises OverflowError past 1e308 where * gives inf, and the trial failed where it had diverged)
    mean_sq = (total * total + 2 * squares - 4 * row_squares) / (m * (m - 1) * (m - 2) * (m - 3))
    zeta1 = (row_squares - squares) / (m * (m - 1) * (m - 2)) - mean_sq
    zeta2 = squares / (m * (m - 1)) - mean_sq
    return zeta1, zeta2


def mmd_variance(zeta1: float, zeta2: float, k: float) -> float:
    """The variance of the MMD^2 U-statistic of k reals and k fakes: 4 (k-2) / (k (k-1)) zeta_1 + 2 / (k (k-1))
    zeta_2. Its second term is what makes it right where the distributions match (zeta_1 = 0, the statistic
    degenerate: a variance in 1/k^2), where a rule in 1/k (the delete-d jackknife this replaced) was 1.5-3x large."""
    return 4 * (k - 2) / (k * (k - 1)) * zeta1 + 2 / (k * (k - 1)) * zeta2


@family("kid", keys=("kid", "kid_std"), lower=("kid",))
def kid(ref: Reference) -> Scorer:
    """KID over ``SUBSETS`` random subsets of m = min(n/2, ``KID_SUBSET``) reals and m fakes, drawn without
    replacement (n: the smaller side) so that torchmetrics' unbiased MMD estimator sees distinct samples (a
    bootstrap's duplicates would count k(x, x) as a cross-sample term and bias it upwards).

    ``kid`` is the mean over the subsets: a Monte Carlo estimate of the unbiased MMD^2 of all the samples (its
    mean over every pair of subsets is exactly that). ``kid_std`` is the standard error of ``kid`` between
    independent draws of the reals and fakes: the U-statistic's variance (``mmd_variance``, its zetas estimated on
    min(n, ``KID_SUBSET``) samples a side) at the harmonic mean of the two sides' sizes, plus the Monte Carlo
    variance of averaging ``SUBSETS`` subsets (their spread^2 / ``SUBSETS``). ``benchmarks/kid_std.py`` checks it
    against the spread of ``kid`` over 150 draws: 0.92-1.08x the root mean square of ``kid_std``, on digits
    classifier features and heavy-tailed synthetic ones. Subsets of every sample (what this used up to 1,000, as
    torchmetrics with subset_size = n) are one set reordered: one value 20 times, std 0.

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

        def draw(x: torch.Tensor, size: int) -> torch.Tensor:
            return x[torch.randperm(len(x), generator=gen)[:size].to(ref.device)]

        values = torch.stack([poly_mmd(draw(real, m), draw(f, m)) for _ in range(SUBSETS)])
        k = min(n, KID_SUBSET)
        zeta1, zeta2 = _zetas(draw(real, k), draw(f, k))
        sides = 2 / (1 / len(real) + 1 / len(f))  # the two sides' harmonic mean
        var = max(mmd_variance(zeta1, zeta2, sides), 0.0) + float(values.var()) / SUBSETS
        return {"kid": float(values.mean()), "kid_std": math.sqrt(var)}

    return score
