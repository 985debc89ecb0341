"""Sampling from exported generator weights: ``gantune generate WEIGHTS --n N --out FILE|DIR [--class K]``, and
walks through its latent space: ``gantune generate WEIGHTS --interpolate N [--rows R] [--out FILE] [--class K]``.

The weights file carries the config that built the network, so nothing else is needed. A file that is not a
gantune generator (another format, a wrong architecture, non-finite values) is refused with one line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gantune.catalogue import config_from_dict
from gantune.config import TrialConfig
from gantune.data import data_shape, is_points, mixture_means
from gantune.errors import ConfigError, GantuneError
from gantune.gan import build_generator
from gantune.gan.conditional import balanced_labels, classes_of, conditional_generator, state_classes
from gantune.gan.nets import resolve_arch
from gantune.gan.transfer import state_mismatch
from gantune.latent import grid_png, paths_csv, paths_png, walk
from gantune.registry import plugin_hint
from gantune.rundir import (
    BEST_GENERATOR,
    GENERATOR,
    GENERATOR_FORMAT,
    SAMPLES_LIST,
    SamplesList,
    atomic_folder,
    atomic_write,
    check_replaceable,
    check_writable,
    finite_weights,
    is_generator_payload,
    load_saved,
    parents_made,
)
from gantune.viz import as_uint8, gantune_png, png_bytes, samples_png

#: ``gantune generate``'s defaults: samples drawn, and walks (rows) of an interpolation
SAMPLES, ROWS = 64, 8


def load_generator(path: Path, device: torch.device) -> tuple[nn.Module, TrialConfig]:
    """Rebuild the generator from a ``generator.pt`` written by gantune (``torch.load(weights_only=True)``)."""
    if path.is_dir():  # a run folder: its weights are in it
        inside = [p.name for p in (path / GENERATOR, path / BEST_GENERATOR) if p.is_file()]
        raise GantuneError(f"{path} is a folder, not a weights file" + (
            f" (it holds {' and '.join(inside)}: give {path / inside[0]})" if inside else ""))
    if not path.is_file():
        raise GantuneError(f"{path}: no such weights file")
    payload = load_saved(path)  # pickle errors, truncated zips, non-tensor objects: "PATH is unreadable (why)"
    if not is_generator_payload(payload):
        raise GantuneError(f"{path}: not a gantune generator file (expected format {GENERATOR_FORMAT!r})")
    try:
        cfg = config_from_dict(_for_sampling(payload["config"]), f"{path} (embedded config)")
    except ConfigError as err:
        raise ConfigError(plugin_hint(str(err))) from None
    net = build_generator(cfg.model, resolve_arch(cfg), data_shape(cfg.data))
    if cfg.model.conditional:  # the class count is the class embeddings' (the data is not loaded here)
        classes = state_classes(payload["state_dict"])
        if classes < 1:
            raise GantuneError(f"{path}: weights do not fit the embedded config (model.conditional, but no class "
                               "embeddings)")
        net = conditional_generator(net, classes)
    if why := state_mismatch(net, payload["state_dict"]):  # torch's first line named no tensor
        raise GantuneError(f"{path}: weights do not fit the embedded config: G {why}")
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GantuneError(f"{path}: weights do not fit the embedded config ({first})") from None
    if not finite_weights(net.state_dict()):
        raise GantuneError(f"{path}: weights contain non-finite values")
    return net.to(device).eval(), cfg


#: the sections of an embedded config that sampling never reads: a generator trained with a plugin's loss or
#: metric was refused without the plugin ("unknown loss 'ragan'"), though nothing here uses either
NOT_SAMPLED = ("loss", "optim", "eval", "health")


def _for_sampling(raw: Any) -> Any:
    """The embedded config as sampling reads it: without ``NOT_SAMPLED``'s sections, and less
    ``model.init_from`` (the weights are all there, so the file the run started from need not be: it may have
    moved since)."""
    if not isinstance(raw, dict):
        return raw
    raw = {k: v for k, v in raw.items() if k not in NOT_SAMPLED}
    if isinstance(raw.get("model"), dict) and "init_from" in raw["model"]:
        return {**raw, "model": {k: v for k, v in raw["model"].items() if k != "init_from"}}
    return raw


@torch.no_grad()
def sample(net: nn.Module, cfg: TrialConfig, n: int, device: torch.device, seed: int,
           label: int | None = None) -> torch.Tensor:
    """``n`` samples for seeded noise; a conditional generator's of class ``label``, or with none, of labels
    uniform over its classes (``balanced_labels``, drawn after the noise)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg.model.z_dim, generator=gen)
    classes = classes_of(net)
    if not classes:
        return torch.cat([net(chunk.to(device)).cpu() for chunk in z.split(1024)])
    y = torch.full((n,), label, dtype=torch.long) if label is not None else balanced_labels(n, classes, gen)
    return torch.cat([net(zc.to(device), yc.to(device)).cpu() for zc, yc in zip(z.split(1024), y.split(1024),
                                                                                strict=True)])


