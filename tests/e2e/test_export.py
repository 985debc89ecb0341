"""Export -> train -> generate, after one small real search (local Ray, sqlite Optuna and MLflow)."""

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient

from gantune.catalogue import load_config
from gantune.cli import main
from gantune.errors import GantuneError
from gantune.sampling.study import one_trial, trial_value
from tests.conftest import last_json, searched_in, tiny, tiny_space

SPACE = tiny_space("exp", 3, 200, 100, [0.001, 0.003, 1000000.0], log_every=50, n_samples=300, beta1=True)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> Iterator[Path]:
    with searched_in(tmp_path_factory.mktemp("export"), "exp", SPACE, [0.001, 0.003, 1000000.0]) as root:
        yield root


def test_export_reproduces_the_trial_and_trains_unchanged(searched: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "exp", "--out", "best.yaml", "--weights", "w", "--json"]) == 0
    result = last_json(capsys)
    study = optuna.load_study(study_name="exp", storage="sqlite:///optuna.db")
    best = study.best_trial
    assert result["trial"] == best.number
    text = (searched / "best.yaml").read_text()
    assert text.startswith("# exported by gantune from search 'exp'")
    cfg = load_config(searched / "best.yaml")
    assert cfg.optim.lr_g == best.params["optim.lr_g"] and cfg.optim.beta1 == best.params["optim.beta1"]
    sampled = best.user_attrs["config"]
    for section, values in sampled.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert getattr(getattr(cfg, section), key) == value, (section, key)
    assert cfg.origin is not None and cfg.origin.search == "exp"
    assert sorted(p.name for p in (searched / "w").iterdir()) == ["generator.pt", "generator_best.pt"]
    assert main(["export", "exp", "--out", "best.yaml", "--weights", "w"]) == 0  # again: both are replaced
    assert (searched / "best.yaml").read_text() == text
    # any other file is not: the space the search ran from (exported over, its --resume failed), a trial's config
    (searched / "space-copy.yaml").write_text(SPACE)
    trial_config = searched / "runs" / "exp" / "trial-0000" / "config.yaml"
    before = trial_config.read_bytes()
    capsys.readouterr()
    assert main(["export", "exp", "--out", "space-copy.yaml"]) == 2
    assert capsys.readouterr().err.strip() == ("gantune export: error: --out: space-copy.yaml exists and is not an "
                                               "earlier export of gantune's, which alone this replaces; delete it or "
                                               "choose another --out")
    assert main(["export", "exp", "--out", str(trial_config)]) == 2
    assert f"is in a run's folder ({trial_config.parent} holds its checkpoint.pt)" in capsys.readouterr().err
    assert (searched / "space-copy.yaml").read_text() == SPACE and trial_config.read_bytes() == before
    # the production run: the exported file as it is, logged to MLflow tagged with its search
    assert main(["train", "best.yaml", "--steps", "60", "--out", "prod", "--json"]) == 0
    summary = last_json(capsys)
    run = MlflowClient(f"sqlite:///{searched / 'mlflow.db'}").get_run(summary["mlflow_run_id"])
    assert run.data.tags["gantune.search"] == "exp" and run.data.tags["gantune.role"] == "train"
    assert run.data.params["optim.lr_g"] == str(best.params["optim.lr_g"])


def test_topk_seed_reruns_log_under_the_search(searched: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = MlflowClient(f"sqlite:///{searched / 'mlflow.db'}")
    exp = client.get_experiment_by_name("exp")
    # found by a review: the re-runs' parent went under the newest parent run of the search's name, here another
    # storage's search of it (the same MLflow experiment), not under the search it re-ran
    decoy = client.create_run(exp.experiment_id, run_name="exp", tags={
        "gantune.role": "parent", "gantune.study": "exp", "gantune.search": "exp", "gantune.study_uid": "other"})
    try:
        assert main(["export", "exp", "--top-k", "2", "--seeds", "2", "--steps", "100", "--out", "robust.yaml",
                     "--json"]) == 0
    finally:
        client.delete_run(decoy.info.run_id)
    result = last_json(capsys)
    assert len(result["candidates"]) == 2
    assert all(len(c["values"]) == 2 for c in result["candidates"].values())
    assert result["spread"] is not None and "+-" in (searched / "robust.yaml").read_text()
    assert load_config(searched / "robust.yaml").train.steps == 100
    runs = client.search_runs([exp.experiment_id])
    search_parent = next(r for r in runs if r.data.tags.get("gantune.study") == "exp")
    rerun_parent = next(r for r in runs if r.data.tags.get("gantune.study") == "exp-reruns")
    assert rerun_parent.data.tags["mlflow.parentRunId"] == search_parent.info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == rerun_parent.info.run_id]
    assert len(children) == 4 and all(c.data.tags["gantune.status"] == "completed" for c in children)
    # found by a probe: the re-runs' parent named its best single re-run (one seed) and not the config the export
    # chose by its mean over seeds
    assert rerun_parent.data.tags["gantune.export_chosen_trial"] == str(result["trial"])
    assert rerun_parent.data.tags["gantune.export_chosen"].startswith(f"trial {result['trial']}: ")
    # its space.yaml was one comment naming the trials; it holds the configs re-run (as comments)
    (searched / "dl").mkdir(exist_ok=True)  # not over the search's own space.yaml
    space = Path(client.download_artifacts(rerun_parent.info.run_id, "space.yaml", str(searched / "dl"))).read_text()
    assert space.startswith("# re-runs of trials") and all(f"\n# trial {n}:\n" in space for n in result["candidates"])
    assert all(line.startswith("#") for line in space.splitlines()) and "lr_g: " in space
    # found by a probe: a re-run's child showed only source_trial and seed, not the hyperparameters it re-ran
    study = optuna.load_study(study_name="exp", storage="sqlite:///optuna.db")
    for child in children:
        source = study.trials[int(child.data.params["source_trial"])]
        assert {k: child.data.params.get(k) for k in source.params} == {k: str(v) for k, v in source.params.items()}


def test_seed_reruns_show_their_trial_steps_and_eta(searched: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "exp", "--seeds", "2", "--steps", "50", "--out", "reran.yaml"]) == 0
    err = capsys.readouterr().err.splitlines()
    best = optuna.load_study(study_name="exp", storage="sqlite:///optuna.db").best_trial.number
    assert f"re-running trials [{best}] with 2 seeds at 50 steps: 2 trials, 100 trial-steps" in err
    assert not [ln for ln in err if "queued trial" in ln], err  # the re-runs' own points, said to be ignored
    progress = [ln for ln in err if " done, " in ln]
    assert progress[0].endswith("| ETA --, 100 of 100 trial-steps left at -- trial-steps/s")
    assert " 2/2 done, 0 running" in progress[-1] and "| ETA 0s, 0 of 100 trial-steps left at " in progress[-1]


