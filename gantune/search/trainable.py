"""The function Ray runs for each trial: gantune's trial loop with Tune's ``report`` and the health monitor.

Only evaluation records carry ``objective`` (the search's first objective), so ASHA decides at evaluation
steps only. The last report carries the trial's own ending (``gantune_status``); a trial stopped by the
scheduler never gets to send one. Sample grids travel to the driver as PNG bytes in the results; on a
cluster (``ship_files``) the trial runs in a directory of its node and its last report carries the run
directory's files (weights, config, metrics, grids) to the driver, which may not share its disk: each evaluation
report those changed since the last (a trial the scheduler stops sends no last report), the last report the rest,
and the directory goes however the trial ends. Under PBT (whose checkpoints need a disk the nodes share) each
evaluation report carries the trial's checkpoint, and a trial restarted by PBT (paused, or cloned from another
member with explored hyperparameters) trains on from the checkpoint Tune hands back; a member that a health
verdict ended first offers itself for replacement (``offer_replacement``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.train import Checkpoint  # what tune.Checkpoint.from_directory is typed to return

from gantune import provenance
from gantune.catalogue import config_from_dict
from gantune.config import TrialConfig
from gantune.devices import cap_memory, trial_device
from gantune.errors import ConfigError
from gantune.events import REASON_KEY, RULE_KEY, STATUS_KEY, Status, first_line
from gantune.health import EVAL_SECONDS, HealthMonitor, first_nonfinite, objective_fields
from gantune.metrics import metric_keys
from gantune.rundir import CHECKPOINT, METRICS, atomic_write, copy_file, read_metrics
from gantune.search.carry import unpack
from gantune.trial import Record, ShouldStop, TrialResult, is_oom, release_memory, train

FILES_KEY = "gantune_files"
#: PBT: the trial and step of the checkpoint a restarted member trains on from (its own after a pause, a donor's
#: after an exploit), in its first report after the restart
RESTORED_TRIAL, RESTORED_STEP = "pbt_restored_trial", "pbt_restored_step"
ORIGIN = "origin.json"
#: PBT: in a member's run folder, the step of the donor's checkpoint it last trained on from (its history since)
CLONED = ".gantune-cloned.json"
#: PBT: the report of a member a verdict ended, before its final one: ``"<status>: <reason>"``
VERDICT_KEY = "pbt_verdict"
#: the report of the step a health verdict fired at (``"pruned:<kind>"``): the trial ends after it with its own
#: final report, so ASHA deciding on the same report leaves the stop, and its reason, to the verdict
STOPPING_KEY = "gantune_stopping"

#: sends one report to Tune, with the checkpoint it carries (``tune.report`` in a trial; a test collects them)
Send = Callable[[dict[str, Any], "Checkpoint | None"], None]


def _tune_report(metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
    tune.report(metrics, checkpoint=checkpoint)


def run_trial(config: dict[str, Any], carried: bytes | None = None) -> None:
    """Ray Tune function trainable; ``config`` is built by the searcher (trial config + search settings),
    ``carried`` holds what the user's modules registered (``gantune.search.carry``)."""
    unpack(carried)  # before the config is read: it may name a loss, a metric or a dataset of theirs
    torch.set_num_threads(max(1, int(config["cpus"])))
    cfg = config_from_dict(config["trial"], f"trial {config['number']}")
    check_reported(cfg, config["objectives"], f"trial {config['number']}")
    share = float(config.get("gpu", 0.0))  # the share decides the device: the GPU Ray assigned, or the CPU
    cap_memory(share)
    pbt = bool(config.get("pbt"))
    if pbt:
        cfg = checkpoint_at_evaluations(cfg)
    ship = bool(config.get("ship_files"))
    run_dir = Path(tempfile.mkdtemp(prefix=f"gantune-trial-{config['number']:04d}-") if ship else config["run_dir"])
    try:
        _run_in(run_dir, config, cfg, share, pbt, Shipper(run_dir) if ship else None)
    finally:  # ASHA stops a trial inside its report (SystemExit): the node's copy went only after a last report
        if ship:
            shutil.rmtree(run_dir, ignore_errors=True)


