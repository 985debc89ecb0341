"""Feature extractors by name: what FID, KID, diversity and PRDC are measured on.

``coords`` for 2-D points (the samples themselves), ``digits`` for the digits dataset (a classifier trained in
this repo), ``stacked_digits`` for stacked digits (the same classifier on each channel), ``inception`` for real
images (torch-fidelity's Inception-v3, from a weights file on disk only). The classifiers' class logits come with
the features: the digits' 10, each channel's 10, Inception's 1,008 (what the Inception Score reads).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from gantune.config import TrialConfig
from gantune.data import channels_of, is_points
from gantune.devices import extraction_chunk
from gantune.errors import ConfigError
from gantune.registry import Registry
from gantune.viz import as_uint8

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: peak activation memory of one image through Inception-v3 at 299 px without gradients, with allocator slack
#: (its largest layers hold 64x147x147 floats, about 5.5 MB, and two are alive at once)
INCEPTION_BYTES = 16 * 2**20
#: Inception-v3's classes (ImageNet's 1,000 and 8 unused ones, as the TensorFlow graph has them)
INCEPTION_CLASSES = 1008


@dataclass
class Extractor:
    """``fn(samples) -> (features, class logits or None)``; ``dim`` is the feature size; samples go through in
    chunks of ``batch`` (sized to the trial's GPU memory share for the large extractors). ``weights`` is the
    digest of the weights file (``none`` without one): values measured with other weights are other numbers.
    ``classes``: how many class logits ``fn`` gives a sample (0: none); ``depth``: how many classifications they
    hold side by side (stacked digits': one digit of 10 a channel), which the logits' count alone cannot say (a
    30-class classifier of RGB images was read as three digits)."""

    name: str
    dim: int
    fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    batch: int = 500
    weights: str = "none"
    classes: int = 0
    depth: int = 1

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats, logits = [], []
        for chunk in x.split(self.batch):
            f, lg = self.fn(chunk.float())  # half-precision samples: the nets' weights are float32
            feats.append(f.float())
            if lg is not None:
                logits.append(lg.float())
        return torch.cat(feats), (torch.cat(logits) if logits else None)


EXTRACTORS: Registry[Callable[[TrialConfig, torch.device], Extractor]] = Registry("feature extractor")
#: gantune's extractors that give no class logits at all (a family that reads them is refused at load with one)
NO_LOGITS = ("coords",)
#: gantune's extractors of 2-D points (the others read images): one on the other kind of data failed every trial
POINTS_EXTRACTORS = ("coords",)


@EXTRACTORS.register("coords")
def _coords(cfg: TrialConfig, device: torch.device) -> Extractor:
    return Extractor("coords", 2, lambda x: (x, None))


def weights_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (read once per file version)."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@EXTRACTORS.register("digits")
def _digits(cfg: TrialConfig, device: torch.device) -> Extractor:
    from gantune.metrics.digits_net import CLASSES as DIGITS
    from gantune.metrics.digits_net import FEATURES, load_digits_net, weights_path

    net = load_digits_net(device)
    return Extractor("digits", FEATURES, lambda x: net(x.to(device)), weights=weights_digest(weights_path()),
                     classes=DIGITS)


@EXTRACTORS.register("stacked_digits")
def _stacked_digits(cfg: TrialConfig, device: torch.device) -> Extractor:
    """The digits classifier on each channel as a one-channel digit: features ``(n, C * 64)`` and logits
    ``(n, C * 10)``, channel by channel. Stacked digits are three independent digits, so their features are the
    three digits' features side by side: FID on them compares the joint distribution of the three digits' features
    (their dependence included), in the space the classifier reads digits in. Inception, made for photographs,
    would read three overlaid 16-px digits as one colour image; the digits net averaging the channels would see
    one blurred digit."""
    from gantune.metrics.digits_net import CLASSES as DIGITS
    from gantune.metrics.digits_net import FEATURES, load_digits_net, weights_path

    net = load_digits_net(device)

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c = x.shape[:2]
        feats, logits = net(x.to(device).reshape(n * c, 1, *x.shape[2:]))
        return feats.reshape(n, -1), logits.reshape(n, -1)

    channels = channels_of(cfg.data)
    return Extractor("stacked_digits", FEATURES * channels, fn, weights=weights_digest(weights_path()),
                     classes=DIGITS * channels, depth=channels)


def inception_weights(cfg: TrialConfig) -> Path:
    """Where the Inception-v3 weights are looked for: config, then $GANTUNE_INCEPTION_WEIGHTS, then the cache."""
    given = cfg.eval.inception_weights or os.environ.get("GANTUNE_INCEPTION_WEIGHTS")
    return Path(given) if given else Path.home() / ".cache" / "gantune" / INCEPTION_FILE


def missing_inception(cfg: TrialConfig) -> str | None:
    """The one line that says the Inception-v3 weights are not on disk (nothing is ever downloaded), else None."""
    path = inception_weights(cfg)
    if not path.is_file():
        return (f"eval.inception_weights: Inception-v3 weights not found at {path}; download {INCEPTION_FILE} from "
                "the torch-fidelity releases page (github.com/toshas/torch-fidelity/releases) and set "
                "eval.inception_weights or $GANTUNE_INCEPTION_WEIGHTS to it")
    if importlib.util.find_spec("torch_fidelity") is None:  # torchmetrics' Inception-v3 is torch-fidelity's net:
        # without it every evaluation failed on a ModuleNotFoundError torchmetrics raises only when it builds one
        return "eval.metrics: Inception-v3 needs the torch-fidelity package: pip install 'gantune[inception]'"
    return None


@EXTRACTORS.register("inception")
def _inception(cfg: TrialConfig, device: torch.device) -> Extractor:
    """The 2,048 pool features (FID's), and the class logits torchmetrics' ``InceptionScore`` reads by default
    (``logits_unbiased``: the pool features times the last layer's weights, without its bias): one pass gives both."""
    missing = missing_inception(cfg)
    if missing:
        raise ConfigError(missing)
    path = inception_weights(cfg)
    from torchmetrics.image.fid import NoTrainInceptionV3
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                             feature_extractor_weights_path=str(path)).to(device).eval()
    head = net.fc.weight.detach().T  # (2048, 1008): torchmetrics' and torch-fidelity's logits_unbiased

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        feats = net(as_uint8(x))
        return feats, feats @ head

    return Extractor("inception", 2048, fn, batch=extraction_chunk(device, INCEPTION_BYTES),
                     weights=weights_digest(path), classes=INCEPTION_CLASSES)


#: the extractor ``eval.extractor: auto`` picks for a dataset's images (others: ``inception``)
DATA_EXTRACTORS = {"digits": "digits", "stacked_digits": "stacked_digits"}


def default_extractor(cfg: TrialConfig) -> str:
    if cfg.eval.extractor != "auto":
        return cfg.eval.extractor
    if is_points(cfg.data):
        return "coords"
    return DATA_EXTRACTORS.get(cfg.data.name, "inception")


def built_in_extractor(cfg: TrialConfig) -> str | None:
    """The config's extractor when it is one of gantune's (what it gives is known before it is built), else
    ``None`` (a plugin's)."""
    name = default_extractor(cfg)
    return None if name in EXTRACTORS.outside() else name


def extractor_problem(cfg: TrialConfig) -> str | None:
    """Why the config's extractor cannot read its data (a built-in one of 2-D points on images, or the other way
    round: a traceback as the reference was built), else ``None``."""
    name = built_in_extractor(cfg)
    points = is_points(cfg.data)
    if name is None or (name in POINTS_EXTRACTORS) == points:
        return None
    kind = {True: "2-D points", False: "images"}
    fits = [n for n in EXTRACTORS.names() if n not in EXTRACTORS.outside() and (n in POINTS_EXTRACTORS) == points]
    return (f"eval.extractor: {name} reads {kind[not points]}, and this data is {kind[points]} (use auto, or "
            f"{' or '.join(fits)})")


def build_extractor(cfg: TrialConfig, device: torch.device) -> Extractor:
    return EXTRACTORS.get(default_extractor(cfg))(cfg, device)
