"""Rate and ETA of long work, and the line that shows them: ``gantune train``'s steps, a search's trial-steps
(export's seed re-runs are a search too).

One place for the arithmetic and the wording, so every command says "N/total, rate, ETA" alike. No Ray, no
MLflow: the trial-loop side (``gantune.production``) and the Ray side (``gantune.search.book``) both use it.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO


def duration(seconds: float) -> str:
    """A short, fixed-precision span: ``42s``, ``3m05s``, ``1h02m``, ``2d03h`` (an ETA needs no more)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def rate_text(rate: float | None, unit: str) -> str:
    """``52.1 steps/s``; ``-- steps/s`` before there is a rate."""
    return f"{rate:.3g} {unit}/s" if rate is not None else f"-- {unit}/s"


def eta_text(eta: float | None) -> str:
    return f"ETA {duration(eta)}" if eta is not None else "ETA --"


class Meter:
    """Units of work done over a clock: the mean rate since the first update, and the time ``left`` units take.

    The first update is the origin, so what came before it (data loading, starting Ray's workers) does not
    count against the rate; evaluations between updates do, as they will in the time left. A count that goes
    down (a resumed run restarting lower) moves the origin there.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._origin: tuple[float, float] | None = None
        self._last: tuple[float, float] | None = None

    def update(self, done: float) -> None:
        now = self.clock()
        if self._origin is None or done < self._origin[1]:
            self._origin = (now, done)
        self._last = (now, done)

    @property
    def done(self) -> float:
        return self._last[1] if self._last is not None else 0.0

    @property
    def rate(self) -> float | None:
        """Units per second; ``None`` until some units were done over some time."""
        if self._origin is None or self._last is None:
            return None
        (t0, d0), (t1, d1) = self._origin, self._last
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else None

    def eta(self, left: float) -> float | None:
        """Seconds until ``left`` more units are done at the mean rate; ``None`` without a rate."""
        if left <= 0:
            return 0.0
        rate = self.rate
        return left / rate if rate else None


def steps_line(meter: Meter, total: int, unit: str = "step") -> str:
    """``step 400/200000 (0.2%)  52.1 steps/s  ETA 1h03m``: where a run of ``total`` units stands."""
    done = int(meter.done)
    width = len(str(total))
    pct = 100 * done / total if total else 100.0
    return (f"{unit} {done:>{width}}/{total} ({pct:4.1f}%)  {rate_text(meter.rate, unit + 's')}  "
            f"{eta_text(meter.eta(total - done))}")


class LiveLine:
    """Progress on one line rewritten in place where ``stream`` is a terminal; plain lines anywhere else (a pipe,
    a log file), so a log keeps every step line and a terminal does not scroll.

    ``show`` replaces the progress line; ``say`` prints a line that stays, after the progress line as it stood
    (a health verdict then reads below the step it came at); ``close`` ends the progress line.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._shown = ""  # the progress line on the terminal now

    def show(self, text: str) -> None:
        if not self.live:
            self._write(text + "\n")
            return
        width = shutil.get_terminal_size().columns - 1  # a wrapped line could not be rewritten
        self._shown = text[:max(width, 20)]
        self._write("\r\x1b[K" + self._shown)

    def say(self, text: str) -> None:
        self.close()  # the progress line so far stays above the message; the next ``show`` starts a new one
        self._write(text + "\n")

    def close(self) -> None:
        if self._shown:
            self._write("\n")
            self._shown = ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
