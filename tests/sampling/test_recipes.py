"""Warm starts: recipes projected onto a user's space (gantune.sampling.warm) and enqueued in a new study."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gantune.catalogue import config_from_dict
from gantune.errors import ConfigError
from gantune.sampling.recipes import RECIPES, data_kind, recipes_for
from gantune.sampling.space import load_space
from gantune.sampling.warm import OVERRIDES_KEY, RECIPE_KEY, max_recipes, project, warm_start

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"

#: a user's own ring8 space with the obvious knobs: no z_dim 2, no R1, no decay
USER = """
name: mine
search:
  trials: 8
  max_steps: 200
  eval_every: 100
  objective: coverage
  direction: maximize
  params:
    ttur_ratio: {{float: [0.5, 2.0], log: true}}
{warm}
data: {{name: ring8}}
model:
  z_dim: 8
  g_width: {{categorical: [64, 128]}}
loss:
  name: {{categorical: [nonsaturating, hinge]}}
  gp_weight: {{float: [1, 10], when: "loss.name == 'wgan-gp'"}}
optim:
  lr_g: {{float: [{lo}, {hi}], log: true}}
  lr_d: {{expr: "optim.lr_g * ttur_ratio"}}
  beta1: {{categorical: [0.0, 0.5]}}
train: {{batch_size: {batch}}}
"""


def _space(tmp_path: Path, *, lo: float = 1e-4, hi: float = 1e-2, batch: str = "128", warm: str = "") -> object:
    path = tmp_path / "mine.yaml"
    path.write_text(USER.format(lo=lo, hi=hi, batch=batch, warm=f"  warm_start: {warm}" if warm else ""))
    return load_space(path)


def test_projection_searched_fixed_and_unmentioned_keys(tmp_path: Path) -> None:
    space = _space(tmp_path)
    p = project(RECIPES.get("points"), space)
    assert p.skipped is None
    # searched keys inside their ranges get the recipe's values, categorical ones in the space's own spelling
    # (gp_weight, which the recipe does not name, at its default: see the test below)
    assert p.params == {"model.g_width": 128, "loss.name": "nonsaturating", "optim.lr_g": 2e-3, "ttur_ratio": 1.0,
                        "optim.beta1": 0.0, "loss.gp_weight": 10.0}
    assert type(p.params["optim.beta1"]) is float
    # keys the space fixes (z_dim 8, batch 128) or derives (lr_d) stay the user's; unmentioned keys are overridden
    assert "model.z_dim" not in p.params | p.overrides and "train.batch_size" not in p.params | p.overrides
    assert "optim.lr_d" not in p.params | p.overrides
    assert p.overrides["loss.r1_weight"] == 0.1 and p.overrides["optim.decay"] == "linear"
    assert p.overrides["model.d_width"] == 128 and p.overrides["model.g_depth"] == 3


def test_enqueued_recipe_is_the_first_trial_and_its_config_is_consistent(tmp_path: Path) -> None:
    space = _space(tmp_path)
    study = optuna.create_study(direction="maximize")
    projections = warm_start(study, space)
    assert [(p.recipe, p.skipped) for p in projections] == [("points", None)]
    trial = study.ask()  # what the searcher does: the enqueued recipe comes first
    assert trial.user_attrs[RECIPE_KEY] == "points"
    raw = space.sample(trial, trial.user_attrs[OVERRIDES_KEY])
    cfg = config_from_dict(raw)
    assert cfg.optim.lr_g == 2e-3 and cfg.optim.lr_d == pytest.approx(2e-3)  # lr_d = lr_g * ttur_ratio
    assert cfg.model.z_dim == 8 and cfg.train.batch_size == 128  # the user's fixed values
    assert cfg.loss.r1_weight == 0.1 and cfg.optim.decay == "linear" and cfg.model.g_depth == 3  # the recipe's
    assert cfg.loss.gp_weight == 10.0 and "loss.gp_weight" not in trial.params  # its ``when`` is off
    # a later trial is the sampler's own, with the space's defaults where it says nothing
    study.tell(trial, 0.5)
    other = study.ask()
    assert RECIPE_KEY not in other.user_attrs
    assert config_from_dict(space.sample(other)).loss.r1_weight == 0.0


def test_a_value_outside_a_searched_range_skips_the_whole_recipe(tmp_path: Path) -> None:
    space = _space(tmp_path, lo=1e-4, hi=1e-3)  # the recipe's lr_g 2e-3 is above it
    p = project(RECIPES.get("points"), space)
    assert p.skipped == "optim.lr_g = 0.002 is outside the searched [0.0001, 0.001]"
    assert p.params == {} and p.overrides == {}
    study = optuna.create_study(direction="maximize")
    warm_start(study, space)
    assert study.get_trials() == []
    # a categorical without the recipe's value: skipped too
    assert "train.batch_size = 512" in str(project(RECIPES.get("points"), _space(tmp_path,
                                                   batch="{categorical: [32, 64]}")).skipped)
    # a value between the steps of a stepped range is outside it
    stepped = _space(tmp_path, batch="{int: [100, 300], step: 100}")
    assert project(RECIPES.get("points"), stepped).skipped == "train.batch_size = 512 is outside the searched " \
                                                              "[100, 300]"
    assert project(RECIPES.get("points"), _space(tmp_path, batch="{int: [128, 512], step: 128}")).params[
        "train.batch_size"] == 512


def test_a_fixed_essential_key_of_another_value_skips_the_recipe(tmp_path: Path) -> None:
    space = load_space(SPACES / "wgan.yaml")  # fixes g_width 32 (not essential) and searches the loss
    assert project(RECIPES.get("digits-wgan"), space).skipped is None
    dcgan = load_space(SPACES / "dcgan.yaml")  # fixes loss.name: nonsaturating
    assert project(RECIPES.get("digits-wgan"), dcgan).skipped == ("the space fixes loss.name to nonsaturating; the "
                                                                  "recipe is for wgan-gp")


def test_warm_start_settings(tmp_path: Path) -> None:
    off = _space(tmp_path, warm="false")
    study = optuna.create_study(direction="maximize")
    assert warm_start(study, off) == [] and study.get_trials() == []
    named = _space(tmp_path, warm="[points, images]")
    study = optuna.create_study(direction="maximize")
    done = warm_start(study, named)
    assert [p.recipe for p in done] == ["points", "images"]
    assert done[0].skipped is None and done[1].skipped == "it is for images data; this space trains on points"
    assert [t.user_attrs[RECIPE_KEY] for t in study.get_trials()] == ["points"]
    with pytest.raises(ConfigError, match=r"mine.yaml: search.warm_start: unknown recipe 'pointz'"):
        _space(tmp_path, warm="[pointz]")


def test_only_a_new_study_gets_recipes_and_at_most_a_quarter_of_the_trials(tmp_path: Path) -> None:
    space = _space(tmp_path)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"optim.lr_g": 1e-3})  # someone's own first trial: their queue stays as it is
    assert warm_start(study, space) == []
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING]
    assert [max_recipes(n) for n in (1, 2, 8, 16)] == [1, 1, 2, 4]


def test_recipes_by_data_kind() -> None:
    assert [data_kind(n) for n in ("ring8", "grid25", "digits", "stacked_digits", "folder")] == [
        "points", "points", "digits", "stacked_digits", "images"]
    assert [r.name for r in recipes_for("points")] == ["points"]
    assert [r.name for r in recipes_for("digits")] == ["digits-wgan", "digits-dcgan", "digits-r1", "digits"]
    # every shipped space gets at least one recipe, and every recipe trains a valid config on its data
    for name in ("ring8", "grid25", "toy", "toy_wide", "dcgan", "wgan", "hinge", "stacked", "stacked_small_d"):
        space = load_space(SPACES / f"{name}.yaml")
        study = optuna.create_study(directions=[d for d in space.settings.directions])
        assert any(p.skipped is None for p in warm_start(study, space)), name
        trial = study.ask()
        config_from_dict(space.sample(trial, trial.user_attrs[OVERRIDES_KEY]))


@pytest.mark.parametrize(("ratio", "expr", "lo", "hi", "want"), [
    ("ttur", "optim.lr_g * ttur", 0.5, 4.0, 1.2),  # the recipe's ttur_ratio under the user's own name
    ("slow_d", "optim.lr_g / slow_d", 0.1, 2.0, 1 / 1.2),  # a ratio the other way round
    ("ttur", "optim.lr_g * ttur", 2.0, 4.0, None),  # the recipe's lr_d needs a ratio outside the range
    # the recipe's own name read the other way round: copied by its name, the trial trained lr_d 1.44 x off
    ("ttur_ratio", "optim.lr_g / ttur_ratio", 0.1, 2.0, 1 / 1.2),
    # read the recipe's way: its value by name, even where the recipe's own lr_d disagrees in the 4th digit
    ("ttur_ratio", "optim.lr_g * ttur_ratio * 1.0007", 0.5, 1.2, 1.2),
])
def test_a_free_parameter_under_another_name_takes_the_value_that_gives_the_recipes_key(
        tmp_path: Path, ratio: str, expr: str, lo: float, hi: float, want: float | None) -> None:
    """The digits-r1 recipe gives lr_g 3.9e-4 and lr_d 4.68e-4 (ratio 1.2); a space that derives lr_d from a free
    parameter of its own name gets the parameter that reproduces that lr_d, not a random one."""
    path = _digits_space(tmp_path, f"{ratio}: {{{{float: [{lo}, {hi}]}}}}", expr)
    space = load_space(path)
    p = project(RECIPES.get("digits-r1"), space)
    if want is None:
        assert p.skipped == f"optim.lr_d = 0.000468 needs {ratio} outside the searched [{lo}, {hi}]"
        return
    assert p.skipped is None and p.params[ratio] == pytest.approx(want, rel=1e-5)
    if "1.0007" not in expr:  # there the space's own factor moves lr_d by 0.07%, as it says
        _trains_the_recipes_learning_rates(space)


def _digits_space(tmp_path: Path, params: str, lr_d: str) -> Path:
    """USER on 16 px digits with a DCGAN, its free parameters and lr_d expression replaced."""
    text = (USER.replace("ttur_ratio: {{float: [0.5, 2.0], log: true}}", params)
            .replace('lr_d: {{expr: "optim.lr_g * ttur_ratio"}}', f'lr_d: {{{{expr: "{lr_d}"}}}}')
            .replace("data: {{name: ring8}}", "data: {{name: digits, resolution: 16}}")
            .replace("  z_dim: 8\n", "  arch: dcgan\n  z_dim: 64\n").replace("[64, 128]", "[32, 64]")
            .replace("batch_size: {batch}", "batch_size: 64"))
    path = tmp_path / "mine.yaml"
    path.write_text(text.format(lo=1e-4, hi=1e-2, warm=""))
    return path


def _trains_the_recipes_learning_rates(space: object) -> None:
    """The enqueued digits-r1 trial's config has the recipe's lr_g and lr_d (3.9e-4, 4.68e-4)."""
    study = optuna.create_study()
    warm_start(study, space)
    trial = study.ask()
    cfg = config_from_dict(space.sample(trial, trial.user_attrs[OVERRIDES_KEY]))
    assert (cfg.optim.lr_g, cfg.optim.lr_d) == (pytest.approx(3.9e-4), pytest.approx(4.68e-4, rel=1e-5))


def test_two_free_parameters_in_one_expression_the_other_at_the_centre_of_its_range(tmp_path: Path) -> None:
    """lr_d = lr_g * ttur * k is one equation in two unknowns: k is set at its range's centre (1.25), ttur solves
    the rest (1.2 / 1.25), and the recipe trial trains the recipe's lr_d (it was skipped as needing ttur out of
    range)."""
    expr = "optim.lr_g * ttur * k"
    space = load_space(_digits_space(tmp_path, "ttur: {{float: [0.5, 4.0], log: true}}\n    k: {{float: [0.5, 2.0]}}",
                                     expr))
    p = project(RECIPES.get("digits-r1"), space)
    assert p.skipped is None and p.params["k"] == 1.25 and p.params["ttur"] == pytest.approx(0.96, rel=1e-5)
    _trains_the_recipes_learning_rates(space)
    narrow = _digits_space(tmp_path, "ttur: {{float: [0.5, 4.0], log: true}}\n    k: {{float: [0.01, 0.02]}}", expr)
    assert project(RECIPES.get("digits-r1"), load_space(narrow)).skipped == (
        "optim.lr_d = 0.000468 needs ttur outside the searched [0.5, 4.0], k at 0.015")
    # on a step grid the centre is a grid value (1, 3, 5, 7: not 4), else the sampler refuses the fixed value
    grid = _digits_space(tmp_path, "ttur: {{float: [0.1, 4.0], log: true}}\n    k: {{int: [1, 7], step: 2}}", expr)
    p = project(RECIPES.get("digits-r1"), load_space(grid))
    assert p.skipped is None and p.params["k"] in (3, 5) and p.params["ttur"] == pytest.approx(1.2 / p.params["k"])


@pytest.mark.parametrize(("params", "expr", "want"), [
    ("ttur: {{float: [1, 4], step: 0.25}}", "optim.lr_g * ttur", 1.25),  # solved 1.2: enqueued as it was
    ("ttur: {{float: [0.5, 4.5], step: 0.5}}", "optim.lr_g * ttur", 1.0),
    ("ttur: {{int: [1, 7], step: 2}}", "optim.lr_g * ttur / 2", 3),  # solved 2.4: rounded to 2, off the grid
    # a grid value written to 6 digits (1.2) fell off a grid of a step with more of them
    ("ttur: {{float: [0, 1.234567], step: 0.0001234567}}", "optim.lr_g * ttur", 9720 * 0.0001234567),
    # the grid's top: 0.1 + 6 * 0.1 is 0.7000000000000001, above the range
    ("ttur: {{float: [0.1, 0.7], step: 0.1}}", "optim.lr_g * ttur * 1.75", 0.7),
])
def test_a_solved_free_parameter_is_a_value_its_range_draws(tmp_path: Path, params: str, expr: str,
                                                            want: float) -> None:
    """The bisection's value (a ratio of 1.2 for digits-r1) was enqueued off the parameter's step grid: Optuna
    warned "out of range" and trained it anyway, a point the space cannot draw. It goes to the nearest grid value."""
    space = load_space(_digits_space(tmp_path, params, expr))
    p = project(RECIPES.get("digits-r1"), space)
    assert p.skipped is None and p.params["ttur"] == pytest.approx(want)
    dist = space.distributions()["ttur"]
    assert dist._contains(dist.to_internal_repr(p.params["ttur"]))


def test_a_searched_key_the_recipe_does_not_name_gets_the_value_it_was_measured_with(tmp_path: Path) -> None:
    """Left to the sampler, the recipe trial of a space searching n_critic drew 2 (the recipe is measured at 1)."""
    path = tmp_path / "mine.yaml"
    path.write_text(USER.format(lo=1e-4, hi=1e-2, batch=128, warm="  defaults: {optim.ema: 0.99}").replace(
        "  beta1: {categorical: [0.0, 0.5]}",
        "  beta1: {categorical: [0.0, 0.5]}\n  n_critic: {int: [1, 3]}\n"
        "  ema: {float: [0.9, 0.999]}\n  weight_decay: {float: [0.001, 0.1], log: true}"))
    space = load_space(path)
    p = project(RECIPES.get("points"), space)
    assert p.skipped is None
    assert p.params["optim.n_critic"] == 1  # the schema's default
    assert p.params["optim.ema"] == 0.99  # the search's default wins over the schema's (0)
    assert "optim.weight_decay" not in p.params  # the default 0 is outside the range: the sampler's
    study = optuna.create_study(direction="maximize")
    warm_start(study, space)
    first = study.ask()
    cfg = config_from_dict(space.sample(first, first.user_attrs[OVERRIDES_KEY]))
    assert cfg.optim.n_critic == 1 and cfg.optim.ema == 0.99


def _gated(tmp_path: Path, when: str) -> object:
    """The user's space with R1 searched behind a condition (benchmarks/spaces/grid25_wide.yaml's way: a switch
    ``r1`` and ``r1_weight`` only ``when: "r1 == 'on'"``)."""
    text = USER.format(lo=1e-4, hi=1e-2, batch="128", warm='    r1: {categorical: ["off", "on"]}')
    gp = "  gp_weight: {float: [1, 10], when: \"loss.name == 'wgan-gp'\"}\n"
    assert gp in text
    path = tmp_path / "gated.yaml"
    path.write_text(text.replace(gp, gp + f'  r1_weight: {{float: [0.01, 1.0], log: true, when: "{when}"}}\n'))
    return load_space(path)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_recipe_key_behind_a_when_is_switched_on(tmp_path: Path, seed: int) -> None:
    """The points recipe's R1 0.1 in a space that searches r1_weight only when ``r1 == 'on'``: the recipe trial
    trains with it whatever the sampler's seed (before: ``r1`` was left to the sampler, off in some seeds)."""
    space = _gated(tmp_path, "r1 == 'on'")
    p = project(RECIPES.get("points"), space)
    assert p.skipped is None and p.params["r1"] == "on" and p.params["loss.r1_weight"] == 0.1
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    warm_start(study, space)
    trial = study.ask()
    config = config_from_dict(space.sample(trial, trial.user_attrs.get(OVERRIDES_KEY)))
    assert trial.user_attrs[RECIPE_KEY] == "points" and config.loss.r1_weight == 0.1


