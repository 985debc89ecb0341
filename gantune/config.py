"""Typed configuration of one trial, loaded from YAML.

A trial config is a search space with every value fixed (``gantune.sampling.space`` lets any leaf be a range).
This module is the schema alone: pydantic dataclasses reject unknown keys, wrong types, values out of range and
rules inside one section, naming the file and the key path. It imports no other layer, so anything can read a
config without torch. The names a config uses (datasets, architectures, losses, …) belong to the registries of the
layers above; ``gantune.catalogue`` checks them and the rules between sections: ``load_config`` and
``config_from_dict`` there are the ways in.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from gantune.errors import ConfigError
from gantune.events import text_line

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)
#: the sections whose numbers are sizes, rates and weights: .inf or .nan there is a typo, never a setting (the
#: health thresholds keep ``_STRICT``: .inf switches a rule off)
_FINITE = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
#: what ``train.device`` (and ``--device``) may name
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device ``train.device`` or ``--device`` may name; ``None`` when it is one (whether
    this machine has it is ``gantune.trial.resolve_device``'s question)."""
    return None if _DEVICE_PATTERN.fullmatch(name) else f"{name!r} is not a device: auto, cpu, cuda or cuda:N"


def switch_problem(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not fit a field typed ``annotation`` though pydantic's lax mode would convert it: true or
    false where a number goes (``steps: true`` would train 1 step), a quoted number where a number goes (``trials:
    "4"``; ``categorical: ['32', 64]`` sampled the text '32', which an expression reading it could not compare), a
    number or a word where a switch goes (``"yes"``, ``1``, ``"off"``); ``None`` when it fits or is the schema's to
    judge."""
    kinds = set(get_args(annotation)) or {annotation}
    if isinstance(value, bool):
        return "must be a number, not true or false" if kinds & {int, float} and bool not in kinds else None
    if isinstance(value, str) and kinds & {int, float} and str not in kinds and _number(value):
        if _LEADING_ZEROS.match(value):  # YAML 1.1's octal, read as text: 064 was 52
            return f"must be a number, not {value}, whose leading zero makes it text (YAML 1.1 read it as octal)"
        return f"must be a number, not the text {value!r} (drop the quotes)"
    if bool in kinds and isinstance(value, (int, float, str)) and not kinds & {int, float, str}:
        return "must be true or false"
    return None


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_switch(fields: dict[str, Any], v: Any, info: ValidationInfo) -> Any:
    assert info.field_name is not None
    if problem := switch_problem(fields[info.field_name].annotation, v):
        raise ValueError(problem)
    return v


@dataclass(config=_STRICT)
class _Section:
    """A trial config section: refuses what ``switch_problem`` names beyond its fields' own checks."""

    @field_validator("*", mode="before")
    @classmethod
    def _switches(cls, v: Any, info: ValidationInfo) -> Any:
        return _check_switch(cls.__pydantic_fields__, v, info)  # type: ignore[attr-defined]


class SwitchChecked(BaseModel):
    """A pydantic model (the search settings, a space's ranges) that refuses what ``switch_problem`` names."""

    @field_validator("*", mode="before")
    @classmethod
    def _switches(cls, v: Any, info: ValidationInfo) -> Any:
        return _check_switch(cls.model_fields, v, info)


#: the largest batch, width or latent size: no memory holds a tensor this long (a run asking for one fails as out
#: of memory), and larger numbers overflow torch's size arithmetic instead
MAX_SIZE = 2**40
#: the largest seed: NumPy's and most tools' seeds are 32-bit (torch's generators take it and the offsets added)
MAX_SEED = 2**32 - 1


#: the smallest share of a resource Ray schedules (its quantities keep 4 decimals): a trial asking for less
#: failed the search inside Tune with a traceback
RESOURCE_PRECISION = 1e-4


def share_problem(v: float) -> str | None:
    """Why ``v`` is no share of a resource Ray can give a trial (0 is none), else ``None``."""
    if not (math.isfinite(v) and v >= 0):
        return "must be a number of 0 or more"
    if 0 < v < RESOURCE_PRECISION:
        return f"must be 0 or at least {RESOURCE_PRECISION} (Ray's resource precision)"
    return None


#: the largest float32 (torch's own): a learning rate or clipping bound past it cannot be applied to the weights (an
#: optimiser step failed with "value cannot be converted to type float without overflow", a traceback)
MAX_FLOAT32 = 3.4028234663852886e38


def _float32(v: float) -> float:
    if v > MAX_FLOAT32:
        raise ValueError(f"{v:g} is past 3.4e38, the largest float32, which the weights are")
    return v


#: a float applied to the float32 weights
Float32 = Annotated[float, AfterValidator(_float32)]


def dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"optim.lr_g": 0.002, ...}``: dotted paths to the values that are not mappings."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(dotted(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def parse_norm(spec: str) -> tuple[str, bool] | None:
    """``spectral+layer`` -> (``layer``, True), ``spectral`` -> (``none``, True), ``batch`` -> (``batch``, False):
    the activation norm and whether spectral norm wraps the layer; ``None`` when the spec names more than one
    activation norm or spectral twice. Whether the activation norm exists is the catalogue's question."""
    parts = spec.split("+")
    acts = [p for p in parts if p != "spectral"]
    if len(acts) > 1 or parts.count("spectral") > 1:
        return None
    return (acts[0] if acts else "none"), "spectral" in parts


