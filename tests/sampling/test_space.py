import re
from pathlib import Path

import optuna
import pytest

from gantune.catalogue import config_from_dict
from gantune.errors import ConfigError
from gantune.sampling.settings import Resources
from gantune.sampling.space import load_space

SPACE = """
name: t
search:
  trials: 3
  max_steps: 40
  eval_every: 20
  params:
    ttur_ratio: {float: [1, 8], log: true}
data: {name: grid25}
loss:
  name: {categorical: [nonsaturating, wgan-gp, wgan, hinge]}
  gp_weight: {float: [0.1, 10], log: true, when: "loss.name == 'wgan-gp'"}
  clip: {value: 0.05, when: "loss.name == 'wgan'"}
optim:
  lr_d: {expr: "optim.lr_g * ttur_ratio"}
  lr_g: {float: [1.0e-4, 1.0e-2], log: true}
  n_critic: {int: [1, 5], when: "loss.name in ['wgan', 'wgan-gp']"}
model: {g_width: 16}
"""


def _space(tmp_path: Path, text: str = SPACE, name: str = "s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return load_space(p)


def test_conditionals_and_derived_values(tmp_path: Path) -> None:
    space = _space(tmp_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        raw = space.sample(trial)
        cfg = config_from_dict(raw)  # every sample is a valid trial config
        loss = cfg.loss.name
        seen.add(loss)
        assert ("loss.gp_weight" in trial.params) == (loss == "wgan-gp")
        assert ("optim.n_critic" in trial.params) == (loss in ("wgan", "wgan-gp"))
        assert ("clip" in raw["loss"]) == (loss == "wgan")
        assert cfg.optim.lr_d == pytest.approx(cfg.optim.lr_g * trial.params["ttur_ratio"])
        assert cfg.train.steps == 40 and cfg.eval.every == 20 and cfg.health.objective == "fid"
        assert cfg.model.g_width == 16
        study.tell(trial, 0.0)
    assert seen == {"nonsaturating", "wgan-gp", "wgan", "hinge"}


@pytest.mark.parametrize(("edit", "needle"), [
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_gg: {float: [1.0e-4, 1.0e-2]}"),
     "optim.lr_gg: unknown key"),
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_g: {float: [1.0e-2, 1.0e-4]}"),
     "optim.lr_g: float range [0.01, 0.0001] needs low < high"),
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_g: {float: [0, 1], log: true}"),
     "optim.lr_g: a log range needs low > 0"),
    # a misspelt kind was "Input should be a valid number"; true as a bound was read as 1
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_g: {flaot: [1.0e-4, 1.0e-2], log: true}"),
     "optim.lr_g: a range needs exactly one of float, int, categorical, expr, value; got flaot, log (did you mean "
     "float?)"),
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_gg: {flaot: [1, 2]}"), "optim.lr_gg: unknown key"),
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_g: {float: [false, 1.0e-2]}"),
     "optim.lr_g.float: a range's bounds must be numbers, not true or false"),
    (("model: {g_width: 16}", "model: {g_width: {int: [true, 16]}}"), "a range's bounds must be numbers"),
    # pydantic's lax mode read a quoted number as the number; a sampled '32' reached expressions as text
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_g: {float: ['1e-4', 1.0e-2]}"),
     "optim.lr_g.float: a range's bounds must be numbers, not the text '1e-4' (drop the quotes)"),
    (("model: {g_width: 16}", "model: {g_width: {categorical: ['32', 64]}}"),
     "model.g_width: must be a number, not the text '32' (drop the quotes)"),
    (("model: {g_width: 16}", "model: {g_width: '16'}"), "model.g_width: must be a number, not the text '16'"),
    (("trials: 3", "trials: '3'"), "search.trials: must be a number, not the text '3' (drop the quotes)"),
    (("nonsaturating, wgan-gp", "nonsaturating, wgan-gpp"), "loss.name: unknown loss 'wgan-gpp'; choose one of"),
    (("optim.lr_g * ttur_ratio", "optim.lr_g * ttur"), "optim.lr_d.expr: unknown name 'ttur'"),
    (("when: \"loss.name == 'wgan-gp'\"", "when: \"loss.name = 'wgan-gp'\""), "loss.gp_weight.when: cannot parse"),
    (("trials: 3", "trials: -1"), "search.trials: Input should be greater than or equal to 1"),
    (("trials: 3", "trails: 3"), "search.trails: unknown key"),
    # Optuna records true as 1 (the index of the first equal choice): the trial trained true, its params said 1
    (("model: {g_width: 16}", "model: {g_width: 16, conditional: {categorical: [1, true]}}"),
     "categorical choices 1 and True are equal to Optuna, which records either as the first (1): keep one"),
    (("ttur_ratio: {float: [1, 8], log: true}", "on: {float: [1, 8], log: true}"),
     "search.params: a parameter name must be a plain identifier, not True (YAML reads on, off, yes and no as true"),
    # Python folds the micro sign of an expression into Greek mu (NFKC): "unknown name 'μ'" of the name declared
    (("ttur_ratio: {float: [1, 8], log: true}", "\u00b5: {float: [1, 8], log: true}"),
     "search.params.\u00b5: an expression reads this name as '\u03bc' (Python folds such letters, NFKC): name the "
     "parameter \u03bc"),
    # numpy's two-line RuntimeWarning, then "none of 32 random draws ... Range exceeds valid bounds"
    (("ttur_ratio: {float: [1, 8], log: true}", "ttur_ratio: {float: [-1.0e+308, 1.0e+308]}"),
     "search.params.ttur_ratio: float range [-1e+308, 1e+308] is wider than a float can hold"),
    (("data: {name: grid25}", "dta: {name: grid25}"), "dta: unknown section"),
    (("eval_every: 20", "eval_every: 200"), "eval_every must not exceed max_steps"),
    (("model: {g_width: 16}", "model: {g_width: {int: [0, 4]}}"), "model.g_width: Input should be greater"),
    (("trials: 3", "trials: 3\n  pruning: {scheduler: pbt, noise_aware: true}"),
     "search.pruning: noise_aware needs scheduler: asha with asha: true"),
    (("trials: 3", "trials: 3\n  pruning: {asha: false, noise_aware: true}"),
     "search.pruning: noise_aware needs scheduler: asha with asha: true"),
    (("trials: 3", "trials: 3\n  pruning: {noise_aware: true, noise_margin: 0}"),
     "search.pruning.noise_margin: Input should be greater than 0"),
    # a float quotient of the bounds overflowed (OverflowError, a traceback, exit 1)
    (("model: {g_width: 16}", "model: {g_width: 16}\ntrain: {grad_clip: {float: [0, 10], step: 1.0e-310}}"),
     "grad_clip: range [0, 10] holds more than 2**53 steps of 1e-310"),
    (("model: {g_width: 16}", f"model: {{g_width: {{int: [8, {10**309}]}}}}"),
     "model.g_width: range [8, a 1027-bit integer] holds more than 2**53 steps of 1"),
    # each was read, then overwritten or ignored without a word
    (("trials: 3", "trials: 3\n  pruning: {noise_aware: true}\n  defaults: {eval.repeat: false}"),
     "search.defaults.eval.repeat: search.pruning.noise_aware sets it in every trial"),
    (("trials: 3", "trials: 3\n  pruning: {scheduler: pbt, pbt: {mutate: [optim.lr_g, optim.lr_g]}}"),
     "search.pruning.pbt.mutate: 'optim.lr_g' is listed twice"),
    # TPE built with it, then failed every trial past its random start
    (("trials: 3", "trials: 3\n  sampler_options: {n_ei_candidates: 0}"),
     "n_ei_candidates: 0 is below 1, which TPESampler needs when it samples"),
    # pydantic named only the bool
    (("trials: 3", "trials: 3\n  warm_start: points"),
     "search.warm_start: must be true or false, or a list of recipe names (points, "),
    # the leaf was not named: "ValueError: invalid literal for int() with base 10: 'hinge'"
    (("n_critic: {int: [1, 5], when: \"loss.name in ['wgan', 'wgan-gp']\"}", "n_critic: {expr: \"int(loss.name)\"}"),
     "the first: ValueError: optim.n_critic.expr: invalid literal for int() with base 10:"),
    (("n_critic: {int: [1, 5]", "n_critic: {int: [1, 1000]"),
     "optim.n_critic: Input should be less than or equal to 100"),
    # a dotted key inside a section: KeyError, a traceback; a dotted subsection key replaced the nested one silently
    (("optim:\n", "optim:\n  optim.beta1: 0.5\n"), "optim.optim.beta1: unknown key"),
    (("optim:\n", "optim:\n  0.5: 1\n"), "optim.0.5: unknown key"),
    (("model: {g_width: 16}", "model: {g_width: 16, progressive: {start: 8}, progressive.start: 16}"),
     "model.progressive.start: unknown key (a key inside a section is one name, a subsection a mapping"),
    # the same norm drawn twice as often as the others, and modelled as two
    (("model: {g_width: 16}", "model: {g_width: 16, d_norm: {categorical: [spectral, spectral+none, layer]}}"),
     "model.d_norm: categorical choices 'spectral' and 'spectral+none' are the same d_norm ('spectral') once read"),
    (("model: {g_width: 16}", "model: {g_width: 16, d_norm: {categorical: [spectral+layer, layer+spectral, none]}}"),
     "model.d_norm: categorical choices 'spectral+layer' and 'layer+spectral' are the same d_norm ('spectral+layer')"),
    # "...categorical.1.str: Input should be a finite number, not inf (and 3 more problems ...)"
    (("model: {g_width: 16}", "model: {g_width: 16}\nhealth: {max_diversity: {categorical: [1.5, .inf]}}"),
     "health.max_diversity.categorical: a choice must be a finite number, not inf; where .inf switches a check "
     "off, a number far beyond its range does the same (1.0e+9)"),
    # "...categorical.0.str: Input should be a valid string (and 11 more problems ...)"
    (("data: {name: grid25}", "data: {name: grid25, augment: {categorical: [[], [translation]]}}"),
     "data.augment.categorical: a choice must be a single value (text, a number, true/false or null), not []"),
])
def test_bad_spaces_name_the_key(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    text = SPACE.replace(*edit)
    assert text != SPACE
    with pytest.raises(ConfigError) as exc:
        _space(tmp_path, text)
    msg = str(exc.value)
    assert msg.startswith(str(tmp_path / "s.yaml")) and needle in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("search", ["false", "[]", "0", "''"])
def test_a_search_section_that_is_not_a_mapping_is_refused(tmp_path: Path, search: str) -> None:
    """``search: false`` (or ``[]``, ``0``) ran a search at every default, which is not what it says; a bare
    ``search:`` still means the defaults."""
    with pytest.raises(ConfigError, match=r"s\.yaml: search: expected a mapping of settings"):
        _space(tmp_path, f"search: {search}\ndata: {{name: grid25}}\n")
    assert _space(tmp_path, "search:\ndata: {name: grid25}\n").settings.trials == 16


def test_a_space_under_noise_aware_promotion_may_not_set_eval_repeat(tmp_path: Path) -> None:
    """Noise-aware promotion sets ``eval.repeat`` in every trial: the space's own value was overwritten without a
    word (and a sampled one recorded as drawn while the trial ran the other)."""
    noisy = SPACE.replace("trials: 3", "trials: 3\n  pruning: {noise_aware: true}")
    for repeat in ("false", "{categorical: [true, false]}"):
        with pytest.raises(ConfigError, match=r"s\.yaml: eval\.repeat: search\.pruning\.noise_aware sets it in every"):
            _space(tmp_path, noisy + f"eval: {{repeat: {repeat}}}\n")
    assert _space(tmp_path, SPACE + "eval: {repeat: true}\n").leaves["eval.repeat"]  # without it: the space's


def test_the_objective_check_reads_train_steps_as_the_search_sets_it(tmp_path: Path) -> None:
    """A metric set chosen by ``train.steps`` was checked against the schema's 2,000 steps, not ``max_steps``: one
    that never reports the objective loaded (every trial ran for nothing), one that always does was refused."""
    text = ("search: {trials: 2, max_steps: 100, eval_every: 50, objective: coverage}\ndata: {name: ring8}\n"
            "eval: {metrics: {value: [fid], when: \"train.steps %s 1000\"}}\n")
    with pytest.raises(ConfigError, match="'coverage' is not reported by this space's evaluations"):
        _space(tmp_path, text % "<")
    assert _space(tmp_path, text % ">").settings.objectives == ["coverage"]


def test_ready_spaces_are_valid() -> None:
    """The shipped spaces and the benchmarks' own (each sampled five times into a valid trial config)."""
    root = Path(__file__).resolve().parents[2]
    paths = sorted(root.glob("search_spaces/*.yaml")) + sorted(root.glob("benchmarks/spaces/*.yaml"))
    names = {p.name for p in paths}
    assert {"toy.yaml", "grid25.yaml", "ring8.yaml", "wgan.yaml", "dcgan.yaml", "hinge.yaml", "digits_wide.yaml",
            "grid25_wide.yaml"} <= names
    for p in paths:
        space = load_space(p)
        study = optuna.create_study(directions=space.settings.directions)
        for _ in range(5):
            config_from_dict(space.sample(study.ask()), str(p))
        assert p.read_text().startswith("#"), f"{p.name} needs its comment block"


def test_name_from_file_or_flag(tmp_path: Path) -> None:
    assert _space(tmp_path).name == "t"
    assert load_space(tmp_path / "s.yaml", name="other").name == "other"
    assert _space(tmp_path, SPACE.replace("name: t\n", ""), "stem.yaml").name == "stem"


def test_a_noise_aware_search_repeats_every_evaluation(tmp_path: Path) -> None:
    """pruning.noise_aware reads each evaluation's noise from its repeat: every trial config has eval.repeat."""
    plain = _space(tmp_path)
    aware = _space(tmp_path, SPACE.replace("trials: 3", "trials: 3\n  pruning: {noise_aware: true}"), "n.yaml")
    study = optuna.create_study()
    for space, repeat in ((plain, False), (aware, True)):
        for _ in range(3):
            assert config_from_dict(space.sample(study.ask())).eval.repeat is repeat


DEFAULTS_SPACE = """
name: d
search:
  trials: 2
  max_steps: 40
  eval_every: 20
  defaults: {{optim.ema: 0.99, optim.decay: linear, loss.r1_weight: 0.5}}
data: {{name: grid25}}
optim:
  lr_g: {{float: [1.0e-4, 1.0e-2], log: true}}
  {ema}
"""


def test_search_defaults_fill_only_the_keys_the_space_leaves_unset(tmp_path: Path) -> None:
    """``search.defaults`` sets what the space does not mention; the space's own value wins; a recipe's override
    (``gantune.sampling.warm``) wins over the search's default: a recipe is tried whole."""
    trial = optuna.create_study().ask()
    raw = _space(tmp_path, DEFAULTS_SPACE.format(ema="")).sample(trial)
    cfg = config_from_dict(raw)
    assert (cfg.optim.ema, cfg.optim.decay, cfg.loss.r1_weight) == (0.99, "linear", 0.5)
    raw = _space(tmp_path, DEFAULTS_SPACE.format(ema="ema: 0.5")).sample(optuna.create_study().ask(),
                                                                          {"loss.r1_weight": 0.1, "optim.ema": 0.9})
    cfg = config_from_dict(raw)
    assert (cfg.optim.ema, cfg.optim.decay, cfg.loss.r1_weight) == (0.5, "linear", 0.1)


def test_the_summary_names_the_search_defaults_a_switched_off_leaf_takes(tmp_path: Path) -> None:
    """A leaf whose ``when`` is off in a trial takes ``search.defaults``' value: the summary lists it beside the
    keys the space leaves unset; a leaf the space always sets does not take it."""
    gated = _space(tmp_path, DEFAULTS_SPACE.format(ema="ema: {float: [0.9, 0.99], when: \"optim.lr_g > 1.0e-3\"}"))
    assert gated.search_defaults() == {"optim.decay": "linear", "loss.r1_weight": 0.5}  # what sample() adds
    assert gated.search_defaults(switched=True) == {"optim.ema": 0.99, "optim.decay": "linear",
                                                    "loss.r1_weight": 0.5}
    fixed = _space(tmp_path, DEFAULTS_SPACE.format(ema="ema: 0.5"))
    assert fixed.search_defaults(switched=True) == {"optim.decay": "linear", "loss.r1_weight": 0.5}


def test_a_relative_path_in_search_defaults_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Ray trial runs in a folder of its own: ``search.defaults: {data.path: imgs}`` passed the load-time data
    check (it ran here) and then named nothing in every trial, as a relative path in the space would have."""
    import numpy as np
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(2):  # one image is no data to measure against
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(DEFAULTS_SPACE.format(ema="").replace("optim.ema: 0.99,", "data.path: imgs,")
                                     .replace("data: {name: grid25}", "data: {name: {categorical: [folder, grid25]}, "
                                              "resolution: 8}\nmodel: {arch: dcgan}"))
    space = load_space(tmp_path / "s.yaml", weights=False)  # the folder's FID needs Inception weights, not here
    assert space.settings.defaults["data.path"] == str(tmp_path / "imgs")
    trial = optuna.trial.FixedTrial({"data.name": "folder", "optim.lr_g": 1e-3})
    assert space.sample(trial)["data"]["path"] == str(tmp_path / "imgs")


def test_relative_inception_weights_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like ``data.path``: a trial looked for ``eval.inception_weights: w.pth`` (or ``$GANTUNE_INCEPTION_WEIGHTS``,
    or a path an ``expr`` gives, ``data.path``'s too) in the folder Ray runs it in, not where the search started."""
    from gantune import env
    from gantune.catalogue import config_from_dict as cfg_of
    from gantune.metrics.features import inception_weights

    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path, SPACE + "eval: {inception_weights: {categorical: [w.pth, ~/w2.pth]}}\n")
    assert space.leaves["eval.inception_weights"].choices == [str(tmp_path / "w.pth"), str(Path.home() / "w2.pth")]
    drawn = _space(tmp_path, SPACE + "eval: {inception_weights: {expr: \"'w' + loss.name + '.pth'\"}}\n")
    trial = optuna.trial.FixedTrial({"loss.name": "hinge", "optim.lr_g": 1e-3, "ttur_ratio": 2.0})
    assert drawn.sample(trial)["eval"]["inception_weights"] == str(tmp_path / "whinge.pth")  # as it is drawn
    monkeypatch.setenv("GANTUNE_INCEPTION_WEIGHTS", "sub/w.pth")
    env.configure()
    assert inception_weights(cfg_of({})) == tmp_path / "sub" / "w.pth"


