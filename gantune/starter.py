"""``gantune init DATA``: a commented, ready search space for a dataset, centred on its known-good recipe.

The fixed values are the recipe's (``gantune.sampling.recipes``), the ranges are the ones that matter for that data
(each with a comment saying why), the search settings are sized for a CPU and the objective suits the data. The
recipe itself is the search's first trial (``search.warm_start``). The file is checked with ``load_space`` before
it is moved into place, so a written file always loads, and nothing is ever half-written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantune.errors import GantuneError
from gantune.events import one_line, warn
from gantune.registry import Registry
from gantune.sampling.recipes import data_kind
from gantune.sampling.settings import NAME_RE
from gantune.sampling.warm import starting

_POINTS = """\
# Written by `gantune init {data}`: a search for {data}'s 2-D points around the known-good recipe
# "points" (gantune/configs/{data}.yaml: a plain GAN with z_dim 2, the R1 penalty on real samples and the
# learning rates annealed linearly to 0, batch 512, beta1 0; at 20,000 steps grid25 reaches 25/25 modes at 98%
# HQ, ring8 8/8 at 98.5%). That recipe is trial 0 (search.warm_start); the other trials search the ranges below.
# Sized for a 2-core CPU: 12 trials of at most 6,000 steps, two at a time, a few minutes with ASHA stopping the
# worst two thirds at steps 1,500 and 4,500. For the sharpest modes export the best with more steps
# (gantune export NAME --steps 20000).
name: {name}
search:
  trials: 12
  max_steps: 6000
  eval_every: 1500
  quick_every: 750        # cheap collapse checks between evaluations: a collapsed trial stops early
  objective: coverage     # k-NN coverage of the real modes (higher is better); FID on 2-D coordinates only
  direction: maximize     # compares means and covariances, which a blob over the square matches too
  sampler: tpe
  seed: 0
  warm_start: true        # trial 0 is the recipe itself
  resources: {{cpu: 1}}     # gpu: auto (the default): a share of a GPU where there is one, else the CPU
  pruning: {{asha: true, health: true, grace_evals: 1, reduction_factor: 3}}
  params:
    ttur_ratio: {{float: [0.7, 1.5], log: true}}  # lr_d / lr_g: on points D and G learn about equally fast
data: {{name: {data}}}
model:
  arch: mlp
  z_dim: 2                # the data is 2-D: a 2-D latent maps onto it without folding; wider ones drop modes
  g_width: {{categorical: [128, 192]}}  # 128 is the recipe's; wider helps the sharpest modes a little
  d_width: {{categorical: [128, 192]}}
  g_depth: {{int: [3, 4]}}  # 3 hidden layers bend a 2-D latent onto every mode
  d_depth: 3
  g_norm: none            # batch norm in G couples the samples of a batch: it merges nearby modes
  d_norm: none            # R1 keeps D smooth; spectral norm on top slows it for nothing
loss:
  name: {{categorical: [nonsaturating, hinge]}}  # both work with R1; the recipe's is nonsaturating
  r1_weight: {{float: [0.05, 0.2], log: true}}  # R1 on real samples: what keeps every mode evenly covered
optim:
  name: adam
  lr_g: {{float: [1.0e-3, 3.0e-3], log: true}}  # the recipe's 2e-3 in the middle; 1e-2 and up diverges
  lr_d: {{expr: "optim.lr_g * ttur_ratio"}}
  beta1: {{categorical: [0.0, 0.5]}}  # the recipe's 0 (WGAN-GP's) reacts faster; DCGAN's 0.5 to compare
  beta2: 0.999
  decay: {{categorical: [linear, cosine]}}  # annealing the learning rates to 0 is what makes the modes sharp
