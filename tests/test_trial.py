import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gantune.health import Verdict
from gantune.metrics import FAMILIES, Reference, Samples, Scorer, family
from gantune.rundir import RunDir
from gantune.trial import train
from tests.conftest import tiny


def test_reports_signals_and_writes_run_dir(tmp_path: Path) -> None:
    records: list[dict[str, float]] = []
    result = train(tiny(), report=records.append, run_dir=tmp_path)
    assert result.status == "completed" and result.steps == 20
    assert [r["step"] for r in records] == [10, 20]
    for key in ("loss_d", "loss_g", "grad_norm_g", "grad_norm_d", "d_real", "d_fake", "steps_per_s", "eval_s"):
        assert key in records[-1]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [10, 20]
    grids = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert grids == ["step_0000010.png", "step_0000020.png"]
    payload = torch.load(tmp_path / "generator.pt", weights_only=True)
    assert payload["config"]["model"]["z_dim"] == 8 and payload["step"] == 20
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "checkpoint.pt").exists()


def test_absurd_learning_rate_diverges_without_exception() -> None:
    result = train(tiny(optim={"lr_g": 1e6, "lr_d": 1e6}, train={"steps": 200}))
    assert result.status == "diverged"
    assert result.reason.startswith("non-finite") and "at step" in result.reason
    assert result.steps < 200


@pytest.mark.parametrize("cadence", [{"every": 10}, {"every": 50, "quick_every": 10}], ids=["full", "quick"])
def test_a_non_finite_evaluation_value_ends_the_trial_as_diverged(cadence: dict[str, int]) -> None:
    # a cheap metric family that scores NaN once the trial has reported anything: the second check (full
    # evaluation or quick) at step 20 is the first non-finite value; the training signals stay finite
    reported: list[float] = []

    def build(ref: Reference) -> Scorer:
        def score(fake: Samples) -> dict[str, float]:
            return {"poisoned": math.nan if reported else 1.0}

        return score

    family("poisoned", keys=("poisoned",), cheap=True)(build)
    try:
        cfg = tiny(train={"steps": 100, "log_every": 50}, eval={**cadence, "metrics": ["poisoned"]})
        result = train(cfg, report=lambda r: reported.append(r["step"]))
    finally:
        FAMILIES.remove("poisoned")
    assert (result.status, result.rule, result.steps) == ("diverged", "non_finite", 20)
    assert result.reason == "non-finite poisoned at step 20"
    assert reported == [10, 20] and math.isnan(result.last["poisoned"])


def test_metrics_jsonl_is_json_with_a_non_finite_value(tmp_path: Path) -> None:
    """A diverged run's record held Python's bare ``NaN``/``Infinity``, which is not JSON: ``jq`` and JavaScript
    refused the line. They are strings now, which gantune's reader turns back into the numbers."""
    def build(ref: Reference) -> Scorer:
        return lambda fake: {"poisoned": -math.inf, "nan": math.nan}

    family("poisoned", keys=("poisoned", "nan"), cheap=True)(build)
    try:
        train(tiny(train={"steps": 20}, eval={"every": 10, "metrics": ["poisoned"]}), run_dir=tmp_path)
    finally:
        FAMILIES.remove("poisoned")

    def refuse(word: str) -> float:
        raise ValueError(f"not JSON: {word}")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    strict = [json.loads(ln, parse_constant=refuse) for ln in lines]
    assert strict[-1]["poisoned"] == "-Infinity" and strict[-1]["nan"] == "NaN"
    last = RunDir(tmp_path).read_metrics()[-1]
    assert last["poisoned"] == -math.inf and math.isnan(last["nan"])


