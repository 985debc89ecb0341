"""``search.sampler_options``: what a space passes to its Optuna sampler, checked before anything starts; and the
objectives' directions."""

from __future__ import annotations

import optuna
import pytest
from pydantic import ValidationError

from gantune.sampling.settings import SAMPLERS, SearchSettings


def _random_draws(sampler: optuna.samplers.BaseSampler, n: int = 10) -> list[float]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_categorical("c", ["a", "b", "c"])
        study.tell(trial, (x - 0.3) ** 2)
        out.append(x)
    return out


@pytest.mark.parametrize(("options", "startup"), [({}, 5), ({"n_startup_trials": 8}, 8)])
def test_sampler_options_reach_the_sampler(options: dict, startup: int) -> None:
    """TPE draws its first ``n_startup_trials`` from a random sampler of its seed: the option is the length of
    that random start (gantune's own 5 when the space leaves it)."""
    settings = SearchSettings.model_validate({"sampler": "tpe", "seed": 0, "sampler_options": options})
    tpe = _random_draws(SAMPLERS.get("tpe").build(settings))
    random = _random_draws(optuna.samplers.RandomSampler(seed=0))
    assert [a == b for a, b in zip(tpe, random, strict=True)] == [True] * startup + [False] * (10 - startup)


@pytest.mark.parametrize(("sampler", "options", "message"), [
    ("tpe", {"n_startup": 10}, r"TPESampler has no option 'n_startup' a space can set; choose from: n_startup_trials"),
    ("tpe", {"seed": 1}, r"no option 'seed'"),  # search.seed is the seed
    ("tpe", {"gamma": "x"}, r"no option 'gamma'"),  # a callable has no YAML form
    ("tpe", {"multivariate": "yes"}, r"multivariate: 'yes' is not true or false"),
    ("tpe", {"multivariate": 1}, r"multivariate: 1 is not true or false"),
    ("tpe", {"n_startup_trials": 2.5}, r"n_startup_trials: 2.5 is not a whole number"),
    ("tpe", {"n_startup_trials": True}, r"n_startup_trials: True is not a whole number"),
    ("random", {"n_startup_trials": 3}, r"RandomSampler has no option 'n_startup_trials'"),
    ("tpe", {"n_startup_trials": -3}, r"n_startup_trials: -3 is a count, at least 0"),  # Optuna took it as 0
    ("gp", {"n_startup_trials": -1}, r"n_startup_trials: -1 is a count, at least 0"),
    ("tpe", {"group": True, "multivariate": False}, r"sampler_options: ``group`` option can only be enabled"),
    ("qmc", {"qmc_type": "grid"}, r"sampler_options: The `qmc_type='grid'` is invalid"),  # refused by Optuna
])
def test_sampler_options_are_checked_against_the_sampler(sampler: str, options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SearchSettings.model_validate({"sampler": sampler, "sampler_options": options})


def test_sampler_options_a_space_may_set() -> None:
    SearchSettings.model_validate({"sampler": "tpe", "sampler_options": {
        "n_startup_trials": 10, "multivariate": False, "constant_liar": False, "n_ei_candidates": 48}})
    SearchSettings.model_validate({"sampler": "tpe", "sampler_options": {"group": True}})
    SearchSettings.model_validate({"sampler": "qmc", "sampler_options": {"qmc_type": "halton", "scramble": True}})
    # an argument Optuna defaults to None, typed by its annotation (``int | None``): it was refused as no option
    settings = SearchSettings.model_validate({"sampler": "cmaes", "sampler_options": {"popsize": 8}})
    assert SAMPLERS.get("cmaes").build(settings)._popsize == 8
    with pytest.raises(ValidationError, match=r"popsize: 'eight' is not a whole number"):
        SearchSettings.model_validate({"sampler": "cmaes", "sampler_options": {"popsize": "eight"}})


@pytest.mark.parametrize(("sampler", "option", "value"), [("tpe", "consider_endpoints", True),
                                                           ("tpe", "prior_weight", 2.0), ("cmaes", "sigma0", 0.5)])
def test_a_sampler_option_optuna_deprecates_is_refused_saying_so(sampler: str, option: str, value: object) -> None:
    """Refused as "no option a space can set" although the sampler takes it: Optuna deprecates it (its warning
    would open every search)."""
    with pytest.raises(ValidationError, match=rf"sampler_options: {option}: `{option}` has been deprecated in v"
                                              r"[\d.]+; leave it out"):
        SearchSettings.model_validate({"sampler": sampler, "sampler_options": {option: value}})


@pytest.mark.parametrize(("objective", "directions"), [
    ("fid", ["minimize"]), ("coverage", ["maximize"]), ("stacked_kl", ["minimize"]), ("is", ["maximize"]),
    (["fid", "coverage"], ["minimize", "maximize"]), (["recall", "mode_kl"], ["maximize", "minimize"]),
])
def test_each_objective_goes_its_own_way_by_default(objective: str | list[str], directions: list[str]) -> None:
    """The default was one ``minimize`` for all: ``objective: coverage`` without a direction searched for the
    most collapsed generator, and ASHA kept it."""
    settings = SearchSettings.model_validate({"objective": objective})
    assert settings.directions == directions
    assert SearchSettings.model_validate(settings.model_dump()).directions == directions  # as the study stores it


@pytest.mark.parametrize(("settings", "start"), [
    ({"trials": 3}, 5), ({"trials": 8, "sampler": "gp"}, 10),  # Optuna's GP starts with 10 random trials
    ({"trials": 12, "sampler_options": {"n_startup_trials": 20}}, 20), ({"trials": 6}, None),
    ({"trials": 11, "sampler": "gp"}, None), ({"trials": 2, "sampler": "random"}, None), ({"trials": 1}, None),
])
def test_a_search_whose_sampler_never_models_is_said(settings: dict, start: int | None) -> None:
    """A GP search of 8 trials (the size ``gantune init digits`` writes) was a random search without a word."""
    note = SearchSettings.model_validate(settings).random_only()
    if start is None:
        assert note is None
    else:
        assert note == (f"sampler {settings.get('sampler', 'tpe')} draws its first {start} trials at random "
                        f"(n_startup_trials) and this search has {settings['trials']}: every trial is a random "
                        f"draw; raise search.trials past {start} or lower search.sampler_options.n_startup_trials")


@pytest.mark.parametrize(("quick_every", "eval_every", "note"), [
    (1000, 500, True), (500, 500, True), (3000, 500, True),  # on every evaluation, or past the last step
    (250, 500, False), (300, 500, False), (0, 500, False),
])
def test_quick_checks_that_never_run_are_said(quick_every: int, eval_every: int, note: bool) -> None:
    """``quick_every: 1000`` with ``eval_every: 500`` ran no quick check (a full evaluation runs instead), silently."""
    settings = SearchSettings.model_validate({"trials": 10, "max_steps": 2000, "eval_every": eval_every,
                                              "quick_every": quick_every, "pruning": {"grace_evals": 1}})
    expected = [f"quick_every {quick_every} runs no quick check: each would fall on a full evaluation (eval_every "
                f"{eval_every}) or past max_steps 2000; make it smaller than eval_every, or 0"] if note else []
    assert settings.warnings() == expected


def test_a_stored_config_that_minimised_coverage_still_loads() -> None:
    """Runs from before, when a left-out direction was minimize, stored ``health: {objective: coverage, mode: min}``
    in their configs and generator files: sampling from them must not be refused; a run about to start is."""
    from gantune.catalogue import config_from_dict, objective_side

    cfg = config_from_dict({"data": {"name": "grid25"}, "eval": {"metrics": ["prdc"]},
                            "health": {"objective": "coverage", "mode": "min"}})
    assert objective_side(cfg) == ("health.mode: the objective 'coverage' is better higher: maximise it (health.mode: "
                                   "max; in a search space, search.direction: maximize)")


def test_resuming_a_search_made_when_a_left_out_direction_was_minimize_says_so(tmp_path: object) -> None:
    """A coverage study from before the better-side default was created minimising; the refusal named no
    direction, and the space the user had not changed now said maximize."""
    from gantune.errors import GantuneError
    from gantune.sampling.study import check_study

    storage = f"sqlite:///{tmp_path}/o.db"
    optuna.create_study(study_name="old", storage=storage, direction="minimize")
    with pytest.raises(GantuneError, match=r"^--resume: search 'old' was created with direction minimize, and this "
                       r"space says maximize \(a direction left out is each objective's better side, where it once "
                       r"was minimize\): resume with direction: minimize, or start another with --name$"):
        check_study("old", storage, SearchSettings.model_validate({"objective": "coverage"}), True, {})


def test_a_sampler_whose_package_is_missing_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """CmaEsSampler builds without the ``cmaes`` package and imports it only when it samples: every trial but
    the first random one failed, and the search exited 0."""
    import importlib.util

    real = importlib.util.find_spec
    SearchSettings(sampler="cmaes")  # installed with the test extras
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else real(name, *a))
    with pytest.raises(ValidationError, match=r"sampler: cmaes needs the cmaes package \(pip install cmaes\)"):
        SearchSettings(sampler="cmaes")


