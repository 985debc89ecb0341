"""The trial loop: ``train(cfg, report, should_stop) -> TrialResult``.

It knows nothing of Ray, Optuna or MLflow. Every ``log_every`` steps it passes a flat record of training
signals to ``report`` and asks ``should_stop``; every ``eval.every`` steps the evaluation hook adds the
metric set to that record. A non-finite loss ends the trial as ``diverged`` with the reason: never an
exception, so a search can carry on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gantune.config import TrialConfig
from gantune.data import RealData, load_data
from gantune.events import Status
from gantune.gan import GANTrainer
from gantune.health import Verdict, first_nonfinite
from gantune.metrics import Evaluator
from gantune.rundir import BEST_GENERATOR, RunDir
from gantune.viz import samples_png

Record = dict[str, float]
Report = Callable[[Record], None]
ShouldStop = Callable[[Record], "Verdict | None"]
EvaluatorFactory = Callable[[TrialConfig, RealData, torch.device], Evaluator]


@dataclass
class TrialResult:
    """How a trial ended: ``status`` is completed | diverged | pruned:<kind>; ``rule`` the health rule behind it."""

    status: Status
    reason: str
    steps: int
    wall_s: float
    eval_s: float
    last: Record = field(default_factory=dict)
    last_eval: Record = field(default_factory=dict)
    run_dir: str | None = None
    rule: str = ""

    @property
    def eval_fraction(self) -> float:
        """Share of the trial's wall time spent evaluating (target: at most 10% at default settings)."""
        return self.eval_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def is_oom(err: BaseException) -> bool:
    """Out of memory, on the GPU or the host: a property of the config (batch, widths), not a bug in the code."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory() -> None:
    """Give back what a failed trial held (its tensors are unreachable once the exception is gone)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from gantune.errors import GantuneError

        raise GantuneError(f"train.device: {name!r} asked for, but no CUDA device is available")
    return dev


