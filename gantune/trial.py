"""The trial loop: ``train(cfg, report, should_stop) -> TrialResult``.

It knows nothing of Ray, Optuna or MLflow. Every ``log_every`` steps it passes a flat record of training
signals to ``report``, asking ``should_stop`` first; every ``eval.every`` steps the evaluation hook adds the
metric set to that record (with ``eval.repeat``, measured a second time on fresh samples as ``repeat/<metric>``:
the evaluation noise). Evaluation draws its noise from its own generator, so how often a trial is evaluated
never changes what it trains into. A non-finite loss ends the trial as ``diverged`` with the reason: never an
exception, so a search can carry on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gantune.config import TrialConfig, device_problem
from gantune.data import RealData, data_listing, listed_once, load_data
from gantune.errors import GantuneError
from gantune.events import Status
from gantune.gan import GANTrainer
from gantune.gan.conditional import balanced_labels, check_classes, grid_labels, labelled_data
from gantune.health import EVAL_SECONDS, REPEAT, Verdict, first_nonfinite, is_evaluation
from gantune.metrics import Evaluator
from gantune.rundir import BEST_GENERATOR, CHECKPOINT, GENERATOR, RunDir, finite_weights, unfit_checkpoint
from gantune.viz import samples_png

Record = dict[str, float]
Report = Callable[[Record], None]
#: how an evaluation's values were measured (``Evaluator.provenance``), in every metrics.jsonl evaluation line
PROVENANCE = "provenance"
ShouldStop = Callable[[Record], "Verdict | None"]
EvaluatorFactory = Callable[[TrialConfig, RealData, torch.device], Evaluator]


@dataclass(frozen=True)
class Stop:
    """Why the loop ended before its last step. A health ``Verdict`` alone does not fit: its status is always
    ``pruned:<kind>``, while the loop's own stop on a non-finite value is plain ``diverged`` (no monitor decided it;
    a search reports it as pruned:diverged)."""

    status: Status
    reason: str
    rule: str = ""

    @classmethod
    def of(cls, verdict: Verdict) -> Stop:
        """A ``should_stop`` verdict: ``pruned:<kind>``."""
        return cls(verdict.status, verdict.reason, verdict.rule)

    @classmethod
    def non_finite(cls, values: Record, step: int) -> Stop | None:
        """The loop's own stop on the first NaN or infinite value among ``values`` (None when all are finite)."""
        bad = first_nonfinite(values)
        return None if bad is None else cls(Status.DIVERGED, f"non-finite {bad} at step {step}", "non_finite")


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
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_fraction(self) -> float:
        """Share of the trial's wall time spent evaluating (target: at most 10% at default settings)."""
        return self.eval_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def is_oom(err: BaseException) -> bool:
    """Out of memory, on the GPU or the host: a property of the config (batch, widths), not a bug in the code."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):  # torch.OutOfMemoryError from 2.4 on: the same
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(sign in text for sign in ("out of memory", "can't allocate memory",
                                                                          "Storage size calculation overflowed"))


def release_memory() -> None:
    """Give back what a failed trial held (its tensors are unreachable once the exception is gone)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """The torch device ``name`` (``auto``: CUDA where there is one) names; ``what`` is the setting it came
    from, for the one-line error when this machine lacks it."""
    problem = device_problem(name)
    if problem:
        raise GantuneError(f"{what}: {problem}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GantuneError(f"{what}: {name!r} asked for, but no CUDA device is available")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise GantuneError(f"{what}: {name!r} asked for, but there is no CUDA device {dev.index} "
                               f"(this machine has {count})")
    return dev