@pytest.mark.parametrize("conditional", ['{value: true, when: "optim.lr_g > 0"}', "{categorical: [true]}"])
def test_an_objective_every_trial_of_a_sampled_key_reports_is_accepted(tmp_path: Path, conditional: str) -> None:
    """Whether a digits run reports ``cond_accuracy`` turns on ``model.conditional``: sampled, or behind a
    ``when`` (whose off trials take ``search.defaults``' value), it was read as the schema's ``false`` and
    refused, although every trial here is conditional (``[false, true]`` stays refused: test_conditional.py)."""
    text = (DEFAULTS_SPACE.format(ema="").replace("optim.ema: 0.99,", "model.conditional: true,")
            .replace("max_steps: 40", "max_steps: 40\n  objective: cond_accuracy")
            .replace("data: {name: grid25}", f"data: {{name: digits}}\nmodel: {{conditional: {conditional}}}"))
    assert _space(tmp_path, text).settings.objectives == ["cond_accuracy"]
    with pytest.raises(ConfigError, match="'cond_accuracy' is not reported"):  # fixed off: refused, as before
        _space(tmp_path, text.replace(conditional, "false"))


def test_an_objective_is_checked_against_every_data_and_eval_a_space_samples(tmp_path: Path) -> None:
    """Sampling any ``data`` or ``eval`` key switched the objective check off: ``objective: fdi`` with a sampled
    ``eval.quick_samples`` ran the whole budget, every trial failed and the search exited 0; so did an objective
    that one of two sampled datasets does not report."""
    base = SPACE.replace("ttur_ratio: {float: [1, 8], log: true}", "ttur_ratio: {float: [1, 8], log: true}\n"
                         "  objective: fdi\n  direction: minimize")
    typo = base.replace("model: {g_width: 16}", "model: {g_width: 16}\neval: {quick_samples: {int: [100, 200]}}")
    with pytest.raises(ConfigError, match=r"search.objective: 'fdi' is not reported by this space's evaluations "
                                          r"\(available: fid, modes"):
        _space(tmp_path, typo)
    mixed = base.replace("objective: fdi", "objective: classes").replace(
        "data: {name: grid25}", "data: {name: {categorical: [digits, grid25]}}").replace("model: {g_width: 16}", "")
    with pytest.raises(ConfigError, match=r"'classes' is not reported with data.name \"grid25\" \(available there: "
                                          "fid, modes"):
        _space(tmp_path, mixed)
    assert _space(tmp_path, mixed.replace("objective: classes", "objective: fid")).settings.objectives == ["fid"]
    # a when ties a metric set to one dataset: each trial reports kid (digits by default), though the cross product
    # of the two keys holds a pairing no trial has (stacked digits with the default set); it was refused
    coupled = ("name: c\nsearch: {trials: 2, max_steps: 40, eval_every: 20, objective: kid, direction: minimize}\n"
               "data: {name: {categorical: [digits, stacked_digits]}}\nmodel: {arch: dcgan}\n"
               "eval: {metrics: {value: [fid, kid], when: \"data.name == 'stacked_digits'\"}}\n")
    assert _space(tmp_path, coupled).settings.objectives == ["kid"]
    always = coupled.replace("{categorical: [digits, stacked_digits]}", "digits}\ntrain: {batch_size: {categorical: "
                             "[32, 64]}").replace("data.name == 'stacked_digits'", "train.batch_size >= 32")
    assert _space(tmp_path, always).settings.objectives == ["kid"]
    with pytest.raises(ConfigError, match=r"'fid' is not reported with data.name \"stacked_digits\", eval.metrics "
                                          r"\[\"kid\"\] \(available there: kid, kid_std\)"):
        _space(tmp_path, coupled.replace("objective: kid", "objective: fid").replace("[fid, kid]", "[kid]"))