train: {{batch_size: {{categorical: [256, 512]}}, log_every: 200, seed: 0}}  # big batches: each holds every mode
eval: {{n_samples: 2500, quick_samples: 500}}
"""

_DIGITS = """\
# Written by `gantune init {data}`: a DCGAN search on scikit-learn's digits (16x16) around the
# known-good recipes of the shipped spaces: WGAN-GP with a layer-norm critic (search_spaces/wgan.yaml's best,
# FID 3.7), the non-saturating loss with R1 and a spectral+layer-norm D (dcgan.yaml's best, FID 3.9; both FIDs
# measured against training digits, before the held-out reference) and the
# SNGAN-style hinge loss with a spectral-norm D (gantune/configs/digits.yaml). The first two are trials 0 and 1
# (search.warm_start); the others search the ranges below, which hold all three.
# Sized for a 2-core CPU: 8 trials of at most 2,000 steps, two at a time (not timed); ASHA stops the worst
# from step 400, health verdicts stop diverging and collapsed trials.
name: {name}
search:
  trials: 8
  max_steps: 2000
  eval_every: 200
  quick_every: 100        # cheap collapse checks between evaluations (classes covered, diversity)
  objective: fid          # FID on the digits classifier's features vs the 360 held-out digits (lower is better;
  direction: minimize     # 1,000 real train digits score 3.78, the real-vs-real floor the summary prints)
  sampler: tpe
  seed: 0
  warm_start: true        # trials 0 and 1 are the recipes themselves
  resources: {{cpu: 1}}     # gpu: auto (the default): a share of a GPU where there is one, else the CPU
  pruning: {{asha: true, health: true, grace_evals: 2, reduction_factor: 3}}
  params:
    ttur_ratio: {{float: [1, 4], log: true}}  # lr_d / lr_g: D 1-4x faster (TTUR); the best trials used 1.2-3.6
data: {{name: {data}, resolution: 16}}
model:
  arch: dcgan
  z_dim: 64
  g_width: {{categorical: [32, 64]}}  # base channels: 32 is enough for 16-px digits, 64 a little sharper
  d_width: {{categorical: [32, 64]}}
  g_norm: {{categorical: [batch, layer]}}
  d_norm: {{categorical: [layer, spectral, spectral+layer]}}  # per-sample norms only: batch norm in D breaks the
                                                          # gradient penalty and R1
loss:
  name: {{categorical: [wgan-gp, nonsaturating, hinge]}}  # the three recipes' losses
  r1_weight: {{float: [0.03, 1.0], log: true, when: "loss.name == 'nonsaturating'"}}  # without R1 the
                          # non-saturating DCGAN reached FID 35-412 in 2,000 steps, with it 5.8
optim:
  name: adam
  lr_g: {{float: [1.0e-4, 1.0e-3], log: true}}  # the recipes' 2e-4 to 3.9e-4 inside
  lr_d: {{expr: "optim.lr_g * ttur_ratio"}}
  beta1: {{categorical: [0.0, 0.5]}}  # 0 (WGAN-GP's, SNGAN's) in every recipe; DCGAN's 0.5 to compare
  beta2: 0.9              # every recipe's
  n_critic: {{int: [1, 2], when: "loss.name == 'wgan-gp'"}}  # critic steps per G step (WGAN-GP's best: 2)
  ema: {{categorical: [0.99, 0.999]}}  # G is evaluated through an EMA of its weights: smoother samples
