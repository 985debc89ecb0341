"""One GAN training step: n_critic discriminator updates, then one generator update.

Statistics stay on the device and are summed across steps; they are read (one host sync) only when the
loop asks for them at its logging cadence, so the hot path never waits on the GPU.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gantune.config import OptimConfig, TrialConfig
from gantune.data import data_shape
from gantune.errors import GantuneError
from gantune.gan.augment import AdaptiveP, diff_augment
from gantune.gan.conditional import Labelled, conditional_generator, projection_discriminator
from gantune.gan.losses import LOSSES, gradient_penalty, r1_penalty
from gantune.gan.nets import build_discriminator, build_generator, resolve_arch
from gantune.gan.norms import NormSpec
from gantune.gan.progressive import Growing, GrowthSchedule
from gantune.gan.speed import Speed
from gantune.gan.transfer import load_init
from gantune.gan.unroll import Discriminate, lookahead
from gantune.registry import Registry

OptimBuilder = Callable[[Iterator[nn.Parameter], float, OptimConfig, bool], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimBuilder] = Registry("optimizer")
OPTIMIZERS.add("adam", lambda p, lr, c, cuda: _adam(p, lr, c, cuda))
OPTIMIZERS.add("rmsprop", lambda p, lr, c, cuda: torch.optim.RMSprop(p, lr))
#: the optimisers whose builder applies ``optim.weight_decay``, decoupled from the gradient (Loshchilov & Hutter
#: 2019); the catalogue refuses a weight decay with any other (RMSprop's own weight_decay is a coupled L2 term)
WEIGHT_DECAY: set[str] = {"adam"}
#: the optimisers whose builder reads no ``optim.beta1``/``beta2`` (a plugin's builder may read them)
WITHOUT_BETAS: set[str] = {"rmsprop"}


def _adam(params: Iterator[nn.Parameter], lr: float, c: OptimConfig, cuda: bool) -> torch.optim.Optimizer:
    """Adam, or AdamW when ``optim.weight_decay`` is on: weights shrink by ``lr * weight_decay`` each step whatever
    the gradient, instead of an L2 term that Adam's per-weight scaling would distort."""
    if c.weight_decay > 0:
        return torch.optim.AdamW(params, lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay,
                                 fused=cuda or None)
    return torch.optim.Adam(params, lr, betas=(c.beta1, c.beta2), fused=cuda or None)


def instance_noise_std(initial: float, step: int, steps: int, fraction: float = 1.0) -> float:
    """The std of the instance noise (Sønderby et al. 2017; Arjovsky & Bottou 2017) at generator step ``step``:
    ``initial`` at 0, falling linearly to 0 at ``fraction * steps`` and 0 after. Noise on both of D's inputs makes
    the real and fake distributions overlap early, so D cannot separate them perfectly while G is far off."""
    end = fraction * steps
    return initial * max(0.0, 1.0 - step / end) if end > 0 else 0.0


#: learning-rate factor at training progress ``p`` in [0, 1] after ``optim.decay_start``
DECAYS: Registry[Callable[[float], float]] = Registry("decay")
DECAYS.add("none", lambda p: 1.0)
DECAYS.add("linear", lambda p: 1.0 - p)
DECAYS.add("cosine", lambda p: 0.5 * (1.0 + math.cos(math.pi * p)))


def schedule_at(cfg: TrialConfig, step: int) -> tuple[float, float]:
    """The learning rates' decay factor and the instance noise's std at generator step ``step``: both run over
    ``train.steps``, so the same step of a run given other steps reads other values (``production.check_schedule``).
    ``step`` counts from 1: the schedules are of the generator steps done before it (the first step trains at a
    decayed rate and the last at 0, which changes neither net)."""
    done = max(step - 1, 0)
    noise = instance_noise_std(cfg.loss.instance_noise, done, cfg.train.steps, cfg.loss.instance_noise_steps)
    o, total = cfg.optim, cfg.train.steps
    start = o.decay_start * total
    progress = min(1.0, max(0.0, (done - start) / max(total - start, 1.0)))
    return DECAYS.get(o.decay)(progress), noise


STAT_NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "d_win")


