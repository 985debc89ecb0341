"""The search's progress line: trials done, and an ETA from the trial-steps left over the observed rate."""

import math
from pathlib import Path

import optuna
import pytest

from gantune.events import STATUS_KEY, Status, TrialOutcome
from gantune.search.book import SearchBook


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_line_has_an_eta_from_the_trial_steps_left(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    book = SearchBook(optuna.create_study(), {}, {}, ["fid"], ["minimize"], total=4, done_before=0, clock=clock,
                      max_steps=1000)
    book.running.update({0, 1})
    book._count_steps(0, 100)  # the first report: the rate is measured from here
    clock.t = 10.0
    book._count_steps(0, 300)
    book._count_steps(1, 200)  # 400 trial-steps in 10 s over both trials
    # left: two trials not started (2 x 1000) and the running ones from their last step (700 + 800)
    assert book.trial_steps_left() == 3500
    book._progress()
    line = capsys.readouterr().err.strip()
    assert line.startswith("[    10s] 0/4 done, 2 running")
    assert line.endswith("| ETA 1m28s, 3500 of 4000 trial-steps left at 40 trial-steps/s")

    # a trial that ended early (pruned at step 300) needs no more steps
    book.outcomes[0] = TrialOutcome(0, Status.PRUNED_COLLAPSED, "collapsed", 300, None)
    book.running.discard(0)
    assert book.trial_steps_left() == 2800


def test_no_eta_before_any_trial_step(capsys: pytest.CaptureFixture[str]) -> None:
    book = SearchBook(optuna.create_study(), {}, {}, ["fid"], ["minimize"], total=2, done_before=0,
                      clock=Clock(), max_steps=500)
    book._progress()
    assert capsys.readouterr().err.strip().endswith("| ETA --, 1000 of 1000 trial-steps left at -- trial-steps/s")


def test_a_trial_run_again_keeps_nothing_of_its_dead_attempts_rescues() -> None:
    """The driver died between the attributes of a trial's ending and the tell: the trial runs again, and this
    time noise-aware ASHA did not keep it. Its study record must not say it did."""
    from ray.tune.experiment import Trial

    from gantune.search.scheduler import RESCUED_ATTR

    study = optuna.create_study()
    ot = study.ask()
    ot.set_user_attr(RESCUED_ATTR, [{"step": 250, "value": 0.1, "cutoff": 0.09, "sigma": 0.01}])  # the dead one's
    trial = Trial("__fake", config={"trial": {}}, stub=True)
    trial.run_metadata.last_result = {"step": 100, STATUS_KEY: "completed", "final/fid": 3.0}
    book = SearchBook(study, {trial.trial_id: ot}, {}, ["fid"], ["minimize"], total=1, done_before=0,
                      clock=Clock(), quiet=True)
    book._finish(trial, None)
    (done,) = study.get_trials()
    assert done.user_attrs[RESCUED_ATTR] == [] and done.value == 3.0


def test_a_trial_run_again_keeps_nothing_of_its_dead_attempts_wall_time() -> None:
    """Found by a review: a re-run that failed before its first report kept the dead attempt's wall seconds and
    evaluation share (the report's timeline bar drew the dead attempt's 812 s)."""
    from ray.tune.experiment import Trial

    study = optuna.create_study()
    ot = study.ask()
    ot.set_user_attr("trial_wall_s", 812.0)  # the dead attempt's
    ot.set_user_attr("eval_fraction", 0.4)
    trial = Trial("__fake", config={"trial": {}}, stub=True)
    book = SearchBook(study, {trial.trial_id: ot}, {}, ["fid"], ["minimize"], total=1, done_before=0,
                      clock=Clock(), quiet=True)
    book._finish(trial, "RuntimeError: the worker died")
    (done,) = study.get_trials()
    assert done.user_attrs[STATUS_KEY] == "failed"
    assert done.user_attrs["trial_wall_s"] is None and done.user_attrs["eval_fraction"] is None


def test_a_resumed_searchs_progress_counts_the_trials_finished_before_it(capsys: pytest.CaptureFixture[str]) -> None:
    """After ``--resume --trials 6`` the line said ``5/6 done ... completed=1 best coverage 0.04 (trial 4)``
    while the summary named trial 3 (0.085): the counts and the best were this run's alone."""
    study = optuna.create_study(direction="maximize")
    for value in (0.05, 0.085):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={STATUS_KEY: "completed", "steps": 100,
                                                                           "config": {}}))
    book = SearchBook(study, {}, {}, ["coverage"], ["maximize"], total=4, done_before=2, clock=Clock())
    book._progress()
    assert "2/4 done, 0 running  | completed=2  best coverage 0.085 (trial 1)" in capsys.readouterr().err