def test_should_stop_ends_the_trial() -> None:
    def stop(r: dict[str, float]) -> Verdict | None:
        return Verdict("collapsed", "test") if r["step"] >= 30 else None

    result = train(tiny(train={"steps": 100}), should_stop=stop)
    assert (result.status, result.reason, result.steps) == ("pruned:collapsed", "test", 30)


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    cfg = tiny(train={"steps": 40}, optim={"ema": 0.9})
    train(cfg, run_dir=tmp_path / "straight")

    half = tiny(train={"steps": 20}, optim={"ema": 0.9})
    train(half, run_dir=tmp_path / "split")
    resumed = train(cfg, run_dir=tmp_path / "split", resume=True)
    assert resumed.steps == 40

    a = torch.load(tmp_path / "straight" / "generator.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split" / "generator.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40]


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path: Path) -> None:
    cfg = tiny(train={"steps": 30, "checkpoint_every": 20})
    train(cfg, run_dir=tmp_path, should_stop=lambda r: Verdict("stalled", "crash") if r["step"] >= 30 else None)
    # stopped at 30 without a final checkpoint: the checkpoint is from step 20, metrics go to 30
    resumed = train(cfg, run_dir=tmp_path, resume=True)
    assert resumed.status == "completed"
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30]


def test_a_checkpoint_comes_every_checkpoint_every_steps_between_logs(tmp_path: Path) -> None:
    """``checkpoint_every: 3`` with a log every 10 steps checkpointed only where a step was both (step 30): a run
    killed at step 10 had nothing to resume, not step 9's state. Resumed, it trains on and logs every step once."""
    cfg = tiny(train={"steps": 20, "checkpoint_every": 3})
    train(cfg, run_dir=tmp_path, should_stop=lambda r: Verdict("stalled", "killed") if r["step"] >= 10 else None)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 9
    assert train(cfg, run_dir=tmp_path, resume=True).steps == 20
    assert _steps(tmp_path / "metrics.jsonl") == [10, 20]
    # step 10's record is the mean of steps 1-10 as in the run never stopped: the checkpoint keeps steps 1-9's sums
    # (without them it was the mean of step 10 alone)
    train(cfg, run_dir=tmp_path / "straight")
    keys = ("loss_d", "loss_g", "d_real", "d_fake", "d_win", "grad_norm_g", "grad_norm_d")
    records = [[{k: json.loads(ln)[k] for k in keys} for ln in (d / "metrics.jsonl").read_text().splitlines()]
               for d in (tmp_path, tmp_path / "straight")]
    assert records[0] == records[1]
    diverging = tiny(optim={"lr_g": 1e30, "lr_d": 1e30}, train={"steps": 200, "checkpoint_every": 3})
    assert train(diverging, run_dir=tmp_path / "nan").status == "diverged"  # its weights went NaN before step 10
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()  # no checkpoint of NaN weights between the logs


class _Killed(BaseException):
    """The process dying at a chosen point (not an Exception: nothing in the loop may catch it)."""


def _steps(path: Path) -> list[float]:
    return [json.loads(ln)["step"] for ln in path.read_text().splitlines()]


@pytest.mark.parametrize("torn", [False, True])
def test_a_run_killed_around_a_checkpoint_resumes_without_losing_a_logged_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn: bool) -> None:
    """The checkpoint of step 20 must never exist without step 20's metrics line: the run dies as that line is
    written (before a byte of it, or half way through it), and the resumed run logs every step once."""
    cfg = tiny(train={"steps": 40, "checkpoint_every": 10})
    append = RunDir.append_metrics

    def dies_at_20(self: RunDir, record: dict[str, object]) -> None:
        if record["step"] == 20:
            if torn:
                with open(self.path / "metrics.jsonl", "a") as f:
                    f.write('{"step": 20.0, "los')
            raise _Killed
        append(self, record)

    monkeypatch.setattr(RunDir, "append_metrics", dies_at_20)
    with pytest.raises(_Killed):
        train(cfg, run_dir=tmp_path)
    monkeypatch.setattr(RunDir, "append_metrics", append)
    assert train(cfg, run_dir=tmp_path, resume=True).steps == 40
    assert _steps(tmp_path / "metrics.jsonl") == [10, 20, 30, 40]


def _train_killed_at(step: int, monkeypatch: pytest.MonkeyPatch, cfg: Any, **kwargs: Any) -> None:
    """``train(cfg, **kwargs)`` with the process dying as it logs ``step`` (nothing of that step written)."""
    append = RunDir.append_metrics

    def dies(self: RunDir, record: dict[str, object]) -> None:
        if record["step"] == step:
            raise _Killed
        append(self, record)

    monkeypatch.setattr(RunDir, "append_metrics", dies)
    with pytest.raises(_Killed):
        train(cfg, **kwargs)
    monkeypatch.setattr(RunDir, "append_metrics", append)


