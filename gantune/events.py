"""What a search tells the world, without Ray: trial outcomes, statuses, observers and a background relay.

The search's book (``gantune.search.book``, inside Ray Tune's driver loop) turns each trial's ending into a
``TrialOutcome`` and forwards events to observers such as the MLflow tracker. Tune's loop also carries every
trial's ``tune.report``: an observer that blocks (a tracking server gone away, retrying for minutes) would
freeze every trial. ``ObserverThread`` runs an observer on a thread of its own, so the loop only enqueues.
"""

from __future__ import annotations

import contextlib
import queue
import re
import reprlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class Status(str, Enum):
    """How a trial ended: the one spelling of each word (a ``str``, so it stores and compares as its value)."""

    COMPLETED = "completed"
    PRUNED_ASHA = "pruned:asha"
    PRUNED_COLLAPSED = "pruned:collapsed"
    PRUNED_DIVERGED = "pruned:diverged"
    PRUNED_STALLED = "pruned:stalled"
    FAILED = "failed"
    FAILED_OOM = "failed:oom"  # out of memory: a property of the config (batch, widths), not a bug in the code
    DIVERGED = "diverged"  # the trial loop's own stop on a non-finite value; a search reports it as pruned:diverged

    def __str__(self) -> str:
        return self.value

    @property
    def pruned(self) -> bool:
        return self.value.startswith("pruned:")

    @property
    def failed(self) -> bool:
        return self.value.startswith("failed")

    @classmethod
    def pruned_by(cls, kind: str) -> Status:
        """``pruned:<kind>`` for a health verdict's kind (diverged, collapsed, stalled)."""
        return cls(f"pruned:{kind}")

    @classmethod
    def in_search(cls, status: str) -> Status:
        """A trial loop ending as a search reports it."""
        return cls.PRUNED_DIVERGED if status == cls.DIVERGED else cls(status)


#: every way a trial of a search can end
STATUSES = tuple(s.value for s in Status if s is not Status.DIVERGED)
#: where a trial's ending is kept: the keys of its last Ray Tune report and of its Optuna user attributes
STATUS_KEY, REASON_KEY, RULE_KEY = "gantune_status", "gantune_reason", "gantune_rule"
#: what a trial measured of its own run (the share of its wall spent evaluating, its wall seconds): in its last
#: report (``final_report``) and its Optuna user attributes, so a child run finished on ``--resume`` has them too
RUN_FACTS = ("eval_fraction", "trial_wall_s")
#: the status of a run that has not ended: still running, or stopped by Ctrl-C (``--resume`` runs it again)
RUNNING, INTERRUPTED = "running", "interrupted"


@dataclass
class TrialOutcome:
    number: int
    status: Status
    reason: str
    steps: int
    values: list[float] | None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: str | None = None  # directory with the trial's generator weights and config, on the driver
    rule: str = ""  # the health rule behind a pruned:* status (e.g. ``diversity``): what reports group by


class Observer(Protocol):
    """Receives the search's events on the driver (e.g. the MLflow tracker)."""

    def connect(self) -> None:
        """Called before anything is written: raise ``GantuneError`` (one line) when unusable."""

    def search_started(self, study: Any, space: Any, resumed: list[int]) -> None: ...

    def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]: ...

    def search_interrupted(self, running: list[int]) -> None: ...

    def trial_started(self, number: int, params: dict[str, Any], config: dict[str, Any]) -> None: ...

    def trial_result(self, number: int, result: dict[str, Any]) -> None: ...

    def trial_ended(self, outcome: TrialOutcome) -> None: ...

    def trial_exploited(self, number: int, lineage: list[dict[str, Any]], config: dict[str, Any]) -> None:
        """A PBT member cloned another: ``lineage`` lists each exploit so far (step, from_trial, params,
        changed, and ``after``: the verdict that ended its previous config, when one did); ``config`` is what it
        trains on now."""

    def trial_recipe(self, number: int, recipe: str) -> None:
        """Trial ``number`` (just started) is the known-good recipe ``recipe`` (a warm start)."""

    # optional: ``abandon(why: str) -> bool``, called once at the search's end after an event failed (``why``):
    # end what the observer holds open, best effort; true when it did


