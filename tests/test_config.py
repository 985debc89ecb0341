from pathlib import Path

import optuna
import pytest

from gantune.catalogue import config_from_dict, load_config
from gantune.config import dump_config
from gantune.errors import ConfigError
from gantune.gan.nets import resolve_arch


def test_defaults_are_valid() -> None:
    cfg = config_from_dict({})
    assert resolve_arch(cfg) == "mlp"
    assert cfg.loss.name == "nonsaturating"


@pytest.mark.parametrize(("raw", "needle"), [
    ({"optim": {"lrg": 1}}, "x.yaml: optim.lrg: unknown key"),
    ({"nonsense": {}}, "x.yaml: nonsense: unknown key"),
    # YAML's `on:` or `true:`: Python's "keywords must be strings", naming no key
    ({True: {"a": 1}}, "x.yaml: True: unknown key (YAML reads on, off, yes and no as true and false)"),
    # the misspelt key first: "origin.search: Field required" only followed from it
    ({"origin": {"foo": 1}}, "x.yaml: origin.foo: unknown key (and 1 more problem: origin.search)"),
    ({"optim": {"lr_g": "fast"}}, "x.yaml: optim.lr_g: Input should be a valid number"),
    ({"loss": {"name": "wasserstein"}}, "x.yaml: loss.name: unknown loss 'wasserstein'; choose one of: nonsat"),
    ({"train": {"steps": 2.5}}, "x.yaml: train.steps:"),
    ({"data": {"name": "digits", "resolution": 24}}, "x.yaml: data.resolution: must be a power of two"),
    ({"model": {"d_norm": "spectral+batch+layer"}}, "x.yaml: model.d_norm:"),
    ({"model": {"d_norm": "batch"}, "loss": {"name": "wgan-gp"}}, "model.d_norm: batch norm in D breaks"),
    ({"model": {"g_norm": "instance"}}, "model.g_norm: instance normalisation needs image"),
    ({"model": {"arch": "dcgan"}}, "model.arch: 2-D point data needs the mlp"),
    ({"data": {"name": "folder"}}, "data.path: dataset 'folder' needs a path"),
    ({"eval": {"metrics": ["fid", "sharpness"]}}, "x.yaml: eval.metrics: unknown metric 'sharpness'"),
    ({"eval": {"extractor": "vgg"}}, "x.yaml: eval.extractor: unknown feature extractor 'vgg'"),
    ({"optim": {"decay": "step"}}, "x.yaml: optim.decay: unknown decay 'step'"),
    ({"model": {"g_norm": "group"}}, "x.yaml: model.g_norm: 'group' is not a normalisation"),
    ({"model": {"d_dropout": 1.0}}, "x.yaml: model.d_dropout: Input should be less than 1"),
    ({"model": {"d_dropout": -0.1}}, "x.yaml: model.d_dropout: Input should be greater than or equal to 0"),
    ({"optim": {"weight_decay": -1e-4}}, "x.yaml: optim.weight_decay: Input should be greater than or equal to 0"),
    # past float32: the optimiser step failed with a traceback ("cannot be converted to type float")
    ({"optim": {"lr_g": 1e39}}, "x.yaml: optim.lr_g: 1e+39 is past 3.4e38, the largest float32, which the weights are"),
    ({"optim": {"name": "rmsprop", "lr_d": 1e39}}, "x.yaml: optim.lr_d: 1e+39 is past 3.4e38"),
    ({"loss": {"name": "wgan", "clip": 1e300}}, "x.yaml: loss.clip: 1e+300 is past 3.4e38"),
    ({"optim": {"name": "rmsprop", "weight_decay": 0.1}}, "x.yaml: optim.weight_decay: decoupled weight decay needs"),
    ({"loss": {"label_smoothing": 0.5}}, "x.yaml: loss.label_smoothing: Input should be less than 0.5"),
    ({"loss": {"name": "hinge", "label_smoothing": 0.1}}, "x.yaml: loss.label_smoothing: hinge has no real target"),
    ({"loss": {"name": "wgan", "label_smoothing": 0.1}}, "x.yaml: loss.label_smoothing: wgan has no real target"),
    ({"loss": {"instance_noise": -0.1}}, "x.yaml: loss.instance_noise: Input should be greater than or equal to 0"),
    ({"loss": {"instance_noise_steps": 0}}, "x.yaml: loss.instance_noise_steps: Input should be greater than 0"),
    ({"loss": {"instance_noise_steps": 1.5}}, "x.yaml: loss.instance_noise_steps: Input should be less than or equal"),
    ({"data": {"name": "digits", "augment": ["flip"]}}, "x.yaml: data.augment: unknown augmentation 'flip'; choose "
                                                        "one of: translation, cutout, color"),
    ({"data": {"augment": ["cutout"]}}, "x.yaml: data.augment: DiffAugment transforms images, not 2-D points"),
    ({"data": {"name": "digits", "augment": 3}}, "x.yaml: data.augment: Input should be a valid list"),
    ({"data": {"name": "digits", "augment": "translation, cutout,translation"}},
     "x.yaml: data.augment: translation is named twice (each policy applies once: give it once)"),
    ({"eval": {"grid": 10**20}}, "x.yaml: eval.grid: Input should be less than or equal to 1099511627776"),
    ({"eval": {"n_samples": 10**20}}, "x.yaml: eval.n_samples: Input should be less than or equal to 1099511627776"),
    ({"data": {"name": "digits", "augment_p": 0}}, "x.yaml: data.augment_p: Input should be greater than 0"),
    ({"data": {"name": "digits", "augment_p": 1.5}}, "x.yaml: data.augment_p: Input should be less than or equal"),
    ({"health": {"max_diversity": 0.5}}, "x.yaml: health.max_diversity: Input should be greater than 1"),
    ({"health": {"min_diversity": 2.0}}, "x.yaml: health: min_diversity 2 must be below max_diversity 1.5"),
    # pydantic's lax mode reads these as each other: `steps: true` trained one step, `repeat: "no"` was off
    ({"train": {"steps": True}}, "x.yaml: train.steps: must be a number, not true or false"),
    ({"health": {"max_diversity": True}}, "x.yaml: health.max_diversity: must be a number, not true or false"),
    ({"data": {"channels": False}}, "x.yaml: data.channels: must be a number, not true or false"),
    ({"eval": {"repeat": "no"}}, "x.yaml: eval.repeat: must be true or false"),
    ({"model": {"conditional": 1}}, "x.yaml: model.conditional: must be true or false"),
    # YAML's `on: 2` in a section: "train.1: Keys should be strings" (the top level said what YAML had read)
    ({"train": {True: 2}}, "x.yaml: train.True: unknown key (YAML reads on, off, yes and no as true and false)"),
    ({"train": {5: 2}}, "x.yaml: train.5: unknown key (a key is text: quote it)"),
])
def test_errors_name_the_key(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw, "x.yaml")
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_numbers_keep_their_lax_reading_where_no_switch_is_involved() -> None:
    """A whole float where an int goes (an expression's ``g_width / 2``) and an int where a float goes stay
    accepted: only true/false against numbers is refused."""
    cfg = config_from_dict({"model": {"g_width": 32.0}, "optim": {"lr_g": 1}, "train": {"compile": False}})
    assert (cfg.model.g_width, cfg.optim.lr_g, cfg.train.compile) == (32, 1.0, False)


