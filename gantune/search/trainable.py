"""The function Ray runs for each trial: gantune's trial loop with Tune's ``report`` and the health monitor.

Only evaluation records carry ``objective`` (the search's first objective), so ASHA decides at evaluation
steps only. The last report carries the trial's own ending (``gantune_status``); a trial stopped by the
scheduler never gets to send one. Sample grids travel to the driver as PNG bytes in the results; on a
cluster (``ship_files``) the trial runs in a directory of its node and its last report carries the run
directory's files (weights, config, metrics, grids) to the driver, which may not share its disk. Under PBT each
evaluation report carries the trial's checkpoint, and a trial restarted by PBT (paused, or cloned from another
member with explored hyperparameters) trains on from the checkpoint Tune hands back.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from gantune import provenance
from gantune.catalogue import config_from_dict
from gantune.devices import memory_fraction, trial_device
from gantune.events import Status, first_line
from gantune.health import HealthMonitor
from gantune.rundir import CHECKPOINT
from gantune.trial import is_oom, release_memory, train

FINAL_KEY = "gantune_status"
FILES_KEY = "gantune_files"
#: PBT: the trial and step of the checkpoint a restarted member trains on from (its own after a pause, a donor's
#: after an exploit), in its first report after the restart
RESTORED_TRIAL, RESTORED_STEP = "pbt_restored_trial", "pbt_restored_step"
ORIGIN = "origin.json"


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable; ``config`` is built by the searcher (trial config + search settings)."""
    torch.set_num_threads(max(1, int(config["cpus"])))
    cfg = config_from_dict(config["trial"], f"trial {config['number']}")
    share = float(config.get("gpu", 0.0))  # the share decides the device: the GPU Ray assigned, or the CPU
    if (fraction := memory_fraction(share)) is not None:
        torch.cuda.set_per_process_memory_fraction(fraction)
    objectives: list[str] = config["objectives"]
    monitor = HealthMonitor.for_trial(cfg) if config["health"] else None
    pending: dict[str, Any] = {}
    last_step = [0.0]

    def on_samples(step: int, png: bytes) -> None:
        pending["samples_png"] = base64.b64encode(png).decode()

    def on_provenance(measured: dict[str, Any]) -> None:  # rides with the first report, to the driver's study
        pending[provenance.KEY] = json.dumps(measured)

    pbt = bool(config.get("pbt"))
    if pbt:  # PBT decides at evaluations: each one reports the state another member may clone
        cfg.train.checkpoint_every = cfg.eval.every

    def report(record: dict[str, float]) -> None:
        out: dict[str, Any] = dict(record)
        if objectives[0] in record:
            out["objective"] = record[objectives[0]]
        out.update(pending)
        pending.clear()
        last_step[0] = record["step"]
        step = int(record["step"])
        out.update(restored_from)  # the first report after a restart says whose checkpoint it trained on from
        restored_from.clear()
        if pbt and "objective" in out and step % cfg.train.checkpoint_every == 0 and step < cfg.train.steps:
            with tempfile.TemporaryDirectory(prefix="gantune-pbt-") as tmp:  # Tune copies it into its storage
                shutil.copy(run_dir / CHECKPOINT, tmp)
                (Path(tmp) / ORIGIN).write_text(json.dumps({"trial": config["number"], "step": step}))
                tune.report(out, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(out)

    ship = bool(config.get("ship_files"))
    run_dir = Path(tempfile.mkdtemp(prefix=f"gantune-trial-{config['number']:04d}-") if ship else config["run_dir"])
    restored = tune.get_checkpoint() if pbt else None
    restored_from: dict[str, float] = {}
    if restored is None:
        shutil.rmtree(run_dir, ignore_errors=True)  # a trial runs from step 0: nothing of an interrupted attempt stays
    else:  # PBT paused this member, or it cloned another: train on from the state Tune hands back
        run_dir.mkdir(parents=True, exist_ok=True)
        with restored.as_directory() as src:
            shutil.copy(Path(src) / CHECKPOINT, run_dir / CHECKPOINT)
            origin = json.loads((Path(src) / ORIGIN).read_text())
        restored_from.update({RESTORED_TRIAL: float(origin["trial"]), RESTORED_STEP: float(origin["step"])})
    final: dict[str, Any]
    try:
        result = train(cfg, report=report, should_stop=monitor, run_dir=run_dir, on_samples=on_samples,
                       on_provenance=on_provenance, device=trial_device(share), resume=restored is not None)
    except Exception as err:
        if not is_oom(err):
            raise
        reason = f"out of memory at step {int(last_step[0])}: {first_line(err)}"
        del err
        release_memory()
        final = {"step": last_step[0], FINAL_KEY: Status.FAILED_OOM.value, "gantune_reason": reason}
    else:
        final = {"step": float(result.steps), FINAL_KEY: Status.in_search(result.status).value,
                 "gantune_reason": result.reason, "gantune_rule": result.rule, "eval_fraction": result.eval_fraction,
                 "trial_wall_s": result.wall_s}
        final.update({f"final/{k}": v for k, v in result.last_eval.items()})
    final.update(pending)  # the grid of the step the trial stopped at
    if ship:
        final[FILES_KEY] = pack_files(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    tune.report(final)


def pack_files(run_dir: Path) -> dict[str, str]:
    """The run directory's files (but the checkpoint, which only a resumed training needs), base64-encoded."""
    return {str(p.relative_to(run_dir)): base64.b64encode(p.read_bytes()).decode()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != CHECKPOINT and not p.name.startswith(".")}


def unpack_files(files: dict[str, str], run_dir: Path) -> None:
    """Write shipped files into the driver's run directory (the inverse of ``pack_files``)."""
    from gantune.rundir import atomic_write

    for rel, data in files.items():
        target = run_dir / rel
        if run_dir.resolve() not in target.resolve().parents:
            continue  # only files below the run directory
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, base64.b64decode(data))
