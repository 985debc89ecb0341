"""Sample grids as Optuna artifacts of their trials, so that optuna-dashboard shows them on each trial's page.

The store is a folder beside the study: ``<sqlite file stem>-artifacts/`` next to a sqlite file
(``optuna-artifacts/`` beside the default ``optuna.db``), ``optuna-artifacts/`` in the working directory for
other storages (a database server has no folder of its own). One store serves every study of a storage (artifact
ids are UUIDs), as optuna-dashboard takes one ``--artifact-dir`` for the storage it opens.

Each trial keeps at most one artifact of each name: a trial that runs again (its driver was killed after the
grids were stored but before the trial was closed) writes its grids into the artifacts its first attempt made.
"""

from __future__ import annotations

import io
import shlex
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

from gantune.dburl import sqlite_file

#: the grid of the trial's last evaluation
LAST_EVALUATION = "samples-last-evaluation.png"
#: the grid at the step a trial stopped between evaluations (a pruned trial's end)
AT_STOP = "samples-at-stop.png"
GRID_NAMES = (LAST_EVALUATION, AT_STOP)


def artifact_dir(storage: str) -> Path:
    """Where the artifacts of the studies in ``storage`` go (an absolute path; created by the first upload)."""
    db = sqlite_file(storage)
    if db is not None:
        return db.resolve().with_name(f"{db.stem}-artifacts")
    return Path.cwd().resolve() / "optuna-artifacts"


def dashboard_command(storage: str, directory: Path) -> str:
    """The optuna-dashboard command line that shows the studies of ``storage`` with their artifacts."""
    return f"optuna-dashboard {shlex.quote(storage)} --artifact-dir {shlex.quote(str(directory))}"


def grids_of_ending(last_evaluation: bytes | None, at_stop: bytes | None) -> dict[str, bytes]:
    """The artifacts a trial's ending leaves: its last evaluation's grid, and the grid at its stop when it stopped
    between evaluations (the trial loop pictures that step only then)."""
    grids = {LAST_EVALUATION: last_evaluation, AT_STOP: at_stop}
    return {name: png for name, png in grids.items() if png is not None}


def store_grids(trial: optuna.Trial, directory: Path, last_evaluation: bytes | None,
                at_stop: bytes | None) -> dict[str, str]:
    """Store a trial's grids (PNG bytes) as its artifacts; ``{filename: artifact id}``.

    Must run before the trial is told (Optuna refuses attributes on a finished trial). A grid name the trial
    already has gets the new bytes under its old id (Optuna cannot delete an artifact's record); one its earlier
    attempt made that this attempt has no grid for gets this attempt's last grid, so that none shows the old run.
    """
    grids = grids_of_ending(last_evaluation, at_stop)
    if not grids:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(directory)
    have = {m.filename: m.artifact_id for m in get_all_artifact_meta(trial) if m.filename in GRID_NAMES}
    latest = list(grids.values())[-1]  # the grid at the trial's end
    for name in have.keys() - grids.keys():
        grids[name] = latest
    ids: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gantune-grid-") as tmp:
        for name, png in grids.items():
            if name in have:
                store.write(have[name], io.BytesIO(png))
                ids[name] = have[name]
                continue
            path = Path(tmp) / name  # upload_artifact names the artifact after the file
            path.write_bytes(png)
            ids[name] = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                        mimetype="image/png")
    return ids
