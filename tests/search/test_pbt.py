"""Population Based Training: explore on a gantune space, and a real PBT search on a local Ray."""

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from gantune.cli import main
from gantune.errors import ConfigError
from gantune.sampling.space import load_space
from gantune.search.scheduler import Explorer

SPACE = """
name: {name}
search:
  trials: 4
  max_steps: {steps}
  eval_every: 100
  objective: coverage
  direction: maximize
  sampler: random
  pruning: {{scheduler: pbt, health: false, pbt: {{interval_evals: 1, quantile: 0.25}}}}
  resources: {{cpu: 2}}  # one slot: the members take turns, in the same order on any machine (with a second
                         # slot, one ran its whole budget while the next one's process started)
  params:
    ttur_ratio: {{float: [0.5, 2], log: true}}
    width: {{categorical: [16, 32]}}
data: {{name: grid25}}
model: {{z_dim: 4, g_width: {{expr: "width"}}, d_width: 32, g_depth: 2, d_depth: 2, g_norm: none}}
optim:
  lr_g: {{float: [1.0e-5, 3.0e-3], log: true}}
  lr_d: {{expr: "optim.lr_g * ttur_ratio"}}
  beta1: {{categorical: [0.0, 0.5, 0.9]}}
train: {{batch_size: 64, log_every: 50}}
eval: {{n_samples: 500, metrics: [prdc]}}
"""


def _space(tmp_path: Path, name: str = "pbt", steps: int = 400, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPACE.format(name=name, steps=steps) + extra)
    return path


def _config(space, params):  # type: ignore[no-untyped-def]
    return {"params": params, "trial": space.sample(optuna.trial.FixedTrial(params)), "number": 7, "run_dir": "x"}


def test_explore_perturbs_what_a_checkpoint_carries_and_keeps_expressions_true(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path))
    # width is a free parameter too, but it sizes G: a clone's checkpoint could not load into another width
    assert space.mutable_params() == ["ttur_ratio", "width", "optim.lr_g", "optim.beta1"]
    explorer = Explorer(space, seed=0)
    start = {"ttur_ratio": 1.0, "width": 16, "optim.lr_g": 1e-3, "optim.beta1": 0.5}
    changed = set()
    for _ in range(50):
        new = explorer(_config(space, start))
        p, raw = new["params"], new["trial"]
        assert new["number"] == 7 and new["run_dir"] == "x"  # only the hyperparameters change
        assert raw["model"]["g_width"] == p["width"] == 16  # never explored: it would change the networks
        assert 1e-5 <= p["optim.lr_g"] <= 3e-3 and 0.5 <= p["ttur_ratio"] <= 2
        assert math.isclose(raw["optim"]["lr_d"], p["optim.lr_g"] * p["ttur_ratio"])  # the expression holds
        assert p["optim.beta1"] in (0.0, 0.5, 0.9) and raw["optim"]["beta1"] == p["optim.beta1"]
        changed |= {k for k in start if p[k] != start[k]}
    assert changed == {"ttur_ratio", "optim.lr_g", "optim.beta1"}


def test_explore_skips_a_change_an_expression_fails_at_and_keeps_a_range_on_its_step(tmp_path: Path) -> None:
    """x0.8 clipped ``ratio`` to 1.0, where ``0.1 / (ratio - 1)`` divides by zero: the ZeroDivisionError took the
    whole PBT search down with a traceback. And explore drew off a range's ``step`` (n_critic 4 of [1, 5] step 2,
    batch sizes 77 of step 32), which no draw gives."""
    mutate = "resample_probability: 0.5, mutate: [ratio, optim.lr_g, optim.n_critic, optim.beta1],"
    text = SPACE.format(name="x", steps=400).replace("interval_evals: 1,", f"interval_evals: 1, {mutate}")
    lr_d = ('lr_d: {expr: "optim.lr_g * ttur_ratio * min(4, 0.1 / (ratio - 1))"}\n  n_critic: {int: [1, 5], step: 2}'
            "\n  grad_clip: {float: [0.1, 0.3], step: 0.1}")
    text = text.replace("    width:", "    ratio: {float: [1.0, 1.2]}\n    width:").replace(
        'lr_d: {expr: "optim.lr_g * ttur_ratio"}', lr_d).replace("beta1: {categorical: [0.0, 0.5, 0.9]}",
                                                                 "beta1: {float: [0.0, 0.9], step: 0.3}")
    (tmp_path / "x.yaml").write_text(text)
    space = load_space(tmp_path / "x.yaml")
    start = {"ttur_ratio": 1.0, "ratio": 1.05, "width": 16, "optim.lr_g": 1e-3, "optim.n_critic": 3,
             "optim.grad_clip": 0.2, "optim.beta1": 0.3}
    explorer, seen = Explorer(space, seed=0), set()
    for _ in range(60):
        p = explorer(_config(space, start))["params"]
        assert 1.0 < p["ratio"] <= 1.2
        assert p["optim.n_critic"] in (1, 3, 5) and any(math.isclose(p["optim.beta1"], b) for b in (0, 0.3, 0.6, 0.9))
        seen.add(p["optim.n_critic"])
    assert seen == {1, 3, 5}
    # 0.1 + 2 * 0.1 is 0.30000000000000004: past the range's top, which Optuna warns of
    assert all(0.1 <= explorer.perturb("optim.grad_clip", 0.3) <= 0.3 for _ in range(40))


