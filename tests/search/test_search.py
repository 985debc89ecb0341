"""Searches on a local Ray (the machine's CPUs, 2 in CI) with tiny grid25 GANs."""

import dataclasses
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
from mlflow import MlflowClient
from optuna.trial import TrialState

from gantune.events import STATUS_KEY
from gantune.sampling.space import load_space
from gantune.search import SearchOptions, run_search

REGIMES = """
name: regimes
search:
  trials: 4
  max_steps: 750
  eval_every: 250
  quick_every: 125
  sampler: random
  concurrency: 2
  pruning: {asha: false, health: true}
  params:
    regime: {categorical: [healthy, collapse, nan]}
data: {name: grid25}
model: {z_dim: 8, g_width: 64, d_width: 64, g_depth: 2, d_depth: 2, g_norm: none}
optim:
  lr_g: {expr: "1.0e-3 if regime == 'healthy' else (1.0e-4 if regime == 'collapse' else 1.0e6)"}
  lr_d: {expr: "1.0e-3 if regime == 'healthy' else (1.0e-2 if regime == 'collapse' else 1.0e6)"}
train: {batch_size: 128, log_every: 25}
eval: {n_samples: 1000, quick_samples: 500}
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))


def test_statuses_reach_optuna_and_nan_does_not_stop_the_search(tmp_path: Path, ray_session: object,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "regimes.yaml"
    path.write_text(REGIMES)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="regimes", storage=storage)
    for regime in ("nan", "collapse", "healthy", "nan"):
        study.enqueue_trial({"regime": regime})
    summary = run_search(load_space(path), SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs")))
    study = optuna.load_study(study_name="regimes", storage=storage)
    by_regime = {}
    for t in study.trials:
        by_regime.setdefault(t.params["regime"], []).append(t)
    assert sorted(by_regime) == ["collapse", "healthy", "nan"] and len(study.trials) == 4

    for t in by_regime["nan"]:  # NaN trials end pruned:diverged; the search went on
        assert t.state == TrialState.PRUNED and t.user_attrs["gantune_status"] == "pruned:diverged"
        assert t.user_attrs["steps"] <= 50
    (collapsed,) = by_regime["collapse"]
    assert collapsed.state == TrialState.PRUNED
    assert collapsed.user_attrs["gantune_status"] == "pruned:collapsed", collapsed.user_attrs["gantune_reason"]
    # PRUNED at the step it was stopped, its study values those of its evaluations, each at its own step
    assert collapsed.user_attrs["steps"] < 750 and collapsed.last_step <= collapsed.user_attrs["steps"]
    assert set(collapsed.intermediate_values) <= {250, 500}
    (healthy,) = by_regime["healthy"]
    assert healthy.state == TrialState.COMPLETE and healthy.value is not None
    assert healthy.intermediate_values.keys() == {250, 500, 750}
    for t in study.trials:  # what its last report measured of the run: kept for a child run mended on --resume
        assert 0 <= t.user_attrs["eval_fraction"] < 1 and t.user_attrs["trial_wall_s"] > 0, t.user_attrs

    assert summary["counts"]["pruned:diverged"] == 2 and summary["counts"]["completed"] == 1
    assert summary["best"]["trial"] == healthy.number
    assert summary["best"]["metrics"] == healthy.user_attrs["metrics"] and "mode_kl" in summary["best"]["metrics"]
    assert summary["trial_steps"] < summary["budget_steps"] == 4 * 750
    assert Path(summary["best"]["samples"]).exists()
    # the progress lines carry an ETA from the trial-steps left; nothing is left once every trial ended
    progress = [ln for ln in capsys.readouterr().err.splitlines() if " done, " in ln]
    assert progress[0].endswith(" | ETA --, 3000 of 3000 trial-steps left at -- trial-steps/s")
    assert " 4/4 done, 0 running" in progress[-1]
    assert re.search(r" \| ETA 0s, 0 of 3000 trial-steps left at [0-9.e+]+ trial-steps/s$", progress[-1]), progress[-1]


RESUME = """
name: resumable
search:
  trials: 6
  max_steps: 600
  eval_every: 200
  sampler: random
  concurrency: 2
  pruning: {asha: true, health: true, grace_evals: 1, reduction_factor: 2}