train: {{batch_size: {{categorical: [32, 64]}}, log_every: 50}}
eval: {{n_samples: 1000, quick_samples: 300}}
"""

_STACKED = """\
# Written by `gantune init {data}`: stacked digits' 1,000 modes (three scikit-learn digits, one per
# channel, at 8 px: PacGAN's stacked MNIST) with a plain DCGAN, around the recipe "stacked_digits" (hinge, R1
# 0.021, layer-norm D, G 128 wide, EMA of G 0.9995; alone it reached 1,000 modes, KL 0.101 on 26,000 samples at
# 6,000 steps and 0.049 at 24,000). That recipe is trial 0 (search.warm_start); the other trials search the
# ranges below. Sized for a quick look on a 2-core CPU: 8 trials of at most 3,000 steps, two at a time (the
# recipe's nets took 29 to 70 ms a step on one core, by machine; ASHA stops the worst from step 1,000);
# search_spaces/stacked.yaml gives them 24,000 (KL 0.070 at 12,000 steps, 0.049 at 24,000).
name: {name}
search:
  trials: 8
  max_steps: 3000
  eval_every: 1000
  quick_every: 500        # cheap checks between evaluations: stacked-mode coverage and diversity
  objective: stacked_kl   # KL of the mode histogram from uniform (lower is better): it falls with every mode
  direction: minimize     # found and evened out; the mode count saturates (a uniform 10,000 hits all 1,000)
  sampler: tpe
  seed: 0
  warm_start: true        # trial 0 is the recipe itself
  resources: {{cpu: 1}}     # gpu: auto (the default): a share of a GPU where there is one, else the CPU
  pruning: {{asha: true, health: true, grace_evals: 1, reduction_factor: 3}}
  params:
    ttur_ratio: {{float: [1, 4], log: true}}  # lr_d / lr_g: D 1-4x faster (TTUR)
data: {{name: {data}, resolution: 8}}  # the digits' own resolution: the classifier that counts modes reads it best
model:
  arch: dcgan
  z_dim: {{categorical: [32, 64, 100]}}  # 1,000 modes need a latent with room for them
  g_width: {{categorical: [32, 64, 128]}}
  d_width: {{categorical: [32, 64, 128]}}
  g_depth: {{int: [1, 3]}}
  d_depth: {{int: [1, 3]}}
  g_norm: {{categorical: [batch, none]}}
  d_norm: {{categorical: [none, spectral, layer]}}  # per-sample norms only (R1 needs them)
  minibatch_std: false    # a plain DCGAN: no minibatch statistics in D (PacGAN's comparison)
loss:
  name: {{categorical: [nonsaturating, hinge]}}
  r1_weight: {{float: [0.01, 1.0], log: true}}  # R1 on real samples spreads G over the modes evenly
optim:
  name: adam
  lr_g: {{float: [1.0e-4, 2.0e-3], log: true}}  # the recipe's 6.3e-4 inside
  lr_d: {{expr: "optim.lr_g * ttur_ratio"}}
  beta1: {{categorical: [0.0, 0.5]}}
  beta2: 0.99
  ema: {{categorical: [0.999, 0.9995]}}  # an EMA of G's weights evens the mode histogram out
  decay: {{categorical: [none, linear]}}  # annealing sharpens the digits the classifier has to read
train: {{batch_size: {{categorical: [64, 128]}}, log_every: 100, seed: 0}}
eval: {{n_samples: 10000, quick_samples: 1000, metrics: [stacked_modes, fid, diversity]}}  # 10,000 samples:
                          # the KL's own floor there is about 0.05
"""

_IMAGES = """\
# Written by `gantune init {data}`: a DCGAN search on the images of {data}, around the known-good
# recipe "images": SNGAN's hinge loss with a spectral-norm D, D twice as fast as G (TTUR), Adam's betas 0/0.9 and
# an EMA of G's weights (gantune/configs/digits.yaml's recipe). That recipe is trial 0 (search.warm_start); the
# other trials search the ranges below.
# FID reads Inception-v3 features: put torch-fidelity's weights-inception-2015-12-05-6726825d.pth on disk and set
# eval.inception_weights (or $GANTUNE_INCEPTION_WEIGHTS) to it; nothing is downloaded.
# Sized for a 2-core CPU at 32 px: 8 trials of at most 2,000 steps, two at a time; FID on 1,000 samples costs
# about a minute an evaluation on a CPU, so evaluations are every 500 steps. On a GPU raise everything.
name: {name}
search:
  trials: 8
  max_steps: 2000
  eval_every: 500
  quick_every: 250        # cheap collapse checks between evaluations (diversity)
  objective: fid          # Frechet distance of Inception features to the real images (lower is better)
  direction: minimize
  sampler: tpe
  seed: 0
  warm_start: true        # trial 0 is the recipe itself
  resources: {{cpu: 1}}     # gpu: auto (the default): a share of a GPU where there is one, else the CPU
  pruning: {{asha: true, health: true, grace_evals: 2, reduction_factor: 3}}
  params:
    ttur_ratio: {{float: [1, 4], log: true}}  # lr_d / lr_g: D 1-4x faster (TTUR; the recipe's 2)
