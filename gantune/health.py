"""Trial health: reads the reported stream and says ok, diverged, collapsed or stalled, with a reason.

The monitor is the trial's ``should_stop``: it sees every record the loop reports (training signals every
``log_every`` steps, metrics at evaluations) and returns a ``Verdict`` once a rule has held long enough.
Thresholds live in ``HealthConfig`` (the config's ``health`` section); each rule is listed in ``RULES`` (the
signal rule, ``_signals``, gives both diverged above a ceiling and collapsed below a floor).

- diverged: a non-finite value; a G or D gradient norm above ``max_grad_norm``; a loss above
  ``max_abs_loss``; the objective far from its best for ``patience`` evaluations (``_objective_rise``: worse by
  the factor ``rise_factor`` in magnitude and by the fraction ``rise_margin`` of the range it has covered).
  Full evaluations only (``is_evaluation``): a quick check measures the same keys on fewer samples.
- diverged, too (after the same warm-up as collapsed): the diversity ratio above ``max_diversity`` for
  ``patience`` checks in a row: the samples spread beyond the data (an exploding generator; README's health
  table says what this threshold was checked on).
- collapsed (after ``warmup_evals`` checks, full or quick, and ``warmup_steps``): a collapse signal low *and
  not improving* for ``patience`` checks in a row. Low: mode/class coverage below ``min_coverage`` (mode
  coverage only once at least ``min_hq`` of the samples are high quality, or when no sample is near any mode),
  diversity ratio below ``min_diversity``, recall below ``min_recall``. Not improving: no collapse signal rose
  by the fraction ``min_progress`` above its best earlier check, counting rises only up to the data's level. A
  healthy image GAN can start low (the digits spaces' DCGAN: 2 classes, diversity 0.10 and recall 0 at step 250,
  recall still 0.006 at step 1,000) but climbs; a collapsed one stays down.
- stalled: losses frozen (changing less than ``stall_tol``) for ``stall_logs`` logs while the objective did
  not improve; or, with a loss whose G gradient vanishes once D separates the samples (``GANLoss.separation_stalls``:
  minimax), D separating every real from every fake sample for ``d_win_logs`` logs in a row.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gantune.config import HealthConfig, TrialConfig
from gantune.events import Status
from gantune.gan.losses import LOSSES
from gantune.metrics import (  # the package: the built-in families are registered
    CollapseSignal,
    collapse_signals,
)


@dataclass(frozen=True)
class Verdict:
    """Why a trial should stop: ``kind`` is diverged | collapsed | stalled, ``rule`` the signal that decided it
    (``non_finite``, ``grad_norm_d``, ``objective_rise``, ``diversity``, ``diversity_high``, ``frozen_losses``, …:
    what reports group by), ``reason`` the sentence for people."""

    kind: str
    reason: str
    rule: str = ""

    @property
    def status(self) -> Status:
        return Status.pruned_by(self.kind)


@dataclass
class _State:
    evals: int = 0
    best: float | None = None
    low: float = math.inf  # the range the objective has covered so far
    high: float = -math.inf
    bad_rise: int = 0
    scale_at_best: float = 0.0  # the objective's largest magnitude before its best (what "far" from a best of 0 is)
    bad_collapse: dict[str, int] = field(default_factory=dict)
    bad_spread: dict[str, int] = field(default_factory=dict)  # checks in a row above a signal's ceiling
    losses: deque[tuple[float, float]] = field(default_factory=deque)
    improved_at: int = 0  # log index of the last objective improvement
    logs: int = 0
    d_wins: int = 0
    checks: int = 0  # records carrying collapse signals (full or quick evaluations)
    # each collapse signal's checks so far: (step, value up to what real data reads)
    signal_history: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    separation_stalls: bool = False  # the trial's loss: D separating every sample leaves G no gradient
    span: float = 0.0  # the steps over which a signal's progress is measured (the trial's eval.every; 0: per check)


Rule = Callable[[HealthConfig, _State, dict[str, float]], "Verdict | None"]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def logged_numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a logged record: what the trial loop's stream held at that step."""
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


def first_nonfinite(record: dict[str, float]) -> str | None:
    """The first key whose value is NaN or infinite (the trial loop's own stop uses it too)."""
    return next((k for k, v in record.items() if not math.isfinite(v)), None)