def test_explore_moves_small_ints_and_resamples_ints_evenly(tmp_path: Path) -> None:
    """Found by a review: x0.8 / x1.2 of n_critic 1 or 2 rounds back to it, so only a resample ever moved them;
    and a resample rounded a uniform draw, which gave each end of [1, 5] half the share of the values inside."""
    text = SPACE.format(name="x", steps=400).replace("interval_evals: 1,", "interval_evals: 1, mutate: "
                                                     "[optim.n_critic], resample_probability: {p},")
    text = text.replace('  beta1: {categorical: [0.0, 0.5, 0.9]}', '  beta1: {categorical: [0.0, 0.5, 0.9]}\n'
                        '  n_critic: {int: [1, 5]}')
    (tmp_path / "never.yaml").write_text(text.replace("{p}", "0.0"))
    explorer = Explorer(load_space(tmp_path / "never.yaml"), seed=0)
    assert {explorer.perturb("optim.n_critic", 1) for _ in range(40)} == {1, 2}  # x0.8 stays at the range's low
    assert {explorer.perturb("optim.n_critic", 2) for _ in range(40)} == {1, 3}
    assert {explorer.perturb("optim.n_critic", 5) for _ in range(40)} == {4, 5}  # x1.2 stays at its high
    (tmp_path / "always.yaml").write_text(text.replace("{p}", "1.0"))
    explorer = Explorer(load_space(tmp_path / "always.yaml"), seed=0)
    drawn = [explorer.perturb("optim.n_critic", 3) for _ in range(5000)]
    shares = [drawn.count(v) / len(drawn) for v in range(1, 6)]
    assert all(0.17 < share < 0.23 for share in shares), shares  # 0.2 each (the ends had 0.125)


def test_pbt_space_errors_are_one_line_at_load(tmp_path: Path) -> None:
    named = SPACE.format(name="x", steps=400).replace("interval_evals: 1,", "interval_evals: 1, mutate: [optim.lr],")
    (tmp_path / "x.yaml").write_text(named)
    with pytest.raises(ConfigError, match=r"'optim\.lr' is not a sampled number"):
        load_space(tmp_path / "x.yaml")
    # a network key in mutate was accepted and never explored: every change of it is dropped
    network = SPACE.format(name="w", steps=400).replace("d_width: 32", "d_width: {categorical: [16, 32]}").replace(
        "interval_evals: 1,", "interval_evals: 1, mutate: [optim.lr_g, model.d_width],")
    (tmp_path / "w.yaml").write_text(network)
    with pytest.raises(ConfigError, match=r"mutate: 'model\.d_width': explore keeps every data and model key of a "
                       r"member fixed \(a clone trains on with its donor's networks and data\), so it would never "
                       r"change$"):
        load_space(tmp_path / "w.yaml")
    fixed = SPACE.format(name="y", steps=400)
    for sampled, value in (("{float: [1.0e-5, 3.0e-3], log: true}", "1.0e-3"),
                           ("{float: [0.5, 2], log: true}", "{value: 1.0}"),
                           ("{categorical: [0.0, 0.5, 0.9]}", "0.5"), ("{categorical: [16, 32]}", "{value: 16}")):
        fixed = fixed.replace(sampled, value)
    (tmp_path / "y.yaml").write_text(fixed)
    with pytest.raises(ConfigError, match="pbt needs a sampled learning rate"):
        load_space(tmp_path / "y.yaml")


