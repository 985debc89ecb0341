"""Verdicts on real tiny training runs (grid25/ring8, CPU, a few seconds each), plus the rules' mechanics."""

from typing import Any

import pytest

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
