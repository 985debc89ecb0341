"""Verdicts on real tiny training runs (grid25/ring8, CPU, a few seconds each), plus the rules' mechanics.

A real run asserts only what holds on every machine (a healthy run is not pruned, a run driven into a regime that
cannot go otherwise is); what a rule does with a particular stream is shown on a stream built here. The runs'
seed is ``GANTUNE_TEST_SEED`` (default 0), to check that their verdicts do not hang on one trajectory.
"""

import math
import os
from typing import Any

import pytest
import yaml

from gantune.catalogue import config_from_dict
from gantune.config import HealthConfig
from gantune.health import HealthMonitor, Verdict
from gantune.trial import TrialResult, train
from tests.conftest import tiny

SEED = int(os.environ.get("GANTUNE_TEST_SEED", "0"))


def _run(data: str = "grid25", metrics: bool = True, **sections: dict[str, Any]) -> tuple[TrialResult, HealthMonitor]:
    raw: dict[str, Any] = {
        "data": {"name": data},
        "model": {"z_dim": 8, "g_width": 64, "d_width": 64, "g_depth": 2, "d_depth": 2, "g_norm": "none"},
        "optim": {"lr_g": 1e-3, "lr_d": 1e-3},
        "train": {"steps": 1500, "batch_size": 128, "log_every": 50, "device": "cpu", "seed": SEED},
        "eval": {"every": 250, "n_samples": 1000, "metrics": ["default"] if metrics else []},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    cfg = config_from_dict(raw)
    monitor = HealthMonitor.for_trial(cfg)
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


def test_exploding_generator_is_diverged_by_its_spread() -> None:
    """LSGAN at lr 0.05 without G normalisation: the samples fly outward (diversity ratio 5-22 by step 250, seeds
    0-3), no sample near a mode. Coverage as the objective (as the search benchmark has it) reads 0 throughout,
    so no rise; the gradients stay finite and below 1e4: only the spread says so, on the quick checks."""
    result, _ = _run(loss={"name": "lsgan"}, optim={"lr_g": 0.05, "lr_d": 0.05, "beta1": 0.5},
                     model={"d_norm": "layer"}, eval={"quick_every": 100},
                     health={"objective": "coverage", "mode": "max"})
    assert result.status == "pruned:diverged", result.reason
    assert "spread beyond the data" in result.reason
    assert result.steps <= 500


def test_ring8_recipe_checked_from_its_first_steps_is_left_alone() -> None:
    """ring8 starts with every sample at the origin, where no mode is: coverage reads 0 at first, and since it
    counts below the HQ gate, only the rising spread tells a slow start from a collapse. The shipped recipe,
    checked every 100 steps from step 0 (no warm-up), trains on (seeds 0-1, lr 2e-3 and 5e-4: 8/8 modes at
    3,000 steps)."""
    from importlib.resources import files

    raw = yaml.safe_load(files("gantune.configs").joinpath("ring8.yaml").read_text())
    raw["train"].update(steps=1000, seed=SEED, checkpoint_every=1000)
    raw["eval"] = {"every": 500, "n_samples": 1000, "quick_every": 100}
    raw["health"] = {"warmup_evals": 0}
    cfg = config_from_dict(raw)
    result = train(cfg, should_stop=HealthMonitor.for_trial(cfg))
    assert result.status == "completed", result.reason
    assert result.last_eval["modes"] >= 4


def test_dominating_discriminator_stalls() -> None:
    # ring8 has no mode at the origin, where an untrained G puts everything: D separates every sample, G
    # (minimax loss, tiny lr) gets no useful gradient. Cheap signals only (no metric set).
    result, _ = _run("ring8", metrics=False, loss={"name": "minimax"}, optim={"lr_d": 1e-2, "lr_g": 1e-6})
    assert result.status == "pruned:stalled", result.reason
    assert "D separated every real from every fake" in result.reason


def _separating(n: int) -> list[dict[str, float]]:
    """Logs where D ranks every real above every fake, the losses still moving."""
    return [{"step": 10.0 * (i + 1), "loss_d": 1.0 + 0.01 * (i % 3), "loss_g": 2.0 - 0.01 * (i % 2), "d_win": 1.0}
            for i in range(n)]


@pytest.mark.parametrize(("loss", "stalls"), [("minimax", True), ("nonsaturating", False), ("hinge", False),
                                              ("lsgan", False), ("wgan", False), ("wgan-gp", False)])
def test_d_separation_stalls_only_a_saturating_loss(loss: str, stalls: bool) -> None:
    """D winning every sample leaves G no gradient only where G's loss saturates on a confident D (minimax);
    WGAN critics, hinge, least squares and the non-saturating loss keep G's gradient there."""
    cfg = config_from_dict({"loss": {"name": loss}, "health": {"d_win_logs": 5}})
    mon = HealthMonitor.for_trial(cfg)
    verdicts = [mon(r) for r in _separating(6)]
    if stalls:
        assert verdicts[:4] == [None] * 4 and verdicts[4] is not None and verdicts[4].rule == "d_wins"
    else:
        assert verdicts == [None] * 6


@pytest.mark.parametrize("penalised", [
    {"loss": {"name": "wgan-gp"}, "optim": {"n_critic": 5, "lr_g": 1e-4, "lr_d": 1e-3, "beta1": 0.5, "beta2": 0.9}},
    {"loss": {"name": "nonsaturating", "r1_weight": 1.0}, "optim": {"lr_g": 1e-4, "lr_d": 1e-3}},
], ids=["wgan-gp", "r1"])
def test_penalised_d_separating_samples_is_not_a_stall(penalised: dict[str, dict[str, Any]]) -> None:
    """A WGAN-GP critic and an R1-regularised non-saturating D (D 10x faster than G) separate every sample for
    long stretches while G learns (here, seeds 0-2: from about step 70 on, and from step 20 to 120 or more,
    while FID falls 0.75 -> 0.5): no stall. Cheap signals only, so no other rule can end these runs."""
    result, monitor = _run("ring8", metrics=False, model={"g_width": 32, "d_width": 32},
                           train={"steps": 200, "batch_size": 64, "log_every": 10}, health={"d_win_logs": 5},
                           **penalised)
    assert result.status == "completed" and monitor.status == "ok", result.reason


def _digits(**sections: dict[str, Any]) -> tuple[TrialResult, HealthMonitor, list[dict[str, float]]]:
    """The built-in digits config (16 px, hinge + spectral norm) for 1,000 steps, health at its defaults."""
    from gantune.production import builtin_config

    raw = yaml.safe_load(builtin_config("digits").read_text())
    raw["health"] = {}
    raw["train"].update(steps=1000, log_every=100, device="cpu", seed=SEED)
    raw["eval"].update(every=250, n_samples=500)
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    cfg = config_from_dict(raw)
    monitor = HealthMonitor.for_trial(cfg)
    records: list[dict[str, float]] = []
    result = train(cfg, report=records.append, should_stop=monitor)
    return result, monitor, records


def test_healthy_digits_run_is_not_a_collapse() -> None:
    """The built-in digits config (seeds 0-3 here: 9-10 classes from step 250, FID about 100 -> 25) is left
    alone. The digits spaces' slower DCGAN (3 convs per resolution) is no test of that: its first 1,000 steps
    depend on the trajectory (seed 0 climbs from 2 classes, seed 2 stays at 2 classes and FID 700-760 to step 750,
    low and flat, and is pruned), so its low-but-climbing start is the stream below."""
    result, monitor, records = _digits()
    assert result.status == "completed" and monitor.status == "ok", result.reason
    fids = [r["fid"] for r in records if "fid" in r]
    assert len(fids) == 4 and fids[-1] < fids[0]


def test_low_but_climbing_digits_stream_is_not_a_collapse() -> None:
    """The digits spaces' DCGAN (depth 3, hinge + spectral norm) on one machine, seed 0: 2 classes, diversity 0.10
    and recall 0 at step 250, recall still 0.006 at step 1,000 while FID falls 744 -> 283 and classes climb to 7.
    "Below a floor" alone calls it collapsed (recall); "low and not improving" leaves it alone."""
    stream = [(250, 744.0, 0.2, 0.10, 0.0), (500, 507.0, 0.5, 0.39, 0.002), (750, 383.0, 0.6, 0.39, 0.0),
              (1000, 283.0, 0.7, 0.70, 0.006)]
    records = [{"step": float(step), "fid": fid, "class_coverage": cov, "diversity": div, "recall": rec}
               for step, fid, cov, div, rec in stream]
    monitor = HealthMonitor(HealthConfig())
    assert [monitor(r) for r in records] == [None] * 4
    low_alone = HealthMonitor(HealthConfig(min_progress=math.inf))  # the rule without "not improving"
    verdicts = [v for r in records if (v := low_alone(r)) is not None]
    assert verdicts and verdicts[0].kind == "collapsed" and verdicts[0].rule == "recall"


def test_collapsed_digits_run_is_caught() -> None:
    """G learning 3,000x faster than D (lr 0.3, beta1 0.9, no norms): its output saturates into one image from
    step 250 (seeds 0-3). At 100x (lr 1e-2) the run only thrashes, and only some seeds collapse."""
    result, _, _ = _digits(model={"g_norm": "none", "d_norm": "none"}, loss={"name": "nonsaturating"},
                           optim={"lr_g": 0.3, "lr_d": 1e-4, "beta1": 0.9, "beta2": 0.999, "ema": 0.0})
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


@pytest.mark.parametrize("start", [0.10, 0.30])
def test_quick_checks_between_evaluations_do_not_change_a_climbing_runs_verdict(start: float) -> None:
    """Diversity climbing x1.2 every 100 steps, evaluated every 200 steps (recall at 0 there): progress was read
    from one check to the next, so quick checks at the odd hundreds halved the interval, the same climb fell below
    min_progress at each check, and the run was stopped as collapsed (at step 300, or by recall at 400) where it
    trained on without them. Progress is read over the evaluation interval, quick checks or not."""
    def stream(quick: bool) -> list[dict[str, float]]:
        records = []
        for step in range(100, 2100, 100):
            diversity = min(start * 1.2 ** (step / 100), 1.0)  # up to the data's level, reached by step 1,300
            if step % 200 == 0:
                records.append({"step": float(step), "diversity": diversity, "recall": 0.0, "eval_s": 0.0})
            elif quick:
                records.append({"step": float(step), "diversity": diversity})
        return records

    def first(quick: bool) -> Verdict | None:
        cfg = tiny(eval={"every": 200}, health={"warmup_evals": 1, "patience": 2, "min_progress": 0.25})
        monitor = HealthMonitor.for_trial(cfg)
        return next((v for r in stream(quick) if (v := monitor(r)) is not None), None)

    plain, quick = first(False), first(True)
    # recall stays 0: once diversity stops climbing (at the data's level) the run is low and flat, in both
    assert plain is not None and quick is not None and plain.rule == quick.rule == "recall"
    at = [int(v.reason.rsplit("step ", 1)[1].rstrip(")")) for v in (plain, quick)]
    assert at[0] >= 1000 and at[1] == at[0]  # after the climb, at the same evaluation


def _records(values: list[float], key: str = "fid") -> list[dict[str, float]]:
    """Full evaluations (they carry ``eval_s``), one a step."""
    return [{"step": float(i + 1), key: v, "eval_s": 0.0} for i, v in enumerate(values)]


def test_quick_checks_do_not_count_as_the_objective() -> None:
    """A quick check scores the same key on fewer samples: stacked_kl read about 0.63 on 1,000 samples against an
    evaluation's best of 0.10 on 26,000, and two quick checks in a row between evaluations 6,000 steps apart
    stopped the stacked recipe trial as diverged at step 9,000."""
    h = HealthConfig(warmup_evals=0, patience=2, rise_factor=3.0, rise_margin=0.5, objective="stacked_kl", mode="min")
    mon = HealthMonitor(h)
    stream = [{"step": 3000.0, "stacked_kl": 0.5}, {"step": 6000.0, "stacked_kl": 0.10, "eval_s": 9.0},
              {"step": 7500.0, "stacked_kl": 0.63}, {"step": 9000.0, "stacked_kl": 0.62},
              {"step": 10500.0, "stacked_kl": 0.60}, {"step": 12000.0, "stacked_kl": 0.08, "eval_s": 18.0}]
    assert [mon(r) for r in stream] == [None] * len(stream)
    # the same values as evaluations do stop it
    mon = HealthMonitor(h)
    verdicts = [mon({**r, "eval_s": 0.0}) for r in stream]
    assert verdicts[3] is not None and verdicts[3].kind == "diverged"


def test_a_collapse_reached_on_quick_checks_says_checks() -> None:
    """Warm-up and patience of the collapse signals count checks, quick ones too (what they are for: a collapse
    caught between evaluations): the reason said "for 2 evaluations" of a verdict given before any evaluation."""
    mon = HealthMonitor(HealthConfig(objective="stacked_kl"), span=6000)
    stream = [{"step": float(step), "stacked_coverage": 0.1} for step in (1500, 3000, 4500)]
    verdicts = [mon(r) for r in stream]
    assert verdicts[:2] == [None, None] and verdicts[2] is not None and verdicts[2].kind == "collapsed"
    assert verdicts[2].reason.endswith("< 0.15 for 2 checks (step 4500)"), verdicts[2].reason


def test_rise_needs_patience_and_margin() -> None:
    h = HealthConfig(warmup_evals=0, patience=2, rise_factor=3.0, rise_margin=0.5)
    mon = HealthMonitor(h)
    assert all(mon(r) is None for r in _records([10.0, 5.0, 15.0, 5.5, 16.0]))  # never twice in a row
    mon = HealthMonitor(h)
    verdicts = [mon(r) for r in _records([10.0, 0.05, 0.3, 0.9])]  # past 3x, but noise next to the range covered
    assert verdicts == [None] * 4
    mon = HealthMonitor(h)
    verdicts = [mon(r) for r in _records([10.0, 5.0, 17.0, 20.0])]
    assert verdicts[-1] is not None and verdicts[-1].kind == "diverged"


def test_rise_margin_in_objective_units_is_refused() -> None:
    from gantune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"health\.rise_margin: must be below 1: a fraction of the range"):
        config_from_dict({"health": {"rise_margin": 1.0}})