def test_pbt_search_clones_checkpoints_and_records_lineage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str],
                                                         ray_session: object) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    # explore changes the learning rates only: a clone of a learning member keeps its ``ok``
    text = SPACE.format(name="pbt", steps=500).replace("trials: 4", "trials: 5").replace(
        "objective: coverage", "objective: modes").replace("metrics: [prdc]", "metrics: [modes]").replace(
        'lr_d: {expr: "optim.lr_g * ttur_ratio"}', 'lr_d: {expr: "optim.lr_g * ttur_ratio * (1 if ok else 1.0e9)"}'
    ).replace("    width:", "    ok: {categorical: [true, false]}\n    width:").replace(
        "quantile: 0.25}", "quantile: 0.25, mutate: [optim.lr_g]}")
    (tmp_path / "pbt.yaml").write_text(text)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="pbt", storage=storage, direction="maximize")
    # two members that learn, two that barely move, one whose D blows up (it starts last, two at a time: when it
    # goes non-finite the first four have a score and a checkpoint)
    for lr, ok in ((2e-3, True), (1e-5, True), (2e-3, True), (1e-5, True), (1e-3, False)):
        study.enqueue_trial({"ttur_ratio": 1.0, "ok": ok, "width": 32, "optim.lr_g": lr, "optim.beta1": 0.5})
    code = main(["search", "pbt.yaml", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the member whose D blew up did not end there: it cloned a top member at once and trained on to the end
    assert code == 0 and summary["counts"]["completed"] == 5

    study = optuna.load_study(study_name="pbt", storage=storage)
    replaced = study.trials[4]
    first = replaced.user_attrs["pbt_lineage"][0]
    assert first["after"].startswith("pruned:diverged: ") and first["from_trial"] in (0, 2)  # a learning member
    assert replaced.user_attrs["config"]["optim"]["lr_d"] < 1  # trains on the donor's config, not its own
    assert "took" not in first  # every member has width 32: nothing of the networks changes
    cloned = [t for t in study.trials if t.user_attrs.get("pbt_lineage")]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pbt")
    runs = {int(r.data.tags["gantune.trial"]): r for r in client.search_runs([exp.experiment_id])
            if "gantune.trial" in r.data.tags}
    for t in cloned:
        lineage = t.user_attrs["pbt_lineage"]
        last = lineage[-1]
        assert all(e["from_trial"] != t.number and e["step"] % 100 == 0 for e in lineage)
        # Optuna keeps the first sample as params; the config the member ended on is the last explored one
        assert t.user_attrs["config"]["optim"]["lr_g"] == last["params"]["optim.lr_g"]
        run_dir = Path(t.user_attrs["run_dir"])
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)) and steps[-1] == 500  # trained on from the clone, never from step 0
        run = runs[t.number]
        assert run.data.tags["gantune.pbt.exploits"] == str(len(lineage))
        assert run.data.tags["gantune.pbt.lineage"].startswith(f"step {lineage[0]['step']}: trial ")
        assert ("after pruned:diverged" in run.data.tags["gantune.pbt.lineage"]) == (t.number == 4)
        assert run.data.params["optim.lr_g"] == str(t.params["optim.lr_g"])
        assert [a.path for a in client.list_artifacts(run.info.run_id, "pbt")]
    # exploit copies G, D and the optimisers: a cloned member's first report after the restart names the
    # checkpoint it trained on from (the donor's, at the step the lineage says)
    for t in cloned:
        restored = client.get_metric_history(runs[t.number].info.run_id, "pbt_restored_trial")
        from_steps = client.get_metric_history(runs[t.number].info.run_id, "pbt_restored_step")
        seen = {(int(a.value), int(b.value)) for a, b in zip(restored, from_steps, strict=True)}
        assert {(e["from_trial"], e["step"]) for e in t.user_attrs["pbt_lineage"]} <= seen
    assert any(t.params["optim.lr_g"] == 1e-5 for t in cloned), "no barely-moving member cloned a learning one"


