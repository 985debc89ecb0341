"""A space file's sections read into leaves and checked before anything starts: each leaf's values against its
section's schema and the catalogue, expression names, ``search.defaults``, objectives against what the evaluations
report, and data that must be there. Every failure is one ``ConfigError``/``DataError`` line naming file and key."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gantune.catalogue import check_value, config_from_dict, idle_quick_checks
from gantune.config import SECTIONS, SUBSECTIONS, DataConfig, TrialConfig, format_validation_error
from gantune.data import check_data, listed_once
from gantune.errors import ConfigError, DataError, GantuneError
from gantune.gan.conditional import check_classes
from gantune.gan.speed import CUDA_ONLY
from gantune.gan.transfer import read_init
from gantune.metrics import better, check_real_count, metric_keys, missing_weights
from gantune.sampling.expr import Expr, ExprError
from gantune.sampling.settings import SEARCH_DEFAULTS, Pruning, SearchSettings, mode_of
from gantune.sampling.specs import (
    SPEC_TYPES,
    CategoricalSpec,
    ExprSpec,
    FloatSpec,
    IntSpec,
    Spec,
    ValueSpec,
    all_schema_paths,
    schema_default,
)


def parse_spec(raw: dict[str, Any], source: str, path: str) -> Spec:
    kinds = [k for k in SPEC_TYPES if k in raw]
    if len(kinds) != 1:
        typo = next((f" (did you mean {close[0]}?)" for k in raw
                     if (close := difflib.get_close_matches(str(k), SPEC_TYPES, 1, 0.7))), "") if not kinds else ""
        raise ConfigError(f"{source}: {path}: a range needs exactly one of {', '.join(SPEC_TYPES)}; got "
                          f"{', '.join(map(str, sorted(raw, key=str))) or 'nothing'}{typo}")
    try:
        spec = SPEC_TYPES[kinds[0]].model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, path)) from None
    return spec  # type: ignore[return-value]


def _check_key(path: str, source: str) -> type:
    """The section class of config key ``path``; a ``ConfigError`` naming the keys it has when it has not this one."""
    section, key = path.rsplit(".", 1)
    cls: type = SECTIONS.get(section) or SUBSECTIONS[section]
    fields = {f.name for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"{source}: {path}: unknown key (the {section} section has: {', '.join(sorted(fields))})")
    return cls


def _check_leaf(path: str, spec: Spec, source: str) -> None:
    """Each value a leaf can take must pass its section's field validation (key exists, right type) and, for a
    name, the catalogue (the dataset, loss, norm … is registered)."""
    section, key = path.rsplit(".", 1)  # section: model, or a subsection such as model.progressive
    if isinstance(spec, FloatSpec | IntSpec):
        probes: list[Any] = list(spec.range)
        _check_inside(path, spec, section, key, source)
    elif isinstance(spec, CategoricalSpec):
        probes = list(spec.choices)
    elif isinstance(spec, ValueSpec):
        probes = [spec.value]
    else:
        probes = []
    cls = _check_key(path, source)
    read: dict[str, Any] = {}  # a choice as the config reads it -> the choice
    for value in probes:
        try:
            parsed = getattr(cls(**{key: value}), key)
        except ValidationError as err:
            # a rule between keys (min_diversity below max_diversity) is the draws' to check, with the values the
            # space gives the others: probed beside their schema defaults, a pair a trial config takes was refused
            if any(e["loc"][:1] == (key,) for e in err.errors()):
                raise ConfigError(format_validation_error(err, source, section)) from None
        else:  # two spellings of one value (``spectral+none``, ``spectral``): drawn twice as often, modelled apart
            if isinstance(spec, CategoricalSpec) and (twin := read.setdefault(repr(parsed), value)) != value:
                raise ConfigError(f"{source}: {path}: categorical choices {twin!r} and {value!r} are the same "
                                  f"{key} ({parsed!r}) once read: keep one")
        check_value(section, key, value, source)


#: the most values of a numeric range probed (all of them where it has no more; else this many, evenly spread)
INSIDE_PROBES = 64


def inside(spec: FloatSpec | IntSpec) -> list[float | int]:
    """Values strictly inside a range that a draw can give: every one of a stepped range of up to
    ``INSIDE_PROBES`` values, else that many spread evenly (geometrically on a log range); on the step's grid."""
    lo, hi = spec.range
    step = None if spec.log else spec.step  # a log int range has step 1: spread geometrically, as it draws
    if step is not None:
        n = round((hi - lo) / step)
        spread = range(1, INSIDE_PROBES)
        ks = range(1, n) if n <= INSIDE_PROBES else sorted({round(n * i / INSIDE_PROBES) for i in spread})
        values = [lo + k * step for k in ks if 0 < k < n]
        return [int(v) for v in values] if isinstance(spec, IntSpec) else [round(v, 12) for v in values]
    fractions = [i / INSIDE_PROBES for i in range(1, INSIDE_PROBES)]
    values = [lo * (hi / lo) ** f if spec.log else lo + (hi - lo) * f for f in fractions]
    if isinstance(spec, IntSpec):  # a log int range: whole numbers
        return sorted({v for v in (round(x) for x in values) if lo < v < hi})
    return values


