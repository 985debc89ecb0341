"""benchmarks/loop_overhead.py: the bare loop refuses every config it would train differently from gantune's step."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from gantune.catalogue import config_from_dict
from gantune.errors import GantuneError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import loop_overhead as lo  # noqa: E402

CPU = torch.device("cpu")


def _cfg(preset: str, section: str, key: str, value: Any) -> Any:
    raw = copy.deepcopy(lo.PRESETS[preset])
    raw.setdefault(section, {})[key] = value
    return config_from_dict(raw)


@pytest.mark.parametrize(("preset", "section", "key", "value"), [
    # found by a review: accepted, and only gantune's side trained them (a ratio of unlike work)
    ("mlp", "loss", "unroll", 2), ("mlp", "loss", "instance_noise", 0.1), ("mlp", "loss", "label_smoothing", 0.1),
    ("mlp", "optim", "weight_decay", 0.01), ("mlp", "optim", "decay", "linear"),
    ("dcgan32", "data", "augment", ["translation"]), ("dcgan32", "model", "conditional", True),
    ("dcgan32", "model", "progressive", {"start": 8}),
])
def test_the_bare_loop_refuses_what_it_does_not_write_out(preset: str, section: str, key: str, value: Any) -> None:
    lo.check_bare(config_from_dict(lo.PRESETS[preset]), CPU)  # the preset itself is matched
    with pytest.raises(GantuneError, match=f"the bare loop does not implement .*{section}.{key}"):
        lo.check_bare(_cfg(preset, section, key, value), CPU)
