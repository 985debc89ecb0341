import re
from pathlib import Path
from typing import Any

import pytest

from gantune import env
from gantune.events import ObserverThread, Status, TrialOutcome
from gantune.tracking import MlflowTracker


def test_a_store_deleted_while_a_search_runs_is_one_warning_naming_it(tmp_path: Path,
                                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """Found by a probe: ``mlflow.db`` deleted under a running search printed MLflow's ERROR log and two
    tracebacks (80 lines), then a warning blaming "a readonly database"."""
    env.configure()
    db = tmp_path / "mlflow.db"

    class Writes(MlflowTracker):  # an event that writes to the store, as every trial's does
        def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
            self.client.log_metric(self.run_id, "a", 1.0)
            return summary

    tracker = Writes(f"sqlite:///{db}", "x")
    tracker.run_id = tracker.client.create_run(tracker.client.create_experiment("x")).info.run_id
    db.unlink()
    said: list[str] = []
    capfd.readouterr()
    summary = ObserverThread(tracker, say=said.append).search_ended({})
    assert said == [f"Writes.search_ended: MlflowException: its store {db} is gone (deleted while the search ran); "
                    "the search goes on without it"]
    assert summary["tracking_error"] == said[0].removesuffix("; the search goes on without it")
    assert capfd.readouterr().err == ""


def test_a_database_error_raised_in_an_autoflush_is_warned_of_by_its_cause() -> None:
    """Found by a probe: a damaged MLflow store mid-search was warned of by SQLAlchemy's note, "(raised as a result
    of Query-invoked autoflush; consider using a session.no_autoflush block ...)", which came first in the text
    (as SQLAlchemy's ``add_detail`` puts it, and MLflow passes it on), not by what failed."""
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    from gantune.events import first_line

    err = OperationalError("INSERT INTO metrics", {}, sqlite3.DatabaseError("database disk image is malformed"))
    err.add_detail("raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block if "
                   "this flush is occurring prematurely")  # what SQLAlchemy's Session._autoflush adds
    cause = "(sqlite3.DatabaseError) database disk image is malformed"
    for raised in (err, MlflowException(message=err), MlflowException(f"(sqlalchemy.exc.OperationalError) {err}")):
        assert first_line(raised) == cause
        said: list[str] = []
        thread = ObserverThread(_Failing(raised), say=said.append)
        thread.trial_started(0, {}, {})
        thread.search_ended({})
        assert said == [f"_Failing.trial_started: {type(raised).__name__}: {cause}; the search goes on without it"]
    assert first_line(RuntimeError("(one) line\nand more")) == "(one) line"  # other bracketed lines stay


class _Failing:
    def __init__(self, err: Exception) -> None:
        self.err = err

    def trial_started(self, *args: Any) -> None:
        raise self.err

    def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
        return summary


def _tracker_with_children(tmp_path: Path, n: int) -> MlflowTracker:
    """A tracker on a sqlite store in ``tmp_path`` with a parent run and ``n`` children open, as mid-search."""
    env.configure()
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "x")
    tracker.experiment_id = tracker.client.create_experiment("x")
    tracker.parent_id = tracker.client.create_run(tracker.experiment_id, run_name="x").info.run_id
    for number in range(n):
        tracker.trial_started(number, {"optim.lr_g": 0.001}, {})
    return tracker


def _statuses(tracker: MlflowTracker) -> dict[str, tuple[str, str | None]]:
    runs = tracker.client.search_runs([tracker.experiment_id])
    return {r.info.run_name: (r.info.status, r.data.tags.get("gantune.tracking_lost")) for r in runs}


