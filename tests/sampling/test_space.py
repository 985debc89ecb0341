from pathlib import Path

import optuna
import pytest

from gantune.catalogue import config_from_dict
from gantune.errors import ConfigError
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
    (("lr_g: {float: [1.0e-4, 1.0e-2], log: true}", "lr_g: {flaot: [1, 2]}"), "optim.lr_g:"),
    (("nonsaturating, wgan-gp", "nonsaturating, wgan-gpp"), "loss.name: unknown loss 'wgan-gpp'; choose one of"),
    (("optim.lr_g * ttur_ratio", "optim.lr_g * ttur"), "optim.lr_d.expr: unknown name 'ttur'"),
    (("when: \"loss.name == 'wgan-gp'\"", "when: \"loss.name = 'wgan-gp'\""), "loss.gp_weight.when: cannot parse"),
    (("trials: 3", "trials: -1"), "search.trials: Input should be greater than or equal to 1"),
    (("trials: 3", "trails: 3"), "search.trails: unknown key"),
    (("data: {name: grid25}", "dta: {name: grid25}"), "dta: unknown section"),
    (("eval_every: 20", "eval_every: 200"), "eval_every must not exceed max_steps"),
    (("model: {g_width: 16}", "model: {g_width: {int: [0, 4]}}"), "model.g_width: Input should be greater"),
    (("trials: 3", "trials: 3\n  pruning: {scheduler: pbt, noise_aware: true}"),
     "search.pruning: noise_aware needs scheduler: asha with asha: true"),
    (("trials: 3", "trials: 3\n  pruning: {asha: false, noise_aware: true}"),
     "search.pruning: noise_aware needs scheduler: asha with asha: true"),
    (("trials: 3", "trials: 3\n  pruning: {noise_aware: true, noise_margin: 0}"),
     "search.pruning.noise_margin: Input should be greater than 0"),
])
def test_bad_spaces_name_the_key(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    text = SPACE.replace(*edit)
    assert text != SPACE
    with pytest.raises(ConfigError) as exc:
        _space(tmp_path, text)
    msg = str(exc.value)
    assert msg.startswith(str(tmp_path / "s.yaml")) and needle in msg, msg
    assert "\n" not in msg


def test_ready_spaces_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "search_spaces"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {"toy.yaml", "grid25.yaml", "ring8.yaml", "wgan.yaml", "dcgan.yaml", "hinge.yaml"} <= set(names)
    for p in root.glob("*.yaml"):
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