def _check_inside(path: str, spec: FloatSpec | IntSpec, section: str, key: str, source: str) -> None:
    """A range whose ends pass can hold values the key refuses (``data.resolution: {int: [8, 16]}``: 9 to 15, not
    powers of two; a float range on a whole-number key): each such draw failed its trial, 24 of 32 here, and a
    failed trial teaches Optuna's samplers nothing. Refused at load, naming the first such value."""
    cls = _check_key(path, source)
    for value in inside(spec):
        try:
            cls(**{key: value})
        except ValidationError as err:
            if not any(e["loc"][:1] == (key,) for e in err.errors()):
                continue
            lo, hi = spec.range
            if isinstance(spec, FloatSpec) and any(e["type"] == "int_from_float" for e in err.errors()):
                hint = f"a whole-number key takes an int range: {{int: [{math.ceil(lo)}, {math.floor(hi)}]}}"
            else:
                hint = "list the values that work as a categorical"
            kind = "int" if isinstance(spec, IntSpec) else "float"
            raise ConfigError(f"{format_validation_error(err, source, section)} (the value {value!r}, inside "
                              f"{path}'s range {{{kind}: [{lo}, {hi}]}}: a range draws any value between its "
                              f"ends; {hint})") from None


#: config keys a search sets in every trial, and what sets them: a space giving one would be overwritten without
#: a word (``SearchSpace.set_by_search``; a trial's device is its GPU share's, ``gantune.devices.trial_device``)
SEARCH_SETS = {"train.steps": "search.max_steps", "eval.every": "search.eval_every",
               "eval.quick_every": "search.quick_every", "health.objective": "search.objective",
               "health.mode": "search.direction", "train.device": "the GPU share: search.resources.gpu"}


def check_search_owned(paths: list[str], where: str) -> None:
    """Refuse the ``SEARCH_SETS`` keys among ``paths``, all in one line (a trial config copied into a space
    holds several)."""
    if owned := [p for p in paths if p in SEARCH_SETS]:
        these = "these" if len(owned) > 1 else "this"
        raise ConfigError(f"{where}{', '.join(f'{p} (set by {SEARCH_SETS[p]})' for p in owned)}: a search sets "
                          f"{these} in every trial; remove {'them' if len(owned) > 1 else 'it'} from the space")


