"""A search survives what users and machines do to it: odd-but-valid spaces, a driver killed between ask and
store, dirty run directories, out-of-memory configs, bad flags, Ctrl-C and a tracking server that dies."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from gantune.cli import main
from gantune.errors import ConfigError, GantuneError
from gantune.sampling.space import load_space
from gantune.sampling.study import one_trial
from gantune.search import SearchOptions, run_search
from gantune.search.runner import local_resources
from gantune.trial import train
from tests.conftest import enqueue_lrs, mlflow_server, serve_on_free_port, sigint_default_in_children, tiny, tiny_space


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _space(tmp_path: Path, name: str, body: str, trials: int = 2, steps: int = 40) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
name: {name}
search: {{trials: {trials}, max_steps: {steps}, eval_every: 20, sampler: random, concurrency: 2,
          pruning: {{asha: false, health: true}}}}
data: {{name: grid25}}
model: {{z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}}
train: {{batch_size: 32, log_every: 10}}
eval: {{n_samples: 200}}
{body}""")
    return path


def _opts(tmp_path: Path, **kw: object) -> SearchOptions:
    return SearchOptions(storage=f"sqlite:///{tmp_path / 'optuna.db'}", runs_dir=str(tmp_path / "runs"), quiet=True,
                         **kw)  # type: ignore[arg-type]


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


# -- 1. odd-but-valid spaces -------------------------------------------------------------------------------

WHEN_OFF = """
loss:
  name: nonsaturating
  clip: {float: [0.005, 0.05], when: "loss.name == 'wgan'"}
optim:
  lr_g: {expr: "loss.clip * 0.1"}
"""


def test_expression_naming_a_switched_off_leaf_reads_the_config_default(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, "whenoff", WHEN_OFF))
    raw = space.sample(optuna.create_study().ask())
    assert raw["optim"]["lr_g"] == pytest.approx(0.01 * 0.1)  # loss.clip's default is 0.01
    assert "clip" not in raw["loss"]


