"""Stacked digits' modes and KL (``stacked_modes``) on real stacked digits, a collapsed generator, and the collapse
signal as the health monitor reads it."""

import math
from pathlib import Path

import pytest
import torch

from gantune import metrics
from gantune.catalogue import config_from_dict
from gantune.config import HealthConfig, parse_config
from gantune.data import digits_split, load_data, stack
from gantune.errors import ConfigError
from gantune.health import HealthMonitor
from gantune.metrics import FAMILIES, Evaluator, Reference, Samples, Scorer, metric_names
from gantune.metrics.features import Extractor, build_extractor, default_extractor

CPU = torch.device("cpu")
CFG = {"data": {"name": "stacked_digits", "resolution": 8}}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    metrics._MEMO.clear()


def _scorer(n_ref: int = 300) -> tuple[Scorer, torch.Tensor, Extractor]:
    """The ``stacked_modes`` scorer on a held-out reference, the held-out pool, and the extractor."""
    cfg = config_from_dict(CFG)
    data = load_data(cfg.data, CPU, 0)
    extractor = build_extractor(cfg, CPU)
    ref = data.reference(n_ref)
    feats, logits = extractor(ref)
    assert data.heldout is not None
    return (FAMILIES.get("stacked_modes")(Reference(x=ref, feats=feats, logits=logits, depth=extractor.depth)),
            data.heldout, extractor)


def test_real_stacked_digits_hit_every_mode_at_the_published_sample_size() -> None:
    """26,000 stacked held-out digits (the protocol's sample count): all 1,000 modes, and the KL a finite uniform
    sample has (about 999 / 52,000 = 0.019), which the classifier's few misreadings barely move. The 26,000
    samples' logits are the held-out digits' logits stacked (the extractor classifies each channel alone: checked
    on 500 of them), so the test classifies 360 digits, not 78,000."""
    score, pool, extractor = _scorer()
    draws = torch.randint(len(pool), (26_000, 3), generator=torch.Generator().manual_seed(1))
    digit_feats, digit_logits = extractor(pool)
    assert digit_logits is not None
    feats, logits = digit_feats[draws].flatten(1), digit_logits[draws].flatten(1)
    direct_feats, direct_logits = extractor(stack(pool, draws[:500]))
    assert direct_logits is not None
    assert torch.allclose(direct_logits, logits[:500], atol=1e-4)
    assert torch.allclose(direct_feats, feats[:500], atol=1e-4)
    out = score(Samples(x=stack(pool, draws), feats=feats, logits=logits))
    assert out["stacked_modes"] == 1000 and out["stacked_coverage"] == 1.0
    assert 0.012 < out["stacked_kl"] < 0.03  # measured: benchmarks/stacked_floor.py


def test_one_triple_is_one_mode_and_kl_log_1000() -> None:
    score, pool, extractor = _scorer()
    labels = torch.from_numpy(digits_split("heldout")[1])
    one = stack(pool, torch.tensor([[int(torch.nonzero(labels == d)[0]) for d in (3, 0, 7)]]))
    x = one.expand(2000, -1, -1, -1)
    feats, logits = extractor(x)
    out = score(Samples(x=x, feats=feats, logits=logits))
    assert out["stacked_modes"] == 1 and out["stacked_kl"] == pytest.approx(math.log(1000))
    assert out["stacked_coverage"] < 0.002  # one of the 865 modes 2,000 uniform samples reach


def test_stacked_digits_defaults_and_the_quick_check() -> None:
    """``default`` on stacked digits is FID on per-channel digit features, the stacked modes, diversity and PRDC;
    the modes are cheap, so quick checks run them. A quick check of a perfect generator on few samples reads full
    coverage: 100 samples cannot hit more than about 95 of the 1,000 modes."""
    cfg = config_from_dict({**CFG, "eval": {"n_samples": 200, "quick_samples": 100}})
    assert default_extractor(cfg) == "stacked_digits"
    assert metric_names(cfg) == ["fid", "stacked_modes", "diversity", "prdc"]
    data = load_data(cfg.data, CPU, 0)
    ev = Evaluator(cfg, data, CPU)
    quick = ev.quick(lambda n: data.sample(n))
    assert {"stacked_modes", "stacked_coverage", "stacked_kl"} <= quick.keys() and "fid" not in quick
    assert 80 <= quick["stacked_modes"] <= 100 and quick["stacked_coverage"] > 0.85


def test_stacked_modes_need_stacked_digits() -> None:
    # refused at load (tests/metrics/test_metrics.py); the evaluator's own check, for a plugin's extractor, too
    cfg = parse_config({"data": {"name": "digits", "resolution": 8}, "eval": {"metrics": ["stacked_modes"]}})
    with pytest.raises(ConfigError, match="stacked_modes metric needs stacked digits"):
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
    cfg = parse_config({**CFG, "eval": {"metrics": ["classes"]}})  # 30 logits a sample are not 30 classes
    with pytest.raises(ConfigError, match="classes metric reads one class a sample"):
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)


