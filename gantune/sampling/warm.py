"""Warm starts: a new search's first trials are known-good recipes (``gantune.sampling.recipes``) projected onto
the user's space, enqueued in the Optuna study so the searcher asks them first.

Projection rules, key by key of the recipe:

- a key the space **searches** (float, int or categorical, a config path or a ``search.params`` name) gets the
  recipe's value, enqueued as that Optuna parameter. A value **outside** the searched range (or not among its
  choices, or off its step) **skips the whole recipe**: half a recipe is not a known-good point, and the user's
  range says they do not want that value;
- a key the space searches only under a ``when`` is switched on: a categorical parameter the condition reads
  and the recipe does not set takes a choice that makes it true (``r1: {categorical: [off, on]}`` and
  ``r1_weight: {..., when: "r1 == 'on'"}``: on); no such choice skips the recipe;
- a key the space **fixes** (a value, or an ``expr`` that derives it) stays the user's: the recipe's value is
  ignored, and an ``expr`` computes its value from the enqueued ones (``lr_d = lr_g * ttur_ratio``). Only where
  the space fixes one of the recipe's *essential* keys (its architecture or loss) to another value is the recipe
  skipped: a WGAN-GP recipe's learning rates are not known-good for another loss;
- a key the space searches and the recipe **does not name** gets the value the recipe was measured with (the
  search's default, else the schema's) when inside the searched range, else the sampler's;
- a config key the space **does not mention** (it would train at its default) takes the recipe's value as an
  *override*, stored on the trial (user attribute ``recipe_overrides``) and applied when the trial's config is
  built (``SearchSpace.sample``); the built config is stored on the trial, so resumes and exports train the
  same config. A free parameter the space does not declare is ignored;
- a free parameter the space **declares under another name** than the recipe's (``ttur`` for the recipe's
  ``ttur_ratio``) and reads in an ``expr`` leaf whose value the recipe gives (``lr_d: {expr: "optim.lr_g *
  ttur"}``) takes the value that makes the expression give the recipe's (bisection over its range); a value
  outside the range skips the recipe, as above. So does one of the recipe's own name that the space reads another
  way (``lr_d: {expr: "optim.lr_g / ttur_ratio"}``, the recipe's lr_d being lr_g times its ``ttur_ratio``):
  its value by name would give another lr_d, so it is solved for the recipe's.

A recipe for 2-D points on image data (or the other way round) is skipped, and so is one with nothing to
contribute. Recipes go in only when the study has no trials yet (a
resumed search, or one whose first trials someone enqueued by hand, keeps its queue), at most a quarter of the
trials (at least one), so the sampler keeps most of the budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard, cast

import optuna

from gantune.sampling.expr import Expr, ExprError
from gantune.sampling.recipes import RECIPES, Recipe, data_kind, recipes_for
from gantune.sampling.space import SearchSpace
from gantune.sampling.specs import CategoricalSpec, ExprSpec, FloatSpec, IntSpec, ValueSpec

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
    misread = _drop_misread(recipe, space, out)
    skipped = _solve_free_params(recipe, space, out) or _switch_on(recipe, space, out) or next(
        (f"the space reads {name} otherwise than the recipe (its {name} = {recipe.values[name]} does not give "
         f"the recipe's {path}), and it cannot be solved for it" for name, path in misread.items()
         if name not in out.params), None)
    if skipped is not None:
        return Projection(recipe.name, skipped=skipped)
    _fill_unnamed(recipe, space, out)
    if not out.params and not out.overrides:
        out.skipped = "nothing of it applies to this space"
    return out


def _fill_unnamed(recipe: Recipe, space: SearchSpace, out: Projection) -> None:
    """A searched config key the recipe does not name gets the value the recipe was measured with: the search's
    default, else the schema's (when inside the searched range): left to the sampler, the recipe trial would
    train at a random ``n_critic`` or ``beta2`` and be another point than the known-good one."""
    for key, spec in space.leaves.items():
        if key in recipe.values or key in out.params or not isinstance(spec, (FloatSpec, IntSpec, CategoricalSpec)):
            continue
        value = space.default(key)
        if value is not None and _inside(spec, value):
            out.params[key] = _choice(spec, value) if isinstance(spec, CategoricalSpec) else value


def _known(name: str, recipe: Recipe, space: SearchSpace, out: Projection) -> Any:
    """The value ``name`` has in the recipe trial so far: enqueued, fixed by the space, else the recipe's (an
    override's too: every override is a recipe value), else its default (``SearchSpace.default``)."""
    if name in out.params:
        return out.params[name]
    fixed = space.leaves.get(name)
    if isinstance(fixed, ValueSpec):  # behind a ``when`` the recipe's values make false, it is the default there
        return fixed.value if fixed.when is None or _holds(fixed.when, recipe, space, out) else space.default(name)
    return recipe.values[name] if name in recipe.values else space.default(name)


