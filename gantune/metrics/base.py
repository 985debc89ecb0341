"""What metric families see, and the registry they are chosen from.

A family is built once per trial from the real reference (so real-only work, such as real statistics or k-NN
radii, is done once) and then scores each evaluation's fake samples.
"""

from __future__ import annotations

import contextlib
import difflib
import operator
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from gantune.registry import Registry
from gantune.rundir import cached

if TYPE_CHECKING:
    from gantune.config import TrialConfig


#: torch 2.9's per-backend float32 settings (``fp32_precision``), used where the process set them
_BACKENDS = ("cuda.matmul", "cudnn.conv", "mkldnn.matmul", "mkldnn.conv")


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """float32 products and convolutions in full float32 while metrics run, whatever the trial set for training
    (``train.tf32``, process-wide on a GPU): the feature nets and FID's and KID's float32 products. The distances
    are float64, which TF32 never touches; in float32 under TF32 ``cdist``'s product of ``[-2x, |x|^2, 1]`` would
    round |x|^2 (about 32 on grid25) to 1/32, an error in d^2 as large as the HQ radius^2 (0.0225):
    ``benchmarks/tf32_metrics.py``. Restored after, through the API the process used: torch 2.9's per-backend
    settings refuse to be read through the legacy ones once set (a plugin may set them)."""
    try:
        legacy: tuple[str, bool] | None = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    except RuntimeError:  # "mix of the legacy and new APIs"
        legacy = None
    knobs = [] if legacy is not None else [operator.attrgetter(name)(torch.backends) for name in _BACKENDS]
    kept = [knob.fp32_precision for knob in knobs]
    if legacy is not None:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
    for knob in knobs:
        knob.fp32_precision = "ieee"
    try:
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy[0])
            torch.backends.cudnn.allow_tf32 = legacy[1]
        for knob, value in zip(knobs, kept, strict=True):
            knob.fp32_precision = value


@dataclass
class Samples:
    """Samples with their features (and class logits when the extractor is a classifier), on the evaluation
    device: the same as the reference's, so a family computes where its real statistics already are."""

    x: torch.Tensor
    feats: torch.Tensor
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # the classes a conditional generator made them for (None otherwise)