def test_a_recipe_key_its_own_values_switch_off_skips_the_recipe(tmp_path: Path) -> None:
    # the recipe's loss is non-saturating: its R1 cannot be had (the switch r1 cannot make it true)
    p = project(RECIPES.get("points"), _gated(tmp_path, "loss.name == 'hinge' and r1 == 'on'"))
    assert p.skipped == "loss.r1_weight is searched only when loss.name == 'hinge' and r1 == 'on', which the " \
                        "recipe's values do not make true"


def test_a_fixed_value_behind_a_when_the_recipe_switches_off_is_its_default(tmp_path: Path) -> None:
    """``clip: {value: 2, when: "loss.name == 'hinge'"}`` read by the expression a recipe's lr_d is solved through
    counted as 2 in the recipe's non-saturating trial, where the trial has the default 0.01: the ratio solved for
    was 200 times off (here: outside its range, so the recipe was skipped)."""
    path = tmp_path / "mine.yaml"
    text = USER.format(lo=1e-4, hi=1e-2, batch="128", warm="").replace("ttur_ratio", "ratio")  # not the recipe's
    text = text.replace('lr_d: {expr: "optim.lr_g * ratio"}', 'lr_d: {expr: "optim.lr_g * ratio * loss.clip * 100"}')
    path.write_text(text.replace("  name: {categorical: [nonsaturating, hinge]}\n", "  name: {categorical: "
                                 "[nonsaturating, hinge]}\n  clip: {value: 2, when: \"loss.name == 'hinge'\"}\n"))
    p = project(RECIPES.get("points"), load_space(path))
    assert p.skipped is None and p.params["loss.name"] == "nonsaturating"
    assert p.params["ratio"] == pytest.approx(1.0)  # the recipe's lr_d, through the default clip 0.01
