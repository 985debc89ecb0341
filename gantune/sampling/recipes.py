"""Known-good recipes by data kind: the starting points a search tries first (``search.warm_start``) and the centre
of the spaces ``gantune init`` writes.

A recipe is a partial trial config (dotted config paths) plus the free parameters the shipped spaces use
(``ttur_ratio``: lr_d / lr_g). Its values come from the built-in configs and the best trials of the shipped
search spaces (``source`` says which, and what they measured), so the knowledge that makes those spaces work
(z_dim 2, R1, learning-rate annealing and EMA of G) travels to a user's own space. This module is data only:
``gantune.sampling.warm`` projects a recipe onto a space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gantune.registry import Registry


@dataclass(frozen=True)
class Recipe:
    """A partial trial config known to train well on ``kinds`` of data."""

    name: str
    kinds: tuple[str, ...]
    values: dict[str, Any] = field(default_factory=dict)  # dotted config path or free parameter -> value
    source: str = ""  # where the values come from, and what they measured
    #: keys that make it this recipe: a space that fixes one of them to another value cannot try it (a WGAN-GP
    #: recipe's learning rates and n_critic are not known-good for the non-saturating loss)
    essential: tuple[str, ...] = ("model.arch", "loss.name")


RECIPES: Registry[Recipe] = Registry("recipe")


def _add(recipe: Recipe) -> None:
    RECIPES.add(recipe.name, recipe)


_add(Recipe("points", ("points",), {
    "model.arch": "mlp", "model.z_dim": 2, "model.g_width": 128, "model.d_width": 128, "model.g_depth": 3,
    "model.d_depth": 3,
    "model.g_norm": "none", "model.d_norm": "none", "loss.name": "nonsaturating", "loss.r1_weight": 0.1,
    "optim.name": "adam", "optim.lr_g": 2e-3, "optim.lr_d": 2e-3, "ttur_ratio": 1.0, "optim.beta1": 0.0,
    "optim.beta2": 0.999, "optim.decay": "linear", "train.batch_size": 512},
    "gantune/configs/grid25.yaml and ring8.yaml (a plain GAN with z_dim 2, R1 on reals and the learning rates "
    "annealed linearly to 0, batch 512, beta1 0; 20,000 steps: grid25 25/25 modes 97.6-98.2% HQ, ring8 8/8 modes "
    "98.5% HQ). Batch 512 and beta1 0 replaced 256 and 0.5: on grid25 at 6,000 steps with EMA 0.999 (seeds 0-3, "
    "two machines) HQ 90.6-94.9% and coverage 0.63-0.74 against 60.7-91.6% and 0.59-0.71 for batch 256 and beta1 0.5"))
_add(Recipe("digits-wgan", ("digits",), {
    "model.arch": "dcgan", "model.z_dim": 64, "model.g_width": 32, "model.d_width": 32, "model.d_norm": "layer",
    "loss.name": "wgan-gp", "optim.name": "adam", "optim.lr_g": 2.1e-4, "optim.lr_d": 7.56e-4, "ttur_ratio": 3.6,
    "optim.beta1": 0.0, "optim.beta2": 0.9, "optim.n_critic": 2, "optim.ema": 0.999, "train.batch_size": 64},
    "search_spaces/wgan.yaml's best trial: WGAN-GP, layer-norm critic, n_critic 2, TTUR 3.6, EMA 0.999 "
    "(FID 3.7 at 2,000 steps against training digits, before the held-out reference; 10/10 classes)"))
_add(Recipe("digits-dcgan", ("digits",), {
    "model.arch": "dcgan", "model.z_dim": 64, "model.d_width": 64, "model.g_norm": "layer",
    "model.d_norm": "spectral+layer", "loss.name": "nonsaturating", "loss.r1_weight": 0.23, "optim.name": "adam",
    "optim.lr_g": 3.9e-4, "optim.lr_d": 4.68e-4, "ttur_ratio": 1.2, "optim.beta1": 0.0, "optim.beta2": 0.9,
    "optim.ema": 0.99},
    "search_spaces/dcgan.yaml's best trial: non-saturating loss with R1 0.23, spectral+layer D, TTUR 1.2, EMA 0.99 "
    "(FID 3.9 at 2,000 steps against training digits, before the held-out reference; 10/10 classes)"))
_add(Recipe("digits-r1", ("digits",), {
    "model.arch": "dcgan", "model.z_dim": 64, "model.g_width": 64, "model.d_width": 64, "model.g_depth": 3,
    "model.d_depth": 3, "model.g_norm": "layer", "model.d_norm": "layer", "loss.name": "nonsaturating",
    "loss.r1_weight": 0.23, "optim.name": "adam", "optim.lr_g": 3.9e-4, "optim.lr_d": 4.68e-4, "ttur_ratio": 1.2,
    "optim.beta1": 0.0, "optim.beta2": 0.9, "optim.ema": 0.99, "train.batch_size": 64},
    "digits-dcgan with the norms most spaces offer (layer norm in G and D): non-saturating loss with R1 0.23, "
    "TTUR 1.2, betas 0/0.9, EMA 0.99, 3-deep nets of width 64, batch 64; alone, 16 px, 2,000 steps: FID 5.34 "
    "against the 360 held-out digits (floor 3.78; 6.37 with a spectral-norm D instead)"))
_add(Recipe("digits", ("digits",), {
    "model.arch": "dcgan", "model.z_dim": 64, "model.g_width": 32, "model.d_width": 32, "model.g_depth": 1,
    "model.d_depth": 1, "model.g_norm": "batch", "model.d_norm": "spectral",
    "loss.name": "hinge", "optim.name": "adam", "optim.lr_g": 2e-4, "optim.lr_d": 4e-4,
    "ttur_ratio": 2.0, "optim.beta1": 0.0, "optim.beta2": 0.9, "optim.ema": 0.999, "train.batch_size": 64},
    "gantune/configs/digits.yaml: SNGAN-style hinge loss, spectral-norm D, TTUR 2, betas 0/0.9, EMA 0.999"))
_add(Recipe("stacked_digits", ("stacked_digits",), {
    "model.arch": "dcgan", "model.z_dim": 64, "model.g_width": 128, "model.d_width": 64, "model.g_depth": 2,
    "model.d_depth": 2, "model.g_norm": "batch", "model.d_norm": "layer", "model.minibatch_std": False,
    "loss.name": "hinge", "loss.r1_weight": 0.021, "optim.name": "adam", "optim.lr_g": 6.3e-4,
    "optim.lr_d": 1.45e-3, "ttur_ratio": 2.3, "optim.beta1": 0.5, "optim.beta2": 0.99, "optim.ema": 0.9995,
    "optim.decay": "none", "train.batch_size": 64},
    "the best trial of stacked.yaml's 12,000-step search (hinge, R1 0.021, layer-norm D) with G twice as wide and "
    "an EMA of G; alone at 24,000 steps (26,000 samples, seed 0): 1,000 modes, KL 0.049 (EMA 0.999: 0.050; "
    "seed 1: 0.060; without EMA 0.055, 0.058 at 36,000 steps)"))
_add(Recipe("images", ("images",), {
    "model.arch": "dcgan", "model.g_norm": "batch", "model.d_norm": "spectral", "loss.name": "hinge",
    "optim.name": "adam", "optim.lr_g": 2e-4, "optim.lr_d": 4e-4, "ttur_ratio": 2.0, "optim.beta1": 0.0,
    "optim.beta2": 0.9, "optim.ema": 0.999, "train.batch_size": 64},
    "the SNGAN recipe of gantune/configs/digits.yaml without its digits-sized widths: hinge loss, spectral-norm D, "
    "TTUR 2, betas 0/0.9, EMA 0.999"))

#: data kind of the datasets that have recipes of their own; any other is ``points`` or ``images``
DATA_KINDS: dict[str, str] = {"digits": "digits", "stacked_digits": "stacked_digits"}


def data_kind(name: str) -> str:
    """The recipe kind of dataset ``name``: its own, else points or images (from the dataset registry)."""
    from gantune.data import DATASETS

    if name in DATA_KINDS:
        return DATA_KINDS[name]
    return "points" if name in DATASETS and DATASETS.get(name).points else "images"


def recipes_for(kind: str) -> list[Recipe]:
    """The recipes of a data kind, in registration order (the best measured first)."""
    return [RECIPES.get(n) for n in RECIPES if kind in RECIPES.get(n).kinds]