def walk(raw: dict[str, Any], source: str) -> dict[str, Spec]:
    leaves: dict[str, Spec] = {}
    check_search_owned([f"{section}.{key}" for section, body in raw.items() if isinstance(body, dict)
                        for key in body], f"{source}: ")
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
    on in a trial when any of its leaves is set (a ``when`` can switch them all off: then it stays null); given
    empty (``progressive: {}``), it is on with its defaults in every trial, as in a trial config."""
    for key, value in body.items():
        path = f"{section}.{key}"
        if not isinstance(key, str) or "." in key:  # ``optim: {optim.lr_g: ...}`` failed a lookup (a traceback);
            # ``progressive.start`` beside ``progressive: {start: ...}`` replaced it without a word
            cls = SECTIONS.get(section) or SUBSECTIONS[section]
            fields = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
            raise ConfigError(f"{source}: {path}: unknown key (a key inside a section is one name, a subsection a "
                              f"mapping; the {section} section has: {fields})")
        if path in SUBSECTIONS and isinstance(value, dict) and not _is_spec(value):
            if not value:  # on with its defaults, as in a trial config (walked, it had no leaf: off in every trial)
                leaves[path] = ValueSpec(value={})
            _walk_section(path, value, source, leaves)
            continue
        if isinstance(value, dict) and not _is_spec(value):  # no key takes a mapping: a range whose kind is
            _check_key(path, source)  # misspelt ({flaot: [...], log: true}) was refused as "a valid number"
            parse_spec(value, source, path)
        leaves[path] = parse_spec(value, source, path) if _is_spec(value) else ValueSpec(value=value)
        _check_leaf(path, leaves[path], source)


#: what a sampler does not model, by why: Optuna hands those keys to its random sampler (and gantune silences its
#: per-trial warning); CMA-ES models numbers only, and these model only the keys every trial samples
_UNMODELLED: dict[str, Callable[[Spec], str | None]] = {
    "cmaes": lambda s: "categorical" if isinstance(s, CategoricalSpec) else "behind a when" if s.when else None,
    "qmc": lambda s: "behind a when" if s.when else None,
    "gp": lambda s: "behind a when" if s.when else None,
}


#: the samplers that model the results of ended trials (QMC's sequence needs none)
_MODELLING = ("tpe", "gp", "cmaes")


def unmodelled(settings: SearchSettings, leaves: dict[str, Spec], params: dict[str, Spec], source: str,
               chosen: bool = True) -> list[str]:
    """A sentence when the space's sampler draws some sampled keys at random in every trial, for a warning; under
    PBT, when the space chose (``chosen``) a sampler that models results: PBT starts its whole population before
    any member ends, so each member is a random draw (with the same seed, TPE's draws are random search's)."""
    if settings.pruning.scheduler == "pbt" and chosen and settings.sampler in _MODELLING:
        return [f"{source}: sampler {settings.sampler} models the trials that have ended, and PBT starts every member "
                "before any ends: each member is a random draw (PBT's explore does the searching); sampler: random "
                "says so"]
    why = _UNMODELLED.get(settings.sampler)
    sampled = {k: s for k, s in {**params, **leaves}.items() if isinstance(s, (FloatSpec, IntSpec, CategoricalSpec))}
    left = [f"{k} ({r})" for k, s in sampled.items() if why and (r := why(s))]
    if not left:
        return []
    shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    return [f"{source}: sampler {settings.sampler} leaves {shown} to a random draw in each trial; sampler: tpe "
            "models every key"]


#: the ``search.pruning`` keys only one scheduler reads
_SCHEDULER_KEYS = {"asha": ("asha", "grace_evals", "reduction_factor", "noise_aware", "noise_margin"), "pbt": ("pbt",)}


def check_scheduler_keys(search: Any, source: str) -> None:
    """Refuse ``search.pruning`` keys the chosen scheduler does not read: ``pbt: {...}`` without ``scheduler: pbt``
    ran ASHA, and ``grace_evals`` under PBT was read by nothing, both without a word. (Checked on the file's own
    keys: the validated settings list every key, set or not.)"""
    pruning = search.get("pruning") if isinstance(search, dict) else None
    if not isinstance(pruning, dict):
        pruning = {}
    chosen = pruning.get("scheduler", "asha")
    if chosen == "pbt" and search.get("concurrency"):  # dropped without a word, as --concurrent was (a study
        # stored before this refusal keeps its value: its settings are read again by export, report and review)
        raise ConfigError(f"{source}: search.concurrency: PBT starts its whole population at once (the resources "
                          "decide how many train together); leave it out")
    for other, keys in _SCHEDULER_KEYS.items():
        if other != chosen and (unread := [k for k in keys if k in pruning]):
            fix = f"set scheduler: {other}, or remove {'it' if len(unread) == 1 else 'them'}" if other == "pbt" \
                else f"remove {'it' if len(unread) == 1 else 'them'}"
            raise ConfigError(f"{source}: search.pruning: {', '.join(unread)}: read by scheduler: {other} only, and "
                              f"this space's scheduler is {chosen}{'' if 'scheduler' in pruning else ' (the default)'}"
                              f": {fix}")
    # ASHA's keys beside asha: false, the noise margin without noise_aware: read by nothing, without a word (a
    # key at its default is no choice: noise_aware: false there is what it says)
    fields = Pruning.model_fields
    given = {k for k, v in pruning.items() if k not in fields or v != fields[k].default}
    if pruning.get("asha") is False and (unread := [k for k in _SCHEDULER_KEYS["asha"][1:] if k in given]):
        raise ConfigError(f"{source}: search.pruning: {', '.join(unread)}: read by ASHA, which asha: false turns "
                          f"off: remove {'it' if len(unread) == 1 else 'them'}")
    if "noise_margin" in given and not pruning.get("noise_aware"):
        raise ConfigError(f"{source}: search.pruning: noise_margin: read with noise_aware: true only: set it, or "
                          "remove noise_margin")


def check_repeat_owned(settings: SearchSettings, leaves: dict[str, Spec], source: str) -> None:
    """Under ``pruning.noise_aware`` the search sets ``eval.repeat`` in every trial: a space's or
    ``search.defaults``' own value was overwritten without a word (and a sampled one recorded as drawn)."""
    if settings.pruning.noise_aware:
        for where, paths in (("", leaves), ("search.defaults.", settings.defaults)):
            if "eval.repeat" in paths:
                raise ConfigError(f"{source}: {where}eval.repeat: search.pruning.noise_aware sets it in every trial "
                                  "(each evaluation is measured twice); remove it from the space")


