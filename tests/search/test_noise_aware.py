"""Noise-aware ASHA (``pruning.noise_aware``): the evaluation noise measured from repeated evaluations, and the
stops it turns into CONTINUE, driven with built result streams (no Ray session); and one short real search."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from gantune.health import OBJECTIVE_REPEAT
from gantune.noise import rung_noise
from gantune.sampling.space import load_space
from gantune.search import SearchOptions, run_search
from gantune.search.runner import check_run
from gantune.search.scheduler import AshaStop, NoiseAwareASHA, RecordingASHA, Rescue, make_scheduler

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
#: four trials that each beat every earlier one at the first rung (ASHA keeps them all), measured twice: the
#: repeats lie 0.1 off, so one evaluation's noise is sqrt(0.01 / 2) ~ 0.071; the rung's cutoff is then 2.5
CALIBRATION = [(4.0, 4.1), (3.0, 2.9), (2.0, 2.1), (1.0, 0.9)]
NEAR = (2.55, 2.6)  # worse than the cutoff 2.5 by 0.05: within one noise sd
FAR = (5.0, 5.1)  # worse by 2.45: far outside it


def test_rung_noise_is_the_sd_of_one_evaluation() -> None:
    assert rung_noise([(1.0, 1.2), (2.0, 1.8)]) == pytest.approx(math.sqrt(0.04 / 2))
    assert rung_noise([(3.0, 3.0), (5.0, 5.0), (0.0, 0.0)]) == 0.0
    assert math.isnan(rung_noise([(1.0, 1.2)]))  # one difference is no estimate
    assert math.isnan(rung_noise([]))
    assert rung_noise([(1.0, 1.2), (2.0, math.nan), (2.0, 1.8)]) == pytest.approx(math.sqrt(0.04 / 2))


def _scheduler(cls: type[RecordingASHA], mode: str, **kwargs: Any) -> RecordingASHA:
    return cls({}, time_attr="step", metric="objective", mode=mode, max_t=99, grace_period=10,
               reduction_factor=2, stop_last_trials=False, **kwargs)


def _drive(sched: RecordingASHA, stream: list[tuple[float, float]], sign: float = 1.0, repeat: bool = True,
           step: int = 10) -> list[tuple[Trial, str]]:
    """One new trial per pair, each reporting ``sign *`` its pair at ``step``; its decisions."""
    out = []
    for value, again in stream:
        trial = Trial("__fake", config={}, stub=True)
        sched.on_trial_add(None, trial)  # type: ignore[arg-type]
        result = {"step": float(step), "objective": sign * value, **({OBJECTIVE_REPEAT: sign * again} if repeat
                                                                    else {})}
        out.append((trial, sched.on_trial_result(None, trial, result)))
    return out


@pytest.mark.parametrize(("mode", "sign"), [("min", 1.0), ("max", -1.0)])
def test_a_trial_within_the_noise_of_the_cutoff_continues_and_one_far_below_stops(mode: str, sign: float) -> None:
    sched = _scheduler(NoiseAwareASHA, mode)
    assert isinstance(sched, NoiseAwareASHA)
    decisions = _drive(sched, [*CALIBRATION, NEAR, FAR], sign)
    assert [d for _, d in decisions] == [CONTINUE] * 5 + [STOP]
    (near, _), (far, _) = decisions[4], decisions[5]
    sigma = rung_noise([*CALIBRATION, NEAR])
    assert list(sched.rescued) == [near.trial_id]
    rescue = sched.rescued[near.trial_id]
    assert isinstance(rescue, Rescue) and (rescue.step, rescue.value, rescue.sigma) == (10, sign * 2.55, sigma)
    assert rescue.cutoff == pytest.approx(sign * 2.5)  # in the objective's units, whichever the mode
    assert sched.rescues == [(near.trial_id, sched.rescued[near.trial_id])]
    assert sched.noise(10.0) == pytest.approx(rung_noise([*CALIBRATION, NEAR, FAR])) and set(sched.pairs) == {10.0}
    # a trial stopped anyway is recorded as plain ASHA records it
    assert sched.stopped == {far.trial_id: AshaStop(10, sign * 5.0)}
    assert near.trial_id not in sched.stopped
    assert sched.debug_string().startswith("Using AsyncHyperBand: num_stopped=1\n")  # Tune's status line


def test_plain_asha_stops_the_trial_the_noise_aware_one_keeps() -> None:
    plain = _scheduler(RecordingASHA, "min")
    decisions = _drive(plain, [*CALIBRATION, NEAR])
    assert decisions[-1][1] == STOP and decisions[-1][0].trial_id in plain.stopped


def test_without_repeats_or_outside_the_margin_noise_aware_asha_decides_as_plain_asha() -> None:
    unmeasured = _scheduler(NoiseAwareASHA, "min")  # no objective_repeat: no noise known
    assert [d for _, d in _drive(unmeasured, [*CALIBRATION, NEAR], repeat=False)][-1] == STOP
    assert isinstance(unmeasured, NoiseAwareASHA) and not unmeasured.rescued
    narrow = _scheduler(NoiseAwareASHA, "min", noise_margin=0.5)  # 0.05 away > 0.5 sd ~ 0.033
    assert [d for _, d in _drive(narrow, [*CALIBRATION, NEAR])][-1] == STOP
    assert isinstance(narrow, NoiseAwareASHA) and not narrow.rescued


def test_each_rung_has_its_own_noise() -> None:
    """Pairs measured at the first rung say nothing of the second: there, two pairs are needed again."""
    sched = _scheduler(NoiseAwareASHA, "min")
    assert isinstance(sched, NoiseAwareASHA)
    _drive(sched, CALIBRATION)
    first = _drive(sched, [(3.0, 3.0)], step=20)  # the second rung's first result: nothing to compare
    assert first[0][1] == CONTINUE and set(sched.pairs) == {10.0, 20.0} and math.isnan(sched.noise(20.0))


SPACE = """
name: n
search:
  trials: 3
  sampler: random
  max_steps: 60
  eval_every: 20
  pruning: {pruning}
