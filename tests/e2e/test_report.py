"""The HTML report of a real (tiny) search: self-contained and listing every trial."""

import re
from pathlib import Path

import optuna
import pytest

from gantune.cli import main
from gantune.sampling.settings import SearchSettings
from tests.conftest import enqueue_lrs, tiny_space

SPACE = tiny_space("rep", 4, 100, 50, [0.001, 0.002, 1000000.0], log_every=25, n_samples=200, beta1=True)


def test_report_is_self_contained_and_lists_every_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], ray_session: object
                                                        ) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "space.yaml").write_text(SPACE)
    enqueue_lrs(f"sqlite:///{tmp_path / 'optuna.db'}", "rep", [0.001, 0.002, 1000000.0, 0.001])
    assert main(["search", "space.yaml", "--quiet", "--no-tracking"]) == 0
    assert main(["report", "rep", "--out", "out/report.html"]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert main(["report", "rep", "--out", "out/report.html"]) == 0  # an earlier report is replaced; nothing else
    weights = tmp_path / "runs" / "rep" / "trial-0000" / "generator.pt"
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    before = weights.read_bytes()
    capsys.readouterr()
    assert main(["report", "rep", "--out", str(mine)]) == 2
    assert main(["report", "rep", "--out", str(weights)]) == 2  # it replaced a trial's weights with the page
    assert mine.read_text() == "<html>my notes</html>" and weights.read_bytes() == before
    assert "exists and is not an earlier gantune report" in capsys.readouterr().err
    (tmp_path / "empty.html").touch()  # an empty file (mktemp's) is one made for it
    assert main(["report", "rep", "--out", str(tmp_path / "empty.html")]) == 0
    # self-contained: no external scripts, styles, images or frames
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?(https?:)?//", html, re.I)
    assert "<script>" in html and "Plotly" in html  # plotly.js inlined
    rows = re.findall(r'<tr class="trial-row"><td>(\d+)</td><td class="status-[a-z]+">([a-z:]+)</td>', html)
    assert sorted(int(n) for n, _ in rows) == [0, 1, 2, 3]
    assert "pruned:diverged" in {s for _, s in rows} and "completed" in {s for _, s in rows}
    for title in ("Optimisation history", "Parameter importances", "Parallel coordinates", "vs. each parameter",
                  "Trials over time"):
        assert title in html
    assert "data:image/png;base64," in html  # sample grids of the top trials
    # a latent interpolation of each top trial with weights, drawn from its run directory's generator.pt
    strips = re.findall(r'alt="latent interpolation of trial (\d+)" src="data:image/png;base64,', html)
    done = [t.number for t in optuna.load_study(study_name="rep", storage="sqlite:///optuna.db").trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    assert 0 < len(done) <= 4 and sorted(int(n) for n in strips) == sorted(done), (strips, done)  # --top 4
    # a trial whose generator.pt is damaged was left out without a word: now the page says why it has none
    broken = tmp_path / "runs" / "rep" / f"trial-{done[0]:04d}" / "generator.pt"
    broken.write_bytes(broken.read_bytes()[:100])
    assert main(["report", "rep", "--out", "out/report.html"]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    strips = re.findall(r'alt="latent interpolation of trial (\d+)" src="data:image/png;base64,', html)
    assert sorted(int(n) for n in strips) == sorted(done[1:])
    assert f"trial {done[0]}: no interpolation ({broken} is unreadable (" in html
    # a top trial without its sample grids was left out of them without a word (found by a probe)
    import shutil

    shutil.rmtree(broken.parent / "samples")
    assert main(["report", "rep", "--out", "out/report.html"]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"trial {done[0]}: no sample grid in {broken.parent} on this machine" in html
    assert len(re.findall(r'alt="samples of trial \d+"', html)) >= len(done) - 1
    # --top 0: the page said the run directories were not on this machine, and that no trial had completed
    assert main(["report", "rep", "--out", "out/top0.html", "--top", "0"]) == 0
    html = (tmp_path / "out" / "top0.html").read_text()
    assert html.count("None asked for (--top 0).") == 2 and "not on this machine" not in html
    # weights whose config names a dataset no plugin registered here: the page was written, exit 0, with the
    # interpolation missing; now one line and exit 2, as export and review say it (the plugin was not given)
    import torch

    weights = tmp_path / "runs" / "rep" / f"trial-{done[-1]:04d}" / "generator.pt"
    payload = torch.load(weights, weights_only=True)
    payload["config"]["data"]["name"] = "plugin_points"
    torch.save(payload, weights)
    capsys.readouterr()
    assert main(["report", "rep", "--out", "out/plugin.html"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "out" / "plugin.html").exists() and err.count("\n") == 1, err
    assert f"trial {done[-1]}'s {weights} (embedded config): data.name: unknown dataset 'plugin_points'" in err, err
    assert err.endswith("(registered by a plugin? give it: gantune --plugin FILE_OR_MODULE ...)\n"), err


def test_report_of_unknown_search_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert main(["report", "nope"]) == 2


def test_a_search_without_a_completed_trial_reports_without_library_warnings(tmp_path: Path) -> None:
    """Found by a fuzz: Optuna's "[W ...] There are no complete trials" and a warning beside the report's own
    output. A chart that needs completed trials now says so in the page instead."""
    import subprocess
    import sys

    from gantune.events import STATUS_KEY

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="none", storage=storage)
    study.set_user_attr("settings", SearchSettings().model_dump())  # what every gantune search records
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                                  user_attrs={STATUS_KEY: "pruned:diverged"}))
    proc = subprocess.run([sys.executable, "-m", "gantune.cli", "report", "none", "--storage", storage,
                           "--out", str(tmp_path / "r.html")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    html = (tmp_path / "r.html").read_text()
    assert "Not available: needs at least 1 completed trial" in html
    # the grids' section blamed run directories "not on this machine" (found by a review)
    assert "No completed trial to show yet." in html and "not on this machine" not in html


def test_the_importance_chart_is_the_fanova_it_is_titled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart is titled fANOVA, and Optuna 5 changed the default evaluator to PED-ANOVA: the report names its
    evaluator (the chart, drawn by Optuna's own function, is then what its title says on every Optuna)."""
    import optuna.visualization as ov
    from optuna.importance import FanovaImportanceEvaluator

    from gantune.report import _charts

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("a", 0, 1) + 0.1 * t.suggest_float("b", 0, 1), n_trials=12)
    real, used = ov.plot_param_importances, []

    def spy(*args: object, **kwargs: object) -> object:
        used.append(kwargs.get("evaluator"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ov, "plot_param_importances", spy)
    charts = {c["title"]: c for c in _charts(study, study.trials, ["fid"])}
    assert charts["Parameter importances (fANOVA)"]["html"] and len(used) == 1
    assert isinstance(used[0], FanovaImportanceEvaluator)


def test_a_multi_objective_reports_grid_caption_gives_each_objectives_value(tmp_path: Path) -> None:
    """The caption read "trial 1 · fid, recall 292.6": two names, the first value only (the table beside it gave
    both)."""
    from gantune.report import build_report
    from gantune.sampling.settings import SearchSettings
    from gantune.viz import image_grid, png_bytes

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="two", storage=storage, directions=["minimize", "maximize"])
    study.set_user_attr("settings", SearchSettings.model_validate({"objective": ["fid", "recall"]}).model_dump())
    run = tmp_path / "runs" / "two" / "trial-0000"
    (run / "samples").mkdir(parents=True)
    import torch

    (run / "samples" / "step_0000100.png").write_bytes(png_bytes(image_grid(torch.zeros(4, 1, 8, 8))))
    study.add_trial(optuna.trial.create_trial(values=[292.6, 0.08333], user_attrs={"run_dir": str(run)},
                                              params={"x": 1.0},
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 2)}))
    build_report("two", storage, tmp_path / "r.html")
    assert "<figcaption>trial 0 · fid, recall 292.6, 0.08333</figcaption>" in (tmp_path / "r.html").read_text()


def test_a_pbt_reports_trial_table_gives_the_values_each_member_ended_on(tmp_path: Path) -> None:
    """A PBT member cloned to another loss and learning rate was listed at its first sample beside the value it
    reached under the explored ones, and the page never said PBT (export's header did)."""
    from gantune.report import build_report

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="pbt", storage=storage, direction="maximize")
    study.set_user_attr("settings", {"objective": "coverage", "direction": "maximize", "trials": 2, "max_steps": 300,
                                     "eval_every": 100})
    dist = {"optim.lr_g": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
            "loss.name": optuna.distributions.CategoricalDistribution(["hinge", "nonsaturating"])}
    lineage = [{"step": 250, "from_trial": 1, "params": {"optim.lr_g": 0.00288, "loss.name": "nonsaturating"},
                "changed": {}}]
    for value, attrs in ((0.055, {"pbt_lineage": lineage}), (0.05, {})):
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr_g": 0.001702, "loss.name": "hinge"}, distributions=dist, value=value,
            user_attrs={**attrs, "gantune_status": "completed", "steps": 300}))
    build_report("pbt", storage, tmp_path / "r.html", top=0)
    html = (tmp_path / "r.html").read_text()
    assert ("<td>optim.lr_g=0.00288, loss.name=nonsaturating (PBT&#39;s explore at step 250; first sampled: "
            "optim.lr_g=0.001702, loss.name=hinge)</td>") in html
    assert "<td>optim.lr_g=0.001702, loss.name=hinge</td>" in html  # a member never cloned
    from gantune.report import PBT_CHART_NOTE

    assert html.count(PBT_CHART_NOTE) == 3  # importances, parallel coordinates, the slice plot


