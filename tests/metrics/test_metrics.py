import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch

from gantune import metrics
from gantune.catalogue import config_from_dict
from gantune.config import DataConfig, parse_config
from gantune.data import is_points, load_data
from gantune.errors import ConfigError
from gantune.metrics import FAMILIES, Evaluator, Reference, Samples, fid, load_reference, metric_names
from gantune.metrics.features import build_extractor

CPU = torch.device("cpu")
HQ_2D = 1 - math.exp(-4.5)  # share of a 2-D Gaussian within 3 sigma (Euclidean)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    metrics._MEMO.clear()


def _evaluator(name: str, n: int = 2500, **data: object) -> tuple[Evaluator, object]:
    cfg = config_from_dict({"data": {"name": name, **data}, "eval": {"n_samples": n}})
    d = load_data(cfg.data, CPU, 0)
    return Evaluator(cfg, d, CPU), d


@pytest.mark.parametrize(("name", "k"), [("grid25", 25), ("ring8", 8)])
def test_exact_mixture_samples_score_every_mode(name: str, k: int) -> None:
    ev, data = _evaluator(name)
    out = ev(lambda n: data.sample(n).cpu())
    assert out["modes"] == k and out["mode_coverage"] == 1.0
    assert out["hq"] == pytest.approx(HQ_2D, abs=0.01)
    assert out["mode_kl"] < 0.02
    assert out["fid"] < 0.01
    assert 0.95 < out["diversity"] < 1.05
    assert out["recall"] > 0.9 and out["precision"] > 0.9


def test_constant_generator_is_one_mode_and_no_diversity() -> None:
    ev, _ = _evaluator("grid25")
    out = ev(lambda n: torch.tensor([[2.0, 2.0]]).expand(n, 2).clone())
    assert out["modes"] == 1 and out["hq"] == 1.0
    assert out["mode_kl"] == pytest.approx(math.log(25))
    assert out["diversity"] < 1e-3
    assert out["recall"] < 0.01 and out["fid"] > 10