data: {name: grid25}
model: {z_dim: 8, g_width: 32, d_width: 32, g_depth: 2, d_depth: 2, g_norm: none}
optim:
  lr_g: {float: [1.0e-4, 1.0e-2], log: true}
train: {batch_size: 64, log_every: 50}
eval: {n_samples: 500}
"""


def _states(storage: str) -> list[TrialState]:
    try:
        return [t.state for t in optuna.load_study(study_name="resumable", storage=storage).trials]
    except Exception:  # the study does not exist yet, or sqlite is busy
        return []


def test_killed_search_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    path = tmp_path / "resumable.yaml"
    path.write_text(RESUME)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "gantune.cli", "search", str(path), "--storage", storage,
           "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    env = {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = _states(storage)
        if sum(s != TrialState.RUNNING for s in states) >= 1 and TrialState.RUNNING in states:
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the search never had a finished and a running trial")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    before = optuna.load_study(study_name="resumable", storage=storage).trials
    assert any(t.state == TrialState.RUNNING for t in before)
    finished_before = {t.number: t.params for t in before if t.state != TrialState.RUNNING}

    out = subprocess.run([*cmd, "--resume", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    after = optuna.load_study(study_name="resumable", storage=storage).trials
    assert [t.number for t in after] == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in after)
    for number, params in finished_before.items():  # finished trials were kept, not re-run
        assert after[number].params == params
    assert summary["trials"] == 6 and sum(summary["counts"].values()) == 6
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # one ended child run per trial, as the study says
    runs = client.search_runs([client.get_experiment_by_name("resumable").experiment_id])
    children = [r for r in runs if "gantune.trial" in r.data.tags]
    assert sorted((int(c.data.tags["gantune.trial"]), c.data.tags["gantune.status"]) for c in children) == [
        (t.number, t.user_attrs[STATUS_KEY]) for t in after]
    assert all(c.info.status in ("FINISHED", "FAILED") for c in children)


def test_existing_search_needs_resume(tmp_path: Path) -> None:
    from gantune.cli import main

    path = tmp_path / "regimes.yaml"
    path.write_text(REGIMES)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="regimes", storage=storage)
    study.tell(study.ask(), 1.0)
    assert main(["search", str(path), "--storage", storage]) == 2
    assert main(["search", str(path), "--storage", storage, "--name", "nope", "--resume"]) == 2


def test_a_runs_folder_is_one_storages_search_at_a_time(tmp_path: Path) -> None:
    """Two searches of one name in different storages shared runs/<name>/: the later one's trial folders replaced
    the earlier one's (whose export then copied the later one's generator). The folder now names its storage; a
    search of the name in another storage is refused while that storage still has the search."""
    from gantune.errors import GantuneError
    from gantune.search.runner import OWNER, claim_runs

    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    root = tmp_path / "runs" / "s"
    root.mkdir(parents=True)
    optuna.create_study(study_name="s", storage=first).set_user_attr("gantune_uid", "u1")
    claim_runs(root, "s", first)
    claim_runs(root, "s", first)  # its own: a resume
    claim_runs(root, "s", f"sqlite:///{tmp_path}/./a.db?timeout=30")  # the same study, its URL spelled otherwise
    assert json.loads((root / OWNER).read_text())["storage"] == f"sqlite:///{tmp_path}/./a.db?timeout=30"
    claim_runs(root, "s", first)
    with pytest.raises(GantuneError, match=rf"--runs-dir: {root} holds the trials of search 's' in {first}; a search "
                                           rf"of that name in {second} would replace them"):
        claim_runs(root, "s", second)
    assert not (tmp_path / "b.db").exists()
    # the command: one line, exit 2, before the study, the MLflow store or Ray start
    space = tmp_path / "s.yaml"
    space.write_text(REGIMES.replace("name: regimes", "name: s"))
    proc = subprocess.run([sys.executable, "-m", "gantune.cli", "search", str(space), "--storage", second,
                           "--runs-dir", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"gantune search: error: --runs-dir: {root} holds the trials of search 's' in {first}; a search of that "
        f"name in {second} would replace them: give it another --runs-dir or --name"], proc.stderr
    assert not (tmp_path / "b.db").exists() and not (tmp_path / "m.db").exists()
    optuna.delete_study(study_name="s", storage=first)  # gone from its storage: the folder may be taken
    claim_runs(root, "s", second)
    assert json.loads((root / OWNER).read_text()) == {"storage": second, "study": "s"}


def test_bad_space_is_exit_2_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(REGIMES.replace("lr_d:", "lr_dd:"))
    proc = subprocess.run([sys.executable, "-m", "gantune.cli", "search", str(bad)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"gantune search: error: {bad}: optim.lr_dd: unknown key (the optim section has: " \
        "beta1, beta2, decay, decay_start, ema, grad_clip, lr_d, lr_g, n_critic, name, weight_decay)"
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("stored", "drawn", "needle"), [
    # found by a fuzz: each resumed and then mixed or failed every new trial
    ({"objective": "mode_kl"}, [0.001, 0.003],
     "ranks its trials by mode_kl; this space asks for fid: the values would not compare"),
    ({"max_steps": 400}, [0.001, 0.003], "trains each trial for 400 steps; this run asks for 200: trials of two "
                                         "budgets would be ranked together (continue it with --max-steps 400"),
    ({}, [0.001, 0.002], "--resume: optim.lr_g: search 'changed' drew it from choices [0.001, 0.002]; this space "
                         "from choices [0.001, 0.003] (CategoricalDistribution does not support dynamic value space"),
    # other objectives were refused for their directions ("created with direction minimize, maximize")
    ({"objective": ["fid", "coverage"], "direction": ["minimize", "maximize"]}, [0.001, 0.003],
     "ranks its trials by fid, coverage; this space asks for fid: the values would not compare"),
    # other data: it ran, TPE and ASHA compared ring8's values with grid25's, and the summary then ranked the new
    # trials alone ("measured differently")
    ({"provenance": {"data": "ring8", "resolution": None}}, [0.001, 0.003],
     "--resume: search 'changed' measured its trials on ring8; this space trains on grid25: the values would not "
     "compare (start another search with --name)"),
    # other samples per evaluation: FID falls with more samples, and the new trials' values were ranked with the
    # old ones (the summary alone told them apart, as "measured differently")
    ({"n_samples": 200}, [0.001, 0.003], "--resume: search 'changed' measured its trials with eval.n_samples 200; "
     "this space with 100: the values would not compare (keep eval.n_samples: 200, or start another search"),
])
def test_a_resumed_search_must_measure_and_draw_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          stored: dict, drawn: list[float], needle: str) -> None:
    """The study as an earlier run left it (its settings kept, a trial drawn), resumed with a space that changed:
    refused in one line before anything starts."""
    from optuna.distributions import CategoricalDistribution

    from gantune.cli import main
    from gantune.sampling.settings import SearchSettings
    from tests.conftest import tiny_space

    path = tmp_path / "changed.yaml"
    path.write_text(tiny_space("changed", 3, 200, 100, [0.001, 0.003], log_every=50, n_samples=100))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="changed", storage=storage, directions=stored.get("direction"))
    earlier = load_space(path).settings.model_dump() | {k: v for k, v in stored.items()
                                                        if k not in ("provenance", "n_samples")}
    study.set_user_attr("settings", SearchSettings.model_validate(earlier).model_dump())
    study.set_user_attr("space_text", tiny_space("changed", 3, 200, 100, [0.001, 0.003], log_every=50,
                                                 n_samples=stored.get("n_samples", 100)))
    study.add_trial(optuna.trial.create_trial(params={"optim.lr_g": 0.001}, values=[1.0] * len(study.directions),
                                              distributions={"optim.lr_g": CategoricalDistribution(drawn)},
                                              user_attrs={"provenance": stored.get("provenance", {})}))
    capsys.readouterr()
    assert main(["search", str(path), "--storage", storage, "--resume", "--no-tracking", "--runs-dir",
                 str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert len(optuna.load_study(study_name="changed", storage=storage).trials) == 1
    assert not (tmp_path / "runs").exists()


def test_a_resume_that_asks_for_fewer_trials_than_it_started_is_refused(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``--resume --trials 1`` on a search with 2 trials finished and 1 interrupted ran the interrupted one anyway
    and stored ``trials: 1``, the count its export and report measure the budget by."""
    from optuna.distributions import CategoricalDistribution

    from gantune.cli import main
    from tests.conftest import tiny_space

    path = tmp_path / "s.yaml"
    path.write_text(tiny_space("s", 3, 200, 100, [0.001, 0.003], log_every=50, n_samples=100))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr("settings", load_space(path).settings.model_dump())
    dist = {"optim.lr_g": CategoricalDistribution([0.001, 0.003])}
    for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.COMPLETE,
                  optuna.trial.TrialState.RUNNING):
        study.add_trial(optuna.trial.create_trial(params={"optim.lr_g": 0.001}, distributions=dist, state=state,
                                                  value=1.0 if state == optuna.trial.TrialState.COMPLETE else None))
    capsys.readouterr()
    assert main(["search", str(path), "--storage", storage, "--resume", "--trials", "2", "--no-tracking",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == ("gantune search: error: --resume: search 's' has 3 trials started (2 "
                                               "finished, 1 to run again) and search.trials (or --trials) is 2: give "
                                               "--trials 3 or more")
    assert optuna.load_study(study_name="s", storage=storage).user_attrs["settings"]["trials"] == 3
    assert not (tmp_path / "runs").exists()


def test_a_resume_without_trials_keeps_the_budget_the_study_was_given(tmp_path: Path) -> None:
    """``--trials 50`` on a file of 20, killed, then ``--resume``: it ran to the file's 20 and stored 20 (or, at 30
    started, was refused with advice to shrink the budget to 30)."""
    from gantune.sampling.study import continued
    from tests.conftest import tiny_space

    path = tmp_path / "s.yaml"
    path.write_text(tiny_space("s", 3, 200, 100, [0.001, 0.003], log_every=50, n_samples=100))
    settings = load_space(path).settings
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert continued("s", storage, settings) is settings and not (tmp_path / "optuna.db").exists()
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr("settings", settings.model_copy(update={"trials": 5}).model_dump())
    assert continued("s", storage, settings).trials == 5
    assert continued("s", storage, settings.model_copy(update={"trials": 7})).trials == 7  # the file grew it


def test_the_budget_counts_every_trial_of_the_study(tmp_path: Path) -> None:
    """``--resume --trials 1`` on a search of 2 trials: the no-pruning budget is the trials the study holds, not
    the 1 asked for (a fuzz saw "80 of a 40 no-pruning budget (-100% saved)")."""
    from gantune.events import Status
    from gantune.search.runner import summarize
    from tests.conftest import tiny_space

    path = tmp_path / "done.yaml"
    path.write_text(tiny_space("done", 1, 200, 100, [0.001], log_every=50, n_samples=100))
    space = load_space(path)
    study = optuna.create_study(study_name="done", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"steps": 200,
                                                                          STATUS_KEY: Status.COMPLETED.value}))
    summary = summarize(study, space, space.settings, "sqlite://", tmp_path / "runs", 0.0)
    assert (summary["trial_steps"], summary["budget_steps"]) == (400, 400)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_study_does_not_draw_its_first_trials_again(tmp_path: Path, sampler: str) -> None:
    """Seeded as at the start, a resumed sampler drew its first configs again (an interrupted 4-trial search's
    trial 2 was trial 1 to the last digit): a resume seeds it with the search's seed and the trials so far."""
    from gantune.sampling.study import open_study

    path = tmp_path / "space.yaml"
    path.write_text(REGIMES.replace("sampler: random", f"sampler: {sampler}"))
    settings = load_space(path).settings
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    lr = optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)

    def draw(study: optuna.Study) -> float:
        trial = study.ask({"lr": lr})
        study.tell(trial, 1.0)
        return float(trial.params["lr"])

    first = [draw(open_study("s", storage, settings)) for _ in range(2)]  # each open is a resume but the first
    assert first[0] != first[1]
    again = draw(open_study("s", storage, settings))
    assert again not in first
    # and the same resume draws the same: a search stays reproducible from its seed
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert [draw(open_study("s", other, settings)) for _ in range(3)] == [*first, again]