def test_export_a_chosen_trial_pruned_ones_too(searched: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = optuna.load_study(study_name="exp", storage="sqlite:///optuna.db")
    other = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                 and t.number != study.best_trial.number)
    assert main(["export", "exp", "--trial", str(other.number), "--out", "other.yaml", "--json"]) == 0
    result = last_json(capsys)
    assert result["trial"] == other.number and result["status"] == "completed"
    assert load_config(searched / "other.yaml").optim.lr_g == other.params["optim.lr_g"]
    # the NaN trial (lr 1e6) was pruned before its first evaluation: exported, saying so
    nan = next(t for t in study.trials if t.params["optim.lr_g"] == 1000000.0)
    assert main(["export", "exp", "--trial", str(nan.number), "--out", "nan.yaml", "--weights", "nan-w",
                 "--json"]) == 0
    result = last_json(capsys)
    assert result["status"] == "pruned:diverged" and result["search_value"] is None
    assert "pruned:diverged at step" in (searched / "nan.yaml").read_text().splitlines()[1]
    assert (searched / "nan-w" / "generator.pt").is_file()
    assert main(["export", "exp", "--trial", "99", "--out", "none.yaml"]) == 2
    assert main(["export", "exp", "--trial", "0", "--top-k", "2", "--out", "none.yaml"]) == 2
    assert not (searched / "none.yaml").exists()


def test_a_pruned_trials_value_is_its_best_evaluation() -> None:
    """A trial stopped for diverging after a good stretch (FID 6.5, then 59) is exported with that 6.5, not the
    last value Optuna's tell stores as a pruned trial's value (test_export_values.py: the same from a search)."""
    study = optuna.create_study(direction="minimize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=9.0,
                                              user_attrs={"config": {}}))
    study.add_trial(optuna.trial.create_trial(
        params={"x": 0.2}, distributions=dist, state=optuna.trial.TrialState.PRUNED, value=59.0,
        intermediate_values={200: 30.0, 400: 6.5, 600: 59.0}, user_attrs={"config": {}}))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions=dist,
                                              state=optuna.trial.TrialState.FAIL))
    assert [trial_value(study, one_trial(study, n)) for n in (0, 1)] == [9.0, 6.5]
    with pytest.raises(GantuneError, match=r"--trial 2: .* is failed, not a completed or pruned run"):
        one_trial(study, 2)


def test_a_seed_re_run_that_collapsed_counts_against_its_config() -> None:
    """Re-runs a health verdict pruned were dropped without a word: a config that collapsed on seed 0 and scored
    0.5 on seed 1 was chosen over one that scored 0.3 on both, its header saying "over 1 seed(s) [1]"."""
    from gantune.export import Candidate, choose, header

    study = optuna.create_study(direction="maximize")
    trials = [optuna.trial.create_trial(value=v, user_attrs={"config": {}}) for v in (0.4, 0.35)]
    for t in trials:
        study.add_trial(t)
    trials = study.trials
    flaky = Candidate(trials[0], {}, 0.4, values=[0.5], seeds=[1], dropped={0: "pruned:collapsed"})
    steady = Candidate(trials[1], {}, 0.35, values=[0.3, 0.3], seeds=[0, 1])
    assert choose(study, [flaky, steady]) is steady
    text = header(study, steady, [flaky, steady], "coverage", 100)
    assert "# trial 0: coverage mean 0.5 (one seed: no spread) over 1 seed(s) [1] at 100 steps; per seed 0.5; seed 0 " \
           "pruned:collapsed, not in the mean" in text
    never = Candidate(trials[0], {}, 0.4, dropped={0: "pruned:collapsed", 1: "pruned:diverged"})
    assert "# trial 0: no seed re-run completed at 100 steps; seed 0 pruned:collapsed, not in the mean; seed 1 " \
           "pruned:diverged, not in the mean" in header(study, steady, [never, steady], "coverage", 100)
    assert choose(study, [never, steady]) is steady
    oom = Candidate(trials[0], {}, 0.4, values=[0.5], seeds=[1], dropped={0: "failed:oom"})  # says nothing of it
    assert choose(study, [oom, steady]) is oom