def test_fid_matches_scipy_sqrtm() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(600, 16, generator=gen, dtype=torch.float64)
    scale = torch.diag(torch.linspace(0.5, 2, 16, dtype=torch.float64))
    fake = torch.randn(600, 16, generator=gen, dtype=torch.float64) @ scale + 0.3
    ours = FAMILIES.get("fid")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))["fid"]
    mu1, mu2 = real.mean(0).numpy(), fake.mean(0).numpy()
    s1, s2 = np.cov(real.numpy(), rowvar=False), np.cov(fake.numpy(), rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert ours == pytest.approx(expected, rel=1e-6)


def test_digits_classifier_accuracy_and_fid_scale() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}})
    extractor = build_extractor(cfg, CPU)
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 8 - 1)[:, None]
    _, x_te, _, y_te = train_test_split(x.numpy(), bunch.target, test_size=0.2, stratify=bunch.target, random_state=0)
    _, logits = extractor(torch.from_numpy(x_te))
    assert logits is not None
    assert (logits.argmax(1).numpy() == y_te).mean() > 0.98  # held-out accuracy, stated in the README

    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = x[perm[:898]], x[perm[898:1796]]
    fa, _ = extractor(a)
    fid = FAMILIES.get("fid")(Reference(x=a, feats=fa))
    real_vs_real = fid(Samples(x=b, feats=extractor(b)[0]))["fid"]
    noise = torch.rand(898, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    real_vs_noise = fid(Samples(x=noise, feats=extractor(noise)[0]))["fid"]
    # measured: 9.3 vs 458 (README, Metrics)
    assert real_vs_real < 15 and real_vs_noise > 30 * real_vs_real


def test_digits_default_set_on_real_images() -> None:
    ev, data = _evaluator("digits", n=1000, resolution=16)
    out = ev(lambda n: data.reference(n, seed=5))
    assert out["classes"] == 10 and out["class_coverage"] == 1.0 and out["class_kl"] < 0.05
    assert {"fid", "kid", "diversity", "precision", "recall", "density", "coverage"} <= out.keys()


def test_the_classes_metric_reads_a_plugin_classifiers_own_classes() -> None:
    """A plugin extractor that classifies into 5 classes: ``classes`` read 10 digit logits only, so every trial
    of a search that listed it failed as its reference was built (exit 1). It counts the classifier's own."""
    from gantune.metrics.features import EXTRACTORS, Extractor

    def five(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample's class: which fifth of [-1, 1] its mean pixel falls in; its features: the first 8 pixels."""
        bucket = ((x.flatten(1).mean(1) + 1) * 2.5).clamp(0, 4.999).long()
        return x.flatten(1)[:, :8], torch.nn.functional.one_hot(bucket, 5).float() * 10

    EXTRACTORS.add("five_classes", lambda cfg, device: Extractor("five_classes", 8, five, classes=5))
    try:
        cfg = config_from_dict({"data": {"name": "digits", "resolution": 8},
                                "eval": {"n_samples": 500, "metrics": ["classes"], "extractor": "five_classes"}})
        ev = Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
        shades = (-0.8 + 0.4 * (torch.arange(500) % 5)).view(-1, 1, 1, 1).expand(500, 1, 8, 8)  # 100 a class
        out = ev(lambda n: shades[:n].clone())
        assert out["classes"] == 5 and out["class_coverage"] == 1.0 and out["class_kl"] < 1e-6
        one = ev(lambda n: torch.full((n, 1, 8, 8), 0.5))  # every sample in the fourth fifth: one class of 5
        assert one["classes"] == 1 and one["class_coverage"] == 0.2
        assert one["class_kl"] == pytest.approx(math.log(5))
    finally:
        EXTRACTORS.remove("five_classes")
        metrics._MEMO.clear()


def test_a_plugin_classifier_of_thirty_classes_on_colour_images_reads_thirty_classes() -> None:
    """30 class logits on 3-channel images were taken for stacked digits (10 a channel) by their count alone: the
    Inception Score read a 1,000-class joint (9.6 for 30 classes used evenly), ``classes`` was refused as stacked
    digits, the conditional metrics decoded triples (accuracy 0.03 for a classifier always right). Only an
    extractor that says so (``Extractor.depth``) reads one class a channel."""
    from gantune.metrics.base import FAMILIES, Reference, Samples
    from gantune.metrics.features import EXTRACTORS, Extractor

    def thirty(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample's class: its mean pixel's thirtieth of [-1, 1]."""
        bucket = ((x.flatten(1).mean(1) + 1) * 15).clamp(0, 29.999).long()
        return x.flatten(1)[:, :8], torch.nn.functional.one_hot(bucket, 30).float() * 50

    shades = (-1 + (torch.arange(3000) % 30 + 0.5) / 15).view(-1, 1, 1, 1).expand(3000, 3, 8, 8).clone()
    feats, logits = thirty(shades)
    ref = Reference(x=shades, feats=feats, logits=logits)  # depth 1: what an extractor says unless it says more
    fake = Samples(x=shades, feats=feats, logits=logits, labels=torch.arange(3000) % 30)
    assert FAMILIES.get("is")(ref)(fake)["is"] > 27  # 10 splits of 300 draws over 30 classes: near 30
    assert FAMILIES.get("classes")(ref)(fake) == {"classes": 30, "class_coverage": 1.0,
                                                 "class_kl": pytest.approx(0, abs=1e-9)}
    assert FAMILIES.get("conditional")(ref)(fake) == {"cond_accuracy": 1.0, "cond_class_coverage": 1.0}
    EXTRACTORS.add("thirty", lambda cfg, device: Extractor("thirty", 8, thirty, classes=30))
    try:  # and the extractor a plugin registers builds such a reference
        cfg = config_from_dict({"data": {"name": "stacked_digits", "resolution": 8},
                                "eval": {"n_samples": 300, "metrics": ["classes"], "extractor": "thirty"}})
        ev = Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
        assert ev(lambda n: shades[:n].clone())["classes"] == 30
    finally:
        EXTRACTORS.remove("thirty")
        metrics._MEMO.clear()


def test_reference_is_cached_on_disk(tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}, "eval": {"n_samples": 300}})
    data = load_data(cfg.data, CPU, 0)
    ext = build_extractor(cfg, CPU)
    first = load_reference(cfg, data, ext, 300)
    files = list((tmp_path / "cache").glob("reference-digits-*.pt"))
    assert len(files) == 1
    metrics._MEMO.clear()
    calls = []
    ext.fn = lambda x: calls.append(1) or (torch.zeros(len(x), 64), None)  # type: ignore[assignment]
    second = load_reference(cfg, data, ext, 300)
    assert not calls and torch.equal(first.feats, second.feats)


def test_nonfinite_samples_are_reported_not_raised() -> None:
    ev, _ = _evaluator("grid25", n=100)
    out = ev(lambda n: torch.full((n, 2), float("nan")))
    assert any(math.isnan(v) for v in out.values())


def test_default_in_a_list_is_the_default_set_there() -> None:
    """``[default, is]`` was refused with "unknown metric 'default'; choose from default, ...": ``default`` is
    expanded where it stands, each family once."""
    cfg = config_from_dict({"eval": {"metrics": ["default", "prdc", "modes"]}}, "x.yaml")
    assert metric_names(cfg) == ["fid", "modes", "diversity", "prdc"]
    cfg = config_from_dict({"eval": {"metrics": ["classes", "default"]}, "data": {"name": "digits"}}, "x.yaml")
    assert metric_names(cfg)[0] == "classes" and "fid" in metric_names(cfg)
    assert len(set(metric_names(cfg))) == len(metric_names(cfg))


def test_bad_metric_names_and_missing_inception(tmp_path: Path) -> None:
    raw = {"eval": {"metrics": ["fid", "sharpness"]}}
    with pytest.raises(ConfigError, match=r"^x.yaml: eval.metrics: unknown metric 'sharpness'; choose from default"):
        config_from_dict(raw, "x.yaml")  # at load, not when a trial starts
    cfg = parse_config(raw)  # the schema alone lets it through: the evaluator still refuses it
    with pytest.raises(ConfigError, match="unknown metric 'sharpness'"):
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
    cfg = parse_config({"eval": {"metrics": ["classes"]}})  # refused at load too (the test below)
    with pytest.raises(ConfigError, match="classifier"):
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
    img = tmp_path / "img"
    img.mkdir()
    cfg = config_from_dict({"data": {"name": "folder", "path": str(img)},
                            "eval": {"inception_weights": str(tmp_path / "nope.pth")}})
    with pytest.raises(ConfigError, match=r"Inception-v3 weights not found at .*nope\.pth"):
        build_extractor(cfg, CPU)


def test_inception_without_torch_fidelity_is_refused_before_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    """torchmetrics' Inception-v3 is torch-fidelity's net, and torchmetrics imports without it: with the weights on
    disk and the package missing, ``gantune train`` and every trial of a search failed on a ModuleNotFoundError
    at the first evaluation. It is the load-time check's line now."""
    import importlib.util

    from gantune.metrics import missing_weights

    (tmp_path / "inception.pth").write_bytes(b"weights")
    cfg = config_from_dict({"data": {"name": "folder", "path": str(tmp_path)},
                            "eval": {"inception_weights": str(tmp_path / "inception.pth")}})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch_fidelity" else real(
        name, *a))
    assert "needs the torch-fidelity package: pip install 'gantune[inception]'" in (missing_weights(cfg) or "")
    with pytest.raises(ConfigError, match="torch-fidelity package"):
        build_extractor(cfg, CPU)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "torch_fidelity" else real(
        name, *a))
    assert missing_weights(cfg) is None


