"""A ``gantune train`` killed at any point and resumed leaves MLflow's history as metrics.jsonl has it."""

import re
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from gantune.config import dump_config
from gantune.production import TrainOptions, run_training
from gantune.rundir import CHECKPOINT, GENERATOR, RunDir
from gantune.tracking import TrainRun
from tests.conftest import tiny


class _Killed(BaseException):
    """SIGKILL at a chosen point: nothing after it runs, not even the handler that closes the MLflow run."""


def _tracked_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: int,
                 out: str) -> tuple[Any, str, TrainOptions]:
    """A tiny config of ``steps`` (checkpointed and evaluated at each half) in ``tmp_path/cfg.yaml``, the sqlite
    MLflow store beside it, and the options of its tracked run into ``out``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny(train={"steps": steps, "checkpoint_every": steps // 2}, eval={"every": steps // 2})
    (tmp_path / "cfg.yaml").write_text(dump_config(cfg))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg, uri, TrainOptions(config="cfg.yaml", out=out, tracking_uri=uri)


@pytest.mark.parametrize("kill_at", ["line 30", "line 40", "final weights"])
def test_a_killed_and_resumed_run_logs_each_step_and_grid_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               kill_at: str) -> None:
    """Killed as step 30's line is written, MLflow lacks step 20 (still in the batch buffer) though the checkpoint
    holds it; killed at step 40, MLflow already has step 30 and the grid of 40, which the resumed run makes again;
    killed after the last checkpoint (writing the weights), the resumed run trains and reports nothing, and MLflow
    still lacks step 40."""
    _, uri, opts = _tracked_run(tmp_path, monkeypatch, 40, "run")
    append, save, fail = RunDir.append_metrics, RunDir.save_generator, TrainRun.fail

    def dies_writing_a_line(self: RunDir, record: dict[str, object]) -> None:
        if f"line {record['step']:g}" == kill_at:
            raise _Killed
        append(self, record)

    def dies_writing_the_weights(self: RunDir, state_dict: Any, cfg: Any, step: int, name: str = GENERATOR) -> Path:
        if name == GENERATOR and kill_at == "final weights":
            raise _Killed
        return save(self, state_dict, cfg, step, name)

    monkeypatch.setattr(RunDir, "append_metrics", dies_writing_a_line)
    monkeypatch.setattr(RunDir, "save_generator", dies_writing_the_weights)
    monkeypatch.setattr(TrainRun, "fail", lambda self, reason, killed=False: None)
    with pytest.raises(_Killed):
        run_training(opts, say=None)
    monkeypatch.setattr(RunDir, "append_metrics", append)
    monkeypatch.setattr(RunDir, "save_generator", save)
    monkeypatch.setattr(TrainRun, "fail", fail)
    opts.resume = True
    assert run_training(opts, say=None)["steps"] == 40

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("gantune").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")] == [10, 20, 30, 40]
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert sorted(int(re.search(r"step\+(\d+)\+", p)[1]) for p in images) == [20, 40]


def test_a_run_killed_outright_is_ended_when_its_folder_is_trained_anew(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL'd before its first checkpoint, a run has nothing to resume: the user deletes its folder and trains
    there again. Its MLflow run stayed RUNNING for ever beside the new one; the new run ends it KILLED."""
    import shutil

    from gantune.tracking import UNENDED

    _, uri, opts = _tracked_run(tmp_path, monkeypatch, 40, "run")
    (tmp_path / "cfg.yaml").write_text(dump_config(tiny(train={"steps": 40, "checkpoint_every": 40},
                                                        eval={"every": 20})))  # its one checkpoint: the last step
    append = RunDir.append_metrics

    def dies_at_line_30(self: RunDir, record: dict[str, object]) -> None:
        if record["step"] == 30:
            raise _Killed
        append(self, record)

    monkeypatch.setattr(RunDir, "append_metrics", dies_at_line_30)
    monkeypatch.setattr(TrainRun, "fail", lambda self, reason, killed=False: None)
    with pytest.raises(_Killed):
        run_training(opts, say=None)
    assert not (tmp_path / "run" / CHECKPOINT).exists()
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gantune").experiment_id
    assert [r.info.status for r in client.search_runs([exp])] == ["RUNNING"]
    shutil.rmtree(tmp_path / "run")  # what train says to do with a run stopped before its first checkpoint
    assert run_training(opts, say=None)["steps"] == 40
    new, old = client.search_runs([exp], order_by=["attributes.start_time DESC"])
    assert (new.info.status, old.info.status) == ("FINISHED", "KILLED")
    assert (old.data.tags["gantune.status"], old.data.tags["gantune.reason"]) == ("interrupted", UNENDED)


