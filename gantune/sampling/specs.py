"""The leaves of a search space: a fixed value or a range (float, int, categorical), an expression, each with an
optional ``when``; and what a config key is when no leaf sets it (the schema's defaults)."""

from __future__ import annotations

import dataclasses
import decimal
import math
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from gantune.config import SECTIONS, SUBSECTIONS, SwitchChecked, TrialConfig, switch_problem
from gantune.events import short_repr
from gantune.sampling.expr import int_shown

_FORBID = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
Scalar = str | int | float | bool | None


class _Leaf(SwitchChecked):
    model_config = _FORBID
    when: str | None = None


#: the most steps a stepped range may hold: beyond it a float range's steps are below its bounds' precision
MAX_STEPS = 2**53


def _whole_steps(lo: float, hi: float, step: float) -> None:
    """A range that is not a whole number of steps long would lose its top (Optuna lowers ``high`` to the last
    step, with a warning on every trial): most often a typo in the step. Integers are checked exactly (a float
    quotient of 310-digit bounds overflowed, a traceback)."""
    n: float
    if isinstance(lo, int) and isinstance(hi, int) and isinstance(step, int):
        whole, n = (hi - lo) % step == 0, (hi - lo) // step
    else:
        n = (hi - lo) / step  # finite bounds: at most 3.6e308 / step, so inf only for a step near 1e-308
        whole = n <= MAX_STEPS and abs(n - round(n)) <= 1e-9 * max(1.0, abs(n))
    if n > MAX_STEPS:
        raise ValueError(f"range [{_shown(lo)}, {_shown(hi)}] holds more than 2**53 steps of {_shown(step)}")
    if not whole:
        raise ValueError(f"range [{_shown(lo)}, {_shown(hi)}] is not a whole number of steps of {_shown(step)}")


def _shown(x: float) -> str:
    """``x`` for a message: a float in ``g`` form, an integer as expressions show one (``:g`` of a 310-digit one
    overflows)."""
    return int_shown(x) if isinstance(x, int) else f"{x:g}"


def _numbers(bounds: Any) -> Any:
    """A range's bounds are numbers: pydantic reads ``[true, 5]`` as [1, 5] and ``["1e-4", 1e-3]`` as numbers
    (``switch_problem`` does not look into a list)."""
    for b in bounds if isinstance(bounds, (list, tuple)) else ():
        if problem := switch_problem(float, b):
            raise ValueError(f"a range's bounds must be numbers, {problem.removeprefix('must be a number, ')}")
    return bounds


class FloatSpec(_Leaf):
    range: tuple[float, float] = Field(alias="float")
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    _bounds = field_validator("range", mode="before")(_numbers)

    @model_validator(mode="after")
    def _check(self) -> FloatSpec:
        lo, hi = self.range
        if lo >= hi:
            raise ValueError(f"float range [{lo}, {hi}] needs low < high")
        if not math.isfinite(hi - lo):  # Optuna's draw overflowed: numpy's warning, then "Range exceeds ..."
            raise ValueError(f"float range [{lo:g}, {hi:g}] is wider than a float can hold (its width overflows)")
        if self.log and lo <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.step is not None:
            _whole_steps(lo, hi, self.step)
        return self


class IntSpec(_Leaf):
    range: tuple[int, int] = Field(alias="int")
    log: bool = False
    step: int = Field(default=1, ge=1)

    _bounds = field_validator("range", mode="before")(_numbers)

    @model_validator(mode="after")
    def _check(self) -> IntSpec:
        lo, hi = self.range
        if lo > hi:
            raise ValueError(f"int range [{lo}, {hi}] needs low <= high")
        if self.log and (lo <= 0 or self.step != 1):
            raise ValueError("a log int range needs low > 0 and step 1")
        _whole_steps(lo, hi, self.step)
        return self