def test_prdc_on_identical_and_disjoint() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(500, 4, generator=gen)
    score = FAMILIES.get("prdc")(Reference(x=real, feats=real))
    same = score(Samples(x=real, feats=torch.randn(500, 4, generator=gen)))
    far = score(Samples(x=real, feats=torch.randn(500, 4, generator=gen) + 50))
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["coverage"] > 0.8
    assert far["precision"] == 0 and far["recall"] == 0 and far["coverage"] == 0


def _prdc_brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al. 2020 as the ``prdc`` package defines them, one pair of points at a time in float64."""
    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(((a - b) ** 2).sum()))

    def radii(x: np.ndarray) -> list[float]:  # distance to the k-th nearest other point
        return [sorted(dist(p, q) for j, q in enumerate(x) if j != i)[k - 1] for i, p in enumerate(x)]

    r_real, r_fake = radii(real), radii(fake)
    d = [[dist(p, q) for q in fake] for p in real]
    n, m = len(real), len(fake)
    return {
        "precision": sum(any(d[i][j] < r_real[i] for i in range(n)) for j in range(m)) / m,
        "recall": sum(any(d[i][j] < r_fake[j] for j in range(m)) for i in range(n)) / n,
        "density": sum(d[i][j] < r_real[i] for i in range(n) for j in range(m)) / (k * m),
        "coverage": sum(min(d[i]) < r_real[i] for i in range(n)) / n,
    }


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.5, 3.0])
def test_prdc_matches_a_brute_force_computation(shift: float) -> None:
    from gantune.metrics.diversity import K

    real, fake = _features(60, 3, 0), _features(50, 3, 1, shift=shift)
    ours = FAMILIES.get("prdc")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
    expected = _prdc_brute_force(real.double().numpy(), fake.double().numpy(), K)
    assert ours == pytest.approx(expected, abs=1e-6)
    assert 0 < expected["precision"] < 1  # measured: 0.96, 0.94, 0.62, 0.26


def test_prdc_distances_hold_for_near_neighbours_far_from_the_origin() -> None:
    """Found measuring ring8: float32 ``cdist`` forms d^2 = |x|^2 + |y|^2 - 2xy, which cancels for points close to
    each other and far from the origin (its k-NN radii were up to 7% off). Here a cluster of spread 0.01 at
    (30, 30): float32 distances err by up to 0.016, more than the spread."""
    from gantune.metrics.diversity import K

    real = 30 + 0.01 * _features(60, 2, 0)
    fake = 30 + 0.01 * _features(50, 2, 1, shift=0.5)
    ours = FAMILIES.get("prdc")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
    expected = _prdc_brute_force(real.double().numpy(), fake.double().numpy(), K)
    assert ours == pytest.approx(expected, abs=1e-6)
    assert 0 < expected["coverage"] < 1


def test_modes_hq_radius_holds_far_from_the_origin() -> None:
    """As above, for the modes' HQ rule: samples 0.0299 and 0.0301 from a mean at (40, 0), radius 3 x 0.01 = 0.03.
    Half of them are HQ whatever the float32 cancellation in ``cdist`` would make of them."""
    means = torch.tensor([[40.0, 0.0], [-40.0, 0.0]])
    offsets = torch.tensor([0.0299, 0.0301]).repeat(30)  # 60 samples: cdist takes its product form past 25
    fake = torch.stack([40 + offsets, torch.zeros(60)], dim=1)
    ref = Reference(x=means, feats=means, means=means, std=0.01)
    out = FAMILIES.get("modes")(ref)(Samples(x=fake, feats=fake))
    assert out["hq"] == 0.5 and out["modes"] == 1


def test_prdc_density_counts_every_real_ball_a_fake_is_in() -> None:
    """Reals at 0, 1, ..., 9 on a line: their 5th-nearest-neighbour radii are 5 4 3 3 3 3 3 3 4 5. A fake at 4.5
    is inside all 10 balls; one at 3 inside 6 (those of 0-5: it is exactly on the ball of 6, and a ball is open,
    as in the prdc package); those at 100 in none. Density counts them all, (3 x 10 + 6) / (5 x 6 fakes) = 1.2,
    where precision is the 4 of 6 fakes inside any ball."""
    real = torch.arange(10.0)[:, None]
    fake = torch.tensor([4.5, 4.5, 4.5, 3.0, 100.0, 100.0])[:, None]
    out = FAMILIES.get("prdc")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
    assert out["density"] == pytest.approx(36 / 30)
    assert out["precision"] == pytest.approx(4 / 6)
    assert out["coverage"] == 1.0  # every real's nearest fake (3 or 4.5) is inside its ball


def test_data_config_unused_warning_free() -> None:
    assert is_points(DataConfig())


def _features(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 2, dim)
    return torch.randn(n, dim, generator=gen) * scale + shift


class _Identity(torch.nn.Module):
    """torchmetrics' feature hook for features that are already extracted."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fid_and_kid_agree_with_torchmetrics() -> None:
    """Ours run on the trial's device with real statistics kept; torchmetrics is the reference implementation."""
    import warnings

    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _features(700, 32, 0), _features(600, 32, 1, shift=0.2)
    ref = Reference(x=real, feats=real)
    tm_fid = FrechetInceptionDistance(feature=_Identity(32))
    tm_fid.update(real.double(), real=True)
    tm_fid.update(fake.double(), real=False)
    assert FAMILIES.get("fid")(ref)(Samples(x=fake, feats=fake))["fid"] == pytest.approx(float(tm_fid.compute()),
                                                                                         rel=1e-9)

    def tm_kid(subsets: int, subset_size: int) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tm = KernelInceptionDistance(feature=_Identity(32), subsets=subsets, subset_size=subset_size)
        tm.update(real, real=True)
        tm.update(fake, real=False)
        mean, std = tm.compute()
        return float(mean), float(std)

    ours = FAMILIES.get("kid")(ref)(Samples(x=fake, feats=fake))
    # torchmetrics on the global RNG seeded as ours draws the same subsets (a real, then a fake permutation each)
    torch.manual_seed(fid.KID_SEED)
    mean, std = tm_kid(fid.SUBSETS, 300)  # half of the smaller side (600)
    s = fid.SUBSETS
    assert ours["kid"] == pytest.approx(mean, rel=1e-5)
    # torchmetrics' std is the subsets' spread (ddof 0); ours holds its Monte Carlo share, spread^2 / s (ddof 1),
    # beside the sampling variance (test_kid_std_is_the_spread_of_kid_between_draws checks the whole)
    assert ours["kid_std"] > std * math.sqrt(1 / (s - 1))
    # the whole-sample value the subsets' mean estimates, within the standard error reported
    whole, _ = tm_kid(1, 600)
    assert abs(ours["kid"] - whole) < ours["kid_std"]


