"""MLflow tracking: experiment = search name, one parent run per search, one nested child run per trial.

The only module that imports mlflow. Everything is logged from the driver process (the search's book calls
this tracker), so the default sqlite store is never written concurrently; a remote tracking server works the
same. A resumed search reuses its parent run; a trial that runs again after an interruption replaces its
stale child run, and one that had ended before MLflow heard of it (the driver killed while the tracking thread
was behind) is finished from its run directory and the study: exactly one ended child run per trial.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from gantune import provenance
from gantune.config import dotted, yaml_text
from gantune.dburl import (
    MLFLOW,
    absolute_sqlite,
    check_not_other,
    check_options,
    no_stray_folders,
    redacted,
    sqlite_file,
)
from gantune.errors import GantuneError
from gantune.events import (
    INTERRUPTED,
    REASON_KEY,
    RULE_KEY,
    RUN_FACTS,
    RUNNING,
    STATUS_KEY,
    Status,
    TrialOutcome,
    first_line,
    format_params,
    text_line,
    warn,
)
from gantune.health import objective_fields, quick_namer
from gantune.metrics import quick_keys
from gantune.rundir import BEST_GENERATOR, CONFIG, GENERATOR, RunDir, check_writable, trial_dirname, trial_run_dir
from gantune.sampling.study import SOURCE_UID, STUDY_UID, logged_params
from gantune.sampling.warm import RECIPE_KEY

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Tune's bookkeeping fields: not metrics of the GAN
_SKIP = {"timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "time_since_restore",
         "iterations_since_restore", "pid", "done", "step", "wall_s"}
_BATCH = 500
#: (metric, step) pairs a run holds
Logged = set[tuple[str, int]] | frozenset[tuple[str, int]]
#: the tag of a trial's run finished on ``--resume`` from its run directory and the study
MENDED = "MLflow had not recorded this trial's end; --resume logged the rest from its run directory and the study"
#: the step in the name MLflow gives a logged image (``images/samples+step+200+timestamp+…``; ``%`` before 3.x)
_IMAGE_STEP = re.compile(r"samples[+%]step[+%](\d+)[+%]")
#: the experiment kind MLflow 3 UIs up to the sidebar's GenAI / Model training switch read to open an experiment in
#: the model-training view (runs, metrics) rather than GenAI traces. MLflow 3.17's UI ignores the tag: it takes
#: the view from the page URL's ``workflowType`` (``ui_url``), else from the switch the browser remembers.
_KIND, _TRAINING = "mlflow.experimentKind", "custom_model_development"
#: the parent run's tag holding its study's ``STUDY_UID``
_UID_TAG = "gantune.study_uid"
#: where ``gantune ui`` serves a local store (its default port)
DEFAULT_UI = "http://127.0.0.1:5000"


def ui_url(base: str, experiment_id: str) -> str:
    """The experiment's page that opens on its runs table (the search's parent run and a child per trial) in the
    model-training view, whatever view the browser last used.

    MLflow 3.17 sends ``#/experiments/<id>`` to the GenAI overview (traces, latency, token usage) unless the
    page's ``workflowType`` is ``machine_learning`` (query parameter, else the choice the browser remembers from
    the sidebar's GenAI / Model training switch, GenAI by default); with it, to the runs table
    (``#/experiments/<id>/runs``), and the sidebar's links keep the parameter. A run's page opened from the table
    does not: it shows the remembered view (a fresh browser files it under "Evaluation runs") until the switch
    is set to Model training once. UIs before the switch do not read the parameter: MLflow 3's opened the runs
    table from the ``mlflow.experimentKind`` tag (``_experiment`` sets it), MLflow 2's by default.
    """
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def ui_base(tracking_uri: str) -> str | None:
    """Where the MLflow UI of ``tracking_uri`` is: a tracking server serves its own; a local store is served by
    ``gantune ui`` (``DEFAULT_UI``); ``None`` where gantune cannot tell (Databricks)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return None if tracking_uri.startswith(("databricks", "uc")) else DEFAULT_UI


def experiment_urls(tracking_uri: str, base: str, name: str | None = None) -> dict[str, str]:
    """``{experiment name: ui_url}`` of the store's experiments (MLflow's empty ``Default`` left out), or of the
    one called ``name`` (one-line ``GantuneError`` when there is none)."""
    client = connect(tracking_uri)
    found = {e.name: str(e.experiment_id) for e in client.search_experiments(max_results=50000)
             if not (e.name == "Default" and str(e.experiment_id) == "0")}
    if name is not None:
        if name not in found:
            have = ", ".join(sorted(found)) or "none"
            raise GantuneError(f"{name}: no such experiment in {tracking_uri} (experiments: {have})")
        found = {name: found[name]}
    return {n: ui_url(base, i) for n, i in sorted(found.items())}


def resolve_tracking_uri(flag: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory.

    A relative sqlite path is made absolute: MLflow caches stores by URI, so a relative one would stay bound to
    whichever directory it was first used in.
    """
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if "://" in uri:  # ``HTTP://host`` was checked as a server, then taken for a local store (artifacts put in
        head, rest = uri.split("://", 1)  # this machine's folder): the scheme in lower case, as MLflow reads it
        uri = f"{head.lower()}://{rest}"
    return check_uri(absolute_sqlite(uri))


def _flat(prefix: str, value: Any) -> dict[str, str]:
    """MLflow params: each leaf of ``value`` under its dotted path, as text."""
    return {k: str(v) for k, v in dotted(value, prefix).items()}


def _tag_resumed(client: MlflowClient, run: Any, params: dict[str, str], keys: Iterable[str]) -> None:
    """Params are write-once: each of ``keys`` whose value in ``params`` now differs from the one ``run`` first
    logged is a ``gantune.resumed.<param>`` tag (``(unset)`` for one no longer there); a tag whose value is back
    to the first is removed."""
    first, tags = run.data.params, run.data.tags
    for k in sorted(keys):
        tag = f"gantune.resumed.{k}"
        if first.get(k) != params.get(k):
            client.set_tag(run.info.run_id, tag, params.get(k, "(unset)"))
        elif tag in tags:
            client.delete_tag(run.info.run_id, tag)


def _log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Params as MLflow takes them: values cut at its 6,000 characters, at most 100 a call (a space with many
    settings was refused whole, its parent left with none)."""
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def log_provenance(logger: _RunLogger, measured: dict[str, Any]) -> None:
    """``provenance.*`` params of the run (the real-vs-real floor as ``provenance.floor.<metric>``)."""
    _log_params(logger.client, logger.run_id, _flat(provenance.ATTR, measured))


#: the tag of a run ended because its recording stopped at a failure: why (``abandon``)
LOST = "gantune.tracking_lost"


class _RunLogger:
    """Step metrics and sample images of one run, metrics batched (one sqlite transaction per batch)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.buffer: list[Metric] = []
        self.quick = quick_keys()  # the registry's scan once a run, not once a record

    def log(self, record: dict[str, Any], step: int, have: Logged = frozenset()) -> None:
        """``have``: the (metric, step) pairs the run already holds (a killed process logged them): not again."""
        ts, named = _now(), quick_namer(record, self.quick)
        for key, value in record.items():
            if key in _SKIP or key.startswith(("config/", "final/")) or isinstance(value, bool) \
                    or (named(key), step) in have:
                continue
            if isinstance(value, (int, float)):
                self.buffer.append(Metric(named(key), float(value), ts, step))
        if len(self.buffer) >= _BATCH:
            self.flush()

    def image(self, png: bytes, step: int) -> None:
        from PIL import Image

        self.client.log_image(self.run_id, Image.open(io.BytesIO(png)), key="samples", step=step)
        self.flush()

    def flush(self) -> None:
        while self.buffer:
            chunk, self.buffer = self.buffer[:_BATCH], self.buffer[_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def end(self, status: str, reason: str, steps: int | None, files: list[Path], state: int = RunStatus.FINISHED,
            rule: str = "") -> None:
        """Close the run with its status, reason and steps trained (``None``: not known here, an interrupted run's;
        0 is a number: a trial that failed before training, while its config was sampled, trained none)."""
        self.flush()
        tags = [RunTag("gantune.status", status), RunTag("gantune.reason", reason[:5000])]
        if rule:
            tags.append(RunTag("gantune.rule", rule))
        if steps is not None:
            tags.append(RunTag("gantune.steps", str(steps)))
        self.client.log_batch(self.run_id, tags=tags)
        try:
            for f in files:
                self.client.log_artifact(self.run_id, str(f), "weights" if f.suffix == ".pt" else None)
        except BaseException as err:  # a full disk, an artifact store the driver cannot reach: the run must not
            with suppress(Exception):  # stay RUNNING for good; the failure is said by the caller
                _end_lost(self.client, self.run_id, f"its files: {type(err).__name__}: {first_line(err)}")
            raise
        self.client.set_terminated(self.run_id, RunStatus.to_string(state))


def _end_lost(client: MlflowClient, run_id: str, why: str) -> None:
    """End a run whose recording stopped at a failure (``why``): KILLED, tagged ``gantune.tracking_lost``, unless
    it has ended already. Raises what the store raises: the store may be the failure."""
    if client.get_run(run_id).info.status == "RUNNING":
        client.log_batch(run_id, tags=[RunTag(LOST, why[:5000])])
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


def _logged(client: MlflowClient, run: Any) -> tuple[set[tuple[str, int]], set[int]]:
    """The (metric, step) pairs ``run`` holds and the steps it holds a sample grid of: what a run that a killed
    process left behind has (a step may be half there: a batch is written in chunks)."""
    rid = run.info.run_id
    metrics = {(key, m.step) for key in run.data.metrics for m in client.get_metric_history(rid, key)}
    grids = {int(m[1]) for f in client.list_artifacts(rid, "images") if (m := _IMAGE_STEP.search(f.path))}
    return metrics, grids


def check_live(exp: Any, uri: str) -> None:
    """An experiment deleted (in the MLflow UI, say) takes no runs: ``train`` ended in a traceback with its folder
    half written, and a search went on untracked. MLflow keeps it, and its name, until ``mlflow gc``."""
    if exp.lifecycle_stage == "deleted":
        raise GantuneError(f"--tracking-uri: MLflow experiment {exp.name!r} in {uri} is deleted: restore it "
                           f"(MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id "
                           f"{exp.experiment_id}), remove it for good (mlflow gc), or pass --no-tracking")


def _live(client: MlflowClient, uri: str, name: str) -> Any:
    """The experiment ``name``, ``None`` if there is none; one line if it is deleted or MLflow fails."""
    try:
        exp = client.get_experiment_by_name(name)
    except MlflowException as err:
        raise GantuneError(f"--tracking-uri: cannot use MLflow at {uri}: {err.message}") from None
    if exp is not None:
        check_live(exp, uri)
    return exp


def _check_store(uri: str, experiment: str, client: Callable[[], MlflowClient]) -> None:
    """Fail now, with one line, on what can be checked without writing: the URI, and ``experiment`` in a server
    or in a sqlite file that is there (a sqlite store not there yet is made once the rest has proved valid)."""
    db = check_store_writable(uri)
    if db is None or db.exists():
        _live(client(), uri, experiment)


def _experiment(client: MlflowClient, uri: str, name: str) -> str:
    """The experiment's id, created on first use (local stores keep artifacts in ./mlartifacts/<name>)."""
    exp = _live(client, uri, name)
    if exp is not None:
        if _KIND not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, _KIND, _TRAINING)
        return str(exp.experiment_id)
    remote = uri.startswith(("http://", "https://", "databricks"))
    location = None if remote else (Path.cwd() / "mlartifacts" / name).resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location, tags={_KIND: _TRAINING}))