def test_a_space_some_of_whose_draws_fail_says_so_and_names_the_leaf(tmp_path: Path) -> None:
    """Half the draws of a chain of conditions failed in silence, each trial with "TypeError: '>' not supported
    between 'NoneType' and 'float'", naming neither the leaf nor the switched-off parameter it read."""
    chain = SPACE.replace("ttur_ratio: {float: [1, 8], log: true}", "ttur_ratio: {float: [1, 8], log: true}\n"
                          "    a: {categorical: [x, y]}\n    b: {float: [0, 1], when: \"a == 'x'\"}").replace(
        "clip: {value: 0.05, when: \"loss.name == 'wgan'\"}",
        "clip: {value: 0.05, when: \"loss.name == 'wgan'\"}\n  r1_weight: {float: [0.1, 1], when: \"b > 0.5\"}")
    space = _space(tmp_path, chain)
    said = [n for n in space.notes if "random draws of this space are not valid" in n]
    assert len(said) == 1 and said[0].endswith("(the first: TypeError: loss.r1_weight.when: '>' not supported between "
                                               "instances of 'NoneType' and 'float' (b is off in this trial (its when "
                                               "is false) and reads as null))"), said
    assert not [n for n in _space(tmp_path).notes if "random draws" in n]  # every draw of the plain space is valid