def test_after_a_failed_event_the_runs_left_open_end_killed_and_say_why(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first failure dropped every later event, the search's end among them: the parent and each child open
    then stayed RUNNING in MLflow for good. They end KILLED, tagged with the failure; the warning is still one."""
    from gantune import tracking

    tracker = _tracker_with_children(tmp_path, 2)
    monkeypatch.setattr(tracking._RunLogger, "log", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("gone")))
    said: list[str] = []
    thread = ObserverThread(tracker, say=said.append)
    thread.trial_result(0, {"step": 10, "loss_d": 1.0})
    thread.trial_result(1, {"step": 10, "loss_d": 1.0})
    summary = thread.search_ended({})
    assert said == ["MlflowTracker.trial_result: ConnectionError: gone; the search goes on without it"]
    why = summary["tracking_error"]
    assert summary["tracking_runs_ended"] is True  # what the command's summary line says
    assert _statuses(tracker) == {"x": ("KILLED", why), "trial-0000": ("KILLED", why), "trial-0001": ("KILLED", why)}


def test_a_store_that_still_fails_at_the_end_is_not_said_twice(tmp_path: Path) -> None:
    """The last try to end the runs meets the same dead store: no second warning, no exception, the search ends."""
    tracker = _tracker_with_children(tmp_path, 1)
    (tmp_path / "mlflow.db").unlink()
    said: list[str] = []
    thread = ObserverThread(tracker, say=said.append)
    thread.trial_result(0, {"step": 10, "loss_d": 1.0})
    thread.trial_ended(TrialOutcome(0, Status.COMPLETED, "", 10, [1.0]))
    summary = thread.search_ended({})
    assert summary["tracking_error"] and summary["tracking_runs_ended"] is False and len(said) == 1


def test_an_interrupted_search_ends_every_child_still_open(tmp_path: Path) -> None:
    """Only the trials the driver named as running were ended: a child whose end was never heard (the search
    failed) stayed RUNNING."""
    tracker = _tracker_with_children(tmp_path, 3)
    tracker.search_interrupted([1])
    assert {s for s, _ in _statuses(tracker).values()} == {"KILLED"}


def test_a_run_whose_files_cannot_be_stored_does_not_stay_running(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights were uploaded before the run was ended: a full disk there left it RUNNING."""
    import errno

    from mlflow import MlflowClient

    tracker = _tracker_with_children(tmp_path, 1)
    weights = tmp_path / "generator.pt"
    weights.write_bytes(b"w")

    def full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MlflowClient, "log_artifact", full)
    with pytest.raises(OSError):
        tracker.trial_ended(TrialOutcome(0, Status.COMPLETED, "", 10, [1.0], artifacts=str(tmp_path)))
    status, why = _statuses(tracker)["trial-0000"]
    assert status == "KILLED" and why == "its files: OSError: [Errno 28] No space left on device"


def test_params_beyond_mlflows_hundred_a_call_are_all_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's params went in one call: past 100 (a space with many settings) a tracking server refused them all
    (its limit is checked by the server, as here; a sqlite store takes any number)."""
    from mlflow import MlflowClient
    from mlflow.utils.validation import _validate_batch_log_limits

    tracker = _tracker_with_children(tmp_path, 0)
    log_batch = MlflowClient.log_batch

    def as_a_server(self: Any, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **kw: Any) -> Any:
        _validate_batch_log_limits(list(metrics), list(params), list(tags))
        return log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", as_a_server)
    params = {f"search.defaults.k{i:03d}": i for i in range(150)}
    tracker.trial_started(0, params, {})
    run = tracker.client.get_run(tracker.children[0])
    assert run.data.params == {k: str(v) for k, v in params.items()}


def test_a_tracking_uri_scheme_in_capitals_is_read_as_mlflow_reads_it() -> None:
    """``HTTP://host`` passed the check as a server and was then taken for a local store."""
    from gantune.tracking import resolve_tracking_uri, ui_base

    assert resolve_tracking_uri("HTTP://mlflow.example:5000") == "http://mlflow.example:5000"
    assert ui_base(resolve_tracking_uri("HTTPS://mlflow.example")) == "https://mlflow.example"


def test_a_resume_makes_an_abandoned_child_whole_again(tmp_path: Path) -> None:
    """What the summary promises: ``--resume`` finishes the runs ``abandon`` ended, from the study; the tag that
    said why they ended goes once they are whole."""
    import optuna

    from gantune.events import STATUS_KEY
    from gantune.tracking import LOST

    tracker = _tracker_with_children(tmp_path, 1)
    tracker.abandon("MlflowTracker.trial_result: ConnectionError: gone")
    child = tracker.client.get_run(tracker.children[0])
    assert (child.info.status, child.data.tags[LOST]) == ("KILLED", "MlflowTracker.trial_result: ConnectionError: gone")
    trial = optuna.trial.create_trial(value=0.5, user_attrs={STATUS_KEY: "completed", "steps": 10})
    tracker._unended = [(trial, child)]
    tracker.mend_trials()
    child = tracker.client.get_run(tracker.children[0])
    assert child.info.status == "FINISHED" and LOST not in child.data.tags and "gantune.mended" in child.data.tags


