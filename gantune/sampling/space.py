"""Search spaces: the trial-config YAML where any leaf may be a range, compiled to an Optuna define-by-run
function.

A leaf is a fixed value, or one of::

    {float: [low, high], log: true, step: 0.1}      {int: [low, high], log: false, step: 1}
    {categorical: [a, b, c]}                        {expr: "optim.lr_g * ttur_ratio"}
    {value: 0.01}                                   # a fixed value, useful with when:

each optionally with ``when: "<condition>"``: the leaf is only set (sampled) when the condition holds, else the
default applies (``SearchSpace.default``: ``search.defaults``' value, else the schema's; an expression naming a
switched-off leaf reads that default, one naming a key the search sets, ``train.steps``, the search's value).
Expressions name other leaves by dotted path or free parameters declared under ``search.params``. The ``search``
section holds the search settings. Files are validated with pydantic before anything starts; every error is one
line naming the file, key and expectation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import keyword
import unicodedata
from pathlib import Path
from typing import Any, ClassVar

import optuna
from pydantic import ValidationError

from gantune.config import (
    SECTIONS,
    SUBSECTIONS,
    TrialConfig,
    format_validation_error,
    parse_yaml,
    read_yaml,
    switch_problem,
)
from gantune.data import data_notes, listed_once, measured_on
from gantune.errors import ConfigError
from gantune.sampling.checks import (
    TRIAL_FILES,
    absolute,
    absolute_files,
    check_data_of,
    check_init_files,
    check_names,
    check_objectives,
    check_repeat_owned,
    check_scheduler_keys,
    check_search_defaults,
    check_weights_of,
    expressions,
    parse_spec,
    possible_data,
    possible_sections,
    unmodelled,
    unread_defaults,
    walk,
)
from gantune.sampling.expr import Expr
from gantune.sampling.settings import SearchSettings, check_name
from gantune.sampling.specs import (
    CategoricalSpec,
    ExprSpec,
    FloatSpec,
    IntSpec,
    Spec,
    ValueSpec,
    fixed_measure,
    on_grid,
    schema_default,
)


@dataclasses.dataclass
class SearchSpace:
    """A validated space: ``sample(trial)`` draws one trial config (a plain dict) through Optuna."""

    name: str
    source: str
    text: str
    settings: SearchSettings
    leaves: dict[str, Spec]  # dotted config path -> spec (fixed values are ValueSpec)
    params: dict[str, Spec]  # free parameters (not config keys)
    notes: list[str] = dataclasses.field(default_factory=list)  # what the search warns of before it starts
    #: each ``data``/``eval`` combination its trials can have (``checks.possible_sections``; ``None``: unknown)
    sections: list[tuple[str, TrialConfig]] | None = None
    #: whether the search says ``notes`` and ``SearchSettings.warnings()`` (not for ``gantune export``'s re-runs:
    #: their settings are not the user's to change)
    warns: ClassVar[bool] = True

    @functools.cached_property
    def datas(self) -> list[Any]:
        """The distinct ``DataConfig``s its trials can have (``checks.possible_data``): read by the load's checks, a
        resume's comparison, the trials' GPU share and the warm-start recipes."""
        return possible_data(self.leaves, self.settings.defaults)

    @property
    def samples_nothing(self) -> bool:
        """No range of two values or more (``int: [5, 5]`` is one) and no categorical of two choices or more: every
        trial trains one config, with one seed."""
        return not any(isinstance(spec, FloatSpec) or (isinstance(spec, IntSpec) and spec.range[0] < spec.range[1])
                       or (isinstance(spec, CategoricalSpec) and len(spec.choices) > 1)
                       for spec in [*self.leaves.values(), *self.params.values()])

    def sample(self, trial: optuna.Trial, overrides: dict[str, Any] | None = None,
               on: set[str] | None = None) -> dict[str, Any]:
        """Define-by-run: suggest each leaf (in dependency order) and return the nested trial config; ``on``
        collects the leaves that were set (their ``when`` held).

        ``search.defaults`` and ``overrides`` (dotted config paths this space does not mention: a recipe's,
        ``gantune.sampling.warm``) replace those keys' schema defaults, in the config and wherever an expression
        or condition reads them."""
        given = {k: v for k, v in (overrides or {}).items() if k not in self.leaves and k not in self.params}
        extra = {**self.search_defaults(), **given}  # a recipe is whole: its values win
        values: dict[str, Any] = dict(extra)
        resolving: list[str] = []
        off: set[str] = set()
        absent = object()
        named_errors: set[int] = set()  # the errors ``evaluate`` named their leaf in

        def resolve(name: str) -> Any:
            parent, _, key = name.rpartition(".")
            if parent in self.leaves and name not in self.leaves:  # a key of a subsection given whole (progressive:
                whole = resolve(parent)  # {value: {start: 16}}): it read search.defaults' or the schema's value
                if isinstance(whole, dict) and key in whole:
                    return whole[key]
            if name in values:  # a leaf switched off by its ``when`` reads as the default
                return self.default(name) if values[name] is absent else values[name]
            spec = self.leaves.get(name) or self.params.get(name)
            if spec is None and (inside := [leaf for leaf in self.leaves if leaf.startswith(f"{name}.")]):
                # a subsection walked into leaves (model.progressive: {start: ...}): what the trial gets, null where
                # every leaf is off (it read null whatever its leaves said)
                keys = {leaf: resolve(leaf) for leaf in inside}
                if all(values[leaf] is absent for leaf in inside):
                    return self.default(name)
                return {f.name: keys.get(f"{name}.{f.name}", self.default(f"{name}.{f.name}"))
                        for f in dataclasses.fields(SUBSECTIONS[name])}
            if spec is None:
                return self.default(name)
            if name in resolving:
                raise ConfigError(f"{self.source}: {name}: circular reference ({' -> '.join([*resolving, name])})")
            resolving.append(name)
            try:
                if spec.when is not None and not _condition(name, spec.when, evaluate(name, "when", spec.when)):
                    # off: the search's default
                    off.add(name)
                    values[name] = self.settings.defaults.get(name, absent) if name in self.leaves else absent
                    return self.default(name)
                values[name] = (evaluate(name, "expr", spec.expr) if isinstance(spec, ExprSpec)
                                else _suggest(trial, name, spec))
                if name in TRIAL_FILES:  # a path an expression gives: as the space's own are at load (absolute_files)
                    values[name] = absolute(values[name])
            finally:
                resolving.pop()
            return values[name]

        def evaluate(name: str, part: str, text: str) -> Any:
            """Leaf ``name``'s condition or expression; its error names the leaf, and a key it read that this
            trial switched off (a parameter off reads as null: ``b > 0.5`` is then a TypeError)."""
            try:
                return Expr(text)(resolve)
            except (ArithmeticError, TypeError, ValueError) as err:  # ValueError: int("hinge"), ExprError
                if id(err) in named_errors:  # a leaf it read failed: that one is named already
                    raise
                read_off = [f"{n} is off in this trial (its when is false) and reads as {_shown(resolve(n))}"
                            for n in sorted(Expr(text).names) if n in off]
                named = type(err)(f"{name}.{part}: {err}" + (f" ({'; '.join(read_off)})" if read_off else ""))
                named_errors.add(id(named))
                raise named from None

        def switched_on(path: str) -> bool:
            """Whether a default (or a recipe's override) of ``path`` applies: one for a key of a subsection that
            this trial leaves off (null) tunes it where it is on; set anyway, it switched the subsection on
            (``model.progressive.fade_steps`` turned growing on in every trial, against the space's ``when``)."""
            parent = path.rpartition(".")[0]
            return parent not in SUBSECTIONS or path in self.leaves or resolve(parent) is not None

        for name in [*self.params, *self.leaves]:
            resolve(name)
        if on is not None:
            on.update(n for n in self.leaves if n not in off)
        return self.apply_settings(_nested({"name": self.name}, {
            p: v for p, v in values.items()
            if (p in self.leaves or (p in extra and switched_on(p))) and v is not absent}))

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """What each sampled leaf and parameter draws from, as Optuna records it on a trial."""
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for name, spec in {**self.params, **self.leaves}.items():
            if isinstance(spec, FloatSpec):
                out[name] = optuna.distributions.FloatDistribution(*spec.range, log=spec.log, step=spec.step)
            elif isinstance(spec, IntSpec):
                out[name] = optuna.distributions.IntDistribution(*spec.range, log=spec.log, step=spec.step)
            elif isinstance(spec, CategoricalSpec):
                out[name] = optuna.distributions.CategoricalDistribution(spec.choices)
        return out

    def search_defaults(self, switched: bool = False) -> dict[str, Any]:
        """The ``search.defaults`` this space's trials take: those of the keys it does not mention, and with
        ``switched`` those of its leaves whose ``when`` can switch them off (a trial where it is off takes them)."""
        return {k: v for k, v in self.settings.defaults.items() if k not in self.params and (
            k not in self.leaves or (switched and self.leaves[k].when is not None))}

    def label(self, number: int, params: dict[str, Any]) -> str:
        """How the progress lines name the trial ``number`` drawn with ``params``."""
        return numbered(number, params)

    def set_by_search(self) -> dict[str, Any]:
        """The config keys the ``search`` section sets in every trial, by dotted path (a space may not set them)."""
        return set_by_search(self.settings)

    def apply_settings(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` (a nested trial config) with the keys the search sets (``set_by_search``)."""
        return _nested(raw, self.set_by_search())

    def default(self, name: str) -> Any:
        """What config key ``name`` is in a trial where this space leaves it unset or a ``when`` switches it off:
        the search's value (``train.steps`` is ``search.max_steps``), else ``search.defaults``', else the
        schema's. (An expression reading ``train.steps`` got the schema's 2,000 whatever ``max_steps`` said, and
        a switched-off ``optim.ema`` the schema's 0 over the search's 0.999.)"""
        sets = self.set_by_search()
        if name in sets:
            return sets[name]
        return schema_default(name, self.settings.defaults)

    def fixed_measure(self) -> dict[str, Any]:
        """The evaluation keys every trial measures with (``specs.fixed_measure``): what a resume must keep."""
        return fixed_measure(self.leaves, self.settings.defaults)

    def mutable_params(self) -> list[str]:
        """The sampled numeric parameters PBT's explore perturbs (``pruning.pbt.mutate`` or the default set); a
        ``ConfigError`` when there are none or a named one is not a sampled number of this space."""
        specs = {**self.params, **self.leaves}
        numeric = [name for name, spec in specs.items() if _numeric_sampled(spec)]
        wanted = self.settings.pruning.pbt.mutate
        src = f"{self.source}: search.pruning.pbt.mutate"
        if wanted is not None:
            for name in wanted:
                if name not in numeric:
                    raise ConfigError(f"{src}: {name!r} is not a sampled number of this space (sampled: "
                                      f"{', '.join(numeric) or 'none'})")
                if name.split(".", 1)[0] in FROZEN_SECTIONS:
                    raise ConfigError(f"{src}: {name!r}: explore keeps every {' and '.join(FROZEN_SECTIONS)} key of "
                                      "a member fixed (a clone trains on with its donor's networks and data), so it "
                                      "would never change")
            return list(wanted)
        chosen = [n for n in numeric if n in self.params or n in DEFAULT_MUTABLE]
        if not chosen:
            raise ConfigError(f"{self.source}: search.pruning.scheduler: pbt needs a sampled learning rate, beta, "
                              "n_critic or penalty weight (or a free parameter) to explore; this space samples none")
        return chosen


#: config sections PBT's explore never changes (``scheduler._frozen``): a clone trains on with its donor's
#: networks and data
FROZEN_SECTIONS = ("data", "model")
#: config leaves PBT's explore changes by default when the space samples them (a checkpoint carries on with any
#: value)
DEFAULT_MUTABLE = ("optim.lr_g", "optim.lr_d", "optim.beta1", "optim.beta2", "optim.n_critic", "optim.grad_clip",
                   "loss.gp_weight", "loss.r1_weight", "loss.r2_weight", "loss.feature_matching", "loss.clip")


def _numeric_sampled(spec: Spec) -> bool:
    if isinstance(spec, CategoricalSpec):
        return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.choices)
    return isinstance(spec, (FloatSpec, IntSpec))


def _suggest(trial: optuna.Trial, name: str, spec: Spec) -> Any:
    if isinstance(spec, FloatSpec):
        value = trial.suggest_float(name, *spec.range, log=spec.log, step=spec.step)
        return value if spec.step is None else on_grid(value, spec.range[0], spec.step)
    if isinstance(spec, IntSpec):
        return trial.suggest_int(name, *spec.range, log=spec.log, step=spec.step)
    if isinstance(spec, CategoricalSpec):
        return trial.suggest_categorical(name, spec.choices)
    assert isinstance(spec, ValueSpec)
    return spec.value


def _shown(value: Any) -> str:
    """A value as the space's YAML writes it (``null``, ``true``)."""
    return json.dumps(value) if value is None or isinstance(value, bool) else repr(value)


def set_by_search(s: SearchSettings) -> dict[str, Any]:
    """The config keys the ``search`` section ``s`` sets in every trial, by dotted path."""
    return {**_cadence(s), "health.objective": s.objectives[0], "health.mode": s.mode}


def numbered(number: int, params: dict[str, Any]) -> str:
    """A trial as the progress lines name it: by its number, to 3 places."""
    return f"trial {number:>3}"


def _cadence(s: SearchSettings) -> dict[str, Any]:
    """The training and evaluation keys of ``set_by_search``: known before the objectives are checked."""
    out: dict[str, Any] = {"train.steps": s.max_steps, "eval.every": s.eval_every, "eval.quick_every": s.quick_every}
    if s.pruning.noise_aware:  # the scheduler reads each evaluation's noise from its repeat
        out["eval.repeat"] = True
    return out


class NotACondition(ConfigError):
    """A ``when`` that gave something other than true or false: a mistake in the space whatever the draw."""


def _condition(name: str, text: str, value: Any) -> bool:
    """A ``when``'s value, which must be true or false: ``when: "optim.lr_g"`` (a number) held in every trial, and
    ``"loss.name == 'wgan-gp' or 'wgan'"`` gives ``'wgan'`` where the comparison is false."""
    if not isinstance(value, bool):
        advice = f"such as {text} > 0" if isinstance(value, (int, float)) else \
            "that compares each value (loss.name in ['wgan-gp', 'wgan'], not loss.name == 'wgan-gp' or 'wgan')" \
            if isinstance(value, str) else "that compares a key with a value (model.progressive != None)"
        raise NotACondition(f"{name}.when: {text!r} gives {value!r}, not true or false; write a condition {advice}")
    return value


def mixed_data(datas: list[Any], settings: SearchSettings) -> list[str]:
    """A note when the trials can train on different data (``datas``: the space's ``possible_data``): one
    objective ranks them all, and its values on two datasets (FID on grid25 and on digits) are not comparable, so
    the "best" trial is the easiest data's."""
    sources = dict.fromkeys(measured_on(c) for c in datas)
    if len(sources) < 2:
        return []
    return [f"its trials train on different data ({', '.join(sources)}), whose values of {settings.objectives[0]} "
            "are not comparable: the sampler and the pruning compare them, and the summary, export and report rank "
            "only the trials on the newest trial's data; search each on its own"]


def parse_params(settings: SearchSettings, source: str) -> dict[str, Spec]:
    """The free parameters of ``search.params``, each a spec (a plain value is a fixed one)."""
    params = {k: parse_spec(v if isinstance(v, dict) else {"value": v}, source, f"search.params.{k}")
              for k, v in settings.params.items()}
    for k in params:
        if "." in k or k in SECTIONS or not k.isidentifier() or keyword.iskeyword(k):
            # an expression cannot read ``lambda`` or ``True`` as a name: the parameter was drawn for nothing
            raise ConfigError(f"{source}: search.params.{k}: a parameter name must be a plain identifier, not a "
                              "section or a Python word (lambda, True, ...): e.g. lam")
        if (read := unicodedata.normalize("NFKC", k)) != k:  # an expression's µ (U+00B5) reads as μ (U+03BC)
            raise ConfigError(f"{source}: search.params.{k}: an expression reads this name as {read!r} (Python "
                              f"folds such letters, NFKC): name the parameter {read}")
        if quoted := _quoted_number(params[k]):
            raise ConfigError(f"{source}: search.params.{k}: {quoted!r} is quoted among numbers: write it "
                              "unquoted (the text would reach expressions, where 2 * '2' fails)")
    return params


def _quoted_number(spec: Spec) -> str | None:
    """A choice of text that reads as a number beside numbers (``categorical: ['2', 4]``): the first, or None. A
    config key refuses it by its type (``switch_problem``); a free parameter has none, and half its draws failed in
    expressions."""
    if not isinstance(spec, CategoricalSpec) or not any(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.choices):
        return None
    return next((c for c in spec.choices if isinstance(c, str) and switch_problem(float, c)), None)


def _search_section(search: Any, source: str) -> dict[str, Any]:
    """The search section's settings; empty (``search:``) is the defaults. ``search: false`` or ``[]`` ran a
    search at the defaults as well, which is not what it says."""
    if search is None:
        return {}
    if not isinstance(search, dict):
        raise ConfigError(f"{source}: search: expected a mapping of settings (trials, max_steps, ...), "
                          f"got {search!r}")
    return search


def stored_specs(text: str, source: str) -> tuple[dict[str, Spec], dict[str, Spec]]:
    """The leaves and free parameters of a space's text as a search stored it, without ``load_space``'s checks of
    data, weights and draws (which read the disk as it is now). Raises ``ConfigError`` where it does not parse."""
    raw = parse_yaml(text, source)
    raw = dict(raw) if isinstance(raw, dict) else {}
    try:
        settings = SearchSettings.model_validate(_search_section(raw.pop("search", None), source))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, "search")) from None
    raw.pop("name", None)
    return walk(raw, source), parse_params(settings, source)


def load_space(path: str | Path, name: str | None = None, weights: bool = True) -> SearchSpace:
    """Read and validate a search-space file; nothing starts before this has succeeded. ``weights=False`` leaves
    out the check that the Inception weights its evaluations need are on disk (``gantune init`` writes a space
    for the user to complete, and says so)."""
    source = str(path)
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"{source}: empty search space (expected a search section and config sections; see "
                          "search_spaces/ for examples)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with a search section and config sections")
    raw = dict(raw)
    search = _search_section(raw.pop("search", None), source)
    try:
        settings = SearchSettings.model_validate(search)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, "search")) from None
    file_name = raw.pop("name", None)
    if file_name is not None and not isinstance(file_name, str):
        raise ConfigError(f"{source}: name: expected a string")
    if name is not None:
        check_name(name, "--name")
    elif file_name is not None:
        check_name(file_name, f"{source}: name")
    else:
        check_name(Path(path).stem, f"{source}: the file's name (the search's name when it has no name: key or "
                   "--name)")
    params = parse_params(settings, source)
    leaves = walk(raw, source)
    absolute_files(leaves, settings.defaults)
    check_scheduler_keys(search, source)
    check_repeat_owned(settings, leaves, source)
    check_search_defaults(settings.defaults, source)
    literals = check_names(leaves, params, source)
    notes = [note for _, _, note in literals] + unmodelled(settings, leaves, params, source, chosen="sampler" in search)
    notes += [f"{source}: {note}" for note in unread_defaults(settings.defaults, leaves)]
    # what a condition reads where the space leaves a key unset: the search's value (train.steps is max_steps)
    sections = possible_sections(leaves, source, {**settings.defaults, **_cadence(settings)})
    check_objectives(settings, sections, source)
    space = SearchSpace(name or file_name or Path(path).stem, source, Path(path).read_text(encoding="utf-8"),
                        settings, leaves, params, notes, sections)
    datas = space.datas
    with listed_once():  # each image folder walked once: for its check and its notes
        check_data_of(datas, sections, source)
        notes += mixed_data(datas, settings)
        notes += dict.fromkeys(note for cfg in datas for note in data_notes(cfg))
    check_init_files(leaves, source, settings.defaults)
    if weights:
        check_weights_of(sections, source)
    said = {path for path, kind, _ in literals if kind == "when"}  # why the draws never set it, said already
    space.notes += [note for leaf, note in check_draws(space).items() if leaf not in said]
    if settings.pruning.scheduler == "pbt":
        space.mutable_params()  # PBT needs something to explore
    return space


#: random draws ``check_draws`` tries before it calls a space one whose every trial would fail
DRAWS = 32


def check_draws(space: SearchSpace) -> dict[str, str]:
    """Refuse a space none of whose ``DRAWS`` random draws makes a valid trial config (a circular expression, a
    condition on its own key, a division by zero, the one combination of choices that does not fit together):
    every trial of it would fail, and the search would end with nothing. A space where some draws fail stays
    valid, with a note of how many: those trials fail (and teach Optuna's samplers nothing: they skip failed
    trials).

    Returns, by leaf, a sentence for each conditional leaf the valid draws never set (its ``when`` held in none)
    and each sampled one they never read (``catalogue.READ_ONLY_UNDER``: ``gp_weight`` beside a loss without a
    gradient penalty): searched for nothing."""
    from optuna.samplers import RandomSampler

    from gantune.catalogue import READ_ONLY_UNDER, config_from_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=RandomSampler(seed=0))  # in memory: nothing written
    first = ""
    valid = 0
    set_in: set[str] = set()  # leaves some valid draw set
    read_in: set[str] = set()  # ... and read
    for _ in range(DRAWS):
        trial = study.ask()
        on: set[str] = set()
        try:
            cfg = config_from_dict(space.sample(trial, on=on), space.source)
        except NotACondition as err:  # in some draws only (an ``or`` whose left side held): a mistake all the same
            raise ConfigError(f"{space.source}: {err}") from None
        except ConfigError as err:
            first = first or str(err).removeprefix(f"{space.source}: ")
            continue
        except (ArithmeticError, TypeError, ValueError, RecursionError) as err:
            first = first or f"{type(err).__name__}: {err}"
            continue
        finally:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        valid += 1
        set_in |= on
        read_in |= {k for k in on if k not in READ_ONLY_UNDER or READ_ONLY_UNDER[k][0](cfg)}
    if not valid:
        raise ConfigError(f"{space.source}: none of {DRAWS} random draws of this space is a valid trial config, so "
                          f"every trial would fail; the first: {first}")
    named = {n for _, _, text in expressions(space.leaves, space.params) for n in Expr(text).names}
    notes = {}
    if valid < DRAWS:  # a trial drawn so fails at once; the sampler avoids only what it has seen fail
        notes[""] = (f"{space.source}: {DRAWS - valid} of {DRAWS} random draws of this space are not valid trial "
                     f"configs, and its trials drawn so will fail (the first: {first})")
    for name, spec in space.leaves.items():
        sampled = isinstance(spec, (FloatSpec, IntSpec, CategoricalSpec))
        if spec.when is not None and name not in set_in:
            notes[name] = (f"{space.source}: {name}.when held in none of {valid} valid random draws: it is (almost) "
                           "never set")
        elif name in set_in and name not in read_in and name not in named and (  # an expression reads it
                sampled or not isinstance(spec, ValueSpec) or spec.value != schema_default(name)):
            # a fixed value too, off its default (as `gantune train` says): `gp_weight: 5` beside hinge was silent
            notes[name] = (f"{space.source}: {name} is {'searched' if sampled else 'set'}, but none of {valid} valid "
                           f"random draws reads it (it is read with {READ_ONLY_UNDER[name][1]()})")
    return notes


def _nested(into: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """``flat``'s dotted paths set in the nested config ``into`` (a subsection's key, ``model.progressive.start``,
    nests once more; a subsection's own value, a dict, over the keys of it set before)."""
    for path, value in flat.items():
        *parents, key = path.split(".")
        at = into
        for part in parents:
            inner = at.setdefault(part, {})
            if not isinstance(inner, dict):  # a subsection set to null (off): its keys have nowhere to go
                break
            at = inner
        else:
            # a subsection given whole takes the defaults of the keys it leaves out (search.defaults'
            # model.progressive.fade_steps beside progressive: {value: {start: 8}} was dropped)
            at[key] = {**at[key], **value} if isinstance(value, dict) and isinstance(at.get(key), dict) else value
    return into
