"""Provenance: every evaluation says how it was measured; trials measured differently are not ranked together;
evaluating never moves the training RNG."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from gantune import provenance
from gantune.sampling.study import best_trial, ranked, top_trials
from gantune.trial import train
from tests.conftest import tiny, tiny_images

MEASURED = {"extractor": "digits", "weights": "abc", "n": 1000, "quick_n": 300, "reference_n": 360,
            "reference": "heldout", "resolution": 16, "floor": {"fid": 2.0}}


@dataclass
class _T:
    number: int
    user_attrs: dict[str, Any] = field(default_factory=dict)


def test_comparable_keeps_the_newest_measurement_and_names_the_difference() -> None:
    old = [_T(i, {"provenance": {**MEASURED, "n": 500}}) for i in range(3)]
    new = [_T(i, {"provenance": MEASURED}) for i in range(3, 5)]
    kept, note = provenance.comparable(old + new)
    assert [t.number for t in kept] == [3, 4]
    assert note == "trials 0, 1, 2 were measured differently (n 500 vs 1000): ranking trials 3, 4 only"
    assert provenance.comparable(new) == (new, None)
    unrecorded = [_T(0)]
    kept, note = provenance.comparable(unrecorded + new)
    assert [t.number for t in kept] == [3, 4] and note is not None and "no recorded provenance" in note


def test_trials_on_other_data_were_measured_differently_and_unrecorded_data_is_the_newests() -> None:
    """A search resumed with its data changed (grid25 -> ring8) ranked both datasets' coverage together."""
    grid = [_T(i, {"provenance": {**MEASURED, "data": "grid25"}}) for i in range(2)]
    ring = [_T(i, {"provenance": {**MEASURED, "data": "ring8"}}) for i in range(2, 4)]
    kept, note = provenance.comparable(grid + ring)
    assert [t.number for t in kept] == [2, 3]
    assert note == "trials 0, 1 were measured differently (data grid25 vs ring8): ranking trials 2, 3 only"
    before = [_T(0, {"provenance": MEASURED})]  # recorded before the data was: taken as the newest trial's
    assert provenance.comparable(before + ring) == (before + ring, None)


def test_the_note_names_every_way_the_others_differ() -> None:
    """It named the first trial's way only: trials 0 and 2 "(data digits max_images 200 vs digits max_images
    1000)" where trial 2 had the newest's data at another resolution."""
    ours = {**MEASURED, "data": "digits max_images 1000"}
    trials = [_T(0, {"provenance": {**ours, "data": "digits max_images 200"}}), _T(1, {"provenance": ours}),
              _T(2, {"provenance": {**ours, "resolution": 8}}), _T(3, {"provenance": ours})]
    kept, note = provenance.comparable(trials)
    assert [t.number for t in kept] == [1, 3]
    assert note == ("trials 0, 2 were measured differently (resolution 8 vs 16, data digits max_images 200 vs "
                    "digits max_images 1000): ranking trials 1, 3 only")


def _study(values: dict[int, tuple[float, dict[str, Any]]]) -> optuna.Study:
    study = optuna.create_study(direction="minimize")
    for number in sorted(values):
        value, measured = values[number]
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"provenance": measured, "config": {}}))
    return study


def test_a_better_value_measured_differently_is_not_the_best() -> None:
    # trials 0-1 scored FID on 200 samples (a resumed search changed eval.n_samples): not comparable with 2-3
    study = _study({0: (1.0, {**MEASURED, "n": 200}), 1: (1.5, {**MEASURED, "n": 200}),
                    2: (4.0, MEASURED), 3: (3.0, MEASURED)})
    best = best_trial(study)
    assert best is not None and best.number == 3
    assert [t.number for t in top_trials(study, 4)] == [3, 2]
    assert ranked(study)[1] == "trials 0, 1 were measured differently (n 200 vs 1000): ranking trials 2, 3 only"


