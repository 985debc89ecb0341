"""Each trial's sample grids as Optuna artifacts, after one small real search (local Ray, sqlite Optuna), and
optuna-dashboard showing them on the trial's page in a real headless Chromium."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from gantune.cli import _print_search_summary
from gantune.rundir import trial_dirname
from gantune.sampling.artifacts import AT_STOP, LAST_EVALUATION
from gantune.sampling.space import load_space
from gantune.search import SearchOptions, run_search
from tests.conftest import answers, enqueue_lrs, serve_on_free_port, tiny_space

PNG = b"\x89PNG\r\n\x1a\n"
EVAL_EVERY = 50
#: a healthy trial that completes at an evaluation, and one that diverges at its first log step (10), before
#: its first evaluation: its only grid is the one at its stop
LRS = [0.001, 1000000.0]
SPACE = tiny_space("dash", 2, 100, EVAL_EVERY, LRS, log_every=10, n_samples=200)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@dataclass
class Searched:
    root: Path
    storage: str
    summary: dict[str, Any]
    #: each trial's artifacts (id, filename) before the search was resumed for one more trial
    before_resume: dict[int, set[tuple[str, str]]]


def _artifacts(storage: str) -> dict[int, set[tuple[str, str]]]:
    rdb = RDBStorage(storage)
    study = optuna.load_study(study_name="dash", storage=rdb)
    return {t.number: {(m.artifact_id, m.filename) for m in get_all_artifact_meta(t, storage=rdb)}
            for t in study.trials}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> Iterator[Searched]:
    """Two trials, then the search resumed for a third: its own storage, run dirs and artifacts in a tmp dir."""
    root = tmp_path_factory.mktemp("dashboard")
    old_cwd, old_cache = Path.cwd(), os.environ.get("GANTUNE_CACHE_DIR")
    os.chdir(root)
    os.environ["GANTUNE_CACHE_DIR"] = str(root / "cache")
    try:
        (root / "space.yaml").write_text(SPACE)
        storage = f"sqlite:///{root / 'optuna.db'}"
        enqueue_lrs(storage, "dash", LRS)
        opts = SearchOptions(storage=storage, runs_dir=str(root / "runs"), quiet=True)
        run_search(load_space(root / "space.yaml"), opts)
        before = _artifacts(storage)
        resumed = SearchOptions(trials=3, resume=True, storage=storage, runs_dir=str(root / "runs"), quiet=True)
        summary = run_search(load_space(root / "space.yaml"), resumed)
        yield Searched(root, storage, summary, before)
    finally:
        os.chdir(old_cwd)
        if old_cache is None:
            os.environ.pop("GANTUNE_CACHE_DIR", None)
        else:
            os.environ["GANTUNE_CACHE_DIR"] = old_cache


def _grids(s: Searched, t: FrozenTrial) -> dict[str, bytes]:
    """``{filename: bytes}`` of a trial's artifacts, as Optuna lists them."""
    store = FileSystemArtifactStore(s.root / "optuna-artifacts")  # beside optuna.db
    out = {}
    for m in get_all_artifact_meta(t, storage=RDBStorage(s.storage)):
        assert m.mimetype == "image/png" and m.filename not in out
        with store.open_reader(m.artifact_id) as f:
            out[m.filename] = f.read()
    return out


def _run_grid(s: Searched, t: FrozenTrial, step: int) -> bytes:
    """The grid the trial's run directory kept for ``step``."""
    return (s.root / "runs" / "dash" / trial_dirname(t.number) / "samples" / f"step_{step:07d}.png").read_bytes()


def test_each_finished_trial_keeps_its_grids_as_optuna_artifacts(searched: Searched) -> None:
    study = optuna.load_study(study_name="dash", storage=searched.storage)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:
        grids = _grids(searched, t)
        assert grids and all(png.startswith(PNG) for png in grids.values()), t.number
        steps = int(t.user_attrs["steps"])
        if t.state == TrialState.COMPLETE:  # ended at its last evaluation: that grid
            assert grids == {LAST_EVALUATION: _run_grid(searched, t, steps)}
        else:  # pruned between evaluations: the grid of the step it stopped at (and of its last evaluation)
            assert steps % EVAL_EVERY and grids[AT_STOP] == _run_grid(searched, t, steps)
            last_eval = steps - steps % EVAL_EVERY
            assert grids.get(LAST_EVALUATION) == (_run_grid(searched, t, last_eval) if last_eval else None)
    assert {trials[0].state, trials[1].state} == {TrialState.COMPLETE, TrialState.PRUNED}


def test_a_resumed_search_leaves_the_done_trials_artifacts_alone(searched: Searched) -> None:
    after = _artifacts(searched.storage)
    assert {n: after[n] for n in searched.before_resume} == searched.before_resume
    assert after[2] and not after[2] & set().union(*searched.before_resume.values())
    files = {p.name for p in (searched.root / "optuna-artifacts").iterdir()}
    assert files == {artifact_id for metas in after.values() for artifact_id, _ in metas}


def test_the_summary_names_the_store_and_the_dashboard_command(searched: Searched,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    store = searched.root / "optuna-artifacts"  # beside optuna.db
    assert searched.summary["artifact_dir"] == str(store) and store.is_dir()
    command = f"optuna-dashboard {searched.storage} --artifact-dir {store}"
    assert searched.summary["dashboard"] == command
    _print_search_summary(searched.summary)
    assert command in capsys.readouterr().out


def _browser() -> Any:
    """A headless Chromium driven by Selenium, or a skip saying what is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"no browser: {', '.join(missing)} absent")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='gantune-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_optuna_dashboard_shows_a_trials_grid(searched: Searched) -> None:
    exe = shutil.which("optuna-dashboard")
    if exe is None:
        pytest.skip("optuna-dashboard is not installed (pip install 'gantune[dashboard]')")
    browser = _browser()
    # the very command the summary prints, bound to the loopback interface on a free port
    command = [exe, *shlex.split(searched.summary["dashboard"])[1:], "--host", "127.0.0.1", "--quiet"]
    proc, port = serve_on_free_port(
        lambda port: subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True),
        lambda port: answers(f"http://127.0.0.1:{port}/dashboard"), "optuna-dashboard", seconds=30)
    try:
        base = f"http://127.0.0.1:{port}"
        rdb = RDBStorage(searched.storage)
        study_id = rdb.get_study_id_from_name("dash")
        study = optuna.load_study(study_name="dash", storage=rdb)
        for t in study.trials:
            metas = get_all_artifact_meta(t, storage=rdb)
            trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, t.number)
            browser.get(f"{base}/dashboard/studies/{study_id}/trials?numbers={t.number}")
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            wanted = {f"{base}/artifacts/{study_id}/{trial_id}/{m.artifact_id}" for m in metas}
            images = WebDriverWait(browser, 30).until(
                lambda b, w=wanted: [i for i in b.find_elements(By.TAG_NAME, "img") if i.get_attribute("src") in w])
            assert {i.get_attribute("src") for i in images} == wanted, t.number
            for img in images:  # the browser loaded it, and it is the trial's PNG
                WebDriverWait(browser, 10).until(
                    lambda b, i=img: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i))
                with urllib.request.urlopen(img.get_attribute("src"), timeout=10) as response:
                    assert response.headers["Content-Type"] == "image/png"
                    assert response.read().startswith(PNG)
    finally:
        browser.quit()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
