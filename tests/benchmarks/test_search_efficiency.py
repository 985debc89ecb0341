"""benchmarks/search_efficiency.py: its analysis on built event streams, and a smoke run of every arm."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import search_efficiency as eff  # noqa: E402


def _run(events: list[list], trials: dict[int, dict]) -> dict:
    return {"events": events, "trials": trials, "wall_s": 1.0, "trial_steps": 0}


def test_curve_counts_the_steps_of_interleaved_trials_and_keeps_the_best_so_far() -> None:
    # two trials at once (maximised objective: signed -value); evaluations at steps 10 and 20
    events = [[1.0, 0, 5, None, None, None], [1.5, 1, 5, None, None, None], [2.0, 0, 10, 0.3, None, None],
              [2.5, 1, 10, 0.5, None, None], [3.0, 0, 20, 0.4, None, None], [3.5, 1, 20, 0.2, None, None]]
    c = eff.curve(_run(events, {}), sign=-1.0)
    assert c.steps == [15, 20, 30, 40]  # a point per event from the first evaluation on
    assert c.best == [-0.3, -0.5, -0.5, -0.5]
    assert c.at_budget(25) == -0.5 and c.at_budget(15) == -0.3 and c.at_budget(10) == math.inf
    assert c.reach(-0.45, 40) == (20, 2.5)
    assert c.reach(-0.6, 40) is None and c.reach(-0.45, 15) is None


def test_a_restored_pbt_member_counts_only_the_steps_it_trains_after_the_restore() -> None:
    # member 1 is cloned from member 0's checkpoint at step 20 while it was at step 10: it trains 20 -> 25
    events = [[1.0, 0, 20, 0.1, None, None], [2.0, 1, 10, 0.05, None, None], [3.0, 1, 25, None, None, 20.0]]
    assert eff.curve(_run(events, {}), sign=-1.0).steps[-1] == 20 + 10 + 5


def test_labels_put_non_finite_and_the_worst_third_bad_and_the_best_third_good() -> None:
    finals = {0: 0.9, 1: 0.1, 2: 0.5, 3: 0.7, 4: 0.3, 5: math.nan}  # maximised
    events = [[float(n), n, 100, v, None, None] for n, v in finals.items()]
    lab = eff.labels(_run(events, {n: {} for n in finals}), max_steps=100, sign=-1.0)
    assert lab == {0: "good", 3: "good", 2: "mid", 4: "mid", 1: "bad", 5: "bad"}
    # a trial that never reached the last step is bad too, however good it looked before
    events = [[0.0, 0, 50, 0.99, None, None], *[[float(n), n, 100, 0.5, None, None] for n in (1, 2)]]
    assert eff.labels(_run(events, {0: {}, 1: {}, 2: {}}), max_steps=100, sign=-1.0)[0] == "bad"


def test_pooled_labels_take_one_cutoff_for_every_seed() -> None:
    """Seed by seed, a seed where no config trains well counts its least collapsed ones good; pooled, they are not."""
    import health_replay

    finals = {(0, 0): 0.9, (0, 1): 0.8, (0, 2): 0.7, (1, 0): 0.03, (1, 1): 0.02, (1, 2): 0.0}
    rows = [health_replay.Replayed(seed, trial, "mid", None, "", v, 0.0, {}, 0.0)
            for (seed, trial), v in finals.items()]
    lab = {(r.seed, r.trial): r.label for r in health_replay.pooled(rows, sign=-1.0)}
    assert lab == {(0, 0): "good", (0, 1): "good", (0, 2): "mid", (1, 0): "mid", (1, 1): "bad", (1, 2): "bad"}
    assert eff.thirds({0: 0.03, 1: 0.02, 2: 0.0}, sign=-1.0) == {0: "good", 1: "mid", 2: "bad"}  # seed 1 alone


def test_the_ceiling_stops_what_the_held_out_readings_tell_apart_and_nothing_when_they_do_not() -> None:
    """``--ceiling``: a forest fitted on the other seeds' outcomes; readings that differ by outcome let it stop
    every bad config with no good one; readings alike for every config give it nothing to stop by."""
    import health_replay

    def rows(tell: bool) -> list[health_replay.Replayed]:
        return [health_replay.Replayed(seed, trial, label, None, "", 0.0, 0.0, {}, 0.0,
                                       {"modes@400": (0.0 if label == "bad" else 9.0) if tell else 3.0,
                                        "loss_d@475": 1.0 + seed})
                for seed in range(4) for trial, label in enumerate(["bad", "bad", "mid", "good", "good"])]

    points = health_replay.ceiling(rows(tell=True), trees=20)
    assert points[0] == (0, 8)  # no good config stopped, all 8 bad ones
    assert health_replay.ceiling(rows(tell=False), trees=20)[0] == (0, 0)
    # a reading that tells outcomes apart in one seed only (its own key): fitted on the others, nothing to learn
    own = [dataclasses.replace(r, readings={f"seed{r.seed}@400": r.readings["modes@400"]})
           for r in rows(tell=True)]
    assert health_replay.ceiling(own, trees=20)[0] == (0, 0)
    with pytest.raises(ValueError, match="2 seeds or more"):
        health_replay.ceiling([r for r in rows(tell=True) if r.seed == 0], trees=20)
    # --fit-on: fitted on another space's configs alone; what it learned holds here, or (flipped) it does not
    here = [r for r in rows(tell=True) if r.seed == 0]  # one seed is enough: nothing here is fitted on
    assert health_replay.ceiling(here, trees=20, fit_on=rows(tell=True))[0] == (0, 2)
    flipped = [dataclasses.replace(r, label={"bad": "good", "good": "bad"}.get(r.label, r.label))
               for r in rows(tell=True)]
    assert health_replay.ceiling(here, trees=20, fit_on=flipped)[0] == (0, 0)
    # both spaces read up to the earlier 25% of their budgets
    (kept,) = health_replay.before([rows(tell=True)[0]], 450)
    assert kept.readings == {"modes@400": 0.0}


def test_decisions_split_false_prunes_by_who_stopped_them() -> None:
    lab = {0: "good", 1: "good", 2: "good", 3: "bad", 4: "bad", 5: "mid"}
    trials = {0: {"status": "pruned:asha", "steps": 30}, 1: {"status": "pruned:collapsed", "steps": 20},
              2: {"status": "completed", "steps": 100}, 3: {"status": "pruned:diverged", "steps": 10},
              4: {"status": "pruned:asha", "steps": 30}, 5: {"status": "pruned:asha", "steps": 10}}
    c = eff.decisions(_run([], trials), lab, max_steps=100)
    assert c == {"bad": 2, "bad_early": 1, "bad_early_health": 1, "good": 3, "good_asha": 1, "good_health": 1}


def test_counts_are_plural_unless_one() -> None:
    from common import count

    assert (count(1, "config"), count(0, "config"), count(2, "good config")) == ("1 config", "0 configs",
                                                                                 "2 good configs")


def test_rung_noise_is_the_sd_of_one_evaluation() -> None:
    # pairs differ by 0.2 each: one evaluation's sd is sqrt(0.04 / 2)
    events = [[0.0, n, 10, v, v + 0.2, None] for n, v in enumerate([0.1, 0.5, 0.9])]
    noise, spread, n = eff.rung_noise(_run(events, {}), [10])[10]
    assert noise == pytest.approx(math.sqrt(0.02)) and spread == pytest.approx(0.4) and n == 3


def test_spearman_ranks_ties_together_as_scipy_does() -> None:
    from scipy.stats import spearmanr

    pairs = [(0.1, 3.0), (0.4, 1.0), (0.4, 2.0), (0.9, 2.0), (0.2, 5.0), (0.7, 0.5)]
    assert eff.spearman(pairs) == pytest.approx(spearmanr(*zip(*pairs, strict=True))[0])
    assert math.isnan(eff.spearman([(1.0, 2.0), (1.0, 3.0)]))  # one side constant: no correlation to speak of


def test_rung_agreement_pools_seeds_and_reads_the_better_half_by_the_final() -> None:
    # maximised objective (sign -1), rung at step 10, final at 30; trial 4 never reached the end (left out)
    rung_final = {0: (0.1, 0.9), 1: (0.2, 0.8), 2: (0.3, 0.1), 3: (0.4, 0.2)}
    seed0 = _run([[0.0, n, step, v, None, None] for n, (r, f) in rung_final.items() for step, v in ((10, r), (30, f))]
                 + [[0.0, 4, 10, 0.5, None, None]], {})
    seed1 = _run([[0.0, n, step, v, None, None] for n, (r, f) in rung_final.items() for step, v in ((10, f), (30, f))],
                 {})
    rho, rho_top, n = eff.rung_agreement([seed0, seed1], [10], max_steps=30, sign=-1.0)[10]
    assert n == 8
    # the better half by the final: trials 0 and 1 of both seeds; seed 0 ranks them backwards at the rung
    assert rho_top == pytest.approx(eff.spearman([(-0.1, -0.9), (-0.2, -0.8), (-0.9, -0.9), (-0.8, -0.8)]))
    assert rho == pytest.approx(eff.spearman([(-r, -f) for r, f in rung_final.values()]
                                             + [(-f, -f) for _, f in rung_final.values()]))


def test_grace_evals_moves_the_first_rung_of_the_asha_arms_only_and_a_kept_arm_must_match(tmp_path: Path) -> None:
    import argparse
    import json

    preset = dataclasses.replace(eff.PRESETS["grid25"], grace_evals=3)
    assert eff.arm_settings("gantune", preset, 0)["pruning"]["grace_evals"] == 3
    assert eff.arm_settings("pruned_noise", preset, 0)["pruning"]["noise_aware"] is True  # the arm's own kept
    assert "grace_evals" not in eff.arm_settings("random", preset, 0)["pruning"]
    assert "grace_evals" not in eff.arm_settings("pbt", preset, 0)["pruning"]  # read by nothing under PBT
    assert preset.rungs(1, 3) == [750] and eff.PRESETS["grid25"].rungs(1, 3) == [250, 750]
    # a random arm kept without the option is the same run (no rung); a gantune arm kept without it is not
    for arm in ("random", "gantune"):
        kept = tmp_path / "grid25" / "seed0" / f"{arm}.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps({"events": [], "trials": {}, "wall_s": 1.0, "trial_steps": 0, "quick_every": None}))
    args = argparse.Namespace(seeds=1, arms=["random"], out=tmp_path, preset="grid25", fresh=False)
    runs: dict = {"random": {}}
    eff.run_all(args, preset, runs)
    assert runs["random"][0]["trial_steps"] == 0
    with pytest.raises(SystemExit, match="kept with --grace-evals None, asked for 3"):
        eff.run_all(argparse.Namespace(**{**vars(args), "arms": ["gantune"]}),
                    preset, {"gantune": {}})


def test_the_sampler_arms_differ_from_gantunes_arm_in_the_sampler_only() -> None:
    """What they measure (the sampler's share of the search's result) holds only if the scheduling, trials and
    budget are gantune's arm's."""
    preset = eff.PRESETS["grid25"]
    base = eff.arm_settings("gantune", preset, 3)
    assert base["trials"] == 48 and base["pruning"] == eff.ASHA_HEALTH
    assert eff.arm_settings("random_asha", preset, 3) == {**base, "sampler": "random"}
    assert eff.arm_settings("gantune_group", preset, 3) == {**base, "sampler_options": {"group": True}}
    assert eff.arm_settings("gantune_startup10", preset, 3) == {**base, "sampler_options": {"n_startup_trials": 10}}
    shipped = eff.arm_settings("gantune_defaults", preset, 3)
    assert eff.arm_settings("gantune_defaults_group", preset, 3) == {**shipped, "sampler_options": {"group": True}}
    assert shipped == {**base, "warm_start": True, "defaults": dict(eff.SEARCH_DEFAULTS)}
    assert {"random_asha", "gantune_group", "gantune_defaults_group"} <= set(eff.ASHA_ARMS)


#: one arm of each way an arm runs: gantune's search without pruning, stock Ray Tune, PBT, noise-aware ASHA (the
#: others are the first with other settings); the decision and noise tables need random and a pruned arm
SMOKE_ARMS = ("random", "stock", "pbt", "pruned_noise", "health_only")


def test_each_kind_of_arm_runs_and_the_tables_print(tmp_path: Path) -> None:
    """And ``health_replay.py`` replays the verdicts on the random arm's trial folders, finding the stops the
    ``health_only`` arm made. The arms' temporary folders go under ``tmp_path`` (they stayed in /tmp)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "RAY_TMPDIR": tempfile.gettempdir()}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"), "--preset", "smoke",
                           "--arms", *SMOKE_ARMS, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for arm in SMOKE_ARMS:
        assert (tmp_path / "smoke" / "seed0" / f"{arm}.json").is_file()
        assert any(line.startswith(arm + " ") for line in proc.stdout.splitlines()), proc.stdout
    assert "bad configs stopped before 25% of their steps" in proc.stdout
    assert "evaluation noise at ASHA's rungs" in proc.stdout
    # the wall column named no unit; with no good config stopped, the line ended in ": " and nothing
    assert "wall to B (s)" in proc.stdout and not any(line.endswith(": ") for line in proc.stdout.splitlines())
    assert (tmp_path / "search_efficiency_smoke.png").stat().st_size > 10_000
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "health_replay.py"), "--preset", "smoke",
                           "--out", str(tmp_path), "--check", "health_only"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "smoke, seeds [0], health as configured, good and bad by thirds seed by seed"
    assert lines[1].startswith("bad stopped before 25%")
    assert lines[-1] == "health_only: the same stops", proc.stdout
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "health_replay.py"), "--preset", "smoke",
                           "--out", str(tmp_path), "--pooled", "--ceiling", "--fit-on", "smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("smoke, seeds [0], health as configured, good and bad by thirds of every seed's")
    assert proc.stdout.splitlines()[1] == lines[1]  # one seed pooled: the same labels (finals read from its files)
    # one seed: nothing held out to fit on; --fit-on (a preset's kept arm, here its own): the smoke run's 40 steps
    # log nothing before step 10
    assert proc.stdout.splitlines()[-2:] == ["--ceiling: needs bad and good configs of 2 seeds or more",
                                             "--fit-on: no readings before 25% of the budget"], proc.stdout