def _kid(n: int, seed: int, shift: float = 0.2, dim: int = 8, fakes: int | None = None) -> dict[str, float]:
    """KID between n reals and n (or ``fakes``) fakes of two slightly different Gaussians (fixed seeded streams)."""
    real, fake = _features(n, dim, 2 * seed), _features(fakes or n, dim, 2 * seed + 1, shift=shift)
    return FAMILIES.get("kid")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))


def test_kid_std_is_positive_and_shrinks_as_n_grows() -> None:
    """At n <= 1,000 the subsets used to be the whole set reordered: the same value 20 times, std 0."""
    small = [_kid(200, seed) for seed in range(3)]
    large = [_kid(1600, seed) for seed in range(3)]
    assert all(out["kid_std"] > 0 for out in small + large)
    std_small = sum(out["kid_std"] for out in small) / 3
    std_large = sum(out["kid_std"] for out in large) / 3
    assert std_large < 0.5 * std_small  # sqrt(200 / 1600) = 0.35 for a standard error


@pytest.mark.parametrize(("n", "fakes", "cap", "shift"), [
    (200, 200, 1000, 0.4), (400, 400, 50, 0.5), (200, 200, 1000, 0.0), (200, 600, 1000, 0.0), (200, 600, 1000, 0.3),
], ids=["half", "capped", "equal-distributions", "more-fakes", "more-fakes-shifted"])
def test_kid_std_is_the_spread_of_kid_between_draws(n: int, fakes: int, cap: int, shift: float,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """kid_std estimates how much kid varies between independent draws of the reals and fakes: with half-subsets
    (n/2) and subsets capped below that (here 50 of 400), and where the distributions match or the fakes outnumber
    the reals (the digits' 360 held-out reals against 1,000 fakes), where the delete-d jackknife it replaced was
    1.6-2.4x large (its degenerate statistic's variance falls as 1/n^2, not 1/n)."""
    monkeypatch.setattr(fid, "KID_SUBSET", cap)
    outs = [_kid(n, seed, shift, fakes=fakes) for seed in range(100)]
    kids = torch.tensor([out["kid"] for out in outs])
    reported = sum(out["kid_std"] for out in outs) / len(outs)
    assert 0.75 < float(kids.std()) / reported < 1.33


@pytest.mark.parametrize("shift", [0.0, 0.5], ids=["equal-distributions", "shifted"])
def test_kid_variance_components_are_unbiased(shift: float) -> None:
    """The U-statistic's variance from the estimated zetas averages to the variance of the statistic itself over
    independent draws (m = 20 a side, 3-D, the cubic kernel). The sums of Sutherland et al. 2017 it replaced read
    zeta_1 low (by about 2 zeta_2 / m^2 where the distributions match): 0.79-0.80x here."""
    from torchmetrics.image.kid import poly_mmd

    m, draws = 20, 4000
    gen = torch.Generator().manual_seed(3)
    predicted, values = [], []
    for _ in range(draws):
        x = torch.randn(m, 3, generator=gen, dtype=torch.float64)
        y = torch.randn(m, 3, generator=gen, dtype=torch.float64) * (1 + shift) + shift
        predicted.append(fid.mmd_variance(*fid._zetas(x, y), m))
        kxy = (x @ y.T / 3 + 1) ** 3  # the U-statistic leaves out the pairs' own cross terms k(x_i, y_i)
        values.append(float(poly_mmd(x, y)) + 2 * float(kxy.diagonal().sum() - kxy.sum() / m) / (m * (m - 1)))
    ratio = sum(predicted) / draws / float(torch.tensor(values).var())
    assert 0.9 < ratio < 1.1


def test_kid_needs_two_samples_a_side_in_each_subset() -> None:
    """Half of 3 is one sample, where the unbiased estimator divides by m (m - 1) = 0: a reference that small is
    refused (the Evaluator says it in one line), fewer fakes read NaN."""
    real, fake = _features(3, 8, 0), _features(100, 8, 1)
    with pytest.raises(ValueError, match="kid needs 4 real samples or more"):
        FAMILIES.get("kid")(Reference(x=real, feats=real))
    scored = FAMILIES.get("kid")(Reference(x=fake, feats=fake))(Samples(x=real, feats=real))
    assert all(math.isnan(v) for v in scored.values())
    assert all(math.isfinite(v) for v in _kid(4, 0).values())


def test_kid_of_huge_features_is_non_finite_not_an_overflow_error() -> None:
    """Finite float32 features past ~1e26 (2-D points of a G blowing up, an unbounded plugin extractor) made the
    zetas' float power raise OverflowError: the trial failed with a traceback where it had diverged, which a
    non-finite value says (the health monitor's ``diverged``)."""
    real = _features(200, 8, 0)
    fake = _features(200, 8, 1) * 1e30
    scored = FAMILIES.get("kid")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
    assert not all(math.isfinite(v) for v in scored.values()), scored


def test_evaluation_leaves_the_training_rng_alone() -> None:
    real, fake = _features(400, 8, 0), _features(400, 8, 1)
    scorers = [FAMILIES.get(n)(Reference(x=real, feats=real)) for n in ("fid", "kid", "prdc", "diversity")]
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    for score in scorers:
        score(Samples(x=fake, feats=fake))
    assert torch.equal(torch.rand(3), expected)


def test_prdc_in_blocks_equals_one_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    from gantune.metrics import diversity

    real, fake = _features(500, 4, 0), _features(450, 4, 1, shift=0.3)
    whole = FAMILIES.get("prdc")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
    monkeypatch.setattr(diversity, "BLOCK", 64)
    blocks = FAMILIES.get("prdc")(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
    assert blocks == whole and 0 < whole["coverage"] < 1


def test_real_statistics_are_computed_once_per_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second trial (same process: memory) and another worker process (disk) reuse the real statistics."""
    calls: list[int] = []
    real_statistics = fid.real_statistics
    monkeypatch.setattr(fid, "real_statistics", lambda ref: calls.append(1) or real_statistics(ref))
    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}, "eval": {"n_samples": 300}})
    data = load_data(cfg.data, CPU, 0)
    first = Evaluator(cfg, data, CPU)(lambda n: data.reference(n, seed=3))
    Evaluator(cfg, data, CPU)
    assert len(calls) == 1
    metrics._MEMO.clear()  # as in a fresh worker process
    again = Evaluator(cfg, data, CPU)(lambda n: data.reference(n, seed=3))
    assert len(calls) == 1 and again == first
    assert len(list((tmp_path / "cache").glob("reference-digits-*-fid.pt"))) == 1


def test_metrics_run_on_the_reference_device() -> None:
    """Fake features on another device are moved to the reference's; every family returns plain floats."""
    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}, "eval": {"n_samples": 200}})
    data = load_data(cfg.data, CPU, 0)
    ev = Evaluator(cfg, data, torch.device("cpu"))
    ref = load_reference(cfg, data, build_extractor(cfg, CPU), 200, torch.device("cpu"))
    assert ref.device == CPU and ref.feats.device == CPU
    out = ev(lambda n: data.reference(n, seed=3))
    assert all(isinstance(v, float) for v in out.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_metrics_on_cuda_match_cpu() -> None:
    real, fake = _features(700, 64, 0), _features(600, 64, 1, shift=0.2)
    cuda = torch.device("cuda")
    for name in ("fid", "kid", "prdc", "diversity"):
        on_cpu = FAMILIES.get(name)(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
        on_gpu = FAMILIES.get(name)(Reference(x=real, feats=real.to(cuda)))(Samples(x=fake, feats=fake.to(cuda)))
        assert on_gpu == pytest.approx(on_cpu, rel=1e-4, abs=1e-4), name


@pytest.mark.parametrize(("config", "why"), [
    ({"data": {"name": "grid25"}, "eval": {"metrics": ["classes", "modes"]}},
     "the classes metric needs a classifier extractor (digits, or a plugin's that gives class logits)"),
    ({"data": {"name": "digits"}, "eval": {"metrics": ["fid", "modes"]}},
     "the modes metric needs a 2-D mixture (ring8, grid25)"),
    ({"data": {"name": "stacked_digits"}, "eval": {"metrics": ["classes"]}},
     "the classes metric reads one class a sample: stacked digits have one a channel (use stacked_modes)"),
    ({"data": {"name": "digits"}, "eval": {"metrics": ["stacked_modes"]}},
     "the stacked_modes metric needs stacked digits and per-channel digit logits"),
    ({"data": {"name": "digits"}, "model": {"conditional": True},
      "eval": {"metrics": ["conditional"], "extractor": "inception", "inception_weights": "x.pth"}},
     "the conditional metric needs a classifier extractor (digits, stacked_digits)"),
    # stacked digits' labels are 1,000 triples: the digits classifier's 10 classes are not them (real data scored 0)
    ({"data": {"name": "stacked_digits"}, "model": {"conditional": True},
      "eval": {"metrics": ["conditional"], "extractor": "digits"}},
     "the conditional metric reads the digit classifier's class as the label a sample was made for: this data's "
     "1000 classes are not its 10"),
])
def test_a_metric_that_cannot_measure_the_data_is_refused_at_load(config: dict[str, Any], why: str) -> None:
    """``eval.metrics: [classes]`` on grid25 passed the load: a search started, every trial failed as its
    reference was built (exit 1, a study and runs left), and ``train`` wrote a cache first. The family says at
    load why it cannot measure the data with the config's extractor; the builder's own check stays for plugins."""
    with pytest.raises(ConfigError, match=f"^c.yaml: eval.metrics: {re.escape(why)}"):
        config_from_dict(config, "c.yaml")


def test_every_default_metric_set_fits_its_data() -> None:
    """The sets ``eval.metrics: [default]`` stands for are never refused by their own families."""
    for data in ("grid25", "ring8", "digits", "stacked_digits"):
        for conditional in ((False, True) if data != "grid25" and data != "ring8" else (False,)):
            cfg = config_from_dict({"data": {"name": data}, "model": {"conditional": conditional}})
            assert metric_names(cfg) and all(FAMILIES.get(n).fits is None or FAMILIES.get(n).fits(cfg) is None
                                             for n in metric_names(cfg))


def test_the_conditional_metric_needs_the_data_classes_to_be_the_classifiers(tmp_path: Path) -> None:
    """A folder of 3 classes read by the digits classifier: ``cond_accuracy`` compared its digit with the folder's
    class index, a number that means nothing, reported and searchable. Listed, it is refused; in the default set
    it is left out."""
    from PIL import Image

    for k in range(3):
        (tmp_path / f"c{k}").mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"c{k}" / "0.png")
    raw = {"data": {"name": "folder", "path": str(tmp_path), "resolution": 8, "channels": 1},
           "model": {"arch": "dcgan", "conditional": True}, "eval": {"extractor": "digits"}}
    assert "conditional" not in metric_names(config_from_dict(raw))
    with pytest.raises(ConfigError, match="the conditional metric reads the digit classifier's class as the label a "
                                          "sample was made for: this data's 3 classes are not its 10"):
        config_from_dict({**raw, "eval": {"extractor": "digits", "metrics": ["conditional"]}})
    for k in range(3, 10):
        (tmp_path / f"c{k}").mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"c{k}" / "0.png")
    assert "conditional" in metric_names(config_from_dict(raw))
    assert "conditional" in metric_names(config_from_dict({**raw, "data": {**raw["data"], "path": "/nowhere"}}))
    # a folder of photos read channel by channel as digits has no stacked digits' modes (it reported 30 of them)
    rgb = {"data": {"name": "folder", "path": str(tmp_path), "resolution": 8}, "model": {"arch": "dcgan"},
           "eval": {"extractor": "stacked_digits"}}
    assert "stacked_modes" not in metric_names(config_from_dict(rgb))
    with pytest.raises(ConfigError, match="the stacked_modes metric needs stacked digits"):
        config_from_dict({**rgb, "eval": {"extractor": "stacked_digits", "metrics": ["stacked_modes"]}})
    with pytest.raises(ConfigError, match=r"the stacked_digits extractor reads one a channel \(use eval.extractor: "
                                          r"digits\)"):  # not "use stacked_modes", which it refuses here
        config_from_dict({**rgb, "eval": {"extractor": "stacked_digits", "metrics": ["classes"]}})


