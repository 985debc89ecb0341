"""Search spaces: the trial-config YAML where any leaf may be a range, compiled to an Optuna define-by-run
function.

A leaf is a fixed value, or one of::

    {float: [low, high], log: true, step: 0.1}      {int: [low, high], log: false, step: 1}
    {categorical: [a, b, c]}                        {expr: "optim.lr_g * ttur_ratio"}
    {value: 0.01}                                   # a fixed value, useful with when:

each optionally with ``when: "<condition>"``: the leaf is only set (sampled) when the condition holds, else the
config default applies (an expression naming a switched-off leaf reads that default). Expressions name other
leaves by dotted path or free parameters declared under ``search.params``. The ``search`` section holds the
search settings. Files are validated with pydantic before anything starts; every error is one line naming the
file, key and expectation.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gantune.catalogue import check_value, config_from_dict
from gantune.config import SECTIONS, SUBSECTIONS, DataConfig, TrialConfig, format_validation_error, read_yaml
from gantune.data import check_data
from gantune.errors import ConfigError, DataError
from gantune.metrics import FAMILIES, metric_keys
from gantune.sampling.expr import Expr, ExprError
from gantune.sampling.settings import SearchSettings, check_name, mode_of

_FORBID = ConfigDict(extra="forbid", populate_by_name=True)
Scalar = str | int | float | bool | None


class _Leaf(BaseModel):
    model_config = _FORBID
    when: str | None = None


class FloatSpec(_Leaf):
    range: tuple[float, float] = Field(alias="float")
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatSpec:
        lo, hi = self.range
        if lo >= hi:
            raise ValueError(f"float range [{lo}, {hi}] needs low < high")
        if self.log and lo <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class IntSpec(_Leaf):
    range: tuple[int, int] = Field(alias="int")
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntSpec:
        lo, hi = self.range
        if lo > hi:
            raise ValueError(f"int range [{lo}, {hi}] needs low <= high")
        if self.log and (lo <= 0 or self.step != 1):
            raise ValueError("a log int range needs low > 0 and step 1")
        return self


class CategoricalSpec(_Leaf):
    choices: list[Scalar] = Field(alias="categorical", min_length=1)


class ExprSpec(_Leaf):
    expr: str


class ValueSpec(_Leaf):
    value: Any


SPEC_TYPES: dict[str, type[_Leaf]] = {"float": FloatSpec, "int": IntSpec, "categorical": CategoricalSpec,
                                      "expr": ExprSpec, "value": ValueSpec}
Spec = FloatSpec | IntSpec | CategoricalSpec | ExprSpec | ValueSpec


@dataclasses.dataclass
class SearchSpace:
    """A validated space: ``sample(trial)`` draws one trial config (a plain dict) through Optuna."""

    name: str
    source: str
    text: str
    settings: SearchSettings
    leaves: dict[str, Spec]  # dotted config path -> spec (fixed values are ValueSpec)
    params: dict[str, Spec]  # free parameters (not config keys)

    def sample(self, trial: optuna.Trial, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Define-by-run: suggest each leaf (in dependency order) and return the nested trial config.

        ``search.defaults`` and ``overrides`` (dotted config paths this space does not mention: a recipe's,
        ``gantune.sampling.warm``) replace those keys' schema defaults, in the config and wherever an expression
        or condition reads them."""
        given = {k: v for k, v in (overrides or {}).items() if k not in self.leaves and k not in self.params}
        extra = {**self.search_defaults(), **given}  # a recipe is whole: its values win
        values: dict[str, Any] = dict(extra)
        resolving: list[str] = []
        absent = object()

        def resolve(name: str) -> Any:
            if name in values:  # a leaf switched off by its ``when`` reads as the config default
                return schema_default(name) if values[name] is absent else values[name]
            spec = self.leaves.get(name) or self.params.get(name)
            if spec is None:
                return schema_default(name)
            if name in resolving:
                raise ConfigError(f"{self.source}: {name}: circular reference ({' -> '.join([*resolving, name])})")
            resolving.append(name)
            try:
                if spec.when is not None and not Expr(spec.when)(resolve):
                    values[name] = absent
                    return schema_default(name)
                values[name] = _suggest(trial, name, spec, resolve)
            finally:
                resolving.pop()
            return values[name]

        for name in [*self.params, *self.leaves]:
            resolve(name)
        nested: dict[str, Any] = {"name": self.name}
        for path, value in values.items():
            if (path in self.leaves or path in extra) and value is not absent:
                *parents, key = path.split(".")  # a subsection's key (model.progressive.start) nests once more
                at = nested
                for part in parents:
                    at = at.setdefault(part, {})
                at[key] = value
        return self._apply_settings(nested)

    def search_defaults(self) -> dict[str, Any]:
        """The ``search.defaults`` this space's trials take: those of the keys it does not mention."""
        return {k: v for k, v in self.settings.defaults.items() if k not in self.leaves and k not in self.params}

    def _apply_settings(self, raw: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        raw.setdefault("train", {})["steps"] = s.max_steps
        raw.setdefault("eval", {})["every"] = s.eval_every
        raw["eval"]["quick_every"] = s.quick_every
        raw.setdefault("health", {})["objective"] = s.objectives[0]
        raw["health"]["mode"] = s.mode
        if s.pruning.noise_aware:  # the scheduler reads each evaluation's noise from its repeat
            raw["eval"]["repeat"] = True
        return raw

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
            return list(wanted)
        chosen = [n for n in numeric if n in self.params or n in DEFAULT_MUTABLE]
        if not chosen:
            raise ConfigError(f"{self.source}: search.pruning.scheduler: pbt needs a sampled learning rate, beta, "
                              "n_critic or penalty weight (or a free parameter) to explore; this space samples none")
        return chosen


#: config leaves PBT's explore changes by default when the space samples them (a checkpoint carries on with any
#: value)
DEFAULT_MUTABLE = ("optim.lr_g", "optim.lr_d", "optim.beta1", "optim.beta2", "optim.n_critic", "optim.grad_clip",
                   "loss.gp_weight", "loss.r1_weight", "loss.feature_matching", "loss.clip")


def _numeric_sampled(spec: Spec) -> bool:
    if isinstance(spec, CategoricalSpec):
        return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.choices)
    return isinstance(spec, (FloatSpec, IntSpec))