def test_an_asha_stopped_trial_keeps_the_metrics_its_rung_read() -> None:
    """Its Optuna attributes said ``metrics: {}`` (it sends no final report) while its MLflow run had them."""
    from gantune.search.book import rung_metrics

    raw = {"data": {"name": "grid25"}, "eval": {"metrics": ["fid", "modes"]}}
    last = {"step": 200, "objective": 0.3, "fid": 0.3, "modes": 12.0, "mode_coverage": 0.48, "loss_d": 1.2,
            "samples_png": "..."}
    assert rung_metrics(raw, last) == {"fid": 0.3, "modes": 12.0, "mode_coverage": 0.48}
    assert rung_metrics({"error": "trial 0: sampling failed"}, last) == {}


def test_a_stopped_trials_line_shows_its_best_evaluation(capsys: pytest.CaptureFixture[str]) -> None:
    """A trial stopped for collapse after FIDs 564.5, 472.4, 772.3 printed "fid 772.3", Optuna's last value, which
    the report and export call no result of it (they give 472.4, its best evaluation)."""
    from ray.tune.experiment import Trial

    from gantune.events import REASON_KEY

    study = optuna.create_study()
    trial = Trial("__fake", config={"trial": {}}, stub=True)
    book = SearchBook(study, {trial.trial_id: study.ask()}, {}, ["fid"], ["minimize"], total=1, done_before=0,
                      clock=Clock())
    for step, fid in ((100, 564.5), (200, 472.4), (300, 772.3)):
        book.on_trial_result(0, [], trial, {"step": step, "fid": fid, "objective": fid})
    trial.run_metadata.last_result = {"step": 300, STATUS_KEY: "pruned:collapsed", REASON_KEY: "diversity",
                                      "fid": 772.3}
    book._finish(trial, None)
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("trial"))
    assert line == "trial   0 pruned:collapsed  steps    300  fid 472.4 (best evaluation)  (diversity)"


def test_an_asha_stopped_trial_keeps_its_wall_time_and_evaluation_share() -> None:
    """A trial the scheduler stops sends no final report, which carries ``trial_wall_s`` and ``eval_fraction``:
    its study and MLflow records had neither. Its last record's running seconds give them."""
    from ray.tune.experiment import Trial

    from gantune.search.scheduler import AshaStop

    class Seen:
        def __init__(self) -> None:
            self.results: list[dict[str, float]] = []

        def trial_result(self, number: int, result: dict[str, float]) -> None:
            self.results.append(result)

    study = optuna.create_study()
    trial = Trial("__fake", config={"trial": {}}, stub=True)
    seen = Seen()
    book = SearchBook(study, {trial.trial_id: study.ask()}, {trial.trial_id: AshaStop(200, 0.9)}, ["fid"],
                      ["minimize"], total=1, done_before=0, clock=Clock(), quiet=True, observers=[seen])
    trial.run_metadata.last_result = {"step": 200, "objective": 0.9, "fid": 0.9, "wall_s": 40.0, "eval_s": 4.0}
    book._finish(trial, None)
    (done,) = study.get_trials()
    assert done.user_attrs["gantune_status"] == "pruned:asha"
    assert done.user_attrs["trial_wall_s"] == 40.0 and done.user_attrs["eval_fraction"] == 0.1
    assert seen.results == [{"step": 200.0, "trial_wall_s": 40.0, "eval_fraction": 0.1}]  # MLflow logs these