def test_a_sampling_error_fails_that_trial_and_the_search_goes_on(tmp_path: Path, ray_session: object) -> None:
    path = _space(tmp_path, "divzero", """
optim:
  lr_g: {expr: "1.0e-3 / abs(optim.beta1 - 0.5)"}
  beta1: {categorical: [0.5, 0.0]}
""")
    study = optuna.create_study(study_name="divzero", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.enqueue_trial({"optim.beta1": 0.5})  # 1e-3 / 0: ZeroDivisionError while sampling
    study.enqueue_trial({"optim.beta1": 0.0})
    from gantune.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_search(load_space(path), _opts(tmp_path, resume=True, observers=[MlflowTracker(uri, "divzero")]))
    trials = _study(tmp_path, "divzero").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "ZeroDivisionError" in trials[0].user_attrs["gantune_reason"]
    assert summary["counts"]["failed"] == 1 and summary["counts"]["completed"] == 1
    # every child has status, reason and steps (the trial that failed while sampling had no steps tag)
    client = MlflowClient(uri)
    children = {r.data.tags["gantune.trial"]: r.data.tags for r in client.search_runs(
        [client.get_experiment_by_name("divzero").experiment_id]) if r.data.tags.get("gantune.role") != "parent"}
    assert children["0"]["gantune.steps"] == "0" and children["0"]["gantune.status"] == "failed"
    assert "ZeroDivisionError" in children["0"]["gantune.reason"] and int(children["1"]["gantune.steps"]) > 0
    assert client.get_run(summary["mlflow_parent_run_id"]).info.status == "FINISHED"  # one trial has a result


def test_a_resumed_search_that_ends_with_a_result_drops_the_error_of_the_run_before(
        tmp_path: Path, ray_session: object) -> None:
    """Found by a review: the parent run of a search whose first invocation had no result kept that invocation's
    ``gantune.error`` tag after a ``--resume`` that ended FINISHED with a best trial."""
    from gantune.tracking import MlflowTracker

    body = 'optim:\n  lr_g: {expr: "1.0e-3 / abs(optim.beta1 - 0.5)"}\n  beta1: {categorical: [0.5, 0.0]}\n'
    study = optuna.create_study(study_name="again", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.enqueue_trial({"optim.beta1": 0.5})  # 1e-3 / 0: the only trial fails as it is drawn
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = run_search(load_space(_space(tmp_path, "again", body, trials=1)),
                       _opts(tmp_path, resume=True, observers=[MlflowTracker(uri, "again")]))
    client = MlflowClient(uri)
    parent = client.get_run(first["mlflow_parent_run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["gantune.error"] == first["error"]
    study.enqueue_trial({"optim.beta1": 0.0})
    second = run_search(load_space(_space(tmp_path, "again", body, trials=2)),
                        _opts(tmp_path, resume=True, observers=[MlflowTracker(uri, "again")]))
    assert second["mlflow_parent_run_id"] == first["mlflow_parent_run_id"] and not second.get("error")
    parent = client.get_run(second["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["gantune.best_trial"] == "1"
    assert "gantune.error" not in parent.data.tags


def test_a_trial_whose_evaluations_do_not_report_the_objective_fails_before_it_trains(
        tmp_path: Path, ray_session: object) -> None:
    """An expression hides the evaluation settings from the load's objective check: each trial trained its whole
    budget for no value, the summary counted them "completed" and the search exited 0. Its failure line named
    gantune's exception class before its message."""
    path = _space(tmp_path, "hidden", "optim: {lr_g: {float: [1.0e-4, 1.0e-3]}}\n")
    path.write_text(path.read_text().replace("sampler: random,", "sampler: random, objective: fdi, direction: "
                                                                  "minimize,").replace(
        "eval: {n_samples: 200}", 'eval: {n_samples: {expr: "int(200 * optim.lr_g / optim.lr_g)"}}'))
    from gantune.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_search(load_space(path), _opts(tmp_path, observers=[MlflowTracker(uri, "hidden")]))
    assert summary["counts"]["failed"] == 2 and summary["trial_steps"] == 0
    # found by a probe: the parent run of a search that exits 1 ended FINISHED, as if it had a result
    parent = MlflowClient(uri).get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["gantune.error"] == summary["error"]
    reason = _study(tmp_path, "hidden").trials[0].user_attrs["gantune_reason"]
    assert reason.startswith("trial 0: search.objective 'fdi' is not reported by this trial's evaluations (they "
                             "report: fid, modes"), reason
    assert summary["error"].startswith("every trial failed (trial 0: search.objective 'fdi'")  # its trial once


def test_a_working_directory_a_url_would_read_otherwise_keeps_the_default_stores_in_it(
        tmp_path: Path, ray_session: object, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The default stores are sqlite URLs in the working directory: pasted raw, ``/x/exp?1`` read ``?1/optuna.db``
    as the URL's options (refused, with advice to write %3F the user could not follow) and ``/x/a%41`` opened
    ``/x/aA``. The path is percent-encoded into the URL, so the stores land in the folder itself."""
    odd = tmp_path / "exp?1 %41#x"
    odd.mkdir()
    monkeypatch.chdir(odd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = _space(odd, "odd", "", trials=1, steps=20)
    assert main(["search", str(path), "--quiet"]) == 0
    assert sorted(p.name for p in odd.glob("*.db")) == ["mlflow.db", "optuna.db"]
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == [odd.name]  # nothing beside the folder
    study = optuna.load_study(study_name="odd", storage="sqlite:///optuna.db")  # relative: sqlite reads it raw
    assert study.trials[0].state == TrialState.COMPLETE
    assert main(["export", "odd", "--out", "best.yaml"]) == 0 and (odd / "best.yaml").is_file()
    capsys.readouterr()


def test_resume_reruns_a_trial_left_without_config_from_a_clean_slate(tmp_path: Path, ray_session: object) -> None:
    """A driver killed between ask() and storing the config, and one killed mid-trial with files on disk and
    intermediate values in the study: both run again from step 0 and the study matches the files."""
    path = _space(tmp_path, "dirty", "optim:\n  lr_g: {float: [1.0e-4, 1.0e-3], log: true}\n")
    space = load_space(path)
    study = optuna.create_study(study_name="dirty", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.ask()  # trial 0: RUNNING, no config stored
    dead = study.ask()  # trial 1: RUNNING with a config, killed after step 20 of a longer earlier run
    dead.set_user_attr("config", space.sample(dead))
    dead.report(123.0, 20)
    dead.report(456.0, 400)
    stale = tmp_path / "runs" / "dirty" / "trial-0001"
    (stale / "samples").mkdir(parents=True)
    (stale / "metrics.jsonl").write_text('{"step": 380.0, "loss_d": 1.0}\n{"step": 400.0, "loss_d": 1.0}\n')
    (stale / "samples" / "step_0000400.png").write_bytes(b"stale")
    (stale / "generator_best.pt").write_bytes(b"stale")

    summary = run_search(space, _opts(tmp_path, resume=True))
    trials = _study(tmp_path, "dirty").trials
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials), summary
    assert trials[0].user_attrs["config"]["optim"]["lr_g"] == trials[0].params["optim.lr_g"]
    for t in trials:
        run = tmp_path / "runs" / "dirty" / f"trial-{t.number:04d}"
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(steps) and steps[-1] == 40  # one step sequence: this attempt's
        assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000020.png", "step_0000040.png"]
        fids = {int(r["step"]): r["fid"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if "fid" in r}
        assert t.intermediate_values == pytest.approx(fids)  # the study says what the files say
        assert torch.load(run / "generator_best.pt", weights_only=True)["format"] == "gantune.generator/1"


def test_a_full_runs_disk_fails_the_trials_and_the_search_still_ends(tmp_path: Path, ray_session: object,
                                                                    small_disk: Path) -> None:
    """Every trial failed on the full disk, correctly, then Tune's reading back its own result files (an empty
    error.pkl) ended the search in an EOFError traceback."""
    path = _space(tmp_path, "full", "", trials=3, steps=200)
    opts = SearchOptions(storage=f"sqlite:///{tmp_path / 'optuna.db'}", runs_dir=str(small_disk / "runs"), quiet=True)
    summary = run_search(load_space(path), opts)
    trials = _study(tmp_path, "full").trials
    assert len(trials) == 3 and summary["counts"]["failed"] >= 1, summary
    assert all(t.state in (TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # whichever file a trial wrote when the disk filled, its weights included, the reason says so (not torch's
    # "[enforce fail at inline_container.cc:672]")
    assert all("No space left on device" in t.user_attrs.get("gantune_reason", "") for t in trials
               if t.user_attrs.get("gantune_status") == "failed"), [t.user_attrs.get("gantune_reason") for t in trials]


def test_train_on_a_full_disk_is_one_line_naming_the_checkpoint(tmp_path: Path, small_disk: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """torch.save on a full disk raised "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos":
    a traceback from ``train`` (and that sentence as a search trial's reason), where every other write said "FILE:
    No space left on device" with exit 2."""
    cfg = tmp_path / "cfg.yaml"  # G and D 256 wide, 3 deep, with Adam's moments: megabytes at the first checkpoint
    cfg.write_text(yaml.safe_dump({
        "name": "fulltrain", "data": {"name": "grid25"},
        "model": {"z_dim": 2, "g_width": 256, "d_width": 256, "g_depth": 3, "d_depth": 3},
        "train": {"steps": 40, "batch_size": 32, "log_every": 10, "device": "cpu", "checkpoint_every": 20},
        "eval": {"every": 40, "n_samples": 200, "metrics": ["diversity"]}, "health": {"objective": "diversity"}}))
    assert main(["train", str(cfg), "--out", str(small_disk / "run"), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gantune train: error: {small_disk / 'run' / 'checkpoint.pt'}: No space left on device"], err
    assert not list((small_disk / "run").glob(".checkpoint.pt.tmp*"))


# -- 5. out of memory --------------------------------------------------------------------------------------

def test_out_of_memory_is_its_own_status_and_the_search_goes_on(tmp_path: Path, ray_session: object) -> None:
    # a hidden layer of 10^12 units cannot be allocated anywhere: a real allocation failure, at once
    path = _space(tmp_path, "oom", "")  # its model section with g_width searched (a second model: would be refused)
    path.write_text(path.read_text().replace("g_width: 16,", "g_width: {categorical: [16, 1000000000000]},"))
    study = optuna.create_study(study_name="oom", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.enqueue_trial({"model.g_width": 1000000000000})
    study.enqueue_trial({"model.g_width": 16})
    summary = run_search(load_space(path), _opts(tmp_path, resume=True))
    oom, ok = _study(tmp_path, "oom").trials
    assert oom.user_attrs["gantune_status"] == "failed:oom", oom.user_attrs["gantune_reason"]
    assert oom.user_attrs["gantune_reason"].startswith("out of memory")
    assert oom.state == TrialState.PRUNED  # what Optuna's samplers learn from (FAIL trials are ignored)
    assert ok.state == TrialState.COMPLETE
    assert summary["counts"]["failed:oom"] == 1 and summary["counts"]["failed"] == 0
    # it trained nothing: export refuses it as a failed trial (it wrote a config that cannot train, exit 0)
    with pytest.raises(GantuneError, match=r"--trial 0: trial 0 of search 'oom' is failed:oom, not a completed"):
        one_trial(_study(tmp_path, "oom"), 0)
    assert one_trial(_study(tmp_path, "oom"), 1).number == 1


def test_a_search_whose_every_trial_failed_fails_naming_the_first_reason(
        tmp_path: Path, ray_session: object, capsys: pytest.CaptureFixture[str]) -> None:
    """What the load-time checks cannot see failed every trial (once a folder's broken second image, which the
    search now decodes before its first trial; here an evaluation no memory holds), and the search exited 0, its
    summary counting the failed trials' budget as saved by pruning."""
    path = tmp_path / "broken.yaml"
    path.write_text("""
search: {trials: 2, max_steps: 20, eval_every: 10, sampler: random, concurrency: 2, objective: diversity,
         direction: maximize, pruning: {asha: false}}
data: {name: digits, resolution: 8}
model: {arch: dcgan, z_dim: 4, g_width: 8, d_width: 8, g_depth: 1, d_depth: 1}
optim: {lr_g: {float: [0.0001, 0.001], log: true}}
train: {batch_size: 8, log_every: 10}
eval: {n_samples: 1000000000000, metrics: [diversity]}
""")
    code = main(["search", str(path), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--no-tracking"])
    out, err = capsys.readouterr()
    assert code == 1, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("gantune search: error: every trial failed (trial 0: "), err
    assert "out of memory" in err.strip().splitlines()[-1]
    assert "(nothing saved, counted over the trials that did not fail: 2 failed)" in out, out


def test_train_closes_its_mlflow_run_as_failed_on_oom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = tmp_path / "cfg.yaml"  # the first evaluation asks for 10^12 samples, after the run has been opened
    cfg.write_text(yaml.safe_dump({
        "name": "oomtrain", "data": {"name": "digits", "resolution": 8},
        "model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1},
        "train": {"steps": 20, "batch_size": 16, "log_every": 5, "device": "cpu"},
        "eval": {"every": 10, "n_samples": 1000000000000, "metrics": ["diversity"]},
        "health": {"objective": "diversity"}}))
    assert main(["train", str(cfg), "--out", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0], err
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("oomtrain").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["gantune.status"] == "failed"


def test_train_of_a_net_no_memory_holds_is_out_of_memory_not_a_traceback(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A latent and a hidden layer of 10^12 units: torch refuses the 10^24-element weight before allocating
    ("Storage size calculation overflowed"), which is the same fault as a failed allocation."""
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "huge", "data": {"name": "grid25"},
        "model": {"z_dim": 10**12, "g_width": 10**12, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "none"},
        "train": {"steps": 10, "batch_size": 16, "log_every": 5, "device": "cpu"}, "eval": {"metrics": []}}))
    assert main(["train", str(cfg), "--out", "run", "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory: Storage size calculation overflowed" in err[0], err


def test_a_run_that_fails_before_it_logs_gives_back_the_config_yaml_that_was_in_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The run writes its resolved config as ``--out``/config.yaml as it starts; interrupted before it logged
    anything (Ctrl-C at its first step, here raised there), it kept a user's own config.yaml there by name but left
    the resolved one in its place, comments gone, and said "nothing was kept"."""
    import yaml

    from gantune.gan.step import GANTrainer

    def interrupted(self: object, measure: bool = False) -> None:
        raise KeyboardInterrupt

    mine = "# my notes\n" + yaml.safe_dump({
        "name": "mine", "data": {"name": "grid25"},
        "model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "none"},
        "train": {"steps": 20, "batch_size": 16, "log_every": 10, "device": "cpu"}, "eval": {"metrics": []}})
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "config.yaml").write_text(mine)
    monkeypatch.setattr(GANTrainer, "step", interrupted)
    assert main(["train", str(tmp_path / "exp" / "config.yaml"), "--out", str(tmp_path / "exp"),
                 "--no-tracking"]) == 130
    assert "interrupted before the first checkpoint: nothing was kept" in capsys.readouterr().err
    assert (tmp_path / "exp" / "config.yaml").read_text() == mine
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["config.yaml"]


# -- 6, 7. input checked before anything is written ----------------------------------------------------------

def test_unknown_objective_is_rejected_at_load_with_the_available_names(tmp_path: Path) -> None:
    path = _space(tmp_path, "typo", "").read_text().replace("sampler: random", "sampler: random, objective: fdi")
    (tmp_path / "typo.yaml").write_text(path)
    with pytest.raises(ConfigError, match=r"'fdi' is not reported .*available: fid, modes, mode_coverage, hq"):
        load_space(tmp_path / "typo.yaml")
    images = _space(tmp_path, "img", "").read_text().replace("data: {name: grid25}", "data: {name: digits}")
    (tmp_path / "img.yaml").write_text(images.replace("model: {z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, "
                                                      "d_depth: 1, g_norm: none}", "")
                                       .replace("sampler: random", "sampler: random, objective: mode_coverage"))
    with pytest.raises(ConfigError, match="available: fid, kid, kid_std, classes, class_coverage"):
        load_space(tmp_path / "img.yaml")


@pytest.mark.parametrize(("content", "flags", "needle"), [
    ("", [], "empty search space"),
    ("# nothing but a comment\n", [], "empty search space"),
    # it said MLflow takes "a local path", which MLflow 3 refuses (its file store is in maintenance mode)
    (None, ["--tracking-uri", "foo://x"], "unknown scheme 'foo' (MLflow takes file://, sqlite://"),
    (None, ["--tracking-uri", "foo://x"], "; a local folder, MLflow's file store, only with "
                                          "MLFLOW_ALLOW_FILE_STORE=true: use sqlite:///mlflow.db)"),
    (None, ["--trials", "-3"], "search.trials"),
    (None, ["--max-steps", "0"], "search.max_steps"),
    (None, ["--gpus-per-trial", "-1"], "--gpus-per-trial: -1 is not a GPU share"),
    (None, ["--ray-address", "ray://127.0.0.1:10001"], "Ray Client would run the search's driver"),
])
def test_bad_search_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, content: str | None,
                                                                 flags: list[str], needle: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _space(tmp_path, "bad", "optim:\n  lr_g: {float: [1.0e-4, 1.0e-3]}\n")
    if content is not None:
        path.write_text(content)
    before = set(tmp_path.iterdir())
    assert main(["search", str(path), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert set(tmp_path.iterdir()) == before  # no mlflow.db, optuna.db, runs/ or mlartifacts/


# -- 8. a picture of every trial's end ---------------------------------------------------------------------

def test_a_trial_stopped_before_its_first_evaluation_leaves_a_picture(tmp_path: Path) -> None:
    cfg = tiny(optim={"lr_g": 1e6, "lr_d": 1e6}, train={"steps": 200, "log_every": 10},
               eval={"every": 100, "metrics": ["modes"]})
    grids: list[int] = []
    result = train(cfg, run_dir=tmp_path / "run", on_samples=lambda step, png: grids.append(step))
    assert result.status == "diverged" and result.steps < 100
    assert grids == [result.steps]
    assert [p.name for p in (tmp_path / "run" / "samples").iterdir()] == [f"step_{result.steps:07d}.png"]


# -- 2, 3. Ctrl-C and a tracking server that dies ------------------------------------------------------------

def _wait_for(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except Exception:  # sqlite busy, study not there yet
            pass
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def _search_cmd(tmp_path: Path, space: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gantune.cli", "search", str(space), "--storage",
            f"sqlite:///{tmp_path / 'optuna.db'}", "--runs-dir", str(tmp_path / "runs"), *extra]


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_exits_130_marks_runs_killed_and_resume_finishes(tmp_path: Path, stop: str) -> None:
    """Ctrl-C signals the terminal's foreground group; ``kill PID`` sends SIGTERM to the one process (it died
    with Ray's native stack dump, its MLflow runs left RUNNING)."""
    path = tmp_path / "space.yaml"
    path.write_text(tiny_space("sigint", 4, 3000, 500, [0.001], log_every=50, n_samples=200))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}
    with sigint_default_in_children():
        proc = subprocess.Popen(_search_cmd(tmp_path, path, "--tracking-uri", uri, "--quiet"), cwd=tmp_path,
                                env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    _wait_for(lambda: (tmp_path / "runs" / "sigint" / "trial-0001" / "metrics.jsonl").exists(), 240,
              "two running trials")
    if stop == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    else:
        os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err.strip().splitlines()[-1]
    study = _study(tmp_path, "sigint")
    left = [t.state for t in study.trials].count(TrialState.RUNNING)
    assert left >= 1  # left resumable, not told anything
    # the line counts what --resume runs again: every RUNNING trial (it counted those Ray had started only)
    assert _left_again(err) == left, err[-1000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sigint").experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) >= 2  # parent and running children
    if stop == "sigterm":  # it left what Ctrl-C leaves (above): the resume below is the same from here
        return

    done = subprocess.run(_search_cmd(tmp_path, path, "--tracking-uri", uri, "--resume", "--json"), cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 4
    # the search's seconds are both invocations' (the summary and the parent run named the last one's only)
    assert summary["invocations"] == 2 and summary["wall_s"] > summary["invocation_wall_s"] > 0
    runs = client.search_runs([client.get_experiment_by_name("sigint").experiment_id])
    parent = [r for r in runs if r.data.tags.get("gantune.role") == "parent"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.metrics["wall_s"] == summary["wall_s"]
    # every headline metric is stepped by invocation (trial_steps was logged twice at step 0)
    assert [m.step for m in client.get_metric_history(parent[0].info.run_id, "trial_steps")][-1] == 1
    children = [r for r in runs if r.data.tags.get("gantune.role") != "parent"]
    assert sorted(int(r.data.tags["gantune.trial"]) for r in children) == [0, 1, 2, 3]
    assert {r.info.status for r in children} == {"FINISHED"}


def test_the_interrupt_line_counts_every_trial_resume_runs_again(tmp_path: Path) -> None:
    """A PBT member waiting for the CPUs is asked from the study before it starts: the line counted the
    trials Ray had started ("1 were running") while the study held more RUNNING, all of which --resume runs
    again."""
    path = tmp_path / "space.yaml"
    text = tiny_space("pop", 4, 3000, 500, [0.001, 0.002], log_every=50, n_samples=200)
    path.write_text(text.replace("concurrency: 2", "concurrency: 0").replace(  # PBT starts its whole population
        "pruning: {asha: false, health: true}", "pruning: {scheduler: pbt, health: false}\n"
        f"  resources: {{cpu: {local_resources()['CPU']:g}}}"))  # one member at a time
    env = {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}
    with sigint_default_in_children():
        proc = subprocess.Popen(_search_cmd(tmp_path, path, "--no-tracking", "--quiet"), cwd=tmp_path, env=env,
                                start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (tmp_path / "runs" / "pop" / "trial-0000" / "metrics.jsonl").exists(), 240, "a running trial")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    left = [t.state for t in _study(tmp_path, "pop").trials].count(TrialState.RUNNING)
    assert left >= 2 and _left_again(err) == left, err[-1000:]
    assert "waiting to start: they will run again)" in err.strip().splitlines()[-1], err[-1000:]  # members paused


def _left_again(err: str) -> int:
    """The trials the interrupt line says ``--resume`` runs again: those running plus those waiting to start."""
    found = re.search(r"\((?:(\d+) (?:was|were) running)?(?: and )?(?:(\d+) (?:was|were) waiting to start)?: "
                      r"(?:it|they) will run again\)", err.strip().splitlines()[-1])
    assert found is not None, err[-1000:]
    return sum(int(n or 0) for n in found.groups())


def test_a_dead_tracking_server_never_stops_the_search(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(tiny_space("outage", 4, 200, 100, [0.001, 1000000.0], log_every=20, n_samples=200))
    enqueue_lrs(f"sqlite:///{tmp_path / 'optuna.db'}", "outage", [0.001, 1000000.0, 0.001, 0.001])
    server, uri = mlflow_server(tmp_path)
    env = {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}
    try:
        proc = subprocess.Popen(_search_cmd(tmp_path, path, "--tracking-uri", uri, "--json"), cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def tracked() -> bool:
            exp = MlflowClient(uri).get_experiment_by_name("outage")
            return exp is not None and len(MlflowClient(uri).search_runs([exp.experiment_id])) >= 2

        _wait_for(tracked, 240, "the first trial in MLflow")
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server (and its workers) die mid-search
    out, err = proc.communicate(timeout=300)  # before: every MLflow call retried for minutes on Tune's loop
    assert proc.returncode == 0, err[-2000:]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "MlflowTracker" in warnings[0], err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["trials"] == 4 and summary["counts"]["completed"] == 3 and summary["tracking_error"]
    assert all(t.state != TrialState.RUNNING for t in _study(tmp_path, "outage").trials)


# -- 9. a real Ray cluster, started apart --------------------------------------------------------------------

def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_search_on_a_separately_started_cluster(tmp_path: Path) -> None:
    """The documented two commands, as a user types them: `ray start --head` (Ray 2.60 turns token authentication
    on and leaves the token in ~/.ray/auth_token), then `gantune search --ray-address` without RAY_AUTH_MODE."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    head, port = serve_on_free_port(
        lambda port: subprocess.Popen(["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                                       "--num-gpus=0", "--include-dashboard=false"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
        _port_open, "the Ray head")
    address = f"127.0.0.1:{port}"
    path = tmp_path / "space.yaml"
    path.write_text(tiny_space("cluster", 2, 100, 50, [0.001], log_every=25, n_samples=200))
    env["GANTUNE_CACHE_DIR"] = str(tmp_path / "cache")
    try:
        short = subprocess.run(_search_cmd(tmp_path, path, "--ray-address", address, "--gpus-per-trial", "0.5"),
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert short.returncode == 2, short.stderr[-2000:]
        assert "asks for 0.5 GPU but the Ray cluster at" in short.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "optuna.db").exists()

        done = subprocess.run(_search_cmd(tmp_path, path, "--ray-address", address, "--json", "--no-tracking"),
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["counts"]["completed"] == 2
        for t in _study(tmp_path, "cluster").trials:  # trials ran in their node's own directory: files were shipped
            run = tmp_path / "runs" / "cluster" / f"trial-{t.number:04d}"
            assert {"generator.pt", "generator_best.pt", "config.yaml", "metrics.jsonl"} <= {
                p.name for p in run.iterdir()}
            assert len(list((run / "samples").iterdir())) == 2
            assert torch.load(run / "generator.pt", weights_only=True)["step"] == 100
        assert Path(summary["best"]["samples"]).exists()

        # with that cluster up, a search without --ray-address still runs on a local Ray of its own
        local = subprocess.run(_search_cmd(tmp_path, path, "--name", "local", "--no-tracking", "--quiet"),
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        assert local.returncode == 0, local.stderr[-2000:]
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started (one process group)
        head.wait(60)


def test_sigterm_ends_a_training_as_ctrl_c_does(tmp_path: Path) -> None:
    """``kill PID`` (a scheduler's time limit, a container stop) killed train at once: its MLflow run stayed
    RUNNING and stderr was empty."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"name": "grid25"}, "model": {"z_dim": 2, "g_width": 16, "d_width": 16, "g_norm": "none"},
        "train": {"steps": 200_000, "batch_size": 32, "log_every": 50, "device": "cpu"},
        "eval": {"every": 100, "n_samples": 200, "metrics": []}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "gantune.cli", "train", str(path), "--out", str(tmp_path / "run"),
                             "--tracking-uri", uri], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")})
    # the run opens at the first report (synchronously, between two records): two records, it is open
    _wait_for(lambda: len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) >= 2, 120,
              "training to report twice")
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] in (  # a checkpoint every 1,000 steps: before the first, or after
        f"gantune train: interrupted before the first checkpoint: nothing to resume (delete {tmp_path / 'run'} to "
        "train into it again)",
        f"gantune train: interrupted; continue from its last checkpoint with --resume (--out {tmp_path / 'run'})")
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["KILLED"]


def test_a_second_process_on_a_running_search_or_run_is_refused(tmp_path: Path) -> None:
    """Two searches of one name at once both passed the study check: the second's trials went into the first's
    study (5 trials of 4, one left RUNNING, a traceback); ``train --resume`` beside a running train interleaved
    its steps into the same metrics.jsonl."""
    path = tmp_path / "space.yaml"
    space = tiny_space("twice", 2, 200_000, 100, [0.001], log_every=50, n_samples=200)
    path.write_text(space.replace("health: true", "health: false"))  # trials that run until stopped
    env = {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.Popen(_search_cmd(tmp_path, path, "--no-tracking", "--quiet"), cwd=tmp_path, env=env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (tmp_path / "runs" / "twice" / "trial-0000" / "metrics.jsonl").exists(), 240,
                  "the first search's trials")
        # without --resume it was told "already exists ...; pass --resume to continue it", which the lock refused
        for flags in (["--resume"], []):
            second = subprocess.run(_search_cmd(tmp_path, path, "--no-tracking", *flags), cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=240)
            assert second.returncode == 2, second.stderr[-2000:]
            assert second.stderr.strip() == (f"gantune search: error: search 'twice' (its folder "
                                             f"{(tmp_path / 'runs' / 'twice').resolve()}) is in use by another "
                                             f"gantune process (pid {first.pid}): wait for it to end, or stop it")
        # from another --runs-dir (or working directory) it met no lock: it ran the running trials again beside
        # the first, took over their records and ended in a traceback (found by a review)
        second = subprocess.run(_search_cmd(tmp_path, path, "--no-tracking", "--resume", "--runs-dir",
                                            str(tmp_path / "elsewhere")), cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=240)
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.strip() == (f"gantune search: error: search 'twice' is running (pid {first.pid}, its "
                                         f"trials in {(tmp_path / 'runs' / 'twice').resolve()}): wait for it to end, "
                                         "or stop it, before --resume")
        assert not (tmp_path / "elsewhere").exists()
        assert len(_study(tmp_path, "twice").trials) == 2  # none added by the second
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    config = tmp_path / "runs" / "twice" / "trial-0000" / "config.yaml"
    train = [sys.executable, "-m", "gantune.cli", "train", str(config), "--out", str(tmp_path / "run"),
             "--no-tracking"]
    first = subprocess.Popen(train, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (tmp_path / "run" / "checkpoint.pt").exists(), 240, "the first run's checkpoint")
        # found by a review: without --resume it said "already holds a run; pass --resume" (or, before the first
        # checkpoint, "stopped before its first checkpoint ... delete it") of the run training there
        for again in ([*train, "--resume"], train):
            second = subprocess.run(again, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr[-2000:]
            assert second.stderr.strip() == (f"gantune train: error: run folder {tmp_path / 'run'} is in use by "
                                             f"another gantune process (pid {first.pid}): wait for it to end, or "
                                             "stop it")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_an_interrupt_while_the_search_closes_leaves_no_run_running(tmp_path: Path, ray_session: object,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after the last trial, while the summary was being made, left the MLflow parent RUNNING."""
    from gantune.errors import Interrupted
    from gantune.search import runner
    from gantune.tracking import MlflowTracker

    path = _space(tmp_path, "closing", "")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # where Ctrl-C lands: after the trials, before the summary

    monkeypatch.setattr(runner, "summarize", interrupted)
    with pytest.raises(Interrupted, match="interrupted while closing the search: every trial had ended"):
        run_search(load_space(path), _opts(tmp_path, observers=[MlflowTracker(uri, "closing")]))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("closing").experiment_id
    parent = [r for r in client.search_runs([experiment]) if r.data.tags.get("gantune.role") == "parent"]
    assert [r.info.status for r in parent] == ["KILLED"]
    monkeypatch.undo()
    run_search(load_space(path), _opts(tmp_path, resume=True, observers=[MlflowTracker(uri, "closing")]))
    parent = [r for r in client.search_runs([experiment]) if r.data.tags.get("gantune.role") == "parent"]
    assert [r.info.status for r in parent] == ["FINISHED"]


def test_a_search_none_of_whose_trials_completed_fails_with_what_to_export() -> None:
    """A search whose every trial was stopped early (diverged, say) printed "no trial completed" and exited 0:
    ``search && export`` went on to an export that failed with "no completed trial". It fails now (exit 1) and
    says how to export a stopped trial's best evaluation; one completed trial is a result."""
    import optuna

    from gantune.events import STATUS_KEY
    from gantune.search.runner import _no_result

    def trial(state: optuna.trial.TrialState, status: str, evaluated: bool = True) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(state=state, value=0.1 if state == optuna.trial.TrialState.COMPLETE
                                         else None, user_attrs={STATUS_KEY: status},
                                         intermediate_values={50: 0.2} if evaluated else None)

    study = optuna.create_study()
    pruned = [trial(optuna.trial.TrialState.PRUNED, "pruned:diverged") for _ in range(3)]
    counts = {"completed": 0, "pruned:diverged": 3, "failed": 0}
    assert _no_result(study, pruned, [], counts, "nan") == (
        "no trial ended with a result (3 pruned:diverged): nothing to export as the best; `gantune export nan "
        "--trial N` "
        "exports a stopped trial's best evaluation")
    # stopped before their first evaluation: there is no best evaluation to export (the line promised one)
    early = [trial(optuna.trial.TrialState.PRUNED, "pruned:diverged", evaluated=False) for _ in range(3)]
    assert _no_result(study, early, [], counts, "nan") == (
        "no trial ended with a result (3 pruned:diverged): nothing to export as the best; none was evaluated "
        "before it stopped")
    done = trial(optuna.trial.TrialState.COMPLETE, "completed")
    assert _no_result(study, [*pruned, done], [], {**counts, "completed": 1}, "nan") is None
    assert _no_result(study, [], [], counts, "nan") is None
    # completed, but its objective was NaN: Optuna holds it as FAIL, and `export --trial` refuses it
    nan = trial(optuna.trial.TrialState.FAIL, "completed")
    assert _no_result(study, [nan, nan], [], {**counts, "completed": 2, "pruned:diverged": 0}, "nan") == (
        "no trial ended with a result (2 completed): nothing to export as the best")