#: URI schemes MLflow's tracking stores accept (``postgresql+psycopg2`` counts as ``postgresql``)
_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc",
            "uc")


def check_store_writable(uri: str) -> Path | None:
    """A sqlite store this process is about to write: its folder must take new files now (sqlite writes a journal
    beside the database). MLflow retried a read-only one for about 100 s, after the run's folder was made. Returns
    the store's sqlite file (``None`` for other stores)."""
    db = sqlite_file(uri) if uri.startswith("sqlite") else None
    if db is not None:
        check_writable(db, "--tracking-uri", is_dir=False)
    return db


def check_uri(uri: str) -> str:
    """Reject a URI no MLflow store takes, writing nothing (the store itself is opened later)."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in _SCHEMES:
        raise GantuneError(f"--tracking-uri: {uri}: unknown scheme {scheme!r} (MLflow takes "
                           f"{', '.join(s + '://' for s in _SCHEMES if s)}; a local folder, MLflow's file store, "
                           "only with MLFLOW_ALLOW_FILE_STORE=true: use sqlite:///mlflow.db)")
    check_options(uri, "--tracking-uri")
    db = sqlite_file(uri) if scheme == "sqlite" else None
    if scheme == "sqlite" and db is None:
        raise GantuneError(f"--tracking-uri: {uri}: names no database file (an in-memory one ends with this "
                           "process, and the runs with it); name a file, e.g. sqlite:///mlflow.db")
    if db is not None and not db.parent.is_dir():  # MLflow would create the missing folders, anywhere
        raise GantuneError(f"--tracking-uri: {uri}: folder {db.parent} does not exist")
    check_not_other(db, "--tracking-uri", uri, MLFLOW, "sqlite:///mlflow.db")
    return uri


def open_client(uri: str) -> MlflowClient:
    """MLflow's client of ``uri`` (making it opens the store: a sqlite one is created and migrated)."""
    with no_stray_folders(uri):
        return MlflowClient(tracking_uri=uri)


