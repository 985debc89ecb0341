import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from gantune import metrics
from gantune.config import DataConfig, config_from_dict
from gantune.data import load_data
from gantune.errors import ConfigError
from gantune.metrics import FAMILIES, Evaluator, Reference, Samples, load_reference
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


def test_bad_metric_names_and_missing_inception(tmp_path: Path) -> None:
    cfg = config_from_dict({"eval": {"metrics": ["fid", "sharpness"]}})
    with pytest.raises(ConfigError, match="unknown metric 'sharpness'"):
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
    cfg = config_from_dict({"eval": {"metrics": ["classes"]}})
    with pytest.raises(ConfigError, match="classifier"):
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
    img = tmp_path / "img"
    img.mkdir()
    cfg = config_from_dict({"data": {"name": "folder", "path": str(img)},
                            "eval": {"inception_weights": str(tmp_path / "nope.pth")}})
    with pytest.raises(ConfigError, match=r"Inception-v3 weights not found at .*nope\.pth"):
        build_extractor(cfg, CPU)


def test_prdc_on_identical_and_disjoint() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(500, 4, generator=gen)
    score = FAMILIES.get("prdc")(Reference(x=real, feats=real))
    same = score(Samples(x=real, feats=torch.randn(500, 4, generator=gen)))
    far = score(Samples(x=real, feats=torch.randn(500, 4, generator=gen) + 50))
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["coverage"] > 0.8
    assert far["precision"] == 0 and far["recall"] == 0 and far["coverage"] == 0


def test_data_config_unused_warning_free() -> None:
    assert DataConfig().is_points