def _rise_verdicts(values: list[float], mode: str, key: str = "objective") -> list[str | None]:
    mon = HealthMonitor(HealthConfig(objective=key, mode=mode))  # type: ignore[arg-type]
    return [v.rule if (v := mon(r)) is not None else None for r in _records(values, key)]


FALLING_COVERAGE = [0.2, 0.5, 0.8, 0.1, 0.1]
RISING_FID = [300.0, 120.0, 40.0, 10.0, 200.0, 250.0]
NEGATIVE_RISE = [-1.0, -2.1, -2.9, -3.4, 0.5, 1.0]  # min mode: a loss-like objective that gives up its gains
HEALTHY = {  # improving, then noisy around the best: no rise
    "min": [[300.0, 150.0, 80.0, 60.0, 75.0, 55.0, 70.0, 58.0],  # FID
            [1.8, 0.13, 0.125, 0.07, 0.2, 0.015, 0.04, 0.03],  # FID on 2-D points (grid25)
            [-1.0, -2.1, -2.9, -2.7, -3.3, -3.1, -3.4, -3.2, -3.35]],  # negative values
    "max": [[0.3, 0.6, 0.8, 0.7, 0.85, 0.75, 0.8, 0.78],  # coverage
            [0.02, 0.05, 0.1, 0.08, 0.12, 0.07, 0.11],  # HQ share, low and noisy
            [-50.0, -20.0, -8.0, -9.5, -7.0, -8.5, -7.5]],  # negative values (a log-likelihood)
}


