"""The Ray trainable's parts without a Ray session: the reporter, the PBT restore step and the PBT config."""

import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from ray.train import Checkpoint

from gantune import provenance
from gantune.events import Status
from gantune.health import OBJECTIVE_REPEAT
from gantune.rundir import CHECKPOINT
from gantune.search.trainable import (
    ORIGIN,
    RESTORED_STEP,
    RESTORED_TRIAL,
    STOPPING_KEY,
    VERDICT_KEY,
    Reporter,
    checkpoint_at_evaluations,
    offer_replacement,
    restore_checkpoint,
)
from gantune.trial import TrialResult
from tests.conftest import tiny


def test_the_reporter_sends_objective_ride_alongs_and_pbt_checkpoints_and_a_restore_reads_them(tmp_path: Path
                                                                                              ) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CHECKPOINT).write_bytes(b"state")
    sent: list[tuple[dict[str, Any], Path | None]] = []

    def send(out: dict[str, Any], checkpoint: Checkpoint | None) -> None:  # Tune copies the checkpoint away
        kept = None
        if checkpoint is not None:
            with checkpoint.as_directory() as src:
                kept = Path(shutil.copytree(src, tmp_path / f"kept{len(sent)}"))
        sent.append((out, kept))

    restored = {RESTORED_TRIAL: 3.0, RESTORED_STEP: 10.0}
    report = Reporter("coverage", trial=7, run_dir=run_dir, checkpoint_every=20, steps=60, restored_from=restored,
                      send=send)
    report.samples(10, b"png")
    report.provenance({"features": "raw"})
    for step, cov in ((10, None), (20, 0.5), (30, 0.6), (40, None), (60, 0.7)):
        if step % 20 == 0 and step < 60:  # the loop saves before it reports (a new file renamed into place)
            _save(run_dir)
        report({"step": float(step), **({"coverage": cov, "eval_s": 1.0} if cov is not None else {})})

    first, second, third = (out for out, _ in sent[:3])
    kept = [ckpt for _, ckpt in sent]
    # what waited rides with the first report only, and says whose checkpoint this member trained on from
    assert first[RESTORED_TRIAL] == 3.0 and first[RESTORED_STEP] == 10.0 and "samples_png" in first
    assert json.loads(first[provenance.KEY]) == {"features": "raw"} and "objective" not in first
    assert not {RESTORED_TRIAL, "samples_png", provenance.KEY} & (second.keys() | third.keys())
    # only evaluations carry the objective; a checkpoint at evaluations at a multiple of checkpoint_every only,
    # and none at the last step (nothing trains on from it)
    assert [r.get("objective") for r, _ in sent] == [None, 0.5, 0.6, None, 0.7]
    assert [c is not None for c in kept] == [False, True, False, False, False]
    assert report.last_step == 60.0
    ckpt = kept[1]
    assert ckpt is not None and json.loads((ckpt / ORIGIN).read_text()) == {"trial": 7, "step": 20}

    clone = tmp_path / "clone"  # another member cloning it: the state lands where train(resume=True) reads it
    assert restore_checkpoint(clone, Checkpoint.from_directory(ckpt)) == {RESTORED_TRIAL: 7.0, RESTORED_STEP: 20.0}
    assert (clone / CHECKPOINT).read_bytes() == b"state"
    (clone / "metrics.jsonl").write_text("{}\n")
    assert restore_checkpoint(clone, None) == {} and not clone.exists()  # from step 0: nothing of it stays


def _save(run_dir: Path, state: bytes = b"state") -> None:
    part = run_dir / "part"
    part.write_bytes(state)
    part.replace(run_dir / CHECKPOINT)