@pytest.mark.parametrize(("leaf", "said"), [
    ("data: {name: digits, resolution: {int: [8, 16]}}",
     r"data.resolution: must be a power of two .* \(the value 9, inside data.resolution's range \{int: \[8, 16\]\}: "
     r"a range draws any value between its ends; list the values that work as a categorical\)$"),
    ("data: {name: digits, channels: {int: [1, 3]}}", r"data.channels: .*\(the value 2, inside"),
    ("optim: {n_critic: {float: [1, 3], step: 0.5}}",
     r"optim.n_critic: .*the value 1.5, .*a whole-number key takes an int range: \{int: \[1, 3\]\}\)$"),
    ("model: {z_dim: {float: [2, 8]}}", r"model.z_dim: .*a whole-number key takes an int range: \{int: \[2, 8\]\}"),
])
def test_a_range_whose_ends_pass_but_whose_inside_does_not_is_refused(tmp_path: Path, leaf: str, said: str) -> None:
    """Only a range's two ends were tried: ``resolution: {int: [8, 16]}`` loaded with a warning that 24 of 32
    draws were invalid, and each such trial failed (Optuna's samplers learn nothing from a failed trial)."""
    base = "name: t\nsearch: {trials: 2, max_steps: 40, eval_every: 20}\n"
    with pytest.raises(ConfigError, match=said):
        _space(tmp_path, base + leaf)
    fine = ["data: {name: digits, resolution: {categorical: [8, 16]}}", "optim: {n_critic: {int: [1, 3]}}",
            "model: {z_dim: {int: [2, 8]}}", "optim: {beta1: {float: [0.0, 0.9], step: 0.1}}",
            "train: {batch_size: {int: [16, 512], log: true}}", "optim: {lr_g: {float: [1.0e-5, 1.0e-2], log: true}}"]
    for ok in fine:
        assert _space(tmp_path, base + ok).leaves


def test_a_log_ranges_inside_is_probed_as_it_draws() -> None:
    """A log int range (step 1) was probed from its low end up: of [16, 4096], 80, 144, 207, ..., none of 17-79."""
    from gantune.sampling.checks import inside
    from gantune.sampling.specs import IntSpec

    probes = inside(IntSpec.model_validate({"int": [16, 4096], "log": True}))
    assert sum(p < 32 for p in probes) >= 5 and min(probes) > 16 and max(probes) < 4096


def test_trials_queued_by_hand_that_the_space_does_not_draw_are_named(tmp_path: Path) -> None:
    """A point queued with ``study.enqueue_trial`` outside a range trained with only Optuna's own warning, one not
    among the choices failed, and a misspelt name was ignored in silence (the trial drew its own)."""
    from gantune.sampling.study import queued_problems

    space = _space(tmp_path)
    study = optuna.create_study()
    study.enqueue_trial({"optim.lr_g": 0.5, "loss.name": "hinge"})
    study.enqueue_trial({"loss.name": "wgan-gpp"})
    study.enqueue_trial({"lr_g": 0.002, "ttur_ratio": 2.0})
    study.enqueue_trial({"optim.n_critic": 2.5, "loss.name": "wgan"})
    assert queued_problems(study, space.distributions()) == [
        "queued trial 0: optim.lr_g 0.5 is outside its range [0.0001, 0.01] (it trains at that value)",
        "queued trial 1: loss.name 'wgan-gpp' is not among its choices ['nonsaturating', 'wgan-gp', 'wgan', 'hinge'] "
        "(the trial fails)",
        "queued trial 2: lr_g is not a parameter of this space (ignored: the trial draws its own); did you mean "
        "optim.lr_g?",
        "queued trial 3: optim.n_critic 2.5 is not an integer (Optuna truncates it)"]
    study.ask()
    assert len(queued_problems(study, space.distributions())) == 3  # a trial started is no longer queued
    exact = optuna.create_study()  # 0 is the choice 0.0 to Optuna (it was flagged: "the trial fails"; it trains)
    exact.enqueue_trial({"optim.n_critic": 3, "loss.name": "hinge", "optim.lr_g": 0.001, "optim.beta1": 0})
    beta1 = {"optim.beta1": optuna.distributions.CategoricalDistribution([0.0, 0.5, 0.9])}
    assert queued_problems(exact, {**space.distributions(), **beta1}) == []


def test_a_free_parameter_may_be_a_plain_value(tmp_path: Path) -> None:
    """``params: {ttur_ratio: 4}`` was "Input should be a valid dictionary": the loader's ``{value: ...}`` wrapping
    for a plain value could never run."""
    space = _space(tmp_path, SPACE.replace("ttur_ratio: {float: [1, 8], log: true}", "ttur_ratio: 4"))
    trial = optuna.create_study().ask()
    assert config_from_dict(space.sample(trial)).optim.lr_d == pytest.approx(4 * trial.params["optim.lr_g"])


def test_search_defaults_default_to_the_products(tmp_path: Path) -> None:
    """A space without ``search.defaults`` gets the product's; ``defaults: {}`` trains at the schema's."""
    from gantune.sampling.settings import SEARCH_DEFAULTS

    plain = SPACE.replace("  params:\n", "  defaults: {}\n  params:\n")
    base = config_from_dict(_space(tmp_path, plain).sample(optuna.create_study().ask()))
    assert base.optim.ema == 0.0 and base.optim.decay == "none"
    cfg = config_from_dict(_space(tmp_path, SPACE).sample(optuna.create_study().ask()))
    for path, value in SEARCH_DEFAULTS.items():
        section, key = path.split(".")
        assert getattr(getattr(cfg, section), key) == value


@pytest.mark.parametrize("defaults, message", [
    ("{optim.emma: 0.9}", "search.defaults.optim.emma: unknown config key"),
    ("{optim.ema: 2}", "search.defaults: optim.ema: Input should be less than 1"),
    ("{optim.decay: sometimes}", "search.defaults: optim.decay: unknown decay 'sometimes'"),
    ("{optim.ema: {float: [0, 1]}}", "search.defaults.optim.ema: expected a fixed value"),
    # a subsection as a mapping was told the same ("a search range belongs in the space")
    ("{model.progressive: {start: 8}}", "search.defaults.model.progressive: expected a fixed value (name each key of "
                                        "model.progressive: model.progressive.start: ...)"),
])
def test_bad_search_defaults_are_refused_at_load(tmp_path: Path, defaults: str, message: str) -> None:
    text = DEFAULTS_SPACE.format(ema="").replace("{optim.ema: 0.99, optim.decay: linear, loss.r1_weight: 0.5}",
                                                 defaults)
    with pytest.raises(ConfigError, match=re.escape(message)):
        _space(tmp_path, text)


