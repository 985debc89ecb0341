from pathlib import Path
from typing import Any

import pytest

from gantune import env
from gantune.events import ObserverThread
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