def check_search_defaults(defaults: dict[str, Any], source: str) -> None:
    """``search.defaults`` holds fixed values of known config keys, checked like a space's own fixed leaves."""
    check_search_owned(list(defaults), f"{source}: search.defaults: ")
    for path, value in defaults.items():
        where = f"search.defaults.{path}"
        if path not in all_schema_paths():
            raise ConfigError(f"{source}: {where}: unknown config key (expected a dotted path such as optim.ema)")
        if isinstance(value, dict):
            sub = [k for k in value if f"{path}.{k}" in all_schema_paths()] if path in SUBSECTIONS else []
            raise ConfigError(f"{source}: {where}: expected a fixed value " + (
                f"(name each key of {path}: {path}.{sub[0]}: ...)" if sub else
                "(a search range belongs in the space)"))
        try:
            _check_leaf(path, ValueSpec(value=value), source)
        except ConfigError as err:  # name the setting the value came from, not a leaf of the space
            raise ConfigError(str(err).replace(f"{source}: ", f"{source}: search.defaults: ", 1)) from None


def unread_defaults(defaults: dict[str, Any], leaves: dict[str, Spec]) -> list[str]:
    """A note for each ``search.defaults`` key the space sets in every trial (a leaf without a ``when``): the
    space's value wins, so the default is never read, and it was dropped without a word. The built-in defaults
    (``SEARCH_DEFAULTS``) are not the user's to drop."""
    notes = [f"search.defaults.{path}: the space sets {path} in every trial (no `when` switches it off), so this "
             "default is never read; remove it, or give the leaf a `when`" for path, value in defaults.items()
             if path in leaves and leaves[path].when is None and SEARCH_DEFAULTS.get(path, _UNSET) != value]
    for path in defaults:  # a key of a subsection that is off (null) unless the space switches it on
        parent = path.rpartition(".")[0]
        if parent in SUBSECTIONS and path not in leaves and schema_default(parent, defaults) is None and not any(
                leaf == parent or leaf.startswith(f"{parent}.") for leaf in leaves):
            notes.append(f"search.defaults.{path}: no trial of this space switches {parent} on, so this default is "
                         f"never read (it applies in the trials where {parent} is on)")
    return notes


