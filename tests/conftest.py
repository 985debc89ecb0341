"""Shared fixtures: tiny configs that train in well under a second on CPU."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from gantune.config import TrialConfig, config_from_dict

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny(overrides: dict[str, Any] | None = None, **sections: dict[str, Any]) -> TrialConfig:
    """A small grid25 config; ``sections`` update individual sections (e.g. ``loss={"name": "hinge"}``)."""
    raw: dict[str, Any] = {
        "data": {"name": "grid25"},
        "model": {"z_dim": 8, "g_width": 16, "d_width": 16, "g_depth": 2, "d_depth": 2, "g_norm": "none"},
        "train": {"steps": 20, "batch_size": 32, "log_every": 10, "checkpoint_every": 10, "device": "cpu"},
        "eval": {"every": 10, "n_samples": 200, "metrics": []},
    }
    for key, val in {**(overrides or {}), **sections}.items():
        raw.setdefault(key, {}).update(val)
    return config_from_dict(raw)


def tiny_images(**sections: dict[str, Any]) -> TrialConfig:
    base = {"data": {"name": "digits", "resolution": 8},
            "model": {"z_dim": 8, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "batch"}}
    for key, val in sections.items():
        base.setdefault(key, {}).update(val)
    return tiny(base)


@pytest.fixture
def tiny_cfg() -> TrialConfig:
    return tiny()