def test_yaml_scientific_notation_and_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr_g: 1e-4}\nmodel: {d_norm: spectral+layer}\n")
    cfg = load_config(p)
    assert cfg.optim.lr_g == pytest.approx(1e-4)
    assert cfg.model.d_norm == "spectral+layer"
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


def test_numbers_with_an_exponent_are_numbers_where_nothing_converts_them(tmp_path: Path) -> None:
    """PyYAML read ``1e-3`` (no dot) and ``1.0e3`` (no sign) as strings: a space's expression reading
    ``lr_g: 1e-3`` said "* takes numbers, not str and int". A string that reads as one is written quoted."""
    from gantune.config import read_yaml, yaml_text
    from gantune.sampling.space import load_space

    p = tmp_path / "s.yaml"
    p.write_text("optim: {lr_g: 1e-3, lr_d: {expr: 'optim.lr_g * 2'}, beta2: 9.99e-1, weight_decay: 1.0e3}\n")
    assert read_yaml(p)["optim"] == {"lr_g": 0.001, "lr_d": {"expr": "optim.lr_g * 2"}, "beta2": 0.999,
                                     "weight_decay": 1000.0}
    p.write_text("search: {trials: 2, sampler: random}\noptim: {lr_g: 1e-3, lr_d: {expr: 'optim.lr_g * 2'}, "
                 "beta1: {float: [0.0, 0.9]}}\n")
    drawn = load_space(p).sample(optuna.trial.FixedTrial({"optim.beta1": 0.5}))
    assert drawn["optim"]["lr_d"] == 0.002
    (tmp_path / "t.yaml").write_text(yaml_text({"path": "1e5", "n": 1e5}))
    assert read_yaml(tmp_path / "t.yaml") == {"path": "1e5", "n": 1e5}