def test_collapse_signal_fires_on_a_collapsed_stream_not_on_a_healthy_one() -> None:
    """A stream of quick checks as a collapsed generator gives them (one triple: coverage 0.001) is a collapse,
    named for the stacked modes even when diversity is low too; the same stream at a perfect generator's coverage is
    not."""
    score, pool, extractor = _scorer()
    gen = torch.Generator().manual_seed(2)

    def check(step: int, x: torch.Tensor, diversity: float) -> dict[str, float]:
        feats, logits = extractor(x)
        return {"step": float(step), "fid": 50.0, "diversity": diversity,
                **score(Samples(x=x, feats=feats, logits=logits))}

    one = stack(pool, torch.tensor([[0, 1, 2]])).expand(300, -1, -1, -1)
    collapsed = [check(100 * i, one, 0.01) for i in range(1, 5)]
    monitor = HealthMonitor(HealthConfig(warmup_evals=1, patience=2))
    verdicts = [monitor(r) for r in collapsed]
    assert verdicts[:2] == [None, None]
    assert verdicts[2] is not None and verdicts[2].kind == "collapsed" and verdicts[2].rule == "stacked_coverage"
    healthy = [check(100 * i, stack(pool, torch.randint(len(pool), (300, 3), generator=gen)), 1.0)
               for i in range(1, 7)]
    monitor = HealthMonitor(HealthConfig(warmup_evals=1, patience=2))
    assert [monitor(r) for r in healthy] == [None] * 6


def _logits(digits: torch.Tensor, margin: float = 20.0) -> torch.Tensor:
    """Per-channel logits that read as ``digits`` (n, 3): one-hot scaled by ``margin`` (0: every digit equally
    likely, the classifier's most unsure reading)."""
    return (margin * torch.nn.functional.one_hot(digits, 10).float()).flatten(1)


def _score_digits(digits: torch.Tensor, margin: float = 20.0) -> dict[str, float]:
    x = torch.zeros(len(digits), 3, 8, 8)
    logits = _logits(digits, margin)
    score = FAMILIES.get("stacked_modes")(Reference(x=x, feats=torch.zeros(len(x), 1), logits=logits, depth=3))
    return score(Samples(x=x, feats=torch.zeros(len(x), 1), logits=logits))


def test_channel_kl_is_the_part_of_the_kl_the_channels_own_digits_explain() -> None:
    """Three channels that always show the same digit (each channel uniform over 10): their digit histograms are
    even, so all of the KL (ln 100: 10 of the 1,000 modes, evenly) is the channels' dependence. Independent channels
    with channel 0 showing 0 twice as often as each other digit: the joint histogram is the product of the
    channels', so the whole KL is the channels' own."""
    same = torch.arange(1000).remainder(10)[:, None].expand(-1, 3)
    out = _score_digits(same)
    assert out["stacked_modes"] == 10 and out["stacked_kl"] == pytest.approx(math.log(100))
    assert out["stacked_channel_kl"] == pytest.approx(0.0, abs=1e-12)

    triples = torch.cartesian_prod(torch.arange(10), torch.arange(10), torch.arange(10))
    biased = torch.cat([triples, triples[triples[:, 0] == 0]])  # channel 0 reads 0 in 200 of 1,100
    out = _score_digits(biased)
    p = torch.tensor([2.0] + [1.0] * 9) / 11
    assert out["stacked_channel_kl"] == pytest.approx(float((p * (10 * p).log()).sum()))
    assert out["stacked_kl"] == pytest.approx(out["stacked_channel_kl"])


def test_confidence_reads_how_sure_the_classifier_is() -> None:
    digits = torch.randint(10, (500, 3), generator=torch.Generator().manual_seed(0))
    assert _score_digits(digits)["stacked_confidence"] == pytest.approx(1.0, abs=1e-6)
    assert _score_digits(digits, margin=0.0)["stacked_confidence"] == pytest.approx(0.1)


def test_real_stacked_digits_read_confidently_and_evenly() -> None:
    """Real held-out stacked digits: the classifier reads them surely, and the channels' digit histograms are
    nearly even (the held-out pool's own class counts differ a little)."""
    score, pool, extractor = _scorer()
    draws = torch.randint(len(pool), (5_000, 3), generator=torch.Generator().manual_seed(3))
    x = stack(pool, draws)
    feats, logits = extractor(x)
    out = score(Samples(x=x, feats=feats, logits=logits))
    assert out["stacked_confidence"] > 0.97
    assert out["stacked_channel_kl"] < 0.02