def _grad_norm(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:  # on the parameters' device: read_stats concatenates it with the other device statistics
        return torch.zeros((), device=params[0].device if params else None)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def ema_decay(ema: float, step: int) -> float:
    """The EMA decay at generator step ``step``: ``min(ema, (1 + step) / (10 + step))``, the warm-up of
    TensorFlow's ExponentialMovingAverage. Without it a 0.999 EMA still holds 37% of G's random initial
    weights after 1,000 steps (the built-in digits config, FID against the training digits as it was then
    measured: 363 there, where G itself scored 25); with it the average spans about the last tenth of training
    until it reaches ``ema`` (the same config: 26 then; benchmarks/RESULTS.md has the held-out figures)."""
    return min(ema, (1.0 + step) / (10.0 + step))


def _cond(y: Tensor | None) -> tuple[Tensor, ...]:
    """The class labels as the extra argument of a conditional G or D; nothing for an unconditional one."""
    return () if y is None else (y,)


class GANTrainer:
    """Owns G, D, their optimisers and the EMA generator; ``step()`` trains one generator step.

    ``labelled``: the labelled real data of a conditional GAN (``model.conditional``,
    ``gantune.gan.conditional.labelled_data``): real batches come with their labels, fakes are generated for the
    same labels (so D sees the real label distribution on both sides and cannot tell real from fake by the class
    prior alone), and every call of D (losses, penalties, feature matching, the unrolled look-ahead) gets them."""

    def __init__(self, cfg: TrialConfig, device: torch.device, sample_real: Callable[[int], Tensor],
                 labelled: Labelled | None = None) -> None:
        self.cfg = cfg
        self.device = device
        self.sample_real = sample_real
        if cfg.model.conditional and labelled is None:
            raise GantuneError("model.conditional: a conditional GAN needs labelled data")
        self.labelled = labelled if cfg.model.conditional else None
        self.n_classes = self.labelled.n_classes if self.labelled is not None else 0
        shape = data_shape(cfg.data)
        arch = resolve_arch(cfg)
        self.speed = Speed.resolve(cfg.train, device)
        self.speed.set_backends(device)
        images = len(shape) == 3
        g, d = build_generator(cfg.model, arch, shape), build_discriminator(cfg.model, arch, shape)
        if self.n_classes:
            g = conditional_generator(g, self.n_classes)
            d = projection_discriminator(d, self.n_classes, shape, NormSpec(cfg.model.d_norm).spectral)
        self.G = self.speed.layout(g.to(device), images)
        self.D = self.speed.layout(d.to(device), images)
        if cfg.model.init_from is not None:  # transfer learning: before the optimisers and the EMA copy of G
            load_init(self.G, self.D, cfg.model.init_from)
        self.loss = LOSSES.get(cfg.loss.name)
        make_opt = OPTIMIZERS.get(cfg.optim.name)
        cuda = device.type == "cuda"
        self.opt_g = make_opt(self.G.parameters(), cfg.optim.lr_g, cfg.optim, cuda)
        self.opt_d = make_opt(self.D.parameters(), cfg.optim.lr_d, cfg.optim, cuda)
        self.G_ema: nn.Module | None = None
        if cfg.optim.ema > 0:
            self.G_ema = copy.deepcopy(self.G).requires_grad_(False).eval()
        # the training forward passes (compiled with train.compile); G and D themselves stay eager and hold the
        # weights: evaluation and the penalties' double backward run through them
        growth = GrowthSchedule.of_config(cfg)
        stages = 1 if growth is None else 2 * growth.levels + 1  # each resolution, and each fade between two
        self._g_fast, self._d_fast = self.speed.compiled(self.G, self.D, stages=stages)
        self._g_params: list[Tensor] = list(self.G.parameters())
        self._d_params: list[Tensor] = list(self.D.parameters())
        self._ema_params: list[Tensor] = list(self.G_ema.parameters()) if self.G_ema is not None else []
        self._ema_decay = ema_decay(cfg.optim.ema, 0)
        self._acc = torch.zeros(len(STAT_NAMES), device=device)
        self._acc_n = 0
        self._gnorm = {"grad_norm_g": torch.zeros((), device=device), "grad_norm_d": torch.zeros((), device=device)}
        self._loss_d = self.loss.d_loss(cfg.loss.label_smoothing)
        #: G's step scores the last real batch under the updated D: for feature matching or a relativistic G loss
        self._reads_reals = cfg.loss.feature_matching > 0 or self.loss.g_paired is not None
        self._noise_std = instance_noise_std(cfg.loss.instance_noise, 0, cfg.train.steps, cfg.loss.instance_noise_steps)
        self._growth = growth  # None unless model.progressive grows the nets
        self._ada: AdaptiveP | None = None  # adaptive augmentation (data.ada_target), on a loss with a boundary
        if cfg.data.ada_target is not None and self.loss.real_above is not None:
            self._ada = AdaptiveP(cfg.data.ada_target, cfg.data.ada_kimg, self.loss.real_above, device)

    def schedule(self, step: int) -> None:
        """Set both optimisers' hyperparameters for generator step ``step`` from the config: the decayed
        learning rates, Adam's betas and the EMA decay. Called every step, so a loaded checkpoint (a resumed run,
        or a PBT member cloned from another) trains with this config's values, not those saved in its optimiser
        state."""
        self._ema_decay = ema_decay(self.cfg.optim.ema, step)
        factor, self._noise_std = schedule_at(self.cfg, step)
        if self._growth is not None:
            self._growth.apply(max(step - 1, 0), self.G, self.D, self.G_ema)
        o = self.cfg.optim
        for opt, lr in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
                if "betas" in group:
                    group["betas"] = (o.beta1, o.beta2)

    def z(self, n: int) -> Tensor:
        return torch.randn(n, self.cfg.model.z_dim, device=self.device)

    def step(self, measure: bool = False) -> None:
        """One generator step preceded by ``n_critic`` discriminator steps; ``measure`` records grad norms."""
        c, o = self.cfg, self.cfg.optim
        bs = c.train.batch_size
        for i in range(o.n_critic):
            last = i == o.n_critic - 1
            real, y = self._real(bs)  # y: the labels of a conditional GAN (None otherwise), fakes' labels too
            r1, r2 = c.loss.r1_weight > 0, c.loss.r2_weight > 0
            real.requires_grad_(r1)
            with torch.set_grad_enabled(last):  # the last fake is reused by the generator step
                fake = self._generate(self.z(bs), y)
            scored = fake.detach().requires_grad_(r2)
            d_real, _ = self._discriminate(real, y, eager=r1)  # R1: the gradient of d_real, through the eager D
            d_fake, _ = self._discriminate(scored, y, eager=r2)
            loss_d = self._loss_d(d_real, d_fake)
            if self._ada is not None:
                self._ada.observe(d_real)
            if self.loss.gradient_penalty and c.loss.gp_weight > 0:  # through the eager D: double backward
                loss_d = loss_d + c.loss.gp_weight * gradient_penalty(self._seen(y), real.detach(), fake.detach())
            loss_d = loss_d + self._zero_centred(d_real, real, d_fake, scored)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._after_backward(self._d_params, "grad_norm_d", measure and last)
            self.opt_d.step()
            if self.loss.weight_clipping:
                with torch.no_grad():
                    torch._foreach_clamp_min_(self._d_params, -c.loss.clip)
                    torch._foreach_clamp_max_(self._d_params, c.loss.clip)

        self.D.requires_grad_(False)
        loss_g, objective = self._g_loss(fake, real, y)
        self.opt_g.zero_grad(set_to_none=True)
        objective.backward()
        self.D.requires_grad_(True)
        self._after_backward(self._g_params, "grad_norm_g", measure)
        self.opt_g.step()
        if self.G_ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self._ema_params, self._g_params, 1.0 - self._ema_decay)

        d_r, d_f = d_real.detach(), d_fake.detach()
        # d_win: D ranks every real above every fake in the batch (a dominating D gives G nothing to learn from)
        win = (d_r.min() > d_f.max()).float()
        self._acc += torch.stack([loss_d.detach(), loss_g.detach(), d_r.mean(), d_f.mean(), win])
        self._acc_n += 1

    def _g_loss(self, fake: Tensor, real: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """G's loss (what the logs and health checks read) and what G's step minimises: the same, but with
        unrolling, where G minimises the game's value at the look-ahead D, f(G, D_K(G)) (Metz et al. 2017; their
        code's G loss is D's whole loss under D_K): D's real term moves with G through D's k updates, so its
        negative joins G's objective (for a relativistic G loss, which reads the reals already, nothing joins)."""
        c = self.cfg
        g_real = real_feat = None
        if c.loss.unroll > 0:  # G's loss against D as it will be loss.unroll updates ahead
            g_fake, fake_feat, g_real, real_feat = self._unrolled(fake, real, y)
        else:
            g_fake, fake_feat = self._discriminate(fake, y)
            if self._reads_reals:  # the reals' score and features from the D that scores the fakes: the one just
                with torch.no_grad():  # updated (Salimans et al. 2016 match E f(x) and E f(G(z)) under one D, a
                    # relativistic G compares D(G(z)) with D(x)); in train mode, as the fakes' pass: one more
                    # spectral-norm power step and batch-norm update
                    g_real, real_feat = self._discriminate(real.detach(), y)
        loss_g = self.loss.g_loss(g_real, g_fake)
        if c.loss.feature_matching > 0 and real_feat is not None:  # the reals' features: a graph only through D_K
            loss_g = loss_g + c.loss.feature_matching * (real_feat.mean(0) - fake_feat.mean(0)).pow(2).sum()
        if c.loss.unroll > 0 and self.loss.g is not None and g_real is not None:
            return loss_g, loss_g - self._loss_d(g_real, g_fake.detach())  # the fakes' logits: no graph to G
        return loss_g, loss_g

    def _real(self, n: int) -> tuple[Tensor, Tensor | None]:
        """A real batch and, for a conditional GAN, its labels; mid-fade of a growing D, blended between its two
        resolutions (``Growing.fade_reals``)."""
        real, y = (self.sample_real(n), None) if self.labelled is None else self.labelled.sample(n)
        return (self.D.fade_reals(real) if isinstance(self.D, Growing) else real), y

    def _generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        with self.speed.autocast():
            return self._g_fast(z, *_cond(y)).float()

    def d_input(self, x: Tensor) -> Tensor:
        """What D sees of a real or fake batch: the DiffAugment policies of ``data.augment`` (each image with
        probability ``data.augment_p``), then the instance noise of this step; ``x`` itself when neither is on.
        Both are differentiable in ``x``, so G learns through them."""
        x = diff_augment(x, self.cfg.data.augment, self.cfg.data.augment_p if self._ada is None else self._ada.p)
        if self._noise_std > 0:
            x = x + self._noise_std * torch.randn_like(x)
        return x

    def _d_seen(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The eager D composed with ``d_input``: with augmentation or noise on, the D a penalty regularises is
        D after the transform (as DiffAugment defines it), so the penalty's interpolates go through it too."""
        return self.D(self.d_input(x), *_cond(y))

    def _seen(self, y: Tensor | None) -> Discriminate:
        """``_d_seen`` for samples of labels ``y`` (a penalty's interpolates keep their pair's label)."""
        return self._d_seen if y is None else lambda x: self._d_seen(x, y)

    def _discriminate(self, x: Tensor, y: Tensor | None = None, eager: bool = False) -> tuple[Tensor, Tensor]:
        """D's score and features, in float32 whatever the autocast precision (the losses need the range);
        ``eager``: through the uncompiled D, for a penalty that differentiates its gradient. D sees
        ``d_input(x)``: real and fake inputs go through the same augmentation and noise."""
        x = self.d_input(x)
        with self.speed.autocast():
            score, feat = (self.D if eager else self._d_fast)(x, *_cond(y))
        return score.float(), feat.float()

    def _unrolled(self, fake: Tensor, real: Tensor,
                  y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """D's score and features of ``fake`` and of ``real``, both from D ``loss.unroll`` updates ahead
        (``gantune.gan.unroll``), computed on copies: D and opt_d stay as they are. The reals' score keeps its
        graph to G through the look-ahead updates (``_g_loss``)."""
        c = self.cfg
        clip = c.loss.clip if self.loss.weight_clipping else None
        ahead = lookahead(self.D, self.opt_d, c.loss.unroll, self._lookahead_loss, clip, c.optim.grad_clip)
        with self.speed.autocast():
            score, feat = ahead(self.d_input(fake), *_cond(y))
            real_score, real_feat = ahead(self.d_input(real.detach()), *_cond(y))
        return score.float(), feat.float(), real_score.float(), real_feat.float()

    def _lookahead_loss(self, d: Discriminate) -> Tensor:
        """D's objective for one unrolled update, on a fresh batch: the adversarial loss and its penalties, as in
        ``step`` (label smoothing; augmentation and noise on what D sees, penalties through them). The fakes keep
        their graph to G (how D's update depends on G is what unrolling adds) and come from the eager G with
        copied buffers, so G's batch-norm statistics do not see these extra batches."""
        c, bs = self.cfg, self.cfg.train.batch_size
        real, y = self._real(bs)
        real.requires_grad_(c.loss.r1_weight > 0)
        buffers = {n: b.detach().clone() for n, b in self.G.named_buffers()}
        with self.speed.autocast():
            fake = functional_call(self.G, buffers, (self.z(bs), *_cond(y))).float()
            d_real, d_fake = d(self.d_input(real), *_cond(y))[0].float(), d(self.d_input(fake), *_cond(y))[0].float()
        loss = self._loss_d(d_real, d_fake)
        if self.loss.gradient_penalty and c.loss.gp_weight > 0:
            seen: Discriminate = lambda x: d(self.d_input(x), *_cond(y))  # noqa: E731
            loss = loss + c.loss.gp_weight * gradient_penalty(seen, real.detach(), fake)
        return loss + self._zero_centred(d_real, real, d_fake, fake)

    def _zero_centred(self, d_real: Tensor, real: Tensor, d_fake: Tensor, fake: Tensor) -> Tensor | float:
        """The zero-centred gradient penalties, each ``weight / 2 * E||grad_x D(x)||^2`` (Mescheder et al. 2018):
        R1 at the reals, R2 at the fakes (R3GAN, Huang et al. 2024, uses both); ``x`` must require grad where its
        weight is on. 0 when both are off."""
        c = self.cfg.loss
        total: Tensor | float = 0.0
        for weight, logits, x in ((c.r1_weight, d_real, real), (c.r2_weight, d_fake, fake)):
            if weight > 0:
                total = total + 0.5 * weight * r1_penalty(logits, x)
        return total

    def _after_backward(self, params: list[Tensor], key: str, measure: bool) -> None:
        clip = self.cfg.optim.grad_clip
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if measure:
                self._gnorm[key] = norm.detach()
        elif measure:
            self._gnorm[key] = _grad_norm(params)

    def read_stats(self) -> dict[str, float]:
        """Means of the step statistics since the last read, plus the last measured grad norms (one sync)."""
        extra = {} if self._ada is None else {"augment_p": self._ada.p}  # where adaptive augmentation has it now
        vals = torch.cat([self._acc / max(self._acc_n, 1),
                          torch.stack([*self._gnorm.values(), *extra.values()])]).tolist()
        self._acc.zero_()
        self._acc_n = 0
        return dict(zip((*STAT_NAMES, *self._gnorm, *extra), vals, strict=True))

    def eval_generator(self) -> nn.Module:
        """The generator used for evaluation and export: the EMA copy when on, with G's current buffers."""
        if self.G_ema is None:
            return self.G
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)
        return self.G_ema

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Samples of the evaluation generator for ``z`` (and, conditional, the labels ``y``), in eval mode."""
        g = self.eval_generator()
        was_training = g.training
        g.eval()
        labels = [None] * len(z.split(1024)) if y is None else y.split(1024)
        out = torch.cat([g(chunk.to(self.device), *_cond(None if yc is None else yc.to(self.device)))
                         for chunk, yc in zip(z.split(1024), labels, strict=True)])
        g.train(was_training)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            # the stage length the nets grew by: a run resumed with other train.steps keeps it (recomputed from
            # the new steps, it set nets grown to the full resolution back to a lower one)
            "growth_stage": self._growth.stage_steps if self._growth is not None else None,
            # the steps its decay and noise schedules ran over (``schedule_at``): a resume with other --steps is
            # checked against them (``production.check_schedule``)
            "schedule_steps": self.cfg.train.steps,
            # the step statistics summed since the last log: a checkpoint between two logs that left them out made
            # a resumed run's next record the mean of fewer steps than the same run's uninterrupted one
            "stats": {"sum": self._acc.detach().cpu(), "n": self._acc_n, **{k: v.detach().cpu()
                                                                          for k, v in self._gnorm.items()}},
            "ada": self._ada.state_dict() if self._ada is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        _load_moments(self.opt_g, state["opt_g"])
        _load_moments(self.opt_d, state["opt_d"])
        if self.G_ema is not None and state.get("G_ema") is not None:
            self.G_ema.load_state_dict(state["G_ema"])
        if self._growth is not None and state.get("growth_stage") is not None:
            self._growth = dataclasses.replace(self._growth, stage_steps=int(state["growth_stage"]))
        stats = state.get("stats")
        if stats is not None:  # a checkpoint from before they were kept resumes with none, as it did
            self._acc = stats["sum"].to(self.device)
            self._acc_n = int(stats["n"])
            self._gnorm = {k: stats[k].to(self.device) for k in self._gnorm}
        if self._ada is not None and state.get("ada") is not None:
            self._ada.load_state_dict(state["ada"])


def _load_moments(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``opt``'s per-parameter state (Adam's moments) from ``state``, its settings kept as the config built them.
    torch loads a group's settings too: a PBT member cloned from an AdamW member (``optim.weight_decay`` mutated to
    0, so a plain Adam here) went on decaying its weights, L2-coupled, at the other's rate."""
    built = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, settings in zip(opt.param_groups, built, strict=True):
        group.update(settings)