def test_a_store_that_cannot_be_read_is_one_line_where_a_command_looks_up_a_trial(tmp_path: Path) -> None:
    """``export --weights`` and ``review`` look a trial's run up in MLflow when its run folder is gone: a damaged
    store (or a server gone) reached the command as MLflow's or SQLAlchemy's traceback."""
    from gantune.tracking import StoreUnreadable, download_trial_weights, trial_weights_logged

    env.configure()
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database, and has no SQLite header at all" * 100)
    uri = f"sqlite:///{db}"
    with pytest.raises(StoreUnreadable, match=rf"^MLflow \({re.escape(uri)}\) cannot be read: "):
        trial_weights_logged(uri, "s", None, 0)
    with pytest.raises(StoreUnreadable, match="cannot be read"):
        download_trial_weights(uri, "s", None, 0, tmp_path, lambda f: None)


def test_a_call_that_was_late_once_does_not_stop_the_last_try(tmp_path: Path) -> None:
    """One event that took longer than drain_s (a slow server at the start) kept every later call from being made,
    hours after the thread had answered it: the runs left open then stayed RUNNING."""
    import threading

    release = threading.Event()
    ended: list[str] = []

    class Slow:

        def search_started(self, *args: Any) -> None:
            release.wait(5)

        def trial_started(self, *args: Any) -> None:
            raise ConnectionError("gone")

        def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
            return summary

        def abandon(self, why: str) -> bool:
            ended.append(why)
            return True

    said: list[str] = []
    thread = ObserverThread(Slow(), drain_s=0.2, say=said.append)
    thread.search_started(None, None, [])  # late: the search goes on
    release.set()
    thread.trial_started(0, {}, {})
    summary = thread.search_ended({})
    assert said[0] == "Slow.search_started: no answer within 0.2s; the search goes on without it"
    assert summary["tracking_runs_ended"] is True and ended == [summary["tracking_error"]]


def test_a_resumed_search_and_a_resumed_train_run_lose_the_lost_tag(tmp_path: Path) -> None:
    """The tag that says why a run was ended stayed on a run a resume made whole again."""
    from types import SimpleNamespace

    from gantune.tracking import LOST

    tracker = _tracker_with_children(tmp_path, 0)
    tracker.abandon("x")
    assert tracker.client.get_run(tracker.parent_id).data.tags[LOST] == "x"
    study = SimpleNamespace(user_attrs={}, study_name="x", get_trials=lambda deepcopy: [])
    space = SimpleNamespace(settings=SimpleNamespace(model_dump=lambda: {"trials": 1}, trials=1, objectives=["fid"]),
                            text="search: {}\n")
    resumed = MlflowTracker(tracker.uri, "x")
    resumed.client.set_tag(tracker.parent_id, "gantune.role", "parent")
    resumed.client.set_tag(tracker.parent_id, "gantune.study", "x")
    resumed.search_started(study, space, [])
    assert resumed.parent_id == tracker.parent_id
    assert LOST not in resumed.client.get_run(tracker.parent_id).data.tags


def test_a_slow_tracker_with_a_backlog_is_waited_for_while_it_answers() -> None:
    """``search_ended`` waited at most drain_s for the whole queue: a working but slow server with many results
    queued at the end (each taking 10 ms here, drain_s 0.5 s) lost the rest of them and its end, and its runs were
    ended KILLED as a dead store's. It is waited for while events finish; one that stops answering still is not."""
    import threading
    import time

    logged: list[int] = []

    class Slow:
        def trial_result(self, number: int, result: dict[str, Any]) -> None:
            time.sleep(0.01)
            logged.append(number)

        def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
            return {**summary, "ended": True}

    waiting: list[str] = []
    thread = ObserverThread(Slow(), drain_s=0.5, say=waiting.append)
    for n in range(200):
        thread.trial_result(n, {})
    assert thread.search_ended({}) == {"ended": True} and logged == list(range(200))
    assert len(waiting) == 1 and waiting[0].startswith("Slow is slow: waiting while it answers ("), waiting

    stuck = threading.Event()

    class Stuck(Slow):
        def trial_result(self, number: int, result: dict[str, Any]) -> None:
            stuck.wait(10)

    said: list[str] = []
    thread = ObserverThread(Stuck(), drain_s=0.3, say=said.append)
    thread.trial_result(0, {})
    start = time.monotonic()
    summary = thread.search_ended({})
    stuck.set()
    assert time.monotonic() - start < 5 and summary["tracking_error"] == "Stuck.search_ended: no answer within 0.3s"