def _run_in(run_dir: Path, config: dict[str, Any], cfg: TrialConfig, share: float, pbt: bool,
            shipper: Shipper | None) -> None:
    restored_from = restore_checkpoint(run_dir, tune.get_checkpoint() if pbt else None)
    # a clone counts its own seconds on, not its donor's (read before the resume cuts its metrics.jsonl)
    own = own_seconds(run_dir) if restored_from and restored_from[RESTORED_TRIAL] != config["number"] else None
    monitor = HealthMonitor.for_trial(cfg) if config["health"] else None
    should_stop = member_monitor(monitor, run_dir, restored_from, int(config["number"]))
    reporter = Reporter(config["objectives"][0], trial=int(config["number"]), run_dir=run_dir,
                        checkpoint_every=cfg.train.checkpoint_every if pbt else None, steps=cfg.train.steps,
                        restored_from=restored_from, monitor=monitor, shipper=shipper)
    final: dict[str, Any]
    try:
        result = train(cfg, report=reporter, should_stop=should_stop, run_dir=run_dir, on_samples=reporter.samples,
                       on_provenance=reporter.provenance, device=trial_device(share), resume=bool(restored_from),
                       seconds=own)
    except Exception as err:
        if not is_oom(err):
            raise
        final = out_of_memory_report(err, reporter.last_step)
        del err
        release_memory()
    else:
        if pbt:
            offer_replacement(result)
        final = final_report(result)
    final.update(reporter.take_pending())  # the grid of the step the trial stopped at
    if shipper is not None:
        final[FILES_KEY] = shipper.changed()
    tune.report(final)


def member_monitor(monitor: HealthMonitor | None, run_dir: Path, restored_from: dict[str, float],
                   number: int) -> ShouldStop | None:
    """The trial's ``should_stop``. A PBT member back from its own checkpoint (paused) is judged on its history
    since it last cloned a donor (``CLONED``), as a resumed ``gantune train`` is: a fresh monitor restarted the
    warm-up and patience at each pause, and a collapsed member never reached a verdict. A verdict in that history
    stops it at once. A clone trains another config from its donor's weights, judged afresh; the records of the
    config it replaced stay in its ``metrics.jsonl`` and are not its history. (On a cluster without a shared disk,
    ``ship_files``, the run folder is new at each start: no history to read.)"""
    if monitor is None or not restored_from:
        return monitor
    if restored_from[RESTORED_TRIAL] != number:  # a clone
        atomic_write(run_dir / CLONED, json.dumps({"step": restored_from[RESTORED_STEP]}).encode())
        return monitor
    since = json.loads((run_dir / CLONED).read_text())["step"] if (run_dir / CLONED).is_file() else -math.inf
    given = monitor.replay([r for r in read_metrics(run_dir) if since < r["step"] <= restored_from[RESTORED_STEP]])
    return monitor if given is None else (lambda record: given)


def own_seconds(run_dir: Path) -> tuple[float, float]:
    """The (wall, evaluation) seconds a PBT member had trained when it cloned a donor: its last record's, from its
    run folder. It trained on from the donor's checkpoint, which carries the donor's: its timeline bar and
    evaluation share counted the donor's whole training as its own."""
    records = read_metrics(run_dir)
    wall = next((float(r["wall_s"]) for r in reversed(records) if "wall_s" in r), 0.0)
    evaluating = next((float(r[EVAL_SECONDS]) for r in reversed(records) if EVAL_SECONDS in r), 0.0)
    return wall, evaluating


def check_reported(cfg: TrialConfig, objectives: list[str], where: str) -> None:
    """A trial whose evaluations do not report an objective fails at once: it trained its whole budget for no
    value (the load's check cannot see a ``data``/``eval`` key an expression sets)."""
    keys = metric_keys(cfg)
    if missing := [o for o in objectives if o not in keys]:
        raise ConfigError(f"{where}: search.objective {missing[0]!r} is not reported by this trial's evaluations "
                          f"(they report: {', '.join(keys) or 'nothing: eval.metrics is empty'})")