def test_a_member_ended_by_a_verdict_ends_when_there_is_nobody_to_clone() -> None:
    """A verdict report asks PBT for a donor: with fewer than two other members scored, or a donor without a
    checkpoint, the member is left to end (CONTINUE: its trial function goes on to its final report) and no
    exploit is recorded."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from gantune.search.ray_private import WithoutSearcher, member_state
    from gantune.search.scheduler import RecordingPBT
    from gantune.search.trainable import VERDICT_KEY

    class Controller:
        search_alg = None

    exploits: list = []
    pbt = RecordingPBT(exploits, 1000, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                       hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
    dead, top, low = (Trial("__fake", config={"lr": 0.1}, stub=True) for _ in range(3))
    for t in (dead, top, low):
        pbt.on_trial_add(WithoutSearcher(Controller()), t)  # type: ignore[arg-type]
    verdict = {"step": 50.0, VERDICT_KEY: "pruned:collapsed: mode coverage 0"}
    member_state(pbt, dead).last_score = 0.9  # its score before the verdict: void now, never a reason to rank
    member_state(pbt, top).last_score = 0.5
    assert pbt.on_trial_result(Controller(), dead, verdict) == TrialScheduler.CONTINUE  # one other: no ranking
    assert member_state(pbt, dead).last_score is None
    member_state(pbt, low).last_score = 0.1  # two others ranked, but the top one has no checkpoint to clone
    assert pbt.on_trial_result(Controller(), dead, verdict) == TrialScheduler.CONTINUE
    assert exploits == []


def _one_member_pbt():  # type: ignore[no-untyped-def]
    """A 500-step PBT with one member added, and the controller stand-in its calls take."""
    from ray.tune.experiment import Trial

    from gantune.search.ray_private import WithoutSearcher
    from gantune.search.scheduler import RecordingPBT

    class Controller:
        search_alg = None

        def get_trials(self) -> list:
            return []

    pbt = RecordingPBT([], 500, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                       hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
    member = Trial("__fake", config={"lr": 0.1}, stub=True)
    pbt.on_trial_add(WithoutSearcher(Controller()), member)  # type: ignore[arg-type]
    return pbt, member, Controller()


def test_a_member_at_the_end_of_its_budget_is_not_ranked_or_sent_back() -> None:
    """PBT decides at a member's evaluations; the one at the last step is its end: an exploit there sent it back
    to a donor's earlier checkpoint to train the same steps again, as often as it ranked low (seen: dozens of
    times in a 500-step search)."""
    from gantune.search.ray_private import member_state

    pbt, member, controller = _one_member_pbt()
    pbt.on_trial_result(controller, member, {"step": 500.0, "objective": 0.2})
    assert member_state(pbt, member).last_result is None  # no decision at the end
    pbt.on_trial_result(controller, member, {"step": 400.0, "objective": 0.2})
    assert member_state(pbt, member).last_result == {"step": 400.0, "objective": 0.2}  # decided before it


def test_a_verdict_at_the_last_step_ends_the_member_without_a_clone() -> None:
    """Found by a review: a verdict at a member's last evaluation went to the replacement, which clones a donor's
    earlier checkpoint and trains the same steps again, past the budget; there it ends with its verdict."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from gantune.search.ray_private import WithoutSearcher
    from gantune.search.scheduler import RecordingPBT
    from gantune.search.trainable import VERDICT_KEY

    class Controller:
        search_alg = None

    replaced: list[str] = []

    class Recording(RecordingPBT):
        def _replace(self, tune_controller: object, trial: Trial, verdict: str) -> str:
            replaced.append(verdict)
            return TrialScheduler.NOOP

    pbt = Recording([], 500, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                    hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
    member = Trial("__fake", config={"lr": 0.1}, stub=True)
    pbt.on_trial_add(WithoutSearcher(Controller()), member)  # type: ignore[arg-type]
    end = {"step": 500.0, VERDICT_KEY: "pruned:collapsed: mode coverage 0"}
    assert pbt.on_trial_result(Controller(), member, end) == TrialScheduler.CONTINUE and replaced == []
    before = {"step": 400.0, VERDICT_KEY: "pruned:collapsed: mode coverage 0"}
    assert pbt.on_trial_result(Controller(), member, before) == TrialScheduler.NOOP and len(replaced) == 1


def test_a_member_never_clones_a_donor_whose_checkpoint_is_behind_it() -> None:
    """Members take turns: one at step 200 ranked below a paused donor's score of step 100 cloned that donor's
    step-100 checkpoint, trained the same steps again, ranked low again and cloned it again (144 clones in a
    search of two 200-step members). It trains on as it is; a verdict's replacement may still go back."""
    from ray.tune.experiment import Trial

    from gantune.search.ray_private import WithoutSearcher, member_state
    from gantune.search.scheduler import RecordingPBT

    class Controller:
        search_alg = None

        def get_trials(self) -> list:
            return []

    exploits: list = []
    pbt = RecordingPBT(exploits, 1000, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                       hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
    member, donor, *middle = (Trial("__fake", config={"lr": 0.1}, stub=True) for _ in range(4))
    for t in (member, donor, *middle):
        pbt.on_trial_add(WithoutSearcher(Controller()), t)  # type: ignore[arg-type]
    state = member_state(pbt, donor)
    state.last_score, state.last_result, state.last_checkpoint = 0.9, {"step": 100.0}, object()
    for t in middle:
        member_state(pbt, t).last_score = 0.5
    pbt.on_trial_result(Controller(), member, {"step": 200.0, "objective": 0.1})
    assert exploits == [] and member_state(pbt, member).last_train_time == 200


def test_the_summary_counts_the_steps_a_clone_trains_again() -> None:
    """A member replaced at step 100 by a donor's step-75 checkpoint trains 25 steps again; one that clones a
    donor ahead of it (50 -> 100) skips 50, which the donor trained; an old lineage entry counts nothing."""
    from gantune.sampling.study import trained_steps

    lineage = [{"step": 75, "from_step": 100}, {"step": 100, "from_step": 50}, {"step": 25}]
    member = optuna.trial.create_trial(value=1.0, user_attrs={"steps": 500, "pbt_lineage": lineage})
    assert trained_steps(member) == 475
    assert trained_steps(optuna.trial.create_trial(value=1.0, user_attrs={"steps": 500})) == 500


def test_a_resumed_pbt_member_starts_again_from_its_first_sample(tmp_path: Path) -> None:
    """Killed mid-search, a member that had cloned another must not restart (from step 0) on the donor's explored
    config with a lineage that no longer happened."""
    from gantune.sampling.study import interrupted_trials
    from gantune.search.searcher import OptunaStudySearcher

    space = load_space(_space(tmp_path))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="pbt", direction="maximize")
    trial = study.ask()
    first = space.sample(trial)
    trial.set_user_attr("config", {**first, "optim": {**first["optim"], "lr_g": 9e-9}})  # what an exploit left
    trial.set_user_attr("pbt_lineage", [{"step": 200, "from_trial": 3, "params": {}, "changed": {}}])
    searcher = OptunaStudySearcher(space, study, 0, interrupted_trials(study), tmp_path / "runs")
    config = searcher.suggest("ray-1")
    assert config is not None and config["trial"] == first and config["params"] == trial.params
    assert study.trials[0].user_attrs["pbt_lineage"] == [] and study.trials[0].user_attrs["config"] == first


def test_a_clone_of_a_recipe_member_takes_its_recipe_and_explores_again(tmp_path: Path) -> None:
    """The warm-start recipe's member trains with overrides the space does not mention (its optimiser). A member
    that cloned it kept its own (none): every later explore rebuilt candidates without them, saw the optimiser
    kind change, and dropped every change, so clones of that clone never explored again."""
    from ray.tune.experiment import Trial

    from gantune.search.ray_private import WithoutSearcher
    from gantune.search.scheduler import RecordingPBT

    class Controller:
        search_alg = None

    space = load_space(_space(tmp_path))
    start = {"ttur_ratio": 1.0, "width": 16, "optim.lr_g": 1e-3, "optim.beta1": 0.5}
    overrides = {"optim.name": "rmsprop"}
    donor = Trial("__fake", config={**_config(space, start), "recipe": "points", "recipe_overrides": overrides,
                                    "trial": space.sample(optuna.trial.FixedTrial(start), overrides)}, stub=True)
    member = Trial("__fake", config={**_config(space, start), "recipe": None, "recipe_overrides": {}}, stub=True)
    pbt = RecordingPBT([], 1000, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                       custom_explore_fn=Explorer(space, seed=0), require_attrs=False)
    for t in (donor, member):
        pbt.on_trial_add(WithoutSearcher(Controller()), t)  # type: ignore[arg-type]
    clone, _ = pbt._get_new_config(member, donor)
    assert clone["recipe_overrides"] == overrides and clone["recipe"] == "points"
    assert clone["trial"]["optim"]["name"] == "rmsprop" and clone["number"] == 7
    explorer, changed = Explorer(space, seed=1), set()
    for _ in range(20):  # the clone's own later explores (as a donor of others) change its hyperparameters
        again = explorer(clone)
        assert again["trial"]["optim"]["name"] == "rmsprop"
        changed |= {k for k in start if again["params"][k] != start[k]}
    assert changed


def test_a_clone_says_which_networks_and_data_it_took_from_its_donor() -> None:
    """A member sampled at z_dim 4 and 8 px trained its donor's z_dim 2 and 16 px from its clone on: the progress
    line listed the explored learning rates only, and nothing recorded the rest."""
    from gantune.search.scheduler import taken

    member = {"data": {"name": "digits", "resolution": 8}, "model": {"z_dim": 4, "g_width": 32},
              "loss": {"name": "hinge"}, "optim": {"lr_g": 1e-3}}
    donor = {"data": {"name": "digits", "resolution": 16}, "model": {"z_dim": 2, "g_width": 32},
             "loss": {"name": "hinge"}, "optim": {"lr_g": 2e-3, "name": "rmsprop"}}
    assert taken(member, donor) == {"data.resolution": 16, "model.z_dim": 2, "optim.name": "rmsprop"}
    assert taken(member, member) == {}
    # a recipe's member spells out what others leave to the defaults (arch auto is mlp on points): no difference
    recipe = {"data": {"name": "grid25"}, "model": {"arch": "mlp", "d_norm": "none"}, "loss": {"name": "nonsaturating"},
              "optim": {"name": "adam"}}
    assert taken({"data": {"name": "grid25"}}, recipe) == {}


def test_pbt_leaves_a_report_a_verdict_fired_on_to_the_member() -> None:
    """PBT decided on the report a verdict fired on: it paused the member there (another waiting) or ranked it,
    the member came back from that report's checkpoint with a fresh monitor, and the verdict was lost (a member
    at lr_g 1e6 trained to its end, grad norm 7.7e13 at every evaluation). Left alone, the member says so in its
    next report and is replaced or ends; that report's state is no checkpoint to clone."""
    from ray.tune.schedulers import TrialScheduler

    from gantune.search.ray_private import member_state
    from gantune.search.trainable import STOPPING_KEY

    pbt, member, controller = _one_member_pbt()
    failed = {"step": 100.0, "objective": 0.9, STOPPING_KEY: "pruned:diverged"}
    assert pbt.on_trial_result(controller, member, failed) == TrialScheduler.CONTINUE
    assert member_state(pbt, member).last_result is None and member_state(pbt, member).last_score is None


def test_a_member_back_from_its_own_checkpoint_is_judged_on_its_history(tmp_path: Path) -> None:
    """Paused and resumed by PBT, a member's monitor started empty each time: with a decision every two
    evaluations and a patience of two, a collapsed member never reached a verdict and ended "completed"."""
    from gantune.health import HealthMonitor
    from gantune.search.trainable import RESTORED_STEP, RESTORED_TRIAL, member_monitor
    from tests.conftest import tiny

    cfg = tiny(eval={"every": 20}, health={"warmup_evals": 1, "patience": 2})
    low = {"mode_coverage": 0.0, "hq": 0.0, "eval_s": 1.0}  # no sample near any mode, three evaluations
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, **low}) + "\n" for s in (20, 40, 60)))
    own = member_monitor(HealthMonitor.for_trial(cfg), tmp_path, {RESTORED_TRIAL: 3.0, RESTORED_STEP: 60.0}, 3)
    assert own is not None and (verdict := own({"step": 61.0})) is not None and verdict.rule == "mode_coverage"
    early = member_monitor(HealthMonitor.for_trial(cfg), tmp_path, {RESTORED_TRIAL: 3.0, RESTORED_STEP: 40.0}, 3)
    assert isinstance(early, HealthMonitor) and early.verdict is None and early.state.checks == 2
    assert early({"step": 60.0, **low}) is not None  # the third low evaluation is its second counted one
    clone = HealthMonitor.for_trial(cfg)
    assert member_monitor(clone, tmp_path, {RESTORED_TRIAL: 1.0, RESTORED_STEP: 40.0}, 3) is clone
    assert clone.state.checks == 0  # another member's checkpoint: judged afresh
    # paused again later: its history is what it trained since the clone, not the replaced config's records
    # that stay in its metrics.jsonl (they stopped a healthy clone with the old config's verdict)
    later = member_monitor(HealthMonitor.for_trial(cfg), tmp_path, {RESTORED_TRIAL: 3.0, RESTORED_STEP: 60.0}, 3)
    assert isinstance(later, HealthMonitor) and later.verdict is None and later.state.checks == 1


