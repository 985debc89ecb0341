"""Verdicts on real tiny training runs (grid25/ring8, CPU, a few seconds each), plus the rules' mechanics."""

import math
from typing import Any

import pytest
import yaml

from gantune.config import HealthConfig, config_from_dict
from gantune.health import HealthMonitor
from gantune.trial import TrialResult, train


def _run(data: str = "grid25", metrics: bool = True, **sections: dict[str, Any]) -> tuple[TrialResult, HealthMonitor]:
    raw: dict[str, Any] = {
        "data": {"name": data},
        "model": {"z_dim": 8, "g_width": 64, "d_width": 64, "g_depth": 2, "d_depth": 2, "g_norm": "none"},
        "optim": {"lr_g": 1e-3, "lr_d": 1e-3},
        "train": {"steps": 1500, "batch_size": 128, "log_every": 50, "device": "cpu"},
        "eval": {"every": 250, "n_samples": 1000, "metrics": ["default"] if metrics else []},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    cfg = config_from_dict(raw)
    monitor = HealthMonitor(cfg.health)
    return train(cfg, should_stop=monitor), monitor


def test_healthy_run_stays_ok() -> None:
    result, monitor = _run()
    assert result.status == "completed" and monitor.status == "ok"
    assert result.steps == 1500
    assert result.last_eval["modes"] >= 5


def test_overpowered_discriminator_collapses() -> None:
    # D learns 100x faster than G: the generator ends up on one mode of the grid
    result, _ = _run(optim={"lr_d": 1e-2, "lr_g": 1e-4})
    assert result.status == "pruned:collapsed", result.reason
    assert result.steps <= 1000  # warm-up (1 eval) + patience (2 evals) at eval every 250 steps
    assert result.last_eval["modes"] <= 3


def test_absurd_learning_rate_is_diverged_by_exploding_gradients() -> None:
    result, _ = _run(optim={"lr_g": 10.0, "lr_d": 10.0})
    assert result.status == "pruned:diverged"
    assert "grad_norm" in result.reason or "non-finite" in result.reason
    assert result.steps <= 100


def test_dominating_discriminator_stalls() -> None:
    # ring8 has no mode at the origin, where an untrained G puts everything: D separates every sample, G
    # (minimax loss, tiny lr) gets no useful gradient. Cheap signals only (no metric set).
    result, _ = _run("ring8", metrics=False, loss={"name": "minimax"}, optim={"lr_d": 1e-2, "lr_g": 1e-6})
    assert result.status == "pruned:stalled", result.reason
    assert "D separated every real from every fake" in result.reason


def _digits(**sections: dict[str, Any]) -> tuple[TrialResult, HealthMonitor, list[dict[str, float]]]:
    """The built-in digits config (16 px, hinge + spectral norm) for 1,000 steps, health at its defaults."""
    from gantune.production import builtin_config

    raw = yaml.safe_load(builtin_config("digits").read_text())
    raw["health"] = {}
    raw["train"].update(steps=1000, log_every=100, device="cpu")
    raw["eval"].update(every=250, n_samples=500)
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    cfg = config_from_dict(raw)
    monitor = HealthMonitor(cfg.health)
    records: list[dict[str, float]] = []
    result = train(cfg, report=records.append, should_stop=monitor)
    return result, monitor, records


def test_healthy_digits_start_low_but_improving_is_not_a_collapse() -> None:
    """The digits spaces' DCGAN (3 convs per resolution, hinge + spectral norm) reads 2 classes, diversity 0.10
    and recall 0 at step 250, and recall stays near 0 to step 1,000, while its FID falls 744 -> 283 and its
    classes climb to 7: "below a floor" alone would call it collapsed; it climbs, so it is left alone."""
    result, monitor, records = _digits(model={"g_depth": 3, "d_depth": 3})
    assert result.status == "completed" and monitor.status == "ok", result.reason
    fids = [r["fid"] for r in records if "fid" in r]
    assert result.last_eval["classes"] >= 6 and result.last_eval["diversity"] > 0.25 and fids[-1] < 0.5 * fids[0]
    low_alone = HealthMonitor(HealthConfig(min_progress=math.inf))  # the rule without "not improving"
    verdicts = [v for r in records if (v := low_alone(r)) is not None]
    assert verdicts and verdicts[0].kind == "collapsed" and verdicts[0].rule == "recall"


def test_collapsed_digits_run_is_caught() -> None:
    """G learning 100x faster than D (lr 1e-2, beta1 0.9, no norms): every sample the same digit from step 250."""
    result, _, _ = _digits(model={"g_norm": "none", "d_norm": "none"}, loss={"name": "nonsaturating"},
                                 optim={"lr_g": 1e-2, "lr_d": 1e-4, "beta1": 0.9, "beta2": 0.999, "ema": 0.0})
    assert result.status == "pruned:collapsed", result.reason
    assert result.steps <= 750  # warm-up check at 250, then two low, flat checks
    assert result.last_eval["classes"] <= 2 and result.last_eval["diversity"] < 0.05


def test_low_signals_count_only_when_not_improving() -> None:
    mon = HealthMonitor(HealthConfig(warmup_evals=1, patience=2, min_progress=0.25))
    rising = [0.02, 0.03, 0.05, 0.08, 0.11, 0.15]  # below the 0.25 floor throughout, but +25% or more each check
    assert all(mon({"step": float(i), "diversity": v}) is None for i, v in enumerate(rising))
    mon = HealthMonitor(HealthConfig(warmup_evals=1, patience=2, min_progress=0.25))
    flat = [0.05, 0.20, 0.22, 0.20]  # one real rise, then stuck low (+10%, then down)
    out = [mon({"step": float(i), "diversity": v}) for i, v in enumerate(flat)]
    assert out[:3] == [None, None, None] and out[3] is not None and out[3].rule == "diversity"


def _records(values: list[float], key: str = "fid") -> list[dict[str, float]]:
    return [{"step": float(i + 1), key: v} for i, v in enumerate(values)]


def test_rise_needs_patience_and_margin() -> None:
    h = HealthConfig(warmup_evals=0, patience=2, rise_factor=3.0, rise_margin=1.0)
    mon = HealthMonitor(h)
    assert all(mon(r) is None for r in _records([10.0, 5.0, 15.0, 5.5, 16.0]))  # never twice in a row
    mon = HealthMonitor(h)
    verdicts = [mon(r) for r in _records([10.0, 0.05, 0.3, 0.9])]  # noise below the absolute margin
    assert verdicts == [None] * 4
    mon = HealthMonitor(h)
    verdicts = [mon(r) for r in _records([10.0, 5.0, 17.0, 20.0])]
    assert verdicts[-1] is not None and verdicts[-1].kind == "diverged"


@pytest.mark.parametrize(("key", "low"), [("diversity", 0.01), ("recall", 0.0), ("class_coverage", 0.1)])
def test_collapse_floors_after_warmup(key: str, low: float) -> None:
    mon = HealthMonitor(HealthConfig(warmup_evals=1, patience=2))
    out = [mon({"step": float(i), "fid": 1.0, key: low}) for i in range(4)]
    assert out[:2] == [None, None]  # warm-up eval, then the first bad one
    assert out[2] is not None and out[2].kind == "collapsed"
