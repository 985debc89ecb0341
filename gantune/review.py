"""``gantune review SEARCH``: a local page that asks a person which of two trials' samples is better.

Metrics such as FID disagree with people often enough that a tuned GAN deserves a look. The page shows pairs of
the top-k trials' sample grids, each drawn by the trial's exported generator from the same fixed latents (seed
``SEED``), so a pair compares like with like; no trial is named beside its grid, and neither the order of the
pairs nor their sides follow the metric's ranking (``votes.next_pair``). Every answer is a
vote kept in the Optuna study (``gantune.sampling.votes``: the record, read back when the page restarts) and
copied to tags of the search's MLflow parent run. ``gantune export --by human`` exports the favourite and
``gantune report`` sets the human ranking beside the metric's.

The server is the standard library's, bound to 127.0.0.1: nothing is reachable from another machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import html
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from optuna.exceptions import OptunaError
from optuna.trial import FrozenTrial

from gantune.data import is_points, mixture_means
from gantune.errors import GantuneError
from gantune.events import warn
from gantune.generate import load_generator, sample
from gantune.rundir import BEST_GENERATOR, GENERATOR, trial_run_dir
from gantune.sampling import votes as V
from gantune.sampling.study import (
    STUDY_UID,
    best_first,
    check_storage,
    load_search,
    ranked,
    search_settings,
    storage_said,
)
from gantune.tracking import StoreUnreadable, log_review
from gantune.viz import samples_png

#: the latents every grid is drawn from: one seed, so the two sides of a pair see the same noise
SEED = 0
#: samples per grid: an 8x8 image grid, or a scatter of points (a mode's mass needs more than 64 to see)
N_IMAGES, N_POINTS = 64, 1000


@dataclass(frozen=True)
class Candidate:
    trial: int
    value: float  # the first objective (its metric rank decides the order of the pairs)
    weights: str  # where they were read from (a copy from MLflow is removed once drawn)
    png: bytes


def weights_of(t: FrozenTrial, search: str, uid: str | None, tracking_uri: str | None, into: Path) -> Path | None:
    """The trial's final generator (else the generator of its best evaluation) in its run directory; else, as
    ``export --weights`` does, from its MLflow child run into ``into`` (run folders deleted, or the search run
    on another machine: the review said no trial had weights), when they are the trial's (``other_run``)."""
    run_dir = trial_run_dir(t.user_attrs)
    local = None if run_dir is None else next((run_dir / n for n in (GENERATOR, BEST_GENERATOR)
                                               if (run_dir / n).is_file()), None)
    if local is not None or tracking_uri is None:
        return local
    from gantune.export import weights_from_mlflow

    dest = into / str(t.number)
    dest.mkdir(parents=True, exist_ok=True)
    try:  # weights that are not the trial's, or a store that fails on this trial (MLflow's errors stay in
        # gantune.tracking): none to offer; the count of those found says the rest
        got = {Path(f).name: Path(f) for f in weights_from_mlflow(tracking_uri, search, uid, t, dest)}
    except StoreUnreadable:  # the store itself: asked again for each trial, each waits out MLflow's retries
        raise
    except Exception:
        return None
    return next((got[n] for n in (GENERATOR, BEST_GENERATOR) if n in got), None)


def draw(weights: Path) -> bytes:
    """A PNG of the generator's samples from the fixed latents (on the CPU: a grid is a few forward passes)."""
    device = torch.device("cpu")
    net, cfg = load_generator(weights, device)
    points = is_points(cfg.data)
    x = sample(net, cfg, N_POINTS if points else N_IMAGES, device, SEED)
    return samples_png(x, mixture_means(cfg.data))


