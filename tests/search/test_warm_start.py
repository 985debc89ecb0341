"""A real tiny search (local Ray, 2 CPUs) starts from the data kind's recipe; the summary and MLflow say so."""

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from gantune.cli import _print_search_summary
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

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("warm")
    children = {r.data.tags["gantune.trial"]: r for r in client.search_runs([exp.experiment_id])
                if "gantune.trial" in r.data.tags}
    assert children["0"].data.tags["gantune.recipe"] == "points"
    assert "gantune.recipe" not in children["1"].data.tags

    _print_search_summary(summary)
    assert "  warm start: trial 0 from recipe points" in capsys.readouterr().out.splitlines()


def test_warm_start_false_enqueues_nothing(tmp_path: Path, ray_session: object) -> None:
    summary, trials, _ = _run(tmp_path, "false")
    assert len(trials) == 2 and not any("recipe" in t.user_attrs for t in trials)
    assert 2e-3 not in [t.params["optim.lr_g"] for t in trials]
    assert summary["recipe_trials"] == {}
