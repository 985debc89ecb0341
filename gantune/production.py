"""``gantune train`` as a function: one production training run, checked, tracked in MLflow and summarised.

The Ray-free counterpart of ``gantune.search.run_search``: the command line only parses flags and prints.
Bad input (config, ``--out``, ``--resume`` without a checkpoint, data that is not there, tracking URI) is a
``GantuneError`` before anything is written; the MLflow run is opened at the first report, so it exists only for
a run that started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gantune import provenance
from gantune.catalogue import (
    READ_ONLY_UNDER,
    config_from_dict,
    config_from_file,
    idle_quick_checks,
    objective_side,
    unmeasured_objective,
)
from gantune.config import TrialConfig, dotted, dump_config, read_yaml, steps_note
from gantune.data import (
    DATASETS,
    check_data,
    data_listing,
    data_notes,
    folder_images,
    known_classes,
    listed_once,
    listing_change,
)
from gantune.errors import ConfigError, GantuneError, Interrupted
from gantune.events import INTERRUPTED, Status, first_line, warn
from gantune.gan.conditional import check_classes, state_classes
from gantune.gan.progressive import GrowthSchedule
from gantune.gan.step import schedule_at
from gantune.gan.transfer import check_init
from gantune.health import HealthMonitor, Verdict
from gantune.metrics import check_real_count, missing_weights
from gantune.progress import Meter, steps_line
from gantune.rundir import (
    BEST_GENERATOR,
    CHECKPOINT,
    CONFIG,
    GENERATOR,
    METRICS,
    OWNER,
    RUN_FILES,
    atomic_write,
    check_free,
    check_writable,
    exclusive,
    load_checkpoint,
    load_saved,
    read_metrics,
)
from gantune.sampling.checks import absolute_paths
from gantune.sampling.specs import schema_default
from gantune.trial import is_oom, resolve_device, train


@dataclass
class TrainOptions:
    """What ``gantune train`` was asked for."""

    config: str
    steps: int | None = None
    out: str | None = None
    device: str | None = None
    resume: bool = False
    early_stop: bool = False
    tracking_uri: str | None = None
    tracking: bool = True


def builtin_config(name: str) -> Path | None:
    """The packaged config called ``name`` (e.g. ``grid25``), if there is one."""
    p = resources.files("gantune") / "configs" / f"{name}.yaml"
    return Path(str(p)) if p.is_file() else None


def resolve_config_path(arg: str) -> Path:
    """A config file, or a built-in config's name (also where a folder of that name is here: ``train grid25 --out
    grid25`` made one, and every later ``train grid25`` there, its ``--resume`` too, read the folder as the file)."""
    p = Path(arg)
    if p.is_file():
        return p
    builtin = builtin_config(arg)
    if builtin is not None:
        return builtin
    if p.exists():  # a folder or another non-file: load_config says what it is
        return p
    names = sorted(x.name.removesuffix(".yaml") for x in (resources.files("gantune") / "configs").iterdir())
    raise GantuneError(f"{arg}: no such file (built-in configs: {', '.join(names)})")


def _checked(opts: TrainOptions) -> tuple[TrialConfig, Path, int, list[str]]:
    """The config, the run folder and (resumed) the step its checkpoint reached, 0 for a new run: the checkpoint
    is read once here (it can be large), for every check and the monitor's history; and the warnings to say once
    the run is under way (said before a refusal found as the data loads, they made its one line two)."""
    path = resolve_config_path(opts.config)
    written = read_yaml(path)  # once: the config, and what the file itself sets (a pipe reads empty the second time)
    cfg = config_from_file(written, path, resumed=opts.resume)  # resumed: no init_from (the checkpoint has all)
    raw = absolute_paths(cfg.to_dict())
    flags: list[str] = []
    if opts.steps is not None:
        raw["train"]["steps"] = opts.steps
        flags.append("--steps")
    if opts.device is not None:  # --device '' is no device: it trained on the config's, without a word
        resolve_device(opts.device, "--device")
        raw["train"]["device"] = opts.device  # config.yaml and MLflow say the device the run was given
        flags.append("--device")
    if raw != cfg.to_dict():
        cfg = config_from_dict(raw, f"{path} ({', '.join(flags)})" if flags else str(path), resumed=opts.resume)
    if opts.out == "":
        raise GantuneError("--out: empty; name the run folder (or leave --out out for runs/<name>)")
    out = Path(opts.out) if opts.out is not None else default_out(cfg.name, path)
    if is_search_folder(out):  # its files went in among the trial folders, under the search's lock
        raise GantuneError(f"--out: {out} is a search's folder (its trials' runs are in it); train into a folder of "
                           f"its own, such as {out / 'train'}")
    at = 0
    # a run training there now: the checks below read its files as a run stopped before its first checkpoint
    # ("delete it") or one to resume, advice the lock then refused
    check_free(out, f"run folder {out}")
    # a folder where a run file goes: --resume read metrics.jsonl (IsADirectoryError), or trained to the end and
    # failed writing generator.pt
    if blocked := [name for name in RUN_FILES if (out / name).exists() and not (out / name).is_file()]:
        raise GantuneError(f"--out: {out / blocked[0]} is not a file, and a run writes its {blocked[0]} there; move "
                           "it away, or choose another --out")
    if opts.resume and not (out / CHECKPOINT).exists():  # a folder that is not there, or a file, is no run at all
        what = "no checkpoint in" if out.is_dir() else "no run folder" if not out.exists() else "not a run folder:"
        raise GantuneError(f"--resume: {what} {out}")
    if opts.resume:
        written_steps = check_same_run(cfg, out)
        ckpt = load_checkpoint(out) or {}
        at = int(ckpt.get("step", 0))
        # fewer steps trained nothing and rewrote config.yaml with steps its weights passed; as many, on a run that
        # ended (its generator.pt written), trained nothing and rewrote its files
        ended = saved_step(out / GENERATOR) == at
        if cfg.train.steps < at or (cfg.train.steps == at and ended):
            raise GantuneError(f"--resume: {out} ended at step {at} already; give --steps above {at} to train it on"
                               if ended else f"--resume: {out} is at step {at} already; give --steps of {at} or more")
        if (out / BEST_GENERATOR).exists():  # only a better evaluation writes it again: a broken one stayed broken
            try:
                load_saved(out / BEST_GENERATOR)
            except GantuneError as err:
                raise GantuneError(f"--resume: {err}: the best weights so far are lost; delete it to resume (the "
                                   "next better evaluation writes it again)") from None
        check_history(out, ckpt)
        check_growth(cfg, out, ckpt)
        check_schedule(cfg, out, ckpt, at, written_steps)
        check_same_classes(cfg, out, ckpt)
        check_same_data(cfg, out, ckpt)
    if not opts.resume and (out / CHECKPOINT).exists():
        raise GantuneError(f"--out: {out} already holds a run; pass --resume to continue it or choose another --out")
    if not opts.resume and (held := stopped_run(out)):
        raise GantuneError(f"--out: {out} holds a run stopped before its first checkpoint ({held}): nothing to "
                           "resume, and a new run would mix its files with that one's; delete it or choose another "
                           "--out")
    if not opts.resume and (out / CONFIG).exists() and not run_config(out / CONFIG) and not _same_file(path,
                                                                                                   out / CONFIG):
        raise GantuneError(f"--out: {out / CONFIG} is a file of yours (not a run's config.yaml, every key and no "
                           "comments, nor the config trained), which the run would replace with its resolved config; "
                           "move it away, or choose another --out")
    check_writable(out, "--out", is_dir=True)
    check_apart_from_data(cfg, out)
    if opts.device is None:
        resolve_device(cfg.train.device, f"{path}: train.device")
    try:
        check_data(cfg.data)  # data that is not there: one line now, not a failed run
        check_classes(cfg)  # so is a conditional run on a folder without class subfolders
        check_real_count(cfg)  # and metrics on a folder of one image
    except GantuneError as err:  # named by the file it is in, as the config's other errors are
        raise type(err)(f"{path}: {err}") from None
    notes = [f"{path}: {note}" for note in data_notes(cfg.data)]  # said once the run is under way (below)
    # (empty quick checks: not on --resume, where eval.quick_every cannot change and the run could not go on)
    missing = missing_weights(cfg) or objective_side(cfg) or (
        None if opts.resume else idle_quick_checks(cfg, cfg.eval.quick_every, "eval.quick_every"))
    if missing:  # so are evaluation weights that are not there, an objective followed the wrong way, empty checks
        raise ConfigError(f"{path}: {missing}")
    if unmeasured := unmeasured_objective(cfg):  # one the file names is a mistake; the schema's fid, a warning
        if isinstance(written, dict) and "objective" in (written.get("health") or {}):
            raise ConfigError(f"{path}: {unmeasured}")
        notes.append(f"{path}: {unmeasured}; set health.objective")
    notes += [f"{path}: {note}" for note in unread_keys(cfg, written)]
    if cfg.origin is not None and cfg.origin.steps_read_at is not None and (
            stale := steps_note(cfg.origin.steps_read, cfg.origin.steps_read_at, cfg.train.steps)):
        notes.append(f"{path}: {stale} (origin.steps_read)")
    if not opts.resume:  # a resumed run's weights come from its checkpoint
        check_init(cfg)  # weights that do not fit the nets: one line now, naming the first tensor
    return cfg, out, at, notes


def unread_keys(cfg: TrialConfig, written: Any) -> list[str]:
    """A line for each key the file sets to other than its default and that this config does not read
    (``READ_ONLY_UNDER``: ``gp_weight: 5`` beside ``name: hinge``): accepted without a word, it trained as if
    absent. A key at its default is no choice of the user's (a run's config.yaml, an export, name every key)."""
    given = dotted(written) if isinstance(written, dict) else {}
    values = dotted(cfg.to_dict())
    return [f"{path} is set to {values[path]!r}, but this config does not read it (it is read with {needs()})"
            for path, (reads, needs) in READ_ONLY_UNDER.items()
            if path in given and path in values and not reads(cfg) and values[path] != schema_default(path)]


def check_apart_from_data(cfg: TrialConfig, out: Path) -> None:
    """A run folder holds a lock, and an image folder's walk skips a folder that holds one (so a run inside its data
    folder does not read its grids back): ``--out`` at the data folder, or at a folder of its images (a class
    folder), left the data without those images, and every later run said "no images" or trained a class short."""
    given = Path(cfg.data.path or "").expanduser()
    if not cfg.data.path or DATASETS.get(cfg.data.name).listing is None or not given.is_dir():
        return  # not a dataset of image files it lists (or not there: check_data says so)
    root, at = given.resolve(), out.resolve()
    inside = at.relative_to(root).parts if root in at.parents else None
    holds = inside is not None and any(f.relative_to(given).parts[:len(inside)] == inside
                                       for f in folder_images(given))
    if at == root or holds:
        raise GantuneError(f"--out: {out} is {'the data folder' if at == root else 'a folder of the data'} "
                           f"({cfg.data.path}): the run's files would take its images out of the data; choose "
                           "another --out (a new folder inside the data folder is fine)")


def stopped_run(out: Path) -> str:
    """What a run stopped before its first checkpoint left in ``out`` (its log, weights or grids), ``""`` when
    nothing (a folder with only a config.yaml is a run that failed before it trained: it may start over)."""
    held = [n for n in (METRICS, GENERATOR, BEST_GENERATOR) if (out / n).is_file() and (out / n).stat().st_size]
    if (out / "samples").is_dir() and any((out / "samples").glob("*.png")):
        held.append("samples/")
    return ", ".join(held)


def run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.yaml`` a run wrote (the resolved config as ``dump_config`` writes it), one a
    new run may replace: a run's own ended with the user's search space or commented config there replaced by it."""
    try:
        text = path.read_text("utf-8")
        return not text or dump_config(config_from_dict(read_yaml(path), str(path), resumed=True)) == text
    except (GantuneError, OSError, UnicodeDecodeError):
        return False


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` (a config trained into its own folder: its resolved form replaces it)."""
    try:
        return a.samefile(b)
    except OSError:
        return False


def saved_step(path: Path) -> int | None:
    """The step ``path`` (weights ``train`` saved) was taken at; None when it is missing or unreadable. A run killed
    between its last checkpoint and its ``generator.pt`` has an earlier part's file there (or none): it has not
    ended, and a resume at the same steps writes the file."""
    try:
        payload = load_saved(path) if path.is_file() else None
    except GantuneError:
        return None
    step = payload.get("step") if isinstance(payload, dict) else None  # a bare tensor saved there: no step
    return step if isinstance(step, int) else None


def discard_unstarted(out: Path, kept: dict[str, bytes | None]) -> None:
    """A run that failed before it logged anything (out of memory at its first step, a Ctrl-C while the data
    loaded) leaves no ``config.yaml`` and empty ``samples/`` of its own behind: nothing half-made (``exclusive``
    then removes its lock and the folders it made). ``kept``: those names were there before it, with a
    ``config.yaml``'s bytes (the user's own in ``--out``, which the run had replaced with its resolved config)."""
    if not (out / CHECKPOINT).exists() and not stopped_run(out):
        if CONFIG not in kept:
            (out / CONFIG).unlink(missing_ok=True)
        elif (text := kept[CONFIG]) is not None and \
                (not (out / CONFIG).is_file() or (out / CONFIG).read_bytes() != text):
            atomic_write(out / CONFIG, text)
        if "samples" not in kept:
            with contextlib.suppress(OSError):  # not empty: something else is there
                (out / "samples").rmdir()


def default_out(name: str, path: Path) -> Path:
    """``runs/<name>``, or ``runs/<name>/train`` where that is a search's folder (an exported config keeps the
    search's name: its run's checkpoint and samples went in among the trial folders, under the search's lock)."""
    from gantune.sampling.settings import check_name

    root = Path("runs") / check_name(name, f"{path}: name", "run name", "runs/ (or give --out)")
    return root / "train" if is_search_folder(root) else root


def is_search_folder(folder: Path) -> bool:
    """Whether ``folder`` is a search's (its study marker, or trial folders in it)."""
    return (folder / OWNER).exists() or any(folder.glob("trial-[0-9][0-9][0-9][0-9]"))


def check_history(out: Path, ckpt: dict[str, Any]) -> None:
    """A resumed run reads its best evaluation so far back from metrics.jsonl: with the log gone (empty, cut, or
    another run's) it went on without its history and took its next evaluation, worse or not, as the best."""
    last = ckpt.get("last") or {}
    if "step" in last and not any(rec["step"] == last["step"] for rec in read_metrics(out)):
        raise GantuneError(f"--resume: {out / METRICS} has no record of step {int(last['step'])}, the last the "
                           "checkpoint logged (emptied, cut short or replaced?): resumed, the run would lose its "
                           f"history and best so far; restore it, or delete {out} to train again from step 0")


def check_growth(cfg: TrialConfig, out: Path, ckpt: dict[str, Any]) -> None:
    """A progressive run grows by the stage length its checkpoint holds (its first ``train.steps`` gave it), on
    any ``--steps``: those must still leave its last fade ending before them, so the last steps and the saved
    generator are at the full resolution."""
    plan = GrowthSchedule.of_config(cfg)
    stage = (ckpt.get("trainer") or {}).get("growth_stage")
    if plan is not None and stage is not None:
        end = dataclasses.replace(plan, stage_steps=int(stage)).end
        if end >= cfg.train.steps:
            raise GantuneError(f"--resume: {out} grows its nets {int(stage)} steps a stage, so its last fade ends "
                               f"at step {end}: give --steps above {end}")


def check_schedule(cfg: TrialConfig, out: Path, ckpt: dict[str, Any], at: int, written_steps: int) -> None:
    """The learning-rate decay and the instance noise run over ``train.steps``: a resume with other ``--steps``
    would read them from another schedule at its next step. Where that changes their values there (a run that
    decayed to 0 by its last step, resumed to twice as many: the rate jumped back to half, the noise came back on),
    refused; where it does not (decay not started yet, noise over), the schedules stretch from there on. A checkpoint
    from before it kept its steps (2026-12-07) is taken to have run over its config.yaml's (``written_steps``)."""
    then = (ckpt.get("trainer") or {}).get("schedule_steps", written_steps)
    if not isinstance(then, int) or then == cfg.train.steps:
        return
    before = schedule_at(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=then)), at + 1)
    after = schedule_at(cfg, at + 1)
    jumps = [f"{what} {a:.3g} -> {b:.3g}" for what, a, b in zip(
        ("its learning rates' decay factor", "its instance noise's std"), before, after, strict=True)
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)]
    if jumps:
        raise GantuneError(f"--resume --steps {cfg.train.steps}: {out}'s schedules ran over its {then} steps, and at "
                           f"step {at + 1} {' and '.join(jumps)} (decay and noise recomputed over "
                           f"{cfg.train.steps}); resume with --steps {then}, or train a new run for longer")


def check_same_classes(cfg: TrialConfig, out: Path, ckpt: dict[str, Any]) -> None:
    """A conditional run's class count is its folder's subfolders': one added or removed since the checkpoint
    makes nets its weights do not fit (a traceback loading them)."""
    k = known_classes(cfg.data) if cfg.model.conditional else None
    trained = state_classes((ckpt.get("trainer") or {}).get("G") or {})
    if k is not None and trained and k != trained:
        raise GantuneError(f"--resume: {out}'s generator was trained on {trained} classes, and {cfg.data.path} now "
                           f"has {k} class folders; restore them, or train into another --out")


def check_same_data(cfg: TrialConfig, out: Path, ckpt: dict[str, Any]) -> None:
    """A folder whose images were added, removed or replaced since the checkpoint: resumed, the run trained on from
    weights of other data and logged metrics against another reference in the same log. A checkpoint from before
    listings were kept (2026-12-03) has none to compare."""
    then = ckpt.get("data")
    now = data_listing(cfg.data) if isinstance(then, dict) else None
    if isinstance(then, dict) and now is not None and (change := listing_change(then, now)):
        raise GantuneError(f"--resume: {cfg.data.path} changed since {out}'s checkpoint ({change}); restore it, or "
                           "train into another --out")


def resumed_verdict(monitor: HealthMonitor, out: Path, last: int) -> Verdict | None:
    """Feed ``monitor`` the records ``out``'s run logged up to its checkpoint's step ``last``, so that a resumed
    run is judged on its whole history (a fresh monitor restarted the warm-up and patience, and took the
    objective's next value as its best); the verdict they gave, if any."""
    return monitor.replay([record for record in read_metrics(out) if record["step"] <= last])


#: what a resumed run may change: how long it trains and where (the rest makes another run)
RESUMABLE = ("name", "origin", "train.steps", "train.device")


def check_same_run(cfg: TrialConfig, out: Path) -> int:
    """``--resume`` continues the run in ``out``: its config (``out/config.yaml``) must be this one but for
    ``RESUMABLE``. Other nets fail to load the checkpoint; other data, losses or metrics would train on from
    weights that are not this config's and mix two runs' metrics in one log. Returns the steps it was written
    with (what ``check_schedule`` reads for a checkpoint that kept none)."""
    try:
        written = read_yaml(out / CONFIG)
        if not isinstance(written, dict):
            raise GantuneError(f"{CONFIG} holds no config")
        saved = absolute_paths(config_from_dict(written, str(out / CONFIG), resumed=True).to_dict())
    except GantuneError:
        raise GantuneError(f"--resume: {out} holds a checkpoint but no readable {CONFIG}") from None
    mine, theirs = dotted(cfg.to_dict()), dotted(saved)
    # a run writes every key: one that loads with keys missing was cut short, not another config's run
    if lost := sorted(set(theirs) - set(dotted(written))):
        raise GantuneError(f"--resume: {out / CONFIG} lacks {len(lost)} of the keys a run writes (first: "
                           f"{lost[0]}): damaged? Restore it, or train into another --out")
    differ = [k for k in mine if mine[k] != theirs.get(k) and not any(k == r or k.startswith(f"{r}.")
                                                                      for r in RESUMABLE)]
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine[k]!r} here" for k in differ[:3])
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise GantuneError(f"--resume: {out} is another config's run ({shown}{more}); resume it with its own "
                           f"{out / CONFIG} (--steps may change) or train this config into another --out")
    return int(theirs["train.steps"])


def diverged_error(reason: str, out: Path) -> str:
    """The one line a run that went non-finite ends with: what it left that can still generate."""
    kept = (f"{out / BEST_GENERATOR} holds its best evaluation's generator" if (out / BEST_GENERATOR).exists()
            else "it had no finite evaluation to keep")
    again = f"train into another --out (or delete {out})"
    if (out / GENERATOR).exists():  # the weights stayed finite: a value measured on them did not (a metric's)
        return (f"the run stopped at a non-finite value ({reason}) with finite weights: {out / GENERATOR} holds "
                f"them, {kept}; a metric or a loss measured on finite weights overflowed: check the eval settings "
                f"(eval.metrics, eval.n_samples) or lower the learning rates, and {again}")
    return (f"the run diverged ({reason}): no {GENERATOR} (its weights are non-finite), {kept}; lower the learning "
            f"rates or add a penalty (loss.r1_weight, loss.gp_weight), and {again}")


def run_training(opts: TrainOptions, say: Callable[[str], None] | None = print,
                 status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and return the summary ``gantune train --json`` prints.

    Each report's progress line (``step N/total``, rate, ETA, the losses) goes to ``status``, every other line
    (health verdicts, how values are measured, the ending) to ``say``; ``status`` defaults to ``say``, so a
    terminal can rewrite the progress line in place while a pipe keeps every line.
    """
    with listed_once():  # the checks read an image folder's listing once between them
        cfg, out, at, notes = _checked(opts)
    emit = say or (lambda line: None)

    def said() -> None:  # the warnings, once the data and the evaluation's reference are ready
        while notes:
            warn(notes.pop(0))
    progress = status or emit
    meter = Meter()
    tracker = None
    if opts.tracking:
        from gantune.tracking import TrainRun, resolve_tracking_uri

        tracker = TrainRun(resolve_tracking_uri(opts.tracking_uri), cfg, out, opts.resume)
        tracker.check()

    def show(r: dict[str, float]) -> None:
        said()
        meter.update(int(r["step"]))
        keys = [k for k in r if k not in ("step", "wall_s", "steps_per_s")]  # the line has its own rate
        progress(steps_line(meter, cfg.train.steps) + "  " + "  ".join(f"{k}={r[k]:.4g}" for k in keys))
        if tracker is not None:
            tracker.report(r)

    monitor = HealthMonitor.for_trial(cfg)
    before = resumed_verdict(monitor, out, at) if opts.resume else None

    def health(r: dict[str, float]) -> Verdict | None:
        nonlocal before
        verdict = monitor(r) if monitor.verdict is None else None
        if verdict is not None:
            emit(f"health: {verdict.kind}: {verdict.reason}")
        elif before is not None:  # given before the resume: said, and (with --early-stop) it stops the run now
            verdict, before = before, None
            emit(f"health: {verdict.kind}: {verdict.reason} (before the resume)")
        return verdict if opts.early_stop else None

    def measured(p: dict[str, Any]) -> None:
        said()
        emit(f"measured: {provenance.describe(p)}; {provenance.floor_text(p)}")
        if tracker is not None:
            tracker.provenance(p)

    try:
        # there before: not this run's to remove (a config.yaml's bytes: the run replaces it as it starts)
        kept = {n: (out / n).read_bytes() if (out / n).is_file() else None for n in (CONFIG, "samples")
                if (out / n).exists()}
        with exclusive(out, f"run folder {out}", "train"):  # a second train (--resume) there interleaved its steps
            try:
                result = train(cfg, report=show, should_stop=health, run_dir=out, resume=opts.resume,
                               device=opts.device, on_samples=tracker.samples if tracker is not None else None,
                               on_provenance=measured)
            except BaseException:
                if not opts.resume:
                    discard_unstarted(out, kept)
                raise
    except BaseException as err:  # the MLflow run (if it was opened) never stays RUNNING
        if tracker is not None:
            interrupted = isinstance(err, KeyboardInterrupt)
            tracker.fail(INTERRUPTED if interrupted else f"{type(err).__name__}: {err}", killed=interrupted)
        if is_oom(err):
            raise GantuneError(f"out of memory: {first_line(err)} (lower train.batch_size, model.z_dim, the model "
                               "widths or eval.n_samples)") from None
        if isinstance(err, ConfigError):  # found once the data is loaded: the file it is in, as at load
            raise ConfigError(f"{resolve_config_path(opts.config)}: {err}") from None
        if isinstance(err, KeyboardInterrupt):
            raise Interrupted(f"interrupted; continue from its last checkpoint with --resume (--out {out})"
                              if (out / CHECKPOINT).exists() else "interrupted before the first checkpoint: "
                              + (f"nothing to resume (delete {out} to train into it again)" if stopped_run(out)
                                 else "nothing was kept")) from None
        raise
    said()
    verdict = monitor.verdict
    # a verdict the run trained past (no --early-stop) was said once, mid-run: the ending repeats it
    past = (f"; health said {verdict.kind} ({verdict.reason}) and the run went on: --early-stop stops there"
            if verdict is not None and result.status == Status.COMPLETED else "")
    emit(f"{result.status}{': ' + result.reason if result.reason else ''} after {result.steps} steps "
         f"in {result.wall_s:.1f}s (evaluation {100 * result.eval_fraction:.1f}%) -> {out}{past}")
    summary = result.to_dict()
    summary["eval_fraction"] = result.eval_fraction
    summary["health"] = {"status": monitor.status, "reason": verdict.reason if verdict else "",
                         "rule": verdict.rule if verdict else ""}
    summary["weights"] = str(out / GENERATOR) if (out / GENERATOR).exists() else None
    if result.status == Status.DIVERGED:  # the loop's own stop on a NaN: not what the run was asked to do
        summary["health"] = {"status": Status.DIVERGED.value, "reason": result.reason,  # the monitor's word is older
                             "rule": result.rule}
        summary["error"] = diverged_error(result.reason, out)
    if tracker is not None:
        tracker.end(result.status, result.reason, result.steps, [out / GENERATOR, out / BEST_GENERATOR, out / CONFIG])
        summary["mlflow_run_id"] = tracker.run_id
        summary["tracking_error"] = tracker.lost  # a run that lost its tracking mid-way trained on without it
    return summary