def test_a_damaged_line_before_the_last_is_said_as_the_run_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A killed run's half-written last line is dropped without a word; a line before it that is no record (an
    editor, a disk error) was dropped as silently, and the resumed run's history lost it."""
    cfg = tiny(train={"steps": 40, "checkpoint_every": 10})
    _train_killed_at(30, monkeypatch, cfg, run_dir=tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    first, second = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(first + "garbage\n" + second + '{"step": 30, "lo')
    capsys.readouterr()
    assert train(cfg, run_dir=tmp_path, resume=True).steps == 40
    assert _steps(metrics) == [10, 20, 30, 40]
    assert capsys.readouterr().err.strip() == (f"warning: {metrics}: line 2 not a record this run wrote (damaged or "
                                               "edited?): left out of the resumed run's history")
    # found in review: nothing said where nothing is lost (a blank line; a run started again from step 0)
    metrics.write_text('{"step": 10}\n\n{"step": 20}\n')
    assert [r["step"] for r in RunDir(tmp_path).trim_metrics(20)] == [10, 20]
    metrics.write_text('{"step": 10}\ngarbage\n{"step": 20}\n')
    assert RunDir(tmp_path).trim_metrics(0) == [] and capsys.readouterr().err == ""


def test_a_run_from_step_0_starts_a_fresh_log(tmp_path: Path) -> None:
    """Killed before its first checkpoint, a run has nothing to resume: it starts again, and so does its log."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 10.0}\n{"step": 20')
    train(tiny(train={"steps": 20}), run_dir=tmp_path, resume=True)
    assert _steps(tmp_path / "metrics.jsonl") == [10, 20]
    assert '"step": 10,' in (tmp_path / "metrics.jsonl").read_text()  # a whole number (it was written 10.0)


def test_a_resumed_run_keeps_the_best_generator_of_before_its_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The objective reads 5, 1, 3, 4 at steps 10-40: the best is step 20's, also when the run dies at step 30
    and resumes from its checkpoint at 20 (the resumed run's 3 and 4 are worse than the 1 it logged before)."""
    scripted = {10: 5.0, 20: 1.0, 30: 3.0, 40: 4.0}
    reported: list[float] = []  # an evaluation comes before its step's report (and a floor before any)

    def build(ref: Reference) -> Scorer:
        return lambda fake: {"scripted": scripted[10 * (len(reported) + 1)]}

    family("scripted", keys=("scripted",))(build)
    try:
        cfg = tiny(train={"steps": 40, "checkpoint_every": 20}, eval={"every": 10, "metrics": ["scripted"]},
                   health={"objective": "scripted", "mode": "min"})
        _train_killed_at(30, monkeypatch, cfg, run_dir=tmp_path, report=lambda r: reported.append(r["step"]))
        assert train(cfg, run_dir=tmp_path, resume=True, report=lambda r: reported.append(r["step"])).steps == 40
    finally:
        FAMILIES.remove("scripted")
    assert reported == [10, 20, 30, 40]
    assert torch.load(tmp_path / "generator_best.pt", weights_only=True)["step"] == 20


def test_a_run_killed_after_its_last_checkpoint_resumes_to_the_same_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed writing its weights after the last checkpoint, a run resumes at its last step and trains nothing
    more: its result still carries the last record and evaluation (they were empty)."""
    cfg = tiny(train={"steps": 40, "checkpoint_every": 20}, eval={"every": 20, "metrics": ["fid"]})
    straight = train(cfg, run_dir=tmp_path / "straight")
    save = RunDir.save_generator

    def dies_writing_the_weights(self: RunDir, *args: object, **kwargs: object) -> Path:
        if kwargs.get("name", "generator.pt") == "generator.pt":
            raise _Killed
        return save(self, *args, **kwargs)

    monkeypatch.setattr(RunDir, "save_generator", dies_writing_the_weights)
    with pytest.raises(_Killed):
        train(cfg, run_dir=tmp_path / "killed")
    monkeypatch.setattr(RunDir, "save_generator", save)
    resumed = train(cfg, run_dir=tmp_path / "killed", resume=True)
    assert (resumed.status, resumed.steps, resumed.last["step"]) == ("completed", 40, 40)
    assert resumed.last.keys() == straight.last.keys()
    assert resumed.last_eval.keys() == straight.last_eval.keys() == {"fid"}
    assert (tmp_path / "killed" / "generator.pt").is_file()


def test_a_cuda_index_is_checked_against_the_device_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from gantune.errors import GantuneError
    from gantune.trial import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(GantuneError, match=r"no CUDA device 2 \(this machine has 2\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("sections", [
    {"eval": {"metrics": ["default"]}},
    {"data": {"name": "digits", "resolution": 8}, "eval": {"metrics": ["default"]},
     "model": {"conditional": True, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "batch"}},
], ids=["grid25", "conditional-digits"])
def test_a_repeated_evaluation_leaves_the_first_untouched_and_measures_its_noise(
        tmp_path: Path, sections: dict[str, dict[str, object]]) -> None:
    """eval.repeat measures each full evaluation again from a generator of its own (z and labels): the first
    measurement, and every later one, is the one a run without the repeat makes."""
    def run(repeat: bool) -> tuple[list[dict[str, float]], float]:
        records: list[dict[str, float]] = []
        cfg = tiny({**sections, "eval": {**sections["eval"], "repeat": repeat}}, train={"steps": 30})
        result = train(cfg, report=records.append, run_dir=tmp_path / str(repeat))
        assert result.status == "completed"
        return records, result.eval_s

    plain, _ = run(False)
    repeated, _ = run(True)
    assert [r["step"] for r in repeated] == [10, 20, 30]
    names = [k for k in plain[0] if k not in ("steps_per_s", "eval_s", "wall_s")]  # training signals too
    assert "fid" in names
    for a, b in zip(plain, repeated, strict=True):
        assert not any(k.startswith("repeat/") for k in a)
        for name in names:
            assert a[name] == b[name], (name, a[name], b[name])  # bit-identical, at every evaluation
        metrics = [k for k in b if f"repeat/{k}" in b]
        assert {f"repeat/{k}" for k in metrics} == {k for k in b if k.startswith("repeat/")}
        assert set(metrics) >= {"fid"} and set(metrics) <= set(names)
    fids = [(r["fid"], r["repeat/fid"]) for r in repeated]
    assert all(f != g for f, g in fids)  # fresh samples: other values...
    assert all(abs(f - g) < 0.5 * max(f, g) for f, g in fids)  # ...of the same weights: close
    lines = [json.loads(ln) for ln in (tmp_path / "True" / "metrics.jsonl").read_text().splitlines()]
    assert all("repeat/fid" in ln for ln in lines)
    # a resumed run draws the repeat's samples where the straight one did (its generator is in the checkpoint)
    cfg = tiny({**sections, "eval": {**sections["eval"], "repeat": True}}, train={"steps": 20})
    train(cfg, run_dir=tmp_path / "split")
    resumed: list[dict[str, float]] = []
    train(tiny({**sections, "eval": {**sections["eval"], "repeat": True}}, train={"steps": 30}),
          report=resumed.append, run_dir=tmp_path / "split", resume=True)
    assert resumed[-1]["repeat/fid"] == repeated[-1]["repeat/fid"]


def test_a_run_resumes_on_another_kind_of_device(tmp_path: Path) -> None:
    """``train.device`` is resumable, but a CUDA generator's state (16 bytes) does not fit a CPU generator (5,056):
    restoring the data and evaluation streams of a checkpoint from another device raised a RuntimeError. The
    checkpoint here is a CPU run's with those states replaced by the CUDA-sized ones a GPU run saves."""
    cfg = tiny(train={"steps": 40}, eval={"repeat": True})
    train(tiny(train={"steps": 20}, eval={"repeat": True}), run_dir=tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for key in ("data", "eval", "eval_repeat"):
        ckpt["rng"][key] = torch.arange(16, dtype=torch.uint8) + len(key)  # a philox seed and offset
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    runs = []
    for _ in range(2):  # the same checkpoint resumes alike every time
        reported: list[dict[str, float]] = []
        result = train(cfg, run_dir=tmp_path, resume=True, report=reported.append)
        assert (result.status, result.steps) == ("completed", 40)
        runs.append([{k: v for k, v in r.items() if k not in TIMES} for r in reported])
        torch.save(ckpt, tmp_path / "checkpoint.pt")
    assert runs[0] == runs[1]


#: a record's timings, which differ between two runs of the same steps
TIMES = ("steps_per_s", "eval_s", "wall_s")


def test_a_non_finite_value_inside_a_record_reads_back_as_a_number(tmp_path: Path) -> None:
    """A floor in an evaluation's provenance is nested: written as a string, it came back as the string."""
    run = RunDir(tmp_path)
    run.append_metrics({"step": 10, "fid": 1.0, "provenance": {"floor": {"fid": math.inf, "kid": math.nan}}})
    floor = run.read_metrics()[0]["provenance"]["floor"]
    assert floor["fid"] == math.inf and math.isnan(floor["kid"])


def test_should_stop_is_asked_on_each_record_before_it_is_reported() -> None:
    """So that the report of the step a verdict fires at can say the trial ends there (a search's ASHA deciding
    on that report leaves the stop to the verdict); the record is still reported, and it is the last."""
    calls: list[tuple[str, int]] = []

    def ask(r: dict[str, float]) -> Verdict | None:
        calls.append(("ask", int(r["step"])))
        return Verdict("collapsed", "test", "test") if r["step"] == 20 else None

    result = train(tiny(train={"steps": 40}), report=lambda r: calls.append(("report", int(r["step"]))),
                   should_stop=ask)
    assert calls == [("ask", 10), ("report", 10), ("ask", 20), ("report", 20)]
    assert (result.status.value, result.steps) == ("pruned:collapsed", 20)


def test_a_checkpoint_of_weights_gone_non_finite_never_replaces_the_last_good_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: D's weights overflowing at an evaluation step that logs no losses (eval.every 10,
    log_every 30) were saved over the step-10 checkpoint (G's samples still scored finite), so a resume, or a PBT
    member cloning this one, started from inf weights."""
    import gantune.trial as trial_module
    from gantune.rundir import CHECKPOINT, finite_weights

    class Overflowing(trial_module.GANTrainer):  # type: ignore[misc,valid-type]
        steps = 0

        def step(self, measure: bool = False) -> None:
            super().step(measure=measure)
            Overflowing.steps += 1
            if Overflowing.steps == 20:
                with torch.no_grad():
                    next(self.D.parameters()).fill_(float("inf"))

    monkeypatch.setattr(trial_module, "GANTrainer", Overflowing)
    cfg = tiny(train={"steps": 60, "log_every": 30, "checkpoint_every": 10}, eval={"every": 10, "metrics": ["prdc"]})
    result = train(cfg, run_dir=tmp_path / "run")
    assert result.status == "diverged" and "non-finite" in result.reason
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    assert saved["step"] == 10 and finite_weights(saved["trainer"]["D"])


def test_steps_per_s_leaves_out_what_a_record_costs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gantune train`` opened its MLflow run at the first report, inside the next window of steps: that record
    read 1 step/s where the loop ran 70. On a clock that moves only while a record is handled (its report takes 100
    s) or a step that records nothing checkpoints (50 s), the steps take no time: their rate is past any real one."""
    import types

    from gantune import trial

    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(trial, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    save = RunDir.save_checkpoint

    def slow_save(self: RunDir, state: dict[str, object]) -> None:
        clock.now += 50.0
        save(self, state)

    def report(record: dict[str, float]) -> None:
        records.append(record)
        clock.now += 100.0

    monkeypatch.setattr(RunDir, "save_checkpoint", slow_save)
    records: list[dict[str, float]] = []
    train(tiny(train={"steps": 30, "log_every": 10, "checkpoint_every": 5}), report=report, run_dir=tmp_path)
    assert [r["step"] for r in records] == [10, 20, 30]
    assert all(r["steps_per_s"] > 1e6 for r in records), [r["steps_per_s"] for r in records]
