"""FID and KID on the evaluation device, on the extractor's features.

FID: the trace of the matrix square root of Sigma_real @ Sigma_fake equals that of the symmetric
R Sigma_fake R, with R = Sigma_real^(1/2). R is computed once per search from the real statistics (shared
through ``Reference.derived``), so an evaluation is one symmetric eigenvalue problem (``eigvalsh``, which runs on
the GPU) instead of torchmetrics' general ``eigvals`` on the CPU. Float64 throughout, like torchmetrics; the
tests check the two agree. KID is torchmetrics' polynomial-kernel MMD (``poly_mmd``) over random subsets, on
the device, with its own seeded generator so that evaluation never moves the training RNG.
"""

from __future__ import annotations

import torch
from torchmetrics.image.kid import poly_mmd

from gantune.metrics.base import Reference, Samples, Scorer, family

#: KID's random subsets per evaluation (torchmetrics' default is 100): 20 keep its std small at a fifth of the cost.
SUBSETS = 20
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


@family("fid", keys=("fid",))
def fid(ref: Reference) -> Scorer:
    real = ref.derived("fid", lambda: real_statistics(ref))

    def score(fake: Samples) -> dict[str, float]:
        return {"fid": frechet_distance(real, fake.feats)}

    return score


@family("kid", keys=("kid", "kid_std"))
def kid(ref: Reference) -> Scorer:
    real = ref.feats.float()  # float32 like torchmetrics' own use: float64 kernels cost 3x on a CPU

    def score(fake: Samples) -> dict[str, float]:
        f = fake.feats.float()
        size = min(KID_SUBSET, len(real), len(f))
        gen = torch.Generator().manual_seed(KID_SEED)  # the same subsets at every evaluation
        values = torch.stack([
            poly_mmd(real[torch.randperm(len(real), generator=gen)[:size].to(ref.device)],
                     f[torch.randperm(len(f), generator=gen)[:size].to(ref.device)])
            for _ in range(SUBSETS)])
        return {"kid": float(values.mean()), "kid_std": float(values.std(unbiased=False))}

    return score
