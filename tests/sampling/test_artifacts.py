"""Sample grids as Optuna artifacts, on a real sqlite study and a real file-system artifact store."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from PIL import Image

from gantune.sampling.artifacts import AT_STOP, LAST_EVALUATION, artifact_dir, dashboard_command, store_grids


def _png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (shade, shade, shade)).save(buf, format="PNG")
    return buf.getvalue()


def _stored(trial: optuna.Trial, directory: Path) -> dict[str, bytes]:
    """``{filename: bytes}`` of the trial's artifacts, each name once (a second one fails here)."""
    store = FileSystemArtifactStore(directory)
    metas = get_all_artifact_meta(trial)
    names = [m.filename for m in metas]
    assert len(names) == len(set(names)), names
    assert all(m.mimetype == "image/png" for m in metas)
    out = {}
    for m in metas:
        with store.open_reader(m.artifact_id) as f:
            out[m.filename] = f.read()
    return out


def test_the_store_sits_beside_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert artifact_dir(f"sqlite:///{tmp_path / 'optuna.db'}") == tmp_path / "optuna-artifacts"
    assert artifact_dir(f"sqlite:///{tmp_path / 'runs.sqlite3'}") == tmp_path / "runs-artifacts"
    monkeypatch.chdir(tmp_path)
    assert artifact_dir("postgresql://user@host/db") == tmp_path.resolve() / "optuna-artifacts"
    assert dashboard_command(f"sqlite:///{tmp_path / 'a b.db'}", tmp_path / "a b-artifacts") == (
        f"optuna-dashboard 'sqlite:///{tmp_path}/a b.db' --artifact-dir '{tmp_path}/a b-artifacts'")


def test_a_trial_keeps_its_grids_and_a_rerun_replaces_them(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")
    store = tmp_path / "o-artifacts"
    done, pruned = study.ask(), study.ask()

    store_grids(done, store, _png(10), None)  # completed: its last evaluation
    store_grids(pruned, store, _png(20), _png(30))  # pruned between evaluations: both
    assert _stored(done, store) == {LAST_EVALUATION: _png(10)}
    assert _stored(pruned, store) == {LAST_EVALUATION: _png(20), AT_STOP: _png(30)}

    # the pruned trial runs again (its driver was killed before the tell) and completes at an evaluation:
    # its grids are this attempt's, under the same names, none twice
    store_grids(pruned, store, _png(40), None)
    assert _stored(pruned, store) == {LAST_EVALUATION: _png(40), AT_STOP: _png(40)}
    assert _stored(done, store) == {LAST_EVALUATION: _png(10)}
    assert len(list(store.iterdir())) == 3  # no orphan files either

    assert store_grids(study.ask(), store, None, None) == {}  # a trial with no grid (failed at once) leaves none
