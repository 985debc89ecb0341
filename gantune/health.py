"""Trial health: reads the reported stream and says ok, diverged, collapsed or stalled, with a reason.

The monitor is the trial's ``should_stop``: it sees every record the loop reports (training signals every
``log_every`` steps, metrics at evaluations) and returns a ``Verdict`` once a rule has held long enough.
Thresholds live in ``HealthConfig`` (the config's ``health`` section); each rule is listed in ``RULES``.

- diverged: a non-finite value; a G or D gradient norm above ``max_grad_norm``; a loss above
  ``max_abs_loss``; the objective worse than ``best * rise_factor + rise_margin`` for ``patience`` evaluations.
- collapsed (after ``warmup_evals`` checks, full or quick, and ``warmup_steps``): a collapse signal low *and
  not improving* for ``patience`` checks in a row. Low: mode/class coverage below ``min_coverage`` (mode
  coverage only once at least ``min_hq`` of the samples are high quality), diversity ratio below
  ``min_diversity``, recall below ``min_recall``. Not improving: no collapse signal rose by the fraction
  ``min_progress`` above its best earlier check. A healthy image GAN can start low (the digits spaces' DCGAN: 2
  classes, diversity 0.10 and recall 0 at step 250, recall still 0.006 at step 1,000) but climbs; a collapsed
  one stays down.
- stalled: losses frozen (changing less than ``stall_tol``) for ``stall_logs`` logs while the objective did
  not improve; or D separating every real from every fake sample for ``d_win_logs`` logs in a row.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gantune.config import HealthConfig
from gantune.events import Status
from gantune.metrics import CollapseSignal, collapse_signals  # the package: the built-in families are registered


@dataclass(frozen=True)
class Verdict:
    """Why a trial should stop: ``kind`` is diverged | collapsed | stalled, ``rule`` the signal that decided it
    (``non_finite``, ``grad_norm_d``, ``objective_rise``, ``diversity``, ``frozen_losses``, …: what reports group
    by), ``reason`` the sentence for people."""

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
    bad_rise: int = 0
    bad_collapse: dict[str, int] = field(default_factory=dict)
    losses: deque[tuple[float, float]] = field(default_factory=deque)
    improved_at: int = 0  # log index of the last objective improvement
    logs: int = 0
    d_wins: int = 0
    checks: int = 0  # records carrying collapse signals (full or quick evaluations)
    signal_best: dict[str, float] = field(default_factory=dict)  # best value of each collapse signal so far


Rule = Callable[[HealthConfig, _State, dict[str, float]], "Verdict | None"]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


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


def _better(h: HealthConfig, v: float, best: float | None) -> bool:
    return best is None or (v < best if h.mode == "min" else v > best)


@rule
def _objective_rise(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    v = r.get(h.objective)
    if v is None:
        return None
    s.evals += 1
    if _better(h, v, s.best):
        s.best, s.improved_at = v, s.logs
    assert s.best is not None
    if h.mode == "min":
        worse = v > s.best * h.rise_factor + h.rise_margin
    else:
        worse = v < (s.best - h.rise_margin) / h.rise_factor
    s.bad_rise = s.bad_rise + 1 if worse and s.evals > h.warmup_evals and r["step"] >= h.warmup_steps else 0
    if s.bad_rise >= h.patience:
        return Verdict("diverged", f"{h.objective} {v:.4g} far from its best {s.best:.4g} for "
                       f"{s.bad_rise} evaluations (step {int(r['step'])})", "objective_rise")
    return None


def _floor(h: HealthConfig, sig: CollapseSignal) -> float:
    return float(getattr(h, sig.floor)) if isinstance(sig.floor, str) else sig.floor


@rule
def _collapse(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    """The collapse signals the metric families declare (``CollapseSignal``): below the floor and not improving
    for ``patience`` checks in a row, after the warm-up. A gated signal (mode coverage, gated by the HQ share)
    counts only once its gate is reached: with few high-quality samples a slow run is not yet a collapsed one."""
    signals = [sig for sig in collapse_signals() if sig.key in r]
    if not signals:
        return None
    s.checks += 1
    # improving: some collapse signal rose by min_progress of its best earlier value (and by a hundredth of its
    # floor: noise around zero is no progress). A healthy image GAN's diversity and class coverage climb while
    # its recall still reads 0. Tracked through the warm-up too, so the first counted check has a trend.
    improving = False
    for sig in signals:
        value, best = r[sig.key], s.signal_best.get(sig.key)
        if best is not None and value - best >= max(h.min_progress * best, 0.01 * _floor(h, sig)):
            improving = True
        s.signal_best[sig.key] = value if best is None else max(best, value)
    if s.checks <= h.warmup_evals or r["step"] < h.warmup_steps:
        return None
    for sig in signals:
        floor = _floor(h, sig)
        gated = sig.gate is None or r.get(sig.gate[0], 1.0) >= getattr(h, sig.gate[1])
        n = s.bad_collapse.get(sig.key, 0) + 1 if r[sig.key] < floor and gated and not improving else 0
        s.bad_collapse[sig.key] = n
        if n >= h.patience:
            return Verdict("collapsed", f"{sig.label} {r[sig.key]:.3g} < {floor:g} for {n} evaluations "
                           f"(step {int(r['step'])})", sig.key)
    return None


@rule
def _stall(h: HealthConfig, s: _State, r: dict[str, float]) -> Verdict | None:
    if "loss_d" not in r:
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
    if h.d_win_logs and "d_win" in r:
        s.d_wins = s.d_wins + 1 if r["d_win"] >= 0.99 else 0
        if s.d_wins >= h.d_win_logs:
            return Verdict("stalled", f"D separated every real from every fake sample for {s.d_wins} logs "
                           f"(step {int(r['step'])})", "d_wins")
    return None


class HealthMonitor:
    """``should_stop`` for the trial loop: feed it each record; it returns a ``Verdict`` when a rule fires."""

    def __init__(self, cfg: HealthConfig) -> None:
        self.cfg = cfg
        self.state = _State()
        self.verdict: Verdict | None = None

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