def test_with_two_objectives_no_trial_ranks_above_one_that_dominates_it() -> None:
    """Found by a fuzz: the summary named the Pareto trial (coverage tied, lower FID) while export took the
    dominated one, first on coverage by trial number."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.15, 14.34], [0.19, 14.00], [0.19, 13.99], [0.10, 5.0]):
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs={"provenance": MEASURED, "config": {}}))
    best = best_trial(study)
    assert best is not None and best.number == 2
    assert [t.number for t in top_trials(study, 4)] == [2, 3, 1, 0]  # the front (2, 3) first, each by coverage


def test_export_and_report_say_so_in_one_line(tmp_path: Path, capsys: Any) -> None:
    from gantune.cli import main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="mixed", storage=storage)
    settings = {"objective": "fid", "direction": "minimize", "trials": 2, "max_steps": 10, "eval_every": 10}
    study.set_user_attr("settings", settings)
    cfg = tiny().to_dict()
    for value, measured in ((1.0, {**MEASURED, "weights": "old"}), (3.0, MEASURED)):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            "provenance": measured, "config": cfg, "gantune_status": "completed", "steps": 10}))
    assert main(["export", "mixed", "--storage", storage, "--out", str(tmp_path / "best.yaml")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["note: trial 0 was measured differently (weights old vs abc): ranking trial 1 only"]
    text = (tmp_path / "best.yaml").read_text()
    assert "# chosen: trial 1" in text and "# real-vs-real fid (training data scored like samples): 2" in text
    assert main(["report", "mixed", "--storage", storage, "--out", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().err.strip().splitlines() == err
    page = (tmp_path / "r.html").read_text()
    assert "measured differently" in page
    # found in review: Optuna's charts drew the whole study, their best line at a trial the page leaves out
    assert page.count("The charts of the objective leave out the trials measured otherwise: trial 0 was") == 2  # (the
    # history and the slice: the rest need two comparable trials)
    from gantune.report import _comparable

    charted, _ = _comparable(optuna.load_study(study_name="mixed", storage=storage))
    # each trial keeps its number (a study made of trial 1 alone numbered it 0), the one left out as failed
    assert [(t.number, t.state.name, t.values) for t in charted.trials] == [(0, "FAIL", None), (1, "COMPLETE", [3.0])]


def test_a_floor_on_fewer_training_samples_is_said_in_the_export_and_the_report(tmp_path: Path, capsys: Any) -> None:
    """digits' 1,437 training images under n_samples 2,000: the export's header and the report's card called that
    floor "training data scored like samples" (the same N as the value beside it)."""
    from gantune.cli import main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="few", storage=storage)
    study.set_user_attr("settings", {"objective": "fid", "direction": "minimize", "trials": 1, "max_steps": 10,
                                     "eval_every": 10})
    measured = {**MEASURED, "n": 2000, "floor_n": 1437}
    study.add_trial(optuna.trial.create_trial(value=4.0, user_attrs={
        "provenance": measured, "config": tiny().to_dict(), "gantune_status": "completed", "steps": 10}))
    assert main(["export", "few", "--storage", storage, "--out", str(tmp_path / "best.yaml")]) == 0
    assert main(["report", "few", "--storage", storage, "--out", str(tmp_path / "r.html")]) == 0
    said = "all 1437 training samples, fewer than the 2000 a trial scores"
    assert f"\n# real-vs-real fid ({said}): 2\n" in (tmp_path / "best.yaml").read_text()
    assert f"real-vs-real fid<b>2</b>{said}</div>" in (tmp_path / "r.html").read_text()


def test_a_multi_objective_export_says_which_of_the_front_it_took(tmp_path: Path, capsys: Any) -> None:
    """Two trials on the Pareto front of [coverage, fid]: export took the first objective's best without a word."""
    from gantune.cli import main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="two", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("settings", {"objective": ["coverage", "fid"], "direction": ["maximize", "minimize"],
                                     "trials": 2, "max_steps": 10, "eval_every": 10})
    for values in ([0.5, 3.0], [0.4, 1.0]):  # trained as many steps as their configs say
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs={
            "provenance": MEASURED, "config": tiny(train={"steps": 10}).to_dict(), "gantune_status": "completed",
            "steps": 10}))
    assert main(["export", "two", "--storage", storage, "--out", str(tmp_path / "best.yaml")]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: 2 objectives (coverage, fid): the chosen trial is the Pareto front's best on coverage; export another "
        "with --trial N (gantune report shows the front)"]
    assert main(["export", "two", "--storage", storage, "--out", str(tmp_path / "best.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the second objective was missing
    assert out["values"] == {"coverage": 0.5, "fid": 3.0} and out["chosen"].endswith("coverage 0.5, fid 3")
    text = (tmp_path / "best.yaml").read_text()  # the file says it too: stderr was the only place
    assert "# chosen: trial 0, search coverage 0.5, fid 3\n" in text and (
        "\n# 2 objectives (coverage, fid): the chosen trial is the Pareto front's best on coverage; export another "
        "with --trial N (gantune report shows the front)\n") in text
    # the report's summary card named both objectives over the first one's value; its --json bytes were characters
    assert main(["report", "two", "--storage", storage, "--out", str(tmp_path / "r.html"), "--json"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "best coverage<b>0.5</b>" in html and "its fid<b>3</b>" in html and "best coverage, fid" not in html
    # found by a probe: the floor of an objective after the first was in the summary only (not here, nor the file)
    assert "real-vs-real fid<b>2</b>" in html
    assert "\n# real-vs-real fid (training data scored like samples): 2\n" in text
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bytes"] == (tmp_path / "r.html").stat().st_size


def test_a_multi_objective_export_of_a_dominated_trial_says_it_is_off_the_front(tmp_path: Path, capsys: Any) -> None:
    """``export --trial 2`` of a trial both others beat on both objectives exported it without a word."""
    from gantune.cli import main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="dom", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("settings", {"objective": ["coverage", "fid"], "direction": ["maximize", "minimize"],
                                     "trials": 3, "max_steps": 10, "eval_every": 10})
    for values in ([0.5, 3.0], [0.4, 1.0], [0.3, 5.0]):
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs={
            "provenance": MEASURED, "config": tiny().to_dict(), "gantune_status": "completed", "steps": 10}))
    line = "trial 2 is not on the Pareto front: another trial beats it on one objective and is no worse on the rest"
    assert main(["export", "dom", "--storage", storage, "--trial", "2", "--out", str(tmp_path / "b.yaml")]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [f"note: {line}"]
    assert f"\n# {line}\n" in (tmp_path / "b.yaml").read_text()
    assert main(["export", "dom", "--storage", storage, "--trial", "1", "--out", str(tmp_path / "c.yaml")]) == 0
    assert capsys.readouterr().err == ""
    # a pruned trial is off the front because the front holds completed trials: "another trial beats it" was wrong
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={10: 0.9},
                                              user_attrs={"provenance": MEASURED, "config": tiny().to_dict(),
                                                          "gantune_status": "pruned:collapsed", "steps": 10}))
    assert main(["export", "dom", "--storage", storage, "--trial", "3", "--out", str(tmp_path / "d.yaml")]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "note: trial 3 is not on the Pareto front: the front holds completed trials, and this one ended "
        "pruned:collapsed")


def test_a_report_says_how_many_trials_it_leaves_out_unfinished(tmp_path: Path, capsys: Any) -> None:
    """A report of a running (or killed) search counted its finished trials only, without a word of the rest."""
    from gantune.cli import main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="live", storage=storage)
    study.set_user_attr("settings", {"objective": "fid", "direction": "minimize", "trials": 4, "max_steps": 10,
                                     "eval_every": 10})
    for value in (1.0, 3.0):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            "provenance": MEASURED, "config": tiny().to_dict(), "gantune_status": "completed", "steps": 10}))
    study.ask()
    study.ask()
    assert main(["report", "live", "--storage", storage, "--out", str(tmp_path / "r.html")]) == 0
    line = "2 unfinished trials are not in it (running, or interrupted: search --resume runs them again)"
    assert capsys.readouterr().err.strip().splitlines() == [f"note: {line}"]
    assert line in (tmp_path / "r.html").read_text()
    # an export of it chose among the finished trials without a word (a probe killed a search and exported it)
    assert main(["export", "live", "--storage", storage, "--out", str(tmp_path / "best.yaml")]) == 0
    assert f"note: {line}" in capsys.readouterr().err.splitlines()