def test_a_pbt_members_header_gives_the_params_its_config_holds() -> None:
    """The header's params were the member's first sample while the config below held PBT's explored values."""
    from gantune.export import Candidate, header

    study = optuna.create_study(direction="maximize")
    dist = {"optim.lr_g": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    lineage = [{"step": 50, "from_trial": 1, "params": {"optim.lr_g": 0.002}, "changed": {}},
               {"step": 100, "from_trial": 1, "params": {"optim.lr_g": 0.0031}, "changed": {}}]
    study.add_trial(optuna.trial.create_trial(params={"optim.lr_g": 0.0005}, distributions=dist, value=0.4,
                                              user_attrs={"config": {}, "pbt_lineage": lineage}))
    member = Candidate(study.trials[0], {}, 0.4)
    assert header(study, member, [member], "coverage", None).splitlines()[-1] == (
        "# params: optim.lr_g=0.0031 (PBT's explore at step 100; first sampled: optim.lr_g=0.0005)")


def test_export_at_other_steps_names_what_the_space_computed_from_the_searchs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``export --steps 400`` of a search at 40 steps wrote ``decay_start: 0.5`` from ``20 / train.steps`` (0.05 at
    400 steps) without a word; so did ``gantune train best.yaml --steps 400`` of an export at the search's steps."""
    from gantune.config import dump_config, steps_note
    from gantune.export import Candidate, exported_config, steps_readers

    def note(steps: int | None) -> str:
        return steps_note(steps_readers(study), 40, steps)

    study = optuna.create_study()
    study.set_user_attr("space_text", 'optim:\n  decay_start: {expr: "20 / train.steps"}\n  lr_g: {float: [0.1, 1], '
                                      'when: "train.batch_size > 8"}\nloss: {r1_weight: {value: 1, when: "train.steps '
                                      '> 100"}}\n')
    assert note(400) == ("optim.decay_start, loss.r1_weight read train.steps in the space: computed at 40 steps, not "
                         "at these 400; set them for 400 by hand")
    assert note(40) == note(None) == ""
    # the export records them, and a production run at other steps says so as it starts
    config = {"model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1},
              "optim": {"decay": "linear", "decay_start": 0.5}, "loss": {"r1_weight": 1.0},
              "train": {"steps": 40, "batch_size": 16, "log_every": 20, "device": "cpu"},
              "eval": {"every": 20, "n_samples": 100, "metrics": []}}
    study.add_trial(optuna.trial.create_trial(value=0.1, user_attrs={"config": config}))
    chosen = Candidate(study.trials[0], config, 0.1)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(tmp_path)
    try:
        cfg = exported_config(study, chosen, [chosen], None, "sqlite:///optuna.db", 40, steps_readers(study))
        assert cfg.origin is not None and cfg.origin.steps_read == ["optim.decay_start", "loss.r1_weight"]
        (tmp_path / "best.yaml").write_text(dump_config(cfg))
        assert main(["train", "best.yaml", "--steps", "60", "--no-tracking", "--out", "run"]) == 0
        err = capsys.readouterr().err
        assert ("warning: best.yaml: optim.decay_start, loss.r1_weight read train.steps in the space: computed at 40 "
                "steps, not at these 60; set them for 60 by hand (origin.steps_read)") in err, err
        assert main(["train", "best.yaml", "--no-tracking", "--out", "run40"]) == 0
        assert "origin.steps_read" not in capsys.readouterr().err
    finally:
        monkeypatch.undo()
    study.set_user_attr("space_text", 'search: {params: {w: {expr: "train.steps / 10"}}}\noptim:\n  decay_start: '
                                      '{expr: "w / 1000"}\n')  # through a free parameter: the key it sets is named
    assert note(400).startswith("optim.decay_start read train.steps in the space")
    # the stored text reads as the space file did: PyYAML alone read 1e-4 as text, which the range refused, and the
    # note was dropped without a word
    study.set_user_attr("space_text", 'optim:\n  decay_start: {expr: "20 / train.steps"}\n  lr_g: {float: [1e-4, '
                                      '1e-3], log: true}\n')
    assert note(400).startswith("optim.decay_start read train.steps in the space")


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_multi_objective_pruned_trials_value_is_its_best_evaluation(direction: str) -> None:
    """Optuna keeps reported values for single-objective studies only: a pruned trial of a search for [coverage,
    modes] was exported as "no coverage reported" although it had evaluated coverage 0.19 and 0.17. Reported
    through ``report_intermediate`` (as the search does), its best first-objective value is kept; a trial that
    runs again from step 0 forgets it."""
    from gantune.sampling.study import report_intermediate, restart_trial

    study = optuna.create_study(directions=[direction, "maximize"])
    trial = study.ask()
    for step, value in ((20, 0.19), (40, 0.17), (60, float("nan"))):
        report_intermediate(trial, value, step)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert trial_value(study, study.trials[0]) == (0.19 if direction == "maximize" else 0.17)
    again = study.ask()
    report_intermediate(again, 0.3, 20)
    report_intermediate(restart_trial(again), 0.1, 20)
    study.tell(again, state=optuna.trial.TrialState.PRUNED)
    assert trial_value(study, study.trials[1]) == 0.1


def test_generate_points_and_images(searched: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    weights = searched / "runs" / "exp" / "trial-0000" / "generator.pt"  # lr_g 0.001: a trained one
    assert main(["generate", str(weights), "--n", "37", "--out", str(tmp_path / "pts.csv")]) == 0
    rows = list(csv.reader((tmp_path / "pts.csv").open()))
    assert rows[0] == ["x", "y"] and len(rows) == 38
    assert main(["generate", str(weights), "--n", "500", "--out", str(tmp_path / "pts.png")]) == 0
    assert (tmp_path / "pts.png").read_bytes()[:4] == b"\x89PNG"
    # images: a tiny digits run, then individual files and a grid
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "digits", "resolution": 8},
                                   "model": {"g_width": 4, "d_width": 4, "g_depth": 1, "d_depth": 1},
                                   "train": {"steps": 5, "batch_size": 8, "log_every": 5},
                                   "eval": {"metrics": [], "every": 5}}))
    assert main(["train", str(cfg), "--out", str(tmp_path / "d"), "--no-tracking"]) == 0
    assert main(["generate", str(tmp_path / "d" / "generator.pt"), "--n", "5", "--out", str(tmp_path / "imgs"),
                 "--json"]) == 0
    assert last_json(capsys)["shape"] == [5, 1, 8, 8]
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [".gantune-samples.json",
                                                                     *(f"{i:06d}.png" for i in range(5))]
    # found by a probe: into a symlink to a folder not made yet, generate's file, report's page and export's
    # weights were a traceback or "cannot write (File exists)"
    (tmp_path / "gen").symlink_to(tmp_path / "gen-made")
    assert main(["generate", str(weights), "--n", "5", "--out", str(tmp_path / "gen" / "pts.csv")]) == 0
    (tmp_path / "rep").symlink_to(tmp_path / "rep-made")
    assert main(["report", "exp", "--out", str(tmp_path / "rep" / "r.html")]) == 0
    (tmp_path / "wl").symlink_to(tmp_path / "w-made")
    assert main(["export", "exp", "--out", str(tmp_path / "b.yaml"), "--weights", str(tmp_path / "wl")]) == 0
    assert [(tmp_path / f).is_file() for f in ("gen-made/pts.csv", "rep-made/r.html", "w-made/generator.pt")] \
        == [True] * 3


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gantune.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "GANTUNE_CACHE_DIR": str(cwd / "cache")})