class Review:
    """A search under review: its top-k trials with their grids, and the votes (read from the study each time)."""

    def __init__(self, name: str, storage: str, top: int, tracking_uri: str | None) -> None:
        if top < 2:
            raise GantuneError("--top: a review compares pairs: at least 2")
        check_storage(storage)  # the votes are written there: a read-only file started, then failed every vote
        self.study = load_search(name, storage)
        self.name = name
        self.tracking_uri = tracking_uri
        self.objective = search_settings(self.study).objectives[0]
        done, _ = ranked(self.study)
        if len(done) < 2:
            raise GantuneError(f"search {name!r} has {len(done)} evaluated (completed) trial"
                               f"{'' if len(done) == 1 else 's'}: a review compares two or more")
        with tempfile.TemporaryDirectory(prefix="gantune-review-") as tmp:  # what MLflow had: drawn, then gone
            uid = self.study.user_attrs.get(STUDY_UID)
            found: list[tuple[FrozenTrial, Path, bytes]] = []
            # the best ``top`` trials that have weights, the Pareto front first (no trial before one dominating
            # it): the top ``top`` alone, four whose folders were gone, refused a search with weights further down
            store = tracking_uri
            for t in best_first(self.study, done):
                if len(found) == top:
                    break
                try:
                    w = weights_of(t, name, uid, store, Path(tmp))
                except StoreUnreadable as err:  # the run folders alone from here
                    warn(f"{err}; the review draws only the trials whose run folders are on this machine")
                    store, w = None, None
                if w is None:
                    continue
                try:  # one unreadable generator among the top trials stopped the review: the next trial instead
                    found.append((t, w, draw(w)))
                except GantuneError as err:
                    warn(f"trial {t.number}: {err}; the review takes the next trial")
            if len(found) < 2:
                raise GantuneError(f"search {name!r}: {len(found)} of its {len(done)} completed trials have "
                                   "generator weights in their run directories on this machine or in MLflow: a "
                                   "review compares two or more")
            self.candidates = {t.number: Candidate(t.number, float(t.values[0]), str(w), png) for t, w, png in found}
        self.items = list(self.candidates)
        self.lock = threading.Lock()
        self.mlflow: concurrent.futures.Future[str | None] | None = None
        self._tagger = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gantune-review-mlflow")

    def state(self, votes: list[V.Vote] | None = None) -> dict[str, Any]:
        """What the page shows: the next pair, the count of answers, the ranking (trial numbers, values)."""
        votes = V.load_votes(self.study) if votes is None else votes
        ranks = [r for r in V.ranking(self.items, votes) if r.trial in self.candidates or r.comparisons]
        return {"search": self.name, "objective": self.objective, "trials": self.items,
                "pair": list(V.next_pair(self.items, votes)),
                "votes": len(votes), "decided": sum(v.winner is not None for v in votes),
                "ranking": [{**r.to_dict(), "value": c.value if (c := self.candidates.get(r.trial)) else None}
                            for r in ranks]}

    def vote(self, a: int, b: int, winner: int | None) -> dict[str, Any]:
        """Store one answer (study first, then MLflow in the background: a slow tracking server never holds up the
        page); the page's next state."""
        if a not in self.candidates or b not in self.candidates or a == b or winner not in (a, b, None):
            raise ValueError(f"not a pair of the trials under review: {a}, {b}, winner {winner}")
        with self.lock:  # the MLflow write queued in turn too: an older answer's list never comes last
            votes = V.add_vote(self.study, a, b, winner, self.items)
            if self.tracking_uri is not None:
                ranking = [r.to_dict() for r in V.ranking(self.items, votes)]
                trial, why = V.chosen(votes)
                favourite = f"unsettled: {why}" if why else None if trial is None else str(trial)
                if self.mlflow is not None:  # each write tags every answer: one not yet started is outdated
                    self.mlflow.cancel()  # (Ctrl-C waited for each queued write in turn, minutes behind a slow server)
                self.mlflow = self._tagger.submit(log_review, self.tracking_uri, self.name,
                                                  self.study.user_attrs.get(STUDY_UID), [asdict(v) for v in votes],
                                                  ranking, favourite)
        return self.state(votes)

    def close(self) -> str | None:
        """Wait for the last MLflow write; the parent run tagged, if any."""
        self._tagger.shutdown(wait=True)
        return self.mlflow.result() if self.mlflow is not None else None

    def summary(self) -> dict[str, Any]:
        votes = V.load_votes(self.study)
        favourite, why = V.chosen(votes)
        return {"search": self.name, "trials": self.items, "votes": len(votes), "favourite": favourite,
                "unsettled": why,
                "ranking": [r.to_dict() for r in V.ranking(self.items, votes)]}


# -- the HTTP side --------------------------------------------------------------------------------------------------

Route = Callable[["_Handler", re.Match[str]], None]
GET: dict[str, Route] = {}
POST: dict[str, Route] = {}
METHODS = {"GET": GET, "POST": POST}