@pytest.mark.parametrize(("edit", "notes"), [
    (("when: \"loss.name == 'wgan-gp'\"", "when: \"loss.name == 'wgangp'\""),
     ["loss.gp_weight.when: loss.name is never 'wgangp' (its values: 'nonsaturating', 'wgan-gp', 'wgan', 'hinge'); "
      "a typo?"]),
    (("when: \"loss.name == 'wgan-gp'\"", "when: \"'WGAN' != loss.name\""),
     ["loss.gp_weight.when: loss.name is never 'WGAN' (its values: 'nonsaturating', 'wgan-gp', 'wgan', 'hinge'); "
      "a typo?"]),
    (("['wgan', 'wgan-gp']", "['wgann', 'wgan_gp']"), ["optim.n_critic.when: loss.name is never 'wgann' (its values: "
                                                       "'nonsaturating', 'wgan-gp', 'wgan', 'hinge'); a typo?",
                                                       "optim.n_critic.when: loss.name is never 'wgan_gp' (its values: "
                                                       "'nonsaturating', 'wgan-gp', 'wgan', 'hinge'); a typo?"]),
    # one value it takes and a typo: the wgan-gp trials went without n_critic, without a word
    (("['wgan', 'wgan-gp']", "['wgan', 'wgan_gp']"), ["optim.n_critic.when: loss.name is never 'wgan_gp' (its values: "
                                                      "'nonsaturating', 'wgan-gp', 'wgan', 'hinge'); a typo?"]),
    (("optim.lr_g * ttur_ratio", "optim.lr_g * ttur_ratio * (2 if model.g_width == 32 else 1)"),
     ["optim.lr_d.expr: model.g_width is never 32 (its values: 16); a typo?"]),
    (("trials: 6", "trials: 6"), []),  # every literal the space tests is one of its values
    # searched for nothing: a key no draw reads (minibatch_disc is 0), a when on a key at its default
    (("model: {g_width: 16}", "model: {g_width: 16, minibatch_disc_dim: {int: [4, 32]}}"),
     ["model.minibatch_disc_dim is searched, but none of 32 valid random draws reads it (it is read with "
      "model.minibatch_disc above 0)"]),
    # a cap on the images loaded, searched on 2-D points (drawn, not loaded): a probe found it silently ignored
    (("data: {name: grid25}", "data: {name: grid25, max_images: {int: [10, 100]}}"),
     ["data.max_images is searched, but none of 32 valid random draws reads it (it is read with image data but "
      "stacked digits (2-D points are drawn, not loaded; stacked digits draw from every train digit))"]),
    (("model: {g_width: 16}", "model: {g_width: 16, minibatch_disc_dim: {int: [4, 32]}, d_width: "
      "{expr: \"model.minibatch_disc_dim * 2\"}}"), []),  # an expression reads it
    # read by no trial of the space, found by a review: channels of 2-D points, the D-wins stall of a loss whose G
    # keeps its gradient, torchvision's download beside built-in data
    (("data: {name: grid25}", "data: {name: grid25, channels: {categorical: [1, 3]}}"),
     ["data.channels is searched, but none of 32 valid random draws reads it (it is read with image data (2-D points "
      "are two coordinates))"]),
    (("model: {g_width: 16}", "model: {g_width: 16}\nhealth: {d_win_logs: {int: [2, 8]}}"),
     ["health.d_win_logs is searched, but none of 32 valid random draws reads it (it is read with loss.name "
      "minimax)"]),
    (("data: {name: grid25}", "data: {name: grid25, download: {categorical: [true, false]}}"),
     ["data.download is searched, but none of 32 valid random draws reads it (it is read with data.name "
      "torchvision)"]),
    # RMSprop's builder reads no betas, and instance_noise_steps anneals a noise that is off: both were silent
    (("  n_critic:", "  name: rmsprop\n  beta1: {float: [0.0, 0.9]}\n  n_critic:"),
     ["optim.beta1 is searched, but none of 32 valid random draws reads it (it is read with optim.name adam)"]),
    (("  n_critic:", "  name: {categorical: [adam, rmsprop]}\n  beta2: {float: [0.9, 0.999]}\n  n_critic:"), []),
    (("  clip:", "  instance_noise_steps: {float: [0.1, 1.0]}\n  clip:"),
     ["loss.instance_noise_steps is searched, but none of 32 valid random draws reads it (it is read with "
      "loss.instance_noise above 0)"]),
    # a fixed value no trial reads: said as a searched one is (it was accepted without a word)
    (("  n_critic:", "  name: rmsprop\n  beta1: 0.3\n  n_critic:"),
     ["optim.beta1 is set, but none of 32 valid random draws reads it (it is read with optim.name adam)"]),
    (("data: {name: grid25}", "data: {name: grid25, resolution: 16}"),
     ["data.resolution is set, but none of 32 valid random draws reads it (it is read with image data (2-D points "
      "have none))"]),
    (("data: {name: grid25}", "data: {name: grid25, resolution: 32}"), []),  # its default: no choice, as in train
    (("when: \"loss.name in ['wgan', 'wgan-gp']\"", "when: \"optim.name == 'rmsprop'\""),
     ["optim.n_critic.when held in none of 32 valid random draws: it is (almost) never set"]),
    # samplers that model only some keys: Optuna draws the others at random, and gantune had silenced its warning
    (("trials: 6", "trials: 6\n  sampler: cmaes"), ["sampler cmaes leaves loss.name (categorical), loss.gp_weight "
                                                    "(behind a when), optim.n_critic (behind a when) to a random "
                                                    "draw in each trial; sampler: tpe models every key"]),
    (("trials: 6", "trials: 6\n  sampler: gp\n  sampler_options: {n_startup_trials: 2}"),
     ["sampler gp leaves loss.gp_weight (behind a when), optim.n_critic (behind a when) to a random draw in each "
      "trial; sampler: tpe models every key"]),
    # PBT starts every member before any ends: a sampler that models ended trials draws each at random
    (("trials: 6", "trials: 6\n  sampler: gp\n  pruning: {scheduler: pbt}"),
     ["sampler gp models the trials that have ended, and PBT starts every member before any ends: each member is a "
      "random draw (PBT's explore does the searching); sampler: random says so"]),
    (("trials: 6", "trials: 6\n  sampler: cmaes\n  pruning: {scheduler: pbt}"),
     ["sampler cmaes models the trials that have ended, and PBT starts every member before any ends: each member is "
      "a random draw (PBT's explore does the searching); sampler: random says so"]),
    (("trials: 6", "trials: 4\n  pruning: {scheduler: pbt}"), []),  # tpe by default: not the space's choice
    (("trials: 6", "trials: 6\n  sampler: qmc\n  pruning: {scheduler: pbt}"),  # a sequence, not a model
     ["sampler qmc leaves loss.gp_weight (behind a when), optim.n_critic (behind a when) to a random draw in each "
      "trial; sampler: tpe models every key"]),
])
def test_a_literal_a_name_never_takes_is_said_before_the_search(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               edit: tuple[str, str], notes: list[str]) -> None:
    """``when: "loss.name == 'wgangp'"`` (a typo) switched gp_weight off in every trial without a word: the search
    never searched it. Said, not refused: a leaf kept for a choice the space has dropped does the same."""
    from gantune.search import SearchOptions
    from gantune.search.runner import check_run

    # a rung for ASHA, trials past TPE's random start and logs before the last step: nothing else to say
    space = _space(tmp_path, SPACE.replace("eval_every: 20", "eval_every: 10").replace("trials: 3", "trials: 6")
                   .replace("model: {g_width: 16}", "model: {g_width: 16}\ntrain: {log_every: 10}").replace(*edit))
    source = f"{tmp_path / 's.yaml'}: "
    assert space.notes == [source + n for n in notes]
    assert check_run(space, SearchOptions(runs_dir=str(tmp_path / "runs")))[1] == [source + n for n in notes]