def _holds(when: str, recipe: Recipe, space: SearchSpace, out: Projection) -> bool:
    """Whether ``when`` holds in the recipe trial as ``_known`` reads it so far (a key not set yet at its recipe value
    or default); where it cannot be evaluated, it holds (as before conditions were read here)."""
    try:
        return bool(Expr(when)(lambda n: _known(n, recipe, space, out)))
    except (ArithmeticError, TypeError, ValueError, ExprError, RecursionError):
        return True


def _switch_on(recipe: Recipe, space: SearchSpace, out: Projection) -> str | None:
    """A recipe key the space searches only under a ``when`` (``r1_weight: {float: [...], when: "r1 == 'on'"}``)
    must be switched on in the recipe trial: a categorical parameter the condition reads and nothing has set yet
    takes the first of its choices (the space's order) that makes the condition true. Left to the sampler, the
    recipe trial would train without the recipe's R1 in some searches: half a recipe. Why the recipe is skipped
    when no choice does; ``None`` otherwise."""
    for key in recipe.values:
        spec = space.leaves.get(key) or space.params.get(key)
        if spec is None or spec.when is None or key not in out.params:
            continue
        condition = Expr(spec.when)
        open_ = [n for n in sorted(condition.names) if n not in out.params
                 and isinstance(space.leaves.get(n) or space.params.get(n), CategoricalSpec)]
        options = [cast(CategoricalSpec, space.leaves.get(n) or space.params.get(n)).choices for n in open_]
        for combo in itertools.product(*options):
            chosen = dict(zip(open_, combo, strict=True))

            def resolve(n: str, _chosen: dict[str, Any] = chosen) -> Any:
                if n in _chosen:
                    return _chosen[n]
                searched = n in space.params or (n in space.leaves and not isinstance(space.leaves[n], ValueSpec))
                if n not in out.params and searched:
                    raise ValueError(f"{n} is searched and not set")  # a range: the condition cannot be decided
                return _known(n, recipe, space, out)

            try:
                on = bool(condition(resolve))
            except (ArithmeticError, TypeError, ValueError, ExprError):
                on = False
            if on:
                out.params.update(chosen)
                break
        else:
            return f"{key} is searched only when {spec.when}, which the recipe's values do not make true"
    return None


def _derived(recipe: Recipe, space: SearchSpace) -> Iterator[tuple[str, Expr, float]]:
    """Each unconditional ``expr`` leaf of the space whose key the recipe gives a number: (path, expression,
    the recipe's value)."""
    for path, leaf in space.leaves.items():
        raw = recipe.values.get(path)
        if isinstance(leaf, ExprSpec) and leaf.when is None and isinstance(raw, (int, float)) \
                and not isinstance(raw, bool) and math.isfinite(raw):
            yield path, Expr(leaf.expr), float(raw)


def _computed(expr: Expr, recipe: Recipe, space: SearchSpace, out: Projection) -> float | None:
    """What ``expr`` gives in the recipe trial as projected so far; ``None`` where it cannot say yet (a free
    parameter still to be solved or drawn)."""
    try:
        return float(expr(lambda n: _known(n, recipe, space, out)))
    except (ArithmeticError, TypeError, ValueError, ExprError, RecursionError):
        return None