def _suggest(trial: optuna.Trial, name: str, spec: Spec, resolve: Callable[[str], Any]) -> Any:
    if isinstance(spec, FloatSpec):
        return trial.suggest_float(name, *spec.range, log=spec.log, step=spec.step)
    if isinstance(spec, IntSpec):
        return trial.suggest_int(name, *spec.range, log=spec.log, step=spec.step)
    if isinstance(spec, CategoricalSpec):
        return trial.suggest_categorical(name, spec.choices)
    if isinstance(spec, ExprSpec):
        return Expr(spec.expr)(resolve)
    return spec.value


_DEFAULTS: dict[str, Any] = {}


def schema_default(path: str) -> Any:
    """The value config key ``path`` (``optim.ema``, ``model.progressive.start``) has when nothing sets it."""
    if not _DEFAULTS:
        for section, values in TrialConfig().to_dict().items():
            if isinstance(values, dict):
                _DEFAULTS.update({f"{section}.{k}": v for k, v in values.items()})
            else:
                _DEFAULTS[section] = values
        for sub, cls in SUBSECTIONS.items():  # a subsection's keys read the defaults it has once switched on
            _DEFAULTS.update({f"{sub}.{f.name}": getattr(cls(), f.name) for f in dataclasses.fields(cls)})
    return _DEFAULTS.get(path)


def _parse_spec(raw: dict[str, Any], source: str, path: str) -> Spec:
    kinds = [k for k in SPEC_TYPES if k in raw]
    if len(kinds) != 1:
        raise ConfigError(f"{source}: {path}: a range needs exactly one of {', '.join(SPEC_TYPES)}; got "
                          f"{', '.join(sorted(raw)) or 'nothing'}")
    try:
        spec = SPEC_TYPES[kinds[0]].model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, path)) from None
    return spec  # type: ignore[return-value]


def _check_leaf(path: str, spec: Spec, source: str) -> None:
    """Each value a leaf can take must pass its section's field validation (key exists, right type) and, for a
    name, the catalogue (the dataset, loss, norm … is registered)."""
    section, key = path.rsplit(".", 1)  # section: model, or a subsection such as model.progressive
    if isinstance(spec, FloatSpec):
        probes: list[Any] = list(spec.range)
    elif isinstance(spec, IntSpec):
        probes = list(spec.range)
    elif isinstance(spec, CategoricalSpec):
        probes = list(spec.choices)
    elif isinstance(spec, ValueSpec):
        probes = [spec.value]
    else:
        probes = []
    cls = SECTIONS.get(section) or SUBSECTIONS[section]
    fields = {f.name for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"{source}: {path}: unknown key (the {section} section has: {', '.join(sorted(fields))})")
    for value in probes:
        try:
            cls(**{key: value})
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source, section)) from None
        check_value(section, key, value, source)