@pytest.mark.parametrize(("gpus", "address"), [(0, None), (1, None), (0, "127.0.0.1:1")])
def test_a_cuda_only_key_searched_on_the_cpu_is_said_before_the_search(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, gpus: int,
        address: str | None) -> None:
    """``train.precision: {categorical: [fp32, bf16]}`` on a CPU: every draw trained alike (bf16 autocast acts on
    CUDA only), and the search ranked noise, without a word. A fixed value is not searched: nothing to say."""
    from gantune.search import SearchOptions, runner

    monkeypatch.setattr(runner, "local_resources", lambda: {"CPU": 2.0, "GPU": float(gpus)})
    space = _space(tmp_path, SPACE.replace("eval_every: 20", "eval_every: 10").replace("trials: 3", "trials: 6")
                   .replace("model: {g_width: 16}", "model: {g_width: 16}\ntrain: {precision: {categorical: [fp32, "
                            "bf16]}, channels_last: {value: true, when: \"loss.name == 'hinge'\"}, tf32: false, "
                            "log_every: 10}"))
    if address:  # a cluster: its GPUs are not known here, but gpu: 0 puts every trial on a CPU
        monkeypatch.setattr(runner, "local_resources", lambda: pytest.fail("a cluster search read this machine"))
        monkeypatch.setattr(runner, "check_address", lambda address: None)  # no cluster to answer
        space.settings = space.settings.model_copy(update={"resources": Resources(gpu=0)})
    said = runner.check_run(space, SearchOptions(runs_dir=str(tmp_path / "runs"), ray_address=address))[1]
    assert said == ([] if gpus else [
        f"{tmp_path / 's.yaml'}: train.{key} is searched, but this search's trials run on the CPU, where it "
        "does nothing (CUDA only): its draws train alike; fix its value, or give the trials a GPU "
        "(search.resources.gpu)" for key in ("precision", "channels_last")])


def test_a_key_the_space_leaves_unset_or_switches_off_reads_the_searchs_value(tmp_path: Path) -> None:
    """An expression reading ``train.steps`` or ``eval.every`` got the schema's 2,000 and 500 whatever the search
    section said, and a leaf a ``when`` switched off took the schema's default over ``search.defaults``' (EMA 0
    where the search's default is 0.999)."""
    space = _space(tmp_path, """
search:
  trials: 2
  max_steps: 6000
  eval_every: 1000
  defaults: {optim.ema: 0.999, optim.decay: linear}
data: {name: grid25}
loss: {name: {categorical: [nonsaturating, hinge]}}
optim:
  ema: {float: [0.99, 0.9999], when: "loss.name == 'hinge'"}
  decay: {value: cosine, when: "loss.name == 'hinge'"}
  lr_d: {expr: "2.0e-4 if optim.ema > 0.5 else 1.0e-3"}
health: {warmup_steps: {expr: "train.steps // 4"}}
train: {checkpoint_every: {expr: "eval.every * 2"}}
""")
    off = config_from_dict(space.sample(optuna.trial.FixedTrial({"loss.name": "nonsaturating"})))
    assert off.health.warmup_steps == 1500 and off.train.checkpoint_every == 2000
    assert (off.optim.ema, off.optim.decay, off.optim.lr_d) == (0.999, "linear", 2.0e-4)
    on = config_from_dict(space.sample(optuna.trial.FixedTrial({"loss.name": "hinge", "optim.ema": 0.995})))
    assert (on.optim.ema, on.optim.decay) == (0.995, "cosine")


def test_a_space_that_samples_nothing_is_said_and_a_choice_listed_twice_is_refused(tmp_path: Path) -> None:
    """Two trials of one config trained the same run twice without a word; ``[hinge, hinge, nonsaturating]``
    drew hinge twice as often, silently."""
    from gantune.search import SearchOptions
    from gantune.search.runner import check_run

    fixed = "name: f\nsearch: {trials: 2, max_steps: 100, eval_every: 20}\ndata: {name: grid25}\nloss: {name: %s}\n"
    said = "this space samples nothing (no range, no categorical of two choices or more): its %d trials train one " \
           "config; give a key a range, or search.trials: 1"
    space = _space(tmp_path, fixed % "{categorical: [hinge]}")
    runs = str(tmp_path / "runs")
    assert check_run(space, SearchOptions(runs_dir=runs))[1] == [said % 2]
    # counted with the run's trials: `--trials 1` was told "its 2 trials", and the sampler's random start of a
    # search that draws nothing ("tpe draws its first 10 trials at random ... this search has 4") is no news
    assert check_run(space, SearchOptions(runs_dir=runs, trials=1))[1] == []
    assert check_run(space, SearchOptions(runs_dir=runs, trials=4))[1] == [said % 4]
    # a range of one value draws it in every trial: it was counted as sampling, without a word
    one = fixed.replace("loss: {name: %s}", "model: {z_dim: {int: [%s]}}")
    assert check_run(_space(tmp_path, one % "5, 5"), SearchOptions(runs_dir=runs))[1] == [said % 2]
    assert not any("samples nothing" in n
                   for n in check_run(_space(tmp_path, one % "5, 6"), SearchOptions(runs_dir=runs))[1])
    assert not any("samples nothing" in n
                   for n in check_run(_space(tmp_path, fixed % "{categorical: [hinge, wgan]}"),
                                      SearchOptions(runs_dir=runs))[1])
    with pytest.raises(ConfigError, match=r"loss.name: categorical choice 'hinge' is given twice"):
        _space(tmp_path, fixed % "{categorical: [hinge, hinge, nonsaturating]}")
    # 1 and 1.0 are two draws but one record: a trial drawn 1.0 trained it, and Optuna's params said 1
    with pytest.raises(ConfigError, match=r"optim.lr_g: categorical choices 1 and 1.0 are equal to Optuna"):
        _space(tmp_path, fixed.replace("loss: {name: %s}", "optim: {lr_g: {categorical: [1, 1.0]}}"))


def test_a_space_whose_trials_train_on_different_data_is_said(tmp_path: Path) -> None:
    """``data.name: {categorical: [grid25, ring8]}`` ranked FID on two datasets as one, without a word: the best
    trial was the easier data's."""
    mixed = "name: m\nsearch: {trials: 2, max_steps: 40, eval_every: 20}\ndata: {name: %s}\n"
    assert any(n == "its trials train on different data (grid25, ring8), whose values of fid are not comparable: "
               "the sampler and the pruning compare them, and the summary, export and report rank only the trials on "
               "the newest trial's data; search each on its own"
               for n in _space(tmp_path, mixed % "{categorical: [grid25, ring8]}").notes)
    capped = "name: m\nsearch: {trials: 2, max_steps: 40, eval_every: 20}\ndata: {name: digits, max_images: %s}\n"
    assert any("different data (digits max_images 500 at 32 px, digits max_images 900 at 32 px)" in n
               for n in _space(tmp_path, capped % "{categorical: [500, 900]}").notes)
    # 2-D points are drawn, never loaded: a cap searched beside them is the same data (the ranking kept only the
    # newest trial's "data", dropping the best trial measured on the same points)
    points = capped.replace("digits", "grid25") % "{categorical: [500, 900]}"
    assert not any("different data" in n for n in _space(tmp_path, points).notes)
    # the ranking compares the resolution of image data too: a space searching it is told before it starts
    sized = "name: m\nsearch: {trials: 2, max_steps: 40, eval_every: 20}\ndata: {name: digits, resolution: %s}\n"
    assert any("different data (digits at 8 px, digits at 16 px)" in n
               for n in _space(tmp_path, sized % "{categorical: [8, 16]}").notes)
    assert not any("different data" in n for n in _space(tmp_path, mixed % "grid25").notes)