def parse_augment(value: object) -> object:
    """``data.augment`` as a list of policy names: a list stays, a string is the authors' comma form
    (``"translation,cutout"``; ``""`` is none), so a search space can sample it with ``categorical`` (whose
    choices are scalars). Anything else is returned for the schema to refuse."""
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


@dataclass(config=_FINITE)
class DataConfig(_Section):
    """Where real samples come from (the built-in datasets follow PacGAN and scikit-learn: see ``gantune.data``)."""

    name: str = Field(default="grid25", description="a registered dataset: ring8, grid25, digits, "
                      "stacked_digits, folder, torchvision, …")
    resolution: int = Field(default=32, ge=8, le=64, description="image side in px (images only)")
    channels: int | None = Field(default=None, description="1 or 3; default: the dataset's own")
    path: str | None = Field(default=None, description="folder of images (folder) or dataset root (torchvision)")
    dataset: str | None = Field(default=None, description="torchvision dataset: CIFAR10, MNIST, FashionMNIST, CelebA")
    download: bool = Field(default=False, description="torchvision only: fetch the dataset if it is not under path")
    max_images: int | None = Field(default=None, ge=1, description="cap on images loaded (folder: a seeded "
                                        "random subset; torchvision: the first N; digits: the first N of its shuffled "
                                        "train split)")
    augment: list[str] = Field(default_factory=list, description="DiffAugment policies applied to D's real and fake "
                               "inputs (images only): translation, cutout, color; a list or \"translation,cutout\"")
    augment_p: float = Field(default=1.0, gt=0, le=1, description="probability that each image D sees goes through "
                             "each augment policy (per image and policy)")
    ada_target: float | None = Field(default=None, gt=0, lt=1, description="adaptive augmentation (ADA, Karras et "
                                     "al. 2020): the augment probability starts at 0 and is tuned so that E[sign(D "
                                     "logit of a real)], D's overfitting signal, stays at this target (ADA's 0.6; "
                                     "null = off: augment_p fixed)")
    ada_kimg: float = Field(default=500.0, gt=0, description="ADA's speed: thousands of real images over which the "
                            "probability can move from 0 to 1")

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of two between 8 and 64")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: int | None) -> int | None:
        if v not in (None, 1, 3):
            raise ValueError("must be 1 or 3")
        return v

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: object) -> object:
        return parse_augment(v)


