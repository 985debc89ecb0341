"""The rate/ETA arithmetic and wording shared by ``gantune train``, export's re-runs and a search's progress line."""

import io

import pytest

from gantune.progress import LiveLine, Meter, duration, steps_line


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (185, "3m05s"),
                                               (3720, "1h02m"), (183600, "2d03h"), (-5, "0s")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_rate_and_eta_from_the_first_update_on() -> None:
    clock = Clock()
    meter = Meter(clock)
    assert meter.rate is None and meter.eta(10) is None  # no rate before any work
    meter.update(100)  # the first report: what came before it (loading data) is not counted
    assert meter.rate is None
    assert steps_line(meter, 2000) == "step  100/2000 ( 5.0%)  -- steps/s  ETA --"
    clock.t += 10
    meter.update(600)
    assert meter.rate == pytest.approx(50.0)
    assert meter.eta(1400) == pytest.approx(28.0) and meter.eta(0) == 0.0
    assert steps_line(meter, 2000) == "step  600/2000 (30.0%)  50 steps/s  ETA 28s"
    clock.t += 90
    meter.update(2000)
    assert steps_line(meter, 2000) == "step 2000/2000 (100.0%)  19 steps/s  ETA 0s"


def test_a_count_that_goes_down_restarts_the_rate() -> None:
    clock = Clock()
    meter = Meter(clock)
    meter.update(500)
    clock.t += 5
    meter.update(100)  # e.g. a trial run again from scratch
    assert meter.rate is None
    clock.t += 2
    meter.update(300)
    assert meter.rate == pytest.approx(100.0)


def test_a_pipe_gets_every_line() -> None:
    out = io.StringIO()
    line = LiveLine(out)  # StringIO is no terminal
    line.show("step 1/2")
    line.say("health: ok")
    line.show("step 2/2")
    line.close()
    assert out.getvalue() == "step 1/2\nhealth: ok\nstep 2/2\n"


def test_a_terminal_gets_one_line_rewritten_in_place() -> None:
    out = io.StringIO()
    line = LiveLine(out, live=True)
    line.show("step 1/3")
    line.show("step 2/3")
    line.say("health: collapsed")  # stays, below the progress line as it stood
    line.show("step 3/3")
    line.close()
    assert out.getvalue() == ("\r\x1b[Kstep 1/3\r\x1b[Kstep 2/3\nhealth: collapsed\n\r\x1b[Kstep 3/3\n")
