"""``gantune train``'s progress: ``step N/total``, rate and ETA; plain lines in a pipe, one line rewritten in place on
a terminal, nothing but the summary with ``--json``."""

import io
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from gantune.cli import main

#: a progress line as a pipe sees it: step N/total, percent, a rate (or none yet) and an ETA (or none yet)
LINE = re.compile(r"^step +(\d+)/60 \( *[\d.]+%\)  ([\d.e+]+|--) steps/s  ETA (\d+s|\d+m\d\ds|--)  loss_d=")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw = {"name": "t", "model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1},
           "train": {"steps": 60, "batch_size": 16, "log_every": 10, "device": "cpu"},
           "eval": {"every": 30, "n_samples": 100, "metrics": []}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))


def test_piped_train_prints_step_of_total_with_rate_and_eta(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out  # a pipe keeps every line
    steps = [m for m in (LINE.match(ln) for ln in out.splitlines()) if m]
    assert [int(m[1]) for m in steps] == [10, 20, 30, 40, 50, 60]
    assert steps[0][2] == "--" and steps[0][3] == "--"  # the first report only starts the clock
    assert all(m[2] != "--" for m in steps[1:]) and steps[-1][3] == "0s"
    assert out.splitlines()[-1].startswith("completed after 60 steps")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_progress_line(monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking"]) == 0
    lines = term.getvalue().split("\n")
    progress = [ln for ln in lines if "steps/s" in ln]
    assert len(progress) == 1, lines  # every report rewrote the same line
    assert [int(s) for s in re.findall(r"\r\x1b\[Kstep +(\d+)/60", progress[0])] == [10, 20, 30, 40, 50, 60]
    assert lines[-2].startswith("completed after 60 steps")


def test_json_prints_the_summary_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "cfg.yaml", "--out", "run", "--json"]) == 0  # tracked, as by default
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    assert json.loads(out)["steps"] == 60