def test_digits_after_a_leading_zero_are_text_never_octal(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) read ``batch_size: 064`` as octal 52, without a word (the run's config.yaml said 52), and
    ``0815`` as text. Digits after a leading zero are text: a name keeps them, a number field says why in one line;
    YAML 1.2's ``0o17`` is octal. A string that reads as one is written quoted."""
    from gantune.config import parse_yaml, read_yaml, yaml_text

    assert parse_yaml("a: 064\nb: 080\nc: -007\nd: 0o17\ne: 0x1F\nf: 1_000\ng: 0\nh: '064'\ni: 0o_", "x") == {
        "a": "064", "b": "080", "c": "-007", "d": 15, "e": 31, "f": 1000, "g": 0, "h": "064", "i": "0o_"}
    with pytest.raises(ConfigError, match=r"^x.yaml: train.batch_size: must be a number, not 064, whose leading zero "
                                          r"makes it text \(YAML 1.1 read it as octal\)$"):
        config_from_dict(parse_yaml("train: {batch_size: 064}", "x"), "x.yaml")
    assert config_from_dict(parse_yaml("name: 0815", "x"), "x.yaml").name == "0815"
    (tmp_path / "t.yaml").write_text(yaml_text({"a": "080", "b": "064", "c": "0o17", "d": 64}))
    assert read_yaml(tmp_path / "t.yaml") == {"a": "080", "b": "064", "c": "0o17", "d": 64}


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr_g: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    # found in review: a character YAML refuses (a NUL of a file zero-filled after a crash, a form feed) was two
    # lines, "bad.yaml:: invalid YAML (... not allowed" then "  in "<unicode string>", position 20)"
    bad.write_text("name: x\ndata: {name: grid25}\x0c\n")
    with pytest.raises(ConfigError) as refused:
        load_config(bad)
    assert str(refused.value) == f"{bad}: line 2: invalid YAML (character U+000C is not allowed in YAML text)"


def test_the_schema_alone_reads_names_it_cannot_know() -> None:
    """``parse_config`` is the schema (types, ranges); names are the catalogue's, which knows the registries."""
    from gantune.config import parse_config

    cfg = parse_config({"loss": {"name": "ralsgan"}, "model": {"g_norm": "spectral+none"}})
    assert cfg.loss.name == "ralsgan" and cfg.model.g_norm == "spectral"
    with pytest.raises(ConfigError, match=r"loss\.name: unknown loss .ralsgan."):
        config_from_dict(cfg.to_dict())


def test_a_norm_that_breaks_a_gradient_penalty_is_refused_only_where_d_has_a_layer_of_it() -> None:
    """A DCGAN critic of depth 1 at 8 px has no norm layer (its one block is the first, which none follows):
    batch norm there was refused as breaking WGAN-GP's per-sample penalty, which it never reached."""
    raw = {"data": {"name": "digits", "resolution": 8}, "model": {"arch": "dcgan", "d_norm": "batch", "d_depth": 1},
           "loss": {"name": "wgan-gp"}}
    assert config_from_dict(raw).model.d_norm == "batch"
    with pytest.raises(ConfigError, match=r"model\.d_norm: batch norm in D breaks the per-sample gradient penalty"):
        config_from_dict({**raw, "model": {**raw["model"], "d_depth": 2}})


@pytest.mark.parametrize("key", ["r1_weight", "r2_weight"])
def test_a_batch_norm_d_is_refused_beside_a_zero_centred_penalty(key: str) -> None:
    """R1 and R2 are each sample's own gradient norm; batch norm mixes the samples of a batch into each score."""
    raw = {"model": {"d_norm": "batch"}, "loss": {"name": "rpgan"}}
    assert config_from_dict(raw).loss.name == "rpgan"
    with pytest.raises(ConfigError, match=rf"model\.d_norm: batch norm in D breaks the per-sample {key[:2].upper()} "):
        config_from_dict({**raw, "loss": {"name": "rpgan", key: 1.0}})


def test_yaml_merge_keys_are_read_and_a_key_given_twice_still_refused(tmp_path: Path) -> None:
    """``<<: *base`` (standard YAML, e.g. a range shared beside a ``when``) was refused as "could not determine a
    constructor for the tag merge": the duplicate-key check built the merge key itself. The keys given beside it
    override the merged ones, as YAML says; a key written twice is still refused."""
    from gantune.config import parse_yaml

    cfg = tmp_path / "m.yaml"
    assert parse_yaml("a: &x {b: 1, e: 3}\nc:\n  <<: *x\n  e: 4\n", "s") == {"a": {"b": 1, "e": 3},
                                                                             "c": {"b": 1, "e": 4}}
    cfg.write_text("name: m\ndata: {name: grid25}\nmodel:\n  <<: {g_width: 16, d_width: 16}\n  d_width: 8\n")
    model = load_config(cfg).model
    assert (model.g_width, model.d_width) == (16, 8)
    with pytest.raises(ConfigError, match="duplicate key 'd_width'"):
        parse_yaml("model:\n  <<: {g_width: 16}\n  d_width: 8\n  d_width: 4\n", "s")


def test_an_alias_bomb_is_refused_as_it_is_read() -> None:
    """Nine levels of ten aliases in a free parameter's value (832 bytes) loaded, then took 26 s and 2.4 GB once a
    search stored its settings (and one level more, the machine's memory). Refused as the file is read."""
    from gantune.config import MAX_YAML_VALUES, parse_yaml

    levels = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "\n".join(levels) + "\nsearch: {params: {q: {value: *a8}}}\n"
    with pytest.raises(ConfigError, match=rf"^bomb.yaml: holds more than {MAX_YAML_VALUES:,} values once its "
                                          r"aliases \(\*name\) are expanded: no config or space needs as many$"):
        parse_yaml(text, "bomb.yaml")
    small = parse_yaml("base: &b {x: 1}\nother: *b\n", "ok.yaml")
    assert small == {"base": {"x": 1}, "other": {"x": 1}}