def test_a_when_that_is_not_a_condition_is_refused(tmp_path: Path) -> None:
    """``when: "optim.lr_g"`` (a number, truthy in every trial) set the leaf in every trial without a word."""
    text = ("name: w\nsearch: {trials: 2, max_steps: 20, eval_every: 10}\ndata: {name: grid25}\n"
            "loss:\n  name: {categorical: [hinge, wgan-gp]}\n  gp_weight: {float: [1, 10], when: %s}\n")
    with pytest.raises(ConfigError, match=r"loss.gp_weight.when: 'optim.lr_g' gives 0.0002, not true or false; "
                                          r"write a condition such as optim.lr_g > 0"):
        _space(tmp_path, text % '"optim.lr_g"')
    assert "loss.gp_weight" in _space(tmp_path, text % "\"loss.name == 'wgan-gp'\"").leaves
    # not true or false in some draws only (where the comparison is false): it was a warning that the hinge
    # trials would fail, with advice ("... or 'wgan' > 0") that compared a string with a number
    with pytest.raises(ConfigError, match=r"loss.gp_weight.when: \"loss.name == 'wgan-gp' or 'wgan'\" gives 'wgan', "
                                          r"not true or false; write a condition that compares each value \(loss.name "
                                          r"in \['wgan-gp', 'wgan'\], not"):
        _space(tmp_path, text % "\"loss.name == 'wgan-gp' or 'wgan'\"")
    with pytest.raises(ConfigError, match=r"loss.gp_weight.when: 'model.progressive' gives None, not true or false; "
                                          r"write a condition that compares a key with a value"):
        _space(tmp_path, text % '"model.progressive"')


def test_a_d_norm_no_critic_layer_reads_is_said(tmp_path: Path) -> None:
    """A DCGAN critic of depth 1 at 8 px holds no norm layer: d_norm searched there searched nothing, silently."""
    text = ("name: n\nsearch: {trials: 6, max_steps: 40, eval_every: 10}\ndata: {name: digits, resolution: 8}\n"
            "model: {arch: dcgan, g_width: 8, d_width: 8, g_depth: 1, d_depth: DEPTH, d_norm: {categorical: [layer, "
            "none]}}\ntrain: {log_every: 10}\n")
    shallow = _space(tmp_path, text.replace("DEPTH", "1"))
    assert any("model.d_norm is searched, but none of 32 valid random draws reads it (it is read with a D that holds "
               "a norm layer" in n for n in shallow.notes), shallow.notes
    deeper = _space(tmp_path, text.replace("DEPTH", "2"), "d.yaml")
    assert not any("d_norm" in n for n in deeper.notes), deeper.notes