def _rng_state(device: torch.device, data: RealData, evaluation: _Evaluation) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state(), "data": data.gen.get_state(),
                             "eval": evaluation.z_gen.get_state()}
    if evaluation.repeat_gen is not None:
        state["eval_repeat"] = evaluation.repeat_gen.get_state()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device, data: RealData, evaluation: _Evaluation) -> None:
    torch.set_rng_state(state["cpu"])
    _restore(data.gen, state["data"])
    if "eval" in state:
        _restore(evaluation.z_gen, state["eval"])
    if evaluation.repeat_gen is not None and "eval_repeat" in state:
        _restore(evaluation.repeat_gen, state["eval_repeat"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _restore(gen: torch.Generator, state: torch.Tensor) -> None:
    """Set a device generator (the data's, the evaluation's) to its checkpointed state. A run resumed on another
    kind of device (``train.device`` is resumable) holds a state this generator cannot take (a CUDA generator's
    is 16 bytes, a CPU one's 5,056): it goes on from a seed derived from that state, so the same checkpoint
    resumes alike every time (kernels differ across devices, so no resume there is bitwise the uninterrupted
    run anyway); setting it raised a RuntimeError traceback."""
    try:
        gen.set_state(state)
    except RuntimeError:
        digest = hashlib.blake2b(state.numpy().tobytes(), digest_size=8).digest()
        gen.manual_seed(int.from_bytes(digest, "little") >> 1)


class _Outputs:
    """Where a trial's outputs go: its run directory (when it has one), ``report`` and ``on_samples``."""

    def __init__(self, cfg: TrialConfig, run_dir: str | Path | None, report: Report | None,
                 on_samples: Callable[[int, bytes], None] | None) -> None:
        self.cfg = cfg
        self.rd = RunDir(run_dir) if run_dir is not None else None
        self.report = report
        self.on_samples = on_samples

    def log(self, record: Record, provenance: dict[str, Any] | None = None) -> None:
        """``provenance``: how this record's evaluation was measured (metrics.jsonl only: reports stay flat)."""
        if self.rd is not None:
            self.rd.append_metrics({**record, PROVENANCE: provenance} if provenance else record)

    def send(self, record: Record) -> None:
        if self.report is not None:
            self.report(record)

    def picture(self, step: int, png: bytes) -> None:
        if self.rd is not None:
            self.rd.save_samples(step, png)
        if self.on_samples is not None:
            self.on_samples(step, png)

    def generator(self, trainer: GANTrainer, step: int, name: str = GENERATOR) -> None:
        """Weights gone non-finite are not written, and an earlier part's (a resumed run's) file is removed: the
        run's ``generator.pt`` is always one that generates."""
        if self.rd is not None:
            state = trainer.eval_generator().state_dict()
            if finite_weights(state):
                self.rd.save_generator(state, self.cfg, step, name=name)
            else:
                (self.rd.path / name).unlink(missing_ok=True)

    def checkpoint(self, state: dict[str, Any]) -> None:
        if self.rd is not None:
            self.rd.save_checkpoint(state)


class _BestKeeper:
    """Keeps the generator of the best evaluation (on the health objective) beside the final one."""

    def __init__(self, cfg: TrialConfig) -> None:
        self.objective = cfg.health.objective
        self.sign = 1.0 if cfg.health.mode == "min" else -1.0
        self.best = math.inf

    def recall(self, records: list[dict[str, Any]]) -> None:
        """A resumed run's best so far, from the metrics it logged up to its checkpoint: its generator_best.pt is
        replaced only by a better evaluation."""
        for r in filter(is_evaluation, records):
            value = r.get(self.objective, math.nan)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.best = min(self.best, self.sign * value)

    def offer(self, metrics: Record, step: int, trainer: GANTrainer, out: _Outputs) -> None:
        value = metrics.get(self.objective, math.nan)
        if math.isfinite(value) and self.sign * value < self.best:
            self.best = self.sign * value
            out.generator(trainer, step, BEST_GENERATOR)


class _Evaluation:
    """The evaluation hook: the metric set with a sample grid (full) or the cheap collapse signals (quick),
    timing itself so that evaluation counts neither against steps/s nor unnoticed in the wall time.

    With ``eval.repeat`` a full evaluation measures the metric set twice on the same weights, the second time on
    samples (z, and a conditional GAN's labels) of a generator of its own: the first measurement is then the very
    one a run without the repeat makes, and the two differ by evaluation noise alone (what a noise-aware ASHA
    reads)."""

    def __init__(self, cfg: TrialConfig, evaluate: Evaluator, trainer: GANTrainer, data: RealData) -> None:
        self.cfg = cfg
        self.evaluate = evaluate
        self.trainer = trainer
        self.means = data.mixture.means if data.mixture is not None else None
        grid_gen = torch.Generator().manual_seed(cfg.train.seed + 1)  # the same z at every evaluation
        self.grid_z = torch.randn(cfg.eval.grid_size(data.is_points), cfg.model.z_dim, generator=grid_gen)
        self.classes = trainer.n_classes
        # a conditional grid: one row per class (the first few), so the rows show the conditioning at work
        self.grid_y: torch.Tensor | None = None
        self.grid_row: int | None = None
        if self.classes:
            self.grid_y, self.grid_row = grid_labels(self.classes, len(self.grid_z))
        # the metric set's z: its own stream, so that evaluating never moves the training RNG
        self.z_gen = torch.Generator(device=trainer.device).manual_seed(cfg.train.seed + 2)
        self.repeat_gen = (torch.Generator(device=trainer.device).manual_seed(cfg.train.seed + 3)
                           if cfg.eval.repeat else None)
        self.seconds = 0.0

    def fake(self, n: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples of the evaluation generator (EMA when on), for the metric set; a conditional GAN's with
        the labels they were generated for, uniform over the classes (``balanced_labels``), so that its metrics
        compare with an unconditional run's."""
        return self._fake(n, self.z_gen)

    def fake_repeat(self, n: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``fake`` from the repeat's own generator (``eval.repeat``)."""
        assert self.repeat_gen is not None
        return self._fake(n, self.repeat_gen)

    def _fake(self, n: int, gen: torch.Generator) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.cfg.model.z_dim, device=self.trainer.device, generator=gen)
        if not self.classes:
            return self.trainer.generate(z)
        y = balanced_labels(n, self.classes, gen)
        return self.trainer.generate(z, y), y

    def picture(self, title: str) -> bytes:
        """The sample grid (fixed z) as PNG."""
        if self.grid_y is not None:
            x = self.trainer.generate(self.grid_z[:len(self.grid_y)], self.grid_y)
            return samples_png(x.cpu(), self.means, title, nrow=self.grid_row)
        return samples_png(self.trainer.generate(self.grid_z).cpu(), self.means, title)

    def quick(self) -> Record:
        t = time.perf_counter()
        metrics = self.evaluate.quick(self.fake)
        self.seconds += time.perf_counter() - t
        return metrics

    def full(self, step: int) -> tuple[Record, Record, bytes]:
        """The metric set, its repeat (``repeat/<metric>``; empty without ``eval.repeat``) and the grid."""
        t = time.perf_counter()
        metrics = self.evaluate(self.fake)
        repeat: Record = {}
        if self.repeat_gen is not None:
            repeat = {f"{REPEAT}{k}": v for k, v in self.evaluate(self.fake_repeat).items()}
        png = self.picture(f"step {step}")
        self.seconds += time.perf_counter() - t
        return metrics, repeat, png


def settled(device: torch.device) -> float:
    """``time.perf_counter()`` once ``device`` has run what was queued on it: a CUDA step returns before its kernels
    end, and their time would fall in whatever the loop timed next (a record's handling, left out of steps/s)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


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
    on_provenance: Callable[[dict[str, Any]], None] | None = None,
    seconds: tuple[float, float] | None = None,
) -> TrialResult:
    """Train one configured GAN; see the module docstring for the callback contract.

    Args:
        cfg: the trial's full config.
        report: receives a flat ``{name: value}`` record (always with ``step``) at each log/eval point.
        should_stop: asked on each record before it is reported; a ``Verdict`` ends the trial as ``pruned:<kind>``
            after that report.
        run_dir: where to write the resolved config, metrics.jsonl, sample grids, checkpoint and weights.
        resume: continue from ``run_dir``'s checkpoint (same run: RNG states are restored too).
        device: overrides ``cfg.train.device``.
        evaluator: builds the evaluation hook (the metric set) for this config and data.
        on_samples: receives ``(step, png_bytes)`` of the sample grid at each evaluation, and at the step the
            trial stopped when that was not an evaluation step.
        seconds: the (wall, evaluation) seconds a resumed run counts on from, where not its checkpoint's: a PBT
            member trains on from a donor's checkpoint, whose seconds are the donor's.
        on_provenance: receives ``Evaluator.provenance`` (how the values are measured, with the real-vs-real
            floor) once, before the first step.
    """
    t_start = time.perf_counter()
    tc = cfg.train
    dev = resolve_device(device or tc.device)
    torch.manual_seed(tc.seed)
    with listed_once():  # one walk of an image folder: the files loaded are the ones a checkpoint lists
        check_classes(cfg)  # a search's trial is not checked as ``gantune train`` is (a subset missing a class)
        data = load_data(cfg.data, dev, tc.seed)
        # what the data's files are, so that a resume finds the same ones (``production.check_same_data``)
        listing = data_listing(cfg.data) if run_dir is not None else None
    # a resumed run's weights come from its checkpoint: its init_from file is not read (it may be gone)
    resumed = resume and run_dir is not None and (Path(run_dir) / CHECKPOINT).exists()
    built = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=None)) if resumed else cfg
    trainer = GANTrainer(built, dev, data.sample, labelled_data(cfg, data))
    # apart from the training RNG: an extractor's layers draw their random init before its weights load (the
    # digits classifier's moved it, so a metric set changed what a digits trial trained into)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        evaluation = _Evaluation(cfg, evaluator(cfg, data, dev), trainer, data)
    provenance = dict(evaluation.evaluate.provenance)
    if on_provenance is not None and provenance:
        on_provenance(provenance)
    out = _Outputs(cfg, run_dir, report, on_samples)
    best = _BestKeeper(cfg)

    start, prior_wall = 0, 0.0
    last: Record = {}  # the last record and evaluation: what the result carries (a checkpoint too, for a run
    last_eval: Record = {}  # resumed at its last step, which trains and records nothing more)
    if resume and out.rd is not None and (ckpt := out.rd.load_checkpoint()) is not None:
        try:
            trainer.load_state_dict(ckpt["trainer"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:  # another run's nets, or none
            raise unfit_checkpoint(out.rd.path, err) from None
        _set_rng_state(ckpt["rng"], dev, data, evaluation)
        start, evaluation.seconds, prior_wall = int(ckpt["step"]), float(ckpt["eval_s"]), float(ckpt["wall_s"])
        if seconds is not None:
            prior_wall, evaluation.seconds = seconds
        last, last_eval = dict(ckpt.get("last", {})), dict(ckpt.get("last_eval", {}))
    if out.rd is not None:  # a run from step 0 (one killed before its first checkpoint) starts a fresh log
        best.recall(out.rd.trim_metrics(start))
        out.rd.write_config(cfg)

    def wall() -> float:
        return prior_wall + time.perf_counter() - t_start

    def checkpoint(step: int) -> None:
        # the state is only gathered where it is kept; one of weights gone non-finite (D overflowed between logs,
        # an evaluation of G's samples still finite) would replace the last good one that a resume starts from
        if out.rd is not None and all(finite_weights(net.state_dict()) for net in (trainer.G, trainer.D)):
            out.checkpoint({"step": step, "eval_s": evaluation.seconds, "wall_s": wall(), "last": last,
                            "last_eval": last_eval, "trainer": trainer.state_dict(),
                            "rng": _rng_state(dev, data, evaluation), "data": listing})

    stop: Stop | None = None  # None while the trial runs
    step = pictured = start
    # steps/s is over the training alone: what a step records (its evaluation, its log, checkpoint and report: the
    # first report opened the MLflow run, and the next record read 1 step/s where the loop ran 70) is kept out
    window_t, window_step, window_off = time.perf_counter(), start, 0.0
    for step in range(start + 1, tc.steps + 1):
        log_now = step % tc.log_every == 0 or step == tc.steps
        eval_now = step % cfg.eval.every == 0 or step == tc.steps
        quick_now = not eval_now and cfg.eval.quick_every > 0 and step % cfg.eval.quick_every == 0
        trainer.schedule(step)
        trainer.step(measure=log_now)
        if not (log_now or eval_now or quick_now):
            if step % tc.checkpoint_every == 0 and step < tc.steps:  # a step that records nothing
                saving = settled(dev)
                checkpoint(step)
                window_off += time.perf_counter() - saving
            continue
        record: Record = {"step": step}  # a whole number in metrics.jsonl and --json (it read 25.0)
        recording = settled(dev)
        if log_now:
            busy = recording - window_t - window_off
            record.update(trainer.read_stats())
            record["steps_per_s"] = (step - window_step) / max(busy, 1e-9)
            window_t, window_step, window_off = recording, step, 0.0
            stop = Stop.non_finite(record, step)
        # each value is checked once, when measured: a trial whose training signals went non-finite is not evaluated
        evaluated = eval_now and stop is None
        if quick_now and stop is None:
            quick = evaluation.quick()
            record.update(quick)
            stop = Stop.non_finite(quick, step)
        if evaluated:
            metrics, repeat, png = evaluation.full(step)
            out.picture(step, png)
            pictured = step
            record.update(metrics)
            record.update(repeat)
            record[EVAL_SECONDS] = evaluation.seconds
            last_eval = dict(metrics)
            best.offer(metrics, step, trainer, out)
            stop = Stop.non_finite(metrics, step) or Stop.non_finite(repeat, step)
        record["wall_s"] = wall()
        last = record
        # on disk before the checkpoint that covers it (a run killed in between resumes from the previous one and
        # logs this step again), the checkpoint before the report, which may hand it on (a PBT member cloned by another)
        out.log(record, provenance if evaluated else None)
        if stop is None and step % tc.checkpoint_every == 0 and step < tc.steps:
            checkpoint(step)
        # asked before the record is sent, so that ``report`` can say this step ends the trial (a search's scheduler
        # deciding on the same record then leaves the stop to the verdict, whose reason is the trial's own)
        if stop is None and should_stop is not None and (verdict := should_stop(record)) is not None:
            stop = Stop.of(verdict)
        out.send(record)
        window_off += time.perf_counter() - recording
        if stop is not None:
            break

    status = Status.COMPLETED if stop is None else stop.status
    if pictured != step:  # a trial stopped between evaluations: show what it had become when it stopped
        out.picture(step, evaluation.picture(f"step {step}: {status}"))
    if stop is None:
        checkpoint(step)
    out.generator(trainer, step)
    return TrialResult(status, stop.reason if stop else "", step, wall(), evaluation.seconds, last, last_eval,
                       str(out.rd.path) if out.rd else None, stop.rule if stop else "", provenance)
