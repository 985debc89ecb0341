"""MLflow tracking: experiment = search name, one parent run per search, one nested child run per trial.

The only module that imports mlflow. Everything is logged from the driver process (the search's book calls
this tracker), so the default sqlite store is never written concurrently; a remote tracking server works the
same. A resumed search reuses its parent run; a trial that runs again after an interruption replaces its
stale child run, so there is exactly one child run per trial.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from gantune.errors import GantuneError
from gantune.search.book import TrialOutcome
from gantune.study import absolute_sqlite

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Tune's bookkeeping fields: not metrics of the GAN
_SKIP = {"timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "time_since_restore",
         "iterations_since_restore", "pid", "done", "step", "wall_s"}
_BATCH = 500


def resolve_tracking_uri(flag: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory.

    A relative sqlite path is made absolute: MLflow caches stores by URI, so a relative one would stay bound to
    whichever directory it was first used in.
    """
    return absolute_sqlite(flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def _flat(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)
    return out


class MlflowTracker:
    """Observer of a search (see ``gantune.search.book.Observer``) that writes it to MLflow."""

    def __init__(self, tracking_uri: str, search_name: str) -> None:
        self.uri = tracking_uri
        self.name = search_name
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = ""
        self.parent_id = ""
        self.children: dict[int, str] = {}
        self.pending: dict[int, list[Metric]] = {}

    # -- search ---------------------------------------------------------------------------------------------
    def search_started(self, study: Any, space: Any, resumed: list[int]) -> None:
        try:
            exp = self.client.get_experiment_by_name(self.name)
        except MlflowException as err:
            raise GantuneError(f"--tracking-uri: cannot use MLflow at {self.uri}: {err.message}") from None
        if exp is None:
            location = None if "://" in self.uri and not self.uri.startswith("sqlite") else (
                (Path.cwd() / "mlartifacts" / self.name).resolve().as_uri())
            self.experiment_id = self.client.create_experiment(self.name, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        parent = self._find(f"tags.`gantune.role` = 'parent' and tags.`gantune.study` = '{study.study_name}'")
        if parent:
            self.parent_id = parent[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=self.name, tags={
                "gantune.role": "parent", "gantune.study": study.study_name, "gantune.search": self.name})
            self.parent_id = run.info.run_id
            settings = space.settings.model_dump()
            params = _flat("search", settings, {})
            self.client.log_batch(self.parent_id, params=[Param(k, v[:6000]) for k, v in params.items()])
            self.client.log_text(self.parent_id, space.text, "space.yaml")
        # params are write-once: a resumed search may ask for more trials, so the current target is a tag
        self.client.set_tag(self.parent_id, "gantune.trials", str(space.settings.trials))
        for child in self._find(f"tags.`mlflow.parentRunId` = '{self.parent_id}'"):
            number = int(child.data.tags.get("gantune.trial", -1))
            if number in resumed:  # interrupted last time: it runs again, from scratch
                self.client.delete_run(child.info.run_id)
            else:
                self.children[number] = child.info.run_id

    def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
        summary = {**summary, "tracking_uri": self.uri, "mlflow_experiment_id": self.experiment_id,
                   "mlflow_parent_run_id": self.parent_id}
        pid = self.parent_id
        self.client.log_dict(pid, summary, "summary.json")
        best = summary.get("best")
        metrics = [Metric(f"trials_{k.replace(':', '_')}", float(v), _now(), 0) for k, v in summary["counts"].items()]
        metrics += [Metric("trial_steps", float(summary["trial_steps"]), _now(), 0),
                    Metric("budget_steps", float(summary["budget_steps"]), _now(), 0),
                    Metric("wall_s", float(summary["wall_s"]), _now(), 0)]
        if best:
            metrics += [Metric(f"best_{k}", float(v), _now(), 0) for k, v in best["values"].items()]
            self.client.log_text(pid, yaml.safe_dump(best["config"], sort_keys=False), "best_config.yaml")
            self.client.set_tag(pid, "gantune.best_trial", str(best["trial"]))
        self.client.log_batch(pid, metrics=metrics)
        self.client.set_terminated(pid, "FINISHED")
        return summary

    # -- trials ---------------------------------------------------------------------------------------------
    def trial_started(self, number: int, params: dict[str, Any], config: dict[str, Any]) -> None:
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:04d}", tags={
            "mlflow.parentRunId": self.parent_id, "gantune.trial": str(number), "gantune.search": self.name,
            "gantune.status": "running"})
        rid = run.info.run_id
        self.children[number] = rid
        self.pending[number] = []
        self.client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        self.client.log_text(rid, yaml.safe_dump(config, sort_keys=False), "trial_config.yaml")

    def trial_result(self, number: int, result: dict[str, Any]) -> None:
        rid = self.children.get(number)
        if rid is None or "step" not in result:
            return
        step = int(result["step"])
        ts = _now()
        buf = self.pending.setdefault(number, [])
        for key, value in result.items():
            if key in _SKIP or key.startswith(("config/", "final/")) or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                buf.append(Metric(key, float(value), ts, step))
        if "samples_png" in result:
            from PIL import Image

            image = Image.open(io.BytesIO(base64.b64decode(result["samples_png"])))
            self.client.log_image(rid, image, key="samples", step=step)
        if len(buf) >= _BATCH or "samples_png" in result:
            self._flush(number)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        rid = self.children.get(outcome.number)
        if rid is None:
            return
        self._flush(outcome.number)
        self.client.log_batch(rid, tags=[RunTag("gantune.status", outcome.status),
                                         RunTag("gantune.reason", outcome.reason[:5000]),
                                         RunTag("gantune.steps", str(outcome.steps))])
        if outcome.artifacts and Path(outcome.artifacts).is_dir():
            for f in sorted(Path(outcome.artifacts).iterdir()):
                self.client.log_artifact(rid, str(f), "weights" if f.suffix == ".pt" else None)
        status = RunStatus.to_string(RunStatus.FAILED if outcome.status == "failed" else RunStatus.FINISHED)
        self.client.set_terminated(rid, status)

    # -- helpers --------------------------------------------------------------------------------------------
    def _flush(self, number: int) -> None:
        buf = self.pending.get(number)
        rid = self.children.get(number)
        while buf and rid:
            chunk, buf[:] = buf[:_BATCH], buf[_BATCH:]
            self.client.log_batch(rid, metrics=chunk)

    def _find(self, filter_string: str) -> list[Any]:
        return list(self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=10000))


def _now() -> int:
    return int(time.time() * 1000)


def parent_summary(tracking_uri: str, search_name: str) -> dict[str, Any] | None:
    """The summary a finished search left on its parent run (for export and report)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(search_name)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`gantune.role` = 'parent'", max_results=1)
    if not runs:
        return None
    path = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="summary.json",
                                               tracking_uri=tracking_uri)
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data