data:
  name: folder
  path: {path}
  resolution: 32          # images are centre-cropped and resized to this (a power of two, 8-64)
{channels}  augment: {{categorical: ["translation,cutout", ""]}}  # DiffAugment: with a few thousand images or fewer D
                          # memorises them without it
model:
  arch: dcgan
{conditional}  z_dim: 128
  g_width: {{categorical: [32, 64]}}  # base channels; 64 costs about 4x the time of 32
  d_width: {{categorical: [32, 64]}}
  g_norm: {{categorical: [batch, layer]}}
  d_norm: {{categorical: [spectral, spectral+layer]}}  # spectral norm keeps D Lipschitz (SNGAN); per-sample only
loss:
  name: {{categorical: [hinge, nonsaturating]}}  # the recipe's hinge; non-saturating with R1 works as well
  r1_weight: {{float: [0.03, 1.0], log: true, when: "loss.name == 'nonsaturating'"}}  # R1 on real samples
optim:
  name: adam
  lr_g: {{float: [1.0e-4, 1.0e-3], log: true}}  # the recipe's 2e-4 inside
  lr_d: {{expr: "optim.lr_g * ttur_ratio"}}
  beta1: {{categorical: [0.0, 0.5]}}  # the recipe's 0; DCGAN's 0.5 to compare
  beta2: 0.9
  ema: {{categorical: [0.99, 0.999]}}  # G is evaluated through an EMA of its weights: smoother samples
train: {{batch_size: {{categorical: [32, 64]}}, log_every: 50}}
eval: {{n_samples: 1000, quick_samples: 300}}
"""


@dataclass(frozen=True)
class Starter:
    """The template of one data kind's starter space (``str.format`` fields: name, data, path)."""

    template: str
    builtin: tuple[str, ...]  # the built-in dataset names ``gantune init`` accepts for it


STARTERS: Registry[Starter] = Registry("starter space")
STARTERS.add("points", Starter(_POINTS, ("grid25", "ring8")))
STARTERS.add("digits", Starter(_DIGITS, ("digits",)))
STARTERS.add("stacked_digits", Starter(_STACKED, ("stacked_digits",)))
STARTERS.add("images", Starter(_IMAGES, ()))


def builtin_names() -> list[str]:
    return [n for kind in STARTERS for n in STARTERS.get(kind).builtin]