def check_label(net: nn.Module, label: int | None) -> None:
    """``--class``: a class of a conditional generator (one line naming the range otherwise)."""
    if label is None:
        return
    classes = classes_of(net)
    if not classes:
        raise GantuneError("--class: this generator is unconditional (trained without model.conditional); "
                           "sample it without --class")
    if not 0 <= label < classes:
        raise GantuneError(f"--class: {label} is not a class of this generator (0 to {classes - 1})")


def _points_csv(x: torch.Tensor) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["x", "y"])
    w.writerows([[f"{a:.6f}", f"{b:.6f}"] for a, b in x.tolist()])
    return buf.getvalue().encode()


def _image_png(img: torch.Tensor) -> bytes:
    x = as_uint8(img).permute(1, 2, 0).numpy()
    return png_bytes(x)


def _own_files(out: Path, n: int, points: bool) -> tuple[Callable[[str], bool], dict[str, Any]]:
    """Which files of folder ``out`` an earlier ``generate`` wrote there (its list; none without one). A
    ``GantuneError`` when the folder holds a file of a name this one writes that it did not write (its samples
    would replace the user's file), told by the file system itself, so ``000000.PNG`` counts where case is not.
    With the list this write leaves: the earlier one's names and its own, so a write stopped part-way (before the
    earlier, larger ``--n``'s extra samples are removed) leaves no file of either unlisted."""
    earlier = SamplesList.read(out) if out.is_dir() else SamplesList()
    numbered, files = earlier.numbered, set(earlier.files)
    ours = earlier.__contains__
    wanted = ["samples.csv", "samples.png"] if points else [f"{i:06d}.png" for i in range(n)]
    taken = [name for name in wanted if not ours(name) and os.path.lexists(out / name)] if out.is_dir() else []
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise GantuneError(f"--out: {out} holds {taken[0]}{more}, which gantune generate did not write there (or an "
                           "older gantune did, without the list it keeps now): its samples would replace them; "
                           "choose a new or an empty folder")
    # both kinds kept: a write stopped part-way leaves neither the earlier write's files nor its own unlisted
    listed = {"numbered": max(numbered, 0 if points else n), "files": sorted(files | set(wanted) if points else files)}
    return ours, listed


_NUM = rb"(?:-?\d+\.\d{6}|-?nan|-?inf)"
#: a CSV ``generate`` or ``--interpolate`` wrote, as far as a first KiB shows it (the last line cut anywhere): its
#: header, then rows of numbers in its format (6 decimals)
_OUR_CSV = re.compile(rb"(?:x,y\r?\n(?:%s,%s\r?\n)*|row,step,t,x,y\r?\n(?:\d+,\d+,%s,%s,%s\r?\n)*)[-\d.,naif\r]*"
                      % ((_NUM,) * 5))


def check_output_file(out: Path) -> None:
    """Refuse an existing file at ``out`` that no earlier ``generate`` wrote: a user's PNG or CSV of the name was
    replaced without a word (a folder's files are checked by ``_own_files``)."""
    check_replaceable(out, "--out", ("output of gantune generate",
                                     lambda head: gantune_png(head) or _OUR_CSV.fullmatch(head) is not None),
                      in_run=True)


def generate(weights: Path, n: int, out: Path, device: torch.device, seed: int = 0,
             label: int | None = None, folder: bool = False) -> dict[str, Any]:
    """Write ``n`` samples to ``out``: a .png grid/scatter, a .csv of points, or a directory of files;
    ``label``: only samples of that class (a conditional generator's); ``folder``: ``out`` was given as a folder
    (a trailing slash: ``new.png/`` was written as the file ``new.png``)."""
    if n < 1:
        raise GantuneError("--n: must be at least 1")
    if folder and out.exists() and not out.is_dir():
        raise GantuneError(f"--out: {out}/ names a folder, and {out} is a file")
    net, cfg = load_generator(weights, device)
    check_label(net, label)
    points = is_points(cfg.data)
    suffix = "" if folder or out.is_dir() else out.suffix.lower()  # a folder is one, whatever its name
    if suffix not in ("", ".png", ".csv"):
        raise GantuneError(f"--out: {out} must end in .png or .csv, or name a directory")
    if suffix == ".csv" and not points:
        raise GantuneError("--out: CSV output is for 2-D point data; use .png or a directory for images")
    check_writable(out, "--out", is_dir=not suffix)  # before sampling: under a file it said "File exists"
    if suffix:
        check_output_file(out)
    ours, listed = _own_files(out, n, points) if not suffix else (lambda _: False, {})
    means = mixture_means(cfg.data)
    x = sample(net, cfg, n, device, seed, label)
    files: dict[str, bytes] = {}
    if suffix == ".png":
        files[out.name] = samples_png(x, means, f"{n} samples")
    elif suffix == ".csv":
        files[out.name] = _points_csv(x)
    elif points:
        files["samples.csv"] = _points_csv(x)
        files["samples.png"] = samples_png(x, means, f"{n} samples")
    else:
        files.update({f"{i:06d}.png": _image_png(img) for i, img in enumerate(x)})
    count = len(files)
    try:
        if suffix:
            with parents_made(out):
                atomic_write(out, files[out.name])
        else:
            # the list goes in first, naming the earlier write's files too: one stopped part-way leaves none unlisted
            atomic_folder(out, {SAMPLES_LIST: json.dumps(listed).encode(), **files},
                          stale=ours)  # an earlier, larger --n's
            # then this write's alone: a file of the user's named as an earlier write's would go with a later one
            atomic_write(out / SAMPLES_LIST, json.dumps({"files": sorted(files)} if points else {"numbered": n})
                         .encode())
    except OSError as err:
        raise GantuneError(f"--out: cannot write {out} ({err.strerror or err})") from None
    return {"weights": str(weights), "n": n, "out": str(out), "files": count, "kind": "points" if points
            else "images", "shape": list(x.shape), **({"class": label} if label is not None else {})}