def test_every_evaluation_records_how_it_was_measured(tmp_path: Path) -> None:
    cfg = tiny_images(train={"steps": 20}, eval={"every": 10, "n_samples": 64, "metrics": ["fid"]})
    seen: list[dict[str, Any]] = []
    result = train(cfg, run_dir=tmp_path, on_provenance=seen.append)
    assert len(seen) == 1 and seen[0] == result.provenance
    assert (seen[0]["extractor"], seen[0]["reference"], seen[0]["n"]) == ("digits", "heldout", 64)
    evals = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "fid" in r] == [10, 20]
    assert all(r["provenance"] == seen[0] for r in evals if "fid" in r)


@pytest.mark.parametrize(("n_samples", "quick_samples", "quick_n"), [(64, None, 64), (2500, None, 500), (64, 100, 64),
                                                                   (200, 32, 32)])
def test_a_quick_check_is_never_larger_than_an_evaluation(tmp_path: Path, n_samples: int, quick_samples: int | None,
                                                         quick_n: int) -> None:
    """Quick checks scored 500 samples whatever ``eval.n_samples`` said, so a trial evaluated on 64 paid for 500 at
    every "cheap" check; a quick check scores ``quick_samples`` (500 unset), at most ``n_samples``."""
    quick = {} if quick_samples is None else {"quick_samples": quick_samples}
    cfg = tiny(train={"steps": 4}, eval={"every": 4, "n_samples": n_samples, "quick_every": 2,
                                         "metrics": ["diversity"], **quick})
    seen: list[dict[str, Any]] = []
    train(cfg, run_dir=tmp_path, on_provenance=seen.append)
    assert seen[0]["quick_n"] == quick_n