@pytest.mark.parametrize(("sampler", "options", "says"), [
    ("qmc", "", "QMCSampler is experimental"),
    ("tpe", "\n  sampler_options: {group: true}", "group"),
])
def test_optunas_experimental_notes_are_one_warning_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         sampler: str, options: str, says: str) -> None:
    """``sampler: qmc`` or ``sampler_options: {group: true}`` printed Optuna's ExperimentalWarning raw: two lines
    with a source path, on a new study and again on a resumed one."""
    from gantune.sampling.study import open_study

    path = tmp_path / "space.yaml"
    path.write_text(REGIMES.replace("sampler: random", f"sampler: {sampler}{options}"))
    settings = load_space(path).settings
    capsys.readouterr()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study("s", storage, settings)
    study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}), 1.0)
    open_study("s", storage, settings)  # resumed: built twice, said once
    lines = capsys.readouterr().err.strip().splitlines()  # one line an open
    assert len(lines) == 2 and all(line.startswith(f"warning: search.sampler {sampler}: Optuna says ")
                                   for line in lines), lines
    assert says in lines[0] and ".py:" not in "".join(lines)


def test_the_summary_names_the_trials_that_trained_another_search_default(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Resumed with ``defaults: {optim.ema: 0.999}`` after three trials at 0.99: the summary said "optim.ema
    0.999" beside a best trial that had trained 0.99 (the export was right)."""
    from gantune.cli import _print_search_summary
    from gantune.search.runner import _other_defaults

    path = tmp_path / "w.yaml"
    path.write_text("search: {trials: 4, max_steps: 40, eval_every: 20, defaults: {optim.ema: 0.999}}\n"
                    "data: {name: grid25}\noptim: {lr_g: {float: [0.0001, 0.001]}}\n")
    space = load_space(path)
    trials = [optuna.trial.create_trial(value=1.0, user_attrs={"config": {"optim": {"ema": ema}}})
              for ema in (0.99, 0.99, 0.999)]
    for n, t in enumerate(trials):  # as the study numbers them
        t.number = n
    other = _other_defaults(trials, space)
    assert other == {"optim.ema": [(0.99, [0, 1])]}
    _print_search_summary({"search": "w", "trials": 3, "wall_s": 3.0, "counts": {"completed": 3},
                           "trial_steps": 120, "budget_steps": 160, "max_steps": 40, "failed_trials": 0,
                           "failed_steps": 0, "best": None, "search_defaults": space.search_defaults(switched=True),
                           "search_defaults_other": other, "study_storage": "s", "artifact_dir": "a",
                           "dashboard": "d"})
    assert ("search defaults (keys the space leaves unset or a `when` switches off): optim.ema 0.999 (trials 0, 1 "
            "trained 0.99)") in capsys.readouterr().out


def test_the_summary_says_mlflow_stopped_recording(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a probe: MLflow's disk filled mid-search; the summary dropped its MLflow line without a word (the
    warning had come many lines before)."""
    from gantune.cli import _print_search_summary

    _print_search_summary({"search": "w", "trials": 1, "wall_s": 3.0, "counts": {"completed": 1},
                           "trial_steps": 40, "budget_steps": 40, "max_steps": 40, "failed_trials": 0,
                           "failed_steps": 0, "best": None, "study_storage": "s", "artifact_dir": "a",
                           "dashboard": "d", "tracking_error": "MlflowTracker.trial_result: OperationalError: "
                                                               "database or disk is full"})
    assert ("  MLflow: stopped recording at MlflowTracker.trial_result: OperationalError: database or disk is full "
            "(the study holds every trial; runs it had open may stay RUNNING; --resume fills in the ended trials' "
            "runs)") in capsys.readouterr().out.splitlines()
    _print_search_summary({"search": "w", "trials": 1, "wall_s": 3.0, "counts": {"completed": 1},
                           "trial_steps": 40, "budget_steps": 40, "max_steps": 40, "failed_trials": 0,
                           "failed_steps": 0, "best": None, "study_storage": "s", "artifact_dir": "a",
                           "dashboard": "d", "tracking_error": "x", "tracking_runs_ended": True})
    assert ("  MLflow: stopped recording at x (the study holds every trial; the runs left open end KILLED, tagged "
            "gantune.tracking_lost; --resume fills in the ended trials' runs)") in capsys.readouterr().out.splitlines()


def test_a_multi_objective_summary_says_its_best_is_one_of_the_front() -> None:
    """The summary of ``objective: [coverage, fid]`` named a best trial and no front (export said so)."""
    from gantune.search.runner import front_note

    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.5, 3.0], [0.4, 1.0], [0.3, 5.0]):  # trial 2 is dominated by both others
        study.add_trial(optuna.trial.create_trial(values=values))
    best = study.trials[0]
    assert front_note(study, best, ["coverage", "fid"]) == (
        "2 objectives: trial 0 is the Pareto front's best on coverage; the front also holds trial 1 (export one "
        "with --trial N)")
    assert front_note(study, best, ["coverage"]) is None and front_note(study, None, ["coverage", "fid"]) is None


def test_a_search_name_taken_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "(1 trials)"."""
    from gantune.cli import main
    from tests.conftest import tiny_space

    path = tmp_path / "taken.yaml"
    path.write_text(tiny_space("taken", 3, 200, 100, [0.001, 0.003], log_every=50, n_samples=100))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="taken", storage=storage).add_trial(optuna.trial.create_trial(value=1.0))
    capsys.readouterr()
    assert main(["search", str(path), "--storage", storage, "--no-tracking", "--runs-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (f"gantune search: error: search 'taken' already exists in {storage} (1 trial); "
                                       "pass --resume to continue it or --name to start another\n")


def test_a_finished_search_resumed_says_nothing_of_how_it_would_draw(tmp_path: Path) -> None:
    """``--resume`` of a search whose trials had all finished warned "every trial is a random draw"."""
    from gantune.search.runner import check_run
    from tests.conftest import tiny_space

    path = tmp_path / "fin.yaml"
    path.write_text(tiny_space("fin", 3, 200, 100, [0.001, 0.003], log_every=50, n_samples=100)
                    .replace("sampler: random", "sampler: tpe"))
    space = load_space(path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    opts = SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"), resume=True)
    study = optuna.create_study(study_name="fin", storage=storage)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=1.0))
    assert check_run(space, opts)[1]  # one to run: the warnings hold
    study.add_trial(optuna.trial.create_trial(value=1.0))
    assert check_run(space, opts)[1] == []


