"""Unrolled GANs (Metz et al. 2017): G's loss is taken against D as it would be after k more of its updates.

The look-ahead runs on a functional copy of D (``torch.func.functional_call`` with cloned parameters and
buffers), so D's weights, its batch-norm running statistics and spectral-norm vectors, and its optimiser's state
are never written. Each unrolled step applies the update maths of the optimiser D trains with (Adam, AdamW,
RMSprop below, keyed by the optimiser's class), starting from a copy of its moments, as Metz et al. unrolled
the optimiser they trained D with. The graph is kept through the k updates (``create_graph=True``): G's
gradient includes how D would react to G's change, the second-order term the paper credits with the gain, at
about k + 1 times the cost of a plain generator step, doubled by the double backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gantune.registry import Registry

#: a discriminator as the training step calls it: samples (and a conditional D's class labels) -> (logits, features)
Discriminate = Callable[..., tuple[Tensor, Tensor]]
#: one parameter's optimiser state: a copy of the real optimiser's ("step", moments), replaced, never mutated
OptState = dict[str, Any]
#: (parameter, gradient, state, param_group) -> (updated parameter, new state), without in-place writes, so
#: the update stays differentiable
FunctionalUpdate = Callable[[Tensor, Tensor, OptState, dict[str, Any]], tuple[Tensor, OptState]]
UPDATES: Registry[FunctionalUpdate] = Registry("functional optimiser update")

#: inside Adam's square root: keeps its derivative finite where a gradient and its running average are 0 (the
#: first step of a parameter with no gradient); 1e-15 next to eps = 1e-8 changes no update measurably
_TINY = 1e-30


def _moments(p: Tensor, g: Tensor, st: OptState, group: dict[str, Any]) -> tuple[Tensor, OptState]:
    """Adam's direction m_hat / (sqrt(v_hat) + eps) and the state after this step."""
    b1, b2 = group["betas"]
    t = st.get("step", 0) + 1  # a tensor in torch's own state
    m = st["exp_avg"] * b1 + g * (1 - b1) if "exp_avg" in st else g * (1 - b1)
    v = st["exp_avg_sq"] * b2 + g * g * (1 - b2) if "exp_avg_sq" in st else g * g * (1 - b2)
    direction = (m / (1 - b1**t)) / ((v / (1 - b2**t) + _TINY).sqrt() + group["eps"])
    return direction, {"step": t, "exp_avg": m, "exp_avg_sq": v}


def _adam(p: Tensor, g: Tensor, st: OptState, group: dict[str, Any]) -> tuple[Tensor, OptState]:
    wd = group.get("weight_decay", 0.0)
    direction, new = _moments(p, g + wd * p if wd else g, st, group)  # Adam's weight decay is an L2 term
    return p - group["lr"] * direction, new


def _adamw(p: Tensor, g: Tensor, st: OptState, group: dict[str, Any]) -> tuple[Tensor, OptState]:
    direction, new = _moments(p, g, st, group)
    return p * (1 - group["lr"] * group.get("weight_decay", 0.0)) - group["lr"] * direction, new  # decoupled


def _rmsprop(p: Tensor, g: Tensor, st: OptState, group: dict[str, Any]) -> tuple[Tensor, OptState]:
    if group.get("momentum", 0) or group.get("centered", False):
        raise ValueError("unrolling RMSprop with momentum or centring is not implemented")
    wd = group.get("weight_decay", 0.0)
    g = g + wd * p if wd else g
    a = group["alpha"]
    sq = st["square_avg"] * a + g * g * (1 - a) if "square_avg" in st else g * g * (1 - a)
    return p - group["lr"] * g / ((sq + _TINY).sqrt() + group["eps"]), {"step": st.get("step", 0) + 1, "square_avg": sq}


UPDATES.add("Adam", _adam)
UPDATES.add("AdamW", _adamw)
UPDATES.add("RMSprop", _rmsprop)


def functional_update(opt: torch.optim.Optimizer) -> FunctionalUpdate:
    """The differentiable twin of ``opt``'s step; ``ValueError`` naming the optimiser when there is none."""
    name = type(opt).__name__
    if name not in UPDATES:
        raise ValueError(f"optimiser {name} has no functional update to unroll D with (there is one for "
                         f"{', '.join(UPDATES.names())})")
    return UPDATES.get(name)


def _clip_by_norm(grads: tuple[Tensor | None, ...], max_norm: float) -> tuple[Tensor | None, ...]:
    """``torch.nn.utils.clip_grad_norm_``'s scaling, out of place: max_norm / (norm + 1e-6), at most 1."""
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return tuple(None if g is None else g * scale for g in grads)


def lookahead(d: nn.Module, opt: torch.optim.Optimizer, steps: int, d_loss: Callable[[Discriminate], Tensor],
              clip: float | None = None, grad_clip: float = 0.0) -> Discriminate:
    """D after ``steps`` updates of ``opt`` on ``d_loss`` (D's objective on a fresh batch, given a discriminator),
    as a function of samples, computed on copies: ``d``, its buffers and ``opt`` are left exactly as they were.
    ``clip``: clamp the weights after each update (WGAN's clipping); ``grad_clip``: scale the gradients to at most
    that total norm first, as ``clip_grad_norm_`` does for D's real updates (0 = off). The updates keep their
    graph, so a loss on the result differentiates through them (into G, when ``d_loss``'s fakes carry G's graph)."""
    update = functional_update(opt)
    named = dict(d.named_parameters())
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    params = {n: p.detach().clone().requires_grad_(True) for n, p in named.items()}
    buffers = {n: b.detach().clone() for n, b in d.named_buffers()}  # BN running stats, spectral-norm u and v
    states = {n: dict(opt.state.get(p, {})) for n, p in named.items()}

    def view(ps: dict[str, Tensor]) -> Discriminate:
        return lambda x, *cond: functional_call(d, (ps, buffers), (x, *cond))

    for _ in range(steps):
        loss = d_loss(view(params))
        grads: tuple[Tensor | None, ...] = torch.autograd.grad(loss, list(params.values()), create_graph=True,
                                                               allow_unused=True)
        if grad_clip > 0:
            grads = _clip_by_norm(grads, grad_clip)
        new: dict[str, Tensor] = {}
        for (n, p), g in zip(params.items(), grads, strict=True):
            if g is None:  # a parameter this loss does not reach: torch's optimisers skip it too
                new[n] = p
                continue
            new[n], states[n] = update(p, g, states[n], group_of[id(named[n])])
            if clip is not None:
                new[n] = new[n].clamp(-clip, clip)
        params = new
    return view(params)
