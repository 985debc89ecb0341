"""``gantune report SEARCH --out report.html``: one self-contained HTML page about a search.

Charts come from Optuna's plotly visualisations (optimisation history, parameter importances, parallel
coordinates, objective vs. each parameter, Pareto front) plus gantune's status/prune-reason timeline; plotly.js
is inlined once, sample grids and the top trials' latent interpolations (drawn here from each run directory's
generator.pt) are embedded as data URIs, so the page opens offline. The template is
``dashboards/report.html.j2``.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import os
import site
import sys
import sysconfig
from pathlib import Path
from typing import Any

import optuna
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from gantune import provenance
from gantune.dburl import redacted
from gantune.errors import ConfigError, GantuneError
from gantune.events import REASON_KEY, RULE_KEY, Status
from gantune.rundir import (
    GENERATOR,
    atomic_write,
    check_replaceable,
    check_writable,
    parents_made,
    trial_run_dir,
)
from gantune.sampling import votes as V
from gantune.sampling.study import (
    best_first,
    explored_note,
    load_search,
    measured_as,
    ranked,
    search_notes,
    search_settings,
    sign,
    top_trials,
    trained_params,
    trained_steps,
    trial_status,
    trial_value,
)

TEMPLATE = "report.html.j2"
#: what the first KiB of a report holds (the template's title): ``--out`` replaces such a file, no other
REPORT_MARK = "<title>gantune report — ".encode()
STATUS_COLORS = {Status.COMPLETED: "#1a7f37", Status.PRUNED_ASHA: "#bf8700", Status.PRUNED_COLLAPSED: "#8250df",
                 Status.PRUNED_DIVERGED: "#cf222e", Status.PRUNED_STALLED: "#57606a", Status.FAILED: "#000000",
                 Status.FAILED_OOM: "#953800"}


def template_dir() -> Path:
    """``dashboards/`` of a source checkout, else the copy installed under ``<data>/share/gantune``: pip puts a
    data file in its install scheme's data folder, ``sys.prefix`` for a virtual environment, the user base for
    ``--user`` (``~/.local``), ``/usr/local`` for a system pip on Debian; only the first was looked in."""
    data = [sys.prefix, site.getuserbase(), *(sysconfig.get_paths(scheme).get("data") for scheme in
                                              sysconfig.get_scheme_names())]
    for candidate in (os.environ.get("GANTUNE_DASHBOARDS"), Path(__file__).resolve().parents[1] / "dashboards",
                      *(Path(d) / "share" / "gantune" / "dashboards" for d in dict.fromkeys(data) if d)):
        if candidate and (Path(candidate) / TEMPLATE).is_file():
            return Path(candidate)
    raise GantuneError(f"report template {TEMPLATE} not found (set $GANTUNE_DASHBOARDS to the dashboards folder)")


def _status_timeline(trials: list[FrozenTrial]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for status, color in STATUS_COLORS.items():
        sel = [t for t in trials if trial_status(t) == status.value and t.datetime_start and t.datetime_complete]
        if not sel:
            continue
        spans = [_trained_span(t) for t in sel]
        fig.add_trace(go.Bar(
            name=status.value, orientation="h", marker_color=color, y=[t.number for t in sel],
            base=[start.isoformat() for start, _ in spans], x=[seconds * 1000 for _, seconds in spans],
            hovertext=[f"trial {t.number}: {status.value} at step {t.user_attrs.get('steps')}, trained {seconds:.1f} s"
                       f"<br>{t.user_attrs.get(REASON_KEY, '')}" for t, (_, seconds) in zip(sel, spans, strict=True)],
            hoverinfo="text"))
    fig.update_layout(barmode="overlay", xaxis={"type": "date", "title": "time"},
                      yaxis={"title": "trial", "autorange": "reversed"}, height=max(300, 22 * len(trials) + 120),
                      legend={"title": "status"})
    return fig


def _trained_span(t: FrozenTrial) -> tuple[dt.datetime, float]:
    """When a trial trained, and for how many seconds: its last ``trial_wall_s`` before it ended. Optuna's start is
    when the searcher drew the config, before a worker had started and imported torch: bars from it drew trials
    that ran one after another as if side by side, seconds longer than they trained."""
    assert t.datetime_start is not None and t.datetime_complete is not None
    asked = (t.datetime_complete - t.datetime_start).total_seconds()
    wall = t.user_attrs.get("trial_wall_s")
    seconds = min(float(wall), asked) if isinstance(wall, (int, float)) and wall > 0 else asked
    return t.datetime_complete - dt.timedelta(seconds=seconds), seconds


def _status_counts(trials: list[FrozenTrial]) -> Any:
    import plotly.graph_objects as go

    why: dict[tuple[str, str], int] = {}  # (status, the health rule or the error) -> trials
    for t in trials:
        status = trial_status(t)
        if status != Status.COMPLETED:
            key = (status, str(t.user_attrs.get(RULE_KEY) or t.user_attrs.get(REASON_KEY, ""))[:60])
            why[key] = why.get(key, 0) + 1
    counts = {s.value: sum(trial_status(t) == s for t in trials) for s in STATUS_COLORS}
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), marker_color=list(STATUS_COLORS.values()),
                           hovertext=[", ".join(f"{rule} ({n})" for (st, rule), n in why.items() if st == s)
                                      for s in counts], hoverinfo="text+y"))
    fig.update_layout(yaxis={"title": "trials"}, height=320)
    return fig


def _comparable(study: optuna.Study) -> tuple[optuna.Study, str]:
    """The study Optuna's charts draw: the trials that may be ranked together (``ranked``) in a study of their
    own where some were measured otherwise (another dataset, metric set or sample count: the history's best line
    climbed to a trial the page's own ranking left out), with the line that says so; else the study itself."""
    done, note = ranked(study)
    if note is None:
        return study, ""
    keep = {t.number for t in done}
    kept = optuna.create_study(directions=study.directions)
    # every trial, in order, so each keeps its number (a study numbers what it is given from 0): those left out
    # as failed, which no chart draws
    kept.add_trials([t if t.number in keep or t.state != TrialState.COMPLETE else optuna.trial.create_trial(
        state=TrialState.FAIL, params=t.params, distributions=t.distributions) for t in study.get_trials()])
    return kept, f"The charts of the objective leave out the trials measured otherwise: {note}."


def _charts(study: optuna.Study, trials: list[FrozenTrial], objective_names: list[str]) -> list[dict[str, str]]:
    import optuna.visualization as ov

    multi = len(study.directions) > 1
    study, left_out = _comparable(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    target = (lambda t: t.values[0]) if multi else None
    name = objective_names[0]
    # (title, completed trials it needs, whether it plots params, figure): Optuna's charts of fewer log a warning
    # and draw nothing
    specs: list[tuple[str, int, bool, Any]] = [
        ("Trials by status (hover: prune reasons)", 0, False, lambda: _status_counts(trials)),
        ("Trials over time, by status and prune reason", 0, False, lambda: _status_timeline(trials)),
        ("Optimisation history", 1, False,
         lambda: ov.plot_optimization_history(study, target=target, target_name=name)),
        ("Parameter importances (fANOVA)", 2, True,  # named: Optuna 5's default is PED-ANOVA, 4's fANOVA
         lambda: ov.plot_param_importances(study, target=target, target_name=name,
                                           evaluator=FanovaImportanceEvaluator(seed=0))),
        ("Parallel coordinates", 2, True,
         lambda: ov.plot_parallel_coordinate(study, target=target, target_name=name)),
        (f"{name} vs. each parameter", 1, True, lambda: ov.plot_slice(study, target=target, target_name=name)),
    ]
    if multi:
        specs.append(("Pareto front", 1, False, lambda: ov.plot_pareto_front(study, target_names=objective_names)))
    charts: list[dict[str, str]] = []
    explored = any(t.user_attrs.get("pbt_lineage") for t in trials)
    for n, (title, needs, plots_params, make) in enumerate(specs):
        try:
            if len(complete) < needs:
                raise ValueError(f"needs at least {needs} completed trial{'s' * (needs > 1)}")
            fig = make()
            fig.update_layout(autosize=True, width=None)  # fill the section instead of a fixed width
            captions = [PBT_CHART_NOTE if explored and plots_params else "", left_out if n >= 2 else ""]
            charts.append({"title": title, "html": fig.to_html(full_html=False, include_plotlyjs=False),
                           "caption": " ".join(c for c in captions if c)})
        except (ValueError, RuntimeError) as err:
            charts.append({"title": title, "html": "", "note": f"Not available: {err}"})
    return charts


def _grids(study: optuna.Study, k: int) -> list[dict[str, Any]]:
    out = []
    try:
        best = top_trials(study, k)
    except GantuneError:
        return []
    for t in best:
        run_dir = trial_run_dir(t.user_attrs)
        samples = sorted((run_dir / "samples").glob("*.png")) if run_dir is not None else []
        # a trial without its grids says so: the page left it out without a word beside the others
        out.append({"number": t.number, "value": _value(study, t),  # every objective's (one was named both)
                    "png": base64.b64encode(samples[-1].read_bytes()).decode() if samples else None,
                    "missing": None if samples else f"no sample grid in {run_dir} on this machine"
                    if run_dir is not None else "the trial recorded no run folder"})
    return out


#: the report's interpolation of a trial: ``STRIP_STEPS`` slerp steps; one walk of images, paths of 2-D points
STRIP_STEPS = 10
STRIP_ROWS = {"images": 1, "points": 8}


def _strips(study: optuna.Study, k: int) -> list[dict[str, Any]]:
    """An interpolation of each top trial's final generator (its run directory's ``generator.pt``, on the CPU),
    all from the same latents; a trial whose weights are not on this machine, or not readable, has instead the
    reason it has none (the page left it out without a word). Weights whose config does not load (a plugin's
    dataset, the plugin not given) stop the report with that line, as ``export`` and ``review`` do: the page was
    written, exit 0, with every interpolation missing."""
    import torch

    from gantune.data import is_points
    from gantune.generate import interpolation_png, load_generator

    try:
        best = top_trials(study, k)
    except GantuneError:
        return []
    out = []
    cpu = torch.device("cpu")
    for t in best:
        if (run_dir := trial_run_dir(t.user_attrs)) is None:
            out.append({"number": t.number, "missing": "the trial recorded no run folder"})
            continue
        weights = run_dir / GENERATOR
        if not weights.is_file():
            out.append({"number": t.number, "missing": f"{weights} is not on this machine"})
            continue
        try:
            net, cfg = load_generator(weights, cpu)
        except ConfigError as err:  # its embedded config names what a plugin registered, and none was given
            raise ConfigError(f"trial {t.number}'s {err}") from None
        except GantuneError as err:
            out.append({"number": t.number, "missing": str(err)})
            continue
        rows = STRIP_ROWS["points" if is_points(cfg.data) else "images"]
        png = interpolation_png(net, cfg, STRIP_STEPS, rows, cpu, title=f"trial {t.number}")
        out.append({"number": t.number, "png": base64.b64encode(png).decode()})
    return out


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _params(t: FrozenTrial) -> str:
    """The values ``t`` ended on: a PBT member's last explored ones (the table gave Optuna's first sample beside a
    value reached under others), with the first sample after them."""
    return _shown(trained_params(t)) + explored_note(t, _shown)


#: what a PBT search's parameter charts show (Optuna draws each member at its first sample)
PBT_CHART_NOTE = ("PBT search: Optuna charts each member at its first sampled values, not the explored ones it ended "
                  "on (the trial table below gives both).")


def _value(study: optuna.Study, t: FrozenTrial) -> str:
    """A completed trial's values; another's best evaluation (Optuna keeps a pruned trial's last one)."""
    if t.state == TrialState.COMPLETE:
        return ", ".join(f"{v:.4g}" for v in t.values)
    best = trial_value(study, t)
    if best is None:
        return ""
    # under a header naming every objective, say which one this is (a pruned trial has its first only)
    named = f"{search_settings(study).objectives[0]} " if len(study.directions) > 1 else ""
    return f"{named}{best:.4g} (best evaluation)"


def _human(study: optuna.Study) -> dict[str, Any] | None:
    """The review's ranking (``gantune review``) beside the metric's, with Kendall's tau-b between them over the
    trials that have both; ``None`` before the first decided vote."""
    votes = V.load_votes(study)
    decided = [v for v in votes if v.winner is not None]
    if not decided:
        return None
    done, _ = ranked(study)
    by_metric = best_first(study, done)  # the order the page's top trials and export take
    metric = {t.number: (i + 1, float(t.values[0])) for i, t in enumerate(by_metric)}
    people = [r for r in V.ranking((), decided) if r.comparisons]
    both = [r for r in people if r.trial in metric]
    # against the page's order: with several objectives the rank (Pareto front first), not the first objective
    order = [-float(metric[r.trial][0]) if len(study.directions) > 1 else -sign(study) * metric[r.trial][1]
             for r in both]
    pieces = V.linked(decided)
    piece = [next(n for n, p in enumerate(pieces) if r.trial in p) for r in both]
    tau = V.kendall_tau([r.score for r in both], order, piece)
    rows = [{**r.to_dict(), "rank": i + 1, "metric_rank": metric.get(r.trial, (None,))[0],
             "value": metric[r.trial][1] if r.trial in metric else None} for i, r in enumerate(people)]
    linked_pairs = sum(a == b for a, b in itertools.combinations(piece, 2))
    return {"votes": len(votes), "decided": len(decided), "rows": rows, "tau": tau, "n_both": len(both),
            "pairs": linked_pairs, "all_pairs": len(both) * (len(both) - 1) // 2,
            "unsettled": V.unsettled(decided)}


def build_report(name: str, storage: str, out: Path, top: int = 4) -> dict[str, Any]:
    import jinja2
    import plotly.offline

    check_writable(out, "--out", is_dir=False)  # before the page is built: `--out .` failed after it
    check_replaceable(out, "--out", ("gantune report", lambda head: REPORT_MARK in head))
    study = load_search(name, storage)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    if not trials:
        raise GantuneError(f"search {name!r} has no finished trial to report")
    settings = search_settings(study)
    names = settings.objectives
    direction = ", ".join(settings.directions)
    counts = {s.value: sum(trial_status(t) == s for t in trials) for s in STATUS_COLORS}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        bt = top_trials(study, 1)[0]
        p = provenance.of(bt)
        best = {"number": bt.number, "objective": names[0], "value": bt.values[0],
                "others": list(zip(names[1:], bt.values[1:], strict=True)),
                # each objective's, in the objectives' order (the metric set's put fid before coverage)
                "floors": [(n, floors[n]) for n in names if n in (floors := provenance.floor(bt))],
                "floor_scored": provenance.floor_scored(p),
                "measured": provenance.describe(p) if p else ""}
    ours = measured_as(study)
    rows = [{"number": t.number, "status": trial_status(t), "steps": t.user_attrs.get("steps", ""),
             "reason": t.user_attrs.get(REASON_KEY, ""),
             # each trial measured otherwise, in its row (a pruned one too: the summary line names completed ones)
             "otherwise": provenance.otherwise(ours, t) if provenance.of(t) or t.state == TrialState.COMPLETE else None,
             "value": _value(study, t),
             "params": _params(t)} for t in trials]
    human = _human(study)
    note = search_notes(study)  # trials measured differently, a search still running: in the page and on stderr
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir()), autoescape=True)
    html = env.get_template(TEMPLATE).render(
        search=name, n_trials=len(trials), objective=", ".join(names), first_objective=names[0], direction=direction,
        storage=redacted(storage),  # the page people pass around: no password (as export and the summary show it)
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), counts=counts,
        trial_steps=sum(trained_steps(t) for t in trials),
        budget_steps=settings.trials * settings.max_steps,
        best=best, note=note, human=human, charts=_charts(study, trials, names), grids=_grids(study, top), trials=rows,
        strips=_strips(study, top), top=top,
        plotly_js=plotly.offline.get_plotlyjs())
    try:
        with parents_made(out):  # a name the system refuses left the folders made for it
            atomic_write(out, html.encode())
    except OSError as err:
        raise GantuneError(f"--out: cannot write {out} ({err.strerror or err})") from None
    return {"search": name, "out": str(out), "trials": len(trials), "bytes": len(html.encode()), "note": note,
            "human_tau": human["tau"] if human else None}