def test_an_empty_objective_is_refused() -> None:
    """``objective: []`` was an IndexError traceback at the space's load."""
    with pytest.raises(ValidationError, match="objective: empty"):
        SearchSettings(objective=[])


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc", "gp", "cmaes"])
def test_a_sampler_of_one_objective_is_refused_for_several(sampler: str) -> None:
    """``sampler: cmaes`` with ``objective: [coverage, fid]`` loaded, then every trial failed at its first draw
    ("CmaEsSampler cannot be used" for multi-objective optimization) and the search ended in "every trial failed"."""
    several = {"sampler": sampler, "objective": ["coverage", "fid"]}
    if sampler != "cmaes":  # the others sample a study of two objectives
        from gantune.sampling.settings import SAMPLERS

        settings = SearchSettings.model_validate({**several, "sampler_options": {"n_startup_trials": 1}}
                                                 if sampler in ("tpe", "gp") else several)
        study = optuna.create_study(directions=settings.directions, sampler=SAMPLERS.get(sampler).build(settings))
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3)
        assert len(study.trials) == 3 and all(t.values is not None for t in study.trials)
        return
    SearchSettings.model_validate({**several, "objective": "coverage"})
    with pytest.raises(ValidationError, match=r"sampler: cmaes optimises one objective and this search has 2 "
                       r"\(coverage, fid\): choose one of tpe, random, qmc, gp, or one objective"):
        SearchSettings.model_validate(several)