def test_bad_input_is_one_line_and_exit_2(searched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    weights = searched / "runs" / "exp" / "trial-0000" / "generator.pt"  # lr_g 0.001: a trained one
    tampered = tmp_path / "tampered.pt"
    payload = torch.load(weights, weights_only=True)
    payload["state_dict"] = {k: v[..., :1] if v.ndim else v for k, v in payload["state_dict"].items()}
    torch.save(payload, tampered)
    garbage = tmp_path / "garbage.pt"
    # a pickle header naming protocol 201: torch warns about it before it refuses (a random file did so 1 in ~300)
    garbage.write_bytes(b"\x80\xc9" + bytes(range(256)) * 8)
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["export", "nope", "--storage", f"sqlite:///{searched / 'optuna.db'}"], "no search named 'nope'"),
        # which tensor does not fit (torch's first line named none)
        (["generate", str(tampered), "--out", str(tmp_path / "x.png")], "weights do not fit the embedded config: "
                                                                          "G tensor 'net.0.weight' is [16, 1] in the "
                                                                          "file but [16, 4] in this config's net"),
        (["generate", str(garbage), "--out", str(tmp_path / "x.png")], "garbage.pt is unreadable (it holds more "
                                                                         "than tensors, which gantune does not load)"),
        # a run folder: "no such weights file" though it was there (and held the weights)
        (["generate", str(weights.parent), "--out", str(tmp_path / "x.png")],
         f"{weights.parent} is a folder, not a weights file (it holds generator.pt"),
        (["generate", str(weights), "--out", str(blocker / "sub" / "x.png")], "--out: cannot write"),
        # under a file: it said "(File exists)", after sampling
        (["generate", str(weights), "--out", str(blocker / "x.png")], f"({blocker} is not a writable directory)"),
        (["generate", str(weights), "--out", str(blocker / "d/")], f"({blocker} is not a writable directory)"),
        (["generate", str(weights), "--interpolate", "4", "--out", str(blocker / "i.png")],
         f"({blocker} is not a writable directory)"),
        (["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--out", str(blocker / "b.yaml")],
         "--out: cannot write"),
        # read by nothing this export does: accepted and ignored
        (["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--out", str(tmp_path / "t.yaml"),
          "--tracking-uri", f"sqlite:///{tmp_path / 'elsewhere.db'}"], "--tracking-uri: read for the seed re-runs "
                                                                        "(--seeds N) and the weights' fallback"),
        (["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--out", str(tmp_path / "t.yaml"),
          "--no-tracking"], "--no-tracking: read for the seed re-runs (--seeds N) and the weights' fallback"),
        (["export", "exp", "--seeds", "1", "--no-tracking", "--tracking-uri", "sqlite:///x.db"],
         "argument --tracking-uri: not allowed with argument --no-tracking"),
        (["train", str(weights.parent / "config.yaml"), "--out", str(blocker / "run")], "--out: cannot write"),
        # found by a fuzz: a traceback each, and the re-runs' study made (and an old one's deleted) before the flags
        (["generate", str(weights), "--out", str(tmp_path / "x.png"), "--n", str(10**13)], "out of memory"),
        # past 2^63 torch could not size a tensor by them: a TypeError, or a ValueError from linspace
        (["generate", str(weights), "--out", str(tmp_path / "x.png"), "--n", str(10**23)], "argument --n: 1000"),
        (["generate", str(weights), "--interpolate", str(10**23)], "argument --interpolate: 1000"),
        (["generate", str(weights), "--interpolate", "4", "--rows", str(10**23)], "argument --rows: 1000"),
        (["generate", str(weights), "--out", str(tmp_path / "x.png"), "--device", "tpu"], "--device: 'tpu' is not"),
        # the same path for both: the weights' folder was made where the config was to go (then refused)
        (["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--out", str(tmp_path / "y.yaml"),
          "--weights", str(tmp_path / "y.yaml")], "would be a folder at or under --out"),
        (["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--seeds", "1", "--concurrent", "-1"],
         "search.concurrency: Input should be greater than or equal to 0"),
        # the config was written over the weights just copied (exit 0), or failed under them with the weights kept
        (["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--out", str(tmp_path / "wd" /
          "generator.pt"), "--weights", str(tmp_path / "wd")], "is where --weights puts generator.pt; give the "
                                                               "config another name"),
        (["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--out", str(tmp_path / "wd" /
          "generator_best.pt" / "x.yaml"), "--weights", str(tmp_path / "wd")], "is where --weights puts "
                                                                               "generator_best.pt"),
        # a study of a storage shared with other Optuna work: KeyError: 'config', a traceback
        (["export", "plain", "--storage", f"sqlite:///{tmp_path / 'plain.db'}", "--out", str(tmp_path / "p.yaml")],
         "'plain' in sqlite:///"),
        (["report", "plain", "--storage", f"sqlite:///{tmp_path / 'plain.db'}", "--out", str(tmp_path / "p.html")],
         "is an Optuna study that no gantune search made (it holds no search settings)"),
    ]
    plain = optuna.create_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'plain.db'}")
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage = f"sqlite:///{searched / 'optuna.db'}"
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    monkeypatch.chdir(tmp_path)  # in this process, as tests/e2e/test_bad_input.py runs the commands
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    for args, needle in cases:
        code = main(args)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.yaml").exists()
    assert not (tmp_path / "wd").exists() and not (tmp_path / "p.yaml").exists() and not (tmp_path / "p.html").exists()
    assert {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)} == studies


