"""Warm starts: a new search's first trials are known-good recipes (``gantune.sampling.recipes``) projected onto
the user's space, enqueued in the Optuna study so the searcher asks them first.

Projection rules, key by key of the recipe:

- a key the space **searches** (float, int or categorical, a config path or a ``search.params`` name) gets the
  recipe's value, enqueued as that Optuna parameter. A value **outside** the searched range (or not among its
  choices, or off its step) **skips the whole recipe**: half a recipe is not a known-good point, and the user's
  range says they do not want that value;
- a key the space **fixes** (a value, or an ``expr`` that derives it) stays the user's: the recipe's value is
  ignored, and an ``expr`` computes its value from the enqueued ones (``lr_d = lr_g * ttur_ratio``). Only where
  the space fixes one of the recipe's *essential* keys (its architecture or loss) to another value is the recipe
  skipped: a WGAN-GP recipe's learning rates are not known-good for another loss;
- a config key the space **does not mention** (it would train at its default) takes the recipe's value as an
  *override*, stored on the trial (user attribute ``recipe_overrides``) and applied when the trial's config is
  built (``SearchSpace.sample``); the built config is stored on the trial, so resumes and exports train the
  same config. A free parameter the space does not declare is ignored.

A recipe for 2-D points on image data (or the other way round) is skipped, and so is one with nothing to
contribute. Recipes go in only when the study has no trials yet (a
resumed search, or one whose first trials someone enqueued by hand, keeps its queue), at most a quarter of the
trials (at least one), so the sampler keeps most of the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from gantune.sampling.recipes import RECIPES, Recipe, data_kind, recipes_for
from gantune.sampling.space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace, ValueSpec, possible_data

#: user attributes of a recipe trial: the recipe's name and the config keys it sets beyond the space's params
RECIPE_KEY, OVERRIDES_KEY = "recipe", "recipe_overrides"


@dataclass
class Projection:
    """A recipe on one space: the Optuna params to enqueue and the overrides, or why it is skipped."""

    recipe: str
    params: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


def _inside(spec: FloatSpec | IntSpec | CategoricalSpec, value: Any) -> bool:
    if isinstance(spec, CategoricalSpec):
        return any((type(value) is type(c) and value == c) or _same_number(value, c) for c in spec.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    lo, hi = spec.range
    if not lo <= value <= hi:
        return False
    if isinstance(spec, IntSpec):
        return float(value).is_integer() and (int(value) - lo) % spec.step == 0
    if spec.step is not None:
        k = (value - lo) / spec.step
        return math.isclose(k, round(k), abs_tol=1e-9)
    return True


def _same_number(a: Any, b: Any) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return numbers and math.isclose(float(a), float(b), rel_tol=1e-12)


def _choice(spec: CategoricalSpec, value: Any) -> Any:
    """The space's own spelling of a value among its choices (2 for 2.0): Optuna matches choices exactly."""
    for c in spec.choices:
        if (type(value) is type(c) and value == c) or _same_number(value, c):
            return c
    return value


def project(recipe: Recipe, space: SearchSpace) -> Projection:
    """``recipe`` projected onto ``space`` by the rules of this module's docstring."""
    out = Projection(recipe.name)
    kind = space_kind(space)
    if kind is not None and (kind == "points") != ("points" in recipe.kinds):  # an MLP's recipe, a DCGAN's data
        return Projection(recipe.name, skipped=f"it is for {' or '.join(recipe.kinds)} data; this space trains on "
                          f"{kind}")
    for key, value in recipe.values.items():
        spec = space.leaves.get(key) or space.params.get(key)
        if spec is None:
            if "." in key:  # a config key the space leaves at its default
                out.overrides[key] = value
            continue
        if isinstance(spec, ValueSpec) and key in recipe.essential and spec.when is None and not (
                spec.value == value or _same_number(spec.value, value)):
            return Projection(recipe.name, skipped=f"the space fixes {key} to {spec.value}; the recipe is for {value}")
        if not isinstance(spec, (FloatSpec, IntSpec, CategoricalSpec)):
            continue  # fixed or derived: the user's decision
        if not _inside(spec, value):
            where = spec.choices if isinstance(spec, CategoricalSpec) else list(spec.range)
            out.skipped = f"{key} = {value} is outside the searched {where}"
            return Projection(recipe.name, skipped=out.skipped)
        out.params[key] = _choice(spec, value) if isinstance(spec, CategoricalSpec) else value
    if not out.params and not out.overrides:
        out.skipped = "nothing of it applies to this space"
    return out


def space_kind(space: SearchSpace) -> str | None:
    """The data kind of the space's trials; ``None`` when it can train on data of more than one kind."""
    kinds = {data_kind(d.name) for d in possible_data(space.leaves)}
    return kinds.pop() if len(kinds) == 1 else None


def chosen_recipes(space: SearchSpace) -> list[Recipe]:
    """The recipes ``search.warm_start`` names: the data kind's (true), none (false), or the listed ones."""
    wanted = space.settings.warm_start
    if wanted is False:
        return []
    if wanted is True:
        kind = space_kind(space)
        return recipes_for(kind) if kind else []
    return [RECIPES.get(n) for n in wanted]


def max_recipes(trials: int) -> int:
    """At most a quarter of the trials (at least one) start from recipes."""
    return max(1, trials // 4)


def warm_start(study: optuna.Study, space: SearchSpace) -> list[Projection]:
    """Enqueue the space's recipes in a study that has no trials yet; every projection, enqueued or skipped."""
    projections = [project(r, space) for r in chosen_recipes(space)]
    if not projections or study.get_trials(deepcopy=False):
        return []
    room = max_recipes(space.settings.trials)
    enqueued: list[Projection] = []
    for p in projections:
        twin = next((q for q in enqueued if q.params == p.params), None)
        if p.skipped is None and twin is not None:  # Optuna would drop it (skip_if_exists compares params)
            p.skipped = f"its searched values are recipe {twin.recipe}'s"
        elif p.skipped is None and room > 0:
            room -= 1
            enqueued.append(p)
            study.enqueue_trial(p.params, user_attrs={RECIPE_KEY: p.recipe, OVERRIDES_KEY: p.overrides},
                                skip_if_exists=True)
        elif p.skipped is None:
            p.skipped = f"only {max_recipes(space.settings.trials)} of {space.settings.trials} trials start from " \
                        "recipes"
    return projections