def test_a_report_carries_only_a_checkpoint_written_for_it_and_a_non_finite_one_ends_the_member(tmp_path: Path
                                                                                                ) -> None:
    """Found by a review: a report whose step the loop kept no checkpoint at (weights gone non-finite, or the loop
    stopping on a NaN) carried the previous checkpoint labelled with its own step, and PBT decided on a NaN report:
    it paused the member inside the report and ranked it later with a NaN score."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _save(run_dir, b"restored")  # a donor's state a clone starts from: not this attempt's to hand on
    sent: list[tuple[dict[str, Any], Checkpoint | None]] = []
    report = Reporter("coverage", trial=7, run_dir=run_dir, checkpoint_every=10, steps=60,
                      send=lambda out, ckpt: sent.append((out, ckpt)))
    report({"step": 10.0, "coverage": 0.5, "eval_s": 1.0})  # not saved at 10 (non-finite weights): nothing to hand on
    _save(run_dir, b"step 20")
    report({"step": 20.0, "coverage": 0.6, "eval_s": 1.0})
    report({"step": 30.0, "coverage": 0.7, "eval_s": 1.0})  # the step-20 file again: not a state of step 30
    report({"step": 40.0, "coverage": math.nan, "eval_s": 1.0})
    assert [ckpt is not None for _, ckpt in sent] == [False, True, False, False]
    assert [STOPPING_KEY in out for out, _ in sent] == [False, False, False, True]
    assert sent[3][0][STOPPING_KEY] == "pruned:diverged"


def test_a_pbt_checkpoint_copied_onto_a_full_disk_names_the_copy_and_leaves_no_part(
        tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shutil.copy`` on a full disk raised "No space left on device: 'RUN/checkpoint.pt' -> 'TMP/checkpoint.pt'",
    the member's own checkpoint named first as if it were at fault, and a restore left half a checkpoint where
    ``train(resume=True)`` reads it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk))  # where the reporter stages Tune's copy
    report = Reporter("fid", trial=0, run_dir=run_dir, checkpoint_every=10, steps=30, send=lambda out, ckpt: None)
    (run_dir / CHECKPOINT).write_bytes(os.urandom(1 << 20))  # 1 MiB: more than the disk has left
    with pytest.raises(OSError) as refused:
        report({"step": 10.0, "fid": 3.0, "eval_s": 1.0})
    staged = Path(refused.value.filename)
    assert refused.value.errno == errno.ENOSPC and refused.value.filename2 is None, refused.value
    assert staged.name == CHECKPOINT and staged.parent.parent == small_disk, staged
    assert sorted(p.name for p in small_disk.iterdir()) == ["fill"]  # the staging folder went with its part

    donor = tmp_path / "donor"  # a member cloning a donor onto the full disk: its own checkpoint is named
    shutil.copytree(run_dir, donor)
    (donor / ORIGIN).write_text(json.dumps({"trial": 1, "step": 10}))
    clone = small_disk / "clone"
    with pytest.raises(OSError) as refused:
        restore_checkpoint(clone, Checkpoint.from_directory(donor))
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(clone / CHECKPOINT), refused.value
    assert list(clone.iterdir()) == []


def test_without_pbt_the_reporter_sends_no_checkpoint(tmp_path: Path) -> None:
    sent: list[Checkpoint | None] = []
    report = Reporter("fid", trial=0, run_dir=tmp_path, checkpoint_every=None, steps=60,
                      send=lambda out, ckpt: sent.append(ckpt))
    report({"step": 20.0, "fid": 3.0, "eval_s": 1.0})
    assert sent == [None]


def test_a_pbt_member_checkpoints_at_its_evaluations_on_a_copy_of_its_config() -> None:
    cfg = tiny(train={"checkpoint_every": 7}, eval={"every": 10})
    pbt = checkpoint_at_evaluations(cfg)
    assert pbt.train.checkpoint_every == 10 and cfg.train.checkpoint_every == 7
    assert pbt.to_dict() == {**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "checkpoint_every": 10}}


def test_an_evaluation_measured_twice_reports_the_objective_twice(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []
    report = Reporter("fid", trial=0, run_dir=tmp_path, checkpoint_every=None, steps=30,
                      send=lambda out, _: sent.append(out))
    report({"step": 10.0, "loss_d": 1.0})  # a log: neither
    report({"step": 20.0, "fid": 5.0, "repeat/fid": 5.25, "kid": 0.1, "repeat/kid": 0.2, "eval_s": 1.0})
    report({"step": 30.0, "fid": 4.0, "eval_s": 2.0})  # measured once (eval.repeat off): the objective alone
    assert [(r.get("objective"), r.get(OBJECTIVE_REPEAT)) for r in sent] == [(None, None), (5.0, 5.25), (4.0, None)]


def test_a_quick_check_does_not_report_the_objective(tmp_path: Path) -> None:
    """A quick check scores the objective's key on fewer samples (stacked_kl 0.63 on 1,000 samples where the
    evaluation read 0.10 on 26,000): ASHA, PBT and the trial's value must read evaluations only."""
    sent: list[dict[str, Any]] = []
    report = Reporter("stacked_kl", trial=0, run_dir=tmp_path, checkpoint_every=None, steps=9000,
                      send=lambda out, _: sent.append(out))
    report({"step": 6000.0, "stacked_kl": 0.10, "eval_s": 9.0})
    report({"step": 7500.0, "stacked_kl": 0.63, "stacked_modes": 800.0})
    assert [r.get("objective") for r in sent] == [0.10, None]
    assert sent[1]["stacked_kl"] == 0.63  # the metric itself still goes out, under its own name


