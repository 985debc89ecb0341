"""The catalogue: every name a trial config may use, and the rules between its sections, checked at load.

``gantune.config`` is the schema alone and imports no other layer. The names it holds (dataset, architecture,
loss, optimiser, decay, norms, feature extractor, metric families) are the registries of ``gantune.data``,
``gantune.gan`` and ``gantune.metrics``, and a rule such as "batch norm in D breaks the gradient penalty" is a
fact of their objects. This module sits above those layers and asks them: ``load_config`` and
``config_from_dict`` are the ways a config comes in, so a bad name is refused once, at load, with the file and
key named. A registry imported here sees registrations made later (a plugin's loss), since it is looked up
when a config is checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gantune.config import DataConfig, TrialConfig, parse_augment, parse_config, parse_norm, read_yaml
from gantune.data import DATASETS, data_shape, is_labelled, is_points, stack_problem
from gantune.errors import ConfigError
from gantune.gan.augment import check_augment
from gantune.gan.conditional import CONDITIONAL_NORMS
from gantune.gan.losses import LOSSES
from gantune.gan.nets import ARCHS, GROWN, build_discriminator, resolve_arch
from gantune.gan.norms import NORMS, NormSpec
from gantune.gan.progressive import GrowthSchedule
from gantune.gan.step import DECAYS, OPTIMIZERS, WEIGHT_DECAY, WITHOUT_BETAS
from gantune.gan.transfer import init_file
from gantune.gan.unroll import functional_update
from gantune.metrics import FAMILIES, better, check_metric_names, metric_keys, metric_names
from gantune.metrics.features import EXTRACTORS, NO_LOGITS, default_extractor, extractor_problem


def _norm(spec: str) -> None:
    parsed = parse_norm(spec)
    if parsed is None or parsed[0] not in NORMS:
        raise ValueError(f"{spec!r} is not a normalisation: use one of {', '.join(NORMS.names())}, spectral, "
                         "or spectral+<one of them>")


def _arch(name: str) -> None:
    if name != "auto":
        ARCHS.validate(name)


def _extractor(name: str) -> None:
    if name != "auto":
        EXTRACTORS.validate(name)


def _augment(value: Any) -> None:
    """The policies of ``data.augment``, given as a list or (a search space's categorical choice) a comma string."""
    policies = parse_augment(value)
    if isinstance(policies, list):
        check_augment([str(p) for p in policies])


def _init_from(path: Any) -> None:
    """``model.init_from`` names a file that is there (its shapes are checked when the nets are built)."""
    if path is not None:
        init_file(path)


#: (section, key) -> the check of a name there (a ``ValueError`` that says what exists)
NAMED: dict[tuple[str, str], Callable[[Any], object]] = {
    ("data", "name"): DATASETS.validate,
    ("model", "arch"): _arch,
    ("model", "g_norm"): _norm,
    ("model", "d_norm"): _norm,
    ("loss", "name"): LOSSES.validate,
    ("optim", "name"): OPTIMIZERS.validate,
    ("optim", "decay"): DECAYS.validate,
    ("eval", "extractor"): _extractor,
    ("eval", "metrics"): check_metric_names,
    ("data", "augment"): _augment,
    ("model", "init_from"): _init_from,
}


def check_value(section: str, key: str, value: Any, source: str) -> None:
    """One value of ``section.key`` against its registry (a search space checks each value a leaf can take)."""
    check = NAMED.get((section, key))
    if check is None:
        return
    try:
        check(value)
    except ValueError as err:
        raise ConfigError(f"{source}: {section}.{key}: {err}") from None


def _combinations(cfg: TrialConfig) -> None:
    """Rules between sections; each fact comes from the dataset, architecture, loss or norm object."""
    points = is_points(cfg.data)
    if ARCHS.get(resolve_arch(cfg)).points != points:
        kind = "2-D point data" if points else "image data"
        fits = [a for a in ARCHS.names() if ARCHS.get(a).points == points]
        raise ValueError(f"model.arch: {kind} needs the {' or '.join(fits)} architecture")
    for key in ("g_norm", "d_norm"):
        act = _activation(getattr(cfg.model, key))
        if points and NORMS.get(act).needs_maps:
            raise ValueError(f"model.{key}: {act} normalisation needs image feature maps, not 2-D points")
    d_act = _activation(cfg.model.d_norm)
    if not NORMS.get(d_act).per_sample and _d_normalises(cfg, d_act):
        if LOSSES.get(cfg.loss.name).gradient_penalty:
            raise ValueError(f"model.d_norm: {d_act} norm in D breaks the per-sample gradient penalty of "
                             f"{cfg.loss.name}")
        for key in ("r1_weight", "r2_weight"):
            if getattr(cfg.loss, key) > 0:
                raise ValueError(f"model.d_norm: {d_act} norm in D breaks the per-sample {key[:2].upper()} penalty")
    _regulariser_combinations(cfg, points)
    if cfg.loss.unroll > 0:
        _unrollable(cfg)
    if cfg.model.progressive is not None:
        _growable(cfg)
    _conditional_combinations(cfg)
    for problem in (stack_problem(cfg.data), extractor_problem(cfg)):  # what the metrics' checks below assume
        if problem is not None:
            raise ValueError(problem)
    names = [n for n in metric_names(cfg) if n in FAMILIES]  # a default set holds only families that fit
    for name in cfg.eval.metrics:  # found once the reference was built: every trial of a search failed there
        measures = FAMILIES.get(name).fits if name in FAMILIES else None
        if measures is not None and (why := measures(cfg)) is not None:
            raise ValueError(f"eval.metrics: {why}")
    reads = [n for n in names if FAMILIES.get(n).logits]
    if reads and (extractor := default_extractor(cfg)) in NO_LOGITS:  # found once the reference was built, a cache
        raise ValueError(f"eval.metrics: the {reads[0]} metric needs class posteriors, which the {extractor} "
                         "extractor does not give (the digits or stacked_digits extractor, or inception)")
    for needed in DATASETS.get(cfg.data.name).needs:
        if not getattr(cfg.data, needed):
            raise ValueError(f"data.{needed}: dataset {cfg.data.name!r} needs a {needed}")


def _d_normalises(cfg: TrialConfig, act: str) -> bool:
    """Whether D holds a layer of the norm ``act``: a DCGAN critic of depth 1 at 8 px has none (its one block
    at that size is the first, which no norm follows), and batch norm there was refused as breaking a gradient
    penalty it never reached. Built on the meta device: shapes only, no memory, no random draws."""
    kinds = {type(NORMS.get(act).build(4, spatial)) for spatial in (False, True)}
    with torch.device("meta"):
        net = build_discriminator(cfg.model, resolve_arch(cfg), data_shape(cfg.data))
    return any(type(m) in kinds for m in net.modules())


def _regulariser_combinations(cfg: TrialConfig, points: bool) -> None:
    """The regularisers' rules: each knob where its object says it means something."""
    if cfg.loss.label_smoothing > 0 and LOSSES.get(cfg.loss.name).d_smoothed is None:
        smoothable = [n for n in LOSSES.names() if LOSSES.get(n).d_smoothed is not None]
        raise ValueError(f"loss.label_smoothing: {cfg.loss.name} has no real target to smooth (use "
                         f"{', '.join(smoothable)})")
    if cfg.optim.weight_decay > 0 and cfg.optim.name not in WEIGHT_DECAY:
        raise ValueError(f"optim.weight_decay: decoupled weight decay needs {' or '.join(sorted(WEIGHT_DECAY))}, "
                         f"not {cfg.optim.name}")
    if cfg.data.augment and points:
        raise ValueError("data.augment: DiffAugment transforms images, not 2-D points")
    if cfg.data.ada_target is not None:
        if not cfg.data.augment:
            raise ValueError("data.ada_target: adaptive augmentation tunes the probability of data.augment's "
                             "policies, and there are none (e.g. augment: [translation, cutout])")
        if LOSSES.get(cfg.loss.name).real_above is None:
            bounded = [n for n in LOSSES.names() if LOSSES.get(n).real_above is not None]
            raise ValueError(f"data.ada_target: {cfg.loss.name}'s D has no real/fake boundary for ADA's overfitting "
                             f"signal E[sign(D(x))] (use {', '.join(bounded)})")


def objective_side(cfg: TrialConfig) -> str | None:
    """Why ``cfg``'s health objective is followed the wrong way (a metric better higher minimised, or better lower
    maximised: the rise check would stop a trial for improving), for a run about to start (``gantune train``; a
    search holds its direction to the same at load). Not a check of every config read: a generator file of a
    run from before, when a left-out direction was minimize, still loads to sample."""
    objective, side = cfg.health.objective, better(cfg.health.objective)
    if side is None or cfg.health.mode == side:
        return None
    words = ("higher", "maximise", "maximize") if side == "max" else ("lower", "minimise", "minimize")
    return (f"health.mode: the objective {objective!r} is better {words[0]}: {words[1]} it (health.mode: {side}; in a "
            f"search space, search.direction: {words[2]})")


def idle_quick_checks(cfg: TrialConfig, every: int, key: str) -> str | None:
    """Why quick checks every ``every`` steps (``key``: ``eval.quick_every``, a search's ``search.quick_every``)
    would measure nothing: they score the cheap metric families only, and ``cfg``'s set has none (beside FID
    alone each check ran empty, silently). For a run about to start, as ``objective_side``."""
    names = [n for n in metric_names(cfg) if n in FAMILIES]
    if every <= 0 or any(FAMILIES.get(n).cheap for n in names):
        return None
    cheap = ", ".join(n for n in FAMILIES.names() if FAMILIES.get(n).cheap)
    return (f"{key}: the quick checks between evaluations measure the cheap metrics ({cheap}), and eval.metrics "
            f"({', '.join(names) or 'none'}) holds none: add one, or set {key.split('.')[-1]} to 0")


def unmeasured_objective(cfg: TrialConfig) -> str | None:
    """Why ``cfg``'s health objective is not followed: its evaluations do not report it (no best weights are
    kept and the rise check never fires); ``None`` when they do, or when nothing is evaluated and the objective is
    the schema's (a run folder's ``config.yaml`` names every key, so its ``fid`` beside ``eval.metrics: []`` is
    no choice of the user's; another objective there is)."""
    keys, objective = metric_keys(cfg), cfg.health.objective
    if objective in keys or (not keys and objective == type(cfg.health)().objective):
        return None
    report = f"they report: {', '.join(keys)}" if keys else "eval.metrics is [], so nothing is evaluated"
    return (f"health.objective: {objective!r} is not reported by this config's evaluations ({report}): no best "
            "weights are kept and the rise check never fires")


def _maybe_labelled(name: str) -> bool:
    """Whether dataset ``name`` may carry class labels, asked of a bare config: a plugin's that reads a field it
    needs raised there, and the user's ``model.conditional`` on unlabelled data read as the plugin's error (not
    known: listed)."""
    try:
        return DATASETS.get(name).labelled(DataConfig(name=name)) is not False
    except Exception:
        return True


def _conditional_combinations(cfg: TrialConfig) -> None:
    """``model.conditional`` needs data with class labels (a folder's are known once it is loaded: the trial
    checks them) and norm layers in G to carry the per-class gain and bias; the conditional metric needs it."""
    if cfg.model.conditional:
        if is_labelled(cfg.data) is False:
            labelled = [n for n in DATASETS.names() if _maybe_labelled(n)]
            what = cfg.data.name + (f" {cfg.data.dataset}" if cfg.data.dataset else "")
            raise ValueError(f"model.conditional: dataset {what!r} has no class labels to condition on "
                             f"(use {', '.join(labelled)})")
        if _activation(cfg.model.g_norm) not in CONDITIONAL_NORMS:
            raise ValueError(f"model.conditional: G is conditioned through the gain and bias of its norm layers; "
                             f"model.g_norm {cfg.model.g_norm!r} has none (use {', '.join(CONDITIONAL_NORMS)})")
    elif "conditional" in cfg.eval.metrics:
        raise ValueError("eval.metrics: the conditional metric scores a conditional generator (model.conditional: "
                         "true)")


def _unrollable(cfg: TrialConfig) -> None:
    """``loss.unroll`` replays D's optimiser on a copy of D: it needs that optimiser's functional update, asked of
    the optimiser ``optim.name`` builds (on a probe parameter), so a plugin's optimiser is judged by what it is."""
    probe = OPTIMIZERS.get(cfg.optim.name)(iter([torch.nn.Parameter(torch.zeros(1))]), cfg.optim.lr_d, cfg.optim,
                                           False)
    try:
        functional_update(probe)
    except ValueError as err:
        raise ValueError(f"loss.unroll: optim.name {cfg.optim.name!r}: {err}") from None


def _growable(cfg: TrialConfig) -> None:
    """``model.progressive``: an architecture with a growing twin (image data), a start no larger than the data's
    resolution (equal: nothing grows), and a schedule whose last fade ends before ``train.steps``."""
    arch, p = resolve_arch(cfg), cfg.model.progressive
    assert p is not None
    if arch not in GROWN:
        raise ValueError(f"model.progressive: progressive growing needs the {' or '.join(GROWN.names())} "
                         f"architecture (image data), not {arch}")
    if p.start > cfg.data.resolution:
        raise ValueError(f"model.progressive.start: {p.start} is above data.resolution {cfg.data.resolution} "
                         "(equal means no growing)")
    plan = GrowthSchedule.of_config(cfg)
    if plan is not None and cfg.model.conditional:
        raise ValueError("model.progressive: the growing nets have no conditional twin yet (model.conditional: "
                         "false, or progressive.start equal to data.resolution)")
    if plan is not None and plan.end >= cfg.train.steps:
        raise ValueError(f"model.progressive: {plan.levels} fade(s) of {p.fade_steps} steps, each after "
                         f"{plan.stage_steps} steps at the resolution before, end at step {plan.end}: not before "
                         f"train.steps {cfg.train.steps} (shorten fade_steps or stage_steps)")


def _activation(spec: str) -> str:
    parsed = parse_norm(spec)
    assert parsed is not None  # checked by NAMED first
    return parsed[0]


#: files a run reads only when it starts from step 0: a resumed run's checkpoint holds what they gave
STARTING_FILES = (("model", "init_from"),)


def check(cfg: TrialConfig, source: str = "<config>", resumed: bool = False) -> TrialConfig:
    """``cfg`` when every name it uses is registered and its sections fit together; else one ``ConfigError``.
    ``resumed``: the config of a run that goes on from its checkpoint (its ``STARTING_FILES`` may be gone)."""
    for (section, key) in NAMED:
        if not (resumed and (section, key) in STARTING_FILES):
            check_value(section, key, getattr(getattr(cfg, section), key), source)
    try:
        _combinations(cfg)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def config_from_dict(raw: Any, source: str = "<config>", resumed: bool = False) -> TrialConfig:
    """Validate a plain mapping (parsed YAML, a sampled search point) into a ``TrialConfig`` (``resumed``: see
    ``check``)."""
    return check(parse_config(raw, source), source, resumed)


def load_config(path: str | Path, resumed: bool = False) -> TrialConfig:
    """Load and validate a trial config YAML file. An empty one is refused: it would train every default (a
    built-in config such as ``grid25`` is the way to ask for a known one). ``resumed``: see ``check``."""
    return config_from_file(read_yaml(path), path, resumed)


def config_from_file(raw: Any, path: str | Path, resumed: bool = False) -> TrialConfig:
    """``load_config`` of a file's parsed YAML ``raw`` (read once by a caller that needs the text's own keys too:
    a config from a pipe reads empty the second time)."""
    if raw is None:
        raise ConfigError(f"{path}: empty config (expected config sections such as data, model and train; or name "
                          "a built-in config: grid25, ring8, digits)")
    return config_from_dict(raw, str(path), resumed)


def _losses_with(flag: str) -> str:
    return " or ".join(n for n in LOSSES.names() if getattr(LOSSES.get(n), flag))


def _needing(key: str) -> tuple[Callable[[TrialConfig], bool], Callable[[], str]]:
    """A ``READ_ONLY_UNDER`` entry: read by the datasets that need ``data.<key>`` (a folder's path, ...)."""
    return (lambda c: key in DATASETS.get(c.data.name).needs,
            lambda: "data.name " + " or ".join(n for n in DATASETS.names() if key in DATASETS.get(n).needs))


#: config keys only read under another setting: whether a config reads the key, and which setting does. A space
#: searching one that none of its trials reads searches nothing (``gantune.sampling.space.check_draws`` says so:
#: ``gp_weight`` searched beside the default non-saturating loss was sampled, stored and modelled for nothing).
READ_ONLY_UNDER: dict[str, tuple[Callable[[TrialConfig], bool], Callable[[], str]]] = {
    "loss.gp_weight": (lambda c: LOSSES.get(c.loss.name).gradient_penalty,
                       lambda: f"loss.name {_losses_with('gradient_penalty')}"),
    "loss.clip": (lambda c: LOSSES.get(c.loss.name).weight_clipping,
                  lambda: f"loss.name {_losses_with('weight_clipping')}"),
    "optim.decay_start": (lambda c: c.optim.decay != "none", lambda: "optim.decay other than none"),
    "data.augment_p": (lambda c: bool(c.data.augment) and c.data.ada_target is None,
                       lambda: "data.augment without data.ada_target (which tunes the probability itself)"),
    "data.ada_kimg": (lambda c: c.data.ada_target is not None, lambda: "data.ada_target"),
    "data.resolution": (lambda c: not is_points(c.data), lambda: "image data (2-D points have none)"),
    "data.max_images": (lambda c: not is_points(c.data) and not DATASETS.get(c.data.name).stack,
                        lambda: "image data but stacked digits (2-D points are drawn, not loaded; stacked digits "
                                "draw from every train digit)"),
    "data.channels": (lambda c: not is_points(c.data), lambda: "image data (2-D points are two coordinates)"),
    "data.path": _needing("path"), "data.dataset": _needing("dataset"), "data.download": _needing("dataset"),
    **{f"model.progressive.{key}": (lambda c: GrowthSchedule.of_config(c) is not None,
                                    lambda: "model.progressive.start below data.resolution (it grows)")
       for key in ("fade_steps", "stage_steps")},
    "eval.quick_samples": (lambda c: c.eval.quick_every > 0, lambda: "eval.quick_every above 0"),
    "eval.inception_weights": (lambda c: default_extractor(c) == "inception", lambda: "the inception extractor"),
    "health.d_win_logs": (lambda c: LOSSES.get(c.loss.name).separation_stalls,
                          lambda: f"loss.name {_losses_with('separation_stalls')}"),
    "model.minibatch_disc_dim": (lambda c: c.model.minibatch_disc > 0, lambda: "model.minibatch_disc above 0"),
    "model.d_norm": (lambda c: NormSpec(c.model.d_norm).spectral or _d_normalises(
                         dataclasses.replace(c, model=dataclasses.replace(c.model, d_norm="batch")), "batch"),
                     lambda: "a D that holds a norm layer (a DCGAN critic of depth 1 at 8 px has none: its one block "
                             "is the first, which no norm follows)"),
    "loss.instance_noise_steps": (lambda c: c.loss.instance_noise > 0, lambda: "loss.instance_noise above 0"),
    **{f"optim.{key}": (lambda c: c.optim.name not in WITHOUT_BETAS,
                        lambda: "optim.name " + " or ".join(n for n in OPTIMIZERS.names() if n not in WITHOUT_BETAS))
       for key in ("beta1", "beta2")},
}