def test_evaluation_cadence_does_not_change_the_trained_weights() -> None:
    """Evaluation draws z from its own generator: how often and on how many samples a trial is evaluated never
    changes what it trains into (bit for bit, on one machine)."""
    states = []
    for every, n, quick in ((10, 64, 0), (7, 200, 3)):
        cfg = tiny(train={"steps": 30}, eval={"every": every, "n_samples": n, "quick_every": quick,
                                              "quick_samples": 32, "metrics": ["diversity"]})
        states.append(_weights(cfg))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("metrics", [["fid"], ["stacked_modes"]])
def test_the_metric_set_does_not_change_the_trained_weights(metrics: list[str]) -> None:
    """Building the digits classifier drew its random init from the training RNG before its weights loaded, so a
    digits trial with a metric set trained into other weights than without one (found by a review)."""
    data = {"name": "stacked_digits"} if metrics == ["stacked_modes"] else {}
    states = [_weights(tiny_images(data=data, train={"steps": 10}, eval={"every": 1000, "metrics": m}))
              for m in ([], metrics)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def _weights(cfg: Any) -> dict[str, torch.Tensor]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, run_dir=tmp)
        ckpt = torch.load(Path(tmp) / "checkpoint.pt", weights_only=True)
    return {f"{net}.{k}": v for net in ("G", "D") for k, v in ckpt["trainer"][net].items()}


def test_a_reports_floors_come_in_the_objectives_order(tmp_path: Path) -> None:
    """The summary card listed each objective's real-vs-real floor in the metric set's order (fid before
    coverage) under objectives given as [coverage, fid]."""
    from gantune.cli import main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="two", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("settings", {"objective": ["coverage", "fid"], "direction": ["maximize", "minimize"],
                                     "trials": 1, "max_steps": 10, "eval_every": 10})
    measured = {**MEASURED, "floor": {"fid": 2.0, "coverage": 0.9}}
    study.add_trial(optuna.trial.create_trial(values=[0.5, 3.0], user_attrs={
        "provenance": measured, "config": tiny().to_dict(), "gantune_status": "completed", "steps": 10}))
    assert main(["report", "two", "--storage", storage, "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert 0 < html.index("real-vs-real coverage<b>0.9</b>") < html.index("real-vs-real fid<b>2</b>")


def test_the_reports_table_marks_each_trial_measured_otherwise_pruned_ones_too(tmp_path: Path) -> None:
    """Found in review: trials measured with another sample count were named in the page's one summary line and
    nowhere in the table; a pruned one (whose best value the table shows) nowhere at all."""
    import re

    from gantune.report import build_report

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="mixed", storage=storage)
    study.set_user_attr("settings", {"objective": "fid", "direction": "minimize", "trials": 4, "max_steps": 10,
                                     "eval_every": 10})
    cfg = tiny().to_dict()
    done = {"config": cfg, "gantune_status": "completed", "steps": 10}
    pruned = {"config": cfg, "gantune_status": "pruned", "steps": 5, "gantune_reason": "collapsed"}
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={**done, "provenance": {**MEASURED, "n": 200}}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={5: 2.0},
                                              user_attrs={**pruned, "provenance": {**MEASURED, "n": 200}}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={5: 2.5},
                                              user_attrs={**pruned, "provenance": MEASURED}))
    study.add_trial(optuna.trial.create_trial(value=3.0, user_attrs={**done, "provenance": MEASURED}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={
        "config": cfg, "gantune_status": "failed", "gantune_reason": "boom"}))  # never measured: nothing to say
    build_report("mixed", storage, tmp_path / "r.html", top=0)
    page = (tmp_path / "r.html").read_text()
    rows = re.findall(r'<tr class="trial-row"><td>(\d+)</td>.*?</tr>', page, re.S)
    marked = [n for n, row in re.findall(r'<tr class="trial-row"><td>(\d+)</td>(.*?)</tr>', page, re.S)
              if "measured otherwise (n 200 vs 1000): not ranked with the others" in row]
    assert rows == ["0", "1", "2", "3", "4"] and marked == ["0", "1"]
    # found in review: with no completed trial to rank by, every pruned one read "measured otherwise (the others have
    # no recorded provenance)"
    assert provenance.otherwise(provenance.reference([]), _T(0, {"provenance": MEASURED})) is None
