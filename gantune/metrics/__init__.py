"""Evaluation of a generator: the metric set plugged into the trial loop's evaluation hook.

One file per metric family (``fid``, ``modes``, ``diversity``, ``inception_score``) behind the ``FAMILIES``
registry; features come from ``features.EXTRACTORS``. Real-data features are computed once per dataset,
resolution, extractor and sample count, cached on disk (``$GANTUNE_CACHE_DIR``, default ``~/.cache/gantune``; a
plugin's extractor or metric in memory only) and reused by every trial; so are the real-only statistics the
families derive from them. Everything is computed on the trial's device.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import torch

from gantune.config import TrialConfig
from gantune.data import RealData, data_label, data_listing, is_points
from gantune.errors import ConfigError
from gantune.metrics import (  # noqa: F401  # the built-in families register themselves
    conditional,
    diversity,
    fid,
    inception_score,
    modes,
)
from gantune.metrics.base import (
    FAMILIES,
    CollapseSignal,
    Family,
    Reference,
    Samples,
    Scorer,
    better,
    collapse_signals,
    family,
    full_precision,
    ours,
    quick_keys,
)
from gantune.metrics.features import (
    Extractor,
    build_extractor,
    built_in_extractor,
    default_extractor,
    missing_inception,
)
from gantune.metrics.modes import DIGIT_CLASSES
from gantune.rundir import cache_dir, cached

#: ``n`` generated samples; a conditional generator's with the labels they were generated for
Generate = Callable[[int], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
_MEMO: dict[tuple[str, str], Reference] = {}


#: the metric set ``eval.metrics: [default]`` stands for on images, by the extractor (others: ``IMAGE_DEFAULT``).
#: A classifier adds its class coverage; stacked digits their 1,000-mode count, which needs no KID beside FID:
#: their evaluations draw thousands of samples (26,000 in the published protocol), where FID's bias is small.
EXTRACTOR_DEFAULTS = {"digits": ["fid", "kid", "classes", "diversity", "prdc"],
                      "stacked_digits": ["fid", "stacked_modes", "diversity", "prdc"]}
IMAGE_DEFAULT = ["fid", "diversity", "prdc"]
#: what a conditional run (``model.conditional``) adds to the default set where the extractor is a classifier
CONDITIONAL_DEFAULT = ["conditional"]
POINTS_DEFAULT = ["fid", "modes", "diversity", "prdc"]


def default_metrics(points: bool, extractor: str) -> list[str]:
    """The metric set ``eval.metrics: [default]`` stands for: by data kind, and on images by the extractor."""
    return list(POINTS_DEFAULT if points else EXTRACTOR_DEFAULTS.get(extractor, IMAGE_DEFAULT))


def check_metric_names(names: list[str]) -> None:
    """A ``ValueError`` naming the first of ``names`` that is no metric family (``default`` stands for a set)."""
    for name in names:
        if name == "default":
            continue
        if name not in FAMILIES:
            raise ValueError(f"unknown metric {name!r}; choose from default, {', '.join(FAMILIES.names())}")


def metric_names(cfg: TrialConfig) -> list[str]:
    """The metric families ``cfg.eval.metrics`` stands for: ``default`` expanded for the data and extractor, in
    place (``[default, is]`` is the default set and the Inception Score), each family once."""
    if "default" not in cfg.eval.metrics:
        return list(cfg.eval.metrics)
    extractor = default_extractor(cfg)
    default = default_metrics(is_points(cfg.data), extractor)
    if cfg.model.conditional and extractor in EXTRACTOR_DEFAULTS:
        default += CONDITIONAL_DEFAULT
    # the families that can measure this data (stacked digits' modes on digits read by the stacked extractor, the
    # conditional metric on a folder of 5 classes read by digits: no)
    default = [n for n in default if (fits := FAMILIES.get(n).fits) is None or fits(cfg) is None]
    names = [n for name in cfg.eval.metrics for n in (default if name == "default" else [name])]
    return list(dict.fromkeys(names))


def missing_weights(cfg: TrialConfig) -> str | None:
    """The one line that says this config's evaluations need Inception-v3 weights that are not on disk, else
    ``None``. Asked where a config is about to train (``gantune train``, a search's load), not where one is only
    read: a generator trained on a folder is sampled on machines without the weights."""
    names = metric_names(cfg)
    if not names or default_extractor(cfg) != "inception":
        return None
    missing = missing_inception(cfg)
    return None if missing is None else f"{missing} (eval.metrics: {', '.join(names)} read Inception-v3's view of " \
        "these images)"


def metric_keys(cfg: TrialConfig) -> list[str]:
    """Every value an evaluation of ``cfg`` reports: what an objective may name."""
    return [key for name in metric_names(cfg) if name in FAMILIES for key in FAMILIES.get(name).keys]


def _reference_key(cfg: TrialConfig, extractor: Extractor, x: torch.Tensor) -> str:
    """What identifies the real features: the reference samples' bytes and the extractor with its weights and the
    class logits it gives (Inception's, which it did not always give), and for Inception how its uint8 input is
    made (rounded since 2026-12-05: features cached from floored pixels would meet rounded fakes), and the
    arithmetic (full float32 since 2026-12-05: radii and floors a GPU trial computed under TF32 are not reused;
    float64 distances since later that day: radii and floors from float32 distances are not either)."""
    content = hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    ident: dict[str, object] = {"x": content, "shape": list(x.shape), "extractor": extractor.name,
                                "weights": extractor.weights, "classes": extractor.classes,
                                "arithmetic": "float32, float64 distances"}
    if extractor.name == "inception":
        ident["pixels"] = "rounded"
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return f"reference-{cfg.data.name}-{extractor.name}-{len(x)}-{digest}"


#: the fewest training samples a floor scores (``eval.n_samples``' least): below it some families have no value
FLOOR_LEAST = 16


def one_real_sample(names: list[str]) -> str:
    """The refusal of metrics on data of one sample (a folder of one image)."""
    return (f"eval.metrics: the metrics ({', '.join(names)}) compare samples with the real data, which has one "
            "sample here; add images (data.max_images, where set, caps them), or eval.metrics: []")


def check_real_count(cfg: TrialConfig) -> None:
    """``one_real_sample`` before a run or a search starts, where the data's listing counts its images (a
    folder's): a search's every trial failed on it, and ``gantune train`` said so once the data was decoded."""
    if not (names := metric_names(cfg)):  # first: a listing stats every image of a folder
        return
    count = (data_listing(cfg.data) or {}).get("images")  # a plugin's listing need not count them
    if isinstance(count, int) and count < 2:
        raise ConfigError(one_real_sample(names))


def reference_n(data: RealData, n: int) -> int:
    """Reference samples for ``n`` generated ones: as many, or all the reference split has."""
    return min(n, data.reference_size)


def load_reference(cfg: TrialConfig, data: RealData, extractor: Extractor, n: int,
                   device: torch.device | None = None) -> Reference:
    """Real features for this dataset/extractor on ``device`` (default: CPU): from memory, else the disk cache,
    else computed and cached."""
    device = device or torch.device("cpu")
    x = data.reference(n)  # the seed ``RealData.twin`` keeps the floor apart from
    key = _reference_key(cfg, extractor, x)
    if (key, str(device)) in _MEMO:
        return _MEMO[key, str(device)]
    # a plugin's extractor is kept in memory only, as a plugin's metric is (``ours``): keyed by its name and a
    # weights digest its author need not set, an edited extractor read its first version's features and floor
    path = None if built_in_extractor(cfg) is None else cache_dir() / f"{key}.pt"

    def extract() -> dict[str, torch.Tensor | None]:
        feats, logits = extractor(x)
        return {"feats": feats, "logits": logits}

    stored: dict[str, Any] = extract() if path is None else cached(path, extract)
    mixture = data.mixture
    logits = stored["logits"]
    if extractor.depth > 1 and (logits is None or logits.shape[1] != DIGIT_CLASSES * extractor.depth):
        # the families that read one digit a channel reshape the logits so: a traceback mid-evaluation
        raise ConfigError(f"eval.extractor: {extractor.name} reads one digit of {DIGIT_CLASSES} a channel "
                          f"(depth {extractor.depth}) and gives {0 if logits is None else logits.shape[1]} class "
                          f"logits a sample, not {DIGIT_CLASSES * extractor.depth}")
    ref = Reference(x=x, feats=stored["feats"].to(device), logits=None if logits is None else logits.to(device),
                    means=None if mixture is None else mixture.means.to(device),
                    std=0.0 if mixture is None else mixture.std, cache=path, depth=extractor.depth)
    _MEMO[key, str(device)] = ref
    return ref


class Evaluator:
    """Computes the configured metric set from ``generate(n)`` samples (the EMA generator when on).

    ``provenance`` says how its values are measured (extractor and weights digest, generated and reference
    sample counts, the reference's split, resolution) with ``floor``, the metric set on ``n`` real training
    samples: the real-vs-real floor a value is read against; and, when a family scores samples alone (the
    Inception Score), ``reference_values``: its values on the reference samples themselves (the held-out digits:
    real data the classifier never trained on, at ``reference_n`` samples).
    """

    def __init__(self, cfg: TrialConfig, data: RealData, device: torch.device) -> None:
        with full_precision():  # the reference's features and statistics too (``full_precision``)
            self._build(cfg, data, device)

    def _build(self, cfg: TrialConfig, data: RealData, device: torch.device) -> None:
        self.device = device
        self.n = cfg.eval.n_samples
        self.n_quick = cfg.eval.quick_size()
        self.conditional = cfg.model.conditional
        names = metric_names(cfg)
        self.extractor: Extractor | None = None
        self.scorers: list[tuple[str, Scorer]] = []
        self.provenance: dict[str, Any] = {}
        if not names:
            return
        self.extractor = build_extractor(cfg, device)
        try:
            check_metric_names(names)
        except ValueError as err:
            raise ConfigError(f"eval.metrics: {err}") from None
        n_ref = reference_n(data, self.n)
        if n_ref < 2:  # a spread, a covariance or a distance of one sample is no number: read as a divergence
            raise ConfigError(one_real_sample(names))
        ref = load_reference(cfg, data, self.extractor, n_ref, device)
        try:
            self.scorers = [(name, FAMILIES.get(name)(ref)) for name in names]
        except ValueError as err:
            raise ConfigError(f"eval.metrics: {err}") from None
        self.provenance = {
            "extractor": self.extractor.name, "weights": self.extractor.weights, "n": self.n,
            "quick_n": self.n_quick, "reference_n": n_ref, "reference": data.reference_split,
            "resolution": None if data.is_points else cfg.data.resolution, "data": data_label(cfg.data),
            "floor": (floor := self._floor(data, ref))[0]}
        if floor[1] < self.n:  # fewer training samples than n_samples (digits' 1,437 under 2,500): said beside it
            self.provenance["floor_n"] = floor[1]
        own = {k: v for name, scorer in self.scorers if FAMILIES.get(name).one_sample for k, v in scorer(ref).items()}
        if own:
            self.provenance["reference_values"] = own

    def _floor(self, data: RealData, ref: Reference) -> tuple[dict[str, float], int]:
        """The metric set on ``n`` real training samples, or all of them where there are fewer, and how many it
        scored (once per search: cached beside the reference); none when the reference is the training images and
        fewer than ``n`` lie outside it (``RealData.twin``)."""
        twin = data.twin(self.n)
        if twin is None:  # the reference holds the training images a floor would score
            return {}, self.n
        if len(twin) < FLOOR_LEAST:  # digits' max_images 5: PRDC's k-NN radii crashed the run, KID read NaN
            return {}, len(twin)
        labels = data.twin_labels(self.n) if self.conditional else None  # the conditional metrics' real floor
        digest = hashlib.sha1(twin.contiguous().numpy().tobytes()).hexdigest()[:12]
        if labels is not None:  # the same pixels under other classes (a folder re-sorted) are another floor
            digest += hashlib.sha1(labels.contiguous().numpy().tobytes()).hexdigest()[:12]
        # the families' keys too: a family that gains a key must not read an old floor without it
        names = ",".join(f"{name}:{'/'.join(FAMILIES.get(name).keys)}" for name, _ in self.scorers)

        def real(n: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            return twin[:n] if labels is None else (twin[:n], labels[:n])

        def score() -> dict[str, torch.Tensor]:
            values = self._score(real, len(twin), self.scorers)
            return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}

        if ref.cache is None or not all(ours(FAMILIES.get(name).build) for name, _ in self.scorers):
            stored = score()  # a plugin's floor is not kept on disk (``ours``): an edited metric read its old one
        else:
            tag = hashlib.sha1(f"{digest}|{names}".encode()).hexdigest()[:12]
            stored = cached(ref.cache.with_name(f"{ref.cache.stem}-floor-{len(twin)}-{tag}.pt"), score)
        return {k: float(v) for k, v in stored.items()}, len(twin)

    def __call__(self, generate: Generate) -> dict[str, float]:
        """The full metric set on ``eval.n_samples`` samples."""
        return self._score(generate, self.n, self.scorers)

    def quick(self, generate: Generate) -> dict[str, float]:
        """Only the cheap collapse signals, on ``eval.quick_size()`` samples."""
        return self._score(generate, self.n_quick, [(n, s) for n, s in self.scorers if FAMILIES.get(n).cheap])

    def _score(self, generate: Generate, n: int, scorers: list[tuple[str, Scorer]]) -> dict[str, float]:
        if self.extractor is None or not scorers:
            return {}
        with full_precision():
            drawn = generate(n)
            x, labels = drawn if isinstance(drawn, tuple) else (drawn, None)
            x = x.to(self.device)  # families get samples where the reference is (Samples)
            if not torch.isfinite(x).all():
                return {"samples": float("nan")}
            feats, logits = self.extractor(x)
            fake = Samples(x=x, feats=feats, logits=logits,
                           labels=None if labels is None else labels.to(self.device))
            out: dict[str, float] = {}
            for name, scorer in scorers:
                values = scorer(fake)
                try:
                    out.update(FAMILIES.get(name).checked(name, values))
                except ValueError as err:
                    raise ConfigError(f"eval.metrics: {err}") from None
            return out


__all__ = ["FAMILIES", "CollapseSignal", "Evaluator", "Family", "Generate", "Reference", "Samples", "Scorer",
           "better", "check_metric_names", "collapse_signals", "default_metrics", "family", "load_reference",
           "metric_keys", "metric_names", "missing_weights", "quick_keys", "reference_n"]
