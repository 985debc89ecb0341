"""``model.init_from`` from the command line: ``gantune train`` refuses weights that are not there or do not fit
(one line, exit 2, nothing written) and trains from those that do; a search samples it like any other key, and a
trial whose weights do not fit fails alone."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from gantune.cli import main
from gantune.events import REASON_KEY
from gantune.sampling.study import trial_status
from gantune.trial import train
from tests.conftest import enqueue_lrs, grey_folder, last_json, tiny_images

MODEL = {"z_dim": 8, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "batch"}


def _config(init_from: str, **model: object) -> dict:
    return {"name": "from", "data": {"name": "digits", "resolution": 8}, "model": {**MODEL, **model,
                                                                                    "init_from": init_from},
            "train": {"steps": 4, "batch_size": 16, "log_every": 2, "device": "cpu"},
            "eval": {"every": 4, "n_samples": 100, "metrics": []}}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny digits run's directory (checkpoint.pt and generator.pt): the weights the configs start from."""
    root = tmp_path_factory.mktemp("init-from")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANTUNE_CACHE_DIR", str(root / "cache"))
        train(tiny_images(train={"steps": 4}, eval={"every": 4}), run_dir=root / "run")
        yield root / "run"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "work"


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): -1 if p.is_dir() else p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize(("which", "model", "expected"), [
    ("nope.pt", {}, r"cfg.yaml: model.init_from: .*nope.pt does not exist"),
    ("generator.pt", {"g_width": 16}, r"model.init_from: .*generator.pt: G tensor 'net.0.weight' is \[8, 8, 4, 4\] "
                                      r"in the file but \[8, 16, 4, 4\] in this config's net"),
    ("", {"d_depth": 2}, r"model.init_from: .*checkpoint.pt: D tensor '.*' "),
])
def test_train_refuses_weights_that_are_not_there_or_do_not_fit(
        source: Path, work: Path, which: str, model: dict, expected: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    import re

    (work / "cfg.yaml").write_text(yaml.safe_dump(_config(str(source / which), **model)))
    before = _tree(work)
    assert main(["train", "cfg.yaml", "--out", "run"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0].startswith("gantune train: error: ") and re.search(expected, lines[0]), lines[0]
    assert _tree(work) == before  # no run directory, no mlflow.db


def test_a_conditional_run_from_weights_of_another_class_count_is_refused_before_it_starts(
        work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder's class count is its subfolders': the weights of a 10-class digits G do not fit a 2-class run,
    which is said before anything is written (the nets were built with the weights' count, so it failed in the
    trial, leaving a run folder)."""
    import re

    digits = tmp_path / "digits"
    train(tiny_images(model={"conditional": True}, train={"steps": 2}, eval={"every": 2, "metrics": []}),
          run_dir=digits)
    (tmp_path / "two").mkdir()
    for cls in ("a", "b"):
        grey_folder(tmp_path / "two" / cls, n=4)
    cfg = _config(str(digits / "generator.pt"), conditional=True)
    cfg["data"] = {"name": "folder", "path": str(tmp_path / "two"), "resolution": 8, "channels": 1}
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    before, cached = _tree(work), _tree(tmp_path / "cache")
    assert main(["train", "cfg.yaml", "--out", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert re.search(r"model.init_from: .*generator.pt: G tensor '.*' is \[10, .* but \[2, ", err), err
    assert _tree(work) == before and _tree(tmp_path / "cache") == cached  # nothing decoded either


def test_train_starts_from_fitting_weights(source: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "cfg.yaml").write_text(yaml.safe_dump(_config(str(source / "generator.pt"))))
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--json"]) == 0
    assert last_json(capsys)["status"] == "completed"
    assert yaml.safe_load((work / "run" / "config.yaml").read_text())["model"]["init_from"] == str(
        source / "generator.pt")
    # its weights carry a config naming the file it started from; sampling them does not need that file
    assert main(["generate", "run/generator.pt", "--interpolate", "3", "--rows", "1", "--out", "w.png"]) == 0


def test_a_run_resumes_after_its_init_from_file_is_gone(source: Path, work: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A resumed run's weights come from its checkpoint: the file it started from may have moved since (it was
    refused as not there, and its nets were loaded from it again before the checkpoint replaced them)."""
    shutil.copy(source / "generator.pt", work / "start.pt")
    (work / "cfg.yaml").write_text(yaml.safe_dump(_config(str(work / "start.pt"))))
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--json"]) == 0
    (work / "start.pt").unlink()
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--json", "--resume", "--steps", "6"]) == 0
    assert last_json(capsys)["status"] == "completed"
    assert torch.load(work / "run" / "checkpoint.pt", weights_only=False)["step"] == 6
    # a new run still needs the file
    assert main(["train", "cfg.yaml", "--out", "other", "--no-tracking"]) == 2
    assert "start.pt does not exist" in capsys.readouterr().err


def test_a_space_with_a_missing_choice_is_refused_at_load(source: Path, work: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    settings = {"trials": 2, "max_steps": 4, "eval_every": 4, "sampler": "random", "concurrency": 1,
                "pruning": {"asha": False}, "objective": "diversity", "direction": "minimize"}
    space = {"search": settings, **{k: v for k, v in _config("x").items() if k not in ("eval", "train")},
             "train": {"batch_size": 16, "log_every": 2}, "eval": {"n_samples": 100, "metrics": ["diversity"]}}
    space["model"]["init_from"] = {"categorical": [str(source), str(work / "nope.pt")]}
    (work / "space.yaml").write_text(yaml.safe_dump(space))
    assert main(["search", "space.yaml"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "model.init_from: " in line and "nope.pt does not exist" in line, line


def test_a_search_samples_init_from_and_a_trial_that_does_not_fit_fails_alone(
        source: Path, work: Path, tmp_path: Path, ray_session: object) -> None:
    shutil.copytree(source, work / "from")  # a path relative to where the search runs: the trials see it too
    wide = tmp_path / "wide"  # weights of a G twice as wide: they do not fit this space's nets
    train(tiny_images(model={"g_width": 16}, train={"steps": 2}, eval={"every": 2}), run_dir=wide)
    space = f"""
name: transfer
search: {{trials: 2, max_steps: 4, eval_every: 4, sampler: random, concurrency: 1, pruning: {{asha: false}},
         objective: diversity, direction: minimize}}
data: {{name: digits, resolution: 8}}
model: {{z_dim: 8, g_width: 8, d_width: 8, g_depth: 1, d_depth: 1, g_norm: batch,
         init_from: {{categorical: [from, "{wide}"]}}}}
train: {{batch_size: 16, log_every: 2}}
eval: {{n_samples: 100, metrics: [diversity]}}
"""
    (work / "space.yaml").write_text(space)
    storage = f"sqlite:///{work / 'optuna.db'}"
    enqueue_lrs(storage, "transfer", [])
    study = optuna.load_study(study_name="transfer", storage=storage)
    for path in (str(work / "from"), str(wide)):  # the space holds its paths made absolute
        study.enqueue_trial({"model.init_from": path})
    assert main(["search", "space.yaml", "--quiet", "--no-tracking"]) == 0
    trials = {t.params["model.init_from"]: t for t in optuna.load_study(study_name="transfer",
                                                                        storage=storage).trials}
    assert trial_status(trials[str(work / "from")]) == "completed"
    failed = trials[str(wide)]
    assert trial_status(failed) == "failed"
    reason = str(failed.user_attrs.get(REASON_KEY, ""))
    assert "G tensor 'net.0.weight' is [8, 16, 4, 4] in the file but [8, 8, 4, 4]" in reason, failed.user_attrs


def test_a_relative_image_folder_is_found_by_the_trials(work: Path, ray_session: object) -> None:
    """``data.path`` relative to where the search runs: Ray runs each trial in a folder of its own, so the space
    holds the path made absolute (as ``model.init_from``); a relative path there would name nothing."""
    grey_folder(work / "imgs", 16)
    space = """
name: relfolder
search: {trials: 1, max_steps: 4, eval_every: 4, sampler: random, concurrency: 1, pruning: {asha: false},
         objective: diversity, direction: minimize, warm_start: false}
data: {name: folder, path: imgs, resolution: 8, channels: 1}
model: {z_dim: 8, g_width: 8, d_width: 8, g_depth: 1, d_depth: 1}
train: {batch_size: 8, log_every: 2}
eval: {n_samples: 16, metrics: [diversity], extractor: digits}
"""
    (work / "space.yaml").write_text(space)
    assert main(["search", "space.yaml", "--quiet", "--no-tracking"]) == 0
    study = optuna.load_study(study_name="relfolder", storage=f"sqlite:///{work / 'optuna.db'}")
    (trial,) = study.trials
    assert trial_status(trial) == "completed", trial.user_attrs.get(REASON_KEY)