@rule
def _non_finite(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    bad = first_nonfinite(r)
    return None if bad is None else Verdict("diverged", f"non-finite {bad} at step {int(r['step'])}", "non_finite")


@rule
def _exploding(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    for k in ("grad_norm_g", "grad_norm_d"):
        if r.get(k, 0.0) > h.max_grad_norm:
            return Verdict("diverged", f"{k} {r[k]:.3g} > {h.max_grad_norm:g} at step {int(r['step'])}", k)
    for k in ("loss_d", "loss_g"):
        if abs(r.get(k, 0.0)) > h.max_abs_loss:
            return Verdict("diverged", f"|{k}| {abs(r[k]):.3g} > {h.max_abs_loss:g} at step {int(r['step'])}", k)
    return None


#: the record key the trial loop writes on full evaluations only (evaluation seconds so far): ``is_evaluation``
EVAL_SECONDS = "eval_s"


def is_evaluation(record: dict[str, float]) -> bool:
    """Whether a trial-loop record holds a full evaluation (only those carry ``EVAL_SECONDS``). A quick check scores the
    cheap families on ``eval.quick_size()`` samples, under the same keys: its mode KL on 1,000 samples reads about 0.6
    where the evaluation's on 26,000 reads 0.1 (the estimator's bias falls with the sample count), so its values
    are not comparable with an evaluation's and must not count as the objective."""
    return EVAL_SECONDS in record


#: the prefix of a repeated evaluation's values (``eval.repeat``): ``repeat/fid`` beside ``fid``
REPEAT = "repeat/"
#: the prefix a quick check's values are tracked under (``quick_namer``): ``quick/modes`` beside ``modes``
TRACKED_QUICK = "quick/"


def quick_namer(record: dict[str, Any], quick: frozenset[str]) -> Callable[[str], str]:
    """The name each key of ``record`` is tracked under: a quick check's values (``quick``: ``quick_keys()``, on
    fewer samples, not comparable with an evaluation's, ``is_evaluation``) with ``TRACKED_QUICK`` before them, so
    that MLflow's series of ``modes`` or ``mode_kl`` holds the evaluations alone and a stopped trial's last value is
    its last evaluation's."""
    ours = frozenset() if is_evaluation(record) else quick & record.keys()
    return lambda key: TRACKED_QUICK + key if key in ours else key


#: what a search reports beside a trial-loop record: the search's first objective (at evaluations only), and its
#: second measurement with ``eval.repeat`` (what ASHA, PBT and a noise-aware ASHA read)
OBJECTIVE, OBJECTIVE_REPEAT = "objective", "objective_repeat"


def objective_fields(record: dict[str, Any], objective: str) -> dict[str, Any]:
    """``objective`` (and ``objective_repeat``) of a trial-loop record, for the search's reports; none for a
    quick check's value, which is on fewer samples."""
    out: dict[str, Any] = {}
    if objective in record and is_evaluation(record):
        out[OBJECTIVE] = record[objective]
    if (repeat := REPEAT + objective) in record:
        out[OBJECTIVE_REPEAT] = record[repeat]
    return out


def _better(h: HealthConfig, v: float, best: float | None) -> bool:
    return best is None or (v < best if h.mode == "min" else v > best)


def rise_threshold(h: HealthConfig, best: float) -> float:
    """The value worse than ``best`` by the factor ``rise_factor`` in magnitude: ``best * rise_factor`` or
    ``best / rise_factor``, whichever lies on the worse side (FID 10 -> 30 in min mode; coverage 0.6 -> 0.2 in max
    mode; -6 -> -2 in min mode, -2 -> -6 in max mode; 0 -> 0)."""
    up, down = best * h.rise_factor, best / h.rise_factor
    return max(up, down) if h.mode == "min" else min(up, down)


@rule
def _objective_rise(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    """The objective far from its best for ``patience`` evaluations in a row (after the warm-up). Far means both:

    - past ``rise_threshold``: worse than the best by the factor ``rise_factor`` in magnitude, in the direction of
      ``mode`` and on either side of zero; a ratio, so it reads FID (tens to hundreds), coverage or HQ in [0, 1]
      and negative objectives alike;
    - worse than the best by more than the fraction ``rise_margin`` of the range the objective has covered so far
      (its highest minus its lowest value, this one included): near zero a ratio is noise (FID 0.05 -> 0.3 on
      2-D points after 10 -> 0.05), and the range is the objective's own scale of change.

    Both are ratios of the reported stream, so scaling the objective by a positive factor changes no verdict.
    """
    v = r.get(h.objective)
    if v is None or not is_evaluation(r):
        return None
    s.evals += 1
    if _better(h, v, s.best):  # at the log this record is (``_stall`` counts it after this rule), else after the last
        s.best, s.improved_at = v, s.logs + _is_log(r)
        s.scale_at_best = max(abs(s.low), abs(s.high)) if s.evals > 1 else 0.0  # how far off it was before
    s.low, s.high = min(s.low, v), max(s.high, v)
    assert s.best is not None
    threshold = rise_threshold(h, s.best)
    if s.best == 0:  # no factor of 0 is worse than it: any value off 0 read as a rise (a class_kl of 0, then 0.004)
        # far beside how far off it was before reaching 0; a first evaluation at 0 gives no scale (the collapse
        # signals still read the samples), and rise_margin 0 asks for the factor alone (any value off 0)
        worse = abs(v) > h.rise_margin * s.scale_at_best and (s.scale_at_best > 0 or h.rise_margin == 0)
    else:
        worse = (v > threshold if h.mode == "min" else v < threshold) and \
            abs(v - s.best) > h.rise_margin * (s.high - s.low)
    s.bad_rise = s.bad_rise + 1 if worse and s.evals > h.warmup_evals and r["step"] >= h.warmup_steps else 0
    if s.bad_rise >= h.patience:
        return Verdict("diverged", f"{h.objective} {v:.4g} far from its best {s.best:.4g} for "
                       f"{s.bad_rise} evaluations (step {int(r['step'])})", "objective_rise")
    return None


#: the suffix of a signal's history of quick checks (``_improving``): they are compared with each other only
QUICK = "@quick"


def _improving(h: HealthConfig, s: _State, r: dict[str, float], signals: list[CollapseSignal]) -> bool:
    """Some collapse signal rose toward what real data reads (``CollapseSignal.real``) by ``min_progress`` of its
    best value at least ``span`` steps earlier (the trial's evaluation interval; before a check that old, of its
    best earlier value), and by a hundredth of its floor: noise around zero is no progress. A healthy image GAN's
    diversity and class coverage climb while its recall still reads 0; a diversity ratio climbing past the data's
    (an exploding generator's 10 -> 100) is not progress. Over a span of steps, not from check to check: quick
    checks between evaluations halved the interval, so a run climbing as fast read as not improving and was
    stopped as collapsed where the same run without them trained on. Tracked through the warm-up too, so the first
    counted check has a trend."""
    improving, step = False, r["step"]
    # like with like: an evaluation scores more samples, and its mode coverage or recall reads higher than a quick
    # check's on the same weights (a climb of quick checks was read against the evaluation before them, as no
    # progress); the first check of a kind reads the other kind's
    kind, other = ("", QUICK) if is_evaluation(r) else (QUICK, "")
    for sig in signals:
        value = r[sig.key] if sig.real is None else min(r[sig.key], sig.real)
        history = s.signal_history.setdefault(sig.key + kind, [])
        pool = history or s.signal_history.get(sig.key + other, [])
        earlier = [v for at, v in pool if at <= step - s.span] or [v for _, v in pool]
        if earlier and value - (best := max(earlier)) >= max(h.min_progress * best, 0.01 * _limit(h, sig.floor)):
            improving = True
        history.append((step, value))
    return improving


def _count(counts: dict[str, int], key: str, bad: bool) -> int:
    """Checks in a row that were bad for ``key``, this one included (0 once one is not)."""
    counts[key] = counts.get(key, 0) + 1 if bad else 0
    return counts[key]


def _limit(h: HealthConfig, value: str | float) -> float:
    """A signal's floor or ceiling: the named ``health`` setting, or the number itself."""
    return float(getattr(h, value)) if isinstance(value, str) else value


@rule
def _signals(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    """The signals the metric families declare (``CollapseSignal``), after the warm-up, for ``patience`` checks in
    a row: above a ceiling, diverged (the samples spread beyond the data); below the floor and not improving,
    collapsed. A gated signal (mode coverage, gated by the HQ share) counts below its floor only once its gate is
    reached, or when it reads 0: with few high-quality samples a slow run is not yet a collapsed one, but one with
    no sample near any mode has left the data (a slow start that climbs is still improving)."""
    signals = [sig for sig in collapse_signals() if sig.key in r]
    if not signals:
        return None
    s.checks += 1
    improving = _improving(h, s, r, signals)
    if s.checks <= h.warmup_evals or r["step"] < h.warmup_steps:
        return None
    for sig in signals:
        if sig.ceiling is None:
            continue
        ceiling = _limit(h, sig.ceiling)
        if (n := _count(s.bad_spread, sig.key, r[sig.key] > ceiling)) >= h.patience:
            return Verdict("diverged", f"{sig.label} {r[sig.key]:.3g} > {ceiling:g} for {n} {_checks(n)}: samples "
                           f"spread beyond the data (step {int(r['step'])})", f"{sig.key}_high")
    for sig in signals:
        floor = _limit(h, sig.floor)
        gated = sig.gate is None or r.get(sig.gate[0], 1.0) >= getattr(h, sig.gate[1]) or r[sig.key] == 0
        if (n := _count(s.bad_collapse, sig.key, r[sig.key] < floor and gated and not improving)) >= h.patience:
            return Verdict("collapsed", f"{sig.label} {r[sig.key]:.3g} < {floor:g} for {n} {_checks(n)} "
                           f"(step {int(r['step'])})", sig.key)
    return None


def _checks(n: int) -> str:
    """What a collapse signal's count counts: checks, full evaluations and quick ones alike (a reason said "for 2
    evaluations" of a verdict reached on quick checks before any evaluation)."""
    return "check" if n == 1 else "checks"


def _is_log(r: dict[str, float]) -> bool:
    """Whether a record is a training log (both losses): a hand-edited ``metrics.jsonl`` line with ``loss_d`` alone
    was a KeyError on ``--resume``."""
    return "loss_d" in r and "loss_g" in r


@rule
def _stall(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    """Frozen losses with no better objective; or D separating every real from every fake sample, which stalls
    G only under a loss that declares so (``GANLoss.separation_stalls``). Under the minimax loss G's gradient is
    D's sigmoid on the fakes, which vanishes as D rejects them (Goodfellow et al. 2014). The non-saturating,
    hinge, least-squares and Wasserstein G losses keep their gradient on a separating D (that is what they were
    made for), so there D winning every sample is normal: a WGAN critic ranks reals above fakes by design, and an
    R1-regularised non-saturating D separates all samples early on while its smooth slope guides G (Mescheder et
    al. 2018). R1 or a gradient penalty does not switch the rule off for minimax: they bound D's slope at reals or
    interpolates, not its confidence on the fakes, so the saturating G gradient still vanishes."""
    if not _is_log(r):
        return None
    s.logs += 1
    s.losses.append((r["loss_d"], r["loss_g"]))
    while len(s.losses) > h.stall_logs:
        s.losses.popleft()
    if len(s.losses) == h.stall_logs and s.logs - s.improved_at >= h.stall_logs:
        spread = max(max(c) - min(c) for c in zip(*s.losses, strict=True))
        if spread < h.stall_tol:
            return Verdict("stalled", f"losses frozen (spread {spread:.2g}) for {h.stall_logs} logs with no better "
                           f"{h.objective} (step {int(r['step'])})", "frozen_losses")
    if h.d_win_logs and s.separation_stalls and "d_win" in r:
        s.d_wins = s.d_wins + 1 if r["d_win"] >= 0.99 else 0
        if s.d_wins >= h.d_win_logs:
            return Verdict("stalled", f"D separated every real from every fake sample for {s.d_wins} logs "
                           f"(step {int(r['step'])})", "d_wins")
    return None


class HealthMonitor:
    """``should_stop`` for the trial loop: feed it each record; it returns a ``Verdict`` when a rule fires.
    ``separation_stalls``: the trial's loss loses G's gradient when D separates every sample (``for_trial`` reads
    it from the loss registry); off, the D-separation rule never fires."""

    def __init__(self, cfg: HealthConfig, separation_stalls: bool = False, span: float = 0.0) -> None:
        self.cfg = cfg
        self.state = _State(separation_stalls=separation_stalls, span=span)
        self.verdict: Verdict | None = None

    @classmethod
    def for_trial(cls, cfg: TrialConfig) -> HealthMonitor:
        """The monitor of one trial: its ``health`` thresholds, what its loss declares, and its evaluation interval
        (the span a collapse signal's progress is measured over, quick checks or not)."""
        return cls(cfg.health, separation_stalls=LOSSES.get(cfg.loss.name).separation_stalls, span=cfg.eval.every)

    def replay(self, logged: list[dict[str, Any]]) -> Verdict | None:
        """Feed the records a run logged to ``metrics.jsonl`` (their numbers: a record also holds strings and the
        provenance's dicts), as the trial loop fed them, until a verdict; that verdict, or ``None``."""
        for record in logged:
            if self.verdict is not None:
                break
            self(logged_numbers(record))
        return self.verdict

    def __call__(self, record: dict[str, float]) -> Verdict | None:
        for check in RULES:
            verdict = check(self.cfg, self.state, record)
            if verdict is not None:
                self.verdict = verdict
                return verdict
        return None

    @property
    def status(self) -> str:
        return "ok" if self.verdict is None else self.verdict.kind