@pytest.mark.parametrize("key", ["class_coverage", "hq"])
def test_rise_fires_for_an_objective_in_0_1(key: str) -> None:
    """Max mode, coverage 0.8 -> 0.1 for two evaluations: diverged (the old ``(best - margin) / factor`` threshold
    was below 0 for any objective in [0, 1], so it never fired)."""
    assert _rise_verdicts(FALLING_COVERAGE, "max", key) == [None] * 4 + ["objective_rise"]


def test_rise_fires_for_fid_far_above_its_best() -> None:
    assert _rise_verdicts(RISING_FID, "min", "fid") == [None] * 5 + ["objective_rise"]


def test_rise_reads_negative_objectives() -> None:
    """Min mode below zero: an improving, noisy stream is left alone (the old ``best * factor + margin`` lay
    below every value there and fired on it), a jump back above zero is a rise."""
    assert _rise_verdicts(HEALTHY["min"][2], "min") == [None] * 9
    assert _rise_verdicts(NEGATIVE_RISE, "min") == [None] * 5 + ["objective_rise"]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_healthy_noisy_streams_do_not_rise(mode: str) -> None:
    for values in HEALTHY[mode]:
        assert set(_rise_verdicts(values, mode)) == {None}, values


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_rise_verdicts_do_not_depend_on_the_objective_scale(scale: float) -> None:
    cases = [(FALLING_COVERAGE, "max"), (RISING_FID, "min"), (NEGATIVE_RISE, "min"), *(
        (v, m) for m, streams in HEALTHY.items() for v in streams)]
    for values, mode in cases:
        assert _rise_verdicts([scale * v for v in values], mode) == _rise_verdicts(values, mode), values