def test_a_multi_objective_trials_line_gives_every_objective(capsys: pytest.CaptureFixture[str]) -> None:
    """``objective: [coverage, fid]``: a completed trial's line gave its coverage only."""
    from ray.tune.experiment import Trial

    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = Trial("__fake", config={"trial": {}}, stub=True)
    book = SearchBook(study, {trial.trial_id: study.ask()}, {}, ["coverage", "fid"], ["maximize", "minimize"],
                      total=1, done_before=0, clock=Clock())
    trial.run_metadata.last_result = {"step": 300, STATUS_KEY: "completed", "final/coverage": 0.043,
                                      "final/fid": 7.42324}
    book._finish(trial, None)
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("trial"))
    assert line == "trial   0 completed         steps    300  coverage 0.043  fid 7.423"


def test_a_trial_a_verdict_stopped_after_an_evaluation_keeps_that_evaluations_step() -> None:
    """Found by a review: its last objective was reported again at the stop step (a quick check's verdict at
    step 260 after the evaluation at 250), which TPE ranks above every trial pruned at step 250, whatever its
    value: Optuna scores a pruned trial by its last step first."""
    from ray.tune.experiment import Trial

    study = optuna.create_study()
    ot = study.ask()
    ot.report(0.5, 250)  # as the searcher reports each evaluation
    trial = Trial("__fake", config={"trial": {}}, stub=True)
    trial.run_metadata.last_result = {"step": 260, STATUS_KEY: Status.PRUNED_COLLAPSED.value, "final/fid": 0.5}
    book = SearchBook(study, {trial.trial_id: ot}, {}, ["fid"], ["minimize"], total=1, done_before=0,
                      clock=Clock(), quiet=True)
    book._finish(trial, None)
    (done,) = study.get_trials()
    assert done.state == optuna.trial.TrialState.PRUNED and done.intermediate_values == {250: 0.5}
    assert done.user_attrs["steps"] == 260  # where it stopped


def test_a_trial_that_ended_without_a_finite_value_is_failed_everywhere() -> None:
    """The study closed it FAIL, but its ``gantune_status`` said completed: ``gantune report`` counted it as
    completed and its row's value (from its last evaluation) beat the best card's; the search's counts and
    progress line said completed too."""
    from ray.tune.experiment import Trial

    from gantune.events import REASON_KEY

    study = optuna.create_study()
    trial = Trial("__fake", config={"trial": {}}, stub=True)
    book = SearchBook(study, {trial.trial_id: study.ask()}, {}, ["fid"], ["minimize"], total=1, done_before=0,
                      clock=Clock(), quiet=True)
    trial.run_metadata.last_result = {"step": 300, STATUS_KEY: "completed", REASON_KEY: "", "final/fid": math.nan}
    book._finish(trial, None)
    (done,) = study.get_trials()
    assert done.state == optuna.trial.TrialState.FAIL and done.user_attrs[STATUS_KEY] == "failed"
    assert done.user_attrs[REASON_KEY] == "no finite objective value at the end of the trial"
    assert book.counts[Status.FAILED] == 1 and book.counts[Status.COMPLETED] == 0 and book.best is None
    from gantune.sampling.study import trial_status

    earlier = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={STATUS_KEY: "completed"})
    assert trial_status(earlier) == "failed"  # a study an earlier release closed so reads as what it is