def _drop_misread(recipe: Recipe, space: SearchSpace, out: Projection) -> dict[str, str]:
    """A free parameter of the recipe's name that the space reads another way (``lr_d: {expr: "optim.lr_g /
    ttur_ratio"}`` where the recipe's lr_d is lr_g * ttur_ratio) was copied by its name, and the recipe trial
    trained an lr_d 13 times off the recipe's: dropped (name -> the key it missed), so that
    ``_solve_free_params`` solves it from the recipe's value of that key."""
    dropped: dict[str, str] = {}
    for path, expr, target in _derived(recipe, space):
        got = _computed(expr, recipe, space, out)
        # a real misread is far off (1.44x to 13x); a recipe's own values agree to a few digits (stacked_digits'
        # lr_d 1.45e-3 against lr_g * ttur_ratio = 1.449e-3: re-solved at 1e-6, and skipped where 2.3 was the top)
        if got is not None and not math.isclose(got, target, rel_tol=0.05):
            for name in sorted(expr.names & out.params.keys() & space.params.keys() & recipe.values.keys()):
                del out.params[name]
                dropped[name] = path
    return dropped


def _solvable(spec: Any) -> TypeGuard[FloatSpec | IntSpec]:
    return isinstance(spec, (FloatSpec, IntSpec)) and spec.when is None


def _centre(spec: FloatSpec | IntSpec) -> float | int:
    """The middle of a range (geometric for a log one), on its ``step`` grid when it has one."""
    lo, hi = spec.range
    return _drawable(spec, math.sqrt(lo * hi) if spec.log else (lo + hi) / 2)