def _walk(raw: dict[str, Any], source: str) -> dict[str, Spec]:
    leaves: dict[str, Spec] = {}
    for section, body in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: {section}: unknown section (expected: search, name, "
                              f"{', '.join(SECTIONS)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: {section}: expected a mapping of keys")
        _walk_section(section, body, source, leaves)
    return leaves


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in (*SPEC_TYPES, "when"))


def _walk_section(section: str, body: dict[str, Any], source: str, leaves: dict[str, Spec]) -> None:
    """The leaves of one section; a subsection given as a mapping (``model.progressive: {start: ...}``) is walked
    into leaves of its own (``model.progressive.start``), so each of its keys can be sampled. The subsection is
    on in a trial when any of its leaves is set (a ``when`` can switch them all off: then it stays null)."""
    for key, value in body.items():
        path = f"{section}.{key}"
        if path in SUBSECTIONS and isinstance(value, dict) and not _is_spec(value):
            _walk_section(path, value, source, leaves)
            continue
        leaves[path] = _parse_spec(value, source, path) if _is_spec(value) else ValueSpec(value=value)
        _check_leaf(path, leaves[path], source)


def _check_search_defaults(defaults: dict[str, Any], source: str) -> None:
    """``search.defaults`` holds fixed values of known config keys, checked like a space's own fixed leaves."""
    for path, value in defaults.items():
        where = f"search.defaults.{path}"
        if path not in _all_schema_paths():
            raise ConfigError(f"{source}: {where}: unknown config key (expected a dotted path such as optim.ema)")
        if isinstance(value, dict):
            raise ConfigError(f"{source}: {where}: expected a fixed value (a search range belongs in the space)")
        try:
            _check_leaf(path, ValueSpec(value=value), source)
        except ConfigError as err:  # name the setting the value came from, not a leaf of the space
            raise ConfigError(str(err).replace(f"{source}: ", f"{source}: search.defaults: ", 1)) from None


def _check_names(leaves: dict[str, Spec], params: dict[str, Spec], source: str) -> None:
    known = set(leaves) | set(params) | {p for p in _all_schema_paths()}
    for path, spec in [*params.items(), *leaves.items()]:
        texts = [("when", spec.when)] + ([("expr", spec.expr)] if isinstance(spec, ExprSpec) else [])
        for kind, text in texts:
            if text is None:
                continue
            try:
                expr = Expr(text)
            except ExprError as err:
                raise ConfigError(f"{source}: {path}.{kind}: {err}") from None
            for name in expr.names:
                if name not in known:
                    raise ConfigError(f"{source}: {path}.{kind}: unknown name {name!r} (use a dotted config path "
                                      "such as optim.lr_g or a parameter declared under search.params)")


#: keys outside ``data`` and ``eval`` that change the metric set (a conditional run adds the conditional metric)
_PROBED = ("model.conditional",)


def fixed_sections(leaves: dict[str, Spec], source: str) -> TrialConfig | None:
    """The trial config of the space's fixed ``data`` and ``eval`` values, or ``None`` where either is sampled
    (or the combination is invalid, which the trial config reports later), with the fixed values of the other
    keys that decide what an evaluation reports (``_PROBED``)."""
    fixed: dict[str, dict[str, Any]] = {"data": {}, "eval": {}}
    for path, spec in leaves.items():
        section, key = path.split(".", 1)
        if path in _PROBED and isinstance(spec, ValueSpec) and spec.when is None:
            fixed.setdefault(section, {})[key] = spec.value
        if section in ("data", "eval"):
            if not isinstance(spec, ValueSpec) or spec.when is not None:
                return None
            fixed[section][key] = spec.value
    try:
        return config_from_dict(fixed, source)
    except ConfigError:
        return None