def test_a_pbt_member_a_verdict_stops_at_an_evaluation_ends_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   ray_session: object) -> None:
    """Two members, decisions at every evaluation; lr_g 1e6 blows the gradients up by the first log (step 20, an
    evaluation). It trained to step 60: PBT paused it on that report and it came back from its checkpoint with
    a fresh monitor, twice. With one other member there is nobody to clone: it ends with its verdict at 20."""
    from tests.conftest import enqueue_lrs

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "name: p\nsearch:\n  trials: 2\n  max_steps: 60\n  eval_every: 20\n  sampler: random\n"
        "  pruning: {scheduler: pbt, health: true, pbt: {interval_evals: 1}}\ndata: {name: grid25}\n"
        "model: {z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}\n"
        "optim:\n  lr_g: {categorical: [0.001, 1000000.0]}\ntrain: {batch_size: 32, log_every: 20}\n"
        "eval: {n_samples: 200}\n")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    enqueue_lrs(storage, "p", [1000000.0, 0.001])
    # 1 where the other member collapses too (no trial ends with a result; with a monitor fed its whole history
    # under PBT, a member stuck at 1 of 25 modes is stopped as it is outside PBT)
    assert main(["search", "p.yaml", "--storage", storage, "--no-tracking", "--quiet"]) in (0, 1)
    trials = optuna.load_study(study_name="p", storage=storage).trials
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)
    blown = trials[0]
    assert blown.params["optim.lr_g"] == 1e6
    assert (blown.user_attrs["gantune_status"], blown.user_attrs["steps"]) == ("pruned:diverged", 20)


