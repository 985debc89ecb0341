"""The ``search`` section of a space file: budget, objectives, sampler, resources and pruning; the search's name.

The sampler names live here, beside the setting that names one, so a space is checked without the study.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from pydantic import ConfigDict, Field, field_validator, model_validator

from gantune.config import MAX_SEED, SwitchChecked, share_problem
from gantune.errors import ConfigError
from gantune.events import short_repr
from gantune.metrics import better
from gantune.registry import Registry
from gantune.sampling.recipes import RECIPES

_FORBID = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
Direction = Literal["minimize", "maximize"]
#: a search name is one path component (``runs/<name>/trial-NNNN``), a study and an MLflow experiment name
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

#: ``search.defaults`` when a space does not say: chosen by ``benchmarks/search_defaults.py``
#: (benchmarks/RESULTS.md, "Search defaults")
SEARCH_DEFAULTS: dict[str, Any] = {"optim.ema": 0.999}

KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


@dataclass(frozen=True)
class SamplerKind:
    """An Optuna sampler class and the arguments gantune gives it; ``search.sampler_options`` go over them."""

    cls: type[optuna.samplers.BaseSampler]
    defaults: Callable[[SearchSettings], dict[str, Any]]
    #: packages it imports only when it samples (CmaEsSampler builds without ``cmaes``, then every trial failed)
    needs: tuple[str, ...] = ()
    #: the least value of options its constructor takes but its sampling refuses (TPE's n_ei_candidates 0 built,
    #: then failed every trial past the random start)
    at_least: dict[str, float] = field(default_factory=dict)
    #: it optimises one objective (CMA-ES): with a list of them every trial failed at its first draw
    one_objective: bool = False

    def build(self, s: SearchSettings) -> optuna.samplers.BaseSampler:
        return self.cls(**{**self.defaults(s), **s.sampler_options})

    def settable(self, s: SearchSettings) -> dict[str, type]:
        """The constructor's arguments a space file may set, with their kind: those gantune sets (but ``seed``:
        that is ``search.seed``) and those whose default, or else whose annotation (``int | None``: Optuna gives
        CMA-ES's ``popsize`` a default of ``None``, and it was refused), is a bool, number or string (a callable
        or a sampler has no kind to check a YAML value against). Those Optuna deprecates are refused in ``check``,
        which says so."""
        params = inspect.signature(self.cls.__init__).parameters.values()
        plain = {p.name: kind for p in params if p.name != "seed" and (kind := _plain_kind(p)) is not None}
        return {k: v for k, v in plain.items() if k not in deprecated(self.cls)} | \
            {k: type(v) for k, v in self.defaults(s).items() if k != "seed"}

    def check(self, s: SearchSettings) -> None:
        """``ValueError`` naming the first option the sampler does not take, is of the wrong kind or refuses."""
        if self.one_objective and len(s.objectives) > 1:
            others = ", ".join(n for n in SAMPLERS.names() if not SAMPLERS.get(n).one_objective)
            raise ValueError(f"sampler: {s.sampler} optimises one objective and this search has "
                             f"{len(s.objectives)} ({', '.join(s.objectives)}): choose one of {others}, or one "
                             "objective")
        if missing := [name for name in self.needs if importlib.util.find_spec(name) is None]:
            raise ValueError(f"sampler: {s.sampler} needs the {', '.join(missing)} package (pip install "
                             f"{' '.join(missing)}), which is not installed")
        settable = self.settable(s)
        for key, value in s.sampler_options.items():
            kind = settable.get(key)
            if key in (gone := deprecated(self.cls)):  # Optuna's multi-line warning opened every search
                raise ValueError(f"sampler_options: {key}: {gone[key]}; leave it out")
            if kind is None:
                choose = f"choose from: {', '.join(settable)}" if settable else "it takes none"
                raise ValueError(f"sampler_options: {self.cls.__name__} has no option {key!r} a space can set; "
                                 f"{choose}")
            # YAML's 1 is a fine float, but neither true nor 1.5 is an int, nor 1 a bool
            if not (type(value) is kind or (kind is float and type(value) is int)):
                raise ValueError(f"sampler_options: {key}: {short_repr(value)} is not {KIND_WORDS[kind]}")
            if kind is int and key.startswith("n_") and isinstance(value, int) and value < 0:  # Optuna took -3 as 0
                raise ValueError(f"sampler_options: {key}: {value} is a count, at least 0")
            if key in self.at_least and isinstance(value, (int, float)) and value < self.at_least[key]:
                raise ValueError(f"sampler_options: {key}: {value} is below {self.at_least[key]:g}, which "
                                 f"{self.cls.__name__} needs when it samples")
        try:
            with warnings.catch_warnings():  # the search builds it again, and warns then
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.build(s)
        except (TypeError, ValueError) as e:
            raise ValueError(f"sampler_options: {e}") from None


_PLAIN: dict[str, type] = {t.__name__: t for t in (bool, int, float, str)}
#: a value of each kind, to build a sampler with one argument set (a str one may be refused: then it is kept)
_PROBES: dict[type, Any] = {bool: True, int: 1, float: 1.0, str: ""}


@functools.cache
def deprecated(cls: type[optuna.samplers.BaseSampler]) -> dict[str, str]:
    """The arguments of ``cls`` Optuna deprecates, with the first sentence of its warning (TPE's
    ``consider_endpoints``, CMA-ES's ``sigma0``: each defaults to ``None`` and warns when given)."""
    out: dict[str, str] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        kind = _plain_kind(p)
        if p.default is not None or kind is None or p.name == "seed":
            continue
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            with contextlib.suppress(Exception):
                cls(**{p.name: _PROBES[kind]})
        for w in said:
            if issubclass(w.category, FutureWarning) and f"`{p.name}`" in str(w.message):
                out[p.name] = str(w.message).split(". ")[0]
    return out


def _plain_kind(p: inspect.Parameter) -> type | None:
    """A constructor argument's kind when a YAML value can give it: its default's, or its annotation's without
    ``| None`` (written as text under ``from __future__ import annotations``, or a type)."""
    if type(p.default) in _PLAIN.values():
        return type(p.default)
    text = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
    return _PLAIN.get(text.replace(" ", "").removesuffix("|None").removeprefix("Optional[").removesuffix("]"))


#: Optuna samplers by the name ``search.sampler`` gives. TPE: multivariate (which Optuna's docs report ahead of
#: the independent TPE), with a constant liar so that trials running at once draw apart
SAMPLERS: Registry[SamplerKind] = Registry("sampler")
SAMPLERS.add("tpe", SamplerKind(optuna.samplers.TPESampler, lambda s: {
    "seed": s.seed, "constant_liar": True, "multivariate": True, "n_startup_trials": 5},
    at_least={"n_ei_candidates": 1}))
SAMPLERS.add("random", SamplerKind(optuna.samplers.RandomSampler, lambda s: {"seed": s.seed}))
SAMPLERS.add("qmc", SamplerKind(optuna.samplers.QMCSampler, lambda s: {"seed": s.seed,
                                                                       "warn_independent_sampling": False}))
SAMPLERS.add("gp", SamplerKind(optuna.samplers.GPSampler, lambda s: {"seed": s.seed}, needs=("scipy", "torch")))
SAMPLERS.add("cmaes", SamplerKind(optuna.samplers.CmaEsSampler, lambda s: {"seed": s.seed,
                                                                           "warn_independent_sampling": False},
                                  needs=("cmaes",), one_objective=True))


class Resources(SwitchChecked):
    model_config = _FORBID
    cpu: float = Field(default=1.0, gt=0)
    gpu: float | Literal["auto"] = Field(default="auto", description="GPU share per trial (0 = CPU); auto = none "
                                        "without a GPU, else 1/k of one by model size (gantune.devices)")

    @field_validator("cpu")
    @classmethod
    def _cpus(cls, v: float) -> float:
        if why := share_problem(v):
            raise ValueError(why)
        return v

    @field_validator("gpu")
    @classmethod
    def _share(cls, v: float | str) -> float | str:
        if isinstance(v, (int, float)) and (why := share_problem(v)):
            raise ValueError(f"{why} (0 = no GPU), or auto")
        return v


class PBTSettings(SwitchChecked):
    """Population Based Training (Jaderberg et al. 2017) through Ray Tune's ``PopulationBasedTraining``."""

    model_config = _FORBID
    interval_evals: int = Field(default=2, ge=1, description="evaluations between exploit/explore decisions")
    quantile: float = Field(default=0.25, gt=0, le=0.5, description="bottom share of the population that clones "
                            "a member of the top share")
    resample_probability: float = Field(default=0.25, ge=0, le=1, description="chance that explore draws a "
                                        "parameter afresh from its range instead of perturbing it")
    mutate: list[str] | None = Field(default=None, description="sampled parameters explore may change; default: "
                                     "the sampled optim/loss numbers (learning rates, betas, n_critic, penalty "
                                     "weights) and the free parameters of search.params")

    @field_validator("mutate")
    @classmethod
    def _once(cls, v: list[str] | None) -> list[str] | None:
        """A key listed twice was perturbed twice per explore (x0.64 / 0.96 / 1.44 instead of x0.8 / 1.2)."""
        if v is not None and (twice := next((k for i, k in enumerate(v) if k in v[:i]), None)) is not None:
            raise ValueError(f"{twice!r} is listed twice: list each key once")
        return v


class Pruning(SwitchChecked):
    model_config = _FORBID
    scheduler: Literal["asha", "pbt"] = Field(default="asha", description="asha: successive halving on the "
                                              "objective; pbt: population based training (exploit + explore)")
    asha: bool = Field(default=True, description="ASHA successive halving on the objective at evaluation steps "
                       "(scheduler: asha; false = no scheduler)")
    health: bool = Field(default=True, description="stop trials the health monitor judges diverged/collapsed/stalled")
    grace_evals: int = Field(default=2, ge=1, description="full evaluations before ASHA may stop a trial")
    reduction_factor: int = Field(default=3, ge=2)
    noise_aware: bool = Field(default=False, description="ASHA keeps a trial whose objective lies within the "
                              "evaluation noise of the rung's cutoff; each evaluation is measured twice "
                              "(eval.repeat) to know that noise")
    noise_margin: float = Field(default=1.0, gt=0, description="noise_aware: how close to the cutoff a trial is "
                                "kept, in standard deviations of one evaluation")
    pbt: PBTSettings = Field(default_factory=PBTSettings)

    @model_validator(mode="after")
    def _noise_needs_asha(self) -> Pruning:
        """Only ASHA stops a trial at a cutoff the noise could have decided; PBT stops none, no scheduler none."""
        if self.noise_aware and (self.scheduler != "asha" or not self.asha):
            raise ValueError("noise_aware needs scheduler: asha with asha: true (it tempers ASHA's stops)")
        return self


class SearchSettings(SwitchChecked):
    """The ``search`` section."""

    model_config = _FORBID
    trials: int = Field(default=16, ge=1)
    max_steps: int = Field(default=2000, ge=1, description="generator steps per trial (sets train.steps)")
    eval_every: int = Field(default=250, ge=1, description="full evaluation cadence (sets eval.every)")
    quick_every: int = Field(default=0, ge=0, description="cheap collapse checks between evaluations (0 = off)")
    objective: str | list[str] = "fid"
    direction: Direction | list[Direction] | None = Field(
        default=None, description="minimize or maximize, or one per objective; default: each objective's own "
        "(fid minimized, coverage maximized; a metric with no better side, such as the diversity ratio, needs one)")
    sampler: str = Field(default="tpe", description="a registered Optuna sampler: tpe, random, gp, qmc, cmaes")
    sampler_options: dict[str, Any] = Field(default_factory=dict, description="arguments of the sampler's "
                                            "constructor over gantune's (TPE: n_startup_trials, multivariate, "
                                            "constant_liar, ...): a bool, number or string each")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="the sampler's seed")
    concurrency: int = Field(default=0, ge=0, description="trials at once (0 = as many as resources allow; "
                             "PBT creates its whole population at once and the resources decide)")
    resources: Resources = Field(default_factory=Resources)
    pruning: Pruning = Field(default_factory=Pruning)
    params: dict[str, Any] = Field(default_factory=dict, description="free parameters for expressions: a range, or "
                                   "a fixed value")
    warm_start: bool | list[str] = Field(default=True, description="try known-good recipes first: true = the "
                                         "recipes of the space's data kind (gantune.sampling.recipes), a list = "
                                         "those recipes by name, false = none")

    defaults: dict[str, Any] = Field(default_factory=lambda: dict(SEARCH_DEFAULTS), description="config keys "
                                     "(dotted paths) every trial takes where the space leaves them unset: the "
                                     "search's own defaults, above the schema's; a key the space mentions stays "
                                     "the space's, and a recipe trial takes its recipe's")

    @field_validator("warm_start", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        """pydantic's error for a string named only the bool ("must be true or false"), not the list."""
        if not isinstance(v, (bool, list)):
            raise ValueError(f"must be true or false, or a list of recipe names ({', '.join(RECIPES.names())}), "
                             f"not {v!r}")
        return v

    @field_validator("warm_start")
    @classmethod
    def _recipes(cls, v: bool | list[str]) -> bool | list[str]:
        if isinstance(v, list):
            for name in v:
                RECIPES.validate(name)
            if twice := sorted({n for n in v if v.count(n) > 1}):  # the second was skipped as the first's twin
                raise ValueError(f"recipe {twice[0]!r} is named twice")
        return v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        return SAMPLERS.validate(v)

    @field_validator("params", mode="before")
    @classmethod
    def _param_names(cls, v: Any) -> Any:
        """YAML reads ``on:``, ``off:``, ``yes:`` and ``no:`` as true and false: as a name, pydantic's error said
        ``search.params.1.[key]``."""
        if isinstance(v, dict) and (odd := [k for k in v if not isinstance(k, str)]):
            raise ValueError(f"a parameter name must be a plain identifier, not {odd[0]!r} (YAML reads on, off, yes "
                             "and no as true and false: quote it, or choose another name)")
        return v

    @model_validator(mode="after")
    def _objectives(self) -> SearchSettings:
        if not self.objectives:
            raise ValueError("objective: empty; name the metric to optimise (e.g. fid), or a list of them")
        sides = [better(o) for o in self.objectives]
        if self.direction is None and None not in sides:  # a search for low coverage ranked collapse best
            own: list[Direction] = ["maximize" if s == "max" else "minimize" for s in sides]
            self.direction = own[0] if len(own) == 1 else own
        if self.direction is not None and len(self.objectives) != len(self.directions):
            raise ValueError("objective and direction need the same number of entries")
        if twice := sorted({o for o in self.objectives if self.objectives.count(o) > 1}):
            raise ValueError(f"objective: {', '.join(twice)} given twice (one measurement, one objective)")
        if self.eval_every > self.max_steps:
            raise ValueError("eval_every must not exceed max_steps")
        if self.pruning.scheduler == "pbt" and self.trials < 2:
            raise ValueError("pruning.scheduler: pbt needs a population of 2 trials or more (its members copy the "
                             "better ones' weights); with 1 it would run one plain trial")
        SAMPLERS.get(self.sampler).check(self)
        return self

    @property
    def objectives(self) -> list[str]:
        return [self.objective] if isinstance(self.objective, str) else list(self.objective)

    @property
    def directions(self) -> list[str]:
        d = self.direction
        if d is None:
            raise ConfigError("search.direction: an objective with no better side needs one (check_objectives)")
        return [d] * len(self.objectives) if isinstance(d, str) else list(d)

    def warnings(self) -> list[str]:
        """What the search says before it starts: settings that would do nothing."""
        return [w for w in (self.random_only(), self.idle_scheduler(), self.idle_quick_checks(),
                            self.asha_on_the_first()) if w]

    def asha_on_the_first(self) -> str | None:
        """Why ASHA would cut the Pareto front (it ranks trials on the first objective alone, and a stopped trial
        has no values in a multi-objective study), for a warning."""
        p = self.pruning
        if len(self.objectives) < 2 or p.scheduler != "asha" or not p.asha:
            return None
        return (f"ASHA stops trials on the first objective alone ({self.objectives[0]}), and a stopped trial leaves "
                f"the Pareto front of {', '.join(self.objectives)}: a trial good on the others can be cut early; "
                "set search.pruning.asha: false to keep the front whole (health verdicts still prune)")

    def idle_quick_checks(self) -> str | None:
        """Why ``quick_every`` would run no quick check (each falls on a full evaluation, which runs instead, or
        past the last step), for a warning."""
        q = self.quick_every
        if q == 0 or (q % self.eval_every and q < self.max_steps):
            return None
        return (f"quick_every {q} runs no quick check: each would fall on a full evaluation (eval_every "
                f"{self.eval_every}) or past max_steps {self.max_steps}; make it smaller than eval_every, or 0")

    def random_only(self) -> str | None:
        """Why the sampler would model nothing (its random start, ``n_startup_trials``, covers every trial: a
        GP search of 8 trials, Optuna's default start being 10), for a warning; ``None`` when it models some, and
        under PBT, whose members all start before any ends (a chosen sampler there is said at load,
        ``checks.unmodelled``: more trials would not help)."""
        if self.pruning.scheduler == "pbt":
            return None
        kind = SAMPLERS.get(self.sampler)
        start = {**kind.defaults(self), **self.sampler_options}.get(
            "n_startup_trials", inspect.signature(kind.cls.__init__).parameters.get("n_startup_trials"))
        if isinstance(start, inspect.Parameter):
            start = start.default
        if not isinstance(start, int) or self.trials > start or self.trials == 1:  # one trial: a run, not a search
            return None
        return (f"sampler {self.sampler} draws its first {start} trials at random (n_startup_trials) and this search "
                f"has {self.trials}: every trial is a random draw; raise search.trials past {start} or lower "
                "search.sampler_options.n_startup_trials")

    def idle_scheduler(self) -> str | None:
        """Why the scheduler the settings ask for would decide nothing (its first decision falls at or past the
        last step: a space's defaults, or ``--max-steps`` capping ``eval_every``), for a warning; ``None`` when it
        can decide. Ray Tune runs such a scheduler without a word, and every trial then spends the whole budget."""
        p = self.pruning
        first, what, knob, effect = (
            (p.grace_evals, "ASHA's first rung", "grace_evals", "it will stop no trial") if p.scheduler == "asha"
            else (p.pbt.interval_evals, "PBT's first exploit", "pbt.interval_evals", "no member will clone another"))
        if (p.scheduler == "asha" and not p.asha) or first * self.eval_every < self.max_steps:
            return None
        fix = f"lower pruning.{knob} or eval_every" + (", or set pruning.asha: false to run every trial to the "
                                                       "end" if p.scheduler == "asha" else "")
        return (f"{what} falls at step {first * self.eval_every} ({knob} {first} x eval_every {self.eval_every}), "
                f"not before max_steps {self.max_steps}: {effect}; {fix}")

    @property
    def mode(self) -> Literal["min", "max"]:
        """The first objective's direction as Ray Tune and the health monitor spell it."""
        return mode_of(self.directions[0])


def check_name(name: str, where: str, what: str = "search name", folder: str = "--runs-dir") -> str:
    """``name`` when it is one safe path component: run folders go to ``<runs-dir>/<name>`` and a re-run clears
    ``<name>/trial-NNNN`` there, so ``../x``, ``/abs`` or ``a/b`` would write (and delete) outside ``runs/``
    (``what`` and ``folder``: how the message calls the name and the folder it names one in)."""
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{where}: {name!r} is not a usable {what} (1 to 100 characters: letters, digits, "
                          f"'.', '_', '-', starting with a letter or digit; it names a folder under {folder})")
    return name


def mode_of(direction: str) -> Literal["min", "max"]:
    """``minimize`` -> ``min``, ``maximize`` -> ``max`` (Optuna's and Ray Tune's words for one thing)."""
    return "min" if direction.lower() == "minimize" else "max"


def sign_of(direction: str) -> float:
    """1.0 for ``minimize``, -1.0 for ``maximize``: ``sign * value`` ranks the best first."""
    return 1.0 if mode_of(direction) == "min" else -1.0