@pytest.mark.parametrize(("key", "low"), [("diversity", 0.01), ("recall", 0.0), ("class_coverage", 0.1)])
def test_collapse_floors_after_warmup(key: str, low: float) -> None:
    mon = HealthMonitor(HealthConfig(warmup_evals=1, patience=2))
    out = [mon({"step": float(i), "fid": 1.0, key: low}) for i in range(4)]
    assert out[:2] == [None, None]  # warm-up eval, then the first bad one
    assert out[2] is not None and out[2].kind == "collapsed"


def _checks(**series: list[float]) -> list[dict[str, float]]:
    """Quick checks (no ``eval_s``), one every 100 steps, carrying the given signals."""
    n = len(next(iter(series.values())))
    return [{"step": 100.0 * (i + 1), **{k: v[i] for k, v in series.items()}} for i in range(n)]


def _first(mon: HealthMonitor, records: list[dict[str, float]]) -> tuple[int, Any] | None:
    return next(((i, v) for i, r in enumerate(records) if (v := mon(r)) is not None), None)


def test_samples_spread_beyond_the_data_diverge() -> None:
    """An exploding generator on grid25 (lsgan, lr 0.015, no G norm: one benchmark trial's checks): samples spread
    10-100x the data's pairwise distance, no sample near a mode. Every collapse floor reads fine or is gated, and
    the ratio's climb counted as progress: no verdict before the ceiling."""
    exploded = _checks(diversity=[10.6, 45.6, 104.0, 84.8], mode_coverage=[0.0] * 4, hq=[0.0] * 4)
    first = _first(HealthMonitor(HealthConfig(warmup_evals=0)), exploded)
    assert first is not None and first[0] == 1
    assert first[1].kind == "diverged" and first[1].rule == "diversity_high", first[1]
    assert "spread beyond the data" in first[1].reason