def test_a_space_on_an_image_folder_walks_it_once_as_it_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load checked the folder (one walk) and read its notes (another): seconds apiece on 100k images."""
    from gantune.data import images
    from tests.conftest import grey_folder

    grey_folder(tmp_path / "imgs", n=4)
    walks: list[str] = []
    walk = images._walk

    def counted(top: Path) -> list[Path]:
        walks.append(str(top))
        return walk(top)

    monkeypatch.setattr(images, "_walk", counted)
    space = _space(tmp_path, f"name: w\nsearch: {{trials: 2, max_steps: 20, eval_every: 10}}\n"
                             f"data: {{name: folder, path: {tmp_path / 'imgs'}, resolution: 8}}\n"
                             "model: {arch: dcgan}\neval: {extractor: digits}\n")
    assert any("greyscale" in n for n in space.notes) and walks.count(str(tmp_path / "imgs")) == 1


def test_a_search_default_the_space_always_sets_is_a_note(tmp_path: Path) -> None:
    """``defaults: {optim.lr_g: 0.001}`` beside a searched lr_g was dropped without a word (the space's value wins);
    one under a `when` is read where the `when` is off, and the built-in ``optim.ema`` default is not the user's."""
    text = SPACE.replace("  eval_every: 20\n", "  eval_every: 20\n  defaults: {optim.lr_g: 0.001, loss.gp_weight: 5, "
                                               "optim.beta1: 0.0}\n")
    space = _space(tmp_path, text)
    unread = [n for n in space.notes if "search.defaults" in n]
    assert unread == [f"{tmp_path / 's.yaml'}: search.defaults.optim.lr_g: the space sets optim.lr_g in every trial "
                      "(no `when` switches it off), so this default is never read; remove it, or give the leaf a "
                      "`when`"], space.notes


def test_the_data_a_space_can_train_on_is_worked_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``possible_data`` ran at load, again for a resume's comparison, for the trials' GPU share and for the
    warm-start recipes: each read of the same space worked it out anew (an image folder's config each time)."""
    from gantune.sampling import checks, space, warm
    from gantune.search import runner

    calls = []
    real = checks.possible_data

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    for module in (checks, space, runner, warm):
        monkeypatch.setattr(module, "possible_data", counted, raising=False)
    loaded = load_space(Path(__file__).parents[2] / "search_spaces" / "toy.yaml")
    assert runner._measured_on(loaded) == runner._measured_on(loaded)
    runner.trial_resources(loaded, Resources(cpu=1, gpu=0), [{"CPU": 2.0, "GPU": 0.0}], "this machine")
    warm.space_kind(loaded)
    assert len(calls) == 1


def test_a_subsection_given_whole_is_read_by_expressions_and_takes_the_defaults_of_its_other_keys(
        tmp_path: Path) -> None:
    """``progressive: {value: {start: 16}}``: an expression reading ``model.progressive.start`` got the schema's
    8 (or ``search.defaults``'), and ``search.defaults``' ``model.progressive.fade_steps`` was dropped (the whole
    value replaced it)."""
    text = ("name: p\nsearch: {trials: 2, max_steps: 500, eval_every: 250, objective: fid, warm_start: false,\n"
            "  defaults: {model.progressive.fade_steps: 7, model.progressive.start: 8}}\n"
            "data: {name: digits, resolution: 32}\n"
            "model: {arch: dcgan, progressive: {value: %s}}\noptim: {lr_g: {float: [1.0e-4, 1.0e-3], log: true}}\n"
            "train: {batch_size: {expr: \"64 if model.progressive.start == 16 else 32\"}}\n")
    study = optuna.create_study()
    given = config_from_dict(_space(tmp_path, text % "{start: 16}").sample(study.ask()))
    assert (given.train.batch_size, given.model.progressive.start, given.model.progressive.fade_steps) == (64, 16, 7)
    own = config_from_dict(_space(tmp_path, text % "{start: 16, fade_steps: 9}").sample(study.ask()))
    assert own.model.progressive.fade_steps == 9  # a key the value gives wins over the default
    schema = config_from_dict(_space(tmp_path, text % "{fade_steps: 9}").sample(study.ask()))
    assert schema.train.batch_size == 32 and schema.model.progressive.start == 8  # a key it leaves out: the default


def test_a_default_for_a_key_of_a_subsection_applies_where_the_trial_switches_it_on(tmp_path: Path) -> None:
    """``search.defaults: {model.progressive.fade_steps: 100}`` switched progressive growing on in every trial: in
    those where the space's ``when`` left it off (an expression there read ``model.progressive`` as null, so the
    config it saw was not the one that trained) and in spaces that never grow (now a note says it is unread)."""
    text = ("name: p\nsearch: {trials: 2, max_steps: 500, eval_every: 250, objective: fid, warm_start: false,\n"
            "  params: {grow: {categorical: [true, false]}}, defaults: {model.progressive.fade_steps: 100}}\n"
            "data: {name: digits, resolution: 16}\n"
            "model: {arch: dcgan, progressive: {start: {categorical: [4, 8], when: grow}}}\n"
            "optim: {ema: {expr: \"0.99 if model.progressive == None else 0.999\"}}\n")
    space = _space(tmp_path, text)
    study = optuna.create_study()
    seen = {}
    for grow in (True, False):
        cfg = config_from_dict(space.sample(optuna.trial.FixedTrial({"grow": grow, "model.progressive.start": 4})))
        seen[grow] = (cfg.model.progressive, cfg.optim.ema)
    assert seen[False] == (None, 0.99)  # off, as the expression read it
    on, ema = seen[True]
    assert on is not None and (on.start, on.fade_steps, ema) == (4, 100, 0.999)
    never = _space(tmp_path, text.replace("progressive: {start: {categorical: [4, 8], when: grow}}", "g_width: 32")
                   .replace("params: {grow: {categorical: [true, false]}}, ", ""))
    assert config_from_dict(never.sample(study.ask())).model.progressive is None
    assert any("search.defaults.model.progressive.fade_steps: no trial of this space switches model.progressive "
               "on" in n for n in never.notes), never.notes


def test_a_pair_of_values_a_trial_config_takes_is_taken_by_a_space(tmp_path: Path) -> None:
    """Each leaf was probed beside the other keys' schema defaults: ``min_diversity: 2.0`` beside ``max_diversity:
    3.0`` was refused ("below max_diversity 1.5", a value the space does not use), in a space and in
    ``search.defaults``. A rule between keys is the draws' to check, with the values the space gives."""
    head = "name: h\nsearch: {trials: 2, max_steps: 200, eval_every: 100, objective: coverage, warm_start: false%s}\n"
    body = "data: {name: ring8}\nhealth: {%s}\n"
    both = _space(tmp_path, head % "" + body % "min_diversity: 2.0, max_diversity: 3.0")
    cfg = config_from_dict(both.sample(optuna.create_study().ask()))
    assert (cfg.health.min_diversity, cfg.health.max_diversity) == (2.0, 3.0)
    via = _space(tmp_path, head % ", defaults: {health.min_diversity: 2.0}" + body % "max_diversity: 3.0")
    assert config_from_dict(via.sample(optuna.create_study().ask())).health.min_diversity == 2.0
    with pytest.raises(ConfigError, match=r"none of 32 random draws .* min_diversity 2 must be below max_diversity "
                                          r"1\.5"):
        _space(tmp_path, head % "" + body % "min_diversity: 2.0")  # against the default it pairs with: refused


@pytest.mark.parametrize("choices", ["['2', 4]", "[0.5, '1e-3']"])
def test_a_quoted_number_among_a_parameters_numbers_is_refused(tmp_path: Path, choices: str) -> None:
    """A config key refuses ``['32', 64]`` by its type; a free parameter has none, and its quoted choice reached
    expressions, failing the trials that drew it (a note said "16 of 32 draws")."""
    text = (f"name: q\nsearch: {{trials: 2, max_steps: 200, eval_every: 100, warm_start: false, params: {{ttur: "
            f"{{categorical: {choices}}}}}}}\ndata: {{name: ring8}}\noptim: {{lr_d: {{expr: '0.001 * ttur'}}}}\n")
    with pytest.raises(ConfigError, match=r"search.params.ttur: '[0-9e.-]+' is quoted among numbers: write it "
                                          "unquoted"):
        _space(tmp_path, text)


def test_a_stepped_draw_trains_on_its_grid(tmp_path: Path) -> None:
    """Optuna computes ``low + k * step`` in binary floating point: ``{float: [0, 0.9], step: 0.1}`` trained, logged
    and exported ``beta1: 0.6000000000000001``; the config holds the value as the range writes it."""
    from gantune.sampling.space import on_grid

    assert on_grid(0.6000000000000001, 0.0, 0.1) == 0.6 and on_grid(3.0000000000000004e-05, 1e-05, 1e-05) == 3e-05
    space = _space(tmp_path, "name: t\nsearch: {trials: 2, max_steps: 40, eval_every: 20}\n"
                             "optim: {beta1: {float: [0.0, 0.9], step: 0.1}}")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(40):
        beta1 = space.sample(study.ask())["optim"]["beta1"]
        drawn.add(beta1)
        assert beta1 == round(beta1, 1), beta1
    assert len(drawn) == 10


def test_a_stepped_draw_is_logged_and_exported_on_its_grid() -> None:
    """Found by a review: the config held 0.6, but MLflow's params, the export's header and the summary's best
    params read Optuna's stored ``0.6000000000000001`` (``logged_params``, ``trained_params``)."""
    from optuna.distributions import FloatDistribution

    from gantune.sampling.study import SOURCE_PARAMS, grid_params, logged_params, trained_params

    dists = {"optim.beta1": FloatDistribution(0.0, 0.9, step=0.1), "optim.lr_g": FloatDistribution(1e-5, 1e-3)}
    t = optuna.trial.create_trial(params={"optim.beta1": 0.6000000000000001, "optim.lr_g": 3.0000000000000004e-05},
                                  distributions=dists, value=1.0)
    assert grid_params(t) == trained_params(t) == {"optim.beta1": 0.6, "optim.lr_g": 3.0000000000000004e-05}
    assert logged_params(t) == grid_params(t)
    rerun = optuna.trial.create_trial(params={"seed": 1}, distributions={"seed": optuna.distributions.IntDistribution(
        0, 9)}, value=1.0, user_attrs={SOURCE_PARAMS: grid_params(t)})
    assert logged_params(rerun) == {"optim.beta1": 0.6, "optim.lr_g": 3.0000000000000004e-05, "seed": 1}


def test_a_choice_tested_as_true_or_false_that_every_choice_passes_is_refused(tmp_path: Path) -> None:
    """A text is true whatever it says: ``16 if wide else 8`` with ``wide`` in ['yes', 'no'] gave 16 in every
    trial, and ``k == 'a' or wide`` held for 'no', without a word. Refused at load whatever the draws; a test that
    decides something (a choice of null, or of false) and ``name or 'default'`` are left."""
    text = ("name: t\nsearch:\n  trials: 2\n  max_steps: 20\n  eval_every: 10\n  params:\n"
            "    wide: {categorical: %s}\n    k: {categorical: [a, b]}\ndata: {name: grid25}\nmodel:\n"
            "  g_width: {expr: %s}\n  d_width: {value: 16, when: %s}\n")
    texts = "['yes', 'no']"
    for expr, when in [('"16 if wide else 8"', '"k == \'a\'"'), ('"16 if not wide else 8"', '"k == \'a\'"'),
                       ('"wide and 16"', '"k == \'a\'"'), ('"8 * 2"', '"k == \'a\' or wide"'),
                       ('"16 if (k == \'a\' or wide) else 8"', '"k == \'a\'"')]:
        part = "d_width.when" if expr == '"8 * 2"' else "g_width.expr"
        with pytest.raises(ConfigError, match=rf"model.{part}: .* tests wide as true or false, and each of its "
                                              r"choices \('yes', 'no'\) is true \(a text that is not empty is true "
                                              r"whatever it says\): compare it, e.g. wide == 'yes'$"):
            _space(tmp_path, text % (texts, expr, when))
    for choices, expr in [(texts, "\"16 if wide == 'yes' else 8\""), ("[null, 'x']", '"16 if wide else 8"'),
                          ("[true, false]", '"16 if wide else 8"'), (texts, "\"(wide or 'no') == 'no' and 8 or 16\"")]:
        assert "model.g_width" in _space(tmp_path, text % (choices, expr, '"k == \'a\'"')).leaves, (choices, expr)
