"""What export reports and copies is the chosen trial's own, after one small real search (local Ray, sqlite
Optuna and MLflow): a pruned trial's best evaluation (not the bad last value Optuna stores for it) and, from
MLflow, the search's own generator (not a seed re-run's with the same trial number)."""

import re
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from gantune.cli import main
from gantune.metrics import FAMILIES, Reference, Samples, Scorer, family
from tests.conftest import last_json, searched_in, tiny_space

HEALTHY, UNSTABLE = 0.0002, 0.02
#: The trials' FID is scripted, so that their fates hold on any machine (a real lr-0.02 trial drifted away until
#: the rise check stopped it for training seed 0, and ended healthy for 2 of seeds 0-9): trial 0 (lr 2e-4) falls
#: evaluation after evaluation; trial 1 (told apart by its 301 samples) reaches 10, then rises past 3x that, and
#: the rise check stops it at its fourth evaluation. Only FID is measured, so no collapse rule can stop it first.
SPACE = tiny_space("vals", 2, 100, 10, [HEALTHY, UNSTABLE], log_every=10,
                   n_samples='{expr: "300 if optim.lr_g < 0.001 else 301"}', metrics=["fid"])  # type: ignore[arg-type]
RISING = [30.0, 10.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0, 2560.0, 5120.0]


def _scripted_fid(ref: Reference) -> Scorer:
    """One trial's FID stream (its first call scores the real-vs-real floor); carried to the trials' processes as
    a plugin's replacement of a built-in is."""
    calls = iter(range(1_000_000))

    def score(fake: Samples) -> dict[str, float]:
        k = next(calls)
        if k == 0:
            return {"fid": 1.0}
        return {"fid": RISING[k - 1] if len(fake.feats) == 301 else 30.0 / k}

    return score


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> Iterator[Path]:
    real_fid = FAMILIES.get("fid")
    FAMILIES.remove("fid")
    family("fid", keys=("fid",), lower=("fid",))(_scripted_fid)
    try:
        with searched_in(tmp_path_factory.mktemp("values"), "vals", SPACE, [HEALTHY, UNSTABLE]) as root:
            yield root
    finally:
        FAMILIES.remove("fid")
        FAMILIES.add("fid", real_fid)


def _trial(lr: float) -> optuna.trial.FrozenTrial:
    study = optuna.load_study(study_name="vals", storage="sqlite:///optuna.db")
    return next(t for t in study.trials if t.params["optim.lr_g"] == lr)


def test_a_trial_pruned_after_a_good_stretch_reports_its_best_evaluation(
        searched: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = _trial(UNSTABLE)
    # the state at stake: stopped by the rise check, i.e. its last FID is over 3x its best; Optuna keeps that last
    assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["gantune_rule"] == "objective_rise", (
        t.user_attrs.get("gantune_status"), t.user_attrs.get("gantune_reason"), t.intermediate_values)
    reported = t.intermediate_values
    best, last = min(reported.values()), reported[max(reported)]
    assert len(reported) >= 3 and t.values == [last] and last > 3 * best
    assert main(["export", "vals", "--trial", str(t.number), "--out", "pruned.yaml", "--weights", "pruned-w",
                 "--json"]) == 0
    result = last_json(capsys)
    assert result["status"] == "pruned:diverged" and result["search_value"] == best
    assert result["chosen"].endswith(f"best evaluation fid {best:.4g}")
    assert (searched / "pruned.yaml").read_text().splitlines()[1].endswith(f"best evaluation fid {best:.6g}")
    assert sorted(p.name for p in (searched / "pruned-w").iterdir()) == ["generator.pt", "generator_best.pt"]
    # the report's trial table says the same
    assert main(["report", "vals", "--out", "report.html"]) == 0
    row = re.search(rf'<tr class="trial-row"><td>{t.number}</td>.*?</tr>', (searched / "report.html").read_text(),
                    re.S)
    assert row is not None and f"<td>{best:.4g} (best evaluation)</td>" in row.group(0)


def test_mlflow_weights_are_the_searchs_not_a_seed_reruns(searched: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    t = _trial(HEALTHY)
    assert t.state == optuna.trial.TrialState.COMPLETE and t.number == 0
    run_dir = Path(t.user_attrs["run_dir"])
    own = (run_dir / "generator.pt").read_bytes()
    # seed re-runs of trial 0 log into the same experiment; the re-run search numbers its first trial 0 too
    assert main(["export", "vals", "--seeds", "1", "--steps", "30", "--out", "rerun.yaml", "--json"]) == 0
    capsys.readouterr()
    client = MlflowClient(f"sqlite:///{searched / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vals").experiment_id])
    rerun_parent = next(r for r in runs if r.data.tags.get("gantune.study") == "vals-reruns")
    rerun = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == rerun_parent.info.run_id)
    assert rerun.data.tags["gantune.trial"] == "0"
    other = Path(client.download_artifacts(rerun.info.run_id, "weights/generator.pt", str(searched)))
    assert other.read_bytes() != own
    moved = run_dir.with_name(run_dir.name + "-moved")
    run_dir.rename(moved)  # no local run directory: export fetches the weights from MLflow
    try:
        assert main(["export", "vals", "--trial", "0", "--out", "t0.yaml", "--weights", "t0-w", "--json"]) == 0
    finally:
        moved.rename(run_dir)
    copied = last_json(capsys)["weights"]
    assert Path(copied[0]).name == "generator.pt" and Path(copied[0]).read_bytes() == own
    assert copied == ["t0-w/generator.pt", "t0-w/generator_best.pt"]  # laid out as a copy from the run directory


