"""PBT's explore step on a gantune space: perturb a member's sampled parameters, derive its trial config again.

Exploit copies a member's G, D and optimiser state into another; explore then changes only what such a
checkpoint can carry on with (learning rates, betas, n_critic, penalty weights, and the free parameters of
``search.params`` that feed them). The new config comes from the space itself (``SearchSpace.sample`` on an
``optuna.trial.FixedTrial``), so expressions such as ``lr_d = lr_g * ttur_ratio`` stay true. A perturbation
that would change the networks, the data, the loss or the optimiser kind (a free parameter feeding a width,
a ``when`` switching a leaf on) is dropped: the member keeps the donor's value of that parameter.
"""

from __future__ import annotations

import math
import random
from typing import Any

import optuna

from gantune.errors import ConfigError
from gantune.space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace, Spec

#: config leaves explore changes by default when the space samples them (a checkpoint carries on with any value)
DEFAULT_MUTABLE = ("optim.lr_g", "optim.lr_d", "optim.beta1", "optim.beta2", "optim.n_critic", "optim.grad_clip",
                   "loss.gp_weight", "loss.r1_weight", "loss.feature_matching", "loss.clip")
#: Ray Tune's PBT perturbation factors
FACTORS = (0.8, 1.2)


def _sampled(spec: Spec) -> bool:
    if isinstance(spec, CategoricalSpec):
        return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.choices)
    return isinstance(spec, (FloatSpec, IntSpec))


def mutable_params(space: SearchSpace) -> list[str]:
    """The sampled numeric parameters explore perturbs (``pruning.pbt.mutate`` or the default set); a
    ``ConfigError`` when there are none or a named one is not a sampled number of this space."""
    specs = {**space.params, **space.leaves}
    numeric = [name for name, spec in specs.items() if _sampled(spec)]
    wanted = space.settings.pruning.pbt.mutate
    src = f"{space.source}: search.pruning.pbt.mutate"
    if wanted is not None:
        for name in wanted:
            if name not in numeric:
                raise ConfigError(f"{src}: {name!r} is not a sampled number of this space (sampled: "
                                  f"{', '.join(numeric) or 'none'})")
        return list(wanted)
    chosen = [n for n in numeric if n in space.params or n in DEFAULT_MUTABLE]
    if not chosen:
        raise ConfigError(f"{space.source}: search.pruning.scheduler: pbt needs a sampled learning rate, beta, "
                          "n_critic or penalty weight (or a free parameter) to explore; this space samples none")
    return chosen


def _frozen(raw: dict[str, Any]) -> tuple[Any, ...]:
    """What a cloned checkpoint cannot change: networks, data, loss kind, optimiser kind, EMA on/off."""
    return (raw.get("data"), raw.get("model"), raw.get("loss", {}).get("name"), raw.get("optim", {}).get("name"),
            bool(raw.get("optim", {}).get("ema", 0)))


class Explorer:
    """Ray Tune's ``custom_explore_fn``: ``config["params"]`` (the Optuna parameters) perturbed, and
    ``config["trial"]`` derived again from them."""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.names = mutable_params(space)
        self.probability = space.settings.pruning.pbt.resample_probability
        self.rng = random.Random(seed)

    def perturb(self, name: str, value: Any) -> Any:
        """Resample with ``resample_probability``; else x0.8 / x1.2 (clipped to the range) or a neighbouring
        choice, as Ray Tune's PBT does."""
        spec = self.space.params.get(name) or self.space.leaves[name]
        resample = self.rng.random() < self.probability
        if isinstance(spec, CategoricalSpec):
            choices = spec.choices
            if resample or value not in choices:
                return self.rng.choice(choices)
            i = choices.index(value) + self.rng.choice((-1, 1))
            return choices[min(max(i, 0), len(choices) - 1)]
        assert isinstance(spec, (FloatSpec, IntSpec))
        lo, hi = spec.range
        if resample:
            new = (math.exp(self.rng.uniform(math.log(lo), math.log(hi))) if spec.log
                   else self.rng.uniform(lo, hi))
        else:
            new = value * self.rng.choice(FACTORS)
        new = min(max(new, lo), hi)
        return round(new) if isinstance(spec, IntSpec) else float(new)

    def derive(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.space.sample(optuna.trial.FixedTrial(params))  # type: ignore[arg-type]  # same suggest API

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        params = dict(config["params"])
        raw = config["trial"]
        for name in self.names:
            if name not in params:  # switched off by its ``when`` in this member
                continue
            trial_params = {**params, name: self.perturb(name, params[name])}
            try:
                candidate = self.derive(trial_params)
            except (ValueError, ConfigError):  # a ``when`` now asks for a parameter this member never had
                continue
            if _frozen(candidate) == _frozen(raw):
                params, raw = trial_params, candidate
        return {**config, "params": params, "trial": raw}