@pytest.mark.parametrize(("config", "why"), [
    ({"data": {"name": "grid25"}, "eval": {"extractor": "digits"}},
     "eval.extractor: digits reads images, and this data is 2-D points (use auto, or coords)"),
    ({"data": {"name": "ring8"}, "eval": {"extractor": "stacked_digits", "metrics": ["fid"]}},
     "eval.extractor: stacked_digits reads images, and this data is 2-D points"),
    ({"data": {"name": "digits"}, "eval": {"extractor": "coords", "metrics": ["fid"]}},
     "eval.extractor: coords reads 2-D points, and this data is images (use auto, or digits or stacked_digits or "
     "inception)"),
    # the data's own problem first: the metric's line named the wrong key
    ({"data": {"name": "stacked_digits", "channels": 1}},
     "data.channels: stacked_digits stacks 3 images, one a channel; leave channels unset (got 1)"),
])
def test_an_extractor_of_the_other_kind_of_data_is_refused_at_load(config: dict[str, Any], why: str) -> None:
    """``eval.extractor: digits`` on grid25 (or ``coords`` on images) passed the load: ``train`` ended in a
    traceback as the reference was built and every trial of a search failed."""
    with pytest.raises(ConfigError, match=f"^c.yaml: {re.escape(why)}"):
        config_from_dict(config, "c.yaml")