@dataclass(config=_FINITE)
class ProgressiveConfig(_Section):
    """Progressive growing (Karras et al. 2018) of the DCGAN nets: training starts at ``start`` px and doubles to
    ``data.resolution``; each new resolution's layers fade in (alpha 0 -> 1) over ``fade_steps``. The schedule is a
    function of the generator step alone (``gantune.gan.progressive.GrowthSchedule``): ``stage_steps`` at the start
    resolution, then for each doubling a fade and ``stage_steps`` more; the last resolution keeps the rest of
    ``train.steps``. ``start`` equal to ``data.resolution`` grows nothing: the plain DCGAN (so a search can switch
    growing off with a categorical on ``start``)."""

    start: int = Field(default=8, ge=4, le=64, description="resolution training starts at (px, a power of two; "
                       "data.resolution = no growing)")
    fade_steps: int = Field(default=200, ge=1, description="generator steps over which each new resolution fades in")
    stage_steps: int | None = Field(default=None, ge=0, description="generator steps at each resolution before the "
                                    "next fade; default: train.steps less the fades, shared equally by the resolutions")

    @field_validator("start")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of two between 4 and 64")
        return v


@dataclass(config=_FINITE)
class ModelConfig(_Section):
    """Generator and discriminator shapes. ``arch: auto`` picks MLP for 2-D data, DCGAN for images."""

    arch: str = Field(default="auto", description="auto (by data kind) or a registered one: mlp, dcgan, …")
    z_dim: int = Field(default=64, ge=1, le=MAX_SIZE)
    g_width: int = Field(default=128, ge=1, le=MAX_SIZE, description="hidden units (MLP) or base channels (DCGAN)")
    d_width: int = Field(default=128, ge=1, le=MAX_SIZE)
    g_depth: int = Field(default=3, ge=1, le=64, description="hidden layers (MLP) or conv layers per resolution "
                         "(DCGAN)")
    d_depth: int = Field(default=3, ge=1, le=64)
    g_norm: str = "batch"
    d_norm: str = "none"
    minibatch_std: bool = Field(default=False, description="append the minibatch standard deviation to D's features")
    d_dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout after each hidden activation of D "
                             "(0 = off)")
    # bounded: a D with a million kernels allocated lazily and was killed by the OS, not refused (Salimans et al.
    # use B = 100, C = 5)
    minibatch_disc: int = Field(default=0, ge=0, le=4096, description="minibatch-discrimination kernels B appended "
                                "to D's features (Salimans et al. 2016; 0 = off)")
    minibatch_disc_dim: int = Field(default=16, ge=1, le=4096, description="dimension C of each "
                                    "minibatch-discrimination kernel")
    progressive: ProgressiveConfig | None = Field(default=None, description="progressive growing of the dcgan "
                                                  "nets: {start, fade_steps, stage_steps} (null = off)")
    conditional: bool = Field(default=False, description="class-conditional GAN on the data's labels: per-class "
                              "gain and bias of G's norm layers, a projection discriminator (Miyato & Koyama 2018)")
    init_from: str | None = Field(default=None, description="transfer learning: start G (and D, when the file has "
                                  "it) from a generator.pt, a checkpoint.pt or a run directory; shapes must match")

    @field_validator("g_norm", "d_norm")
    @classmethod
    def _norm(cls, v: str) -> str:
        """One spelling for a norm: ``spectral+none`` is ``spectral``, ``layer+spectral`` is ``spectral+layer`` (a space
        listing both drew that norm twice as often, and a recipe's spelling missed the space's)."""
        parsed = parse_norm(v)
        if parsed is None or not parsed[1]:
            return v
        return "spectral" if parsed[0] == "none" else f"spectral+{parsed[0]}"


