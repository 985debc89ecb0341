"""How a trial's values were measured, and which trials may be ranked together.

An FID on 1,000 samples against a 360-image held-out reference and one on 500 samples, other extractor weights or
the training images are different numbers: a search resumed with other evaluation settings, or a study whose
trials were measured differently, must not rank them together. Each trial records ``Evaluator.provenance`` (as the
Optuna user attribute ``provenance``, in metrics.jsonl and as MLflow params); ``comparable`` keeps the trials
measured like the newest one and says in one line how the others differ. Knows no Optuna, Ray or MLflow: it reads
``number`` and ``user_attrs`` of whatever trials it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

#: the report field that carries a trial's provenance to the driver (JSON text), and its Optuna user attribute
KEY, ATTR = "gantune_provenance", "provenance"
#: what identifies how a value was measured (the floor follows from them and the data)
IDENTITY = ("extractor", "weights", "n", "reference_n", "reference", "resolution")
#: the data a trial trained on and was scored against (recorded since 2026-12-03: a trial without it is taken
#: to have the newest trial's data, as every trial was before)
DATA = "data"


class _Trial(Protocol):
    @property
    def number(self) -> int: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=_Trial)


def of(trial: _Trial) -> dict[str, Any]:
    """The trial's provenance ({} for a trial that never evaluated, or was run before it was recorded)."""
    value = trial.user_attrs.get(ATTR)
    return value if isinstance(value, dict) else {}


def identity(provenance: dict[str, Any], data: Any = None) -> tuple[Any, ...] | None:
    """What two trials measured alike share (``data``: the data of a trial recorded without it)."""
    return (*(provenance.get(k) for k in IDENTITY), provenance.get(DATA, data)) if provenance else None


def floor(trial: _Trial) -> dict[str, float]:
    """The real-vs-real value of each metric the trial was measured with ({} when not recorded)."""
    return dict(of(trial).get("floor") or {})


def measured_on(provenance: dict[str, Any]) -> str | None:
    """The data a trial was measured on as ``gantune.data.measured_on`` words it (``grid25``, ``digits at 16 px``);
    ``None`` where it was not recorded."""
    if DATA not in provenance:
        return None
    resolution = provenance.get("resolution")
    return str(provenance[DATA]) + (f" at {resolution} px" if resolution else "")


def floor_scored(provenance: dict[str, Any]) -> str:
    """What the floor scored, where that is not ``n`` training samples as a trial's values are: the training data
    holds fewer (digits' 1,437 under ``eval.n_samples`` 2,500), so it sits at another N than the values beside it."""
    if "floor_n" not in provenance:
        return "training data scored like samples"
    return f"all {provenance['floor_n']} training samples, fewer than the {provenance.get('n')} a trial scores"


def floor_text(provenance: dict[str, Any]) -> str:
    """The floor as a line says it, or why there is none (``Evaluator._floor``)."""
    values = provenance.get("floor") or {}
    if values:
        return (f"real-vs-real floor ({floor_scored(provenance)}) "
                + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
    if "floor_n" in provenance:
        return f"no real-vs-real floor (the training data holds {provenance['floor_n']} samples, too few to score)"
    return (f"no real-vs-real floor (the reference is the training images, and fewer than {provenance.get('n')} "
            "lie outside it)")


def describe(provenance: dict[str, Any]) -> str:
    """One line on how values were measured, e.g. for a summary or a report."""
    p = provenance
    return (f"{p['n']} samples vs a {p['reference_n']}-sample {p['reference']} reference, {p['extractor']} features "
            f"(weights {p['weights']})" + (f", {p['resolution']} px" if p.get("resolution") else ""))


def _numbers(trials: Sequence[_Trial]) -> str:
    return trial_numbers(t.number for t in trials)


def trial_numbers(numbers: Iterable[int]) -> str:
    """``trial 3`` or ``trials 0, 1, 2`` (the first six, then an ellipsis), in order: how a line names trials."""
    nums = sorted(numbers)
    shown = ", ".join(str(n) for n in nums[:6])
    return f"trial{'s' if len(nums) > 1 else ''} {shown}{', …' if len(nums) > 6 else ''}"


def _differences(ours: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """How the others differ from ours, over all of them (it named the first one's way only: trials 0 and 2 were
    "data digits max_images 200 vs 1000" where trial 2 differed in resolution)."""
    recorded = [p for p in others if p]
    if not ours or not recorded:
        return "no recorded provenance" if not recorded else "the others have no recorded provenance"
    parts = []
    for k in (*IDENTITY, DATA):
        theirs = dict.fromkeys(str(p.get(k)) for p in recorded if (k != DATA or DATA in p) and p.get(k) != ours.get(k))
        if theirs:
            parts.append(f"{k} {' / '.join(theirs)} vs {ours.get(k)}")
    return ", ".join(parts) + ("; some have no recorded provenance" if len(recorded) < len(others) else "")


def reference(trials: Sequence[_Trial]) -> dict[str, Any]:
    """The provenance ``trials`` are ranked by: the newest one that recorded how ({} when none did)."""
    recorded = [t for t in trials if of(t)]
    return of(max(recorded or trials, key=lambda t: t.number)) if trials else {}


def otherwise(ours: dict[str, Any], trial: _Trial) -> str | None:
    """How ``trial`` was measured unlike ``ours`` (``reference``), e.g. ``n 500 vs 1000``; None when alike."""
    if not ours or identity(of(trial), ours.get(DATA)) == identity(ours):  # no reference: nothing to differ from
        return None
    return _differences(ours, [of(trial)])


def comparable(trials: Sequence[T]) -> tuple[list[T], str | None]:
    """The trials measured like the newest one that recorded how (all of them when none did), and one line
    naming the others and how they differ (None when every trial was measured alike)."""
    ours = reference(trials)
    kept: list[T] = []
    others: list[T] = []
    for t in trials:
        (kept if otherwise(ours, t) is None else others).append(t)
    if not others:
        return kept, None
    were = "were" if len(others) > 1 else "was"
    return kept, (f"{_numbers(others)} {were} measured differently ({_differences(ours, [of(t) for t in others])}): "
                  f"ranking {_numbers(kept)} only")