def connect(uri: str) -> MlflowClient:
    """A client for ``uri``, failing fast with one line when the URI cannot be used (bad scheme, no server).

    Creating the client creates a local sqlite store: call it only once the rest of the input is valid. A store
    this call began and could not finish because its disk filled while MLflow made its tables is removed: left
    half made, every later command failed on it ("table scorers already exists"), with space or without. (Only
    then: a store that failed otherwise may be another command's, making it at the same moment.)
    """
    db = sqlite_file(uri) if uri.startswith("sqlite") else None
    fresh = db is not None and not db.exists()
    try:
        client = open_client(uri)
        client.search_experiments(max_results=1)
    except Exception as err:
        if fresh and db is not None and "database or disk is full" in str(err):
            for made in (db, *(db.with_name(db.name + end) for end in ("-journal", "-wal", "-shm"))):
                with suppress(OSError):
                    made.unlink()
        # whole: a refused server's errno comes past 300 characters of urllib3's retry text
        first = text_line(str(getattr(err, "message", err)), limit=None) or type(err).__name__
        # a server that does not answer: the cause, not urllib3's retry paragraph around it
        if refused := re.search(r"\[Errno -?\d+\] [^\"')]+", first):
            first = f"no MLflow server answers ({refused.group(0)})"
        raise GantuneError(f"--tracking-uri: cannot use MLflow at {uri}: {_schema_advice(first, uri)}") from None
    return client


def _schema_advice(first: str, uri: str) -> str:
    """MLflow says "run 'mlflow db upgrade'" of any store whose schema is not its own; right for an older store,
    wrong for one a newer MLflow made (a store shared between environments), which no command here can use."""
    found = re.search(r"found version (\w+), but expected (\w+)", first)
    if found is None or found.group(1) == "None":  # no version at all: not a store of another MLflow
        return first
    have, head = found.groups()
    if _known_revision(have):
        return (f"its store was made by an older MLflow (schema {have}; MLflow {mlflow.__version__} has {head}): "
                f"back it up, then run `mlflow db upgrade {uri}`")
    return (f"its store was made by a newer MLflow than this one ({mlflow.__version__}, whose schemas end at "
            f"{head}; the store's is {have}): use that MLflow, or another --tracking-uri")