@dataclass(config=_FINITE)
class LossConfig(_Section):
    """The adversarial objective and its regularisers."""

    name: str = Field(default="nonsaturating", description="a registered loss: nonsaturating, minimax, hinge, wgan, "
                      "wgan-gp, lsgan, rpgan, ragan, …")
    gp_weight: float = Field(default=10.0, ge=0, description="WGAN-GP gradient-penalty weight")
    clip: Float32 = Field(default=0.01, gt=0, description="WGAN weight-clipping bound")
    r1_weight: float = Field(default=0.0, ge=0, description="R1 penalty on real samples (0 = off)")
    r2_weight: float = Field(default=0.0, ge=0, description="R2 penalty on fake samples, R1's twin (0 = off; R3GAN "
                             "sets it to r1_weight)")
    feature_matching: float = Field(default=0.0, ge=0, description="weight of the feature-matching G loss (0 = off)")
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="one-sided: D's real target is 1 - s "
                                   "(losses with targets: nonsaturating, minimax, lsgan; 0 = off)")
    instance_noise: float = Field(default=0.0, ge=0, description="initial std of Gaussian noise added to D's real "
                                  "and fake inputs, annealed linearly to 0 (0 = off)")
    instance_noise_steps: float = Field(default=1.0, gt=0, le=1, description="fraction of train.steps over which "
                                        "the instance noise anneals to 0")
    unroll: int = Field(default=0, ge=0, le=100, description="D updates G looks ahead through (unrolled GAN, Metz "
                        "et al. 2017: 5-10; 0 = off; at most 100: a typo's 10**19 ran its first step for ever)")


@dataclass(config=_FINITE)
class OptimConfig(_Section):
    """Optimisers: separate learning rates for G and D (TTUR), n_critic D steps per G step."""

    name: str = Field(default="adam", description="a registered optimiser: adam, rmsprop, …")
    lr_g: Float32 = Field(default=2e-4, gt=0)
    lr_d: Float32 = Field(default=2e-4, gt=0)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    n_critic: int = Field(default=1, ge=1, le=100, description="D steps per G step (WGAN's 5; at most 100: a "
                          "typo's 10**19 ran the first step for ever, without a word)")
    grad_clip: float = Field(default=0.0, ge=0, description="max gradient norm for G and D (0 = off)")
    ema: float = Field(default=0.0, ge=0, lt=1, description="EMA decay of G used for evaluation (0 = off), warmed "
                       "up as min(ema, (1 + step) / (10 + step))")
    decay: str = Field(default="none", description="a registered learning-rate decay of G and D towards 0 at "
                       "train.steps: none, linear, cosine (annealing sharpens samples)")
    decay_start: float = Field(default=0.0, ge=0, lt=1, description="fraction of train.steps before decay begins")
    weight_decay: float = Field(default=0.0, ge=0, description="decoupled weight decay of G and D (adam becomes "
                                "AdamW; 0 = off)")