_UNSET = object()


def expressions(leaves: dict[str, Spec], params: dict[str, Spec]) -> Iterator[tuple[str, str, str]]:
    """Each condition and expression of the space, as (path, ``when`` or ``expr``, text)."""
    for path, spec in [*params.items(), *leaves.items()]:
        for kind, text in (("when", spec.when), ("expr", spec.expr if isinstance(spec, ExprSpec) else None)):
            if text is not None:
                yield path, kind, text


def check_names(leaves: dict[str, Spec], params: dict[str, Spec], source: str) -> list[tuple[str, str, str]]:
    """Every name an expression or condition reads exists; every free parameter is read by one (a parameter
    nothing reads would be sampled, stored and searched over for nothing). Returns (path, ``when`` or ``expr``,
    sentence) for each test of a name against a literal it never takes (its fixed value or choices): a typo
    (``'wgangp'``) switches a leaf off in every trial, or on in every one, but a leaf kept for choices the space
    has dropped does the same, so it is said, not refused."""
    known = set(leaves) | set(params) | {p for p in all_schema_paths()}
    values = {path: spec.choices if isinstance(spec, CategoricalSpec) else [spec.value]
              for path, spec in [*params.items(), *leaves.items()]
              if isinstance(spec, (CategoricalSpec, ValueSpec)) and spec.when is None}
    read: set[str] = set()
    notes: list[tuple[str, str, str]] = []
    choices = {path: spec.choices for path, spec in [*params.items(), *leaves.items()]
               if isinstance(spec, CategoricalSpec) and len(spec.choices) > 1}
    for path, kind, text in expressions(leaves, params):
        try:
            expr = Expr(text)
        except ExprError as err:
            raise ConfigError(f"{source}: {path}.{kind}: {err}") from None
        read |= set(expr.names)
        for name in expr.truth_tests(tested=kind == "when"):
            # ``8 if wide else 4`` with wide in ['yes', 'no']: 8 in every trial, whichever was drawn
            if name in choices and len(truths := {bool(c) for c in choices[name]}) == 1:
                raise ConfigError(f"{source}: {path}.{kind}: {expr.shown!r} tests {name} as true or false, and "
                                  f"each of its choices ({', '.join(map(repr, choices[name]))}) is "
                                  f"{'true' if truths.pop() else 'false'} (a text that is not empty is true "
                                  f"whatever it says): compare it, e.g. {name} == {choices[name][0]!r}")
        for name in expr.names:
            if name not in known:
                raise ConfigError(f"{source}: {path}.{kind}: unknown name {name!r} (use a dotted config path "
                                  "such as optim.lr_g or a parameter declared under search.params)")
        # each literal of a list too: ``in ['wgan', 'wgan_gp']`` left the wgan-gp trials out without a word
        notes += [(path, kind, f"{source}: {path}.{kind}: {name} is never {lit!r} (its values: "
                               f"{', '.join(map(repr, values[name]))}); a typo?")
                  for name, literals in expr.literal_tests() if name in values
                  for lit in dict.fromkeys(literals) if lit not in values[name]]
    if unread := [name for name in params if name not in read]:
        raise ConfigError(f"{source}: search.params.{unread[0]}: no expression or condition reads it (a free "
                          "parameter only matters through one, e.g. lr_d: {expr: \"optim.lr_g * " + unread[0] + "\"})")
    return notes


#: keys outside ``data`` and ``eval`` that change the metric set (a conditional run adds the conditional metric)
_PROBED = ("model.conditional",)
#: ``data`` keys only training reads (what D sees): searched, they leave what an evaluation needs and reports
#: known (``gantune init``'s image space searches ``augment``, and that switched every load-time check off)
_TRAINING_ONLY = ("data.augment", "data.augment_p", "data.ada_target", "data.ada_kimg")


#: how a metric's better side reads, and the direction that searches for it
_SIDES = {"max": ("higher", "maximize"), "min": ("lower", "minimize")}


#: the most combinations of sampled ``data``/``eval`` values ``possible_sections`` tries (beyond: unchecked)
MAX_COMBINATIONS = 256