def _check_objectives(settings: SearchSettings, leaves: dict[str, Spec], source: str) -> None:
    """Each objective must be a value the evaluations of this space report (a typo would run the whole budget).

    Checked when the data and eval sections are fixed; a space that samples them is checked trial by trial. An
    objective that is better higher (the Inception Score) must be maximised, whatever the sections.
    """
    higher = {key for name in FAMILIES for key in FAMILIES.get(name).higher}
    for objective, direction in zip(settings.objectives, settings.directions, strict=True):
        if objective in higher and mode_of(direction) == "min":
            raise ConfigError(f"{source}: search.direction: {objective!r} is better higher: maximize it")
    probe = fixed_sections(leaves, source)
    if probe is None:
        return
    keys = metric_keys(probe)
    for objective in settings.objectives:
        if objective not in keys:
            raise ConfigError(f"{source}: search.objective: {objective!r} is not reported by this space's evaluations "
                              f"(available: {', '.join(keys) or 'none: eval.metrics is empty'})")


#: the data fields that decide whether the data is there (``gantune.data.check_data``)
_DATA_KEYS = ("name", "path", "dataset", "download")


def possible_data(leaves: dict[str, Spec]) -> list[Any]:
    """The distinct ``DataConfig``s the space's trials can have, as far as their fixed and categorical values
    (and the defaults a ``when`` falls back on) say. A ``download`` it samples otherwise counts as true (nothing
    to check); another sampled key reads its default; combinations the trial config would refuse are left to it."""
    fixed: dict[str, Any] = {}
    options: dict[str, list[Any]] = {}
    for path, spec in leaves.items():
        section, key = path.split(".", 1)
        if section != "data":
            continue
        if isinstance(spec, ValueSpec):
            values = [spec.value]
        elif isinstance(spec, CategoricalSpec):
            values = list(spec.choices)
        else:
            values = [True] if key == "download" else []
        if values and spec.when is not None:
            values.append(schema_default(path))
        if key in _DATA_KEYS:
            options[key] = values or [schema_default(path)]
        elif isinstance(spec, ValueSpec) and spec.when is None:
            fixed[key] = spec.value
    found: list[Any] = []
    keys = list(options)
    for combo in itertools.product(*options.values()):
        try:
            cfg = DataConfig(**fixed, **dict(zip(keys, combo, strict=True)))
        except (ValidationError, TypeError):
            continue
        if cfg not in found:
            found.append(cfg)
    return found


def _check_data(leaves: dict[str, Spec], source: str) -> None:
    """Data that is not there fails here, once, rather than in every trial of a search that then exits 0."""
    for cfg in possible_data(leaves):
        try:
            check_data(cfg)
        except DataError as err:
            raise DataError(f"{source}: {err}") from None


#: leaves holding a file a trial reads itself: made absolute at load, since Ray runs each trial in a folder of its
#: own, where a path relative to the search's working directory would name nothing
TRIAL_FILES = ("model.init_from",)


def _absolute(value: Any) -> Any:
    return str(Path(value).expanduser().absolute()) if isinstance(value, str) else value


def _absolute_files(leaves: dict[str, Spec]) -> None:
    for path in TRIAL_FILES:
        spec = leaves.get(path)
        if isinstance(spec, ValueSpec):
            leaves[path] = spec.model_copy(update={"value": _absolute(spec.value)})
        elif isinstance(spec, CategoricalSpec):
            leaves[path] = spec.model_copy(update={"choices": [_absolute(c) for c in spec.choices]})


def _all_schema_paths() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in {**SECTIONS, **SUBSECTIONS}.items() for f in dataclasses.fields(cls)]


def load_space(path: str | Path, name: str | None = None) -> SearchSpace:
    """Read and validate a search-space file; nothing starts before this has succeeded."""
    source = str(path)
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"{source}: empty search space (expected a search section and config sections; see "
                          "search_spaces/ for examples)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with a search section and config sections")
    raw = dict(raw)
    try:
        settings = SearchSettings.model_validate(raw.pop("search", None) or {})
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
    params = {k: _parse_spec(v if isinstance(v, dict) else {"value": v}, source, f"search.params.{k}")
              for k, v in settings.params.items()}
    for k in params:
        if "." in k or k in SECTIONS:
            raise ConfigError(f"{source}: search.params.{k}: a parameter name must be a plain identifier")
    leaves = _walk(raw, source)
    _absolute_files(leaves)
    _check_search_defaults(settings.defaults, source)
    _check_names(leaves, params, source)
    _check_objectives(settings, leaves, source)
    _check_data(leaves, source)
    text = Path(path).read_text()
    space = SearchSpace(name or file_name or Path(path).stem, source, text, settings, leaves, params)
    if settings.pruning.scheduler == "pbt":
        space.mutable_params()  # PBT needs something to explore
    return space
