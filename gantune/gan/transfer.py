"""Transfer learning: ``model.init_from`` starts G (and D, when the file has it) from weights another run wrote.

Accepted: a ``generator.pt`` (what ``gantune train`` and ``gantune export --weights`` write: G only, the EMA copy
when the run had one, so D starts fresh), a ``checkpoint.pt`` (G and D as they were trained together), or a run
directory (its checkpoint when it has one, else its generator.pt). Every tensor must have the shape the config's
nets give it: the first that does not is named in one line, before any weight is changed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gantune.config import TrialConfig
from gantune.data import data_shape, known_classes
from gantune.errors import GantuneError
from gantune.gan.conditional import conditional_generator, projection_discriminator, state_classes
from gantune.gan.nets import build_discriminator, build_generator, resolve_arch
from gantune.gan.norms import NormSpec
from gantune.rundir import CHECKPOINT, GENERATOR, is_generator_payload


@dataclass(frozen=True)
class InitWeights:
    """The weights ``model.init_from`` names: G's, and D's when the file holds them."""

    source: Path
    g: dict[str, Tensor]
    d: dict[str, Tensor] | None


def init_file(path: str | Path) -> Path:
    """The file behind ``init_from``: a directory's checkpoint.pt, else its generator.pt; a file as it is. A
    ``ValueError`` when there is none (the catalogue's check at load: it reads nothing)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in (CHECKPOINT, GENERATOR):
            if (p / name).is_file():
                return p / name
        raise ValueError(f"{p}: a directory without {CHECKPOINT} or {GENERATOR}")
    if not p.is_file():
        raise ValueError(f"{p} does not exist (give a {GENERATOR}, a {CHECKPOINT} or a run directory)")
    return p


def read_init(path: str | Path) -> InitWeights:
    """G's (and D's) state dicts from ``path``; a ``GantuneError`` for a file that is not gantune's."""
    try:
        file = init_file(path)
    except ValueError as err:
        raise GantuneError(f"model.init_from: {err}") from None
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle headers before refusing them: one line only
            warnings.simplefilter("ignore")
            payload: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zips, non-tensor objects: all mean "not ours"
        raise GantuneError(f"model.init_from: {file}: not a readable weights file ({type(err).__name__})") from None
    if is_generator_payload(payload):
        return InitWeights(file, payload["state_dict"], None)
    trainer = payload.get("trainer") if isinstance(payload, dict) else None
    if isinstance(trainer, dict) and isinstance(trainer.get("G"), dict):
        d = trainer.get("D")
        return InitWeights(file, trainer["G"], d if isinstance(d, dict) else None)
    raise GantuneError(f"model.init_from: {file}: neither a gantune {GENERATOR} nor a {CHECKPOINT}")


def state_mismatch(net: nn.Module, state: dict[str, Any]) -> str | None:
    """Why ``state`` does not fit ``net``, at its first tensor (in the net's order) that is missing or shaped
    otherwise (torch's own error names no tensor on its first line); ``None`` when it fits."""
    own = net.state_dict()
    for key, mine in own.items():
        theirs = state.get(key)
        if theirs is None:
            return f"tensor {key!r} ({list(mine.shape)}) is not in the file"
        if not isinstance(theirs, Tensor) or tuple(theirs.shape) != tuple(mine.shape):
            got = list(theirs.shape) if isinstance(theirs, Tensor) else type(theirs).__name__
            return f"tensor {key!r} is {got} in the file but {list(mine.shape)} in this config's net"
    extra = [k for k in state if k not in own]
    return f"tensor {extra[0]!r} of the file has no place in this config's net" if extra else None


def _fit(which: str, net: nn.Module, state: dict[str, Tensor], source: Path) -> None:
    """Refuse ``state`` for ``net`` where it does not fit (``state_mismatch``) or holds non-finite values."""
    if why := state_mismatch(net, state):
        raise GantuneError(f"model.init_from: {source}: {which} {why}")
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise GantuneError(f"model.init_from: {source}: {which} weights contain non-finite values")


def load_init(g: nn.Module, d: nn.Module, path: str | Path) -> InitWeights:
    """Copy ``path``'s weights into ``g`` (and ``d`` when the file has D's), every shape checked first."""
    init = read_init(path)
    _fit("G", g, init.g, init.source)
    if init.d is not None:
        _fit("D", d, init.d, init.source)
    g.load_state_dict(init.g, strict=True)
    if init.d is not None:
        d.load_state_dict(init.d, strict=True)
    return init


def check_init(cfg: TrialConfig) -> None:
    """``model.init_from`` against the config's nets, built on the CPU: a ``GantuneError`` before a run starts
    (``gantune train``) rather than at its first step."""
    if cfg.model.init_from is None:
        return
    shape, arch = data_shape(cfg.data), resolve_arch(cfg)
    g, d = build_generator(cfg.model, arch, shape), build_discriminator(cfg.model, arch, shape)
    # the data's class count where its file names tell it (a folder's), else the weights' (the trial checks it)
    classes = (known_classes(cfg.data) or state_classes(read_init(cfg.model.init_from).g)) \
        if cfg.model.conditional else 0
    if classes:
        g = conditional_generator(g, classes)
        d = projection_discriminator(d, classes, shape, NormSpec(cfg.model.d_norm).spectral)
    load_init(g, d, cfg.model.init_from)