def test_a_pbt_member_that_cloned_an_earlier_checkpoint_logs_on_steps_that_go_on(tmp_path: Path) -> None:
    """A member a verdict ended at step 400 that cloned a donor's checkpoint of step 200 trains steps 201-400
    again: logged at their own steps, its MLflow run held two values at steps 300 and 400 and its charts ran back.
    Its steps go on from 400 (300 -> 500), with ``pbt_step_offset``; a forward clone moves nothing; ``--resume``'s
    mend logs the member's metrics.jsonl (cut at the clone) on the same steps as the live reports."""
    import optuna

    from gantune.rundir import RunDir
    from gantune.tracking import _logged, _RunLogger, pbt_step

    clone = {"step": 200, "from_trial": 1, "from_step": 400, "params": {}, "changed": {}}
    assert [pbt_step([clone], s) for s in (100, 200, 300, 400)] == [100, 200, 500, 600]
    ahead = {"step": 600, "from_trial": 2, "from_step": 500, "params": {}, "changed": {}}
    assert [pbt_step([clone, ahead], s) for s in (650, 700)] == [850, 900]  # a forward clone adds nothing
    again = {"step": 300, "from_trial": 1, "from_step": 700, "params": {}, "changed": {}}  # 700 trained, at 900
    assert [pbt_step([clone, ahead, again], s) for s in (200, 300, 350)] == [200, 500, 950]
    assert pbt_step([{"step": 200, "from_trial": 1, "params": {}, "changed": {}}], 300) == 300  # from_step unknown

    tracker = _tracker_with_children(tmp_path, 2)
    for step in (100, 200, 300, 400):
        tracker.trial_result(0, {"step": step, "loss_d": 1.0})
    tracker.trial_exploited(0, [clone], {})
    for step in (300, 400):
        tracker.trial_result(0, {"step": step, "loss_d": 2.0})
    tracker.loggers[0].flush()
    client, rid = tracker.client, tracker.children[0]
    live = [(m.step, m.value) for m in client.get_metric_history(rid, "loss_d")]
    assert sorted(live) == [(100, 1.0), (200, 1.0), (300, 1.0), (400, 1.0), (500, 2.0), (600, 2.0)]
    assert {(m.step, m.value) for m in client.get_metric_history(rid, "pbt_step_offset")} == {(500, 200), (600, 200)}

    run_dir = RunDir(tmp_path / "member")  # what the member's folder holds: cut at the clone's step
    for step, loss in ((100, 1.0), (200, 1.0), (300, 2.0), (400, 2.0)):
        run_dir.append_metrics({"step": step, "loss_d": loss})
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (4, 4)).save(png, format="PNG")
    run_dir.save_samples(400, png.getvalue())  # the new stretch's
    run_dir.save_samples(350, png.getvalue())  # of the stretch the clone left: no record of 350 kept, not this run's
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={
        "run_dir": str(run_dir.path), "pbt_lineage": [clone], "steps": 400, "gantune_status": "pruned:collapsed"})
    logger = _RunLogger(client, tracker.children[1])
    tracker._mend(logger, trial, set(), set())
    assert _logged(client, client.get_run(tracker.children[1]))[1] == {600}
    mended = [(m.step, m.value) for m in client.get_metric_history(tracker.children[1], "loss_d")]
    assert sorted(mended) == [(100, 1.0), (200, 1.0), (500, 2.0), (600, 2.0)]


def test_a_quick_checks_values_are_tracked_apart_from_the_evaluations(tmp_path: Path) -> None:
    """Found by a review: a quick check reports ``modes`` or ``mode_kl`` on fewer samples under the evaluation's
    names, so MLflow's series zigzagged between the two and a stopped trial's last ``mode_kl`` in the runs table was
    a quick check's. They go under ``quick/``; the training signals of the same record keep their names."""
    from gantune.health import EVAL_SECONDS

    tracker = _tracker_with_children(tmp_path, 1)
    tracker.trial_result(0, {"step": 50, "loss_d": 1.0, "modes": 1.0, "mode_kl": 3.2})  # a quick check
    tracker.trial_result(0, {"step": 100, "loss_d": 0.9, "modes": 2.0, "mode_kl": 2.9, EVAL_SECONDS: 0.1})
    tracker.trial_result(0, {"step": 150, "modes": 0.0, "mode_kl": 3.2})
    tracker.loggers[0].flush()
    client, rid = tracker.client, tracker.children[0]

    def history(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(rid, key)]

    assert history("modes") == [(100, 2.0)] and history("mode_kl") == [(100, 2.9)]
    assert history("quick/modes") == [(50, 1.0), (150, 0.0)] and history("quick/mode_kl") == [(50, 3.2), (150, 3.2)]
    assert history("loss_d") == [(50, 1.0), (100, 0.9)]
