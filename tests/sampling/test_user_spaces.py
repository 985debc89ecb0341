"""The user-style spaces of issue 25 (tests/fixtures/user_*.yaml): written as a new user would, without the
recipe's keys, yet a search of each starts from a recipe of its data kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gantune.sampling.space import load_space
from gantune.sampling.warm import chosen_recipes, project

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures").glob("user_*.yaml"))
RECIPE_KEYS = {("loss", "r1_weight"), ("optim", "ema"), ("optim", "decay"), ("optim", "decay_start")}


def test_there_are_three_user_spaces() -> None:
    assert [p.stem for p in FIXTURES] == ["user_digits", "user_grid25", "user_ring8"]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_a_user_space_holds_none_of_the_recipe_keys_and_a_search_of_it_starts_from_a_recipe(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    used = {(section, key) for section, values in raw.items() if isinstance(values, dict) for key in values}
    assert not used & RECIPE_KEYS
    space = load_space(path)
    projections = [project(r, space) for r in chosen_recipes(space)]
    applied = [p for p in projections if p.skipped is None]
    assert applied, [p.skipped for p in projections]
    assert any(k in applied[0].overrides for k in ("loss.r1_weight", "optim.ema", "optim.decay"))


@pytest.mark.parametrize(("recipe", "config"), [("points", "grid25"), ("points", "ring8"), ("digits", "digits")])
def test_a_recipe_taken_from_a_built_in_config_carries_all_its_nets_loss_and_optimiser(recipe: str,
                                                                                         config: str) -> None:
    """A key the recipe leaves out falls back to the schema default in a user's space (the digits recipe once
    lacked ``g_depth: 1``, so its trials trained 3-deep nets: FID 332 where the config scores 15)."""
    from gantune.production import builtin_config
    from gantune.sampling.recipes import RECIPES

    path = builtin_config(config)
    assert path is not None
    raw = yaml.safe_load(path.read_text())
    values = RECIPES.get(recipe).values
    for section in ("model", "loss", "optim"):
        for key, value in raw[section].items():
            assert values.get(f"{section}.{key}") == value, f"{recipe} vs {config}.yaml: {section}.{key}"