def checkpoint_at_evaluations(cfg: TrialConfig) -> TrialConfig:
    """The config a PBT member trains under: PBT decides at evaluations, so each one keeps the state another
    member may clone (a copy: the validated config is not changed in place)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_every=cfg.eval.every))


def restore_checkpoint(run_dir: Path, checkpoint: Checkpoint | None) -> dict[str, float]:
    """Prepare the run directory; return the report fields saying whose checkpoint the trial trains on from.

    Without a checkpoint the trial runs from step 0 and nothing of an interrupted attempt stays (empty fields).
    With one (PBT paused this member, or it cloned another) its state goes where ``train(resume=True)`` reads it.
    """
    if checkpoint is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return {}
    run_dir.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as src:
        copy_file(Path(src) / CHECKPOINT, run_dir / CHECKPOINT)
        origin = json.loads((Path(src) / ORIGIN).read_text())
    return {RESTORED_TRIAL: float(origin["trial"]), RESTORED_STEP: float(origin["step"])}


class Reporter:
    """The trial loop's ``report``: each record goes to Tune with what rides along.

    An evaluation record also carries ``objective`` (the search's first objective, what ASHA and PBT read), and
    with ``eval.repeat`` ``objective_repeat`` (its second measurement: a noise-aware ASHA's noise); the
    sample grid and the measurement provenance wait for the next report; the first report after a PBT restart
    carries ``restored_from``. The report of the step the trial's health ``monitor`` gave its verdict at (the loop
    asks it before reporting) carries ``STOPPING_KEY``, as does one with a non-finite value (the loop's own stop,
    which asks no monitor). With ``checkpoint_every`` (PBT) each evaluation at a multiple of it before the last
    step carries the run directory's checkpoint, which another member may clone, if the loop wrote it for this
    report: one it kept from before (weights gone non-finite are never saved) went out labelled with this step.
    On a cluster (``shipper``) each evaluation report carries the run folder's files changed since the last.
    ``last_step`` is the step of the last report: where an out-of-memory failure happened.
    """

    def __init__(self, objective: str, *, trial: int, run_dir: Path, checkpoint_every: int | None, steps: int,
                 restored_from: dict[str, float] | None = None, monitor: HealthMonitor | None = None,
                 send: Send = _tune_report, shipper: Shipper | None = None) -> None:
        self.objective = objective
        self.shipper = shipper
        self.monitor = monitor
        self.trial = trial
        self.run_dir = run_dir
        self.checkpoint_every = checkpoint_every
        self.steps = steps
        self.send = send
        self.last_step = 0.0
        self._pending: dict[str, Any] = {}
        self._restored_from = dict(restored_from or {})
        self._sent = self._written()  # the checkpoint there at the start (restored) is none this attempt wrote

    def samples(self, step: int, png: bytes) -> None:
        """``on_samples``: the grid rides with the next report."""
        self._pending["samples_png"] = base64.b64encode(png).decode()

    def provenance(self, measured: dict[str, Any]) -> None:
        """``on_provenance``: rides with the first report, to the driver's study."""
        self._pending[provenance.KEY] = json.dumps(measured)

    def take_pending(self) -> dict[str, Any]:
        """What waits for the next report (emptied)."""
        pending, self._pending = self._pending, {}
        return pending

    def __call__(self, record: Record) -> None:
        out: dict[str, Any] = {**record, **objective_fields(record, self.objective)}
        out.update(self.take_pending())
        out.update(self._restored_from)  # the first report after a restart says whose checkpoint it trained on from
        self._restored_from.clear()
        if self.monitor is not None and self.monitor.verdict is not None:  # it fired on this record: the last
            out[STOPPING_KEY] = self.monitor.verdict.status.value
        elif first_nonfinite(record) is not None:  # the loop stops on any non-finite value it records
            out[STOPPING_KEY] = Status.in_search(Status.DIVERGED).value
        if self.shipper is not None and "objective" in out and (files := self.shipper.changed()):
            out[FILES_KEY] = files  # the report ASHA may stop the trial at: its last
        self.last_step = record["step"]
        step = int(record["step"])
        every = self.checkpoint_every
        written = self._written()
        if (every is None or "objective" not in out or step % every or step >= self.steps or STOPPING_KEY in out
                or written in (None, self._sent)):
            self.send(out, None)  # (the state a verdict fired on is no checkpoint another member may clone)
            return
        self._sent = written
        with tempfile.TemporaryDirectory(prefix="gantune-pbt-") as tmp:  # Tune copies it into its storage
            copy_file(self.run_dir / CHECKPOINT, Path(tmp) / CHECKPOINT)
            (Path(tmp) / ORIGIN).write_text(json.dumps({"trial": self.trial, "step": step}))
            self.send(out, tune.Checkpoint.from_directory(tmp))

    def _written(self) -> tuple[int, int, int] | None:
        """Which file the run directory's checkpoint is: each save is a new file renamed into place
        (``atomic_save``), so a new one has another inode."""
        try:
            st = (self.run_dir / CHECKPOINT).stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns


def offer_replacement(result: TrialResult, send: Send = _tune_report) -> None:
    """PBT: a member that a verdict ended says so before it ends. The report blocks until Tune has decided: when
    PBT cloned a top member into it, Tune stops this attempt there and the member trains on from the donor's
    checkpoint (its budget is not left unspent); otherwise the call returns and the member ends with its verdict."""
    status = Status.in_search(result.status)
    if status.pruned:
        send({"step": float(result.steps), VERDICT_KEY: f"{status.value}: {result.reason}"}, None)


def final_report(result: TrialResult) -> dict[str, Any]:
    """The last report of a trial the loop ended: its status as the search counts it, why, and its last metrics."""
    final: dict[str, Any] = {
        "step": float(result.steps), STATUS_KEY: Status.in_search(result.status).value,
        REASON_KEY: result.reason, RULE_KEY: result.rule, "eval_fraction": result.eval_fraction,
        "trial_wall_s": result.wall_s}
    final.update({f"final/{k}": v for k, v in result.last_eval.items()})
    return final


def out_of_memory_report(err: BaseException, step: float) -> dict[str, Any]:
    """The last report of a trial that ran out of memory after reporting ``step``."""
    return {"step": step, STATUS_KEY: Status.FAILED_OOM.value,
            REASON_KEY: f"out of memory at step {int(step)}: {first_line(err)}"}


#: a shipped file's name with this ending is bytes to append to the file (``Shipper``: metrics.jsonl's new lines)
APPENDED = "+appended"


class Shipper:
    """The run directory's files (but the checkpoint, which only a resumed training needs) that changed since the
    last call, base64-encoded: what a trial on a cluster sends the driver with a report. metrics.jsonl, which only
    grows, goes whole once (replacing an earlier attempt's) and then as the lines added since (``APPENDED``):
    whole at each evaluation, the traffic grew with the square of the evaluations."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._sent: dict[str, tuple[int, int, int]] = {}  # each file as last sent: inode, mtime, size

    def changed(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in sorted(self.run_dir.rglob("*")):
            if not p.is_file() or p.name == CHECKPOINT or p.name.startswith("."):
                continue
            rel, st = str(p.relative_to(self.run_dir)), p.stat()
            before = self._sent.get(rel)
            if before == (st.st_ino, st.st_mtime_ns, st.st_size):
                continue
            data = p.read_bytes()
            if rel == METRICS and before is not None and before[0] == st.st_ino and before[2] <= len(data):
                out[rel + APPENDED] = base64.b64encode(data[before[2]:]).decode()
            else:
                out[rel] = base64.b64encode(data).decode()
            self._sent[rel] = (st.st_ino, st.st_mtime_ns, len(data))
        return out


def unpack_files(files: dict[str, str], run_dir: Path) -> None:
    """Write shipped files into the driver's run directory (the inverse of ``Shipper.changed``)."""
    for rel, data in files.items():
        target = run_dir / rel.removesuffix(APPENDED)
        if run_dir.resolve() not in target.resolve().parents:
            continue  # only files below the run directory
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(APPENDED):
            with open(target, "ab") as f:
                f.write(base64.b64decode(data))
        else:
            atomic_write(target, base64.b64decode(data))