@pytest.mark.parametrize(("pruning", "objective", "said"), [
    ({}, ["coverage", "fid"], True), ({"asha": False}, ["coverage", "fid"], False), ({}, "coverage", False),
    ({"scheduler": "pbt"}, ["coverage", "fid"], False),
])
def test_asha_on_several_objectives_is_said(pruning: dict, objective: object, said: bool) -> None:
    """ASHA ranks trials on the first objective alone, and a stopped trial has no values in a multi-objective
    study: a trial with the best recall could be cut on its FID, without a word."""
    settings = SearchSettings.model_validate({"trials": 10, "objective": objective, "pruning": pruning})
    notes = [w for w in settings.warnings() if w.startswith("ASHA stops trials on the first objective alone")]
    assert notes == ([] if not said else [
        "ASHA stops trials on the first objective alone (coverage), and a stopped trial leaves the Pareto front of "
        "coverage, fid: a trial good on the others can be cut early; set search.pruning.asha: false to keep the "
        "front whole (health verdicts still prune)"])


def test_a_huge_value_in_a_refusal_is_cut_short() -> None:
    """A YAML alias "bomb" (nine levels of eight aliases) as a categorical choice or a sampler option: the one-line
    refusal repeated its repr in full, 226 MB, or ran out of memory building it."""
    from gantune.sampling.specs import CategoricalSpec

    huge: object = ["x"] * 8
    for _ in range(8):
        huge = [huge] * 8  # 8**9 leaves, one list object per level
    with pytest.raises(ValidationError) as refused:
        CategoricalSpec.model_validate({"categorical": ["a", huge]})
    assert len(refused.value.errors()[0]["msg"]) < 1000  # what the one line says (not pydantic's own repr)
    with pytest.raises(ValidationError) as refused:
        SearchSettings.model_validate({"sampler_options": {"n_startup_trials": huge}})
    assert len(refused.value.errors()[0]["msg"]) < 1000


def test_a_study_made_by_hand_to_queue_trials_in_with_optunas_default_direction_says_how_to_make_it(
        tmp_path: object) -> None:
    """``optuna.create_study(name)`` (minimize) and ``enqueue_trial``, then a search for coverage: the line said
    "--resume: ... resume with direction: minimize", a flag not given and a direction the space then refused."""
    from gantune.errors import GantuneError
    from gantune.sampling.study import check_study

    storage = f"sqlite:///{tmp_path}/q.db"
    optuna.create_study(study_name="q", storage=storage).enqueue_trial({"optim.lr_g": 0.001})
    with pytest.raises(GantuneError, match=r"^study 'q' in .*q.db holds no trial run yet and was created with "
                                           r"direction minimize, where this space says maximize: create it with "
                                           r"direction='maximize' before queueing trials in it, or delete it$"):
        check_study("q", storage, SearchSettings.model_validate({"objective": "coverage"}), False, {})


def test_a_pbt_study_stored_with_a_concurrency_is_still_read() -> None:
    """A space file that sets ``concurrency`` under PBT is refused (dropped without a word), on the file's own keys:
    a study an earlier release stored with it is read again by export, report and review, which must not fail."""
    stored = SearchSettings.model_validate({"trials": 4, "max_steps": 100, "eval_every": 50, "concurrency": 2,
                                            "pruning": {"scheduler": "pbt"}}).model_dump()
    assert SearchSettings.model_validate(stored).concurrency == 2