def test_seed_reruns_never_replace_a_search_that_took_their_study_name(searched: Path, tmp_path: Path) -> None:
    """``export --seeds`` replaces ``<search>-reruns`` from an earlier export; a user's own search of that name
    (found by a fuzz: deleted without a word) is kept and the export refused."""
    import shutil

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    shutil.copy(searched / "optuna.db", tmp_path / "optuna.db")
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name="exp-reruns", storage=storage)  # an earlier test's export made one
    mine = optuna.create_study(study_name="exp-reruns", storage=storage)
    mine.set_user_attr("space_text", "name: exp-reruns\n")
    mine.add_trial(optuna.trial.create_trial(value=1.0))
    proc = _run(["export", "exp", "--storage", storage, "--seeds", "1", "--steps", "20"], tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err[-2000:]
    assert "the study 'exp-reruns', which holds another search" in err
    kept = optuna.load_study(study_name="exp-reruns", storage=storage)
    assert [t.value for t in kept.trials] == [1.0] and not (tmp_path / "best.yaml").exists()
    optuna.delete_study(study_name="exp-reruns", storage=storage)  # the user moved it away: the export runs
    proc = _run(["export", "exp", "--storage", storage, "--seeds", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # without --steps the re-runs train the search's budget, and the header says so (it said "at None steps")
    assert "with 1 seeds at 200 steps" in proc.stderr
    # the re-run seed is past the one the search trained with (0): seed 0 replayed the run the selection picked
    assert re.search(r"^# trial \d+: \w+ mean .* over 1 seed\(s\) \[1\] at 200 steps",
                     (tmp_path / "best.yaml").read_text(), re.M)
    source = optuna.load_study(study_name="exp", storage=storage).best_trial
    assert source.user_attrs["config"]["train"].get("seed", 0) == 0
    # a re-run's line names the trial it re-runs and its seed (it named the re-run's own number: "trial 0")
    assert re.search(rf"^trial +{source.number} seed 1 +completed", proc.stderr, re.M), proc.stderr[-2000:]
    # the seed the re-runs' study (and MLflow) records is the one trained with: it recorded the index 0
    reruns = optuna.load_study(study_name="exp-reruns", storage=storage).trials
    assert [(t.params["seed"], t.user_attrs["config"]["train"]["seed"]) for t in reruns] == [(1, 1)]
    assert "A new study created" not in proc.stderr  # Optuna's INFO lines are not gantune's output


def test_train_resumes_after_kill(tmp_path: Path) -> None:
    cfg = tmp_path / "long.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "grid25"},
                                   "model": {"z_dim": 4, "g_width": 32, "d_width": 32, "g_depth": 2, "d_depth": 2},
                                   "train": {"steps": 4000, "batch_size": 64, "log_every": 50,
                                             "checkpoint_every": 100},
                                   "eval": {"every": 1000, "n_samples": 200}}))
    cmd = [sys.executable, "-m", "gantune.cli", "train", str(cfg), "--out", "run"]
    env = {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    metrics = tmp_path / "run" / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 8:  # past a few checkpoints
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode != 0
    done = subprocess.run([*cmd, "--resume", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 4000
    steps = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4000  # no step logged twice, none lost at the end
    assert steps == [50.0 * i for i in range(1, 81)]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gantune").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the resumed run continued the same MLflow run
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss_d")] == steps  # each step once


def test_train_resume_continues_only_its_own_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``--resume`` with another config (found by a fuzz): other nets were a traceback (the checkpoint's
    state_dict did not fit), other data of the same shape trained on from the first run's weights and appended
    its metrics to the first run's log. Both are one line now, and the run is left as it was; ``--steps`` and
    the device may change."""
    base = {"data": {"name": "grid25"},
            "model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "none"},
            "train": {"steps": 20, "batch_size": 16, "log_every": 10, "checkpoint_every": 10},
            "eval": {"every": 20, "n_samples": 100}}
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(base))
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(first), "--out", "run", "--no-tracking", "--json"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    other_nets = tmp_path / "wide.yaml"
    other_nets.write_text(yaml.safe_dump({**base, "model": {**base["model"], "g_width": 16}}))
    other_data = tmp_path / "ring.yaml"
    other_data.write_text(yaml.safe_dump({**base, "data": {"name": "ring8"}}))
    capsys.readouterr()
    for config, needle in [(other_nets, "model.g_width: 8 there, 16 here"),
                           (other_data, "data.name: 'grid25' there, 'ring8' here")]:
        assert main(["train", str(config), "--out", "run", "--resume", "--no-tracking"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is another config's run" in err and needle in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before
    assert main(["train", str(first), "--out", "run", "--resume", "--steps", "30", "--device", "cpu",
                 "--no-tracking", "--json"]) == 0
    assert last_json(capsys)["steps"] == 30


@pytest.mark.parametrize("swap", ["truncated", "another run's"])
def test_export_weights_refuses_a_generator_that_is_not_the_trials_and_leaves_nothing(
        searched: Path, tmp_path: Path, swap: str) -> None:
    """A truncated ``generator.pt`` was copied as it was (exit 0); a refused --weights left an empty folder. Two
    searches of one name with different --storage shared runs/<name>/: the later one's trial folders replaced the
    earlier one's, and export --weights copied them as the earlier trial's (exit 0, a generator of another loss
    and learning rate beside the exported config); here trial 1's generator stands in trial 0's folder."""
    folder = searched / "runs" / "exp"
    path = folder / "trial-0000" / "generator.pt"
    original = path.read_bytes()
    try:
        path.write_bytes(original[:len(original) // 2] if swap == "truncated" else
                         (folder / "trial-0001" / "generator.pt").read_bytes())
        proc = _run(["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--trial", "0",
                     "--out", str(tmp_path / "b.yaml"), "--weights", str(tmp_path / "w")], tmp_path)
    finally:
        path.write_bytes(original)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert (f"--weights: trial 0's {path} is unreadable (" if swap == "truncated" else
            f"--weights: {path} is not trial 0's (its optim.lr_g is 0.003, the trial's 0.001): another search") in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "b.yaml").exists()


def test_the_weights_check_reads_configs_as_the_trial_config_does(tmp_path: Path) -> None:
    """``gantune init``'s image space draws ``augment: "translation,cutout"``, which the trained config holds as a
    list: every --weights export of it was refused. A PBT member's best generator may predate an exploit that
    changed its learning rate: only the keys explore never changes are compared for it."""
    from optuna.distributions import CategoricalDistribution

    from gantune.catalogue import config_from_dict
    from gantune.export import other_run
    from gantune.rundir import atomic_save, generator_payload

    raw = {"data": {"name": "digits", "augment": "translation,cutout"}, "optim": {"lr_g": 0.001}}
    atomic_save(generator_payload({}, config_from_dict(raw), 10), tmp_path / "g.pt")
    dists = {"data.augment": CategoricalDistribution(["translation,cutout", ""]),
             "optim.lr_g": CategoricalDistribution([0.001, 0.002])}

    def trial(augment: str, lr: float, **attrs: object) -> optuna.trial.FrozenTrial:
        config = {"data": {"name": "digits", "augment": augment}, "optim": {"lr_g": lr}}
        return optuna.trial.create_trial(params={"data.augment": augment, "optim.lr_g": lr}, distributions=dists,
                                         value=1.0, user_attrs={"config": config, **attrs})

    assert other_run(tmp_path / "g.pt", trial("translation,cutout", 0.001)) is None
    assert other_run(tmp_path / "g.pt", trial("", 0.001)) == "its data.augment is ['translation', 'cutout'], the " \
                                                             "trial's []"
    assert other_run(tmp_path / "g.pt", trial("translation,cutout", 0.002)) == \
        "its optim.lr_g is 0.001, the trial's 0.002"
    explored = trial("translation,cutout", 0.002, pbt_lineage=[{"step": 5, "from_trial": 1}])
    assert other_run(tmp_path / "g.pt", explored) is None


def test_export_refuses_weights_it_cannot_write_before_the_reruns(searched: Path, tmp_path: Path) -> None:
    """``--seeds 1 --weights <a folder that cannot be made>`` trained the re-runs, replacing the last export's
    re-run study, and only then failed."""
    storage = f"sqlite:///{searched / 'optuna.db'}"
    before = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    (tmp_path / "file").write_text("x")
    proc = _run(["export", "exp", "--storage", storage, "--seeds", "1", "--steps", "20", "--out",
                 str(tmp_path / "b.yaml"), "--weights", str(tmp_path / "file" / "w")], tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err == (f"gantune export: error: --weights: cannot write {tmp_path / 'file' / 'w'} "
                                            f"({tmp_path / 'file'} is not a writable directory)"), err
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == before


def test_seed_reruns_with_no_tracking_write_no_mlflow_store(searched: Path, tmp_path: Path) -> None:
    """``export --seeds`` had no ``--no-tracking`` (search and train have it): the re-runs always created the
    default ``mlflow.db`` in the working folder. With it they go to the study and their run folders alone."""
    import shutil

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    shutil.copy(searched / "optuna.db", tmp_path / "optuna.db")
    proc = _run(["export", "exp", "--storage", storage, "--seeds", "1", "--steps", "20", "--no-tracking"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "best.yaml").is_file() and (tmp_path / "runs" / "exp-reruns").is_dir()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert [t.state.name for t in optuna.load_study(study_name="exp-reruns", storage=storage).trials] == ["COMPLETE"]
    folder = searched / "runs" / "exp" / "trial-0000"  # no weights in the run folder: MLflow is not asked either
    folder.rename(folder.with_name("moved"))
    try:
        proc = _run(["export", "exp", "--storage", storage, "--trial", "0", "--out", str(tmp_path / "c.yaml"),
                     "--weights", str(tmp_path / "w"), "--no-tracking"], tmp_path)
    finally:
        folder.with_name("moved").rename(folder)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("(--no-tracking: MLflow not asked)"), proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_export_weights_leave_no_tracking_store_behind(searched: Path, tmp_path: Path) -> None:
    """A trial folder without weights sends --weights to MLflow: a sqlite store that was not there was created
    (954 KB) by an export that then failed."""
    folder = searched / "runs" / "exp" / "trial-0000"
    folder.rename(folder.with_name("moved"))
    try:
        proc = _run(["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--trial", "0", "--out",
                     str(tmp_path / "b.yaml"), "--weights", str(tmp_path / "w"), "--tracking-uri",
                     f"sqlite:///{tmp_path / 'none.db'}"], tmp_path)
    finally:
        folder.with_name("moved").rename(folder)
    assert proc.returncode == 2 and "--weights: no weights of trial 0 in" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_interrupted_seed_reruns_say_to_run_the_export_again(searched: Path, tmp_path: Path) -> None:
    """Ctrl-C during the re-runs said "continue with --resume", which export does not take."""
    from tests.conftest import sigint_default_in_children

    storage = f"sqlite:///{searched / 'optuna.db'}"
    env = {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}
    with sigint_default_in_children():
        proc = subprocess.Popen([sys.executable, "-m", "gantune.cli", "export", "exp", "--storage", storage,
                                 "--seeds", "2", "--steps", "100000", "--out", str(tmp_path / "x.yaml"),
                                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=env)
    deadline = time.monotonic() + 240
    while not any(tmp_path.glob("runs/exp-reruns/*/metrics.jsonl")):
        assert time.monotonic() < deadline and proc.poll() is None, "the re-runs never started"
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == ("gantune export: interrupted during the seed re-runs: nothing was "
                                            "exported; run the export again (it re-runs them from the start)")
    assert not (tmp_path / "x.yaml").exists()


def test_export_and_report_of_a_running_search_say_it_is_the_best_so_far(
        searched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While a search ran, export wrote its best so far as if the search had ended, without a word."""
    from gantune.rundir import exclusive

    storage = ["--storage", f"sqlite:///{searched / 'optuna.db'}"]
    running = "search 'exp' is still running (pid "
    folder = searched / "runs" / "exp"
    with exclusive(folder, "search", "search"):  # what a running search holds (another open file: held)
        assert main(["export", "exp", *storage, "--out", str(tmp_path / "b.yaml")]) == 0
        assert f"note: {running}{os.getpid()}): its best so far" in capsys.readouterr().err
        assert main(["report", "exp", *storage, "--out", str(tmp_path / "r.html")]) == 0
        assert running in capsys.readouterr().err and "is still running (pid" in (tmp_path / "r.html").read_text()
    assert main(["export", "exp", *storage, "--out", str(tmp_path / "b.yaml")]) == 0
    assert running not in capsys.readouterr().err
    with exclusive(folder, "run folder", "train"):  # `gantune train best.yaml` trains in runs/<its name> too
        assert main(["export", "exp", *storage, "--out", str(tmp_path / "b.yaml")]) == 0
        assert running not in capsys.readouterr().err


def test_export_weights_leave_only_the_chosen_trials_generators(searched: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An export of a trial with only ``generator_best.pt`` (ASHA stopped it) into the folder of an earlier export
    left that export's ``generator.pt``: `generate` of it sampled another trial beside this one's config. And a
    folder in the way of the second file was "cannot write to w" with the first file copied."""
    storage = f"sqlite:///{searched / 'optuna.db'}"
    weights = tmp_path / "w"
    assert main(["export", "exp", "--storage", storage, "--trial", "1", "--out", str(tmp_path / "a.yaml"),
                 "--weights", str(weights)]) == 0
    final = searched / "runs" / "exp" / "trial-0000" / "generator.pt"
    final.rename(final.with_name("moved.pt"))  # as ASHA leaves a stopped trial: its best weights only
    try:
        assert main(["export", "exp", "--storage", storage, "--trial", "0", "--out", str(tmp_path / "b.yaml"),
                     "--weights", str(weights)]) == 0
        assert sorted(p.name for p in weights.iterdir()) == ["generator_best.pt"]
        assert (weights / "generator_best.pt").read_bytes() == final.with_name("generator_best.pt").read_bytes()
    finally:
        final.with_name("moved.pt").rename(final)
    other = tmp_path / "v"
    (other / "generator_best.pt").mkdir(parents=True)
    capsys.readouterr()
    assert main(["export", "exp", "--storage", storage, "--trial", "0", "--out", str(tmp_path / "c.yaml"),
                 "--weights", str(other)]) == 2
    assert capsys.readouterr().err.strip() == (f"gantune export: error: --weights: {other / 'generator_best.pt'} is "
                                               "in the way (not a file); remove it or choose another folder")
    assert [p.name for p in other.iterdir()] == ["generator_best.pt"] and not (tmp_path / "c.yaml").exists()
    run = searched / "runs" / "exp" / "trial-0001"  # a run's own folder: its generator.pt would go
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(["export", "exp", "--storage", storage, "--trial", "0", "--out", str(tmp_path / "c.yaml"),
                 "--weights", str(run)]) == 2
    assert capsys.readouterr().err.strip() == (f"gantune export: error: --weights: {run} is a run's folder (it holds "
                                               "checkpoint.pt): its generators would be replaced; choose another "
                                               "folder")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    mine = tmp_path / "mine"  # a generator.pt of the user's (not gantune's format) was replaced, exit 0
    mine.mkdir()
    (mine / "generator.pt").write_text("mine")
    assert main(["export", "exp", "--storage", storage, "--trial", "0", "--out", str(tmp_path / "c.yaml"),
                 "--weights", str(mine)]) == 2
    assert capsys.readouterr().err.strip() == (f"gantune export: error: --weights: {mine / 'generator.pt'} is not a "
                                               "gantune generator file, and the copy would replace it; move it "
                                               "away or choose another folder")
    assert (mine / "generator.pt").read_text() == "mine" and not (tmp_path / "c.yaml").exists()


def test_the_header_names_every_objective_one_seed_without_a_spread_and_where_the_study_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: a search for [coverage, mode_kl] exported "search coverage 0.084" alone; ``--seeds 1``
    printed "+- 0 (std)" as if one seed had no variance; the default store was recorded as the relative
    ``sqlite:///optuna.db``, which names another file once the config leaves its folder."""
    from gantune.export import Candidate, exported_config, header

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("settings", {"objective": ["coverage", "mode_kl"], "direction": ["maximize", "minimize"]})
    dist = {"optim.lr_g": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"optim.lr_g": 0.001}, distributions=dist, values=[0.084, 0.5],
                                              user_attrs={"config": {"optim": {"lr_g": 0.001}}}))
    chosen = Candidate(study.trials[0], {"optim": {"lr_g": 0.001}}, 0.084, values=[0.09], seeds=[1])
    lines = header(study, chosen, [chosen], "coverage", 100).splitlines()
    assert lines[1] == "# chosen: trial 0, search coverage 0.084, mode_kl 0.5"
    # trained 200 steps, exported with --steps 1000: the search's value was measured at 200, not what it trains
    study.add_trial(optuna.trial.create_trial(params={"optim.lr_g": 0.001}, distributions=dist, values=[0.062, 0.5],
                                              user_attrs={"config": {"optim": {"lr_g": 0.001}}, "steps": 200}))
    longer = Candidate(study.trials[1], {"optim": {"lr_g": 0.001}}, 0.062)
    assert header(study, longer, [longer], "coverage", 1000, 1000).splitlines()[1] == (
        "# chosen: trial 1, search coverage 0.062, mode_kl 0.5 at step 200 (this config trains 1000)")
    assert header(study, longer, [longer], "coverage", 1000, 200).splitlines()[1] == (
        "# chosen: trial 1, search coverage 0.062, mode_kl 0.5")
    assert lines[2].startswith("# trial 0: coverage mean 0.09 (one seed: no spread) over 1 seed(s)")
    # the re-runs' other objectives, over the same seeds (the line gave the first objective's alone)
    chosen.others = {"mode_kl": [0.4, 0.2]}
    chosen.values, chosen.seeds = [0.09, 0.07], [0, 1]
    assert header(study, chosen, [chosen], "coverage", 100).splitlines()[2].endswith(
        "per seed 0.09, 0.07; mode_kl mean 0.3, per seed 0.4, 0.2")
    # each seed's value to the mean's digits: 4 digits hid what the 6-digit mean was made of
    chosen.values, chosen.others = [0.0912345, 0.0712345], {"mode_kl": [0.412345, 0.212345]}
    assert header(study, chosen, [chosen], "coverage", 100).splitlines()[2].endswith(
        "per seed 0.0912345, 0.0712345; mode_kl mean 0.312345, per seed 0.412345, 0.212345")
    monkeypatch.chdir(tmp_path)
    cfg = exported_config(study, chosen, [chosen], None, "sqlite:///optuna.db", 100, [])
    assert cfg.origin is not None and cfg.origin.study_storage == f"sqlite:///{tmp_path / 'optuna.db'}"


def test_seed_re_runs_at_steps_the_config_cannot_train_to_are_refused_before_they_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``export --seeds 1 --steps 60`` of a progressive trial whose fade ends at step 64 started Ray and ran a
    re-run that failed at step 0, then said what ``train --steps 60`` says at once."""
    import gantune.search

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="prog", storage=storage, direction="minimize")
    study.set_user_attr("settings", {"trials": 1, "max_steps": 200, "eval_every": 100, "objective": "fid"})
    config = {"data": {"name": "digits", "resolution": 16}, "train": {"steps": 200},
              "model": {"arch": "dcgan", "progressive": {"start": 8, "fade_steps": 64}}}
    study.add_trial(optuna.trial.create_trial(value=9.0, user_attrs={"config": config}))
    monkeypatch.setattr(gantune.search, "run_search", lambda *a, **k: pytest.fail("a re-run started"))
    assert main(["export", "prog", "--storage", storage, "--seeds", "1", "--steps", "60", "--out", "b.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search 'prog' trial 0: model.progressive: 1 fade(s) of 64 steps" in err, err
    assert optuna.get_all_study_names(storage) == ["prog"] and not (tmp_path / "b.yaml").exists()


def test_seed_re_runs_of_data_that_is_gone_are_refused_before_they_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a probe: with the search's image folder moved, ``export --seeds`` ran re-runs that each failed
    ("does not exist"), then exported with exit 0, its seed check never run. Without --seeds it exports as before."""
    import gantune.search

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="moved", storage=storage, direction="minimize")
    study.set_user_attr("settings", {"trials": 1, "max_steps": 200, "eval_every": 100, "objective": "fid"})
    gone = tmp_path / "images"
    config = {"data": {"name": "folder", "path": str(gone), "resolution": 8}, "train": {"steps": 200},
              "model": {"arch": "dcgan"}}
    study.add_trial(optuna.trial.create_trial(value=9.0, user_attrs={"config": config}))
    monkeypatch.setattr(gantune.search, "run_search", lambda *a, **k: pytest.fail("a re-run started"))
    assert main(["export", "moved", "--storage", storage, "--seeds", "1", "--out", "b.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == (f"gantune export: error: --seeds: trial 0's re-runs cannot train: data.path: image folder {gone} "
                   "does not exist\n")
    assert optuna.get_all_study_names(storage) == ["moved"] and not (tmp_path / "b.yaml").exists()
    assert main(["export", "moved", "--storage", storage, "--out", "b.yaml"]) == 0


def test_the_header_names_the_recipe_a_warm_started_trial_came_from(tmp_path: Path) -> None:
    """Found by a probe: toy_wide's trial 0 (the points recipe) exported R1 0.1 and linear decay, keys toy_wide
    never mentions, and the header's params named neither the recipe nor them."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="warm", storage=storage, direction="maximize")
    study.set_user_attr("settings", {"objective": "coverage", "direction": "maximize", "trials": 2,
                                     "max_steps": 10, "eval_every": 10})
    for value, attrs in ((0.9, {"recipe": "points", "recipe_overrides": {"loss.r1_weight": 0.1,
                                                                          "optim.decay": "linear"}}), (0.5, {})):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            "config": tiny().to_dict(), "gantune_status": "completed", "steps": 10, **attrs}))
    assert main(["export", "warm", "--storage", storage, "--out", str(tmp_path / "a.yaml")]) == 0
    assert ("\n# warm start: recipe points, which also set loss.r1_weight=0.1, optim.decay=linear (keys the space "
            "leaves unset)\n") in (tmp_path / "a.yaml").read_text()
    assert main(["export", "warm", "--storage", storage, "--trial", "1", "--out", str(tmp_path / "b.yaml")]) == 0
    assert "# warm start" not in (tmp_path / "b.yaml").read_text()


@pytest.mark.parametrize("command", ["export", "report"])
@pytest.mark.parametrize("at", ["optuna.db", "mlflow.db"])
def test_an_out_at_a_database_is_refused_and_the_database_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str,
        at: str) -> None:
    """Found in review: ``export NAME --out optuna.db`` (or ``report``, or the MLflow store's file) wrote the YAML
    or the page over the database, exit 0: every search in it was lost."""
    from mlflow import MlflowClient

    from gantune.dburl import MLFLOW, OPTUNA, sqlite_owner

    monkeypatch.chdir(tmp_path)
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="minimize")
    study.set_user_attr("settings", {"trials": 1, "max_steps": 200, "eval_every": 100, "objective": "fid"})
    study.add_trial(optuna.trial.create_trial(value=9.0, user_attrs={"config": {"train": {"steps": 200}}}))
    MlflowClient(tracking).create_experiment("s")
    assert main([command, "s", "--storage", storage, "--out", at]) == 2
    owner = OPTUNA if at == "optuna.db" else MLFLOW
    assert capsys.readouterr().err == (f"gantune {command}: error: --out: {at} is {owner}, which this would replace; "
                                       "choose another --out\n")
    assert sqlite_owner(tmp_path / at) == owner


def test_the_exported_origin_keeps_no_password_of_the_storage() -> None:
    """``origin.study_storage`` held the storage URL as given: a password in it went into best.yaml, the run's
    config.yaml, the config the weights embed and the tracking server. It is hidden as the search's summary
    hides it."""
    from gantune.export import Candidate, exported_config

    study = optuna.create_study(study_name="p")
    trial = optuna.trial.create_trial(value=1.0)
    chosen = Candidate(trial, tiny().to_dict(), 1.0)
    cfg = exported_config(study, chosen, [chosen], None, "postgresql://alice:s3cret@db.example/optuna", 100, [])
    assert cfg.origin is not None and cfg.origin.study_storage == "postgresql://alice:***@db.example/optuna"


def test_the_exported_config_names_the_chosen_trial_first_and_drops_the_searchs_repeat() -> None:
    """``origin.trials`` listed the candidates in the search's order: after ``--top-k`` re-runs chose the second,
    its first entry named another trial (the header comment that named the chosen does not travel). And a
    noise-aware search's ``eval.repeat`` (set in every trial for ASHA's noise estimate) made every evaluation of
    the production run twice as dear."""
    from gantune.export import Candidate, exported_config

    study = optuna.create_study(study_name="p")
    study.set_user_attr("settings", {"pruning": {"noise_aware": True}})
    config = tiny().to_dict()
    config["eval"]["repeat"] = True
    first, second, third = (Candidate(optuna.trial.create_trial(value=v), config, v) for v in (0.3, 0.4, 0.5))
    for number, c in enumerate((first, second, third)):
        c.trial.number = number
    cfg = exported_config(study, second, [first, second, third], None, "sqlite:///optuna.db", 100, [])
    assert cfg.origin is not None and cfg.origin.trials == [1, 0, 2]
    assert cfg.eval.repeat is False
    study.set_user_attr("settings", {"pruning": {"noise_aware": False}})  # the user's own choice stays
    assert exported_config(study, first, [first], None, "sqlite:///optuna.db", 100, []).eval.repeat is True


def test_a_ctrl_c_while_the_weights_are_copied_leaves_no_part_file_and_no_new_folder(
        searched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an OSError cleaned up: a Ctrl-C after the first file's part was written left it (full size) and the
    folder the export had made."""
    from gantune import export

    calls: list[Path] = []
    write = export.atomic_write

    def interrupted(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(export, "atomic_write", interrupted)
    weights = tmp_path / "w"
    assert main(["export", "exp", "--storage", f"sqlite:///{searched / 'optuna.db'}", "--trial", "1",
                 "--out", str(tmp_path / "a.yaml"), "--weights", str(weights)]) == 130
    assert len(calls) == 2 and not weights.exists() and not (tmp_path / "a.yaml").exists()


def test_an_export_that_fails_leaves_the_weights_the_config_and_the_folders_as_they_were(
        searched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The weights were copied before the config was written, and the config's missing folders made with a plain
    mkdir: an ``--out`` the system refuses (a name too long) exited 2 with an earlier export's weights replaced
    by this trial's and the folders left. Now the config goes first, and a weights failure puts it back."""
    storage = f"sqlite:///{searched / 'optuna.db'}"
    weights, earlier = tmp_path / "w", tmp_path / "a.yaml"
    assert main(["export", "exp", "--storage", storage, "--trial", "1", "--out", str(earlier),
                 "--weights", str(weights)]) == 0
    kept = {p.name: p.read_bytes() for p in weights.iterdir()}
    text = earlier.read_text()
    capsys.readouterr()
    out = tmp_path / "new" / ("a" * 300) / "x.yaml"
    assert main(["export", "exp", "--storage", storage, "--trial", "0", "--out", str(out),
                 "--weights", str(weights)]) == 2
    assert capsys.readouterr().err.startswith(f"gantune export: error: --out: cannot write {out} (")
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == kept and not (tmp_path / "new").exists()
    blocked = tmp_path / "v"
    (blocked / "generator_best.pt").mkdir(parents=True)
    assert main(["export", "exp", "--storage", storage, "--trial", "0", "--out", str(earlier),
                 "--weights", str(blocked)]) == 2
    assert earlier.read_text() == text  # the earlier export's config, not this one's without its weights


def test_export_refuses_a_candidate_without_weights_before_the_reruns(searched: Path, tmp_path: Path) -> None:
    """``--seeds 1 --weights W`` of a trial whose run folder lost its generators and whose MLflow store has none
    trained every re-run (replacing the last export's re-run study), then failed "no weights of trial N"."""
    storage = f"sqlite:///{searched / 'optuna.db'}"
    before = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    run = searched / "runs" / "exp" / "trial-0000"
    moved = {n: run / f"{n}.away" for n in ("generator.pt", "generator_best.pt") if (run / n).exists()}
    for n, away in moved.items():
        (run / n).rename(away)
    try:
        proc = _run(["export", "exp", "--storage", storage, "--trial", "0", "--seeds", "1", "--steps", "20",
                     "--out", str(tmp_path / "b.yaml"), "--weights", str(tmp_path / "w"), "--tracking-uri",
                     f"sqlite:///{tmp_path / 'empty.db'}"], tmp_path)
    finally:
        for n, away in moved.items():
            away.rename(run / n)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err == ("gantune export: error: --weights: trial 0: no weights in the run "
                                            "folder or in MLflow; the seed re-runs may choose it: export "
                                            "without --weights, or the others (--trial N)"), err
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == before
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "w").exists()
    # a damaged generator was taken as weights (only its being there was asked) and failed the copy after the re-runs
    kept = {n: (run / n).read_bytes() for n in ("generator.pt", "generator_best.pt") if (run / n).exists()}
    try:
        for n in kept:
            (run / n).write_bytes(b"not a torch file")
        proc = _run(["export", "exp", "--storage", storage, "--trial", "0", "--seeds", "1", "--steps", "20",
                     "--out", str(tmp_path / "b.yaml"), "--weights", str(tmp_path / "w")], tmp_path)
    finally:
        for n, data in kept.items():
            (run / n).write_bytes(data)
    assert proc.returncode == 2 and proc.stderr.startswith("gantune export: error: --weights: trial 0: "), proc.stderr
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == before