def test_spread_near_the_data_is_left_alone() -> None:
    """The widest two checks in a row of any grid25 trial that ended above mode coverage 0.05 (731 trials): 1.32."""
    assert _first(HealthMonitor(HealthConfig(warmup_evals=0)), _checks(diversity=[1.3, 1.32, 1.25, 1.32])) is None
    over = _first(HealthMonitor(HealthConfig(warmup_evals=0, max_diversity=1.2)), _checks(diversity=[1.3, 1.32]))
    assert over is not None and over[1].rule == "diversity_high"  # the ceiling is a setting
    off = HealthMonitor(HealthConfig(warmup_evals=0, max_diversity=math.inf))
    assert _first(off, _checks(diversity=[50.0, 60.0, 70.0])) is None


def test_spread_waits_for_the_warmup_and_needs_checks_in_a_row() -> None:
    wide = _checks(diversity=[2.0, 2.0, 2.0, 2.0])
    first = _first(HealthMonitor(HealthConfig(warmup_evals=2)), wide)
    assert first is not None and first[0] == 3  # two warm-up checks, then patience 2
    assert _first(HealthMonitor(HealthConfig(warmup_evals=0)), _checks(diversity=[2.0, 1.0, 2.0, 1.0])) is None


def test_a_plugin_signal_with_a_numeric_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A family may declare its own ceiling as a number; its reason names its label."""
    import gantune.health as health
    from gantune.metrics import CollapseSignal

    sig = CollapseSignal("spread", 0.2, "spread ratio", ceiling=3.0)
    monkeypatch.setattr(health, "collapse_signals", lambda: [sig])
    first = _first(HealthMonitor(HealthConfig(warmup_evals=0)), _checks(spread=[4.0, 5.0]))
    assert first is not None and first[1].rule == "spread_high" and "spread ratio 5 > 3" in first[1].reason


def test_no_sample_near_any_mode_counts_below_the_hq_gate() -> None:
    """Mode coverage counts once ``min_hq`` of the samples are HQ, so a slow run is not called collapsed; but none
    near any mode (coverage 0, HQ 0: grid25 runs that ended at coverage 0.001 or less) is not slow, it is lost."""
    lost = _checks(mode_coverage=[0.0] * 3, hq=[0.0] * 3, diversity=[0.76, 0.69, 0.29])
    first = _first(HealthMonitor(HealthConfig(warmup_evals=0)), lost)
    assert first is not None and first[0] == 1 and first[1].rule == "mode_coverage"
    slow = _checks(mode_coverage=[0.04, 0.04, 0.04], hq=[0.004, 0.002, 0.004], diversity=[0.69, 0.65, 0.61])
    assert _first(HealthMonitor(HealthConfig(warmup_evals=0)), slow) is None  # a mode reached: the gate holds
    # ring8 has no mode at the origin, where an untrained G starts: none near a mode, but spreading out
    spreading = _checks(mode_coverage=[0.0] * 4, hq=[0.0] * 4, diversity=[0.05, 0.1, 0.2, 0.4])
    assert _first(HealthMonitor(HealthConfig()), spreading) is None


def test_a_ratio_climbing_past_the_data_is_no_progress() -> None:
    """Low class coverage with the diversity ratio climbing 2 -> 8: above the data's level a rise is no progress
    toward it, so the low coverage counts (ceiling out of the way)."""
    mon = HealthMonitor(HealthConfig(warmup_evals=0, max_diversity=1e9))
    first = _first(mon, _checks(class_coverage=[0.1, 0.1, 0.1], diversity=[2.0, 4.0, 8.0]))
    assert first is not None and first[1].rule == "class_coverage"


@pytest.mark.parametrize("with_the_log", [True, False], ids=["evaluation-at-a-log", "evaluation-between-logs"])
def test_a_stall_counts_stall_logs_after_the_last_improvement(with_the_log: bool) -> None:
    """Found by a review: an improvement measured at a log counted as one of the ``stall_logs`` frozen logs, so
    19 logs without a better objective were called "no better objective for 20 logs"."""
    h = HealthConfig(stall_logs=20)
    mon = HealthMonitor(h)
    frozen = {"loss_d": 1.0, "loss_g": 1.0}
    improving = {"fid": 5.0, "eval_s": 0.0}
    first = [{"step": 1.0, **frozen, **improving}] if with_the_log else [{"step": 0.5, **improving},
                                                                          {"step": 1.0, **frozen}]
    records = [*first, *({"step": float(i), **frozen} for i in range(2, 30))]
    said = [(int(r["step"]), v.kind) for r in records if (v := mon(r)) is not None]
    # the improvement is at log 1 or before it: logs 2..21 are the 20 without one (log 1 has one, or is the
    # first after the improvement's evaluation: then logs 1..20)
    assert said[0] == ((21 if with_the_log else 20), "stalled"), said


def test_a_record_with_one_loss_is_no_training_log() -> None:
    """A hand-edited ``{"step": 30, "loss_d": 1}`` line in a run's log: ``--resume`` replays the log through the
    monitor, which read every record holding ``loss_d`` as a training log and died in a KeyError on ``loss_g``."""
    monitor = HealthMonitor(HealthConfig(stall_logs=3))
    logs = [{"step": 10.0, "loss_d": 1.0, "loss_g": 2.0}, {"step": 30.0, "loss_d": 1.0},
            {"step": 40.0, "loss_g": 2.0}, {"step": 50.0, "loss_d": 1.0, "loss_g": 2.0}]
    assert monitor.replay(logs) is None
    assert monitor.replay([{"step": 60.0, "loss_d": 1.0, "loss_g": 2.0}]) is not None  # the third log, frozen


def test_an_objective_at_zero_is_not_risen_from_by_any_value_off_it() -> None:
    """A minimised objective whose best is exactly 0 (an even class histogram's class_kl): no factor of 0 is worse
    than it, and 0 -> 0.004 -> 0.005 was 'diverged'. Off 0 by most of the range covered before, it still is."""
    def verdicts(values: list[float]) -> list[Verdict | None]:
        monitor = HealthMonitor(HealthConfig(objective="class_kl", mode="min", warmup_evals=0, patience=2))
        return [monitor(r) for r in _records(values, "class_kl")]

    assert verdicts([0.0, 0.004, 0.005, 0.006]) == [None] * 4
    late = verdicts([2.0, 0.0, 1.5, 1.6])
    assert late[:3] == [None] * 3 and late[3] is not None and late[3].rule == "objective_rise"


def test_quick_checks_are_read_for_progress_against_quick_checks() -> None:
    """An evaluation scores more samples than a quick check, and its recall (or mode coverage) reads higher on
    the same weights: recall climbing 0.004 -> 0.013 over quick checks, 0.012 -> 0.021 over evaluations, was
    read as no progress once the quick checks were compared with the evaluation before them, and the run was
    stopped as collapsed at step 700 while each kind of check climbed by more than ``min_progress``."""
    stream = [(100, 0.004, False), (200, 0.0052, False), (250, 0.012, True), (300, 0.0066, False),
              (400, 0.0075, False), (500, 0.016, True), (600, 0.0085, False), (700, 0.0095, False),
              (750, 0.021, True), (800, 0.0115, False), (900, 0.013, False)]
    mon = HealthMonitor(HealthConfig(warmup_evals=1, patience=2, min_progress=0.25), span=250)
    verdicts = [mon({"step": float(step), "recall": v, **({"eval_s": 1.0} if full else {})})
                for step, v, full in stream]
    assert verdicts == [None] * len(stream)
    flat = HealthMonitor(HealthConfig(warmup_evals=1, patience=2, min_progress=0.25), span=250)
    stuck = [flat({"step": float(step), "recall": 0.005, **({"eval_s": 1.0} if full else {})})
             for step, _, full in stream]
    assert any(v is not None and v.rule == "recall" for v in stuck)  # a run that does not climb is still stopped