@dataclass(config=_FINITE)
class TrainConfig(_Section):
    """The loop's budget and cadence."""

    steps: int = Field(default=2000, ge=1, description="generator steps")
    batch_size: int = Field(default=64, ge=2, le=MAX_SIZE)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    log_every: int = Field(default=50, ge=1)
    checkpoint_every: int = Field(default=1000, ge=1)
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N")
    # speed options (gantune.gan.speed): the CUDA-only ones never change CPU results
    tf32: bool = Field(default=True, description="CUDA only: TF32 matmuls and convolutions")
    cudnn_benchmark: bool = Field(default=True, description="CUDA only: cuDNN picks the fastest conv algorithms")
    channels_last: bool = Field(default=False, description="CUDA only: NHWC memory format for image "
                                                              "nets (with compile, the compiler's choice)")
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="CUDA only: bf16 autocast of G and D")
    compile: bool = Field(default=False, description="torch.compile G and D (any device; slow first steps)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        problem = device_problem(v)
        if problem:
            raise ValueError(problem)
        return v


@dataclass(config=_FINITE)
class EvalConfig(_Section):
    """Evaluation cadence and metric set (the metrics plug in at the loop's evaluation hook)."""

    every: int = Field(default=500, ge=1, description="evaluate every N generator steps (and at the end)")
    n_samples: int = Field(default=2500, ge=16, le=MAX_SIZE, description="generated samples per evaluation")
    metrics: list[str] = Field(default_factory=lambda: ["default"])
    quick_every: int = Field(default=0, ge=0, description="cheap collapse checks (modes, classes, diversity)")
    quick_samples: int = Field(default=500, ge=16, description="samples per quick check, at most n_samples (a "
                               "quick check is the cheap one)")
    extractor: str = Field(default="auto", description="features for FID/KID/PRDC: auto, coords, digits, "
                           "stacked_digits, inception")
    inception_weights: str | None = Field(default=None, description="torch-fidelity Inception-v3 weights file")
    grid: int | None = Field(default=None, ge=1, le=MAX_SIZE, description="samples per grid/scatter (default: 64 or "
                             "1000 points)")
    repeat: bool = Field(default=False, description="at each full evaluation, measure the metric set a second "
                         "time on fresh samples of the same weights, reported as repeat/<metric>: the evaluation "
                         "noise (search.pruning.noise_aware sets it)")

    def grid_size(self, points: bool) -> int:
        return self.grid or (1000 if points else 64)

    def quick_size(self) -> int:
        """What a quick check scores: ``quick_samples``, at most ``n_samples`` (500 of them took a trial evaluated
        on 64 at every "cheap" check)."""
        return min(self.quick_samples, self.n_samples)


@dataclass(config=_STRICT)
class HealthConfig(_Section):
    """Thresholds of the health verdicts (see ``gantune.health``); each is a documented default."""

    objective: str = Field(default="fid", description="metric the rise check and the search follow")
    mode: Literal["min", "max"] = "min"
    warmup_evals: int = Field(default=1, ge=0, description="checks before the collapse/spread verdicts start "
                              "(quick checks count), evaluations before the rise verdict starts")
    warmup_steps: int = Field(default=0, ge=0, description="steps before collapse/spread/rise checks start")
    patience: int = Field(default=2, ge=1, description="consecutive bad checks (quick ones count) before a "
                          "collapse/spread verdict, bad evaluations before a rise verdict")
    max_grad_norm: float = Field(default=1e4, gt=0, description="grad norm of G or D above this: diverged")
    max_abs_loss: float = Field(default=1e4, gt=0, description="|loss| above this: diverged")
    rise_factor: float = Field(default=3.0, gt=1, description="objective worse than its best by this factor in "
                               "magnitude (FID 10 -> 30, coverage 0.6 -> 0.2) and by rise_margin: diverged")
    rise_margin: float = Field(default=0.5, ge=0, description="fraction (below 1) of the range the objective has "
                               "covered so far that it must also be worse than its best by (noise near zero)")
    min_coverage: float = Field(default=0.15, ge=0, le=1, description="fraction of modes/classes covered: collapsed")
    min_hq: float = Field(default=0.1, ge=0, le=1, description="HQ share needed before low mode coverage counts "
                          "(coverage 0, no sample near any mode, counts always)")
    min_diversity: float = Field(default=0.25, ge=0, description="fake/real pairwise-distance ratio: collapsed")
    max_diversity: float = Field(default=1.5, gt=1, description="fake/real pairwise-distance ratio above this: "
                                 "diverged (samples spread beyond the data; .inf = off)")
    min_recall: float = Field(default=0.02, ge=0, le=1, description="k-NN recall below this: collapsed")
    min_progress: float = Field(default=0.25, ge=0, description="a check where some collapse signal rose by this "
                                "fraction above its best earlier value (counting up to what real data reads, 1) is "
                                "improving: low signals do not count")
    stall_logs: int = Field(default=20, ge=2, description="logs with frozen losses and no better objective: stalled")
    stall_tol: float = Field(default=1e-5, ge=0, description="loss change counted as frozen")
    d_win_logs: int = Field(default=20, ge=0, description="logs where D separates every sample: stalled, with a "
                            "loss whose G gradient then vanishes (minimax; 0 = off)")

    @field_validator("rise_margin")
    @classmethod
    def _fraction(cls, v: float) -> float:
        """A value can be no further from the best than the range covered: 1 or more would switch the rule off
        (and is what a config from before, when the margin was in objective units, still says)."""
        if v >= 1:
            raise ValueError("must be below 1: a fraction of the range the objective has covered, not objective units")
        return v

    @model_validator(mode="after")
    def _spread_band(self) -> HealthConfig:
        """A diversity ratio can not be both too low and too high."""
        if self.min_diversity >= self.max_diversity:
            raise ValueError(f"min_diversity {self.min_diversity:g} must be below max_diversity {self.max_diversity:g}")
        return self


@dataclass(config=_STRICT)
class OriginConfig(_Section):
    """Where an exported config came from: read by ``gantune train`` to tag its MLflow run; not trained on."""

    search: str
    trials: list[int] = Field(default_factory=list)
    study_storage: str | None = None
    # keys the space computed from train.steps (``decay_start: {expr: "2000 / train.steps"}``) and the steps they
    # were computed at: ``gantune train --steps`` of another count keeps them, and says so
    steps_read: list[str] = Field(default_factory=list)
    steps_read_at: int | None = Field(default=None, ge=1)


def steps_note(keys: list[str], computed_at: int, steps: int | None) -> str:
    """What other steps leave as a search computed it: ``keys`` read ``train.steps`` in its space and hold their
    values at ``computed_at`` steps; an export, its seed re-runs and ``gantune train --steps`` keep them."""
    if steps is None or steps == computed_at or not keys:
        return ""
    return (f"{', '.join(keys)} read train.steps in the space: computed at {computed_at} steps, not at these "
            f"{steps}; set them for {steps} by hand")


@dataclass(config=_STRICT)
class TrialConfig(_Section):
    """One GAN training run, fully specified."""

    name: str = "gantune"
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    loss: LossConfig = Field(default_factory=lambda: LossConfig())
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig())
    health: HealthConfig = Field(default_factory=lambda: HealthConfig())
    origin: OriginConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The sections of a trial config and the dataclass that validates each.
SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig,
                             "train": TrainConfig, "eval": EvalConfig, "health": HealthConfig}
#: keys of a section that are sections themselves (null = off): a search space samples their keys one by one
SUBSECTIONS: dict[str, type] = {"model.progressive": ProgressiveConfig}


def format_validation_error(err: ValidationError, source: str, prefix: str = "") -> str:
    """One line: ``source: key.path: what was expected`` (the first problem, and how many more there are). An
    unknown key comes first: it is most often a misspelt one, which the "required" beside it only follows from
    (``origin: {foo: 1}`` was told "origin.search: Field required")."""
    unknown = ("unexpected_keyword_argument", "extra_forbidden")
    errors = sorted(err.errors(), key=lambda e: e["type"] not in unknown)
    first = errors[0]

    def path(e: Any) -> str:
        return ".".join([prefix] * bool(prefix) + [str(p) for p in e["loc"] if p != "__root__"])

    loc = path(first)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] in unknown:
        msg = "unknown key"
    elif first["type"] == "invalid_key":  # ``train: {on: 2}``: YAML's true, which the path shows as 1
        loc = ".".join([*loc.split(".")[:-1], repr(first.get("input"))])
        msg = "unknown key (YAML reads on, off, yes and no as true and false)" if isinstance(
            first.get("input"), bool) else "unknown key (a key is text: quote it)"
    elif isinstance(value := first.get("input"), float) and not math.isfinite(value):  # .nan failed a bound first
        msg = f"Input should be a finite number, not {value}"  # ("should be greater than 0": NaN is neither)
    others = list(dict.fromkeys(path(e) for e in errors[1:]))
    more = len(errors) - 1  # with each other problem's key: a fix of the first was met by the next one unannounced
    where = f": {', '.join(o or '(the whole)' for o in others[:3])}{', ...' if len(others) > 3 else ''}"
    return f"{source}: " + (f"{loc}: " if loc else "") + msg + (
        f" (and {more} more problem{'s' * (more > 1)}{where})" if more else "")


def parse_config(raw: Any, source: str = "<config>") -> TrialConfig:
    """The schema's check of a plain mapping (parsed YAML, a sampled search point); names and the rules between
    sections are ``gantune.catalogue.config_from_dict``'s."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    if odd := [k for k in raw if not isinstance(k, str)]:  # YAML's true (on, yes) or a number: the error was
        # Python's "keywords must be strings", naming no key
        raise ConfigError(f"{source}: {odd[0]!r}: unknown key (YAML reads on, off, yes and no as true and false)")
    try:
        return TrialConfig(**raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    except TypeError as err:  # an unknown top-level key reaches __init__ as a keyword
        raise ConfigError(f"{source}: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: YAML keeps the last silently, so a search
    space with ``lr_g`` under ``optim`` twice would search one and drop the other without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: the keys given beside it override its
                continue  # (PyYAML merges them below); constructed here, it was "could not determine a constructor"
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str):
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting the strings ``_UniqueKeyLoader`` reads as numbers (``'1e-3'``)."""


