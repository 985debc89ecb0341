import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gantune.cli import main


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _write_cfg(tmp_path: Path, **sections: dict) -> Path:
    raw = {"name": "t", "model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1},
           "train": {"steps": 10, "batch_size": 16, "log_every": 5, "device": "cpu"},
           "eval": {"every": 10, "n_samples": 100, "metrics": []}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_train_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_cfg(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--steps", "12", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert Path(summary["weights"]).exists()
    # the written config is accepted back unchanged
    assert main(["train", str(out / "config.yaml"), "--out", str(tmp_path / "again"), "--json"]) == 0


def test_a_key_the_config_does_not_read_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``gp_weight: 5`` beside a hinge loss trained as if absent, without a word; a key at its default (a run's
    config.yaml names every key) is no choice of the user's and is not said."""
    cfg = _write_cfg(tmp_path, loss={"name": "hinge", "gp_weight": 5, "clip": 0.01},
                     optim={"name": "rmsprop", "beta1": 0.3})
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    said = [ln for ln in capsys.readouterr().err.splitlines() if "does not read it" in ln]
    assert said == [
        f"warning: {cfg}: loss.gp_weight is set to 5.0, but this config does not read it (it is read with loss.name "
        "wgan-gp)",
        f"warning: {cfg}: optim.beta1 is set to 0.3, but this config does not read it (it is read with optim.name "
        "adam)"]
    # the run's config.yaml names every key: the two set ones again, none at its default (clip 0.01)
    written = tmp_path / "run" / "config.yaml"
    assert main(["train", str(written), "--out", str(tmp_path / "again")]) == 0
    assert [ln for ln in capsys.readouterr().err.splitlines() if "does not read it" in ln] == [
        ln.replace(str(cfg), str(written)) for ln in said]


def test_a_run_with_empty_quick_checks_from_before_their_refusal_resumes(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Quick checks beside FID alone are refused now; a run folder an earlier version made with them must still
    resume (``eval.quick_every`` cannot change on --resume, so the refusal left it no way to go on)."""
    cfg = _write_cfg(tmp_path, eval={"metrics": ["fid"]})
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--steps", "5", "--no-tracking"]) == 0
    for path in (cfg, out / "config.yaml"):  # as the earlier version wrote them
        raw = yaml.safe_load(path.read_text())
        raw["eval"]["quick_every"] = 5
        path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg), "--out", str(tmp_path / "new"), "--no-tracking"]) == 2
    assert "eval.quick_every: the quick checks between evaluations" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "10", "--no-tracking"]) == 0


def test_a_run_that_goes_non_finite_fails_and_keeps_no_non_finite_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that diverged to NaN ended with exit 0, wrote a NaN ``generator.pt`` (``generate`` refused it) and
    printed ``NaN`` in its ``--json`` line, which is not JSON (``jq`` refuses the line)."""
    cfg = _write_cfg(tmp_path, optim={"lr_g": 1e30, "lr_d": 1e30}, train={"steps": 200})
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-tracking", "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(c))
    assert summary["status"] == "diverged" and summary["weights"] is None
    assert summary["health"] == {"status": "diverged", "reason": summary["reason"],  # it said "ok"
                                 "rule": summary["rule"]}
    assert None in summary["last"].values()  # the non-finite loss, as null
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gantune train: error: the run diverged (non-finite"), err
    assert "no generator.pt" in err[0] and not (out / "generator.pt").exists()
    assert err[0].endswith(f"and train into another --out (or delete {out})")  # the same --out is refused now


def test_a_run_stopped_by_a_non_finite_metric_says_its_weights_are_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A metric that went NaN on finite weights ended with "the run diverged ... lower the learning rates", beside
    the generator.pt it had written: neither was so."""
    from gantune.metrics import Evaluator

    monkeypatch.setattr(Evaluator, "__call__", lambda self, fake: {"fid": math.nan})
    out = tmp_path / "run"
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(out), "--no-tracking", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gantune train: error: the run stopped at a non-finite value "
                                               "(non-finite fid at step 10) with finite weights: "
                                               f"{out / 'generator.pt'} holds them"), err
    assert torch.load(out / "generator.pt", weights_only=True)["step"] == 10


def test_a_run_stopped_before_its_first_checkpoint_is_not_trained_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder with a diverged run (no checkpoint) was silently trained over: the old sample grids and best
    weights stayed among the new run's files."""
    cfg = _write_cfg(tmp_path, optim={"lr_g": 1e30, "lr_d": 1e30}, train={"steps": 200})
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-tracking"]) == 1
    before = sorted(p.name for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(out), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run stopped before its first checkpoint (metrics.jsonl" in err[0], err
    assert sorted(p.name for p in out.rglob("*")) == before
    only_config = tmp_path / "failed"  # a run that failed before it trained left its config alone: it starts over
    only_config.mkdir()
    (only_config / "config.yaml").write_text((out / "config.yaml").read_text())
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(only_config), "--no-tracking"]) == 0


def test_a_run_that_fails_before_it_logged_anything_leaves_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory or a Ctrl-C at the first step left config.yaml, an empty samples/ and the lock: the folder
    was kept as a run, and the line said to delete it."""
    from gantune.gan import GANTrainer

    def interrupted(self: GANTrainer, measure: bool = False) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(GANTrainer, "step", interrupted)
    out = tmp_path / "deep" / "run"
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(out), "--no-tracking"]) == 130
    assert capsys.readouterr().err.strip() == "gantune train: interrupted before the first checkpoint: nothing was kept"
    assert not (tmp_path / "deep").exists()
    out.mkdir(parents=True)  # a folder of the user's stays, empty
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(out), "--no-tracking"]) == 130
    assert out.is_dir() and not list(out.iterdir())
    own = out / "config.yaml"  # the user's config in the folder it trains into stays
    own.write_text(_write_cfg(tmp_path).read_text())
    assert main(["train", str(own), "--out", str(out), "--no-tracking"]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_a_run_replaces_no_config_yaml_of_the_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that ended replaced any ``config.yaml`` in ``--out`` with its resolved config, exit 0 (a search space
    kept there, lost): refused unless a run wrote it or it is the config trained into its own folder."""
    out = tmp_path / "proj"
    out.mkdir()
    space = (Path(__file__).parents[2] / "search_spaces" / "toy.yaml").read_text()
    (out / "config.yaml").write_text(space)
    capsys.readouterr()
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(out), "--no-tracking"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gantune train: error: --out: {out / 'config.yaml'} is a file of yours (not a run's config.yaml, every key "
        "and no comments, nor the config trained), which the run would replace with its resolved config; move it "
        "away, or choose another --out")
    assert [p.name for p in out.iterdir()] == ["config.yaml"] and (out / "config.yaml").read_text() == space
    own = tmp_path / "own"
    own.mkdir()
    (own / "config.yaml").write_text("# mine\n" + _write_cfg(tmp_path).read_text())
    assert main(["train", str(own / "config.yaml"), "--out", str(own), "--no-tracking"]) == 0
    written = (own / "config.yaml").read_text()  # its resolved form, which a new run there may replace
    (own / "generator.pt").unlink()
    for name in ("checkpoint.pt", "metrics.jsonl", "generator_best.pt"):
        (own / name).unlink(missing_ok=True)
    shutil.rmtree(own / "samples", ignore_errors=True)
    assert not written.startswith("# mine")
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(own), "--no-tracking"]) == 0


def test_a_config_error_found_once_the_data_is_loaded_names_the_file_and_leaves_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics on a folder of one image were refused once it was loaded: the line named no file, and the run
    folder kept config.yaml, an empty samples/ and its lock (now refused before it is decoded)."""
    from tests.conftest import grey_folder

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    grey_folder(tmp_path / "one", n=1)
    cfg = _write_cfg(tmp_path, data={"name": "folder", "path": str(tmp_path / "one"), "channels": 1},
                     model={"arch": "dcgan"}, eval={"metrics": ["diversity"], "extractor": "digits"},
                     health={"objective": "diversity", "mode": "max"})
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gantune train: error: {cfg}: eval.metrics: the metrics (diversity) compare samples") \
        and err.endswith("add images (data.max_images, where set, caps them), or eval.metrics: []"), err
    assert not (tmp_path / "run").exists()


def test_resume_extends_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_cfg(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    assert main(["train", str(cfg), "--out", str(out)]) == 2  # refuses to clobber
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 20


@pytest.mark.parametrize(("sections", "jump"), [
    ({"optim": {"decay": "linear"}}, "its learning rates' decay factor 0 -> 0.5"),
    ({"loss": {"instance_noise": 0.2}}, "its instance noise's std 0 -> 0.1"),
])
def test_a_resume_whose_schedules_would_jump_is_refused_and_one_where_they_stretch_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, sections: dict,
        jump: str) -> None:
    """``--resume --steps 20`` of a 10-step run with a linear decay recomputed the schedule over 20: the rate went
    from 0 back to half and decayed again, and annealed instance noise came back on (found by a review). Refused
    where the values at the next step change; a run stopped before its decay starts stretches it on."""
    cfg = _write_cfg(tmp_path, **sections)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-tracking"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "20", "--no-tracking"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gantune train: error: --resume --steps 20: {out}'s schedules ran over its 10 steps, and at step 11 {jump} "
        "(decay and noise recomputed over 20); resume with --steps 10, or train a new run for longer")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # interrupted at step 7 (its checkpoint at 5): a decay from half-way has not started at step 6 and stretches
    # over 20 steps; one from the start is half-way down there, and over 20 it would be at three quarters
    from gantune.gan import GANTrainer

    step, calls = GANTrainer.step, []

    def interrupted(self: GANTrainer, measure: bool = False) -> None:
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        step(self, measure)

    for start, code in ((0.5, 0), (0.0, 2)):
        monkeypatch.setattr(GANTrainer, "step", interrupted)
        calls.clear()
        cfg = _write_cfg(tmp_path, optim={"decay": "linear", "decay_start": start}, train={"checkpoint_every": 5})
        run = tmp_path / f"stopped-{start}"
        assert main(["train", str(cfg), "--out", str(run), "--no-tracking"]) == 130
        monkeypatch.setattr(GANTrainer, "step", step)
        assert main(["train", str(cfg), "--out", str(run), "--resume", "--steps", "20", "--no-tracking"]) == code
    assert "at step 6 its learning rates' decay factor 0.5 -> 0.75" in capsys.readouterr().err


def test_resume_refuses_steps_it_has_passed_and_the_default_folder_keeps_off_a_search(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--resume --steps 5`` on a run at step 10 trained nothing, reported "completed", and rewrote config.yaml
    with 5 steps; ``train best.yaml`` (an exported config keeps its search's name) trained into runs/<search>/,
    among the search's trial folders."""
    cfg = _write_cfg(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-tracking"]) == 0
    written = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "5", "--no-tracking"]) == 2
    # the run ended: --steps 10 is refused as well (it said "give --steps of 10 or more", then refused 10)
    assert capsys.readouterr().err.strip().endswith(f"--resume: {out} ended at step 10 already; give --steps "
                                                    "above 10 to train it on")
    assert (out / "config.yaml").read_text() == written
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}  # a finished run: it rewrote them
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--no-tracking"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--resume: {out} ended at step 10 already; give --steps "
                                                    "above 10 to train it on")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    (out / "generator.pt").unlink()  # killed after its last checkpoint, before its weights: as many steps finish it
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "5", "--no-tracking"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--resume: {out} is at step 10 already; give --steps of 10 "
                                                    "or more")
    assert main(["train", str(cfg), "--out", "", "--no-tracking"]) == 2
    assert "--out: empty" in capsys.readouterr().err
    (tmp_path / "runs" / "t" / "trial-0000").mkdir(parents=True)  # a search named t
    assert main(["train", str(cfg), "--no-tracking", "--json"]) == 0
    assert (tmp_path / "runs" / "t" / "train" / "checkpoint.pt").exists()
    assert not (tmp_path / "runs" / "t" / "checkpoint.pt").exists()
    # named by --out, the search's folder itself is refused (it took the run among the trials, rewriting the lock)
    capsys.readouterr()
    assert main(["train", str(cfg), "--no-tracking", "--out", str(tmp_path / "runs" / "t")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gantune train: error: --out: {tmp_path / 'runs' / 't'} is a search's folder (its trials' runs are in it); "
        f"train into a folder of its own, such as {tmp_path / 'runs' / 't' / 'train'}")
    assert sorted(p.name for p in (tmp_path / "runs" / "t").iterdir()) == ["train", "trial-0000"]