def possible_sections(leaves: dict[str, Spec], source: str, defaults: dict[str, Any] | None = None
                      ) -> list[tuple[str, TrialConfig]] | None:
    """Each trial config of the ``data`` and ``eval`` sections (and the ``_PROBED`` keys) the space's trials can
    have, with what picks it out (``data.name "ring8"``, ``""`` where nothing is sampled): every fixed and
    categorical value, a range's two ends, and the default a ``when`` falls back on where the combination can make
    it false (``metrics: {value: [fid, kid], when: "data.name == 'stacked_digits'"}`` pairs ``[fid, kid]`` with
    stacked digits only; a condition on a range or a free parameter can go either way). ``None`` where an
    expression sets one of them (known only trial by trial) or past ``MAX_COMBINATIONS``; a combination the trial
    config refuses is left out (a trial with it fails on that, in one line)."""
    base: dict[str, dict[str, Any]] = {"data": {}, "eval": {}}
    for path, value in (defaults or {}).items():
        section, key = path.split(".", 1)
        if section in base or path in _PROBED:
            base.setdefault(section, {})[key] = value
    checked = [path for path in leaves if (path.split(".", 1)[0] in ("data", "eval") or path in _PROBED)
               and path not in _TRAINING_ONLY]
    if any(isinstance(leaves[p], ExprSpec) for p in checked):
        return None
    # the fixed and categorical keys their conditions read: enumerated too, so that each condition is decided
    read = {n for p in checked if leaves[p].when for n in Expr(str(leaves[p].when)).names}
    readers = [n for n in sorted(read - set(checked)) if isinstance(leaves.get(n), (ValueSpec, CategoricalSpec))]
    options: dict[str, list[Any]] = {}
    on: dict[str, set[str]] = {}  # the values a leaf has where its condition holds, by repr
    for path in [*checked, *readers]:
        spec = leaves[path]
        can: list[Any] = [spec.value] if isinstance(spec, ValueSpec) else list(spec.choices) if isinstance(
            spec, CategoricalSpec) else list(spec.range) if isinstance(spec, (FloatSpec, IntSpec)) else []
        on[path] = {repr(v) for v in can}
        if spec.when is not None:
            can.append(schema_default(path, defaults))
        options[path] = list({repr(v): v for v in can}.values())
    if math.prod(len(v) for v in options.values()) > MAX_COMBINATIONS:
        return None
    found: list[tuple[str, TrialConfig]] = []
    for combo in itertools.product(*options.values()):
        picked = dict(zip(options, combo, strict=True))
        if not _consistent(picked, on, leaves, defaults):
            continue
        raw = {section: dict(given) for section, given in base.items()}
        for path in checked:
            section, key = path.split(".", 1)
            raw.setdefault(section, {})[key] = picked[path]
        try:
            cfg = config_from_dict(raw, source)
        except ConfigError:
            continue
        found.append((", ".join(f"{path} {json.dumps(picked[path])}" for path in checked
                                if len(options[path]) > 1), cfg))
    return found


class _Undecided(Exception):
    """A condition reads a value the enumeration does not fix (a range, a free parameter, an expression)."""


def _consistent(values: dict[str, Any], on: dict[str, set[str]], leaves: dict[str, Spec],
                defaults: dict[str, Any] | None) -> bool:
    """Whether each enumerated leaf with a ``when`` holds, in ``values``, what its condition gives there: one of its
    own values where the condition holds, the default where it does not (either, where it cannot be decided)."""
    def lookup(name: str) -> Any:
        if name in values:
            return values[name]
        spec = leaves.get(name)
        if isinstance(spec, ValueSpec) and spec.when is None:
            return spec.value
        if spec is not None or name not in all_schema_paths() or any(p.startswith(f"{name}.") for p in leaves):
            raise _Undecided(name)  # sampled, a free parameter, or a subsection the space sets keys of
        return schema_default(name, defaults)

    for path, value in values.items():
        when = leaves[path].when
        if when is None:
            continue
        try:
            holds = bool(Expr(when)(lookup))
        except (_Undecided, ArithmeticError, TypeError, ValueError):
            continue
        fallback = repr(schema_default(path, defaults))
        if (repr(value) not in on[path]) if holds else (repr(value) != fallback):
            return False
    return True


