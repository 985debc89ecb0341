"""MLflow layout after real (tiny) searches: against the sqlite store, and against a real `mlflow server`."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from gantune.cli import main
from tests.conftest import enqueue_lrs, mlflow_server, tiny_space

SPACE = tiny_space("tracked", 3, 200, 100, [0.001, 1000000.0], log_every=50, n_samples=300)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_session: object) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _search(tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str], *extra: str,
            space: str = SPACE) -> dict:
    (tmp_path / "space.yaml").write_text(space)
    if "--resume" not in extra:  # a healthy and a diverging trial, whatever the sampler draws
        enqueue_lrs(f"sqlite:///{tmp_path / 'optuna.db'}", "tracked", [0.001, 1000000.0, 0.001])
    code = main(["search", "space.yaml", "--tracking-uri", tracking_uri, "--json", *extra])
    captured = capsys.readouterr()
    assert code == 0
    assert "Downloading artifacts" not in captured.err  # MLflow's progress bar, for a file of a few lines
    return json.loads(captured.out.strip().splitlines()[-1])


def _check_layout(client: MlflowClient, summary: dict) -> None:
    exp = client.get_experiment_by_name("tracked")
    assert exp is not None and exp.experiment_id == summary["mlflow_experiment_id"]
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("gantune.role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["gantune.trials"] == "3" and parent.data.params["search.max_steps"] == "200"
    assert {"trial_steps", "budget_steps", "trials_completed"} <= parent.data.metrics.keys()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"space.yaml", "summary.json"} <= artifacts
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    study = optuna.load_study(study_name="tracked", storage=summary["study_storage"])
    assert sorted(int(c.data.tags["gantune.trial"]) for c in children) == [t.number for t in study.trials]
    statuses = set()
    for child in children:
        trial = study.trials[int(child.data.tags["gantune.trial"])]
        assert child.data.params["optim.lr_g"] == str(trial.params["optim.lr_g"])
        status = child.data.tags["gantune.status"]
        statuses.add(status)
        assert status == trial.user_attrs["gantune_status"]
        assert "gantune.reason" in child.data.tags
        # every trial shows its samples where it ended, even one pruned before its first evaluation
        assert client.list_artifacts(child.info.run_id, "images"), status
        history = client.get_metric_history(child.info.run_id, "loss_d")
        assert history and history[0].step == 50
        if status == "completed":
            assert [m.step for m in client.get_metric_history(child.info.run_id, "fid")] == [100, 200]
            # how the values were measured, in the study and the run alike
            measured = trial.user_attrs["provenance"]
            assert (measured["extractor"], measured["n"], measured["reference"]) == ("coords", 300, "draws")
            assert child.data.params["provenance.n"] == "300"
            assert float(child.data.params["provenance.floor.fid"]) == measured["floor"]["fid"]
            files = {a.path for a in client.list_artifacts(child.info.run_id, "weights")}
            assert {"weights/generator.pt", "weights/generator_best.pt"} <= files
            images = {a.path for a in client.list_artifacts(child.info.run_id, "images")}
            assert len(images) >= 2, images  # a sample grid per evaluation
    assert "completed" in statuses and "pruned:diverged" in statuses


def test_sqlite_store_parent_and_one_child_per_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = _search(tmp_path, "sqlite:///mlflow.db", capsys)
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    _check_layout(MlflowClient(summary["tracking_uri"]), summary)
    # the best value comes with the real-vs-real floor it is read against; every trial was measured alike
    assert summary["best"]["floor"]["fid"] > 0 and summary["note"] is None


def test_real_mlflow_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server, uri = mlflow_server(tmp_path)
    try:
        summary = _search(tmp_path, uri, capsys)
        _check_layout(MlflowClient(uri), summary)
        assert any((tmp_path / "server-artifacts").rglob("generator.pt"))  # artifacts went through the server
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        server.wait(30)


def test_the_server_helper_moves_off_a_port_taken_after_it_was_found_free(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``free_port``'s port can be taken before the server binds it (Ray's workers bind ports all the time): the
    helper then starts the server on another port instead of waiting two minutes on one that never answers."""
    import socket

    from tests import conftest

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([int(taken.getsockname()[1])])
        real = conftest.free_port
        monkeypatch.setattr(conftest, "free_port", lambda: next(ports, None) or real())
        server, uri = mlflow_server(tmp_path)
        try:
            assert not uri.endswith(f":{taken.getsockname()[1]}")
            assert MlflowClient(uri).search_experiments()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