def test_a_pbt_member_ended_by_a_verdict_offers_itself_for_replacement_and_no_other_ending_does() -> None:
    sent: list[dict[str, Any]] = []
    for status, reason in ((Status.PRUNED_COLLAPSED, "mode coverage 0 < 0.15 for 2 checks"),
                           (Status.DIVERGED, "loss_d is nan (step 50)"), (Status.COMPLETED, "")):
        offer_replacement(TrialResult(status, reason, 50, 1.0, 0.1), send=lambda m, c: sent.append(m))
    # the loop's own non-finite stop reads as the search reports it
    assert sent == [{"step": 50.0, VERDICT_KEY: "pruned:collapsed: mode coverage 0 < 0.15 for 2 checks"},
                    {"step": 50.0, VERDICT_KEY: "pruned:diverged: loss_d is nan (step 50)"}]


def test_a_trial_on_a_cluster_ships_its_files_at_each_evaluation_and_leaves_no_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster (``ship_files``) a trial's folder on its node reached the driver only in its last report,
    which a trial ASHA stops (inside ``tune.report``, by SystemExit) never sends: its weights, metrics and grids
    never came back, and the folder stayed on the node. Each evaluation report carries the files changed since
    the last; the folder goes however the trial ends."""
    from gantune.config import dump_config
    from gantune.search import trainable

    sent: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], checkpoint: object = None) -> None:
        sent.append(metrics)
        if sum("objective" in m for m in sent) == 2:
            raise SystemExit(0)  # what Ray does to a trial its scheduler stops

    monkeypatch.setattr(trainable.tune, "report", report)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = tiny(train={"steps": 60}, eval={"every": 20, "metrics": ["modes"]}, health={"objective": "mode_kl"})
    config = {"trial": __import__("yaml").safe_load(dump_config(cfg)), "number": 3, "objectives": ["mode_kl"],
              "health": False, "cpus": 1, "gpu": 0.0, "run_dir": str(tmp_path / "driver"), "ship_files": True,
              "pbt": False}
    with pytest.raises(SystemExit):
        trainable.run_trial(config)
    shipped = [m[trainable.FILES_KEY] for m in sent if trainable.FILES_KEY in m]
    assert len(shipped) == 2 and all("objective" in m for m in sent if trainable.FILES_KEY in m)
    assert {"config.yaml", "metrics.jsonl", "generator_best.pt", "samples/step_0000020.png"} <= set(shipped[0])
    # after the first, metrics.jsonl goes as the lines added since (whole each time, the traffic grew as n^2)
    assert "config.yaml" not in shipped[1] and {"metrics.jsonl+appended", "samples/step_0000040.png"} <= set(
        shipped[1]) and "metrics.jsonl" not in shipped[1]
    driver = tmp_path / "driver"
    for files in shipped:
        trainable.unpack_files(files, driver)
    assert [r["step"] for r in trainable.read_metrics(driver) if "mode_kl" in r] == [20, 40]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("gantune-trial-")]


def test_a_pbt_clone_counts_its_own_seconds_on_not_its_donors(tmp_path: Path) -> None:
    """A member that cloned a donor trains on from the donor's checkpoint, which carries the donor's wall and
    evaluation seconds: its metrics.jsonl jumped from 1.4 s to 12 s in one interval and the report drew the donor's
    whole training as its own. It counts on from its own last record's seconds."""
    from gantune.rundir import RunDir
    from gantune.search.trainable import own_seconds
    from gantune.trial import train

    member = RunDir(tmp_path / "member")
    member.append_metrics({"step": 50, "wall_s": 1.25, "loss_d": 1.0})
    member.append_metrics({"step": 100, "wall_s": 2.5, "eval_s": 0.75, "mode_kl": 1.0})
    member.append_metrics({"step": 150, "wall_s": 3.0, "loss_d": 1.0})
    assert own_seconds(member.path) == (3.0, 0.75) and own_seconds(tmp_path / "none") == (0.0, 0.0)
    donor = tmp_path / "donor"
    cfg = tiny(train={"steps": 20, "checkpoint_every": 10})
    train(cfg, run_dir=donor, device="cpu")
    (donor / "metrics.jsonl").unlink()  # the clone's folder holds the donor's checkpoint and its own records only
    longer = tiny(train={"steps": 30, "checkpoint_every": 10})
    result = train(longer, run_dir=donor, device="cpu", resume=True, seconds=(1000.0, 7.0))
    assert result.wall_s > 1000.0 and result.eval_s >= 7.0
    assert all(r["wall_s"] > 1000.0 for r in RunDir(donor).read_metrics())
