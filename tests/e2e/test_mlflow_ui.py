"""MLflow's UI opens a search on its runs table: the page the summary and ``gantune ui`` print, checked against the
installed MLflow in a real headless Chromium (skipped where Chromium, chromedriver or selenium is missing)."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from gantune.cli import _print_search_summary, main
from gantune.events import Status, TrialOutcome
from gantune.sampling.space import load_space
from gantune.tracking import MlflowTracker, ui_url
from tests.conftest import answers, serve_on_free_port, tiny_space

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: the expander of a parent run: the button in its run-name cell of the runs table
RUN_NAME_BUTTON = "//div[@role='gridcell' and contains(@col-id, 'Run Name')]//button"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """A tracking store written by the tracker itself: search ``toy``, a parent run and three finished trials."""
    root = tmp_path_factory.mktemp("ui")
    old = Path.cwd()
    os.chdir(root)  # local artifacts go to ./mlartifacts
    try:
        (root / "space.yaml").write_text(tiny_space("toy", 3, 100, 50, [0.001], log_every=50, n_samples=100))
        space = load_space(root / "space.yaml")
        tracker = MlflowTracker(f"sqlite:///{root / 'mlflow.db'}", "toy")
        tracker.connect()
        tracker.search_started(optuna.create_study(study_name="toy"), space, [])
        for n in range(3):
            tracker.trial_started(n, {"optim.lr_g": 0.001}, {"name": "toy"})
            tracker.trial_result(n, {"step": 50, "loss_d": 1.0, "fid": 3.0 - n})
            tracker.trial_ended(TrialOutcome(n, Status.COMPLETED, "", 100, [3.0 - n]))
        best = {"trial": 2, "values": {"fid": 1.0}, "metrics": {}, "params": {"optim.lr_g": 0.001},
                "config": {"name": "toy"}, "floor": {}, "provenance": {}, "samples": None}
        summary = tracker.search_ended({"search": "toy", "trials": 3, "counts": {"completed": 3}, "trial_steps": 300,
                                        "budget_steps": 300, "max_steps": 100, "failed_trials": 0, "failed_steps": 0,
                                        "wall_s": 1.0, "best": best,
                                        "study_storage": "sqlite:///optuna.db", "artifact_dir": "optuna-artifacts",
                                        "dashboard": "optuna-dashboard sqlite:///optuna.db --artifact-dir "
                                                     "optuna-artifacts"})
        return tracker.uri, summary
    finally:
        os.chdir(old)


def test_the_summary_prints_the_page_of_the_runs_table(store: tuple[str, dict],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    uri, summary = store
    exp = MlflowClient(uri).get_experiment_by_name("toy")
    assert exp is not None and exp.tags["mlflow.experimentKind"] == "custom_model_development"
    page = f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}?workflowType=machine_learning"
    assert summary["mlflow_ui"] == page
    assert ui_url("http://mlflow.lan:8080/", "7") == "http://mlflow.lan:8080/#/experiments/7?workflowType=machine_learning"
    _print_search_summary(summary)
    assert f"    runs: {page} (serve it: gantune ui toy --tracking-uri {uri})" in capsys.readouterr().out


def test_ui_of_an_unknown_search_is_one_line_exit_2(store: tuple[str, dict],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "nothing", "--tracking-uri", store[0]]) == 2
    err = capsys.readouterr().err
    assert err == f"gantune ui: error: nothing: no such experiment in {store[0]} (experiments: toy)\n"


def _browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            pytest.skip(f"{exe} is not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1600,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='gantune-chromium-')}"):
        opts.add_argument(arg)  # a fresh profile: no remembered GenAI / Model training choice
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_a_fresh_browser_opens_the_printed_page_on_the_runs_table(store: tuple[str, dict]) -> None:
    browser = _browser()
    from selenium.webdriver.common.by import By

    ui, port = serve_on_free_port(
        lambda port: subprocess.Popen(
            # --json: the page was not printed at all, the JSON summary only once the server stopped
            [sys.executable, "-m", "gantune.cli", "ui", "toy", "--tracking-uri", store[0], "--port", str(port),
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}),
        lambda port: answers(f"http://127.0.0.1:{port}/health"), "gantune ui")
    try:
        assert ui.stdout is not None
        first, printed = ui.stdout.readline(), ui.stdout.readline()
        assert first.startswith(f"MLflow UI for {store[0]} at http://127.0.0.1:{port}"), first
        assert printed.startswith("  toy: "), printed
        page = printed.removeprefix("  toy: ").strip()

        def body() -> str:
            return str(browser.find_element(By.TAG_NAME, "body").text)

        def wait(text: str) -> None:
            deadline = time.monotonic() + 60
            while text not in body():
                assert time.monotonic() < deadline, f"{text!r} not on {browser.current_url}:\n{body()[:1500]}"
                time.sleep(0.25)

        browser.get(page)
        wait("matching runs")
        assert "/runs" in browser.current_url, browser.current_url
        assert "Token Usage" not in body() and "Evaluation runs" not in body()  # not the GenAI overview's
        # the search's parent run, its trials one click below (the expander in its run-name cell)
        deadline = time.monotonic() + 60
        while not (expand := browser.find_elements(By.XPATH, RUN_NAME_BUTTON)):
            assert time.monotonic() < deadline, f"no parent run row on {browser.current_url}:\n{body()[:1500]}"
            time.sleep(0.25)
        expand[0].click()
        for n in range(3):
            wait(f"trial-{n:04d}")
    finally:
        browser.quit()
        os.killpg(ui.pid, signal.SIGTERM)  # gantune ui and the mlflow server it started
        ui.wait(30)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie no one has reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def test_ui_stopped_stops_its_servers_whole_process_group(tmp_path: Path) -> None:
    """``gantune ui`` ran ``mlflow ui`` with ``subprocess.call``, which on Ctrl-C or SIGTERM stops only its child:
    the uvicorn workers and job runners it had started lived on, holding the port. A server that starts a worker
    stands in for it here; the interrupt is a real SIGINT to this process."""
    import threading

    from gantune import env

    server, pidfile = tmp_path / "server.py", tmp_path / "worker.pid"
    server.write_text("import subprocess, sys, time\n"
                      "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
                      "open(sys.argv[1], 'w').write(str(worker.pid))\n"
                      "time.sleep(30)\n")
    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    # Python's own Ctrl-C: an earlier test's library (Ray) may have left another handler for SIGINT
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            env.call_group([sys.executable, str(server), str(pidfile)])
    finally:
        signal.signal(signal.SIGINT, before)
    worker = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker)


def test_the_summary_shows_no_password_of_the_tracking_or_storage_uri(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json (an artifact every reader of the tracking server sees) held both URIs verbatim."""
    from gantune.search.runner import storage_shown

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(tiny_space("pw", 1, 100, 50, [0.001], log_every=50, n_samples=100))
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "pw")
    tracker.connect()
    tracker.search_started(optuna.create_study(study_name="pw"), load_space(tmp_path / "space.yaml"), [])
    tracker.uri = "https://bob:t0ken@mlflow.example.com"  # as given: the store it logs to stays the sqlite one
    shown = storage_shown("postgresql://alice:s3cret@db/optuna")  # what summarize puts in the summary
    assert shown["study_storage"] == "postgresql://alice:***@db/optuna" and "s3cret" not in shown["dashboard"]
    summary = tracker.search_ended({"search": "pw", "trials": 0, "counts": {}, "trial_steps": 0, "budget_steps": 100,
                                    "max_steps": 100, "failed_trials": 0, "failed_steps": 0, "wall_s": 1.0,
                                    "best": None, "artifact_dir": "a", **shown})
    logged = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").download_artifacts(tracker.parent_id,
                                                                                     "summary.json", str(tmp_path))
    for text in (str(summary), Path(logged).read_text()):
        assert "t0ken" not in text and "s3cret" not in text and "bob:***@mlflow.example.com" in text


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH is Python 3.11's")
def test_ui_serves_beside_a_local_yaml_py_and_keeps_artifacts_in_the_working_folder(tmp_path: Path) -> None:
    """``python -m mlflow`` and uvicorn put their working folder first on the import path: a ``yaml.py``,
    ``mlflow.py`` or ``uvicorn.py`` beside the user's files hid the library and the server never started. It still
    runs in that folder: a store named relative to it is the one served (the server's first fix, an empty
    working folder, served a new store there) and what the UI uploads lands in its ``./mlartifacts``."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("yaml", "mlflow", "uvicorn"):
        (work / f"{name}.py").write_text(f"raise SystemExit('the working folder\\'s {name}.py was imported')\n")
    MlflowClient(f"sqlite:///{work / 'mlflow.db'}").create_experiment("mine")
    ui, port = serve_on_free_port(
        lambda port: subprocess.Popen(
            [sys.executable, "-m", "gantune", "ui", "--tracking-uri", "sqlite:///mlflow.db?uri=true", "--port",
             str(port)],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}),
        lambda port: answers(f"http://127.0.0.1:{port}/health"), "gantune ui")
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        assert client.get_experiment_by_name("mine") is not None
        run = client.create_run(client.create_experiment("uploaded"))
        client.log_text(run.info.run_id, "kept", "note.txt")
        assert [p.read_text() for p in (work / "mlartifacts").rglob("note.txt")] == ["kept"]
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)


@pytest.mark.parametrize(("mlflow", "gunicorn", "added"), [("3.17.2", "", True), ("3.3.0", "", True),
                                                          ("3.2.1", "", False), ("2.16.0", "", False),
                                                          ("3.17.2", "-w 2", False)])
def test_uvicorns_app_folder_is_set_only_where_mlflow_takes_it(mlflow: str, gunicorn: str, added: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: MLflow before 3.3 has no --uvicorn-opts (its server is gunicorn), and `mlflow ui` refused
    the option, exit 2; with $MLFLOW_GUNICORN_OPTS it refuses two servers' options. Where the installed MLflow is
    older, or gunicorn is asked for, the command is as before."""
    import importlib.metadata

    from gantune.cli import _off_the_import_path

    monkeypatch.setattr(importlib.metadata, "version", lambda name: mlflow if name == "mlflow" else "0")
    monkeypatch.setenv("MLFLOW_GUNICORN_OPTS", gunicorn)
    monkeypatch.setenv("MLFLOW_UVICORN_OPTS", "--log-level warning")
    cmd, environ = _off_the_import_path(["mlflow", "ui"], "/tmp/empty folder")
    assert cmd == (["mlflow", "ui", "--uvicorn-opts", "--log-level warning --app-dir '/tmp/empty folder'"] if added
                   else ["mlflow", "ui"])
    assert environ["PYTHONSAFEPATH"] == "1"