class CategoricalSpec(_Leaf):
    choices: list[Scalar] = Field(alias="categorical", min_length=1)

    @field_validator("choices", mode="before")
    @classmethod
    def _single_values(cls, v: Any) -> Any:
        """A list or mapping among the choices was refused as one problem per type it is not (12 of them for
        ``[[], [translation]]``, the natural way to search augment policies): one sentence that says what works."""
        if isinstance(v, list) and (odd := next((c for c in v if isinstance(c, (list, dict))), None)) is not None:
            raise ValueError(f"a choice must be a single value (text, a number, true/false or null), not "
                             f"{short_repr(odd)}; a key that takes a list may read it from text (data.augment: "
                             "\"translation,cutout\")")
        if isinstance(v, list) and (bad := next((c for c in v if isinstance(c, float) and not math.isfinite(c)),
                                                None)) is not None:  # four problems, one per type it is not
            raise ValueError(f"a choice must be a finite number, not {bad!r}; where .inf switches a check off, "
                             "a number far beyond its range does the same (1.0e+9)")
        return v

    @model_validator(mode="after")
    def _once(self) -> CategoricalSpec:
        seen: set[str] = set()
        for choice in self.choices:  # by repr: the same choice twice (equal ones: below)
            if repr(choice) in seen:
                raise ValueError(f"categorical choice {choice!r} is given twice (a search draws it as often as it "
                                 "is listed; list each once)")
            seen.add(repr(choice))
        for i, a in enumerate(self.choices):  # Optuna stores a choice by its index in the list, found with ==
            if (b := next((b for b in self.choices[:i] if b == a), None)) is not None:
                raise ValueError(f"categorical choices {b!r} and {a!r} are equal to Optuna, which records either as "
                                 f"the first ({b!r}): keep one")
        return self


class ExprSpec(_Leaf):
    expr: str


class ValueSpec(_Leaf):
    value: Any


SPEC_TYPES: dict[str, type[_Leaf]] = {"float": FloatSpec, "int": IntSpec, "categorical": CategoricalSpec,
                                      "expr": ExprSpec, "value": ValueSpec}
Spec = FloatSpec | IntSpec | CategoricalSpec | ExprSpec | ValueSpec


_DEFAULTS: dict[str, Any] = {}


def schema_default(path: str, defaults: dict[str, Any] | None = None) -> Any:
    """The value config key ``path`` (``optim.ema``, ``model.progressive.start``) has when the space does not set
    it: ``defaults``' (a search's ``search.defaults``) if it holds the key, else the schema's."""
    if defaults and path in defaults:
        return defaults[path]
    if not _DEFAULTS:
        for section, values in TrialConfig().to_dict().items():
            if isinstance(values, dict):
                _DEFAULTS.update({f"{section}.{k}": v for k, v in values.items()})
            else:
                _DEFAULTS[section] = values
        for sub, cls in SUBSECTIONS.items():  # a subsection's keys read the defaults it has once switched on
            _DEFAULTS.update({f"{sub}.{f.name}": getattr(cls(), f.name) for f in dataclasses.fields(cls)})
    return _DEFAULTS.get(path)


def all_schema_paths() -> list[str]:
    """Every config key a space or ``search.defaults`` may name, as a dotted path (subsections' keys included)."""
    return [f"{s}.{f.name}" for s, cls in {**SECTIONS, **SUBSECTIONS}.items() for f in dataclasses.fields(cls)]


#: the ``eval`` keys that decide what a value means (how many samples score it, in which features): a resumed search
#: must keep them, or its new trials' FIDs are ranked with values of another measure (FID falls with more samples)
MEASURE_KEYS = ("eval.n_samples", "eval.extractor")


def fixed_measure(leaves: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Each ``MEASURE_KEYS`` value every trial of a space measures with: a fixed leaf's, else (unset) the
    ``search.defaults``' or the schema's. A key drawn, computed or switched by a ``when`` is left out (unchecked,
    as data drawn from a range is)."""
    out: dict[str, Any] = {}
    for key in MEASURE_KEYS:
        spec = leaves.get(key)
        if spec is None:
            out[key] = schema_default(key, defaults)
        elif isinstance(spec, ValueSpec) and spec.when is None:
            out[key] = spec.value
    return out


def on_grid(value: float, low: float, step: float) -> float:
    """A stepped draw to the decimals its range is written in: Optuna computes ``low + k * step`` in binary
    floating point, and ``{float: [0, 0.9], step: 0.1}`` trained, logged and exported ``beta1: 0.6000000000000001``."""
    places = max(0, *(-int(decimal.Decimal(repr(float(x))).as_tuple().exponent) for x in (low, step)))
    return round(value, places)