def _known_revision(revision: str) -> bool:
    """Whether this MLflow's migrations know ``revision`` (an older schema it can upgrade)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    folder = Path(mlflow.__file__).parent / "store" / "db_migrations"
    try:
        return ScriptDirectory(str(folder)).get_revision(revision) is not None
    except CommandError:
        return False


def hidden_cause(uri: str, who: str) -> str | None:
    """What a failed MLflow call's error hides: a sqlite store whose file was deleted while ``who`` (the search, the
    run) went on fails as "attempt to write a readonly database". ``None`` when there is nothing to add."""
    db = sqlite_file(uri)
    return None if db is None or db.exists() else f"its store {db} is gone (deleted while {who} ran)"


class MlflowTracker:
    """Observer of a search (see ``gantune.events.Observer``) that writes it to MLflow.

    ``experiment`` defaults to the search name; export's seed re-runs pass the original search's, and their
    parent run is nested under that search's parent run. Nothing is written before ``search_started``.
    """

    def __init__(self, tracking_uri: str, search_name: str, experiment: str | None = None) -> None:
        self.uri = tracking_uri
        self.name = search_name
        self.experiment = experiment or search_name
        self._client: MlflowClient | None = None
        self.experiment_id = ""
        self.parent_id = ""
        self.children: dict[int, str] = {}
        self.loggers: dict[int, _RunLogger] = {}
        self.lineages: dict[int, list[dict[str, Any]]] = {}  # PBT: each member's exploits so far (``pbt_step``)
        self._unended: list[tuple[Any, Any]] = []  # (study trial, its child run or None): for ``mend_trials``
        self.objective = ""  # the search's first objective (set by ``search_started``)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = connect(self.uri)
        return self._client

    def explain(self, err: Exception) -> str | None:
        """The cause of a failure the error hides (``ObserverThread``): ``hidden_cause``."""
        return hidden_cause(self.uri, "the search")

    def connect(self) -> None:
        """Check the tracking URI and the experiment (one-line ``GantuneError`` when unusable) writing nothing: a
        sqlite store that is not there yet is made as the search starts (``search_started``), so a search stopped
        before (a Ctrl-C while Ray starts) leaves none behind."""
        _check_store(self.uri, self.experiment, lambda: self.client)

    # -- search ---------------------------------------------------------------------------------------------
    def search_started(self, study: Any, space: Any, resumed: list[int]) -> None:
        if not self.experiment_id:
            self.experiment_id = _experiment(self.client, self.uri, self.experiment)
        attrs = study.user_attrs  # one read of the study's storage
        uid = attrs.get(STUDY_UID)
        parent = self._parent(study.study_name, uid)
        if parent:
            self.parent_id = parent[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            if LOST in parent[0].data.tags:  # an earlier invocation lost its tracking; this one records again
                self.client.delete_tag(self.parent_id, LOST)
        else:
            tags = {"gantune.role": "parent", "gantune.study": study.study_name, "gantune.search": self.name}
            if uid:
                tags[_UID_TAG] = uid
            if self.experiment != self.name:
                # the searched study's parent: not the newest of its name (another storage's search of it)
                outer = _of_study(self._find(_parents_of(self.experiment)), attrs.get(SOURCE_UID))
                if outer:
                    tags["mlflow.parentRunId"] = outer[0].info.run_id
            run = self.client.create_run(self.experiment_id, run_name=self.name, tags=tags)
            self.parent_id = run.info.run_id
        params = {k: v[:6000] for k, v in _flat("search", space.settings.model_dump()).items()}
        if not parent or not parent[0].data.params:  # new, or made by a driver killed before it described it
            self.client.log_text(self.parent_id, space.text, "space.yaml")  # first: params say it is described
            _log_params(self.client, self.parent_id, params)
        else:
            self._describe_resumed(parent[0], space.text, params)
        # params are write-once: a resumed search may ask for more trials, so the current target is a tag
        self.client.set_tag(self.parent_id, "gantune.trials", str(space.settings.trials))
        finished = {t.number: t for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self._unended, self.objective = [], space.settings.objectives[0]
        for child in self._find(f"tags.`mlflow.parentRunId` = '{self.parent_id}'"):
            number = int(child.data.tags.get("gantune.trial", -1))
            if number in resumed:  # interrupted last time: it runs again, from scratch
                if child.info.status == "RUNNING":  # a killed driver's: ended first, as `train` ends its own
                    self.client.set_terminated(child.info.run_id, "KILLED")
                self.client.delete_run(child.info.run_id)
                continue
            trial = finished.get(number)
            if trial is not None and trial.datetime_start is not None and \
                    child.info.start_time < trial.datetime_start.timestamp() * 1000 - 1000:
                continue  # older than the trial: a study of this name deleted and made again; not this trial's
            self.children[number] = child.info.run_id
            if trial is not None and child.info.status in ("RUNNING", "KILLED"):  # KILLED: Ctrl-C after the tell
                self._unended.append((trial, child))
        self._unended += [(finished[n], None) for n in sorted(finished.keys() - self.children.keys())]

    def _describe_resumed(self, parent: Any, text: str, params: dict[str, str]) -> None:
        """A search resumed with a space that changed what a resume may change (``search.defaults``, a fixed
        value, an expression): params are write-once, so each setting that now differs from them is a
        ``gantune.resumed.<param>`` tag (``(unset)`` for one the space dropped; a tag whose setting is back to
        the first run's is removed) and a changed file sits beside the first as ``space-resumed-<time>.yaml``
        (``gantune.resumed_space``). The trial count has its own tag. Descriptive only: a store that cannot
        give back the first file gets the new one anyway."""
        tags = parent.data.tags
        _tag_resumed(self.client, parent, params, (parent.data.params.keys() | params.keys()) - {"search.trials"})
        with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
            try:
                first: str | None = Path(self.client.download_artifacts(parent.info.run_id, "space.yaml",
                                                                        tmp)).read_text()
            except Exception:  # any artifact store's own error: the new file is then logged anyway
                first = None
        if first != text:
            name = f"space-resumed-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
            self.client.log_text(parent.info.run_id, text, name)
            self.client.set_tag(parent.info.run_id, "gantune.resumed_space", name)
        elif "gantune.resumed_space" in tags:
            self.client.delete_tag(parent.info.run_id, "gantune.resumed_space")

    def mend_trials(self) -> None:
        """Finish, after ``search_started``, the trials that ended in the study while MLflow did not record it
        (the driver killed while the tracking thread was behind, or a Ctrl-C right after a trial's end): a child
        still RUNNING or KILLED gets the rest of its history, one never started is made. From the run directory
        (metrics, grids, weights) and the study (status, reason, rule, steps); tag ``gantune.mended``. Posted,
        not waited for, and one trial that fails to mend is a warning: neither holds the search up."""
        for trial, child in self._unended:
            try:
                if child is None:  # MLflow never heard it start
                    attrs = trial.user_attrs
                    self.trial_started(trial.number, logged_params(trial), attrs.get("config") or {})
                    if attrs.get(RECIPE_KEY):
                        self.trial_recipe(trial.number, attrs[RECIPE_KEY])
                    logger = self.loggers.pop(trial.number)
                    if isinstance(measured := attrs.get(provenance.ATTR), dict):
                        log_provenance(logger, measured)
                    self._mend(logger, trial, set(), set())
                else:
                    if LOST in child.data.tags:  # ended by ``abandon``: it is whole again
                        self.client.delete_tag(child.info.run_id, LOST)
                    self._mend(_RunLogger(self.client, child.info.run_id), trial, *_logged(self.client, child))
            except (MlflowException, OSError, ValueError) as err:
                warn(f"MLflow: trial {trial.number} could not be finished from its run directory: "
                     f"{type(err).__name__}: {first_line(err)}")
        self._unended = []

    def _mend(self, logger: _RunLogger, trial: Any, have: Logged, grids: set[int]) -> None:
        attrs, files = trial.user_attrs, []
        lineage = attrs.get("pbt_lineage") or []
        if (path := trial_run_dir(attrs)) is not None and path.is_dir():
            run_dir = RunDir(path)
            records = run_dir.read_metrics()
            for record in records:  # with what the search reported beside it (ASHA's objective)
                logger.log(*on_pbt_axis(lineage, {**record, **objective_fields(record, self.objective)}), have)
            kept = {int(r["step"]) for r in records}
            for step, png in run_dir.grids():
                # a PBT member's grid of a stretch a clone of an earlier checkpoint left (its records cut, the grid
                # kept) is no grid of the run it went on with
                if pbt_step(lineage, step) not in grids and (not lineage or step in kept):
                    logger.image(png.read_bytes(), pbt_step(lineage, step))
            files = [f for f in (path / GENERATOR, path / BEST_GENERATOR, path / CONFIG) if f.is_file()]
        status = Status(attrs.get(STATUS_KEY, Status.FAILED.value))
        steps = int(attrs.get("steps", 0))
        # what the last report carried (unknown: None)
        logger.log({k: attrs[k] for k in RUN_FACTS if isinstance(attrs.get(k), (int, float))},
                   pbt_step(lineage, steps), have)
        self.client.set_tag(logger.run_id, "gantune.mended", MENDED)
        logger.end(status.value, attrs.get(REASON_KEY, ""), steps, files,
                   rule=attrs.get(RULE_KEY, ""), state=RunStatus.FAILED if status.failed else RunStatus.FINISHED)

    def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
        base = ui_base(redacted(self.uri))
        summary = {**summary, "tracking_uri": redacted(self.uri), "mlflow_experiment_id": self.experiment_id,
                   "mlflow_parent_run_id": self.parent_id,
                   "mlflow_ui": ui_url(base, self.experiment_id) if base is not None else None}
        pid = self.parent_id
        self.client.log_dict(pid, summary, "summary.json")
        best = summary.get("best")
        at = int(summary.get("invocations", 1)) - 1  # stepped by invocation: a resumed search's last are its own
        metrics = [Metric(f"trials_{k.replace(':', '_')}", float(v), _now(), at) for k, v in summary["counts"].items()]
        metrics += [Metric("trial_steps", float(summary["trial_steps"]), _now(), at),
                    Metric("budget_steps", float(summary["budget_steps"]), _now(), at),
                    Metric("wall_s", float(summary["wall_s"]), _now(), at)]  # over every invocation
        if best:
            metrics += [Metric(f"best_{k}", float(v), _now(), at) for k, v in best["values"].items()]
            self.client.log_text(pid, yaml_text(best["config"]), "best_config.yaml")
            self.client.set_tag(pid, "gantune.best_trial", str(best["trial"]))
        self.client.log_batch(pid, metrics=metrics)
        if summary.get("error"):  # every trial failed, or none ended with a result: the command exits 1
            self.client.set_tag(pid, "gantune.error", str(summary["error"])[:5000])
        elif "gantune.error" in self.client.get_run(pid).data.tags:  # an earlier invocation's: this one ended well
            self.client.delete_tag(pid, "gantune.error")
        self.client.set_terminated(pid, "FAILED" if summary.get("error") else "FINISHED")
        return summary

    def search_interrupted(self, running: list[int]) -> None:
        """Ctrl-C, or the search failed: the children still open (the ``running`` trials, and any whose end was
        not heard) and the parent end KILLED (``--resume`` re-runs those trials)."""
        for number in sorted({*running, *self.loggers}):
            logger = self.loggers.get(number)
            if logger is not None:
                logger.end(INTERRUPTED, "the search was interrupted; --resume runs this trial again", None, [],
                           state=RunStatus.KILLED)
                del self.loggers[number]
        if self.parent_id:
            self.client.set_terminated(self.parent_id, RunStatus.to_string(RunStatus.KILLED))

    def abandon(self, why: str) -> bool:
        """Recording stopped at ``why`` (``ObserverThread``): the runs still open, children then parent, end KILLED
        and tagged ``gantune.tracking_lost`` (they stayed RUNNING for good). ``--resume`` finishes the children of
        ended trials from the study and the run folders (``mend_trials``). Stops at the first call that fails."""
        open_runs = [logger.run_id for logger in self.loggers.values()]
        for run_id in open_runs + ([self.parent_id] if self.parent_id else []):
            _end_lost(self.client, run_id, why)
        self.loggers.clear()
        return True

    def study_replaced(self, study: str, uid: str | None) -> None:
        """The study ``study`` (``uid``: its ``STUDY_UID``) is about to be deleted and made again (``export``'s
        seed re-runs): the runs of it that a killed driver left RUNNING end KILLED (they stayed RUNNING for good,
        beside the new study's)."""
        try:  # a tidying: a store that fails here is the new search's to report, in its one line
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                return

            def find(filter_string: str) -> list[Any]:  # the search's own checks of the experiment come later
                return list(self.client.search_runs([exp.experiment_id], filter_string, max_results=10000))

            for parent in find(_parents_of(study)):
                if parent.data.tags.get(_UID_TAG) != uid:
                    continue
                for child in find(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"):
                    if child.info.status == "RUNNING":
                        self.client.set_terminated(child.info.run_id, "KILLED")
                if parent.info.status == "RUNNING":
                    self.client.set_terminated(parent.info.run_id, "KILLED")
        except MlflowException:
            return

    def reruns_chose(self, trial: int, chosen: str) -> None:
        """Tag the seed re-runs' parent run with the config ``export`` chose by its mean over seeds: the parent's
        ``gantune.best_trial`` names the best single re-run, one seed of a config that need not be the chosen."""
        if not self.parent_id:
            return
        try:
            self.client.set_tag(self.parent_id, "gantune.export_chosen_trial", str(trial))
            self.client.set_tag(self.parent_id, "gantune.export_chosen", chosen[:5000])
        except MlflowException as err:  # the export is written all the same: its header says the same
            warn(f"MLflow: the re-runs' parent run was not tagged with the chosen trial ({first_line(err)})")

    def _parent(self, study: str, uid: str | None) -> list[Any]:
        """The parent run of this very study (``uid``: its ``STUDY_UID``): the one tagged with it; else one made
        before parents carried it (no such tag). The parent of an earlier study of the same name (deleted and made
        again) is not this one's: its children would sit beside this study's, under the same trial numbers."""
        runs = _of_study(self._find(_parents_of(study)), uid)
        if runs and uid and _UID_TAG not in runs[0].data.tags:  # from now on it is this study's
            self.client.set_tag(runs[0].info.run_id, _UID_TAG, uid)
        return runs

    # -- trials ---------------------------------------------------------------------------------------------
    def trial_started(self, number: int, params: dict[str, Any], config: dict[str, Any]) -> None:
        run = self.client.create_run(self.experiment_id, run_name=trial_dirname(number), tags={
            "mlflow.parentRunId": self.parent_id, "gantune.trial": str(number), "gantune.search": self.name,
            "gantune.status": RUNNING})
        rid = run.info.run_id
        self.children[number] = rid
        self.loggers[number] = _RunLogger(self.client, rid)
        _log_params(self.client, rid, params)
        self.client.log_text(rid, yaml_text(config), "trial_config.yaml")

    def trial_recipe(self, number: int, recipe: str) -> None:
        """A warm-start trial: ``gantune.recipe`` names the known-good recipe it started from."""
        if number in self.children:
            self.client.set_tag(self.children[number], "gantune.recipe", recipe)

    def trial_result(self, number: int, result: dict[str, Any]) -> None:
        logger = self.loggers.get(number)
        if logger is None or "step" not in result:
            return
        result, step = on_pbt_axis(self.lineages.get(number, []), result)
        if isinstance(measured := result.get(provenance.KEY), dict):  # how the values are measured: once a trial
            log_provenance(logger, measured)
        logger.log(result, step)
        if "samples_png" in result:
            logger.image(base64.b64decode(result["samples_png"]), step)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        logger = self.loggers.get(outcome.number)
        if logger is None:
            return
        art = Path(outcome.artifacts) if outcome.artifacts else None
        files = [art / name for name in (GENERATOR, BEST_GENERATOR, CONFIG)] if art is not None else []
        files = [f for f in files if f.is_file()]
        logger.end(outcome.status.value, outcome.reason, outcome.steps, files, rule=outcome.rule,
                   state=RunStatus.FAILED if outcome.status.failed else RunStatus.FINISHED)
        del self.loggers[outcome.number]  # once ended: a run whose end failed is ``abandon``'s to end

    def trial_exploited(self, number: int, lineage: list[dict[str, Any]], config: dict[str, Any]) -> None:
        """PBT lineage as tags (params are write-once in MLflow: they keep the first sample) and each config the
        member switched to as an artifact ``pbt/config-step-<step>.yaml``."""
        self.lineages[number] = lineage
        rid = self.children.get(number)
        if rid is None:
            return
        last = lineage[-1]
        text = "; ".join(f"step {e['step']}: trial {e['from_trial']}"
                         + (f" after {e['after']}" if e.get("after") else "")
                         + (f", {format_params(e['changed'])}" if e["changed"] else "") for e in lineage)
        self.client.log_batch(rid, tags=[RunTag("gantune.pbt.exploits", str(len(lineage))),
                                         RunTag("gantune.pbt.parent", str(last["from_trial"])),
                                         RunTag("gantune.pbt.lineage", text[:5000])])
        self.client.log_text(rid, yaml_text(config),
                             f"pbt/config-step-{int(last['step']):06d}.yaml")

    # -- helpers --------------------------------------------------------------------------------------------
    def _find(self, filter_string: str) -> list[Any]:
        return list(self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=10000))


#: the metric a PBT member logs beside each record whose MLflow step is not its training step (``pbt_step``)
PBT_OFFSET = "pbt_step_offset"


def pbt_step(lineage: list[dict[str, Any]], step: int) -> int:
    """The MLflow step of a PBT member's record of training step ``step``, from its exploits (``lineage``). A
    member that cloned a donor's earlier checkpoint (a verdict ended its config: ``from_step`` past the clone's
    ``step``) trains those steps again: logged at their own steps, its MLflow run held two values at each and its
    charts ran back. Its steps go on from where it was instead: each such clone adds ``from_step - step`` to the
    steps after it. A step belongs to the latest such clone below it (each cut its metrics.jsonl there), so
    metrics.jsonl's records map as the live reports did; the training step is the MLflow step less
    ``pbt_step_offset``."""
    offset, marks = 0, []
    for e in lineage:
        if e.get("from_step") is not None and (back := int(e["from_step"]) - int(e["step"])) > 0:
            offset += back
            marks.append((int(e["step"]), offset))
    return step + next((moved for at, moved in reversed(marks) if at < step), 0)


def on_pbt_axis(lineage: list[dict[str, Any]], record: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A record of a PBT member and its MLflow step (``pbt_step``), with ``pbt_step_offset`` where they differ."""
    step = pbt_step(lineage, int(record["step"]))
    return ({**record, PBT_OFFSET: step - int(record["step"])} if step != record["step"] else record), step


def _parents_of(study: str) -> str:
    """The MLflow filter of the parent runs of searches run as the study ``study``."""
    return f"tags.`gantune.role` = 'parent' and tags.`gantune.study` = '{study}'"


def _of_study(parents: list[Any], uid: str | None) -> list[Any]:
    """Of the parent runs of a study's name, those of the study whose ``STUDY_UID`` is ``uid`` (tagged with it);
    else those made before parents carried it (untagged). Another study of the name (deleted and made again, or in
    another storage) has parents of its own, whose children sit beside this one's under the same trial numbers."""
    return [r for r in parents if r.data.tags.get(_UID_TAG) == uid] or \
        [r for r in parents if _UID_TAG not in r.data.tags]


def _now() -> int:
    return int(time.time() * 1000)


def _train_run_of(client: MlflowClient, experiment: str, key: str) -> Any:
    """The MLflow run of the ``gantune train`` run in folder ``key``, ``None`` if there is none: looked for in the
    experiment ``experiment`` first, then in every other (a run resumed with another ``name`` or ``origin``, which
    ``--resume`` allows, names another experiment: it started a second MLflow run); nothing is created. The folder
    is matched here, not in the filter: a path may hold quotes, which an MLflow filter string cannot escape."""
    own = client.get_experiment_by_name(experiment)
    first = [] if own is None else [own.experiment_id]
    return next(iter(_train_runs(client, first, key) or _train_runs(
        client, [e.experiment_id for e in client.search_experiments() if e.experiment_id not in first], key)), None)


def _train_runs(client: MlflowClient, ids: list[str], key: str) -> list[Any]:
    """The MLflow runs of ``gantune train`` runs in folder ``key`` in the experiments ``ids``."""
    runs = client.search_runs(ids, filter_string="tags.`gantune.role` = 'train'", max_results=10000) if ids else []
    return [r for r in runs if r.data.tags.get("gantune.run_dir") == key]


#: why a ``gantune train`` MLflow run still RUNNING is ended KILLED when its folder is trained anew
UNENDED = "killed without a chance to end its MLflow run (SIGKILL, a lost machine); its folder was trained anew"


class TrainRun:
    """MLflow run of ``gantune train``: its own run, tagged with the search its config was exported from.

    The run is opened at the first report, i.e. once config, data and device have proved valid, so bad input
    leaves nothing in MLflow. A resumed training run (same output directory) continues the same MLflow run, and
    its history ends up as metrics.jsonl has it: each step once. A killed run had logged to MLflow either less
    than its checkpoint holds (metrics still in the batch buffer) or more (steps after it, which the resumed run
    trains again): the first are logged from metrics.jsonl, the second not logged again, nor their sample grids.
    """

    def __init__(self, tracking_uri: str, cfg: Any, out_dir: Path, resume: bool) -> None:
        self.args = (tracking_uri, cfg, out_dir, resume)
        self.run_id: str | None = None
        self._logger: _RunLogger | None = None
        self._measured: dict[str, Any] | None = None
        self._have: Logged = frozenset()  # what MLflow holds of a resumed run: (metric, step) pairs, grid steps
        self._grids: set[int] = set()
        self._catch_up = resume
        self.lost: str | None = None  # why tracking stopped mid-run (the first MLflow call that failed)

    def check(self) -> None:
        """Fail now, with one line, on a store that can be checked without writing anything: a server, or a
        sqlite file that is there (a new one is made at the first report, once the rest proved valid)."""
        uri, cfg = self.args[0], self.args[1]
        _check_store(uri, cfg.origin.search if cfg.origin is not None else cfg.name, lambda: connect(uri))

    @property
    def logger(self) -> _RunLogger:
        if self._logger is None:
            self._logger = self._open(*self.args)
        return self._logger

    def _open(self, tracking_uri: str, cfg: Any, out_dir: Path, resume: bool) -> _RunLogger:
        self.client = connect(tracking_uri)
        origin = cfg.origin
        experiment = origin.search if origin is not None else cfg.name
        key = str(out_dir.resolve())
        found = _train_run_of(self.client, experiment, key) if resume else None
        if found is not None:  # in its own experiment (the name or origin resumed with may name another)
            run_id = self.run_id = found.info.run_id  # known before any call that may fail: _end_lost ends it
            self.client.update_run(run_id, status="RUNNING")
            if LOST in found.data.tags:  # its tracking was lost last time: what it lacks is logged below
                self.client.delete_tag(run_id, LOST)
            self._have, self._grids = _logged(self.client, found)
            # resumed with other --steps or --device: the params keep the first; tags say what it trains with now
            now = _flat("", {k: v for k, v in cfg.to_dict().items() if k != "origin"})
            _tag_resumed(self.client, found, now, now.keys())
        else:
            everywhere = [e.experiment_id for e in self.client.search_experiments()]
            for dead in _train_runs(self.client, everywhere, key):
                if dead.info.status == "RUNNING":  # this process holds the folder's lock: its runner is gone
                    _RunLogger(self.client, dead.info.run_id).end(INTERRUPTED, UNENDED, None, [],
                                                                  state=RunStatus.KILLED)
            exp_id = _experiment(self.client, tracking_uri, experiment)
            tags = {"gantune.role": "train", "gantune.run_dir": key, "gantune.config": cfg.name}
            if origin is not None:
                tags["gantune.search"] = origin.search
                tags["gantune.source_trials"] = ",".join(map(str, origin.trials))
            run_id = self.run_id = self.client.create_run(exp_id, run_name=f"train-{cfg.name}", tags=tags).info.run_id
            params = _flat("", {k: v for k, v in cfg.to_dict().items() if k != "origin"})
            _log_params(self.client, run_id, params)
        self.run_id = run_id
        return _RunLogger(self.client, run_id)

    def provenance(self, measured: dict[str, Any]) -> None:
        """How the run's values are measured: logged as params with its first report (which opens the run)."""
        self._measured = measured

    def _guarded(self, what: str, act: Callable[[], None]) -> None:
        """One MLflow call of the run. The first that fails (a server gone past its retries, a disk full) is one
        warning, and tracking stops for the rest of the run, which trains on: a production run of hours died
        mid-way in a traceback, no weights written (a search's tracker thread already went on without it)."""
        if self.lost is not None:
            return
        try:
            act()
        except Exception as err:  # whatever MLflow or its transport raises: the training is what matters
            self.lost = f"{type(err).__name__}: {hidden_cause(self.args[0], 'the run') or first_line(err)}"
            warn(f"MLflow ({redacted(self.args[0])}): {what} failed ({self.lost}); training goes on without "
                 "tracking")

    def report(self, record: dict[str, float]) -> None:
        self._guarded("logging", lambda: self._report(record))

    def _report(self, record: dict[str, float]) -> None:
        logger, step = self.logger, int(record["step"])  # opened first: that reads what a resumed run holds
        if self._measured is not None:
            log_provenance(logger, self._measured)
            self._measured = None
        self._catch_up_to(step)
        logger.log(record, step, self._have)

    def _catch_up_to(self, step: float) -> None:
        """Once, for a resumed run: log what metrics.jsonl holds before ``step`` that MLflow lacks (at the end when
        the run was killed after its last checkpoint, and so reports nothing more)."""
        if self._catch_up:
            self._catch_up, logger = False, self.logger  # opened first: that reads what MLflow holds
            for past in RunDir(self.args[2]).read_metrics():
                if past["step"] < step:
                    logger.log(past, int(past["step"]), self._have)

    def samples(self, step: int, png: bytes) -> None:
        if step not in self._grids:
            self._guarded("a sample grid", lambda: self.logger.image(png, step))

    def end(self, status: str, reason: str, steps: int, files: list[Path]) -> None:
        def close() -> None:
            self._catch_up_to(math.inf)
            self.logger.end(status, reason, steps, [f for f in files if f.exists()])

        self._guarded("closing the run", close)
        self._end_lost()

    def fail(self, reason: str, killed: bool = False) -> None:
        """Close an opened run as FAILED (the training raised) or KILLED (Ctrl-C: ``--resume`` continues it); a
        run never opened stays unopened."""
        if self._logger is not None:
            logger = self._logger
            self._guarded("closing the run", lambda: logger.end(
                INTERRUPTED if killed else Status.FAILED.value, reason, None, [],
                state=RunStatus.KILLED if killed else RunStatus.FAILED))
        self._end_lost()

    def _end_lost(self) -> None:
        """A run whose tracking stopped mid-way stayed RUNNING for good: it ends KILLED, tagged with why, in one
        last try (a run stopped before its end and continued with ``train --resume`` logs what it lacks from
        metrics.jsonl, and loses the tag)."""
        if self.lost is not None and self.run_id is not None:
            with suppress(Exception):  # the store may be what failed: said once already
                _end_lost(self.client, self.run_id, self.lost)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar on stderr for every artifact it downloads: noise among a command's lines, for
    files of a few lines or weights a command reports itself."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _reader(tracking_uri: str) -> MlflowClient | None:
    """A client of a store that is there; ``None`` for a sqlite store that does not exist, which opening it would
    create (a command that only reads, or fails, leaves no store behind)."""
    db = sqlite_file(tracking_uri) if tracking_uri.startswith("sqlite") else None
    return None if db is not None and not db.is_file() else open_client(tracking_uri)


def _study_parent(client: MlflowClient, experiment_id: str, study: str, uid: str | None) -> Any:
    """The newest parent run of the study ``study`` whose ``STUDY_UID`` is ``uid`` (else the newest made before
    parents carried it), ``None`` if there is none. Two searches of one name in two storages log into one
    experiment: the newest parent by name alone was the other search's, whose trial 1 was exported as this one's
    (the sampled values alike under one sampler seed) and whose run was tagged with this search's review."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=10000,
                              filter_string=_parents_of(study))
    return next(iter(_of_study(runs, uid)), None)


def _trial_run(client: MlflowClient | None, search: str, uid: str | None, number: int) -> str | None:
    """The id of trial ``number``'s child run under the search's own parent (``None``: none)."""
    exp = None if client is None else client.get_experiment_by_name(search)
    if client is None or exp is None or (parent := _study_parent(client, exp.experiment_id, search, uid)) is None:
        return None
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1,
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
                                            f"tags.`gantune.trial` = '{number}'")
    return str(runs[0].info.run_id) if runs else None


class StoreUnreadable(GantuneError):
    """The MLflow store cannot be read at all (a server gone, a damaged file): not one trial's problem."""


@contextmanager
def _reading(tracking_uri: str) -> Iterator[None]:
    """A store that cannot be read where a command looks up a trial's run (a server gone, a damaged file) is a
    one-line ``StoreUnreadable``: MLflow's own exception reached the command as a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, OSError, SQLAlchemyError) as err:  # a damaged sqlite file: sqlalchemy's own
        raise StoreUnreadable(f"MLflow ({redacted(tracking_uri)}) cannot be read: {type(err).__name__}: "
                           f"{first_line(err)}") from None


def trial_weights_logged(tracking_uri: str, search: str, uid: str | None, number: int) -> bool:
    """Whether trial ``number``'s child run logged weights (listed, not downloaded): what ``export --seeds
    --weights`` asks before its re-runs, which chose a trial with none and then failed, hours later."""
    with _reading(tracking_uri):
        client = _reader(tracking_uri)
        run_id = None if client is None else _trial_run(client, search, uid, number)
    if client is None or run_id is None:
        return False
    try:
        return bool(client.list_artifacts(run_id, "weights"))
    except MlflowException:
        return False


def download_trial_weights(tracking_uri: str, search: str, uid: str | None, number: int, dest: Path,
                           check: Callable[[Path], str | None]) -> list[str]:
    """Download a trial's ``weights/`` artifacts from its MLflow child run into ``dest`` itself (as a copy from
    the run directory lays them out; MLflow alone would put them in ``dest/weights/``), once ``check`` (why a
    file is not the trial's, or ``None``) passed every one: a refusal leaves ``dest`` as it was (the files of an
    earlier export were replaced, then deleted with the refused ones).

    The child is looked up under the search's own parent run (``uid``: the study's ``STUDY_UID``): an export's
    seed re-runs log children with the same trial numbers into the same experiment (under a parent of their
    own), so the trial tag alone can name a re-run's generator. ``[]`` when there is no such run or it logged no
    weights; a ``GantuneError`` "trial N's weights in MLflow (URI) are not usable (why)".
    """
    with _reading(tracking_uri):
        run_id = _trial_run(_reader(tracking_uri), search, uid, number)
    if run_id is None:
        return []
    with tempfile.TemporaryDirectory(dir=dest) as tmp, _no_progress_bar():
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights",
                                                        tracking_uri=tracking_uri, dst_path=tmp)
        except MlflowException:  # e.g. a child that logged no weights
            return []
        files = sorted(Path(local).iterdir())
        for f in files:
            if why := check(f):
                raise GantuneError(f"trial {number}'s weights in MLflow ({tracking_uri}) are not usable ({why})")
        got = [p.replace(dest / p.name) for p in files]
    return [str(p) for p in got]


def log_review(tracking_uri: str, search: str, uid: str | None, votes: list[dict[str, Any]],
               ranking: list[dict[str, Any]], favourite: str | None) -> str | None:
    """A person's review of the search (``gantune review``) as tags of its MLflow parent run: one tag per answer
    (``gantune.review.vote.0003`` = ``4 vs 7: 7``), the count, the favourite (a trial number, or why the votes
    name none yet: ``favourite``, ``None`` before a decided vote) and the ranking. Every tag is written
    each time, so MLflow matches the study (which holds the record) after any missed write.

    The parent run's id (of the study whose ``STUDY_UID`` is ``uid``); ``None`` when there is none to tag
    (searched with --no-tracking, another store, MLflow unreachable): the votes are in the study either way. A
    sqlite store that does not exist is not created.
    """
    try:
        client = _reader(tracking_uri)
        if client is None:
            return None
        exp = client.get_experiment_by_name(search)
        if exp is None or (parent := _study_parent(client, exp.experiment_id, search, uid)) is None:
            return None
        run_id: str = parent.info.run_id
        tags = [RunTag(f"gantune.review.vote.{n:04d}",
                       f"{v['a']} vs {v['b']}: {'skip' if v['winner'] is None else v['winner']} ({v['time']})")
                for n, v in enumerate(votes)]
        text = "; ".join(f"trial {r['trial']} (BT {r['score']:.3g}, won {r['wins']}/{r['comparisons']})"
                         for r in ranking)
        tags += [RunTag("gantune.review.votes", str(len(votes))), RunTag("gantune.review.ranking", text[:5000])]
        if favourite is not None:
            tags.append(RunTag("gantune.review.favourite", favourite))
        for i in range(0, len(tags), 100):
            client.log_batch(run_id, tags=tags[i:i + 100])
    except (MlflowException, OSError):
        return None
    return run_id