def test_a_trial_rays_memory_monitor_killed_is_out_of_memory() -> None:
    """Ray's memory monitor kills a trial's worker from outside its process: the trial's own out-of-memory
    handling never ran, and the driver's error read as a plain ``failed`` (FAIL, which Optuna's samplers ignore:
    they went on drawing configs too large to fit). It is ``failed:oom``, which the study is told as PRUNED."""
    from gantune.search.book import outcome_of

    died = ("The actor died unexpectedly before finishing this task.\n\tclass_name: ImplicitFunc\n\tpid: 4242\n"
            "The actor is dead because its worker process has died. Worker exit type: NODE_OUT_OF_MEMORY Worker exit "
            "detail: Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.2) where "
            "the task was running was 30.1GB / 31.4GB (0.96), which exceeds the memory usage threshold of 0.95.\n"
            "To disable worker killing, set the environment variable `RAY_memory_monitor_refresh_ms` to zero.")
    out = outcome_of(3, {"step": 400.0}, died, None, ["coverage"])
    assert (out.status, out.steps, out.values) == (Status.FAILED_OOM, 400, None)
    assert out.reason == "out of memory at step 400: Ray's memory monitor killed the trial (its node ran low on memory)"
    # Ray 2.60's own words, as a real kill by its memory monitor gave them (the actor's death above: older Rays)
    oom = ("ray.exceptions.OutOfMemoryError: 1 worker(s) were killed due to the node running low on memory. Memory "
           "on the node (IP: 10.0.0.2) was 1.76GB used / 23.54GB limit")
    assert outcome_of(3, {"step": 100.0}, oom, None, ["coverage"]).status == Status.FAILED_OOM
    # a worker that died otherwise says nothing of memory for sure (a SIGKILL may be the kernel's or a user's)
    crashed = ("The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit "
               "detail: Worker unexpectedly exits with a connection error code 2. End of file.")
    assert outcome_of(3, {}, crashed, None, ["coverage"]).status == Status.FAILED
    assert outcome_of(3, {}, "Traceback ...\ngantune.errors.ConfigError: data.path: gone\n", None, []).reason == \
        "data.path: gone"
    assert outcome_of(3, {}, "", None, []).reason == "unknown error"


def test_the_steps_a_killed_attempt_trained_count_in_the_trial_steps(tmp_path: Path) -> None:
    """Found by a review: a trial a killed search left RUNNING trains again from step 0 under ``--resume``, and the
    summary counted only the new attempt's steps: "2400 of a 2400 budget (0% saved)" after at least 400 steps the
    killed attempt trained. Its run directory's last logged step is kept (``DEAD_STEPS``) and counted."""
    import optuna

    from gantune.sampling.study import DEAD_STEPS, restart_trial, trained_steps

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    trial = study.ask()
    run = tmp_path / "trial-0000"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {s}, "loss_d": 1.0}}\n' for s in (10, 20, 30)) + '{"st')
    trial.set_user_attr("run_dir", str(run))
    again = restart_trial(trial)  # what the searcher does as --resume runs it again
    again.set_user_attr("steps", 40)
    study.tell(again, 1.0)
    done = study.trials[0]
    assert done.user_attrs[DEAD_STEPS] == 30 and trained_steps(done) == 70
    fresh = study.ask()  # a trial that never ran before: nothing added
    fresh.set_user_attr("run_dir", str(tmp_path / "trial-0001"))
    restart_trial(fresh).set_user_attr("steps", 40)
    study.tell(fresh, 1.0)
    assert DEAD_STEPS not in study.trials[1].user_attrs and trained_steps(study.trials[1]) == 40


def test_a_failed_trials_reason_is_the_error_not_torchs_cpp_stack() -> None:
    """Some torch errors end their message with the C++ stack (``Exception raised from ...``, ``frame #N``, a
    closing quote), CUDA's with advice: the trial's reason, read as the trace's last line, was a lone ``"`` (or the
    advice). Blank lines after it cost nothing (a pattern that backtracked doubled its time with each)."""
    from gantune.search.book import _last_line

    error = 'TypeError: randn(): argument \'size\' failed to unpack with error "Overflow when unpacking long long'
    stack = ('\nException raised from THPUtils_unpackLong at python_numbers.h:79 (most recent call first):\nframe #0: '
             'c10::Error::Error() + 0x9d (0x7f in libc10.so)\n<omitting python frames>\nframe #1: _start + 0x21 (0x55 '
             'in python3)\n"\n')
    trace = f'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n{error}{stack}'
    assert _last_line(trace) == error
    assert _last_line(trace + "\n" * 60) == error
    cuda = ("RuntimeError: CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
            "asynchronously reported at some other API call, so the stacktrace below might be incorrect.\nFor "
            "debugging consider passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable "
            "device-side assertions.\n")
    assert _last_line(f"Traceback:\n{cuda}") == "RuntimeError: CUDA error: an illegal memory access was encountered"
    chained = f"{trace}\nThe above exception was the direct cause of the following exception:\n\nValueError: after"
    assert _last_line(chained) == "ValueError: after"