def test_resume_reuses_parent_and_does_not_duplicate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """...and says what the resumed space changed: the parent's write-once params kept the first run's
    search.defaults while the new trials trained with the edited ones."""
    _search(tmp_path, "sqlite:///mlflow.db", capsys, "--trials", "2")
    edited = SPACE.replace("search:\n", "search:\n  defaults: {optim.ema: 0.5}\n", 1)
    assert edited != SPACE
    summary = _search(tmp_path, "sqlite:///mlflow.db", capsys, "--trials", "3", "--resume", space=edited)
    assert summary["trials"] == 3
    client = MlflowClient(summary["tracking_uri"])
    _check_layout(client, summary)
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.params["search.defaults.optim.ema"] == "0.999"  # the first run's, write-once
    assert parent.data.tags["gantune.resumed.search.defaults.optim.ema"] == "0.5"
    assert "gantune.resumed.search.trials" not in parent.data.tags  # the trial count has its own tag
    resumed = parent.data.tags["gantune.resumed_space"]
    assert Path(client.download_artifacts(parent.info.run_id, resumed, str(tmp_path))).read_text() == edited
    capsys.readouterr()  # the bar of this download
    # resumed again with the first space: its settings are the params again, and no tag says otherwise
    summary = _search(tmp_path, "sqlite:///mlflow.db", capsys, "--trials", "3", "--resume")
    tags = client.get_run(summary["mlflow_parent_run_id"]).data.tags
    assert not [t for t in tags if t.startswith("gantune.resumed")], tags


def test_a_search_stopped_before_it_starts_leaves_no_mlflow_store(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C while Ray started left an empty ``mlflow.db``: the tracker made the search's experiment before
    Ray started, to check the URI. It checks without writing now; the store is made as the search starts."""
    from gantune.search import runner

    def ctrl_c(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_init_ray", ctrl_c)
    (tmp_path / "space.yaml").write_text(SPACE)
    code = main(["search", "space.yaml", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_store_that_fails_while_mlflow_makes_it_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: a disk that filled while MLflow made its tables left a half-made ``mlflow.db``, and every
    later command failed on it ("table scorers already exists"), once there was space too."""
    import mlflow.store.db.utils as db_utils
    from sqlalchemy.exc import OperationalError

    from gantune.errors import GantuneError
    from gantune.tracking import connect

    def full(engine: object) -> None:  # the first tables made, then the disk is full
        raise OperationalError("ALTER TABLE", {}, Exception("database or disk is full"))

    monkeypatch.setattr(db_utils, "_upgrade_db", full)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(GantuneError, match="database or disk is full"):
        connect(uri)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half made
    # with space again, the next command makes the store whole (a new process: MLflow keeps its stores per process)
    subprocess.run([sys.executable, "-c", f"from gantune.tracking import connect; connect({uri!r})"], check=True)
    assert (tmp_path / "mlflow.db").is_file()


@pytest.mark.parametrize("made_by", ["an older MLflow", "a newer MLflow"])
def test_a_store_of_another_mlflow_gets_the_advice_for_its_age(tmp_path: Path, made_by: str) -> None:
    """Found by a probe: a store a newer MLflow made got MLflow's "run 'mlflow db upgrade'", which cannot help (the
    store is ahead of this MLflow); an older one still gets it. Each in a new process: MLflow keeps its stores."""
    import sqlite3

    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowClient(uri).search_experiments()
    # MLflow's first migration (every MLflow knows it), and one no MLflow has
    revision = {"an older MLflow": "451aebb31d03", "a newer MLflow": "ffff00001111"}[made_by]
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    done = subprocess.run([sys.executable, "-c", f"from gantune.tracking import connect; connect({uri!r})"],
                          capture_output=True, text=True)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert f"its store was made by {made_by}" in last and revision in last, last
    assert ("mlflow db upgrade" in last) == (made_by == "an older MLflow"), last


def test_a_store_with_no_schema_version_gets_mlflows_own_line() -> None:
    """Found by a review: an empty ``alembic_version`` reads "found version None", which is no other MLflow's."""
    from gantune.tracking import _schema_advice

    said = ("Detected out-of-date database schema (found version None, but expected dc11669786a5). Take a backup "
            "of your database, then run 'mlflow db upgrade <database_uri>'")
    assert _schema_advice(said, "sqlite:///m.db") == said
    assert "newer MLflow" in _schema_advice(said.replace("None", "ffff00001111"), "sqlite:///m.db")


def test_a_store_that_was_there_is_left_when_mlflow_fails_on_it(tmp_path: Path) -> None:
    """Only a store the failing call began is removed: a file that was there is the user's."""
    from gantune.errors import GantuneError
    from gantune.tracking import connect

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database" * 100)
    with pytest.raises(GantuneError, match="cannot use MLflow"):
        connect(f"sqlite:///{db}")
    assert db.read_bytes() == b"not a database" * 100


def test_a_new_store_that_fails_otherwise_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: two commands making the same new store at once, the loser failing ("table ... already
    exists") removed the store the winner was using. Only a full disk's half-made store is removed."""
    import mlflow.store.db.utils as db_utils
    from sqlalchemy.exc import OperationalError

    from gantune.errors import GantuneError
    from gantune.tracking import connect

    def raced(engine: object) -> None:
        raise OperationalError("CREATE TABLE", {}, Exception("table scorers already exists"))

    monkeypatch.setattr(db_utils, "_upgrade_db", raced)
    with pytest.raises(GantuneError, match="already exists"):
        connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert (tmp_path / "mlflow.db").is_file()