def test_the_timeline_draws_when_each_trial_trained() -> None:
    """Found by a probe: the bars ran from when the searcher drew the config, before a worker had started and
    imported torch, so trials that ran one after another were drawn side by side, seconds longer than they trained."""
    import datetime as dt

    from gantune.report import _status_timeline

    t0 = dt.datetime(2026, 12, 4, 12, 0, 0)
    def asked() -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(value=1.0, user_attrs={"gantune_status": "completed", "steps": 10})

    trained = asked()
    trained.datetime_start, trained.datetime_complete = t0, t0 + dt.timedelta(seconds=4.5)
    trained.set_user_attr("trial_wall_s", 0.2)
    old = asked()  # recorded before trial_wall_s was kept: from its start, as before
    old.datetime_start, old.datetime_complete = t0, t0 + dt.timedelta(seconds=3)
    old.number = 1
    bars = _status_timeline([trained, old]).data[0]
    assert list(bars.x) == [200.0, 3000.0]
    assert list(bars.base) == [(t0 + dt.timedelta(seconds=4.3)).isoformat(), t0.isoformat()]
    assert "trained 0.2 s" in bars.hovertext[0]


def test_the_template_is_found_where_a_user_install_puts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip puts the template (a data file) in its scheme's data folder: ``pip install --user`` wrote
    ``~/.local/share/gantune/dashboards/report.html.j2``, and ``gantune report`` looked in the checkout and under
    ``sys.prefix`` only ("report template report.html.j2 not found")."""
    import site
    import sys
    import sysconfig

    from gantune import report

    user = tmp_path / "ub" / "share" / "gantune" / "dashboards"
    user.mkdir(parents=True)
    (user / report.TEMPLATE).write_text("{{ search }}")
    monkeypatch.delenv("GANTUNE_DASHBOARDS", raising=False)
    monkeypatch.setattr(report, "__file__", str(tmp_path / "site-packages" / "gantune" / "report.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sysconfig, "get_scheme_names", lambda: ())
    monkeypatch.setattr(site, "getuserbase", lambda: str(tmp_path / "ub"))
    assert report.template_dir() == user


def test_the_page_shows_no_password_of_the_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The header printed the storage URL as given, password included, on the page people pass around (export
    and the search summary show ``***``). A study in sqlite stands in for the server (no password in sqlite)."""
    from gantune import report

    study = optuna.create_study(study_name="pw", storage=f"sqlite:///{tmp_path / 'o.db'}")
    study.set_user_attr("settings", SearchSettings.model_validate(
        {"trials": 1, "max_steps": 100, "eval_every": 100, "objective": "fid"}).model_dump())
    study.add_trial(optuna.trial.create_trial(value=5.0, user_attrs={"gantune_status": "completed", "steps": 100}))
    monkeypatch.setattr(report, "load_search", lambda name, storage: study)
    report.build_report("pw", "postgresql://alice:s3cr3t@db.example/optuna", tmp_path / "r.html", top=0)
    html = (tmp_path / "r.html").read_text()
    assert "postgresql://alice:***@db.example/optuna" in html and "s3cr3t" not in html