def _folder_name(path: Path) -> str:
    """A usable search name from a folder's name (``NAME_RE``): other characters become ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("._-")[:100].rstrip("._-")  # "my data ü": my-data
    return name if name and NAME_RE.fullmatch(name) else "images"


def starter_text(data: str) -> tuple[str, str, str]:
    """(search name, data kind, YAML text) of the starter space for ``data``: a built-in dataset's name or a
    folder of images. One-line ``GantuneError`` for anything else."""
    if data in builtin_names():
        if Path(data).is_dir():  # said, not refused: the built-in is what the name means
            warn(f"{data}: the built-in dataset; for the folder {data} here, give it as ./{data}")
        kind = data_kind(data)
        return data, kind, STARTERS.get(kind).template.format(name=data, data=data, path="")
    if not data.strip():  # Path("") is the working folder: a space was written for whatever it held
        raise GantuneError(f"{data!r}: name a built-in dataset ({', '.join(builtin_names())}) or a folder of images")
    folder = Path(data).expanduser()
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise GantuneError(f"{data}: not a built-in dataset ({', '.join(builtin_names())}) nor a folder of images "
                           f"({what})")
    from gantune.config import DataConfig
    from gantune.data import check_data, greyscale, known_classes

    path = str(folder.resolve())
    try:  # (YAML would hold it as escapes, but MLflow's store and every run's record take UTF-8 text only)
        path.encode("utf-8")
    except UnicodeEncodeError:  # a name of bytes that are not UTF-8 (read with surrogate escapes): a traceback
        raise GantuneError(f"{data!r}: its path is not UTF-8 text, which a space file cannot hold; rename the "
                           "folder") from None
    cfg = DataConfig(name="folder", path=path, resolution=32)
    check_data(cfg)  # holds images, and the first one decodes
    name = _folder_name(folder.resolve())
    grey = greyscale(cfg)  # three equal channels trained a third of the nets on copies, and init said nothing
    channels = f"  channels: 1             # its images are greyscale ({grey[0]} of {grey[1]} looked at)\n" \
        if grey else ""
    try:  # class subfolders: the conditional GAN they allow was nowhere in the file
        classes = known_classes(cfg) or 0
    except GantuneError:
        classes = 0
    conditional = (f"  # conditional: true     # its {classes} subfolders are classes: a class-conditional GAN "
                   "(generate --class N)\n") if classes >= 2 else ""
    # the argument in comments and the path as a YAML string, each character YAML refuses (DEL, C1 controls, a
    # name's undecodable bytes) written as an escape: the space would not load ("line 1: invalid YAML")
    return name, "images", STARTERS.get("images").template.format(
        name=name, data=one_line(data), path=one_line(json.dumps(path, ensure_ascii=False)), channels=channels,
        conditional=conditional)


def write_starter(data: str, out: Path | None, force: bool = False) -> dict[str, Any]:
    """Write the starter space for ``data`` to ``out`` (default ``<name>.yaml``), checked with ``load_space``
    first; an existing file only with ``force``."""
    from gantune.rundir import atomically, check_replaceable
    from gantune.sampling.space import SearchSpace, load_space

    name, kind, text = starter_text(data)
    target = out if out is not None else Path(f"{name}.yaml")
    where = "--out" if out is not None else "the default output"
    if target.is_dir():
        raise GantuneError(f"{where} {target}: is a folder; name a file to write")
    if target.exists() and not force:
        raise GantuneError(f"{where} {target}: exists; pass --force to overwrite it")
    check_replaceable(target, where)  # --force is for an earlier space file, not a database of searches
    if not target.parent.resolve().is_dir():
        raise GantuneError(f"{where} {target}: " + (f"{target.parent} is a file, not a folder" if
                                                    target.parent.resolve().exists() else
                                                    f"folder {target.parent} does not exist"))
    loaded: list[SearchSpace] = []

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")  # the folder's name as written, on any locale
        try:
            loaded.append(load_space(tmp, weights=False))  # a written file always loads (weights: _note)
        except GantuneError as err:  # it named the temporary file, then the target, which is not written: the
            # space's text is what is refused (its advice, "or eval.metrics: []", is for a file the user writes)
            raise type(err)(str(err).replace(f"{tmp}: ", f"{data}: the space for this data would not load: ", 1)
                            .replace(str(tmp), str(target))) from None

    try:
        atomically(target, write)
    except OSError as err:
        raise GantuneError(f"{where} {target}: cannot write it ({err.strerror or err})") from None
    space = loaded[0]
    return {"out": str(target), "data": data, "kind": kind, "search": space.name, "note": _note(kind),
            # the recipes the search will start from (digits' four named two of its 8 trials would not)
            "recipes": [p.recipe for p in starting(space) if p.skipped is None], "trials": space.settings.trials,
            "max_steps": space.settings.max_steps, "objective": space.settings.objectives[0]}


def _note(kind: str) -> str | None:
    """What the written space still needs from the user: Inception weights for FID on their own images."""
    if kind != "images":
        return None
    from gantune.config import TrialConfig
    from gantune.metrics.features import inception_weights

    path = inception_weights(TrialConfig())
    if path.is_file():
        return None
    return (f"FID on these images needs Inception-v3 weights, not found at {path}: set eval.inception_weights "
            "or $GANTUNE_INCEPTION_WEIGHTS (see the file's header)")