#: YAML 1.2's numbers with an exponent: PyYAML (YAML 1.1) reads ``1e-3``, ``3e4`` and ``1.0e3`` as strings (its
#: floats need a dot and a signed exponent), so ``lr_g: 1e-3`` was the text '1e-3' wherever nothing converted it
#: (an expression ``optim.lr_g * 2`` said "* takes numbers, not str and int")
_EXPONENT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
#: digits with a leading zero: PyYAML (YAML 1.1) read ``batch_size: 064`` as octal 52 without a word, and ``0815``
#: (a name, a folder) as text. Read as text always: where a number goes, one line says to drop the zero; YAML 1.2's
#: octal is ``0o64``, which PyYAML read as text
_LEADING_ZEROS = re.compile(r"^[-+]?0[0-9_]+$")
_OCTAL = re.compile(r"^[-+]?0o[0-7][0-7_]*$")
for _kind in (_UniqueKeyLoader, _Dumper):
    _kind.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+.0123456789"))
    _kind.add_implicit_resolver("tag:yaml.org,2002:int", _LEADING_ZEROS, list("-+0"))
    _kind.add_implicit_resolver("tag:yaml.org,2002:int", _OCTAL, list("-+0"))


def _yaml_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    """An integer as YAML 1.1 reads it but for ``0o64``, octal as in YAML 1.2, and digits after a leading zero,
    which stay text (``_LEADING_ZEROS``)."""
    text = str(loader.construct_scalar(node))
    if _LEADING_ZEROS.match(text):
        return text
    if _OCTAL.match(text):
        return int(text.replace("_", ""), 8)
    value: int = loader.construct_yaml_int(node)
    return value


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _yaml_int)


def yaml_text(data: Any) -> str:
    """``data`` as YAML that ``read_yaml`` reads back as it was (keys in their order)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, turning missing files and syntax errors into one-line ``ConfigError``s."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text (byte {err.start}): a YAML file is expected") from None
    return parse_yaml(text, str(p))


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as ``read_yaml`` reads a file (``1e-3`` a number, a key given twice refused), turning syntax
    errors into one-line ``ConfigError``s naming ``source``: a space's text stored by a search reads as its file
    did."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.reader.ReaderError as err:  # no mark: "... not allowed\n  in "<unicode string>", position 20"
        line = text.count("\n", 0, err.position) + 1  # (a NUL of a file zero-filled after a crash, a form feed)
        raise ConfigError(f"{source}: line {line}: invalid YAML (character U+{err.character:04X} is not allowed "
                          "in YAML text)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}: line {mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: invalid YAML ({text_line(str(getattr(err, 'problem', None) or err))})"
                          ) from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ConfigError(f"{source}: invalid YAML (nested too deeply)") from None
    if _more_values(data, MAX_YAML_VALUES):
        raise ConfigError(f"{source}: holds more than {MAX_YAML_VALUES:,} values once its aliases (*name) are "
                          "expanded: no config or space needs as many")
    return data


#: the most values (each mapping, list and scalar) a config or space file holds with its aliases expanded: nine
#: levels of ten aliases in a free parameter's value (832 bytes) were 10^8, 26 s and 2.4 GB once a search stored it
MAX_YAML_VALUES = 100_000


def _more_values(data: Any, limit: int) -> bool:
    """Whether ``data`` holds more than ``limit`` values, counted as a walk meets them (a shared one each time):
    stops at the limit, so an alias bomb costs no more than a file of that size."""
    pending, seen = [data], 0
    while pending:
        seen += 1
        if seen > limit:
            return True
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def dump_config(cfg: TrialConfig, header: str = "") -> str:
    """The fully resolved config as YAML (what ``gantune train`` accepts back unchanged)."""
    body = yaml_text(cfg.to_dict())
    return header + body