#: samples drawn under a points interpolation's paths, to show where G puts its mass
PATH_BACKGROUND = 1000


@torch.no_grad()
def walk_samples(net: nn.Module, cfg: TrialConfig, n: int, rows: int, device: torch.device, seed: int = 0,
                 label: int | None = None) -> torch.Tensor:
    """G along ``rows`` slerp walks of ``n`` steps, ``(rows * n, ...)``; a conditional G holds one class along a
    walk: ``label``, or with none the row's number modulo the classes (so the rows show the classes in turn)."""
    z = walk(rows, n, cfg.model.z_dim, seed).reshape(rows * n, -1)
    classes = classes_of(net)
    if not classes:
        return torch.cat([net(chunk.to(device)).cpu() for chunk in z.split(1024)])
    per_row = torch.full((rows,), label) if label is not None else torch.arange(rows) % classes
    y = per_row.repeat_interleave(n)
    return torch.cat([net(zc.to(device), yc.to(device)).cpu() for zc, yc in zip(z.split(1024), y.split(1024),
                                                                                strict=True)])


@torch.no_grad()
def interpolation_png(net: nn.Module, cfg: TrialConfig, n: int, rows: int, device: torch.device, seed: int = 0,
                      title: str = "", label: int | None = None) -> bytes:
    """The PNG of ``rows`` slerp walks of ``n`` steps (``gantune.latent``): an image grid (a row per walk,
    first endpoint left), or for 2-D points the paths over G's samples and the true means."""
    x = walk_samples(net, cfg, n, rows, device, seed, label)
    if not is_points(cfg.data):
        return grid_png(x, n)
    means = mixture_means(cfg.data)
    background = sample(net, cfg, PATH_BACKGROUND, device, seed + 1)
    return paths_png(x.reshape(rows, n, 2), background, means, title or f"{rows} slerp paths, {n} steps")


def interpolate(weights: Path, n: int, out: Path, device: torch.device, seed: int = 0,
                rows: int = ROWS, label: int | None = None) -> dict[str, Any]:
    """Write ``rows`` slerp walks of ``n`` steps between latents fixed by ``seed`` to ``out``: a PNG grid for
    images; for 2-D points a PNG of the paths (over G's samples and the true means) or a CSV of them."""
    if n < 2:
        raise GantuneError(f"--interpolate {n}: an interpolation needs at least 2 steps (its two endpoints)")
    if rows < 1:
        raise GantuneError("--rows: must be at least 1")
    net, cfg = load_generator(weights, device)
    check_label(net, label)
    points = is_points(cfg.data)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".csv") or (suffix == ".csv" and not points):
        allowed = "a .png (paths plot) or a .csv (paths)" if points else "a .png (image grid)"
        raise GantuneError(f"--out: {out}: an interpolation of {'2-D points' if points else 'images'} is {allowed}")
    check_writable(out, "--out", is_dir=False)
    check_output_file(out)
    if suffix == ".csv":
        with torch.no_grad():
            data = paths_csv(walk_samples(net, cfg, n, rows, device, seed, label).reshape(rows, n, 2))
    else:
        data = interpolation_png(net, cfg, n, rows, device, seed, label=label)
    try:
        with parents_made(out):
            atomic_write(out, data)
    except OSError as err:
        raise GantuneError(f"--out: cannot write {out} ({err.strerror or err})") from None
    return {"weights": str(weights), "interpolate": n, "rows": rows, "out": str(out),
            "kind": "points" if points else "images", "seed": seed, **({"class": label} if label is not None else {})}