def test_a_replay_stops_where_the_trial_loops_monitor_would(tmp_path: Path) -> None:
    """The first verdict on the logged records, with the config's thresholds or changed ones."""
    import json

    import health_replay
    import yaml

    from gantune.catalogue import config_from_dict

    folder = tmp_path / "trial-0000"
    folder.mkdir()
    cfg = config_from_dict({"name": "t", "data": {"name": "grid25"}}, "test").to_dict()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    records = [{"step": s, "loss_d": 1.0 + s / 100, "loss_g": 1.0, "grad_norm_g": 1.0,
                "grad_norm_d": 50.0 if s >= 30 else 1.0} for s in range(10, 60, 10)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert health_replay.replay(folder, {})[:2] == (None, "")  # a grad norm of 50 is far below max_grad_norm
    step, rule, logged = health_replay.replay(folder, {"max_grad_norm": 20})
    assert (step, rule, len(logged)) == (30, "grad_norm_d", 5)


def test_a_verdict_at_the_last_step_stops_no_good_config_in_the_replay() -> None:
    """The live table (``decisions``) counts a good trial stopped only below the budget; the replay counted a
    verdict on the last record too (found by a review): one definition for both."""
    import health_replay

    rows = [health_replay.Replayed(0, t, "good", step, "collapsed", 0.5, 0.0, {}, 0.0)
            for t, step in enumerate((None, 500, 2000))]
    assert health_replay.summary(rows, 2000)["good_stopped"] == 1
    live = {"trials": {0: {"steps": 2000, "status": "completed"}, 1: {"steps": 500, "status": "pruned:collapsed"},
                       2: {"steps": 2000, "status": "pruned:collapsed"}}}
    assert eff.decisions(live, dict.fromkeys(range(3), "good"), 2000)["good_health"] == 1


def test_ties_at_a_third_are_labelled_alike_whatever_the_trial_numbers() -> None:
    """Three configs ending at coverage 0.0 where the worst third holds two: the one drawn first was "mid", so the
    counts of bad configs stopped depended on the order trials were numbered."""
    finals = {0: 0.0, 1: 0.5, 2: 0.0, 3: 0.4, 4: 0.3, 5: 0.0}
    expected = {0: "bad", 1: "good", 2: "bad", 3: "good", 4: "mid", 5: "bad"}
    assert eff.thirds(finals, sign=-1.0) == expected
    assert eff.thirds(dict(reversed(finals.items())), sign=-1.0) == expected
    assert eff.thirds({0: math.nan, 1: 0.2, 2: 0.1}, sign=-1.0) == {0: "bad", 1: "good", 2: "mid"}


def test_steps_to_target_where_half_the_seeds_reach_it_is_a_bound_not_more_than_b() -> None:
    """Ten seeds, five reaching the target at 30-39% of B: the median is half the 5th and one past B, so at least
    69% of B; it printed "> B" and "never", as for an arm that reached it in no seed."""
    reached = [(300.0 + 20 * i, 10.0 + i) for i in range(5)]
    assert eff.to_target(reached, [50.0] * 5, 1000.0) == ("> 69.0% of B", "> 32 s")
    assert eff.to_target(reached[:4], [50.0] * 6, 1000.0) == ("> B", "never")
    assert eff.to_target(reached, [50.0] * 4, 1000.0) == ("38.0% of B", "14 s")  # nine seeds: the 5th