def test_a_resumed_run_continues_its_mlflow_run_whatever_its_folder_or_name(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder path with a quote made the MLflow filter of the resumed run's lookup a traceback; a resume with
    another ``name`` (which ``--resume`` allows) looked in that name's experiment and started a second MLflow
    run beside the first (a killed first run stayed RUNNING)."""
    cfg, uri, opts = _tracked_run(tmp_path, monkeypatch, 20, "it's \"run\"")
    assert run_training(opts, say=None)["steps"] == 20
    renamed = dump_config(cfg).replace(f"name: {cfg.name}", "name: renamed")
    assert "name: renamed" in renamed
    (tmp_path / "cfg.yaml").write_text(renamed)
    opts.resume, opts.steps = True, 30
    assert run_training(opts, say=None)["steps"] == 30

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert client.get_experiment_by_name("renamed") is None  # nothing made for the name it resumed with
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss_d")] == [10, 20, 30]
    # params are write-once: they keep the first run's steps and name, and tags say what it was resumed with (its
    # train.steps stayed 20 without a word)
    params, tags = runs[0].data.params, runs[0].data.tags
    assert (params["train.steps"], params["name"]) == ("20", cfg.name)
    assert {k: v for k, v in tags.items() if k.startswith("gantune.resumed.")} == {
        "gantune.resumed.train.steps": "30", "gantune.resumed.name": "renamed"}


def test_a_tracking_server_lost_mid_run_is_one_warning_and_the_run_trains_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A tracking server gone past MLflow's retries at the second sample grid ended a production run in a
    traceback, no generator.pt written and its MLflow run FAILED; a search's tracker thread already went on."""
    from mlflow.exceptions import MlflowException

    from gantune import tracking

    _, uri, opts = _tracked_run(tmp_path, monkeypatch, 40, "run")
    image = tracking._RunLogger.image
    calls: list[int] = []

    def flaky(self: Any, png: bytes, step: int) -> None:
        calls.append(step)
        if len(calls) >= 2:
            raise MlflowException("API request to http://mlflow:5000/api/2.0/mlflow-artifacts failed: Max retries "
                                  "exceeded")
        image(self, png, step)

    monkeypatch.setattr(tracking._RunLogger, "image", flaky)
    summary = run_training(opts)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning: MLflow")]
    assert len(lines) == 1 and "a sample grid failed (MlflowException: API request" in lines[0], err
    assert "Traceback" not in err and summary["status"] == "completed" and (tmp_path / "run" / GENERATOR).is_file()
    assert summary["tracking_error"].startswith("MlflowException: API request")
    assert len(calls) == 2  # nothing more is sent to a store that failed
    run = MlflowClient(uri).get_run(summary["mlflow_run_id"])
    # not FINISHED (its record is not whole), nor RUNNING for good: ended, saying why, in one last call
    assert run.info.status == "KILLED" and run.data.tags["gantune.tracking_lost"] == summary["tracking_error"]
    monkeypatch.setattr(tracking._RunLogger, "image", image)  # the server back: a resume to more steps
    opts.resume, opts.steps = True, 60
    assert run_training(opts)["mlflow_run_id"] == run.info.run_id
    run = MlflowClient(uri).get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and "gantune.tracking_lost" not in run.data.tags


def test_a_run_whose_params_fail_to_log_is_ended_not_left_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The run's id was kept only after its params were logged: a store failing there (a server refusing the batch)
    left the run just created RUNNING for good, as the last try to end it did not know it."""
    from mlflow.exceptions import MlflowException

    from gantune import tracking

    _, uri, opts = _tracked_run(tmp_path, monkeypatch, 20, "run")

    def refused(client: Any, run_id: str, params: dict[str, Any]) -> None:
        raise MlflowException("INVALID_PARAMETER_VALUE: too many params")

    monkeypatch.setattr(tracking, "_log_params", refused)
    summary = run_training(opts)
    assert summary["status"] == "completed" and summary["tracking_error"].startswith("MlflowException: INVALID")
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.status, r.data.tags.get("gantune.tracking_lost")) for r in runs] == [
        ("KILLED", summary["tracking_error"])]


def test_a_runs_config_names_its_image_folder_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``data.path: imgs`` was written to the run's config.yaml as it was given: ``train run/config.yaml --resume``
    from another folder failed ("image folder imgs does not exist"). The run's config names the folder absolute
    (from the working folder the run read it from), as a search's trials do; the same run resumes from anywhere."""
    import yaml

    from tests.conftest import grey_folder, tiny_images

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    grey_folder(work / "imgs")
    raw = tiny_images(data={"name": "folder", "path": "imgs", "channels": 1},
                      train={"steps": 20, "checkpoint_every": 10}, eval={"every": 10, "metrics": []}).to_dict()
    raw["data"]["path"] = "imgs"  # as the user wrote it
    (work / "cfg.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(work)
    assert run_training(TrainOptions(config="cfg.yaml", out="run", tracking=False))["status"] == "completed"
    written = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert written["data"]["path"] == str(work / "imgs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = run_training(TrainOptions(config=str(work / "run" / "config.yaml"), out=str(work / "run"), steps=30,
                                        resume=True, tracking=False))
    assert resumed["status"] == "completed" and resumed["steps"] == 30
    monkeypatch.chdir(work)  # a run written before (its config.yaml relative) resumes from its own folder as before
    (work / "run" / "config.yaml").write_text(yaml.safe_dump({**written, "data": {**written["data"], "path": "imgs"}}))
    assert run_training(TrainOptions(config="cfg.yaml", out="run", steps=40, resume=True,
                                     tracking=False))["steps"] == 40