def route(table: dict[str, Route], pattern: str) -> Callable[[Route], Route]:
    def add(fn: Route) -> Route:
        table[pattern] = fn
        return fn
    return add


class _Handler(BaseHTTPRequestHandler):
    review: Review  # set on the subclass each server makes
    server_version = "gantune-review"
    timeout = 10  # seconds a request may take to arrive: a body sent in part held its thread until the client left

    def _dispatch(self, table: dict[str, Route]) -> None:
        path = self.path.split("?", 1)[0]
        if not self._our_host():
            return
        for pattern, fn in table.items():
            if m := re.fullmatch(pattern, path):
                try:
                    fn(self, m)
                except (ValueError, KeyError, TypeError, OverflowError) as err:  # a bad request: said, not a traceback
                    self.send_json({"error": str(err)}, 400)
                except OptunaError as err:  # its storage (a file made read-only, a server gone): the
                    # page and the terminal, in one line (a vote's, and each read after it, was a traceback)
                    cause = err.__cause__ or err  # Optuna's "An exception is raised during the commit" names none
                    said = f"the search's storage failed ({storage_said(cause)})"
                    warn(said)
                    self.send_json({"error": said}, 503)
                except RecursionError:  # JSON nested past what the decoder follows
                    self.send_json({"error": "a vote is a flat JSON object"}, 400)
                except (TimeoutError, ConnectionError):  # a body that never came in ``timeout``: nobody to answer
                    self.close_connection = True
                return
        self._refuse(path)

    def _our_host(self) -> bool:
        """Answer only requests addressed to this server by name: a page on another site whose name was made to
        resolve to 127.0.0.1 (DNS rebinding) is the same origin to the browser, so it could read the state and
        vote; its requests still carry its own name in ``Host``. No ``Host`` (HTTP/1.0, no browser) is let in."""
        host = self.headers.get("Host")
        port = self.server.server_address[1]  # type: ignore[index]  # an (address, port) pair: bound to 127.0.0.1
        if host is None or host.lower() in {f"127.0.0.1:{port}", f"localhost:{port}"}:
            return True
        self.send_json({"error": f"this review answers requests to 127.0.0.1:{port}, not to {host[:100]}"}, 403)
        return False

    def _refuse(self, path: str) -> None:
        """404 for a page that does not exist; 405, with the methods it has, for one asked with another method
        (Python's stock 501 page answered PUT, DELETE, OPTIONS and HEAD)."""
        allowed = [name for name, table in METHODS.items() if any(re.fullmatch(p, path) for p in table)]
        allowed += ["HEAD"] if "GET" in allowed else []  # answered as GET is
        if allowed:
            self.send_json({"error": f"{path} answers {', '.join(allowed)}, not {self.command}"}, 405,
                           {"Allow": ", ".join(allowed)})
        else:
            self.send_json({"error": f"no such page: {path}"}, 404)

    def do_GET(self) -> None:
        self._dispatch(GET)

    def do_POST(self) -> None:
        self._dispatch(POST)

    def do_HEAD(self) -> None:  # GET's headers without its body (``send``): a link checker's probe was a 405
        self._dispatch(GET)

    def _other(self) -> None:
        if self._our_host():
            self._refuse(self.path.split("?", 1)[0])

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    def send(self, body: bytes, content_type: str, code: int = 200, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in FRAMING.items():
                self.send_header(key, value)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client left: nobody to tell (it was a traceback)
            self.close_connection = True

    def send_json(self, obj: Any, code: int = 200, headers: dict[str, str] | None = None) -> None:
        self.send(json.dumps(obj).encode(), "application/json", code, headers)

    def log_message(self, format: str, *args: Any) -> None:  # one line per request would bury the URL
        pass


#: every answer's: no other site's page may show the review in a frame, where clicks it tricks would be votes
FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


@route(GET, r"/")
def _page(h: _Handler, _: re.Match[str]) -> None:
    h.send(PAGE.replace("{{search}}", html.escape(h.review.name)).encode(), "text/html; charset=utf-8")


@route(GET, r"/api/state")
def _state(h: _Handler, _: re.Match[str]) -> None:
    h.send_json(h.review.state())


@route(GET, r"/grid/(\d+)\.png")
def _grid(h: _Handler, m: re.Match[str]) -> None:
    if (c := h.review.candidates.get(int(m.group(1)))) is None:  # it answered 400 {"error": "99"}
        h.send_json({"error": f"no trial {m.group(1)} under review"}, 404)
        return
    h.send(c.png, "image/png")


@route(POST, r"/api/vote")
def _vote(h: _Handler, _: re.Match[str]) -> None:
    """A vote, as JSON only: any web page open in the browser may POST ``text/plain`` here unasked (a "simple"
    cross-origin request), but ``application/json`` needs a CORS preflight, which this server does not answer, so
    only the review page itself can vote."""
    if h.headers.get_content_type() != "application/json":
        h.send_json({"error": "a vote is a JSON body (Content-Type: application/json)"}, 415)
        return
    port = h.server.server_address[1]  # type: ignore[index]
    if (origin := h.headers.get("Origin")) is not None and origin.lower() not in {
            f"http://127.0.0.1:{port}", f"http://localhost:{port}"}:  # a browser names the page that sends
        h.send_json({"error": f"this review takes votes from its own page, not from {origin[:100]}"}, 403)
        return
    given = h.headers.get("Content-Length") or "0"
    if not given.isdigit() or int(given) > 10_000:  # a negative one read until the client hung up
        raise ValueError(f"Content-Length {given[:20]}: a vote is a number of bytes, at most 10,000")
    length = int(given)
    data = h.rfile.read(length)
    if len(data) < length:  # the client left mid-body: the part that came was saved as a vote nobody made
        raise ValueError(f"the body ended after {len(data)} of its {length} bytes: nothing was kept")
    try:
        body = json.loads(data or b"{}")
    except ValueError as err:  # not JSON, not UTF-8, a 5,000-digit number: Python's own words named none of it
        raise ValueError(f"a vote is a JSON object {{a, b, winner}} of trial numbers; this body is not one "
                         f"({type(err).__name__})") from None
    if not isinstance(body, dict):
        raise TypeError(f"a vote is a JSON object with a, b and winner, not {type(body).__name__}")
    winner = body.get("winner")
    h.send_json(h.review.vote(_trial(body, "a"), _trial(body, "b"), None if winner is None else _trial(body, "winner")))


def _trial(body: dict[str, Any], key: str) -> int:
    """A vote's trial number: a JSON integer (``int()`` took true, "1" and 0.9, which is trial 0)."""
    if key not in body:  # it answered {"error": "'a'"}
        raise ValueError(f"{key}: missing; a vote is a JSON object {{a, b, winner}} of trial numbers")
    value = body[key]
    if type(value) is not int:
        raise TypeError(f"{key}: a trial number is a whole number, not {json.dumps(value)}")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the standard library's 5: a page's images and a second tab at once were refused


class ReviewServer:
    """The review page on 127.0.0.1:``port`` (0: a free one), served from threads."""

    def __init__(self, review: Review, port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise GantuneError(f"--port {port}: not a TCP port (0-65535)")
        handler = type("Handler", (_Handler,), {"review": review})
        try:
            self.httpd = _Server(("127.0.0.1", port), handler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise GantuneError(f"--port {port}: already in use on 127.0.0.1 (leave --port out for a free one)"
                                   ) from None
            raise GantuneError(f"--port {port}: cannot listen on 127.0.0.1 ({err.strerror or err})") from None
        self.review = review
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread: threading.Thread | None = None

    def start(self) -> ReviewServer:
        """Serve from a background thread (tests, and callers that do other work meanwhile)."""
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="gantune-review", daemon=True)
        self.thread.start()
        return self

    def serve(self) -> None:
        """Serve until Ctrl-C (which ends the review normally)."""
        with contextlib.suppress(KeyboardInterrupt):
            self.httpd.serve_forever()

    def stop(self) -> str | None:
        """Stop serving and wait for the last MLflow write; the parent run tagged, if any."""
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join()
        self.httpd.server_close()
        return self.review.close()


def has_display() -> bool:
    """Whether a browser could open a window here (a Linux machine without X or Wayland has none)."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gantune review — {{search}}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f6f7f9;
         color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 14px 28px; }
  header h1 { margin: 0; font-size: 20px; }
  header p { margin: 4px 0 0; opacity: .8; font-size: 14px; }
  main { padding: 18px 28px; max-width: 1200px; }
  .pair { display: flex; gap: 28px; flex-wrap: wrap; }
  figure { margin: 0; background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.1); padding: 12px;
           text-align: center; }
  figure img { width: 420px; max-width: 42vw; image-rendering: pixelated; border: 1px solid #ddd; display: block; }
  button { font-size: 16px; padding: 8px 22px; margin-top: 10px; border-radius: 6px; border: 1px solid #1d2330;
           background: #fff; cursor: pointer; }
  button:hover { background: #1d2330; color: #fff; }
  button:disabled { opacity: .4; cursor: wait; }
  #skip { margin-left: 12px; }
  table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
  th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #e3e6ec; }
  .note { color: #667085; font-size: 13px; }
  #error { color: #b42318; }
</style>
</head>
<body>
<header>
  <h1>Which is better?</h1>
  <p>gantune review of search “{{search}}” · both grids drawn from the same latents · keys: ← → s</p>
</header>
<main>
  <div class="pair">
    <figure><img id="left-img" alt="samples A"><figcaption><button id="left">A is better</button></figcaption></figure>
    <figure><img id="right-img" alt="samples B"><figcaption><button id="right">B is better</button></figcaption>
    </figure>
  </div>
  <p><button id="skip">Skip (can't tell)</button></p>
  <p class="note"><span id="count">0</span> <span id="answers">answers</span> so far, kept in the search's Optuna study.
     <span id="error"></span></p>
  <details><summary>Ranking so far (Bradley–Terry, win rate, the metric)</summary>
    <table><thead><tr><th>#</th><th>trial</th><th>strength</th><th>won</th><th>win rate</th><th id="objective"></th>
    </tr></thead><tbody id="ranking"></tbody></table>
  </details>
</main>
<script>
let pair = null;
const $ = (id) => document.getElementById(id);
const buttons = ["left", "right", "skip"].map($);
function render(s, keepError) {
  if (s.error) { $("error").textContent = s.error; reload(); return; }
  if (!keepError) $("error").textContent = "";
  pair = s.pair;
  $("left-img").src = "grid/" + pair[0] + ".png";
  $("right-img").src = "grid/" + pair[1] + ".png";
  $("left-img").dataset.trial = pair[0];
  $("right-img").dataset.trial = pair[1];
  $("count").textContent = s.votes;
  $("answers").textContent = s.votes === 1 ? "answer" : "answers";
  document.body.dataset.votes = s.votes;
  $("objective").textContent = s.objective;
  const fmt = (x) => x === null ? "–" : Number(x).toPrecision(3);
  $("ranking").innerHTML = s.ranking.map((r, i) => "<tr><td>" + (i + 1) + "</td><td>" + r.trial + "</td><td>" +
    fmt(r.score) + "</td><td>" + r.wins + "/" + r.comparisons + "</td><td>" + fmt(r.win_rate) + "</td><td>" +
    fmt(r.value) + "</td></tr>").join("");
  buttons.forEach((b) => { b.disabled = false; });
}
function reload() {  // after a refused vote (a page left open while the review restarted): the pair it asks now
  const enable = () => buttons.forEach((b) => { b.disabled = false; });
  fetch("api/state").then((r) => r.json()).then((s) => { if (s.error) enable(); else render(s, true); })
    .catch(enable);
}
async function vote(side) {
  if (!pair || buttons[0].disabled) return;
  buttons.forEach((b) => { b.disabled = true; });
  const winner = side === "skip" ? null : pair[side === "left" ? 0 : 1];
  try {
    const r = await fetch("api/vote", {method: "POST", headers: {"Content-Type": "application/json"},
                                       body: JSON.stringify({a: pair[0], b: pair[1], winner: winner})});
    render(await r.json());
  } catch (e) {
    $("error").textContent = "the review server is not answering (" + e + ")";
    buttons.forEach((b) => { b.disabled = false; });
  }
}
buttons.forEach((b) => b.addEventListener("click", () => vote(b.id)));
document.addEventListener("keydown", (e) => {
  const side = {ArrowLeft: "left", ArrowRight: "right", s: "skip"}[e.key];
  if (side) vote(side);
});
buttons.forEach((b) => { b.disabled = true; });
fetch("api/state").then((r) => r.json()).then(render)
  .catch((e) => { $("error").textContent = "the review server is not answering (" + e + ")"; });
</script>
</body>
</html>
"""
