"""A real tiny search (local Ray, 2 CPUs) starts from the data kind's recipe; the summary and MLflow say so."""

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from gantune.cli import _print_search_summary
from gantune.sampling.recipes import RECIPES
from gantune.sampling.settings import SEARCH_DEFAULTS
from gantune.sampling.space import load_space
from gantune.search import SearchOptions, run_search
from gantune.tracking import MlflowTracker

SPACE = """
name: warm
search:
  trials: 2
  max_steps: 60
  eval_every: 30
  objective: coverage
  direction: maximize
  sampler: random
  seed: 3
  concurrency: 2
  pruning: {{asha: false, health: false}}
{warm}
data: {{name: ring8}}
model: {{z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}}
optim:
  lr_g: {{float: [1.0e-4, 1.0e-2], log: true}}
train: {{batch_size: 32, log_every: 30}}
eval: {{n_samples: 300, quick_samples: 100}}
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the local MLflow store keeps its artifacts in ./mlartifacts (it wrote the repo's)


def _run(tmp_path: Path, warm: str = "") -> tuple[dict, list[optuna.trial.FrozenTrial], str]:
    path = tmp_path / "warm.yaml"
    path.write_text(SPACE.format(warm=f"  warm_start: {warm}" if warm else ""))
    space = load_space(path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_search(space, SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"), quiet=True,
                                              observers=[MlflowTracker(uri, space.name)]))
    return summary, optuna.load_study(study_name="warm", storage=storage).trials, uri


def test_the_recipe_trial_runs_first_and_is_marked(tmp_path: Path, ray_session: object,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    summary, trials, uri = _run(tmp_path)
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    first, second = trials
    assert first.user_attrs["recipe"] == "points" and "recipe" not in second.user_attrs
    assert first.params == {"optim.lr_g": 2e-3}  # the recipe's learning rate, inside the searched range
    config = first.user_attrs["config"]  # what trained, and what an export or a resume reads
    assert config["model"]["z_dim"] == 4 and config["train"]["batch_size"] == 32  # the user's fixed values
    assert config["loss"]["r1_weight"] == 0.1 and config["optim"]["decay"] == "linear"  # the recipe's
    assert "r1_weight" not in second.user_attrs["config"].get("loss", {})
    assert summary["recipe_trials"] == {0: "points"} and summary["recipes_skipped"] == {}
    # the search's own defaults (keys the space leaves unset) go to every trial; the recipe's values win in its
    assert SEARCH_DEFAULTS and summary["search_defaults"] == SEARCH_DEFAULTS
    for path, value in SEARCH_DEFAULTS.items():
        section, key = path.split(".")
        assert second.user_attrs["config"][section][key] == value
        assert first.user_attrs["config"][section][key] == RECIPES.get("points").values.get(path, value)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("warm")
    children = {r.data.tags["gantune.trial"]: r for r in client.search_runs([exp.experiment_id])
                if "gantune.trial" in r.data.tags}
    assert children["0"].data.tags["gantune.recipe"] == "points"
    assert "gantune.recipe" not in children["1"].data.tags
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("gantune.role") == "parent")
    logged = yaml.safe_load(Path(client.download_artifacts(children["1"].info.run_id, "trial_config.yaml",
                                                           str(tmp_path))).read_text())
    for path, value in SEARCH_DEFAULTS.items():
        assert parent.data.params[f"search.defaults.{path}"] == str(value)
        section, key = path.split(".")
        assert logged[section][key] == value

    _print_search_summary(summary)
    printed = capsys.readouterr().out.splitlines()
    assert "  warm start: trial 0 from recipe points" in printed
    assert "  search defaults (keys the space leaves unset or a `when` switches off): " + ", ".join(
        f"{k} {v}" for k, v in SEARCH_DEFAULTS.items()) in printed


def test_warm_start_false_enqueues_nothing(tmp_path: Path, ray_session: object) -> None:
    summary, trials, _ = _run(tmp_path, "false")
    assert len(trials) == 2 and not any("recipe" in t.user_attrs for t in trials)
    assert 2e-3 not in [t.params["optim.lr_g"] for t in trials]
    assert summary["recipe_trials"] == {}


def _suggest_first(space: object, tmp_path: Path) -> tuple[dict, optuna.trial.FrozenTrial]:
    """What the searcher hands Ray for a new study's first trial (no Ray needed)."""
    from gantune.sampling.warm import warm_start
    from gantune.search.searcher import OptunaStudySearcher

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s",
                                directions=list(space.settings.directions))
    warm_start(study, space)
    config = OptunaStudySearcher(space, study, 1, [], tmp_path / "runs").suggest("ray-1")
    return config, study.trials[0]