def check_objectives(settings: SearchSettings, sections: list[tuple[str, TrialConfig]] | None, source: str) -> None:
    """Each objective must be a value the evaluations of every trial of this space report (a typo would run the
    whole budget; a sampled ``data.name`` whose other dataset has not the metric, half of it). An objective that is
    better higher (coverage, the Inception Score) must be maximised, one better lower (FID) minimised, whatever
    the sections: ``objective: [fid, coverage]`` with one ``direction: minimize`` would search for collapse on its
    second axis.
    """
    reported = [(picked, metric_keys(probe)) for picked, probe in sections or []]
    for picked, probe in sections or []:
        if idle := idle_quick_checks(probe, settings.quick_every, "search.quick_every"):
            raise ConfigError(f"{source}: {idle}" + (f" (with {picked})" if picked else ""))
    for objective in settings.objectives:
        missed = [(picked, keys) for picked, keys in reported if objective not in keys]
        if missed:
            picked, keys = missed[0]
            where = f"with {picked}" if len(missed) < len(reported) else "by this space's evaluations"
            raise ConfigError(f"{source}: search.objective: {objective!r} is not reported {where} (available"
                              f"{' there' if len(missed) < len(reported) else ''}: "
                              f"{', '.join(keys) or 'none: eval.metrics is empty'})")
    own = [better(o) for o in settings.objectives]
    if settings.direction is None:  # left out, and some objective has no better side to default to
        blind = next(o for o, side in zip(settings.objectives, own, strict=True) if side is None)
        raise ConfigError(f"{source}: search.direction: {blind!r} has no better side gantune knows (the diversity "
                          "ratio and density are best near the data's 1): give direction: minimize or maximize"
                          + (", one per objective" if len(own) > 1 else ""))
    for objective, direction, side in zip(settings.objectives, settings.directions, own, strict=True):
        if side is not None and mode_of(direction) != side:
            want = [_SIDES[s][1] if s else d for s, d in zip(own, settings.directions, strict=True)]
            fix = want[0] if len(want) == 1 else f"[{', '.join(want)}]"
            raise ConfigError(f"{source}: search.direction: {objective!r} is better {_SIDES[side][0]}: {direction} "
                              f"would search for the worst (direction: {fix}, or leave direction out: each objective "
                              "then goes its own way)")


def possible_data(leaves: dict[str, Spec], defaults: dict[str, Any] | None = None) -> list[Any]:
    """The distinct ``DataConfig``s the space's trials can have, as far as their fixed and categorical values
    (and the defaults an unset key or a ``when`` falls back on: ``search.defaults``', else the schema's) say. A
    ``download`` it samples otherwise counts as true (nothing to check); another sampled key reads its default;
    combinations the trial config would refuse are left to it."""
    given = {path.split(".", 1)[1]: value for path, value in (defaults or {}).items() if path.startswith("data.")}
    options: dict[str, list[Any]] = {key: [value] for key, value in given.items()}
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
        if values and spec.when is not None:  # off in some trials: the default stands there
            values.append(schema_default(path, defaults))
        if values:
            options[key] = values
        else:
            options.pop(key, None)  # sampled: its default stands for it
    found: list[Any] = []
    keys = list(options)
    for combo in itertools.product(*options.values()):
        try:
            cfg = DataConfig(**dict(zip(keys, combo, strict=True)))
        except (ValidationError, TypeError):
            continue
        if cfg not in found:
            found.append(cfg)
    return found


def check_data_of(datas: list[Any], sections: list[tuple[str, TrialConfig]] | None, source: str) -> None:
    """Data that is not there (or, for a conditional trial, has no classes) fails here, once, rather than in every
    trial of a search that then exits 0. ``datas``: the space's ``possible_data``."""
    with listed_once():  # each folder walked once for both checks
        _check_data_of(datas, sections, source)


