"""A search driver killed while its MLflow thread was behind: the study has trials that ended, MLflow a child
still RUNNING with part of its history (or KILLED by a Ctrl-C right after the trial's end), or none at all.
``--resume`` finishes them from the run directories (real tiny runs, real sqlite stores, no Ray)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from gantune.events import REASON_KEY, RULE_KEY, STATUS_KEY
from gantune.rundir import RunDir, trial_dirname
from gantune.sampling.space import load_space
from gantune.sampling.study import STUDY_UID, open_study
from gantune.tracking import _SKIP, MENDED, MlflowTracker
from gantune.trial import train
from tests.conftest import tiny, tiny_space


def test_resume_finishes_the_trials_mlflow_had_not_heard_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where a local store keeps artifacts
    (tmp_path / "space.yaml").write_text(tiny_space("mend", 2, 40, 20, [0.001], log_every=10, n_samples=200))
    space = load_space(tmp_path / "space.yaml")
    study = optuna.create_study(study_name="mend", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ends = [("completed", "", ""), ("pruned:collapsed", "one mode", "diversity"), ("completed", "", "")]
    runs = []
    client = MlflowClient(uri)
    killed = MlflowTracker(uri, "mend")
    killed.connect()
    killed.search_started(study, space, [])
    for number, (status, reason, rule) in enumerate(ends):
        run_dir = tmp_path / "runs" / "mend" / trial_dirname(number)
        train(tiny(train={"steps": 40}, eval={"every": 20, "metrics": ["fid"]}), run_dir=run_dir)
        runs.append(RunDir(run_dir).read_metrics())
        trial = study.ask({"optim.lr_g": optuna.distributions.CategoricalDistribution([0.001])})
        for key, value in {"run_dir": str(run_dir), "config": {"note": f"trial {number}"}, STATUS_KEY: status,
                           REASON_KEY: reason, RULE_KEY: rule, "steps": 40, "provenance": {"extractor": "coords"},
                           "eval_fraction": 0.25, "trial_wall_s": 3.5}.items():
            trial.set_user_attr(key, value)
        if number != 1:  # MLflow heard it start, its first record and half the second (a batch written in part)
            killed.trial_started(number, trial.params, {})
            killed.trial_result(number, runs[number][0])
            killed.trial_result(number, runs[number][1])
            logger = killed.loggers[number]
            logger.buffer = logger.buffer[:len(logger.buffer) - 3]
            logger.flush()
        else:  # a child of an older study of this name, for the same trial number: not this trial's
            old = client.create_run(killed.experiment_id, start_time=int((time.time() - 60) * 1000), tags={
                "mlflow.parentRunId": killed.parent_id, "gantune.trial": "1"}).info.run_id
        study.tell(trial, 1.0 if status == "completed" else None,
                   state=optuna.trial.TrialState.COMPLETE if status == "completed" else optuna.trial.TrialState.PRUNED)
        if number == 2:  # Ctrl-C between the tell and the book's end of the trial: its child ends KILLED
            killed.search_interrupted([2])

    resumed = MlflowTracker(uri, "mend")
    resumed.connect()
    resumed.search_started(study, space, [])
    resumed.mend_trials()  # what the tracking thread runs next

    runs_now = client.search_runs([resumed.experiment_id], f"tags.`mlflow.parentRunId` = '{resumed.parent_id}'")
    children = [c for c in runs_now if c.info.run_id != old]
    assert sorted(int(c.data.tags["gantune.trial"]) for c in children) == [0, 1, 2]
    assert client.get_run(old).info.status == "RUNNING"  # left alone
    for child in children:
        number = int(child.data.tags["gantune.trial"])
        status, reason, rule = ends[number]
        assert child.info.status == "FINISHED" and child.data.tags["gantune.mended"] == MENDED
        assert (child.data.tags["gantune.status"], child.data.tags["gantune.reason"]) == (status, reason)
        assert child.data.tags.get("gantune.rule", "") == rule and child.data.tags["gantune.steps"] == "40"
        for key in {k for r in runs[number] for k, v in r.items() if isinstance(v, float) and k not in _SKIP}:
            history = client.get_metric_history(child.info.run_id, key)  # every step once, the half-logged one too
            assert [m.step for m in history] == [int(r["step"]) for r in runs[number] if key in r], key
        assert [m.step for m in client.get_metric_history(child.info.run_id, "objective")] == [20, 40]  # as ASHA read
        for key, value in {"eval_fraction": 0.25, "trial_wall_s": 3.5}.items():  # the last report's, from the study
            assert [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, key)] == [(40, value)]
        images = [a.path for a in client.list_artifacts(child.info.run_id, "images") if a.path.endswith(".png")]
        assert sorted(int(re.search(r"step\+(\d+)\+", p)[1]) for p in images) == [20, 40]
        assert [a.path for a in client.list_artifacts(child.info.run_id, "weights")] == [
            "weights/generator.pt", "weights/generator_best.pt"]
    new = next(c for c in children if c.data.tags["gantune.trial"] == "1")
    assert new.data.params == {"optim.lr_g": "0.001", "provenance.extractor": "coords"}
    assert "trial_config.yaml" in {a.path for a in client.list_artifacts(new.info.run_id)}


def test_resume_describes_a_parent_run_the_killed_driver_had_only_created(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(tiny_space("bare", 2, 40, 20, [0.001], log_every=10, n_samples=200))
    space = load_space(tmp_path / "space.yaml")
    study = optuna.create_study(study_name="bare", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    bare = client.create_run(client.create_experiment("bare"), tags={"gantune.role": "parent",
                                                                      "gantune.study": "bare"}).info.run_id
    resumed = MlflowTracker(uri, "bare")
    resumed.connect()
    resumed.search_started(study, space, [])
    assert resumed.parent_id == bare
    parent = client.get_run(bare)
    assert parent.data.params["search.trials"] == "2" and parent.data.tags["gantune.trials"] == "2"
    assert "space.yaml" in {a.path for a in client.list_artifacts(bare)}


def test_a_study_made_again_under_its_name_gets_a_parent_run_of_its_own(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``gantune export`` deletes and makes again its ``<search>-reruns`` study on every export (and a user may
    delete a study to start over): the new study's children must not join the old one's under the same trial
    numbers. A resumed study finds its own parent; a parent made before parents named their study is adopted."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(tiny_space("again", 2, 40, 20, [0.001], log_every=10, n_samples=200))
    space = load_space(tmp_path / "space.yaml")
    storage, uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)

    def started(resumed: bool = False) -> MlflowTracker:
        tracker = MlflowTracker(uri, "again")
        tracker.connect()
        tracker.search_started(open_study("again", storage, space.settings), space, [])
        if not resumed:
            tracker.trial_started(0, {"optim.lr_g": 0.001}, {})
        return tracker

    first = started()
    assert started(resumed=True).parent_id == first.parent_id  # --resume: the same study, the same parent
    optuna.delete_study(study_name="again", storage=storage)
    second = started()
    assert second.parent_id != first.parent_id and second.children == {0: second.children[0]}
    for tracker in (first, second):
        kids = client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{tracker.parent_id}'")
        assert [k.info.run_id for k in kids] == [tracker.children[0]]

    # a parent run from before parents carried their study's uid is taken (and tagged) by the study of its name
    optuna.delete_study(study_name="again", storage=storage)
    for run in client.search_runs([first.experiment_id], "tags.`gantune.role` = 'parent'"):
        client.delete_run(run.info.run_id)
    legacy = client.create_run(first.experiment_id, tags={"gantune.role": "parent", "gantune.study": "again"})
    third = started()
    assert third.parent_id == legacy.info.run_id
    assert client.get_run(third.parent_id).data.tags["gantune.study_uid"] == optuna.load_study(
        study_name="again", storage=storage).user_attrs[STUDY_UID]


def test_a_killed_drivers_running_child_is_ended_before_it_is_replaced(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: the resumed search deleted the killed driver's child run of a trial it runs again, which
    stayed RUNNING in MLflow's trash until ``mlflow gc``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(tiny_space("kill", 2, 40, 20, [0.001], log_every=10, n_samples=200))
    space = load_space(tmp_path / "space.yaml")
    study = optuna.create_study(study_name="kill", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = MlflowTracker(uri, "kill")
    killed.connect()
    killed.search_started(study, space, [])
    trial = study.ask({"optim.lr_g": optuna.distributions.CategoricalDistribution([0.001])})
    killed.trial_started(trial.number, trial.params, {})
    child = killed.children[trial.number]
    resumed = MlflowTracker(uri, "kill")
    resumed.connect()
    resumed.search_started(study, space, [trial.number])
    run = MlflowClient(uri).get_run(child)
    assert (run.info.status, run.info.lifecycle_stage) == ("KILLED", "deleted")


def test_the_runs_of_a_killed_exports_re_runs_end_when_the_next_export_replaces_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: after a SIGKILL'd ``export --seeds``, the next export replaced the re-runs' study and left
    the killed one's parent and child runs RUNNING for good, beside its own."""
    from gantune.sampling.study import STUDY_UID

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(tiny_space("k-reruns", 2, 40, 20, [0.001], log_every=10, n_samples=200))
    space = load_space(tmp_path / "space.yaml")
    study = optuna.create_study(study_name="k-reruns", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.set_user_attr(STUDY_UID, "old")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = MlflowTracker(uri, "k-reruns", "k")
    killed.search_started(study, space, [])
    killed.trial_started(0, {}, {})
    runs = [killed.parent_id, killed.children[0]]
    other = MlflowTracker(uri, "k-reruns", "k")
    other.study_replaced("k-reruns", "another")  # not that study: left alone
    assert {MlflowClient(uri).get_run(r).info.status for r in runs} == {"RUNNING"}
    MlflowTracker(uri, "k-reruns", "k").study_replaced("k-reruns", "old")
    assert {MlflowClient(uri).get_run(r).info.status for r in runs} == {"KILLED"}