def test_a_run_killed_before_its_generator_was_written_resumes_at_the_same_steps(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed between its last checkpoint and its ``generator.pt`` keeps an earlier part's file (a run first
    trained to 10 steps, resumed to 20): ``--resume`` refused it as ended at step 20, with step 10's weights."""
    cfg = _write_cfg(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-tracking"]) == 0
    earlier = (out / "generator.pt").read_bytes()
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "20", "--no-tracking"]) == 0
    (out / "generator.pt").write_bytes(earlier)  # as if killed before step 20's file was written
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "20", "--no-tracking"]) == 0, \
        capsys.readouterr().err
    assert torch.load(out / "generator.pt", weights_only=True)["step"] == 20
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "20", "--no-tracking"]) == 2
    assert "ended at step 20 already" in capsys.readouterr().err
    torch.save(torch.zeros(1), out / "generator.pt")  # not weights gantune wrote: no step, an AttributeError
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "20", "--no-tracking"]) == 0
    assert torch.load(out / "generator.pt", weights_only=True)["step"] == 20


def test_a_resumed_run_keeps_the_verdict_its_history_gave(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The health monitor started afresh on --resume: warm-up and patience again, the objective's next value its
    best, and a verdict given before the interruption missing from the summary. Its history is replayed now: a
    run whose gradient norm passed the ceiling before the checkpoint says so, and --early-stop stops it."""
    cfg = _write_cfg(tmp_path, health={"max_grad_norm": 1e-9})  # every logged record is a verdict
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--no-tracking"]) == 0
    said = capsys.readouterr().out
    # trained past its verdict (no --early-stop): said mid-run, and again at the end, which said "completed" alone
    assert re.search(r"completed after 10 steps .* -> .*; health said diverged \(.*\) and the run went on: "
                     r"--early-stop stops there", said), said
    assert main(["train", str(cfg), "--out", str(tmp_path / "json"), "--no-tracking", "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["health"]["status"] == "diverged" and first["health"]["rule"].startswith("grad_norm")  # it had none
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--steps", "20", "--early-stop",
                 "--no-tracking"]) == 0
    said = capsys.readouterr().out
    assert f"health: diverged: {first['health']['reason']} (before the resume)" in said, said
    assert int(re.search(r"pruned:diverged: .* after (\d+) steps", said).group(1)) < 20, said  # type: ignore[union-attr]


def test_a_run_that_goes_well_writes_nothing_to_stderr(tmp_path: Path) -> None:
    """A fresh process and a fresh tracking store: importing mlflow used to put its loggers back to INFO, so
    creating the store printed two "INFO mlflow.store.db.utils" lines."""
    cfg = _write_cfg(tmp_path)
    done = subprocess.run([sys.executable, "-m", "gantune.cli", "train", str(cfg), "--out", str(tmp_path / "run"),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (tmp_path / "mlflow.db").exists()
    assert done.stderr == ""


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "missing.yaml"], "missing.yaml: no such file"),
    (["train", "{cfg_bad_key}"], "optim.lr: unknown key"),
    (["train", "{cfg}", "--steps", "0"], "train.steps"),
    # no folder, or a file: "no checkpoint in" blamed what is not there at all
    (["train", "{cfg}", "--resume", "--out", "{tmp}/nothing"], "--resume: no run folder "),
    (["train", "{cfg}", "--resume", "--out", "{tmp}/bad.yaml"], "--resume: not a run folder: "),
    (["train", "{cfg}", "--resume", "--out", "{tmp}"], "--resume: no checkpoint in "),
    (["train", "{cfg_folder}"], "data.path: image folder"),
    (["train", "{cfg}", "--device", "cuda:7"], "no CUDA device"),
    (["train", "{cfg}", "--bogus"], "gantune train: error: unrecognized arguments: --bogus"),
    (["--bogus", "train", "{cfg}"], "gantune: error: unrecognized arguments: --bogus"),  # it blamed train
    # an empty URI (an unset variable) logged to the default store without a word
    (["train", "{cfg}", "--tracking-uri", ""], "argument --tracking-uri: empty; name the tracking URI"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    if "cuda:7" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    subs = {"{cfg}": str(_write_cfg(tmp_path)), "{tmp}": str(tmp_path)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 1}\n")
    subs["{cfg_bad_key}"] = str(bad)
    folder = tmp_path / "folder.yaml"
    folder.write_text(f"data: {{name: folder, path: {tmp_path}/nope}}\nmodel: {{arch: dcgan}}\n")
    subs["{cfg_folder}"] = str(folder)
    argv = [subs.get(a, a) for a in args]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o")]
    proc = subprocess.run([sys.executable, "-m", "gantune.cli", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", str(_write_cfg(tmp_path)), "--out", str(blocker / "sub")]) == 2
    assert "--out: cannot write" in capsys.readouterr().err


def test_out_through_a_symlink_to_a_folder_not_made_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a probe: mkdir refused the link itself ("File exists"), a traceback; ``--runs-dir`` made the
    target. A relative link is read from the link's folder."""
    link, relative = tmp_path / "link", tmp_path / "rel"
    link.symlink_to(tmp_path / "made" / "run")
    relative.symlink_to("made-rel")
    cfg = str(_write_cfg(tmp_path))
    assert main(["train", cfg, "--out", str(link), "--no-tracking"]) == 0
    assert main(["train", cfg, "--out", str(relative), "--no-tracking"]) == 0
    assert (tmp_path / "made" / "run" / "generator.pt").is_file() and (tmp_path / "made-rel" / "generator.pt").is_file()
    # a link whose target cannot be made: one line, exit 2, nothing made
    blocker = tmp_path / "file"
    blocker.write_text("")
    (tmp_path / "bad").symlink_to(blocker / "run")
    assert main(["train", cfg, "--out", str(tmp_path / "bad"), "--no-tracking"]) == 2
    assert "--out: cannot write" in capsys.readouterr().err


def test_an_ascii_console_gets_escapes_not_a_traceback(tmp_path: Path) -> None:
    """Found by a probe: the run trained and wrote everything, then printing its folder's ``ü`` to an ASCII
    console was a UnicodeEncodeError traceback and exit 1."""
    done = subprocess.run([sys.executable, "-m", "gantune.cli", "train", str(_write_cfg(tmp_path)), "--no-tracking",
                           "--out", "ü_out"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and "-> \\xfc_out" in done.stdout + done.stderr, done.stderr
    assert (tmp_path / "ü_out" / "generator.pt").is_file()


def test_builtin_config_name_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also beside a folder of that name: ``train grid25 --out grid25`` makes one, and every later ``train
    grid25`` there (its ``--resume`` too) read the folder as the config: "cannot read file (Is a directory)"."""
    from gantune.production import resolve_config_path

    assert resolve_config_path("grid25").name == "grid25.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid25").mkdir()
    assert resolve_config_path("grid25").name == "grid25.yaml"
    (tmp_path / "grid25.yaml").mkdir()  # a folder that is no built-in's name: load_config says what it is
    assert resolve_config_path("grid25.yaml") == Path("grid25.yaml")
    (tmp_path / "mine").write_text("data: {name: ring8}\n")
    assert resolve_config_path("mine") == Path("mine")


def test_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "gantune.cli", "train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--resume" in proc.stdout


@pytest.mark.parametrize(("data", "keys"), [
    ({"name": "grid25"}, {"fid", "modes", "hq", "mode_kl", "diversity", "precision", "recall"}),
    ({"name": "digits", "resolution": 8}, {"fid", "kid", "classes", "class_kl", "diversity", "recall", "coverage"}),
])
def test_train_reports_metric_set(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                  data: dict, keys: set[str]) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = _write_cfg(tmp_path, data=data, model={"arch": "auto"}, eval={"metrics": ["default"], "n_samples": 200})
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert keys <= summary["last_eval"].keys()
    assert summary["health"]["status"] in ("ok", "collapsed", "diverged", "stalled")
    assert 0 < summary["eval_fraction"] < 1
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert keys <= last.keys()


def test_a_search_with_no_completed_trial_still_says_where_its_records_are(capsys: pytest.CaptureFixture[str]) -> None:
    """Every trial pruned: the summary still names the study, the grids' store and the MLflow runs page."""
    from gantune.cli import _print_search_summary

    summary = {"search": "s", "trials": 2, "wall_s": 3.0, "counts": {"pruned:diverged": 2},
               "trial_steps": 20, "budget_steps": 200, "max_steps": 100, "failed_trials": 0,
               "failed_steps": 0, "best": None,
               "study_storage": "sqlite:////x/optuna.db", "artifact_dir": "/x/optuna-artifacts",
               "dashboard": "optuna-dashboard sqlite:////x/optuna.db --artifact-dir /x/optuna-artifacts",
               "tracking_uri": "sqlite:////x/mlflow.db",
               "mlflow_ui": "http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning"}
    _print_search_summary(summary)
    out = capsys.readouterr().out
    assert "no trial completed" in out and "--artifact-dir /x/optuna-artifacts" in out
    assert "workflowType=machine_learning" in out and out.startswith("search s: 2 trials in 3s\n")
    _print_search_summary({**summary, "trials": 1, "counts": {"pruned:diverged": 1}, "budget_steps": 100})
    assert capsys.readouterr().out.startswith("search s: 1 trial in 3s\n")  # it said "1 trials"
    # resumed: the search's seconds, and this invocation's (a resume that trained nothing said "2 trials in 5s")
    _print_search_summary({**summary, "wall_s": 66.4, "invocations": 3, "invocation_wall_s": 5.2})
    assert capsys.readouterr().out.startswith("search s: 2 trials in 66s over 3 invocations (this one 5s)\n")


def test_a_tilde_in_out_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell leaves ``--out=~/run`` (and a quoted ``"~/run"``) as it is: train, generate and export made a
    folder named ``~`` in the working folder while the line said ``-> ~/...``."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cfg = _write_cfg(tmp_path, data={"name": "grid25"})
    assert main(["train", str(cfg), "--out=~/run", "--no-tracking"]) == 0
    assert main(["generate", str(home / "run" / "generator.pt"), "--out=~/g.png"]) == 0
    assert (home / "run" / "generator.pt").is_file() and (home / "g.png").is_file()
    assert not (tmp_path / "~").exists()


def test_the_device_given_on_the_command_line_is_the_runs_config(tmp_path: Path) -> None:
    """``--device cpu`` trained on the CPU while config.yaml (and the MLflow params) still said ``auto``: a resume
    or a reader of the folder took the run for one on whatever device auto picks there."""
    cfg = _write_cfg(tmp_path, train={"device": "auto"})
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu", "--no-tracking"]) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["device"] == "cpu"
    assert main(["train", str(cfg), "--out", str(tmp_path / "other"), "--device", "tpu", "--no-tracking"]) == 2
    assert not (tmp_path / "other").exists()


def test_python_dash_m_gantune_is_the_command(tmp_path: Path) -> None:
    """Found by a review: ``python -m gantune`` (where the console script is not on the PATH) said "No module
    named gantune.__main__"; it runs the command, exit codes included."""
    done = subprocess.run([sys.executable, "-m", "gantune", "--help"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("usage: gantune "), done.stderr
    bad = subprocess.run([sys.executable, "-m", "gantune", "train", str(tmp_path / "nope.yaml")], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("gantune train: error: "), bad.stderr