def test_the_default_set_leaves_out_a_family_that_cannot_measure_the_data() -> None:
    """Digits read by the stacked extractor: ``[default]`` stood for stacked_modes and was refused, while
    ``[fid, is]`` on the same pair ran."""
    cfg = config_from_dict({"data": {"name": "digits"}, "eval": {"extractor": "stacked_digits"}})
    assert metric_names(cfg) == ["fid", "diversity", "prdc"]


def test_metrics_run_in_full_float32_whatever_the_training_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: ``train.tf32`` (on by default on a GPU) sets TF32 for the trial's whole process, and the
    metrics' distances ran under it: ``cdist``'s product form rounds |x|^2 to TF32, errors as large as the HQ
    radius and the k-NN radii on grid25 (simulated: coverage 0.27 for exact samples). No GPU here: what
    each ``cdist`` of an evaluation runs under is recorded, with the flags a GPU trial sets."""
    from gantune.gan.speed import Speed

    seen: list[tuple[str, bool]] = []
    cdist = torch.cdist

    def recorded(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append((torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32))
        return cdist(*args, **kwargs)

    monkeypatch.setattr(torch, "cdist", recorded)
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    Speed(tf32=True).set_backends(torch.device("cuda"))  # flags only: what a GPU trial's process runs with
    try:
        trained = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        ev, data = _evaluator("grid25", n=500)  # the reference's k-NN radii
        ev(lambda n: data.sample(n).cpu())
        ev.quick(lambda n: data.sample(n).cpu())
        assert seen and set(seen) == {("highest", False)}
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == trained == ("high", True)
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch 2.9's per-backend API")
def test_full_precision_keeps_to_torchs_per_backend_settings_where_the_process_used_them(tmp_path: Path) -> None:
    """Found by a review: where a plugin set torch 2.9's ``fp32_precision`` settings, the legacy getter
    ``full_precision`` read raised ("mix of the legacy and new APIs"), failing every evaluation. A process of its
    own: those settings, once set, stay for the process."""
    import subprocess
    import sys

    code = """
