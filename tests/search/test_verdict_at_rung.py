"""A health verdict that fires on the report ASHA decides a rung on is the trial's own stop, not ASHA's.

The trial loop asks ``should_stop`` before it reports, so that report says the trial ends there; ASHA still
counts its value at the rung (the cutoffs other trials meet stay as they were) but leaves the stop, and its
reason, to the verdict. Before, the report went first, ASHA stopped the trial at it, and the study and MLflow
filed a collapse or a divergence as "worse than the rung cutoff".
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from gantune.health import HealthMonitor
from gantune.sampling.space import load_space
from gantune.search import SearchOptions, run_search
from gantune.search.scheduler import RecordingASHA
from gantune.search.trainable import STOPPING_KEY, Reporter
from tests.conftest import tiny

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _decisions(reports: list[dict[str, float | str]]) -> tuple[RecordingASHA, list[str]]:
    sched = RecordingASHA({}, time_attr="step", metric="objective", mode="min", max_t=99, grace_period=10,
                          reduction_factor=2, stop_last_trials=False)
    out = []
    for report in reports:
        trial = Trial("__fake", config={}, stub=True)
        sched.on_trial_add(None, trial)  # type: ignore[arg-type]
        out.append(sched.on_trial_result(None, trial, {"step": 10.0, **report}))
    return sched, out


def test_asha_leaves_the_stop_to_a_verdict_on_the_same_report_and_still_ranks_its_value() -> None:
    sched, decisions = _decisions([{"objective": 2.0}, {"objective": 1.0},
                                   {"objective": 9.0, STOPPING_KEY: "pruned:collapsed"}, {"objective": 1.8}])
    # the third is worse than the cutoff (1.5): not ASHA's stop, but its 9.0 counts at the rung, so the
    # fourth meets a cutoff of 2.0 and goes on
    assert decisions == [CONTINUE] * 4 and sched.stopped == {}
    assert "num_stopped=0" in sched.debug_string()  # Ray's own count (the status line) agrees
    _, without = _decisions([{"objective": 2.0}, {"objective": 1.0}, {"objective": 1.8}])
    assert without == [CONTINUE, CONTINUE, STOP]  # the same fourth trial, against the first two alone
    _, plain = _decisions([{"objective": 2.0}, {"objective": 1.0}, {"objective": 9.0}])
    assert plain == [CONTINUE, CONTINUE, STOP]  # without a verdict ASHA stops it


def test_the_report_of_the_step_a_verdict_fired_at_says_so(tmp_path: Path) -> None:
    sent: list[dict[str, object]] = []
    monitor = HealthMonitor.for_trial(tiny(health={"max_grad_norm": 10.0}))
    report = Reporter("fid", trial=0, run_dir=tmp_path, checkpoint_every=None, steps=60, monitor=monitor,
                      send=lambda out, _: sent.append(out))
    for record in ({"step": 10.0, "grad_norm_d": 1.0}, {"step": 20.0, "grad_norm_d": 50.0, "fid": 3.0}):
        monitor(record)  # the loop asks the monitor first
        report(record)
    assert [r.get(STOPPING_KEY) for r in sent] == [None, "pruned:diverged"]


SPACE = """
name: v
search:
  trials: 4
  concurrency: 1
  sampler: random
  max_steps: 60
  eval_every: 20
  pruning: {grace_evals: 1, reduction_factor: 2, asha: true, health: true}
data: {name: grid25}
model: {z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}
optim:
  lr_g: {float: [1.0e-4, 1.0e-2], log: true}
train: {batch_size: 32, log_every: 20}
eval: {n_samples: 200}
health: {max_grad_norm: 1.0e-9}
"""


def test_a_search_files_a_verdict_at_a_rung_as_the_verdict(tmp_path: Path, ray_session: object,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every trial's D gradient norm is past the threshold at its first report, step 20, ASHA's rung: each
    ends ``pruned:diverged`` by that rule. Before, every trial worse than the ones before it at the rung (one
    in two, by chance) was filed as ASHA's."""
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "v.yaml"
    path.write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = run_search(load_space(path), SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"),
                                                         quiet=True))
    assert {k: n for k, n in summary["counts"].items() if n} == {"pruned:diverged": 4}, summary["counts"]
    study = optuna.load_study(study_name="v", storage=storage)
    assert {t.user_attrs["gantune_rule"] for t in study.trials} <= {"grad_norm_g", "grad_norm_d"}
    for run in sorted((tmp_path / "runs" / "v").glob("trial-*")):
        steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == [20], run


def test_under_pbt_the_state_a_verdict_fired_on_is_no_checkpoint(tmp_path: Path) -> None:
    """A PBT member's evaluation report carries its checkpoint, which another member may clone; the one of the
    step its verdict fired at held the failed state."""
    from gantune.rundir import CHECKPOINT

    kept: list[object] = []
    monitor = HealthMonitor.for_trial(tiny(health={"max_grad_norm": 10.0}))
    report = Reporter("fid", trial=0, run_dir=tmp_path, checkpoint_every=10, steps=60, monitor=monitor,
                      send=lambda out, ckpt: kept.append(ckpt))
    for record in ({"step": 10.0, "grad_norm_d": 1.0, "fid": 4.0, "eval_s": 1.0},
                   {"step": 20.0, "grad_norm_d": 50.0, "fid": 3.0, "eval_s": 1.0}):
        (tmp_path / "part").write_bytes(b"state")  # the loop saves each evaluation's state before reporting it
        (tmp_path / "part").replace(tmp_path / CHECKPOINT)
        monitor(record)
        report(record)
    assert kept[0] is not None and kept[1] is None
