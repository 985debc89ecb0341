"""Helpers shared by the search benchmarks: run a space with overridden settings, collect per-trial results."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from pydantic import BaseModel, ValidationError

from gantune import env
from gantune.config import format_validation_error
from gantune.dburl import sqlite_url
from gantune.errors import GantuneError
from gantune.events import first_line
from gantune.sampling.space import SearchSpace, load_space
from gantune.search import SearchOptions, run_search


@dataclass
class Collector:
    """A search observer keeping each trial's reported records (for throughput and replay)."""

    records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def connect(self) -> None:
        pass

    def search_interrupted(self, running: list[int]) -> None:
        pass

    def search_started(self, study: Any, space: Any, resumed: list[int]) -> None:
        pass

    def search_ended(self, summary: dict[str, Any]) -> dict[str, Any]:
        return summary

    def trial_started(self, number: int, params: dict[str, Any], config: dict[str, Any]) -> None:
        self.records[number] = []

    def trial_result(self, number: int, result: dict[str, Any]) -> None:
        self.records.setdefault(number, []).append({k: v for k, v in result.items() if isinstance(v, (int, float))})

    def trial_ended(self, outcome: Any) -> None:
        pass

    def trial_exploited(self, number: int, lineage: list[dict[str, Any]], config: dict[str, Any]) -> None:
        pass

    def median_steps_per_s(self, number: int) -> float:
        values = [r["steps_per_s"] for r in self.records.get(number, []) if "steps_per_s" in r]
        return statistics.median(values[1:] or values) if values else 0.0


class TimedCollector(Collector):
    """A ``Collector`` keeping the wall time each result arrived at (``_t``)."""

    def trial_result(self, number: int, result: dict[str, Any]) -> None:
        super().trial_result(number, result)
        self.records[number][-1]["_t"] = time.time()

    def together(self) -> float:
        """The share of the trials' logging span (first log of any to last of any) in which every trial logged:
        1 when they trained side by side, near 0 when one after another (a sum of their rates then overstates
        what the device did at once)."""
        spans = [(r[0]["_t"], r[-1]["_t"]) for r in self.records.values() if r]
        if not spans:
            return math.nan
        whole = max(e for _, e in spans) - min(b for b, _ in spans)
        both = min(e for _, e in spans) - max(b for b, _ in spans)
        return max(0.0, both) / whole if whole > 0 else 1.0


def guarded(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main`` as the gantune command runs: bad input (a ``GantuneError``, a setting the schema
    refuses, a ``SystemExit`` with a message) is one line on stderr and exit code 2, not a traceback."""
    name = Path(sys.argv[0]).name
    try:
        main()
    except (GantuneError, ValidationError) as err:
        why = first_line(err) if isinstance(err, GantuneError) else format_validation_error(err, "a setting given")
        print(f"{name}: error: {why}", file=sys.stderr)
        sys.exit(2)
    except SystemExit as stop:
        if isinstance(stop.code, str):  # a refusal said in words (argparse's own exits carry a number)
            print(f"{name}: error: {stop.code}", file=sys.stderr)
            sys.exit(2)
        raise


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0 (got {text!r})")
    return value


def count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless one ("1 configs" was printed)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low`` (else argparse's one-line error, exit code 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {low} (got {text!r})")
        return value

    return parse


positive_int = at_least(1)


def run(space_path: str | Path, name: str, workdir: Path, overrides: dict[str, Any],
        collector: Collector | None = None, warn: bool = True) -> tuple[dict[str, Any], optuna.Study, SearchSpace]:
    """One search of ``space_path`` under ``name`` with ``search`` settings overridden, in ``workdir``;
    ``warn=False`` for a benchmark that trains what the warnings are about on purpose (one config n times)."""
    env.configure()
    space = load_space(space_path, name=name)
    space.warns = warn  # type: ignore[misc]
    raw = space.settings.model_dump()
    for key, value in overrides.items():
        if isinstance(getattr(space.settings, key, None), BaseModel):  # a section: only the keys given change
            raw[key].update(value)
        else:
            raw[key] = value
    space.settings = type(space.settings).model_validate(raw)
    storage = sqlite_url(workdir / "optuna.db")
    opts = SearchOptions(storage=storage, runs_dir=str(workdir / "runs"), quiet=True,
                         observers=[collector] if collector is not None else [])
    summary = run_search(space, opts)
    return summary, optuna.load_study(study_name=name, storage=storage), space
