"""``gantune review`` on a real (tiny) finished search: answers over HTTP and in a headless browser, kept across a
restart of the page, in the study and on the MLflow parent run; ``export --by human`` and the report use them."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from gantune.cli import main
from gantune.errors import GantuneError
from gantune.review import Review, ReviewServer
from gantune.sampling import votes as V
from gantune.sampling.settings import SearchSettings
from gantune.sampling.study import load_search
from tests.conftest import last_json, searched_in, sigint_default_in_children, tiny_space

LRS = [0.001, 0.002, 0.0015]
SPACE = tiny_space("rev", 3, 100, 50, LRS, log_every=25, n_samples=200)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> Iterator[Path]:
    with searched_in(tmp_path_factory.mktemp("review"), "rev", SPACE, LRS) as root:
        yield root


@pytest.fixture
def fresh(searched: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The search with no votes yet (each test answers for itself), in its folder."""
    monkeypatch.chdir(searched)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = load_search("rev", "sqlite:///optuna.db")
    study.set_user_attr(V.VOTES_KEY, [])
    for key in [k for k in study.user_attrs if k.startswith(V.VOTE_PREFIX)]:  # null: taken back
        study.set_user_attr(key, None)
    return searched


def _storage(root: Path) -> str:
    return f"sqlite:///{root / 'optuna.db'}"


def _favourite_to_be(root: Path) -> int:
    """The trial the person in these tests prefers: the metric's worst of those under review."""
    return Review("rev", _storage(root), 4, None).items[-1]