def test_mlflow_weights_are_this_studys_and_a_refusal_keeps_the_folder(searched: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Two searches of one name (two storages, one MLflow) log into one experiment: the newest parent by name was
    the other search's, whose trial 0 (the same sampled values under one sampler seed) was exported as this one's.
    And weights refused as not the trial's were first moved into ``--weights``, replacing an earlier export's
    files, then deleted with them: the folder was left empty."""
    import torch

    from gantune.sampling.study import STUDY_UID

    t = _trial(HEALTHY)
    run_dir = Path(t.user_attrs["run_dir"])
    own = (run_dir / "generator.pt").read_bytes()
    uid = optuna.load_study(study_name="vals", storage="sqlite:///optuna.db").user_attrs[STUDY_UID]
    client = MlflowClient(f"sqlite:///{searched / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vals").experiment_id
    payload = torch.load(run_dir / "generator.pt", weights_only=True)
    other = {k: v + 1 for k, v in payload["state_dict"].items()}  # another search's trial 0: the same config
    wrong = {**payload, "config": {**payload["config"], "optim": {**payload["config"]["optim"], "lr_g": 0.5}}}
    fakes = []
    for name, weights, study_uid in (("other", {**payload, "state_dict": other}, "another-storage"),
                                     ("wrong", wrong, uid)):
        parent = client.create_run(exp, tags={"gantune.role": "parent", "gantune.study": "vals",
                                              "gantune.study_uid": study_uid}).info.run_id
        child = client.create_run(exp, tags={"mlflow.parentRunId": parent, "gantune.trial": "0"}).info.run_id
        (searched / name).mkdir()
        torch.save(weights, searched / name / "generator.pt")
        client.log_artifact(child, str(searched / name / "generator.pt"), "weights")
        fakes += [parent, child]
    moved = run_dir.with_name(run_dir.name + "-away")
    run_dir.rename(moved)  # no local run directory: export fetches the weights from MLflow
    try:
        client.delete_run(fakes[2])  # the other search's parent only
        client.delete_run(fakes[3])
        assert main(["export", "vals", "--trial", "0", "--out", "t0.yaml", "--weights", "mine", "--json"]) == 0
        assert (searched / "mine" / "generator.pt").read_bytes() == own  # not the other search's (newer) trial 0
        client.restore_run(fakes[2])
        client.restore_run(fakes[3])
        capsys.readouterr()
        assert main(["export", "vals", "--trial", "0", "--out", "t0.yaml", "--weights", "mine"]) == 2
        assert "are not usable (its optim.lr_g is 0.5, the trial's 0.0002)" in capsys.readouterr().err
        assert (searched / "mine" / "generator.pt").read_bytes() == own  # the earlier export's, kept
    finally:
        moved.rename(run_dir)
        for run in fakes:
            client.delete_run(run)
