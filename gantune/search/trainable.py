"""The function Ray runs for each trial: gantune's trial loop with Tune's ``report`` and the health monitor.

Only evaluation records carry ``objective`` (the search's first objective), so ASHA decides at evaluation
steps only. The last report carries the trial's own ending (``gantune_status``); a trial stopped by the
scheduler never gets to send one. Sample grids travel to the driver as PNG bytes in the results.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from gantune.config import config_from_dict
from gantune.health import HealthMonitor
from gantune.rundir import BEST_GENERATOR, CONFIG, GENERATOR
from gantune.trial import train

FINAL_KEY = "gantune_status"
#: the trial loop's own endings in the search's vocabulary
SEARCH_STATUS = {"diverged": "pruned:diverged"}


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable; ``config`` is built by the searcher (trial config + search settings)."""
    torch.set_num_threads(max(1, int(config["cpus"])))
    cfg = config_from_dict(config["trial"], f"trial {config['number']}")
    objectives: list[str] = config["objectives"]
    monitor = HealthMonitor(cfg.health) if config["health"] else None
    pending_png: dict[str, Any] = {}

    def on_samples(step: int, png: bytes) -> None:
        pending_png["samples_png"] = base64.b64encode(png).decode()

    def report(record: dict[str, float]) -> None:
        out: dict[str, Any] = dict(record)
        if objectives[0] in record:
            out["objective"] = record[objectives[0]]
        out.update(pending_png)
        pending_png.clear()
        tune.report(out)

    run_dir = config["run_dir"]
    result = train(cfg, report=report, should_stop=monitor, run_dir=run_dir, on_samples=on_samples)
    final: dict[str, Any] = {"step": float(result.steps), FINAL_KEY: SEARCH_STATUS.get(result.status, result.status),
                             "gantune_reason": result.reason, "eval_fraction": result.eval_fraction,
                             "trial_wall_s": result.wall_s}
    final.update({f"final/{k}": v for k, v in result.last_eval.items()})
    # weights travel to the driver's storage as a Tune checkpoint (works on a cluster, not only locally)
    with tempfile.TemporaryDirectory() as tmp:
        for name in (GENERATOR, BEST_GENERATOR, CONFIG):
            if (Path(run_dir) / name).exists():
                shutil.copy2(Path(run_dir) / name, Path(tmp) / name)
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
