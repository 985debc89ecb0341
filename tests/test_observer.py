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