def _http(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as r:
        raw = r.read()
        return raw if r.headers["Content-Type"] == "image/png" else json.loads(raw)


def _start(root: Path) -> tuple[subprocess.Popen[str], str]:
    """``gantune review rev`` as a user starts it; the URL it prints."""
    with sigint_default_in_children():  # _stop's Ctrl-C must reach it however pytest was started
        proc = subprocess.Popen([sys.executable, "-m", "gantune.cli", "review", "rev", "--no-browser", "--json"],
                                cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C to stop\)", line)
    if found is None:
        proc.kill()
        pytest.fail(f"no URL from gantune review: {line!r} {proc.communicate()[1][-2000:]}")
    return proc, found.group(1)


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Ctrl-C, as a user stops it: a normal end with the JSON summary."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]  # a client that left mid-request was one on the review's terminal
    return dict(json.loads(out.strip().splitlines()[-1]))


def _check_kept(root: Path, favourite: int, n: int, capsys: pytest.CaptureFixture[str]) -> None:
    """The answers in the study, on the MLflow parent run, and what export and report make of them."""
    study = optuna.load_study(study_name="rev", storage=_storage(root))
    votes = V.load_votes(study)
    assert len(votes) == n and all(v.winner == favourite for v in votes if favourite in v.pair)
    assert study.user_attrs[V.RANKING_KEY][0]["trial"] == favourite
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rev")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("gantune.role") == "parent")
    tags = parent.data.tags
    assert tags["gantune.review.votes"] == str(n) and tags["gantune.review.favourite"] == str(favourite)
    assert sum(k.startswith("gantune.review.vote.") for k in tags) >= n
    assert tags[f"gantune.review.vote.{n - 1:04d}"].startswith(f"{votes[-1].a} vs {votes[-1].b}: ")
    # export --by human: the person's favourite, not the metric's best
    assert main(["export", "rev", "--by", "human", "--out", "human.yaml", "--weights", "human-w", "--json"]) == 0
    result = last_json(capsys)
    assert result["trial"] == favourite != study.best_trial.number and result["by"] == "human"
    assert "# chosen by a person" in (root / "human.yaml").read_text()
    assert (root / "human-w" / "generator.pt").is_file()


def test_answers_over_http_survive_a_restart_and_pick_the_export(fresh: Path, capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    favourite = _favourite_to_be(fresh)
    proc, url = _start(fresh)
    try:
        state = _http(url + "api/state")
        items = state["trials"]  # by the metric, best first
        assert len(items) == 3 and items[-1] == favourite and state["votes"] == 0
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "Which is better?" in page and "rev" in page
        for trial in items:
            assert _http(f"{url}grid/{trial}.png")[:4] == b"\x89PNG"
        for _ in range(5):
            a, b = state["pair"]
            state = _http(url + "api/vote", {"a": a, "b": b, "winner": favourite if favourite in (a, b) else a})
        assert state["votes"] == 5
        with pytest.raises(urllib.error.HTTPError) as bad:  # a winner outside the pair is refused, not stored
            _http(url + "api/vote", {"a": items[0], "b": items[1], "winner": 999})
        assert bad.value.code == 400
        # a body that is JSON but not an object was a traceback on the review's terminal and a dropped connection;
        # a text/plain vote, which any page in the browser may send unasked, is not taken
        # so were a number past float range and JSON nested 5,000 deep; true, "1" and 0.9 were taken as trials
        odd = [b'{"a": 1e400, "b": 0}', b"[" * 5000 + b"]" * 5000, json.dumps({"a": True, "b": 0, "winner": False}),
               json.dumps({"a": str(a), "b": b + 0.9, "winner": str(a)})]
        for data, content_type, code in ((b"[1]", "application/json", 400), (b'"x"', "application/json", 400),
                                         (json.dumps({"a": a, "b": b, "winner": a}).encode(), "text/plain", 415),
                                         *((d if isinstance(d, bytes) else d.encode(), "application/json", 400)
                                           for d in odd)):
            with pytest.raises(urllib.error.HTTPError) as bad:
                urllib.request.urlopen(urllib.request.Request(url + "api/vote", data=data, headers={
                    "Content-Type": content_type}), timeout=30)
            assert bad.value.code == code, (data, content_type)
        where = urllib.parse.urlsplit(url)  # a negative Content-Length read until the client hung up
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        conn.putrequest("POST", "/api/vote")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "-1")
        conn.endheaders()
        assert conn.getresponse().status == 400
        conn.close()
        # found by a probe: a body cut short (a whole JSON object, but fewer bytes than its Content-Length: the
        # client gone) was kept as a vote nobody made (a skip), then a traceback answered the closed socket
        with socket.create_connection((where.hostname, where.port), timeout=30) as raw:
            sent = json.dumps({"a": a, "b": b}).encode()
            raw.sendall(f"POST /api/vote HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(sent) + 50}\r\n\r\n".encode() + sent)
            raw.shutdown(socket.SHUT_WR)
            answer = b"".join(iter(lambda: raw.recv(4096), b"")).decode()
        assert answer.split()[1] == "400" and "nothing was kept" in answer, answer
        # another method was Python's stock 501 page; a missing key and a trial not under review said "'a'", "99"
        for method, path, code, says in (("PUT", "/api/vote", 405, "/api/vote answers POST, not PUT"),
                                         ("GET", "/api/vote", 405, "answers POST, not GET"),
                                         ("DELETE", "/", 405, "/ answers GET, HEAD, not DELETE"),
                                         ("GET", "/grid/99.png", 404, "no trial 99 under review"),
                                         ("POST", "/api/vote", 400, "a: missing; a vote is a JSON object")):
            conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
            conn.request(method, path, body=json.dumps({"b": b}) if method == "POST" else None,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert (response.status, says in response.read().decode()) == (code, True), (method, path)
            conn.close()
        # found by a probe: a page on another site whose name resolves to 127.0.0.1 (DNS rebinding) is the same
        # origin to the browser, so it read the state and voted; its requests carry its own name in Host
        for method, path in (("GET", "/api/state"), ("POST", "/api/vote"), ("PUT", "/api/vote")):
            conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
            conn.request(method, path, body=json.dumps({"a": a, "b": b, "winner": a}) if method != "GET" else None,
                         headers={"Content-Type": "application/json", "Host": f"rebound.example:{where.port}"})
            response = conn.getresponse()
            assert (response.status, "answers requests to 127.0.0.1" in response.read().decode()) == (403, True)
            conn.close()
        conn = http.client.HTTPConnection("localhost", where.port, timeout=30)  # its own names are let in
        conn.request("GET", "/api/state")
        assert conn.getresponse().status == 200
        conn.close()
        # found in review: another site's page could show the review in a frame and trick clicks into votes; a
        # vote whose browser names another page as its sender is refused, and no page may frame the review
        for origin, code in (("http://evil.example", 403), (f"http://localhost:{where.port}", 400)):
            conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
            conn.request("POST", "/api/vote", body=json.dumps({"a": a, "b": b, "winner": 999}),
                         headers={"Content-Type": "application/json", "Origin": origin})
            response = conn.getresponse()
            assert response.status == code, (origin, response.read())
            conn.close()
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.getheader("X-Frame-Options") == "DENY"
        assert response.getheader("Content-Security-Policy") == "frame-ancestors 'none'"
        conn.close()
        assert _http(url + "api/state")["votes"] == 5
    finally:
        summary = _stop(proc)
    assert summary["votes"] == 5 and summary["favourite"] == favourite and summary["mlflow_parent_run_id"]
    # a restarted page carries on from the stored answers
    proc, url = _start(fresh)
    try:
        state = _http(url + "api/state")
        assert state["votes"] == 5 and state["ranking"][0]["trial"] == favourite
        assert tuple(state["pair"]) == V.next_pair(items, V.load_votes(load_search("rev", "sqlite:///optuna.db")))
    finally:
        _stop(proc)
    _check_kept(fresh, favourite, 5, capsys)
    # the report: the human ranking beside the metric's, and how far they agree
    assert main(["report", "rev", "--out", "report.html", "--json"]) == 0
    report = last_json(capsys)
    html = (fresh / "report.html").read_text()
    assert "Human review" in html and "Kendall’s τ-b" in html
    rows = re.findall(r'<tr class="human-row"><td>(\d+)</td><td>(\d+)</td>', html)
    assert rows[0] == ("1", str(favourite)) and len(rows) == 3
    assert report["human_tau"] < 0  # the person preferred the metric's worst


def test_review_bad_input(fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'one.db'}"
    one = optuna.create_study(study_name="one", storage=storage)
    one.set_user_attr("settings", SearchSettings().model_dump())  # what every gantune search records
    one.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0, user_attrs={"config": {}}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [
            (["review", "rev", "--port", str(port), "--no-browser"], f"--port {port}: already in use"),
            (["review", "one", "--storage", storage], "search 'one' has 1 evaluated (completed) trial: a review"),
            (["review", "rev", "--top", "1"], "--top: a review compares pairs"),
            (["export", "one", "--storage", storage, "--by", "human"], "search 'one' has no review votes yet"),
            (["export", "rev", "--by", "human", "--trial", "0"], "--by human exports the review's favourite"),
        ]
        for args, needle in cases:
            capsys.readouterr()
            assert main(args) == 2, args
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and needle in err, (args, err)


def test_a_review_of_a_search_whose_run_folders_are_gone_draws_the_weights_mlflow_kept(
        fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: ``export --weights`` falls back to the trial's MLflow child run; review said no trial had
    weights. What it downloads is drawn and removed (the temporary folder goes with the review's start)."""
    kept = {n: c.png for n, c in Review("rev", _storage(fresh), 4, None).candidates.items()}
    (fresh / "tmp").mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(fresh / "tmp"))
    (fresh / "runs").rename(fresh / "runs-away")
    try:
        with pytest.raises(GantuneError, match="have generator weights in their run directories on this machine or "
                                               "in MLflow"):
            Review("rev", _storage(fresh), 4, None)  # no tracking: nowhere else to look
        review = Review("rev", _storage(fresh), 4, f"sqlite:///{fresh / 'mlflow.db'}")
    finally:
        (fresh / "runs-away").rename(fresh / "runs")
    assert {n: c.png for n, c in review.candidates.items()} == kept  # the same generators, the same latents
    assert list((fresh / "tmp").iterdir()) == []


def test_a_review_takes_the_best_trials_that_have_weights(fresh: Path) -> None:
    """Only the top ``--top`` trials were looked at: with the best one's run folder gone, ``--top 2`` found one
    trial with weights and refused the search, whose third trial had them (README: "fewer than two completed
    trials with weights" is the refusal)."""
    from gantune.sampling.study import best_first, ranked

    study = load_search("rev", _storage(fresh))
    order = [t.number for t in best_first(study, ranked(study)[0])]
    assert len(order) == 3
    best = Path(study.trials[order[0]].user_attrs["run_dir"])
    best.rename(best.with_name("away"))
    try:
        review = Review("rev", _storage(fresh), 2, None)
    finally:
        best.with_name("away").rename(best)
    assert sorted(review.candidates) == sorted(order[1:])


def test_an_unreadable_generator_among_the_top_trials_is_passed_over(fresh: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The best trial's generator.pt cut in half stopped the review ("... is unreadable", exit 2) though two other
    trials had weights: it warns and takes the next trial."""
    from gantune.sampling.study import best_first, ranked

    study = load_search("rev", _storage(fresh))
    order = [t.number for t in best_first(study, ranked(study)[0])]
    weights = Path(study.trials[order[0]].user_attrs["run_dir"]) / "generator.pt"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:len(whole) // 2])
    try:
        capsys.readouterr()
        review = Review("rev", _storage(fresh), 2, None)
    finally:
        weights.write_bytes(whole)
    assert sorted(review.candidates) == sorted(order[1:])
    assert f"warning: trial {order[0]}: {weights} is unreadable" in capsys.readouterr().err


# -- a real browser -------------------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--window-size=1200,900"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            pytest.skip(f"{path} is not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in [*CHROME_ARGS, f"--user-data-dir={tmp_path / 'chrome'}"]:
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chrome", ignore_errors=True)


def test_a_person_clicks_through_five_pairs_in_a_browser(fresh: Path, browser: Any,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    favourite = _favourite_to_be(fresh)
    server = ReviewServer(Review("rev", "sqlite:///optuna.db", 4, "sqlite:///mlflow.db")).start()  # on a free port
    try:
        browser.get(server.url)
        for n in range(5):
            wait.until(lambda d, n=n: d.find_element(By.TAG_NAME, "body").get_attribute("data-votes") == str(n))
            wait.until(ec.element_to_be_clickable((By.ID, "left")))
            left, right = (browser.find_element(By.ID, f"{s}-img") for s in ("left", "right"))
            wait.until(lambda d: d.execute_script(  # both grids decoded and shown
                "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
            side = "right" if int(right.get_attribute("data-trial")) == favourite else "left"
            assert int(left.get_attribute("data-trial")) != int(right.get_attribute("data-trial"))
            if n == 1:  # "1 answers"
                assert browser.find_element(By.ID, "answers").text == "answer"
            if n < 4:
                browser.find_element(By.ID, side).click()
            else:  # the keyboard works too
                browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT if side == "right"
                                                                    else Keys.ARROW_LEFT)
        wait.until(lambda d: d.find_element(By.ID, "count").text == "5")
    finally:
        server.stop()
    server = ReviewServer(Review("rev", "sqlite:///optuna.db", 4, "sqlite:///mlflow.db")).start()  # on a free port
    try:  # the restarted page shows the five answers and the ranking they make
        browser.get(server.url)
        wait.until(lambda d: d.find_element(By.ID, "count").text == "5")
        first = browser.find_element(By.CSS_SELECTOR, "#ranking tr td:nth-child(2)").get_attribute("textContent")
        assert int(first) == favourite
    finally:
        server.stop()
    _check_kept(fresh, favourite, 5, capsys)


def test_a_trial_that_records_no_run_folder_has_no_weights_from_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Path(t.user_attrs.get("run_dir", ""))`` is the working folder: a trial of a study made elsewhere, run from
    a folder an ``export --weights .`` had filled, was reviewed (and offered to export) with that generator."""
    import optuna

    from gantune.export import Candidate, weights_problem
    from gantune.review import weights_of

    monkeypatch.chdir(tmp_path)
    (tmp_path / "generator.pt").write_bytes(b"someone else's")
    (tmp_path / "samples").mkdir()
    trial = optuna.trial.create_trial(value=1.0)
    assert weights_of(trial, "s", None, None, tmp_path / "into") is None
    assert weights_problem(Candidate(trial, {}, 1.0), "s", None, None) == "no weights in the run folder"


@contextlib.contextmanager
def _read_only(path: Path, immutable: bool = False) -> Iterator[None]:
    """``path`` made unwritable as a user meets it: immutable (root), else read-only; skipped where neither holds.
    ``immutable``: only that (a sqlite connection opened before a ``chmod`` writes on through it)."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0 if shutil.which(
        "chattr") else False
    mode = path.stat().st_mode
    if not made and immutable:
        pytest.skip("chattr +i is not permitted here")
    if not made:
        path.chmod(0o444)
    try:
        try:
            path.open("r+b").close()
        except OSError:
            pass
        else:
            pytest.skip(f"{path} stays writable here (root without chattr)")
        yield
    finally:
        if made:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


def test_a_storage_that_cannot_be_written_is_said_in_one_line(fresh: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    """An immutable optuna.db: the review started, then every answer printed a 117-line traceback on its terminal
    and the page said "not answering". Now a review refuses it at the start, and a storage that stops taking writes
    mid-review is said on the page (503) and in one line on the terminal; the next answer, once it is writable,
    is kept."""
    db = fresh / "optuna.db"
    with _read_only(db):
        assert main(["review", "rev", "--no-browser"]) == 2
        err = capsys.readouterr().err.strip()
        needle = "--storage sqlite:///optuna.db: cannot write optuna.db (the file is read-only here)"
        assert len(err.splitlines()) == 1 and needle in err, err
        (fresh / "another.yaml").write_text(SPACE)  # a search into it: "a damaged file?" once Ray had started
        assert main(["search", "another.yaml", "--name", "another"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines()[-1].endswith(f"cannot write {db} (the file is read-only here); make it writable "
                                             "or copy it"), err
    server = ReviewServer(Review("rev", "sqlite:///optuna.db", 3, None)).start()
    try:
        a, b = _http(server.url + "api/state")["pair"]
        with _read_only(db, immutable=True):
            with pytest.raises(urllib.error.HTTPError) as refused:
                _http(server.url + "api/vote", {"a": a, "b": b, "winner": a})
            assert refused.value.code == 503
            said = json.loads(refused.value.read())["error"]
            assert re.fullmatch(r"the search's storage failed \((attempt to write a readonly database|disk I/O "
                                r"error)\)", said), said  # sqlite's words: the file, or its journal
            try:  # the page's next read (a journal the failed write left may spoil it): an answer either way
                _http(server.url + "api/state")
            except urllib.error.HTTPError as err:
                assert err.code == 503 and json.loads(err.read())["error"].startswith("the search's storage failed (")
        assert _http(server.url + "api/vote", {"a": a, "b": b, "winner": a})["votes"] == 1
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith(f"warning: {said}"), err
    assert all(line.startswith("warning: the search's storage failed (") for line in err.strip().splitlines()), err


def test_stopping_waits_for_one_mlflow_write_not_each_queued_answer(fresh: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    """Each write tags every answer so far, so a write queued behind a slow tracking server is outdated by the next:
    Ctrl-C waited for all of them in turn (minutes at MLflow's timeouts). Only the last queued one runs now, and
    MLflow still ends with every answer."""
    import gantune.review as R

    calls: list[int] = []
    real = R.log_review
    answered = threading.Event()

    def slow(uri: str, search: str, uid: str | None, votes: list[dict[str, Any]], *rest: Any) -> str | None:
        calls.append(len(votes))
        answered.wait(60)  # a tracking server still busy with the first write when the sixth answer comes
        return real(uri, search, uid, votes, *rest)

    monkeypatch.setattr(R, "log_review", slow)
    review = Review("rev", "sqlite:///optuna.db", 3, "sqlite:///mlflow.db")
    state = review.state()
    for _ in range(6):
        a, b = state["pair"]
        state = review.vote(a, b, a)
    answered.set()
    assert review.close() is not None
    assert calls in ([1, 6], [6]), calls  # the first write, if it had started, and the last
    client = MlflowClient("sqlite:///mlflow.db")
    exp = client.get_experiment_by_name("rev")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("gantune.role") == "parent")
    assert parent.data.tags["gantune.review.votes"] == "6"


def test_head_answers_as_get_without_a_body(fresh: Path) -> None:
    """HEAD was refused (405) on every page; link checkers and ``curl -I`` ask it."""
    server = ReviewServer(Review("rev", "sqlite:///optuna.db", 3, None)).start()
    assert server.httpd.request_queue_size >= 64  # the standard library's 5 refused a burst of connections
    try:
        host, port = server.httpd.server_address[:2]
        for path in ("/", "/api/state", f"/grid/{server.review.items[0]}.png"):
            conn = http.client.HTTPConnection(str(host), int(port), timeout=30)
            try:
                conn.request("HEAD", path)
                r = conn.getresponse()
                assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) > 0, path
            finally:
                conn.close()
    finally:
        server.stop()