import torch
from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.metrics import Evaluator
seen = []
cdist = torch.cdist
torch.cdist = lambda *a, **k: seen.append(torch.backends.cuda.matmul.fp32_precision) or cdist(*a, **k)
torch.backends.cuda.matmul.fp32_precision = "tf32"  # as a plugin may
cfg = config_from_dict({"data": {"name": "grid25"}, "eval": {"n_samples": 300}})
data = load_data(cfg.data, torch.device("cpu"), 0)
out = Evaluator(cfg, data, torch.device("cpu"))(lambda n: data.sample(n))
print(sorted(set(seen)), torch.backends.cuda.matmul.fp32_precision, out["coverage"] > 0.5)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.split() == ["['ieee']", "tf32", "True"]


def test_reference_statistics_cached_before_evaluation_ran_in_full_float32_are_not_reused() -> None:
    """Found by a review: the k-NN radii and real floors a GPU trial computed under TF32 were cached under a key
    that did not say how they were computed, so ``full_precision`` alone would have kept reading them."""
    import hashlib
    import json

    from gantune.metrics import _reference_key
    from gantune.metrics.features import Extractor

    cfg = config_from_dict({"data": {"name": "grid25"}})
    x = torch.zeros(4, 2)
    coords = Extractor("coords", 2, lambda s: (s, None))
    content = hashlib.sha1(x.numpy().tobytes()).hexdigest()  # the key as it was made before
    before = {"x": content, "shape": [4, 2], "extractor": "coords", "weights": coords.weights,
              "classes": coords.classes}
    old = f"reference-grid25-coords-4-{hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]}"
    assert _reference_key(cfg, coords, x) != old