def _rng_state(device: torch.device, data: RealData) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state(), "data": data.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device, data: RealData) -> None:
    torch.set_rng_state(state["cpu"])
    data.set_state(state["data"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    cfg: TrialConfig,
    report: Report | None = None,
    should_stop: ShouldStop | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    evaluator: EvaluatorFactory = Evaluator,
    on_samples: Callable[[int, bytes], None] | None = None,
) -> TrialResult:
    """Train one configured GAN; see the module docstring for the callback contract.

    Args:
        cfg: the trial's full config.
        report: receives a flat ``{name: value}`` record (always with ``step``) at each log/eval point.
        should_stop: asked after each report; a ``Verdict`` ends the trial as ``pruned:<kind>``.
        run_dir: where to write the resolved config, metrics.jsonl, sample grids, checkpoint and weights.
        resume: continue from ``run_dir``'s checkpoint (same run: RNG states are restored too).
        device: overrides ``cfg.train.device``.
        evaluator: builds the evaluation hook (the metric set) for this config and data.
        on_samples: receives ``(step, png_bytes)`` of the sample grid at each evaluation.
    """
    t_start = time.perf_counter()
    tc = cfg.train
    dev = resolve_device(device or tc.device)
    torch.manual_seed(tc.seed)
    data = load_data(cfg.data, dev, tc.seed)
    trainer = GANTrainer(cfg, dev, data.sample)
    evaluate = evaluator(cfg, data, dev)
    rd = RunDir(run_dir) if run_dir is not None else None
    means = data.mixture.means if data.mixture is not None else None
    grid_gen = torch.Generator().manual_seed(tc.seed + 1)  # the same z at every evaluation: progress is comparable
    grid_z = torch.randn(cfg.eval.grid_size(data.is_points), cfg.model.z_dim, generator=grid_gen)

    start, eval_s, prior_wall = 0, 0.0, 0.0
    if resume and rd is not None and (ckpt := rd.load_checkpoint()) is not None:
        trainer.load_state_dict(ckpt["trainer"])
        _set_rng_state(ckpt["rng"], dev, data)
        start, eval_s, prior_wall = int(ckpt["step"]), float(ckpt["eval_s"]), float(ckpt["wall_s"])
        rd.trim_metrics(start)
    if rd is not None:
        rd.write_config(cfg)

    def wall() -> float:
        return prior_wall + time.perf_counter() - t_start

    def fake(n: int) -> torch.Tensor:
        """``n`` samples of the evaluation generator (EMA when on), for the metric set."""
        return trainer.generate(torch.randn(n, cfg.model.z_dim))

    def checkpoint(step: int) -> None:
        if rd is not None:
            rd.save_checkpoint({"step": step, "eval_s": eval_s, "wall_s": wall(),
                                "trainer": trainer.state_dict(), "rng": _rng_state(dev, data)})

    def picture(step: int, title: str) -> None:
        """The sample grid (fixed z) at ``step``: into the run directory and to ``on_samples``."""
        png = samples_png(trainer.generate(grid_z).cpu(), means, title)
        if rd is not None:
            rd.save_samples(step, png)
        if on_samples is not None:
            on_samples(step, png)

    objective, sign = cfg.health.objective, (1.0 if cfg.health.mode == "min" else -1.0)
    best_value = math.inf
    status, reason, rule = Status.COMPLETED, "", ""
    last: Record = {}
    last_eval: Record = {}
    step = pictured = start
    window_t, window_step = time.perf_counter(), start
    for step in range(start + 1, tc.steps + 1):
        log_now = step % tc.log_every == 0 or step == tc.steps
        eval_now = step % cfg.eval.every == 0 or step == tc.steps
        quick_now = not eval_now and cfg.eval.quick_every > 0 and step % cfg.eval.quick_every == 0
        trainer.step(measure=log_now)
        if not (log_now or eval_now or quick_now):
            continue
        record: Record = {"step": float(step)}
        if log_now:
            now = time.perf_counter()
            record.update(trainer.read_stats())
            record["steps_per_s"] = (step - window_step) / max(now - window_t, 1e-9)
            window_t, window_step = now, step
            if (bad := first_nonfinite(record)) is not None:
                status, reason, rule = Status.DIVERGED, f"non-finite {bad} at step {step}", "non_finite"
        if quick_now and status == Status.COMPLETED:
            t_eval = time.perf_counter()
            record.update(evaluate.quick(fake))
            eval_s += time.perf_counter() - t_eval
            window_t += time.perf_counter() - t_eval
        if eval_now and status == Status.COMPLETED:
            t_eval = time.perf_counter()
            metrics = evaluate(fake)
            picture(step, f"step {step}")
            pictured = step
            eval_s += time.perf_counter() - t_eval
            window_t += time.perf_counter() - t_eval  # evaluation time does not count against steps/s
            record.update(metrics)
            record["eval_s"] = eval_s
            last_eval = dict(metrics)
            value = metrics.get(objective, math.nan)
            if rd is not None and math.isfinite(value) and sign * value < best_value:
                best_value = sign * value  # the generator at its best evaluation, kept beside the final one
                rd.save_generator(trainer.eval_generator().state_dict(), cfg, step, name=BEST_GENERATOR)
        if (eval_now or quick_now) and status == Status.COMPLETED and (bad := first_nonfinite(record)) is not None:
            status, reason, rule = Status.DIVERGED, f"non-finite {bad} at step {step}", "non_finite"
        record["wall_s"] = wall()
        last = record
        if rd is not None:
            rd.append_metrics(record)
        if report is not None:
            report(record)
        if status == Status.COMPLETED and should_stop is not None and (verdict := should_stop(record)) is not None:
            status, reason, rule = verdict.status, verdict.reason, verdict.rule
        if status != Status.COMPLETED:
            break
        if step % tc.checkpoint_every == 0:
            checkpoint(step)

    if pictured != step:  # a trial stopped between evaluations: show what it had become when it stopped
        picture(step, f"step {step}: {status}")
    if rd is not None:
        if status == Status.COMPLETED:
            checkpoint(step)
        rd.save_generator(trainer.eval_generator().state_dict(), cfg, step)
    return TrialResult(status, reason, step, wall(), eval_s, last, last_eval, str(rd.path) if rd else None, rule)