def _drawable(spec: FloatSpec | IntSpec, x: float) -> float | int:
    """The value nearest ``x`` that the range draws: on its ``step`` grid (whose last point may lie below the
    high end), whole for an int range. A value off the grid was enqueued as it was, and Optuna trained it."""
    lo, hi = spec.range
    if isinstance(spec, IntSpec):
        return lo + min(max(round((x - lo) / spec.step), 0), (hi - lo) // spec.step) * spec.step
    if spec.step is not None:  # lo + k * step as Optuna reads a grid value (6 digits put some off the grid); the
        # top of the grid is the high end itself (0.1 + 6 * 0.1 is 0.7000000000000001, above [0.1, 0.7])
        k = min(max(round((x - lo) / spec.step), 0), math.floor((hi - lo) / spec.step + 1e-9))
        return min(lo + k * spec.step, hi)
    return float(f"{x:.6g}")


def _solve_free_params(recipe: Recipe, space: SearchSpace, out: Projection) -> str | None:
    """A searched free parameter the recipe does not name, read by an ``expr`` leaf whose value the recipe does
    give (``lr_d: {expr: "optim.lr_g * ttur"}`` and the recipe's lr_d), takes the value that makes the expression
    give the recipe's: found by bisection over its range, so the recipe trial trains the recipe's lr_d and not a
    random ratio. Other such parameters of the same expression (``optim.lr_g * ttur * k``: one equation, two
    unknowns) are set at the centre of their ranges first (geometric for a log range). Why the recipe is skipped
    when the solved value lies outside the range; ``None`` otherwise."""
    for name, spec in space.params.items():
        if name in out.params or not _solvable(spec):
            continue
        for path, expr, target in _derived(recipe, space):
            if name not in expr.names:
                continue
            others = {o: space.params.get(o) for o in expr.names
                      if o != name and o not in out.params and o not in recipe.values}
            pinned = {o: _centre(o_spec) for o, o_spec in others.items() if _solvable(o_spec)}

            def gap(x: float, _expr: Expr = expr, _name: str = name, _target: float = target,
                    _pinned: dict[str, Any] = pinned) -> float:
                given = {**_pinned, _name: x}
                return float(_expr(lambda n: given[n] if n in given else _known(n, recipe, space, out))) - _target

            lo, hi = spec.range
            value = _bisect(gap, float(lo), float(hi), log=spec.log)
            if value is None:
                at = "".join(f", {other} at {v}" for other, v in pinned.items())
                return f"{path} = {target} needs {name} outside the searched {list(spec.range)}{at}"
            out.params.update(pinned)
            out.params[name] = _drawable(spec, value) if spec.step is not None or isinstance(spec, IntSpec) else value
            break
    return None


def _bisect(f: Callable[[float], float], lo: float, hi: float, log: bool, iterations: int = 60) -> float | None:
    """The x in [lo, hi] with f(x) = 0 for an f that changes sign once there (a monotone expression), else None."""
    first_lo, first_hi = lo, hi
    try:
        f_lo, f_hi = f(lo), f(hi)
        if f_lo == 0 or f_hi == 0:
            return lo if f_lo == 0 else hi
        if (f_lo > 0) == (f_hi > 0) or not (math.isfinite(f_lo) and math.isfinite(f_hi)):
            return None
        for _ in range(iterations):
            mid = math.sqrt(lo * hi) if log else (lo + hi) / 2
            f_mid = f(mid)
            if f_mid == 0:
                return mid
            if (f_mid > 0) == (f_lo > 0):
                lo, f_lo = mid, f_mid
            else:
                hi = mid
    except (ArithmeticError, TypeError, ValueError, ExprError):
        return None
    value = float(f"{(math.sqrt(lo * hi) if log else (lo + hi) / 2):.6g}")  # 1.2, not 1.1999999999
    return min(max(value, first_lo), first_hi)  # rounding must not step outside the range


def space_kind(space: SearchSpace) -> str | None:
    """The data kind of the space's trials; ``None`` when it can train on data of more than one kind."""
    kinds = {data_kind(d.name) for d in space.datas}
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


def named_but_skipped(space: SearchSpace) -> list[str]:
    """A warning for each recipe ``search.warm_start`` names that cannot apply to the space (the wrong kind of
    data, a value outside its ranges): said after the search only, a user learnt it once the budget was spent."""
    if not isinstance(space.settings.warm_start, list):
        return []  # true: the data kind's own, each skipped where it does not fit, as documented
    return [f"search.warm_start: recipe {p.recipe} will not be tried: {p.skipped}"
            for p in (project(r, space) for r in chosen_recipes(space)) if p.skipped is not None]


def max_recipes(trials: int) -> int:
    """At most a quarter of the trials (at least one) start from recipes."""
    return max(1, trials // 4)


def warm_start(study: optuna.Study, space: SearchSpace) -> list[Projection]:
    """Enqueue the space's recipes in a study that has no trials yet; every projection, enqueued or skipped."""
    if study.get_trials(deepcopy=False):
        return []
    projections = starting(space)
    for p in projections:
        if p.skipped is None:
            study.enqueue_trial(p.params, user_attrs={RECIPE_KEY: p.recipe, OVERRIDES_KEY: p.overrides},
                                skip_if_exists=True)
    return projections


def starting(space: SearchSpace) -> list[Projection]:
    """Every projection of the space's recipes; those a search starts from are the ones not ``skipped`` (at most
    ``max_recipes``, none twice): what ``gantune init`` says of the file it writes, as the search will do it."""
    projections = [project(r, space) for r in chosen_recipes(space)]
    room = max_recipes(space.settings.trials)
    taken: list[Projection] = []
    for p in projections:
        twin = next((q for q in taken if q.params == p.params), None)
        if p.skipped is None and twin is not None:  # Optuna would drop it (skip_if_exists compares params)
            p.skipped = f"its searched values are recipe {twin.recipe}'s"
        elif p.skipped is None and room > 0:
            room -= 1
            taken.append(p)
        elif p.skipped is None:
            p.skipped = f"only {max_recipes(space.settings.trials)} of {space.settings.trials} trials start from " \
                        "recipes"
    return projections
