"""Trial health: reads the reported stream and says ok, diverged, collapsed or stalled, with a reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Why a trial should stop: ``kind`` is diverged | collapsed | stalled | asha | ... , ``reason`` is for people."""

    kind: str
    reason: str

    @property
    def status(self) -> str:
        return f"pruned:{self.kind}"