def test_with_several_objectives_the_metrics_order_puts_the_pareto_front_first() -> None:
    """``gantune review`` took its top trials, and the report's human table its "metric rank", by the first
    objective alone: a trial worse on both objectives than another went before it (and ``export --by human``
    could export it), while the page's top trials and export put the front first."""
    from gantune.report import _human
    from gantune.sampling import votes as V

    study = optuna.create_study(directions=["minimize", "maximize"])
    for values in ([5.0, 0.1], [3.0, 0.2], [1.0, 0.1], [2.0, 0.05]):  # the front: trials 2 and 1
        study.add_trial(optuna.trial.create_trial(values=values))
    V.add_vote(study, 1, 3, 1)
    human = _human(study)
    assert human is not None
    assert {r["trial"]: r["metric_rank"] for r in human["rows"]} == {1: 2, 3: 3}  # trial 3 was 2nd, before 1


def test_with_several_objectives_a_pruned_trials_value_says_which_objective_it_is() -> None:
    """Under a column headed "fid, coverage", a pruned trial's cell held one number (its best fid) beside
    completed rows of two: nothing said which."""
    from gantune.report import _value
    from gantune.sampling.study import BEST_REPORTED

    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_user_attr("settings", SearchSettings.model_validate(
        {"trials": 2, "max_steps": 100, "eval_every": 50, "objective": ["fid", "coverage"],
         "direction": ["minimize", "maximize"]}).model_dump())
    study.add_trial(optuna.trial.create_trial(values=[4.0, 0.1]))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={BEST_REPORTED: 3.0}))
    done, pruned = study.trials
    assert (_value(study, done), _value(study, pruned)) == ("4, 0.1", "fid 3 (best evaluation)")


def test_a_report_the_system_cannot_write_leaves_no_folder_made_for_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out new/sub/<a name too long>.html``: exit 2, and the folders made for it stayed behind."""
    from gantune import report
    from gantune.errors import GantuneError

    study = optuna.create_study(study_name="long", storage=f"sqlite:///{tmp_path / 'o.db'}")
    study.set_user_attr("settings", SearchSettings.model_validate(
        {"trials": 1, "max_steps": 100, "eval_every": 100, "objective": "fid"}).model_dump())
    study.add_trial(optuna.trial.create_trial(value=5.0, user_attrs={"gantune_status": "completed", "steps": 100}))
    monkeypatch.setattr(report, "load_search", lambda name, storage: study)
    with pytest.raises(GantuneError, match="too long"):
        report.build_report("long", "sqlite:///o.db", tmp_path / "new" / "sub" / f"{'x' * 300}.html", top=0)
    assert not (tmp_path / "new").exists()