def warn(line: str) -> None:
    print(f"warning: {one_line(line)}", file=sys.stderr, flush=True)


#: what a terminal line must not hold: line breaks (YAML's and Unicode's too), the other control characters, and
#: what no encoding writes (a file name's undecodable bytes, which Python keeps as lone surrogates) or YAML refuses
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def one_line(text: str) -> str:
    """``text`` with its line breaks and control characters written as Python escapes (``\\n``, ``\\x7f``): an
    error or warning naming a file or folder whose name holds one stays one line, and an escape sequence in a name
    does not drive the terminal. Each escape is one YAML's double-quoted strings read back as the character."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


#: how many ``drain_s`` an observer that still answers is waited for at most (a backlog of a slow server)
PATIENCE = 10


class ObserverThread:
    """Runs an observer's events in order on a background thread.

    The first failure disables the observer for the rest of the search (one warning line, kept in
    ``error``): a dead tracking server then costs the search nothing. ``search_ended`` and
    ``search_interrupted`` wait for the queue while it moves: until no event has finished for ``drain_s`` seconds
    (or ``PATIENCE`` times that in all), so the search always finishes, and a slow server with a backlog (many
    trials ending together, each uploading its weights) is waited for, not taken for a dead one (a whole-queue
    deadline dropped the rest of a working tracker's events and ended its runs KILLED). After a failure they give
    the observer's ``abandon(why)`` one try (the MLflow runs it had open stayed RUNNING for good).
    """

    def __init__(self, observer: Any, drain_s: float = 60.0, say: Callable[[str], None] = warn) -> None:
        self.observer = observer
        self.drain_s = drain_s
        self.say = say
        self.error: str | None = None
        self._queue: queue.Queue[tuple[str, tuple[Any, ...], threading.Event | None, list[Any], bool] | None] = (
            queue.Queue())
        self._late: threading.Event | None = None  # a call that took longer than drain_s, until it answers
        self._hung = False  # it did not answer in drain_s more: nothing more is waited for
        self.runs_ended = False  # after a failure: whether ``abandon`` ended what the observer held open
        self._finished = 0  # events the thread has finished: a wait goes on while this moves
        self._thread = threading.Thread(target=self._work, name=f"gantune-{type(observer).__name__}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return type(self.observer).__name__

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            event, args, done, out, last_try = item
            if self.error is None:
                try:
                    out.append(getattr(self.observer, event)(*args))
                except Exception as err:
                    why = getattr(self.observer, "explain", lambda _: None)(err) or first_line(err)
                    self.error = f"{self.name}.{event}: {type(err).__name__}: {why}"
                    self.say(f"{self.error}; the search goes on without it")
            elif last_try:  # said once already: a store that fails again has nothing new to say
                with contextlib.suppress(Exception):
                    out.append(getattr(self.observer, event)(*args))
            self._finished += 1
            if done is not None:
                done.set()

    def _post(self, event: str, *args: Any) -> None:
        self._queue.put((event, args, None, [], False))

    def _call(self, event: str, *args: Any, last_try: bool = False) -> Any:
        """Queue the event and wait for it (``_wait``); ``None`` if it failed or timed out. ``last_try``:
        run it even after a failure (once the observer's other events are dropped)."""
        if not self._thread.is_alive():  # closed (an interrupted close): no one would answer
            return None
        if self._late is not None:  # a call it took past drain_s on: given drain_s more, once
            late, self._late = self._late, None
            if not self._wait(late):
                self._hung = True
        if self._hung:
            return None
        done, out = threading.Event(), list[Any]()
        self._queue.put((event, args, done, out, last_try))
        if not self._wait(done):
            self._late = done
            if self.error is None:
                self.error = f"{self.name}.{event}: no answer within {self.drain_s:g}s"
                self.say(f"{self.error}; the search goes on without it")
            return None
        return out[0] if out else None

    def _wait(self, done: threading.Event) -> bool:
        """Wait for ``done`` while the thread makes progress, at most ``PATIENCE`` times ``drain_s`` in all (one
        line says so past the first ``drain_s``): false once no event has finished for ``drain_s``."""
        seen, waited = self._finished, 0
        while not done.wait(self.drain_s):
            waited += 1
            if self._finished == seen or waited >= PATIENCE:
                return False
            if waited == 1:
                self.say(f"{self.name} is slow: waiting while it answers ({self._queue.qsize()} events queued, "
                         f"at most {PATIENCE * self.drain_s:g}s)")
            seen = self._finished
        return True

    def _abandon(self) -> None:
        """After a failure, the observer's runs still open are ended where it can (``abandon``)."""
        if self.error is not None and hasattr(self.observer, "abandon"):
            self.runs_ended = self._call("abandon", self.error, last_try=True) is True

    def connect(self) -> None:
        self.observer.connect()  # synchronous: an unusable observer stops the search before it starts

    def search_started(self, study: Any, space: Any, resumed: list[int]) -> None:
        self._call("search_started", study, space, resumed)
        if hasattr(self.observer, "mend_trials"):  # a resumed search's slow repairs: queued, not waited for
            self._post("mend_trials")

    def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
        result = self._call("search_ended", summary)
        self._abandon()
        self.close()
        if result is None:
            return {**summary, "tracking_error": self.error, "tracking_runs_ended": self.runs_ended}
        return dict(result)

    def search_interrupted(self, running: list[int]) -> None:
        self._call("search_interrupted", running)
        self._abandon()
        self.close()

    def trial_started(self, number: int, params: dict[str, Any], config: dict[str, Any]) -> None:
        self._post("trial_started", number, params, config)

    def trial_result(self, number: int, result: dict[str, Any]) -> None:
        self._post("trial_result", number, result)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        self._post("trial_ended", outcome)

    def trial_exploited(self, number: int, lineage: list[dict[str, Any]], config: dict[str, Any]) -> None:
        self._post("trial_exploited", number, list(lineage), config)

    def trial_recipe(self, number: int, recipe: str) -> None:
        if hasattr(self.observer, "trial_recipe"):  # an event observers written before it need not have
            self._post("trial_recipe", number, recipe)

    def close(self) -> None:
        self._queue.put(None)


def format_params(params: dict[str, Any]) -> str:
    """``name=value, ...`` with floats to 4 significant digits (PBT's explored changes in progress lines and tags)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


#: the note SQLAlchemy puts before an error raised in a flush a query set off (alone, or after MLflow's prefix)
_AUTOFLUSH = re.compile(r"^\((\S+\) \()?raised as a result of .*\)$")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 300 characters (for one-line reports): ``text_line``."""
    return text_line(str(err))


_SHORT = reprlib.Repr()  # its keyword arguments are Python 3.12's
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 3, 4, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = 60


def short_repr(value: object) -> str:
    """``repr(value)`` cut short for a one-line error: a YAML alias "bomb" (nine levels of eight aliases) made a
    226 MB line, or ran out of memory building it (``reprlib`` never builds the whole)."""
    return _SHORT.repr(value)


def text_line(text: str, limit: int | None = 300) -> str:
    """The first line of ``text`` that says what failed, at most ``limit`` characters. SQLAlchemy puts its notes
    before the error ("(raised as a result of Query-invoked autoflush; ...)"), also where MLflow passes its text
    on: those are skipped."""
    lines = [line for line in text.strip().splitlines() if not _AUTOFLUSH.match(line)]
    return lines[0][:limit] if lines else ""