@dataclass
class Reference(Samples):
    """The real side: fixed reference samples, plus the mixture definition for 2-D data.

    ``feats``, ``logits`` and ``means`` live on the evaluation device. ``derived`` keeps the real-only
    statistics a family needs (FID's mean and covariance root, k-NN radii) so that they are computed once per
    search, not once per trial: in memory for the trials a worker process runs, on disk under ``cache`` for
    the other processes.
    """

    means: torch.Tensor | None = None
    std: float = 0.0
    cache: Path | None = None
    depth: int = 1  # the extractor's ``depth``: classifications side by side in a sample's logits
    _derived: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def derived(self, name: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``compute()`` (real-only tensors) for this reference: from memory, the disk cache, else computed."""
        if name not in self._derived:
            value = compute() if self.cache is None or not ours(compute) else cached(
                self.cache.with_name(f"{self.cache.stem}-{name}.pt"), compute)
            self._derived[name] = {k: v.to(self.device) for k, v in value.items()}
        return self._derived[name]


Scorer = Callable[[Samples], dict[str, float]]


def ours(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is gantune's own code. What a plugin computes is not cached on disk: keyed by a name, an
    edited metric read its first version's real statistics and floor across searches, and its code has no
    version a key could follow into a search's worker processes (cloudpickled, or the worker's ``__main__``)."""
    return str(getattr(fn, "__module__", "") or "").startswith("gantune.")


def distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``x`` and ``y``, in float64: ``cdist`` forms |x|^2 + |y|^2 - 2xy,
    which in float32 cancels for near neighbours far from the origin (ring8's k-NN radii were up to 7% off,
    ``benchmarks/tf32_metrics.py``); float64 costs about 1.6x on a CPU, a fraction of a second."""
    return torch.cdist(x.double(), y.double())


@dataclass(frozen=True)
class CollapseSignal:
    """A reported value that, below its floor for ``health.patience`` checks in a row, means a collapse; above its
    ``ceiling`` (where it has one) for as long, a divergence: samples spread beyond the data."""

    key: str
    floor: str | float  # the name of a ``health`` setting (user-tunable), or a fixed number
    label: str  # what the verdict's reason calls it
    # (record key, health setting): counts below its floor only once that value reaches it, or when it reads 0
    gate: tuple[str, str] | None = None
    ceiling: str | float | None = None  # like ``floor``; None: no upper limit
    real: float | None = 1.0  # what real data reads: a rise past it is no progress (None: unknown, no cap)

    def __post_init__(self) -> None:
        """A setting's name is checked where the signal is made: misspelt, it passed until the first health check
        of a run, which then ended in a traceback with its folder half written."""
        from gantune.config import HealthConfig

        settings = [f.name for f in fields(HealthConfig)]
        named = [("floor", self.floor), ("ceiling", self.ceiling), ("gate", self.gate[1] if self.gate else None)]
        for what, value in named:
            if isinstance(value, str) and value not in settings:
                close = difflib.get_close_matches(value, settings, n=1)
                raise ValueError(f"CollapseSignal {self.key!r}: {what} {value!r} is not a health setting"
                                 + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + " (a number, or one of gantune.config.HealthConfig's fields)")


@dataclass(frozen=True)
class Family:
    """A metric family: ``build(reference) -> scorer``, the keys the scorer reports (what an objective may name),
    whether the cheap quick checks between full evaluations may run it, and its collapse signals.

    ``higher`` and ``lower``: the keys that are better higher or lower (an objective naming one is searched in that
    direction by default and refused in the other; a key in neither, a ratio best at the data's 1, has no default).
    ``one_sample``: it scores samples alone, not against the reference, so the reference samples have a value of
    their own (the held-out digits' Inception Score): the evaluator reports it as the real data's value.
    ``logits``: it reads the extractor's class logits (the Inception Score's posteriors): a config whose extractor
    gives none is refused at load. ``fits``: why the family cannot measure a config's data with its extractor
    (``None``: it can, or it is not known before the reference is built), asked at load: a search whose every
    trial would fail there is refused before it starts."""

    build: Callable[[Reference], Scorer]
    keys: tuple[str, ...]
    cheap: bool = False
    collapse: tuple[CollapseSignal, ...] = ()
    higher: tuple[str, ...] = ()
    one_sample: bool = False
    lower: tuple[str, ...] = ()
    logits: bool = False
    fits: Callable[[TrialConfig], str | None] | None = None

    def __post_init__(self) -> None:
        for key in self.keys:
            if not METRIC_KEY.fullmatch(key) or _not_a_clean_path(key):
                raise ValueError(f"metric key {key!r}: MLflow takes letters, digits, _ - . / : and spaces only, as a "
                                 "normal relative path (a search's tracking stopped at the first trial logging it)")
            if key in RESERVED_KEYS or key.startswith("repeat/"):
                raise ValueError(f"metric key {key!r}: a trial's record has its own {key!r} (reported beside it, the "
                                 "metric overwrote it: a run printed step -1 of 20)")
        for sig in self.collapse:  # one on a key the family does not report never fired, without a word
            if sig.key not in self.keys:
                raise ValueError(f"CollapseSignal {sig.key!r}: not one of the family's keys ({', '.join(self.keys)})")

    def checked(self, name: str, values: dict[str, Any]) -> dict[str, float]:
        """What the scorer returned, as numbers (a 0-d tensor read as one), each a key it declares: an undeclared
        one passed MLflow's check of the declared keys and stopped tracking mid-run, and a tensor ended the run
        in a traceback when the record was written, with its folder half made."""
        if not isinstance(values, dict):
            raise ValueError(f"metric {name!r} returned {type(values).__name__}, not a dict of its keys")
        if extra := [k for k in values if k not in self.keys]:
            raise ValueError(f"metric {name!r} reported {extra[0]!r}, which it does not declare (its keys: "
                             f"{', '.join(self.keys)})")
        out: dict[str, float] = {}
        for k, v in values.items():
            try:
                out[k] = float(v)
            except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of more than one value
                raise ValueError(f"metric {name!r}: {k} is {type(v).__name__}, not a number") from None
        return out

    def __call__(self, ref: Reference) -> Scorer:
        return self.build(ref)


#: the keys a trial's record holds beside the metrics: the step, the trainer's statistics, timing, what a search
#: adds (a metric reporting one replaced it)
RESERVED_KEYS = frozenset({"step", "wall_s", "steps_per_s", "eval_s", "samples", "objective", "objective_repeat",
                           "loss_d", "loss_g", "d_real", "d_fake", "d_win", "grad_norm_g", "grad_norm_d",
                           "augment_p"})

#: what a metric key may hold: MLflow's metric and param names (its ``_VALID_PARAM_AND_METRIC_NAMES``)
METRIC_KEY = re.compile(r"[\w.\- :/]+")


def _not_a_clean_path(key: str) -> bool:
    """MLflow's other rule for a name: a path already normal, not absolute, not above its root (``a//b``, ``/x``,
    ``./x`` and ``a/../b`` are refused)."""
    norm = posixpath.normpath(key)
    return norm != key or norm == "." or norm.startswith(("..", "/"))

FAMILIES: Registry[Family] = Registry("metric")


def family(name: str, keys: tuple[str, ...], cheap: bool = False, collapse: tuple[CollapseSignal, ...] = (),
           higher: tuple[str, ...] = (), one_sample: bool = False, lower: tuple[str, ...] = (), logits: bool = False,
           fits: Callable[[TrialConfig], str | None] | None = None
           ) -> Callable[[Callable[[Reference], Scorer]], Callable[[Reference], Scorer]]:
    """Register a metric family (decorator on its ``build(reference) -> scorer`` function)."""

    def add(build: Callable[[Reference], Scorer]) -> Callable[[Reference], Scorer]:
        entry = Family(build, keys, cheap, collapse, higher, one_sample, lower, logits, fits)
        for other in FAMILIES:  # a plugin's ``fid`` replaced the real FID in every record, without a word
            if other != name and (shared := set(keys) & set(FAMILIES.get(other).keys)):
                raise ValueError(f"metric {name!r}: key {sorted(shared)[0]!r} is metric {other!r}'s already")
        FAMILIES.add(name, entry)
        return build

    return add


def better(key: str) -> Literal["max", "min"] | None:
    """The direction in which ``key`` improves, as its family declares it (``None``: it declares neither)."""
    for name in FAMILIES:
        fam = FAMILIES.get(name)
        if key in fam.higher:
            return "max"
        if key in fam.lower:
            return "min"
    return None


#: the order the health monitor checks collapse signals in, so the verdict names the first that fires: coverage
#: of modes, classes and stacked-digit modes says what is missing; then sample spread, then recall. Other
#: families' signals follow, in the order they were registered.
COLLAPSE_ORDER = ("mode_coverage", "class_coverage", "stacked_coverage", "diversity", "recall")


def quick_keys() -> frozenset[str]:
    """The keys a quick check reports: the cheap families', under the names an evaluation gives them."""
    return frozenset(key for name in FAMILIES for key in FAMILIES.get(name).keys if FAMILIES.get(name).cheap)


def collapse_signals() -> list[CollapseSignal]:
    """Every registered family's collapse signals (what the health monitor watches), in ``COLLAPSE_ORDER``."""
    signals = [signal for name in FAMILIES for signal in FAMILIES.get(name).collapse]
    rank = {key: i for i, key in enumerate(COLLAPSE_ORDER)}
    return sorted(signals, key=lambda s: rank.get(s.key, len(rank)))