def test_a_finished_search_resumed_starts_no_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--resume`` of a search whose trials had all finished started Ray (seconds) to run nothing; one with a
    trial left running still starts it."""
    from gantune.search import runner
    from tests.conftest import tiny_space

    def no_ray(address: str | None, space: object, run_root: object) -> None:
        raise RuntimeError("Ray started")

    monkeypatch.setattr(runner, "_init_ray", no_ray)
    looks: list[str] = []  # the read of the study that says so was made twice per resume (check_run, run_search)
    monkeypatch.setattr(runner, "_nothing_left", lambda *a, f=runner._nothing_left: looks.append("x") or f(*a))
    path = tmp_path / "fin.yaml"
    path.write_text(tiny_space("fin", 2, 200, 100, [0.001, 0.003], log_every=50, n_samples=100))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    opts = SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"), resume=True)
    study = optuna.create_study(study_name="fin", storage=storage)
    for value in (0.5, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    assert run_search(load_space(path), opts)["trials"] == 2
    assert len(looks) == 1
    study.ask()  # left RUNNING by a killed search: the resume runs it again
    with pytest.raises(RuntimeError, match="Ray started"):
        run_search(load_space(path), dataclasses.replace(opts, trials=3))


@pytest.mark.parametrize("failing", ["fit", "summary"])
def test_a_search_that_fails_ends_its_mlflow_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  failing: str) -> None:
    """Only a Ctrl-C told the observers: a search that failed otherwise (Ray, the study's storage locked or full),
    while its trials ran or in the summary after them (which reads the study), left its parent run and its running
    children RUNNING in MLflow for good. They end KILLED, as after a Ctrl-C, and the error goes on to the command."""
    from gantune.search import runner
    from gantune.tracking import MlflowTracker
    from tests.conftest import tiny_space

    def fit(space: object, study: object, resumed: object, to_create: object, done_before: object,
            run_root: object, resources: object, opts: object, observers: list, *rest: object) -> None:
        for obs in observers:
            obs.trial_started(0, {"optim.lr_g": 0.001}, {})
        if failing == "fit":
            raise RuntimeError("database is locked")

    def summarize(*args: object) -> dict:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(runner, "_init_ray", lambda *a: (False, {"cpu": 1, "gpu": 0}))
    monkeypatch.setattr(runner, "_fit", fit)
    if failing == "summary":
        monkeypatch.setattr(runner, "summarize", summarize)
    path = tmp_path / "failing.yaml"
    path.write_text(tiny_space("failing", 2, 200, 100, [0.001], log_every=50, n_samples=100))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opts = SearchOptions(storage=f"sqlite:///{tmp_path / 'optuna.db'}", runs_dir=str(tmp_path / "runs"),
                         observers=[MlflowTracker(uri, "failing")])
    with pytest.raises(RuntimeError, match="database is locked"):
        run_search(load_space(path), opts)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}


def test_a_resume_on_an_image_folder_whose_files_changed_is_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the trials recorded the folder's name, not its files, so a resume after images were replaced
    (the same count) trained on other images and ranked the new trials with the old. The listing is kept when the
    search runs; a resume compares it (a finished search's resume starts no Ray, so none is needed here)."""
    from gantune.errors import GantuneError
    from gantune.search import runner
    from tests.conftest import grey_folder, tiny_space

    monkeypatch.setattr(runner, "_init_ray", lambda *a: pytest.fail("Ray started"))
    grey_folder(tmp_path / "imgs")
    space = tiny_space("imgs", 2, 200, 100, [0.001], log_every=50, n_samples=16, metrics=["fid"]).replace(
        "metrics: ['fid']", "metrics: [fid], extractor: digits").replace(
        "data: {name: grid25}", f"data: {{name: folder, path: {tmp_path / 'imgs'}, resolution: 8}}").replace(
        "d_depth: 1,", "d_depth: 1, arch: dcgan,")
    path = tmp_path / "imgs.yaml"
    path.write_text(space)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    opts = SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"), resume=True)
    study = optuna.create_study(study_name="imgs", storage=storage)
    for value in (0.5, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    assert run_search(load_space(path), opts)["trials"] == 2  # keeps the listing
    assert run_search(load_space(path), opts)["trials"] == 2  # the same files: resumed
    (tmp_path / "imgs" / "00.png").write_bytes((tmp_path / "imgs" / "00.png").read_bytes() + b"\0" * 7)
    with pytest.raises(GantuneError, match=r"--resume: folder .*imgs changed since search 'imgs' began \(12 images "
                                           r"then and now, other names or sizes\)"):
        run_search(load_space(path), opts)
    (tmp_path / "imgs" / "00.png").unlink()
    with pytest.raises(GantuneError, match=r"\(12 images then, 11 now\)"):
        run_search(load_space(path), opts)


def test_warnings_only_a_shortened_run_gives_name_the_flag(tmp_path: Path) -> None:
    """Found by a probe: ``--max-steps 60`` lowers eval_every to 60, and the warnings that follow (ASHA's rung at
    the last step, quick checks that never run) told the user to edit keys of a file that was fine."""
    from gantune.search.runner import check_run

    space = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "toy.yaml")
    _, notes = check_run(space, SearchOptions(runs_dir=str(tmp_path / "runs"), trials=2, max_steps=60))
    flagged = [n for n in notes if n.endswith(" (with --max-steps 60, which lowered eval_every to 60)")]
    assert any(n.startswith("ASHA's first rung falls at step 60") for n in flagged), notes
    assert any(n.startswith("quick_every 500 runs no quick check") for n in flagged), notes
    assert any(n.startswith("sampler tpe draws its first") and n not in flagged for n in notes), notes  # --trials'
    # and toy's log_every 100 past 60 steps: each trial logged once, at its end, so no verdict could come before
    assert ("train.log_every 100 is not below max_steps 60: each trial logs its losses once, at its last step, so "
            "the health verdicts see nothing before it ends; lower train.log_every (with --max-steps 60)") in notes