data: {{name: grid25}}
optim:
  lr_g: {{float: [1.0e-4, 1.0e-2], log: true}}
"""


@pytest.mark.parametrize(("pruning", "kind"), [("{grace_evals: 1, reduction_factor: 2}", RecordingASHA),
                                                ("{grace_evals: 1, noise_aware: true, noise_margin: 2}",
                                                 NoiseAwareASHA)])
def test_the_search_settings_choose_the_scheduler(tmp_path: Path, pruning: str, kind: type) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(SPACE.format(pruning=pruning))
    sched = make_scheduler(load_space(path), {}, [])
    assert type(sched) is kind
    if isinstance(sched, NoiseAwareASHA):
        assert sched.noise_margin == 2.0


@pytest.mark.parametrize("mode", ["minimize", "maximize"])
def test_a_resumed_searchs_asha_starts_from_the_rungs_its_ended_trials_reached(tmp_path: Path, mode: str) -> None:
    """On --resume ASHA's rungs started empty: the first trial at each rung went on whatever its value, and trials
    worse than the cutoff that had stopped an earlier one ran their whole budget (a review's toy search: trials 3
    and 4 completed below trial 2's pruned value). Here two ended trials (and a failed and a running one) are in
    the rungs at 20 and 40 before any trial of this invocation reports."""
    import optuna
    from ray.tune.experiment import Trial

    path = tmp_path / "n.yaml"
    objective = "fid" if mode == "minimize" else "hq"
    path.write_text(SPACE.format(pruning="{grace_evals: 1, reduction_factor: 2}")
                    .replace("  max_steps: 60", f"  max_steps: 60\n  objective: {objective}\n  direction: {mode}"))
    space = load_space(path)
    study = optuna.create_study(direction=mode)
    for values, state in (({20: 1.0, 40: 2.0}, optuna.trial.TrialState.COMPLETE),
                          ({20: 3.0}, optuna.trial.TrialState.PRUNED), ({20: 5.0}, optuna.trial.TrialState.FAIL),
                          ({20: 9.0}, optuna.trial.TrialState.RUNNING)):
        t = study.ask()
        for step, value in values.items():
            t.report(value, step)
        if state != optuna.trial.TrialState.RUNNING:
            study.tell(t, 0.0 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    sched = make_scheduler(space, {}, [], study=study)
    assert isinstance(sched, RecordingASHA)
    op = 1.0 if mode == "maximize" else -1.0
    rungs = dict(sched._brackets[0]._rungs)
    assert rungs[20.0] == {"study-trial-0": op * 1.0, "study-trial-1": op * 3.0, "study-trial-2": op * 5.0}
    assert rungs[40.0] == {"study-trial-0": op * 2.0}
    newcomer = Trial("__fake", config={}, stub=True)
    sched.on_trial_add(None, newcomer)  # type: ignore[arg-type]
    worst = 6.0 if mode == "minimize" else 0.5  # worse than every ended trial at the rung: stopped there at once
    assert sched.on_trial_result(None, newcomer, {"step": 20.0, "objective": worst}) == "STOP"  # type: ignore[arg-type]


@pytest.mark.parametrize(("pruning", "max_steps", "warning"), [
    ("{grace_evals: 3}", None, r"^warning: ASHA's first rung falls at step 60 \(grace_evals 3 x eval_every 20\), not "
     r"before max_steps 60: it will stop no trial; lower pruning.grace_evals or eval_every, or set pruning.asha: "
     r"false to run every trial to the end$"),
    ("{grace_evals: 1}", 20, r"^warning: ASHA's first rung falls at step 20 \(grace_evals 1 x eval_every 20\)"),
    ("{scheduler: pbt, pbt: {interval_evals: 3}}", None, r"^warning: PBT's first exploit falls at step 60 .*: no "
     r"member will clone another; lower pruning.pbt.interval_evals or eval_every$"),
    ("{grace_evals: 2}", None, None), ("{asha: false}", None, None),
    ("{asha: false, noise_aware: false, grace_evals: 2}", None, None),  # at their defaults: no choice to refuse
])
def test_a_scheduler_that_can_decide_nothing_is_said_before_the_search(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pruning: str, max_steps: int | None,
        warning: str | None) -> None:
    """ASHA whose first rung fell at or past the last step (a space's grace_evals, or ``--max-steps`` capping
    eval_every: grid25's 24,000 steps cut to 4,000) ran as no scheduler without a word: every trial spent the whole
    budget, and the summary's "0% saved" was the only trace."""
    path = tmp_path / "n.yaml"
    path.write_text(SPACE.format(pruning=pruning) + "train: {log_every: 10}\n")  # logs before the last step
    space = load_space(path)
    settings, notes = check_run(space, SearchOptions(runs_dir=str(tmp_path / "runs"), max_steps=max_steps))
    err = "\n".join(f"warning: {n}" for n in notes)  # said once every check has passed
    if warning is None:
        assert err == "" and settings.idle_scheduler() is None
        return
    assert re.match(warning, err) and "\n" not in err, err
    space.settings = settings
    if settings.pruning.scheduler == "asha":
        assert type(make_scheduler(space, {}, [])) is FIFOScheduler


def test_export_reruns_say_nothing_of_settings_the_user_cannot_change(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``gantune export --seeds`` re-runs a trial at ``--steps``: its search would have warned (twice: export and
    the search both check the run) that ASHA or the quick checks decide nothing, of settings export sets itself."""
    from gantune.export import RerunSpace
    from gantune.sampling.settings import SearchSettings

    settings = SearchSettings.model_validate({"trials": 2, "max_steps": 20, "eval_every": 20, "quick_every": 40,
                                              "sampler": "random", "objective": "coverage"})
    assert len(settings.warnings()) == 2
    assert check_run(RerunSpace("r", settings, {0: {}}, 2, 20), SearchOptions(runs_dir=str(tmp_path / "runs")))[1] == []


def test_a_noise_aware_search_runs_with_every_evaluation_measured_twice(tmp_path: Path, ray_session: object,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "n.yaml"
    path.write_text(SPACE.format(pruning="{grace_evals: 1, reduction_factor: 2, noise_aware: true, health: false}")
                    .replace("trials: 3", "trials: 3\n  concurrency: 2")
                    + "model: {z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}\n"
                    + "train: {batch_size: 32, log_every: 20}\neval: {n_samples: 200}\n")
    summary = run_search(load_space(path), SearchOptions(storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                                         runs_dir=str(tmp_path / "runs"), quiet=True))
    assert summary["trials"] == 3 and summary["best"] is not None, summary["counts"]
    runs = sorted((tmp_path / "runs" / "n").glob("trial-*"))
    assert len(runs) == 3
    for run in runs:
        lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        evaluations = [ln for ln in lines if "fid" in ln]
        assert evaluations and all(math.isfinite(ln["repeat/fid"]) for ln in evaluations), run


def test_the_study_keeps_where_a_trial_was_rescued() -> None:
    from ray.tune.experiment import Trial as TuneTrial

    from gantune.events import REASON_KEY, RULE_KEY, STATUS_KEY
    from gantune.search.book import SearchBook
    from gantune.search.scheduler import RESCUED_ATTR

    study = optuna.create_study()
    kept, plain = TuneTrial("__fake", config={}, stub=True), TuneTrial("__fake", config={}, stub=True)
    asked = {kept.trial_id: study.ask(), plain.trial_id: study.ask()}
    rescues = [(kept.trial_id, Rescue(20, 2.55, 2.5, 0.07)), (plain.trial_id + "x", Rescue(20, 9.0, 8.0, 1.0)),
               (kept.trial_id, Rescue(60, 1.4, 1.38, 0.05))]
    book = SearchBook(study, asked, {}, ["fid"], ["minimize"], total=2, done_before=0, quiet=True,
                      rescues=rescues)
    for trial in (kept, plain):
        trial.run_metadata.last_result = {"step": 100.0, STATUS_KEY: "completed", REASON_KEY: "", RULE_KEY: "",
                                          "final/fid": 1.2}
        book.on_trial_complete(0, [], trial)
    first, second = study.trials
    assert first.user_attrs[RESCUED_ATTR] == [{"step": 20, "value": 2.55, "cutoff": 2.5, "sigma": 0.07},
                                              {"step": 60, "value": 1.4, "cutoff": 1.38, "sigma": 0.05}]
    assert second.user_attrs[RESCUED_ATTR] == [] and second.value == 1.2  # written at every ending


def test_a_trial_its_own_verdict_stops_at_a_rung_is_no_rescue() -> None:
    """Within the noise of the cutoff, a trial whose health verdict fired on that report was recorded as rescued
    (``asha_rescued``: where ASHA "kept" it) though it ended there, pruned by its verdict."""
    from gantune.search.trainable import STOPPING_KEY

    sched = _scheduler(NoiseAwareASHA, "min")
    assert isinstance(sched, NoiseAwareASHA)
    _drive(sched, CALIBRATION)
    trial = Trial("__fake", config={}, stub=True)
    sched.on_trial_add(None, trial)  # type: ignore[arg-type]
    result = {"step": 10.0, "objective": NEAR[0], OBJECTIVE_REPEAT: NEAR[1], STOPPING_KEY: "pruned:collapsed"}
    assert sched.on_trial_result(None, trial, result) == CONTINUE  # it ends with its verdict
    assert sched.rescues == [] and sched.stopped == {}


def test_export_reruns_of_a_noise_aware_search_evaluate_once() -> None:
    """The trials of a noise-aware search store ``eval.repeat: true`` (ASHA's noise estimate); the seed re-runs
    copied it and paid every evaluation twice, with no ASHA to read the second (``exported_config`` unset it)."""
    from gantune.export import RerunSpace
    from gantune.sampling.settings import SearchSettings

    settings = SearchSettings.model_validate({"trials": 2, "max_steps": 20, "eval_every": 20, "sampler": "random",
                                              "objective": "coverage"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for noise_aware in (True, False):  # a user's own eval.repeat (no noise-aware search set it) stays
        space = RerunSpace("r", settings, {3: {"eval": {"repeat": True, "n_samples": 100}}}, 2, 20, once=noise_aware)
        raw = space.sample(study.ask())
        assert raw["eval"]["repeat"] is not noise_aware and raw["eval"]["n_samples"] == 100