def test_overrides_that_break_the_users_fixed_values_are_dropped_and_said(tmp_path: Path) -> None:
    """The user fixes a batch-norm D: the recipe's R1 (a key they left at its default) cannot go with it, so the
    trial keeps the recipe's searched values without the overrides, and says why."""
    path = tmp_path / "warm.yaml"
    path.write_text(SPACE.format(warm="").replace("g_norm: none}", "g_norm: none, d_norm: batch}"))
    space = load_space(path)
    config, trial = _suggest_first(space, tmp_path)
    assert config["recipe"] == "points" and config["params"] == {"optim.lr_g": 2e-3}
    assert config["recipe_overrides"] == {} and trial.user_attrs["recipe_overrides"] == {}
    assert "per-sample R1 penalty" in trial.user_attrs["recipe_note"]
    assert "r1_weight" not in config["trial"].get("loss", {})


def test_pbt_explore_keeps_a_recipe_members_overrides(tmp_path: Path) -> None:
    from gantune.search.scheduler import Explorer

    path = tmp_path / "warm.yaml"
    path.write_text(SPACE.format(warm="").replace("pruning: {asha: false, health: false}",
                                                  "pruning: {scheduler: pbt, health: false}")
                    .replace("concurrency: 2", "concurrency: 0"))  # PBT starts its whole population
    space = load_space(path)
    config, _ = _suggest_first(space, tmp_path)
    assert config["trial"]["loss"]["r1_weight"] == 0.1 and config["trial"]["model"]["z_dim"] == 4
    explored = [Explorer(space, seed)(config) for seed in range(8)]
    moved = [c for c in explored if c["params"]["optim.lr_g"] != 2e-3]
    assert moved, "explore never changed the learning rate"  # it can: the overrides keep the networks alike
    for c in moved:
        assert c["trial"]["loss"]["r1_weight"] == 0.1 and c["trial"]["optim"]["decay"] == "linear"
        assert c["trial"]["optim"]["lr_g"] == c["params"]["optim.lr_g"]


def test_a_named_recipe_that_cannot_apply_is_a_warning_before_the_search(tmp_path: Path) -> None:
    """``warm_start: [digits-wgan]`` on ring8 ran without it, said in one summary line once the search had ended;
    a recipe named twice was "not tried: its searched values are recipe points's"."""
    from gantune.errors import ConfigError
    from gantune.search.runner import check_run

    path = tmp_path / "warm.yaml"
    path.write_text(SPACE.format(warm="  warm_start: [digits-wgan, points]"))
    _, notes = check_run(load_space(path), SearchOptions(runs_dir=str(tmp_path / "runs")))
    assert [n for n in notes if "warm_start" in n] == [
        "search.warm_start: recipe digits-wgan will not be tried: it is for digits data; this space trains on points"]
    path.write_text(SPACE.format(warm="  warm_start: [points, points]"))
    with pytest.raises(ConfigError, match=r"search.warm_start: recipe 'points' is named twice"):
        load_space(path)


def test_a_draw_whose_expression_is_not_a_real_number_fails_its_trial_not_the_search(tmp_path: Path) -> None:
    """``(ttur - 0.6) ** 0.5`` is complex where ``ttur < 0.6``: the space loads (a note says some draws are
    invalid), but storing that trial's config in the study raised a TypeError out of ``suggest``, which ends a
    Ray search with a traceback. Now the expression refuses it and only that trial fails."""
    from gantune.search.searcher import OptunaStudySearcher

    path = tmp_path / "c.yaml"
    path.write_text("name: c\nsearch: {trials: 40, max_steps: 20, eval_every: 20, sampler: random, warm_start: false, "
                    "params: {ttur: {float: [0.5, 1.0]}}}\ndata: {name: grid25}\n"
                    "optim: {lr_d: {expr: '(ttur - 0.6) ** 0.5'}}\n")
    space = load_space(path)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="c",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    searcher = OptunaStudySearcher(space, study, 40, [], tmp_path / "runs")
    configs = [searcher.suggest(f"ray-{i}") for i in range(40)]
    failed = [c["trial"]["error"] for c in configs if "error" in c["trial"]]
    assert failed and all("is not a real number" in e for e in failed), failed  # 1 in 5 draws
    assert len(failed) < 40