def test_pbt_fills_a_free_slot_before_it_pauses_a_member_for_another() -> None:
    """Found by a review: on 2 CPUs PBT ran one member at a time. Ray pauses a member at each decision while
    another waits; the paused member's worker process went to the waiting one (reuse_actors), whose own process
    was still starting, and so on forever: one worker trained. With a slot free the member trains on and the
    waiting one starts in that slot; with every slot taken the members take turns as before."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from gantune.search.ray_private import WithoutSearcher
    from gantune.search.scheduler import RecordingPBT

    member, waiting, other = (Trial("__fake", config={"lr": 0.1}, stub=True) for _ in range(3))
    member.set_status(Trial.RUNNING)

    class Controller:
        search_alg = None

        def __init__(self, trials: list[Trial]) -> None:
            self.trials = trials

        def get_trials(self) -> list[Trial]:
            return self.trials

    def decide(slots: int, trials: list[Trial]) -> str:
        pbt = RecordingPBT([], 1000, slots, time_attr="step", metric="objective", mode="max",
                           perturbation_interval=100, hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
        for t in trials:
            pbt.on_trial_add(WithoutSearcher(Controller(trials)), t)  # type: ignore[arg-type]
        return pbt.on_trial_result(Controller(trials), member, {"step": 100.0, "objective": 0.5})

    assert decide(2, [member, waiting]) == TrialScheduler.CONTINUE  # the waiting member starts in the free slot
    assert decide(1, [member, waiting]) == TrialScheduler.PAUSE  # one slot: it makes way
    other.set_status(Trial.RUNNING)
    assert decide(2, [member, other, waiting]) == TrialScheduler.PAUSE  # both slots taken: turns
    assert decide(0, [member, waiting]) == TrialScheduler.PAUSE  # slots unknown: Ray's rule
    # a slot counted that the waiting member never got (it still waits at the member's next decision): turns
    other.set_status(Trial.PENDING)
    pbt = RecordingPBT([], 1000, 2, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                       hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
    for t in (member, waiting):
        pbt.on_trial_add(WithoutSearcher(Controller([member, waiting])), t)  # type: ignore[arg-type]
    first = pbt.on_trial_result(Controller([member, waiting]), member, {"step": 100.0, "objective": 0.5})
    again = pbt.on_trial_result(Controller([member, waiting]), member, {"step": 200.0, "objective": 0.5})
    assert (first, again) == (TrialScheduler.CONTINUE, TrialScheduler.PAUSE)


def test_pbt_counts_its_slots_node_by_node() -> None:
    """A trial runs on one node: two nodes of 3 CPUs hold two 2-CPU trials, not the 3 their sum would."""
    from gantune.search.runner import trial_slots

    assert trial_slots({"cpu": 2.0, "gpu": 0.0}, [{"CPU": 3.0}, {"CPU": 3.0}]) == 2
    assert trial_slots({"cpu": 1.0, "gpu": 0.25}, [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0}]) == 4
    assert trial_slots({"cpu": 4.0, "gpu": 0.0}, [{"CPU": 2.0}]) == 1  # never fewer than one


def test_a_clone_starts_from_a_copy_of_its_donors_checkpoint(tmp_path: Path) -> None:
    """Found by a review: with members side by side, Tune (num_to_keep) deleted the donor's checkpoint while the
    donor trained on, before the clone restored from it ("Could not recover from checkpoint as it does not exist
    on storage anymore"): the clone failed. It restores from a copy Tune does not track; a checkpoint gone already
    is no exploit."""
    from ray.tune import Checkpoint
    from ray.tune.experiment import Trial

    from gantune.search.ray_private import WithoutSearcher, member_state
    from gantune.search.scheduler import RecordingPBT, pinned

    donor_dir = tmp_path / "trial" / "checkpoint_000003"
    donor_dir.mkdir(parents=True)
    (donor_dir / "checkpoint.pt").write_bytes(b"state")
    copy = pinned(Checkpoint.from_directory(str(donor_dir)), "member-0")
    (donor_dir / "checkpoint.pt").unlink()
    donor_dir.rmdir()  # what num_to_keep does while the clone waits for its slot
    assert (Path(copy.path) / "checkpoint.pt").read_bytes() == b"state"
    assert Path(copy.path).parent == tmp_path / "trial"
    with pytest.raises(FileNotFoundError):
        pinned(Checkpoint.from_directory(str(donor_dir)), "member-1")

    class Controller:
        search_alg = None

    exploits: list = []
    pbt = RecordingPBT(exploits, 1000, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                       hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
    member, donor = (Trial("__fake", config={"lr": 0.1, "trial": {}}, stub=True) for _ in range(2))
    for t in (member, donor):
        pbt.on_trial_add(WithoutSearcher(Controller()), t)  # type: ignore[arg-type]
    member_state(pbt, donor).last_checkpoint = Checkpoint.from_directory(str(donor_dir))  # deleted already
    pbt._exploit(Controller(), member, donor)
    assert exploits == [] and member.status == Trial.PENDING  # no exploit: it trains on as it is


def test_a_clone_copy_on_a_full_disk_is_no_exploit_and_leaves_no_part(tmp_path: Path, small_disk: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a review: copying the donor's checkpoint onto a full disk raised out of the scheduler and stopped
    the search, leaving half a copy. The member trains on as it is, with a warning; the copies clones restored
    from go at the search's end."""
    from ray.tune import Checkpoint
    from ray.tune.experiment import Trial

    from gantune.search.ray_private import WithoutSearcher, member_state
    from gantune.search.scheduler import RecordingPBT, pinned

    donor_dir = small_disk / "trial" / "checkpoint_000001"
    donor_dir.mkdir(parents=True)
    (donor_dir / "checkpoint.pt").write_bytes(bytes(120 * 1024))  # a second copy does not fit

    class Controller:
        search_alg = None

    exploits: list = []
    pbt = RecordingPBT(exploits, 1000, time_attr="step", metric="objective", mode="max", perturbation_interval=100,
                       hyperparam_mutations={"lr": [0.1, 0.2]}, require_attrs=False)
    member, donor = (Trial("__fake", config={"lr": 0.1, "trial": {}, "number": n}, stub=True) for n in (0, 1))
    for t in (member, donor):
        pbt.on_trial_add(WithoutSearcher(Controller()), t)  # type: ignore[arg-type]
    member_state(pbt, donor).last_checkpoint = Checkpoint.from_directory(str(donor_dir))
    pbt._exploit(Controller(), member, donor)
    assert exploits == [] and member.status == Trial.PENDING
    assert sorted(p.name for p in (small_disk / "trial").iterdir()) == ["checkpoint_000001"]
    assert "trial 0 does not clone trial 1: its checkpoint could not be copied" in capsys.readouterr().err

    roomy = tmp_path / "trial" / "checkpoint_000001"
    roomy.mkdir(parents=True)
    (roomy / "checkpoint.pt").write_bytes(b"state")
    copy = pinned(Checkpoint.from_directory(str(roomy)), "member-0")
    pbt._copies.append((copy.filesystem, copy.path))
    pbt.drop_copies()
    assert not Path(copy.path).exists() and roomy.is_dir()


def test_pbt_on_a_cluster_asks_each_node_whether_it_sees_the_runs_folder(tmp_path: Path, ray_session: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray keeps PBT's checkpoints under the runs folder, and a member cloned on one node trains on another from
    its donor's checkpoint: on a folder only the driver's disk holds, every member placed on another node failed at
    its first checkpoint. Each live node is asked, by a task placed on it, for a file made for the question (here
    one node, this machine's, which sees it; then a file it cannot see, as another machine's disk would not hold)."""
    import tempfile

    from gantune.errors import GantuneError
    from gantune.search.runner import check_shared

    run_root = tmp_path / "runs" / "pbt"  # not made yet: asked of the nearest folder there is
    check_shared(run_root, "the Ray cluster at x")
    assert [p.name for p in tmp_path.iterdir()] == []  # the question's file goes with it

    class Unseen:  # the question's file, where no node finds it
        def __init__(self, **kw: Any) -> None:
            self.name = str(tmp_path / "not-on-this-disk")

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", Unseen)
    with pytest.raises(GantuneError, match=rf"pruning.scheduler pbt on the Ray cluster at x: node [\d.]+ does not see "
                                           rf"{tmp_path} \(--runs-dir\): PBT's members clone"):
        check_shared(run_root, "the Ray cluster at x")