def _check_data_of(datas: list[Any], sections: list[tuple[str, TrialConfig]] | None, source: str) -> None:
    for cfg in datas:
        try:
            check_data(cfg)
        except DataError as err:
            raise DataError(f"{source}: {err}") from None
    for picked, probe in sections or []:  # a conditional trial on a folder without class subfolders failed
        try:
            check_classes(probe)
            check_real_count(probe)  # metrics on a folder of one image: every trial failed
        except GantuneError as err:
            raise ConfigError(f"{source}: {err}" + (f" (with {picked})" if picked else "")) from None


def check_init_files(leaves: dict[str, Spec], source: str, defaults: dict[str, Any]) -> None:
    """Each file ``model.init_from`` can name holds gantune's weights (read here, once): a file that is there but
    is not weights failed every trial of a search that then exited 0. Whether they fit the nets is each trial's
    check: the model keys may be sampled."""
    spec = leaves.get("model.init_from")
    can = [] if spec is None else [spec.value] if isinstance(spec, ValueSpec) else \
        list(spec.choices) if isinstance(spec, CategoricalSpec) else []
    if spec is None or spec.when is not None:
        can.append(defaults.get("model.init_from"))
    for path in dict.fromkeys(v for v in can if isinstance(v, str)):
        try:
            read_init(path)
        except GantuneError as err:
            raise ConfigError(f"{source}: {err}") from None


def check_weights_of(sections: list[tuple[str, TrialConfig]] | None, source: str) -> None:
    """Inception weights the space's evaluations need and that are not on disk fail here, once, rather than in
    every trial (checked for each combination of the data and eval sections, as the objectives are)."""
    for picked, probe in sections or []:
        if missing := missing_weights(probe):
            raise ConfigError(f"{source}: {missing}" + (f" (with {picked})" if picked else ""))


#: leaves holding a file or folder a trial reads itself: made absolute at load, since Ray runs each trial in a
#: folder of its own, where a path relative to the search's working directory would name nothing
TRIAL_FILES = ("model.init_from", "data.path", "eval.inception_weights")


def absolute(value: Any) -> Any:
    """A path given relative to where the search started, made absolute (a str; anything else as it is)."""
    return str(Path(value).expanduser().absolute()) if isinstance(value, str) else value


def absolute_files(leaves: dict[str, Spec], defaults: dict[str, Any]) -> None:
    """The ``TRIAL_FILES`` of the space and of its ``search.defaults``, made absolute in place (an expression's
    value, known trial by trial, is made absolute as it is drawn: ``SearchSpace.sample``)."""
    for path in TRIAL_FILES:
        if path in defaults:
            defaults[path] = absolute(defaults[path])
        spec = leaves.get(path)
        if isinstance(spec, ValueSpec):
            leaves[path] = spec.model_copy(update={"value": absolute(spec.value)})
        elif isinstance(spec, CategoricalSpec):
            leaves[path] = spec.model_copy(update={"choices": [absolute(c) for c in spec.choices]})


def absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """``absolute_files`` of a trial config (``raw``, a dict, changed in place): what ``gantune train`` writes to its
    config.yaml names the same files from any folder (a resume from another failed, "image folder imgs does not
    exist"), as a search's trials' configs do."""
    for path in TRIAL_FILES:
        section, key = path.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw[section][key] = absolute(raw[section][key])  # a str made absolute; None and the rest as they are
    return raw


def idle_on_cpu(leaves: dict[str, Spec]) -> list[str]:
    """A sentence for each CUDA-only ``train`` key (``gantune.gan.speed``) the space searches, for a search whose
    trials run on the CPU: there it does nothing, so the search spends trials telling apart draws that train
    alike, and its ranking of the key is noise."""
    return [f"{path} is searched, but this search's trials run on the CPU, where it does nothing (CUDA only): its "
            "draws train alike; fix its value, or give the trials a GPU (search.resources.gpu)"
            for path, spec in leaves.items()
            if path in {f"train.{key}" for key in CUDA_ONLY}
            and not (isinstance(spec, ValueSpec) and spec.when is None)]
