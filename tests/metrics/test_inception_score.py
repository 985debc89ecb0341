"""The Inception Score family ``is``: known posterior streams, the digits classifier's real and collapsed digits,
stacked digits' 1,000-class joint, torchmetrics' value, the catalogue's rules and a real trial reporting it."""

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gantune import metrics
from gantune.catalogue import config_from_dict, objective_side
from gantune.data import load_data, stack
from gantune.errors import ConfigError
from gantune.metrics import FAMILIES, Evaluator, Reference, Samples, missing_weights
from gantune.metrics.features import build_extractor
from gantune.metrics.inception_score import SPLITS, inception_score, log_posteriors
from gantune.sampling.space import load_space
from gantune.trial import train
from gantune.viz import as_uint8
from tests.conftest import tiny_images

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    metrics._MEMO.clear()


def one_hot_logits(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Log-posteriors that read each sample's class with certainty (log 0 = -inf elsewhere)."""
    out = torch.full((len(labels), k), -math.inf)
    out[torch.arange(len(labels)), labels] = 0.0
    return out


def test_known_posterior_streams() -> None:
    k, n = 10, 1000
    spread = one_hot_logits(torch.arange(n) % k, k)
    assert inception_score(spread, splits=1)[0] == pytest.approx(k)  # certain and even over K classes: K
    mean, std = inception_score(spread)  # 10 shuffled splits of 100: each split's classes a little uneven
    assert 0.9 * k < mean < k and 0 < std < 0.5
    assert inception_score(one_hot_logits(torch.full((n,), 3), k)) == (pytest.approx(1.0), pytest.approx(0.0))
    assert inception_score(torch.zeros(n, k))[0] == pytest.approx(1.0)  # posteriors that say nothing: 1
    assert inception_score(torch.randn(n, k) * 0.01)[0] < 1.001
    assert inception_score(spread[:5])[0] == pytest.approx(1.0)  # one sample a split: p(y) = p(y|x)


def test_splits_are_even_when_the_samples_do_not_divide_by_ten() -> None:
    """91 samples, each certain of its own class: a split of m scores m. ``chunk`` split them 9 x 10 + 1 x 1 (the
    last scoring 1: std 2.8); the splits are now one of 10 and nine of 9, and 12 samples make ten splits, not six."""
    mean, std = inception_score(one_hot_logits(torch.arange(91), 91))
    assert mean == pytest.approx(9.1) and std == pytest.approx(torch.tensor([10.0] + [9.0] * 9).std().item())
    assert inception_score(one_hot_logits(torch.arange(12), 12))[0] == pytest.approx(1.2)  # 2, 2 and eight 1s


def test_agrees_with_torchmetrics_inception_score() -> None:
    """torchmetrics' ``InceptionScore`` on the same logits (its ``feature`` a module that passes them through); one
    split, so that its own shuffle does not matter."""
    from torchmetrics.image.inception import InceptionScore

    logits = torch.randn(600, 10, generator=torch.Generator().manual_seed(0)) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = InceptionScore(feature=nn.Identity(), splits=1)
        theirs.update(logits)
        mean, _ = theirs.compute()
    assert inception_score(logits, splits=1)[0] == pytest.approx(float(mean), rel=1e-5)


def _digits_scorer(resolution: int = 8) -> tuple[Any, Any, Any]:
    cfg = config_from_dict({"data": {"name": "digits", "resolution": resolution}})
    data = load_data(cfg.data, CPU, 0)
    extractor = build_extractor(cfg, CPU)
    ref = data.reference(360)
    feats, logits = extractor(ref)
    return FAMILIES.get("is")(Reference(x=ref, feats=feats, logits=logits)), extractor, data


def test_real_held_out_digits_score_near_ten_and_one_digit_near_one() -> None:
    """The 360 held-out digits (never trained on) through the digits classifier: measured 8.76 at 8 px (8.25 at
    16 px), near the 10 of an even, certain reading; one held-out digit repeated: 1."""
    score, extractor, data = _digits_scorer()
    x = data.reference(360)
    feats, logits = extractor(x)
    out = score(Samples(x=x, feats=feats, logits=logits))
    assert 7 < out["is"] <= 10 and out["is_std"] < 1
    one = x[:1].expand(360, -1, -1, -1)
    f1, l1 = extractor(one)
    assert score(Samples(x=one, feats=f1, logits=l1))["is"] < 1.01
    idx = torch.arange(360) % 2  # two digits alternating: at most 2
    assert score(Samples(x=x[idx], feats=feats[idx], logits=logits[idx]))["is"] <= 2.0 + 1e-9


def test_stacked_joint_has_1000_classes_and_real_stacks_score_high() -> None:
    """Three channels' posteriors multiply into 1,000 triples: 1,000 samples, one of each triple read with
    certainty, score exactly 1,000 in one split. 26,000 stacks of held-out digits (the protocol's count; their
    logits are the pool digits' logits stacked, as in test_stacked) score about 760 in 10 splits of 2,600: a split
    of m samples scores at most m, and 2,600 draws over 1,000 triples leave some uneven."""
    triples = torch.arange(1000)
    digits = torch.stack([triples // 100, triples // 10 % 10, triples % 10], dim=1)
    logits = one_hot_logits(digits.flatten(), 10).reshape(1000, 30).clamp(min=-200)
    joint = log_posteriors(logits, 3)
    assert joint.shape == (1000, 1000) and torch.equal(joint.argmax(dim=1), triples)  # first channel first
    assert inception_score(logits, depth=3, splits=1)[0] == pytest.approx(1000, rel=1e-6)

    cfg = config_from_dict({"data": {"name": "stacked_digits", "resolution": 8}})
    data = load_data(cfg.data, CPU, 0)
    extractor = build_extractor(cfg, CPU)
    assert data.heldout is not None
    pool = data.heldout
    ref = data.reference(300)
    rf, rl = extractor(ref)
    score = FAMILIES.get("is")(Reference(x=ref, feats=rf, logits=rl, depth=extractor.depth))
    _, digit_logits = extractor(pool)
    assert digit_logits is not None
    draws = torch.randint(len(pool), (26_000, 3), generator=torch.Generator().manual_seed(1))
    x = stack(pool, draws)
    out = score(Samples(x=x, feats=torch.zeros(len(x), 1), logits=digit_logits[draws].flatten(1)))
    assert 600 < out["is"] < 1000
    one = draws[:1].expand(26_000, 3)  # one triple repeated: 1
    assert score(Samples(x=x, feats=torch.zeros(len(x), 1), logits=digit_logits[one].flatten(1)))["is"] < 1.01


def test_names_rules_and_refusals(tmp_path: Path) -> None:
    assert FAMILIES.get("is").keys == ("is", "is_std") and FAMILIES.get("is").higher == ("is",)
    img = tmp_path / "img"
    img.mkdir()
    raw: dict[str, Any] = {"data": {"name": "folder", "path": str(img)},
                           "eval": {"metrics": ["is"], "inception_weights": str(tmp_path / "nope.pth")}}
    cfg = config_from_dict(raw, "x.yaml")  # a config read to sample its generator needs no weights
    # one that is about to train does (nothing downloads): `gantune train` and a search's load refuse it
    # (tests/e2e/test_bad_input.py), and so does the trial's evaluator (test_metrics)
    assert re.match(r"eval.inception_weights: Inception-v3 weights not found at .*nope\.pth.*\(eval.metrics: is read",
                    missing_weights(cfg) or "")
    assert missing_weights(config_from_dict({**raw, "eval": {"metrics": [], "inception_weights": "nope.pth"}})) is None
    assert missing_weights(config_from_dict({"data": {"name": "digits"}, "eval": {"metrics": ["is"]}})) is None
    # a run about to start follows IS upwards (`gantune train` refuses it: tests/e2e/test_bad_input.py); a config
    # read to sample its generator is not judged on it (a run from before still loads)
    minimised = config_from_dict({"data": {"name": "digits"}, "eval": {"metrics": ["is"]},
                                  "health": {"objective": "is"}})
    assert (objective_side(minimised) or "").startswith("health.mode: the objective 'is' is better higher: maximise")
    assert objective_side(config_from_dict({"data": {"name": "digits"}, "eval": {"metrics": ["is"]},
                                            "health": {"objective": "is", "mode": "max"}})) is None
    points = {"data": {"name": "grid25"}, "eval": {"metrics": ["is"]}}
    with pytest.raises(ConfigError, match="the is metric needs class posteriors, which the coords extractor"):
        config_from_dict(points)  # at load: it was found once the reference was built, after the load's warnings
    from gantune.config import parse_config

    cfg = parse_config(points)  # the schema alone lets it through: the evaluator still refuses it
    with pytest.raises(ConfigError, match="the is metric needs class posteriors"):
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
    x = torch.zeros(8, 3, 8, 8)  # Inception's 1,008 logits: an Inception Score, not the digits' class coverage
    ref = Reference(x=x, feats=torch.zeros(8, 4), logits=torch.zeros(8, 1008))
    FAMILIES.get("is")(ref)
    with pytest.raises(ValueError, match="Inception's 1,008 ImageNet classes are not them"):
        FAMILIES.get("classes")(ref)


def _random_inception_weights(path: Path) -> None:
    """torch-fidelity's Inception-v3 with random weights, saved to ``path`` (nothing downloads): its constructor
    builds every layer and then loads the weights file it is given; given an empty one, only that last step fails."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as err:  # absent, or its torchvision does not load against this torch
        pytest.skip(f"torch-fidelity is not usable here ({type(err).__name__}: {err}); the Inception path of the "
                    "is metric is then untested")
    empty = path.with_name("empty.pth")
    torch.save({}, empty)
    net = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    with pytest.raises(RuntimeError, match="Missing key"):
        net.__init__("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))  # type: ignore[misc]
    # random layers shrink their input ~6-fold each: 40 of them leave nothing. Calibrate the batch norms on a batch
    # (their running statistics become its statistics) so that activations keep their scale, and spread the logits.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    state = net.state_dict()
    state["fc.weight"] = state["fc.weight"] * 5
    torch.save(state, path)


def test_inception_logits_give_torchmetrics_inception_score(tmp_path: Path) -> None:
    """On images the ``inception`` extractor's logits (one pass with FID's features) are the ``logits_unbiased``
    torchmetrics' ``InceptionScore`` reads by default: the same score (one split: its shuffle does not matter).
    Random weights (the last layer's scaled up so that the posteriors differ between images): a check of the
    plumbing, not of a real value."""
    from torchmetrics.image.inception import InceptionScore

    weights = tmp_path / "inception.pth"
    _random_inception_weights(weights)
    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8},
                            "eval": {"extractor": "inception", "inception_weights": str(weights), "metrics": ["is"]}})
    extractor = build_extractor(cfg, CPU)
    assert extractor.classes == 1008
    digits = load_data(cfg.data, CPU, 0).reference(3)
    x = torch.cat([digits, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1])
    feats, logits = extractor(x)
    assert feats.shape == (6, 2048) and logits is not None and logits.shape == (6, 1008)
    from torchmetrics.image.fid import NoTrainInceptionV3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["logits_unbiased"],
                                 feature_extractor_weights_path=str(weights))
        theirs = InceptionScore(feature=net, splits=1)
        theirs.update(as_uint8(x.expand(-1, 3, -1, -1)))
        mean, _ = theirs.compute()
    assert inception_score(logits, splits=1)[0] == pytest.approx(float(mean), rel=1e-4)
    ref = Reference(x=x, feats=feats, logits=logits)
    out = FAMILIES.get("is")(ref)(Samples(x=x, feats=feats, logits=logits))
    assert 1 <= out["is"] <= 6
    with pytest.raises(ValueError, match="Inception's 1,008 ImageNet classes are not them"):
        FAMILIES.get("classes")(ref)


def test_a_real_trial_reports_is_with_the_held_out_value(tmp_path: Path) -> None:
    records: list[dict[str, float]] = []
    measured: list[dict[str, Any]] = []
    cfg = tiny_images(eval={"metrics": ["is"], "n_samples": 200}, health={"objective": "is", "mode": "max"})
    result = train(cfg, report=records.append, run_dir=tmp_path, on_provenance=measured.append)
    assert result.status == "completed"
    evals = [r for r in records if "is" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert all(1 <= r["is"] <= 10 and r["is_std"] >= 0 for r in evals)
    (p,) = measured
    # 200 held-out and 200 training digits, 20 a split (measured 8.04 and 7.88): a split of 20 reads p(y) roughly
    assert set(p["reference_values"]) == {"is", "is_std"} and 6.5 < p["reference_values"]["is"] <= 10
    assert 6.5 < p["floor"]["is"] <= 10
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["provenance"]["reference_values"] == p["reference_values"]
    assert SPLITS == 10


def test_a_search_space_maximises_is(tmp_path: Path) -> None:
    """A space selects the family with ``eval.metrics: [is]`` and names ``is`` as its objective; minimising it is
    refused at load (it would search for a collapse); maximised, its trial configs run with ``health.mode: max``."""
    import optuna

    text = """
search: {{trials: 2, max_steps: 20, eval_every: 10, objective: is, direction: {d}}}
data: {{name: digits, resolution: 8}}
optim: {{lr_g: {{float: [1.0e-4, 1.0e-3], log: true}}}}
eval: {{metrics: [is], n_samples: 100}}
"""
    p = tmp_path / "s.yaml"
    p.write_text(text.format(d="minimize"))
    with pytest.raises(ConfigError, match=r"s.yaml: search.direction: 'is' is better higher: minimize would search "
                       r"for the worst \(direction: maximize"):
        load_space(p)
    p.write_text(text.format(d="maximize"))
    space = load_space(p)
    cfg = config_from_dict(space.sample(optuna.create_study().ask()))
    assert cfg.health.objective == "is" and cfg.health.mode == "max" and cfg.eval.metrics == ["is"]


def test_inception_reference_features_cached_from_floored_pixels_are_not_reused() -> None:
    """Found by a review: Inception's input became rounded pixels (they were floored), but the cache key of the
    reference features did not say how pixels are made, so features cached before met rounded fakes."""
    import hashlib

    from gantune.metrics import _reference_key
    from gantune.metrics.features import Extractor

    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}})
    x = torch.zeros(4, 1, 8, 8)
    net = Extractor("inception", 2048, lambda s: (s, None), weights="abc", classes=1008)
    content = hashlib.sha1(x.numpy().tobytes()).hexdigest()  # the key as it was made before
    before = {"x": content, "shape": [4, 1, 8, 8], "extractor": "inception", "weights": "abc", "classes": 1008}
    old = f"reference-digits-inception-4-{hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]}"
    assert _reference_key(cfg, net, x) != old