@pytest.mark.parametrize("data", [{"name": "digits", "resolution": 8}, {"name": "stacked_digits", "resolution": 8}])
def test_the_digit_extractors_read_half_precision_samples(data: dict[str, Any]) -> None:
    """float16 and bfloat16 samples (a generator run in half precision) raised a dtype error in the digits and
    stacked-digits classifiers, whose weights are float32; the coords and Inception extractors cast already."""
    cfg = config_from_dict({"data": data})
    extractor = build_extractor(cfg, torch.device("cpu"))
    x = torch.rand(6, 3 if data["name"] == "stacked_digits" else 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = x * 2 - 1
    want, _ = extractor(x)
    for dtype in (torch.float16, torch.bfloat16):
        got, _ = extractor(x.to(dtype))
        assert got.dtype == torch.float32
        assert torch.allclose(got, extractor(x.to(dtype).float())[0])
    assert want.shape == got.shape


def test_diversity_of_real_samples_without_spread_is_refused_not_a_huge_ratio(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder of two identical images: the real mean pairwise distance 0 (clamped to 1e-12) made every
    generator's diversity about 7e9, read as a divergence. Refused, one line naming why."""
    from PIL import Image

    from gantune.cli import main

    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((8, 8), 120, dtype=np.uint8)).save(folder / name)
    feats = torch.ones(4, 3)
    with pytest.raises(ValueError, match=r"^diversity is the samples' spread over the real data's, and the real "):
        FAMILIES.get("diversity")(Reference(x=feats, feats=feats))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: folder, path: {folder}, resolution: 8, channels: 1}}\nmodel: {{arch: dcgan}}\n"
                   "train: {steps: 2, batch_size: 2, log_every: 1, device: cpu}\n"
                   "eval: {metrics: [diversity], extractor: digits, every: 2, n_samples: 16}\n"
                   "health: {objective: diversity, mode: max}\n")
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.metrics: diversity is the samples' spread over the real data's" in err[0], err
    assert not (tmp_path / "run").exists()
