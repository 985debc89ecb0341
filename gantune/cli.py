"""``gantune`` command line: parse, call, print. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from gantune import env, plugins
from gantune.config import MAX_SEED, share_problem
from gantune.dburl import BUSY_TIMEOUT_S, patient_sqlite
from gantune.errors import MACHINE_ERRNOS, GantuneError, Interrupted
from gantune.events import first_line, one_line
from gantune.provenance import describe, floor_scored, trial_numbers
from gantune.registry import Registry, plugin_hint
from gantune.streams import outliving

#: a file where a folder goes or the other way round (``runs/<name>`` a file, a run's ``samples`` a file): its
#: traceback was the answer
IN_THE_WAY = frozenset({errno.EEXIST, errno.ENOTDIR, errno.EISDIR})


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (and exit code 2, as argparse does)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: each command's parser, by name (the top level's): an unknown argument after a command is that command's
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """argparse's, with an unrecognized argument reported by the command it followed ("gantune train: error:",
        as every other error of that command; argparse reported it as "gantune: error:")."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            given = list(sys.argv[1:] if args is None else args)
            command = getattr(parsed, "command", None) or ""
            # one given before the command is the top level's ("gantune --bogus train" blamed train)
            first = given.index(command) if command in given else len(given)
            owner = self if any(e in given[:first] for e in extra) else self.commands.get(command, self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]
    #: whether it opens the study or MLflow's store (then sqlite waits for locks: ``dburl.patient_sqlite``, which
    #: imports SQLAlchemy, a cost the commands without a store are spared)
    stores: bool = True


COMMANDS: Registry[Command] = Registry("command")


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (a port, a seed), refused as a usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _file(text: str) -> str:
    """An argparse type: a file to write. ``Path`` drops a trailing slash (and ``/.``), so ``--out d/`` wrote a
    file named ``d`` where a folder was meant."""
    if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} names a folder (it ends in a slash or a dot); name a file to "
                                         "write")
    if text and not os.path.basename(text).strip():  # a file named " " was written: "wrote  : ..."
        raise argparse.ArgumentTypeError(f"{text!r} names a blank file name; name a file to write")
    if text == "-":  # standard output to most tools: a file named - was written, and the line said "-> -"
        raise argparse.ArgumentTypeError("'-': this writes a file, not standard output; name a file (./- for one "
                                         "called -)")
    return _home(text)


def _home(text: str) -> str:
    """An argparse type: a path with a leading ``~`` expanded, as the shell does not in ``--out=~/x`` or ``"~/x"``
    (a folder named ``~`` was made in the working folder, while the line said ``-> ~/x``)."""
    return os.path.expanduser(text)


def _folder(text: str) -> str:
    """An argparse type: a folder to write into, named (``--weights ''`` copied nothing and said nothing, and
    ``--runs-dir ''`` put the trials' folders in the working folder, or under runs/)."""
    if not text:
        raise argparse.ArgumentTypeError("empty; name a folder")
    return _home(text)


def _share(text: str) -> float:
    """An argparse type: a GPU share, a finite number of 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if why := share_problem(value):
        raise argparse.ArgumentTypeError(f"{text} is not a GPU share (e.g. 0.25): it {why}")
    return value


PORT = _bounded(0, 65535)
SEED = _bounded(0, MAX_SEED)
#: a sample or step count: past 2^62 torch cannot size a tensor by it (a TypeError), below it memory says no
COUNT = _bounded(-(2**62), 2**62)


_TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"


def _uri(text: str) -> str:
    """An argparse type: a tracking URI, named (``--tracking-uri "$UNSET"`` logged to the default store without
    a word, where every other empty value is refused)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; name the tracking URI, or leave the flag out for the default")
    return text


def _tracking_uri_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", type=_uri, help=_TRACKING_URI_HELP)


def _tracking_args(p: argparse.ArgumentParser, what: str) -> None:
    """--tracking-uri or --no-tracking: one excludes the other (a URI given with --no-tracking would be ignored)."""
    either = p.add_mutually_exclusive_group()
    either.add_argument("--tracking-uri", type=_uri, help=_TRACKING_URI_HELP)
    either.add_argument("--no-tracking", action="store_true", help=f"do not log {what} to MLflow")


def emit(line: str, quiet: bool) -> None:
    """A command's line of what it did (none with --json): one line, whatever the names in it hold."""
    if not quiet:
        print(one_line(line), flush=True)


# --- train ---------------------------------------------------------------------------------------------

def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="trial config YAML, or a built-in name: grid25, ring8, digits")
    p.add_argument("--steps", type=int, help="generator steps (overrides train.steps)")
    p.add_argument("--out", type=_home, help="output directory (default: runs/<config name>)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides train.device)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--early-stop", action="store_true",
                   help="stop when the health monitor says diverged/collapsed/stalled (default: only report it)")
    _tracking_args(p, "this run")


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from gantune.production import TrainOptions, run_training

    opts = TrainOptions(config=args.config, steps=args.steps, out=args.out, device=args.device, resume=args.resume,
                        early_stop=args.early_stop, tracking_uri=args.tracking_uri, tracking=not args.no_tracking)
    if args.json:  # the JSON summary alone
        return run_training(opts, say=None)
    from gantune.progress import LiveLine

    line = LiveLine(sys.stdout)  # one line rewritten in place on a terminal, every step line in a pipe
    try:
        return run_training(opts, say=line.say, status=line.show)
    finally:
        line.close()


COMMANDS.add("train", Command("train one GAN from a config file", _train_args, _train))


# --- search --------------------------------------------------------------------------------------------

def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="search-space YAML (see search_spaces/)")
    p.add_argument("--trials", type=int, help="number of trials (overrides search.trials)")
    p.add_argument("--max-steps", type=int, help="generator steps per trial (overrides search.max_steps)")
    p.add_argument("--concurrent", type=int, help="trials at once (overrides search.concurrency)")
    p.add_argument("--gpus-per-trial", type=_share, help="GPU share per trial, e.g. 0.25 (overrides resources.gpu)")
    p.add_argument("--ray-address", help="join a Ray cluster (auto, or the head's HOST:PORT) instead of a local Ray")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///optuna.db)")
    _tracking_args(p, "the search")
    p.add_argument("--runs-dir", type=_folder, default="runs", help="where trial run directories go (default: runs)")
    p.add_argument("--name", help="search name (default: the file's name: or its stem)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search of this name")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _search(args: argparse.Namespace) -> dict[str, Any]:
    from gantune.dburl import check_apart
    from gantune.sampling.space import load_space
    from gantune.sampling.study import DEFAULT_STORAGE
    from gantune.search import SearchOptions, run_search

    space = load_space(args.space, name=args.name)
    uri = None
    if not args.no_tracking:  # MLflow's import takes seconds: a search without tracking never pays it
        from gantune.tracking import MlflowTracker, resolve_tracking_uri
        uri = resolve_tracking_uri(args.tracking_uri)
    check_apart(args.storage or DEFAULT_STORAGE, uri,
                storage_named=args.storage is not None and args.tracking_uri is None)
    observers = [] if uri is None else [MlflowTracker(uri, space.name)]
    opts = SearchOptions(trials=args.trials, max_steps=args.max_steps, concurrent=args.concurrent,
                         gpus_per_trial=args.gpus_per_trial, ray_address=args.ray_address, storage=args.storage,
                         runs_dir=args.runs_dir, resume=args.resume, quiet=args.quiet or args.json,
                         observers=observers)
    summary = run_search(space, opts)
    if not args.json:
        _print_search_summary(summary)
    return summary


def _print_search_summary(s: dict[str, Any]) -> None:
    over = s.get("invocations", 1)  # a resumed search's seconds are those of every invocation that ran it
    print(f"search {s['search']}: {s['trials']} trial{'' if s['trials'] == 1 else 's'} in {s['wall_s']:.0f}s"
          + (f" over {over} invocations (this one {s['invocation_wall_s']:.0f}s)" if over > 1 else ""))
    for status, n in s["counts"].items():
        if n:
            print(f"  {status:<18}{n:>4}")
    failed = s["failed_trials"]
    ran, used = s["budget_steps"] - failed * s["max_steps"], s["trial_steps"] - s["failed_steps"]
    saved = f"{100 * (1 - used / ran):.0f}% saved" if ran > 0 else "nothing saved"
    print(f"  trial-steps {s['trial_steps']} of a {s['budget_steps']} no-pruning budget ({saved}"
          + (f", counted over the trials that did not fail: {failed} failed)" if failed else ")"))
    if s.get("search_defaults"):
        other = s.get("search_defaults_other") or {}
        print("  search defaults (keys the space leaves unset or a `when` switches off): "
              + ", ".join(f"{k} {v}" + "".join(f" ({trial_numbers(n)} trained {was})" for was, n in other.get(k, []))
                          for k, v in s["search_defaults"].items()))
    if s.get("recipe_trials"):
        print("  warm start: " + ", ".join(f"trial {n} from recipe {r}" for n, r in s["recipe_trials"].items()))
    for recipe, why in (s.get("recipes_skipped") or {}).items():
        print(f"    recipe {recipe} not tried: {why}")
    if s["best"] is None:
        print("  no trial completed")
    else:
        _print_best(s, s["best"])
    print(f"  study: {s['study_storage']}; sample grids of each trial: {s['artifact_dir']}")
    print(f"    {s['dashboard']}  (pip install 'gantune[dashboard]')")
    if s.get("tracking_error"):  # its warning came mid-search, lines ago: the runs there end where it failed
        ended = ("the runs left open end KILLED, tagged gantune.tracking_lost" if s.get("tracking_runs_ended")
                 else "runs it had open may stay RUNNING")
        print(f"  MLflow: stopped recording at {s['tracking_error']} (the study holds every trial; {ended}; "
              "--resume fills in the ended trials' runs)")
    if "tracking_uri" in s:
        print(f"  MLflow: {s['tracking_uri']}, experiment {s['search']!r}")
        if s.get("mlflow_ui"):
            remote = s["tracking_uri"].startswith(("http://", "https://"))
            print(f"    runs: {s['mlflow_ui']}" + ("" if remote else f" (serve it: {_ui_command(s)})"))


def _print_best(s: dict[str, Any], best: dict[str, Any]) -> None:
    values = ", ".join(f"{k} {v:.4g}" for k, v in best["values"].items())
    floor = ", ".join(f"{k} {best['floor'][k]:.4g}" for k in best["values"] if k in best["floor"])
    recipe = f" [recipe {best['recipe']}]" if best.get("recipe") else ""
    print(f"  best: trial {best['trial']}{recipe} ({values}" + (f"; real-vs-real {floor})" if floor else ")"))
    if s.get("note"):
        print(f"  note: {s['note']}")
    if best["metrics"]:  # the best trial's last evaluation, every metric of it
        print("    last evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in best["metrics"].items()))
    if best["floor"]:
        print(f"    real-vs-real floor ({floor_scored(best['provenance'] or {})}): "
              + ", ".join(f"{k} {v:.4g}" for k, v in best["floor"].items()))
    if best["provenance"]:
        print(f"    measured: {describe(best['provenance'])}")
    for k, v in best["params"].items():  # a stepped draw as Optuna keeps it: 0.6000000000000001 is 0.6
        print(f"    {k} = {v:.10g}" if isinstance(v, float) else f"    {k} = {v}")
    if best["samples"]:
        print(f"  samples: {best['samples']}")


def _ui_command(s: dict[str, Any]) -> str:
    """The ``gantune ui`` that serves the summary's local store (the flag only where the default would miss it)."""
    from gantune.tracking import resolve_tracking_uri

    flag = "" if s["tracking_uri"] == resolve_tracking_uri(None) else \
        f" --tracking-uri {shlex.quote(s['tracking_uri'])}"  # pasted into a shell: a path with a space
    return f"gantune ui {s['search']}{flag}"


COMMANDS.add("search", Command("search GAN hyperparameters (Optuna + Ray Tune, health-aware pruning)",
                               _search_args, _search))


# --- init ----------------------------------------------------------------------------------------------

def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="a built-in dataset (grid25, ring8, digits, stacked_digits) or a folder of images")
    p.add_argument("--out", type=_file, help="search-space YAML to write (default: <name>.yaml here)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def _init(args: argparse.Namespace) -> dict[str, Any]:
    from gantune.starter import write_starter

    if args.out == "":
        raise GantuneError("--out: empty; name the file to write (or leave --out out for <name>.yaml here)")
    result = write_starter(args.data, None if args.out is None else Path(args.out), args.force)
    emit(f"wrote {result['out']}: a search space for {args.data} around the recipe(s) "
         f"{', '.join(result['recipes'])} ({result['trials']} trials of at most {result['max_steps']} steps, "
         f"objective {result['objective']}); run it: gantune search {shlex.quote(str(result['out']))}", args.json)
    if result["note"]:
        print(f"note: {result['note']}", file=sys.stderr)
    return result


COMMANDS.add("init", Command("write a commented search space for a dataset, centred on its known-good recipe",
                             _init_args, _init, stores=False))


# --- export --------------------------------------------------------------------------------------------

def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("search", help="search name (the study name in --storage)")
    p.add_argument("--top-k", type=int, default=1, help="how many of the best trials to consider")
    p.add_argument("--trial", type=int, help="export this trial instead of the best completed one (pruned ones too: "
                   "their weights include generator_best.pt, the generator of their best evaluation)")
    p.add_argument("--by", choices=["metric", "human"], default="metric",
                   help="best by the search's metric, or the favourite of gantune review's votes (Bradley-Terry)")
    p.add_argument("--seeds", type=int, default=0, help="re-run the top-k with this many seeds (0: no re-runs)")
    p.add_argument("--steps", type=int, help="steps of the re-runs and of the exported config's train.steps")
    p.add_argument("--out", type=_file, default="best.yaml", help="exported trial config (default: best.yaml)")
    p.add_argument("--weights", type=_folder,
                   help="also copy the chosen trial's generator weights into this directory")
    p.add_argument("--storage", default="sqlite:///optuna.db", help="Optuna storage of the search")
    _tracking_args(p, "the seed re-runs (nor read the weights' MLflow copy)")
    p.add_argument("--runs-dir", type=_folder, help="where the re-runs' run directories go (default: runs)")
    p.add_argument("--concurrent", type=int, help="re-runs at once")


#: the most seeds ``export --seeds`` re-runs each trial with
MAX_RERUN_SEEDS = 1000


def _export(args: argparse.Namespace) -> dict[str, Any]:
    from gantune.export import export

    for flag, value, least in (("--top-k", args.top_k, 1), ("--seeds", args.seeds, 0), ("--steps", args.steps, 1)):
        if value is not None and value < least:  # each names its flag (one line named three)
            raise GantuneError(f"{flag}: must be at least {least}")
    if args.seeds > MAX_RERUN_SEEDS:  # 10**23 listed its seeds until memory ran out, printing nothing
        raise GantuneError(f"--seeds: at most {MAX_RERUN_SEEDS:,} (one training run each, per trial re-run)")
    if args.trial is not None and args.top_k != 1:
        raise GantuneError("--trial and --top-k: choose one trial, or the best k")
    if args.by == "human" and (args.trial is not None or args.top_k != 1):
        raise GantuneError("--by human exports the review's favourite: without --trial and --top-k")
    given = {"--top-k": args.top_k != 1, "--runs-dir": args.runs_dir is not None,
             "--concurrent": args.concurrent is not None}
    if not args.seeds and (unread := [flag for flag, set_ in given.items() if set_]):
        raise GantuneError(f"{', '.join(unread)}: for the seed re-runs (--seeds N), which this export does not make: "
                           "without them the best trial is exported as it is")
    told = "--tracking-uri" if args.tracking_uri is not None else "--no-tracking" if args.no_tracking else None
    if told and not args.seeds and args.weights is None:  # read by nothing else: ignored
        raise GantuneError(f"{told}: read for the seed re-runs (--seeds N) and the weights' fallback "
                           "(--weights DIR), which this export does not use")
    uri = None
    if not args.no_tracking:  # MLflow's import takes seconds: an export without tracking never pays it
        from gantune.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(args.tracking_uri)
    opts = None
    if args.seeds:
        from gantune.search import SearchOptions

        observers = []
        if uri is not None:  # --no-tracking: the re-runs go to the study and their run folders alone
            from gantune.dburl import check_apart
            from gantune.tracking import MlflowTracker

            check_apart(args.storage, uri, storage_named=args.tracking_uri is None)
            observers.append(MlflowTracker(uri, f"{args.search}-reruns", args.search))
        opts = SearchOptions(concurrent=args.concurrent, storage=args.storage, runs_dir=args.runs_dir or "runs",
                             quiet=args.json, observers=observers)
    result = export(args.search, args.storage, top_k=args.top_k, seeds=args.seeds, steps=args.steps,
                    out=Path(args.out), weights=Path(args.weights) if args.weights else None, tracking_uri=uri,
                    search_opts=opts, trial=args.trial, by=args.by)
    spread = "" if result["mean"] is None else f" (mean {result['mean']:.4g} over one seed)" \
        if result["spread"] is None else f" (mean {result['mean']:.4g} +- {result['spread']:.3g} over seeds)"
    if result.get("note"):
        print(f"note: {result['note']}", file=sys.stderr)
    by = ", the review's favourite" if args.by == "human" else ""
    emit(f"exported trial {result['trial']} of {args.search}{by}: {result['chosen']}{spread} -> {args.out}", args.json)
    for w in result["weights"]:
        emit(f"weights: {w}", args.json)
    return result


COMMANDS.add("export", Command("export the best config (and weights) of a search", _export_args, _export))


# --- review ------------------------------------------------------------------------------------------

def _review_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("search", help="search name (the study name in --storage)")
    p.add_argument("--storage", default="sqlite:///optuna.db", help="Optuna storage of the search")
    _tracking_uri_arg(p)
    p.add_argument("--top", type=int, default=4, help="compare pairs of this many top trials (default: 4)")
    p.add_argument("--port", type=PORT, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")


def _review(args: argparse.Namespace) -> dict[str, Any]:
    import webbrowser

    from gantune.review import Review, ReviewServer, has_display
    from gantune.tracking import resolve_tracking_uri

    review = Review(args.search, args.storage, args.top, resolve_tracking_uri(args.tracking_uri))
    server = ReviewServer(review, args.port)
    print(f"review of search {args.search} ({len(review.items)} trials) at {server.url} (Ctrl-C to stop)",
          flush=True)
    if not args.no_browser and has_display():
        webbrowser.open(server.url)
    server.serve()
    summary = {**review.summary(), "url": server.url, "mlflow_parent_run_id": server.stop()}
    emit(f"{summary['votes']} answers kept in the study" + (
        f"; favourite: trial {summary['favourite']}" if summary["favourite"] is not None else
        f"; no favourite yet: {summary['unsettled']}" if summary["unsettled"] else ""), args.json)
    return summary


COMMANDS.add("review", Command("compare the top trials' samples in a browser; the answers rank them",
                               _review_args, _review))


# --- generate ------------------------------------------------------------------------------------------

def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="generator weights written by gantune (generator.pt)")
    p.add_argument("--n", type=COUNT, help="number of samples (default: 64; not with --interpolate)")
    p.add_argument("--out", type=_home, help="a .png (grid or scatter), a .csv (2-D points) or a directory; with "
                   "--interpolate "
                   "a .png, or a .csv of 2-D points' paths (default: interpolation.png)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--class", dest="label", type=int, metavar="K",
                   help="conditional generators (model.conditional) only: samples of class K (0 to classes - 1)")
    p.add_argument("--interpolate", type=COUNT, metavar="N", help="instead of samples: slerp walks of N steps between "
                   "pairs of latents fixed by --seed, a row each (2-D points: their paths over the samples)")
    p.add_argument("--rows", type=COUNT, help="walks (rows) of --interpolate (default: 8)")


def _generate(args: argparse.Namespace) -> dict[str, Any]:
    from gantune.trial import is_oom

    try:
        return _generate_now(args)
    except (RuntimeError, MemoryError) as err:  # --n or --interpolate larger than this machine's memory
        if is_oom(err):
            raise GantuneError(f"out of memory: {first_line(err)} (lower --n, --interpolate or --rows)") from None
        raise


def _generate_now(args: argparse.Namespace) -> dict[str, Any]:
    """--n and --rows have no argparse default (generate's ``SAMPLES``, ``ROWS`` apply): each belongs to one mode,
    so one given in the other mode is refused, not ignored."""
    from gantune.generate import ROWS, SAMPLES, generate
    from gantune.trial import resolve_device

    if args.out == "":  # Path("") is the working directory, which it wrote sample files into
        raise GantuneError("--out: empty; name a .png, a .csv of 2-D points or a directory")
    folder = bool(args.out) and args.out.endswith(("/", os.sep))  # Path() drops the slash that says so
    if args.interpolate is not None:
        from gantune.generate import interpolate

        if args.n is not None:
            raise GantuneError("--n: not with --interpolate (its samples are --rows walks of N steps)")
        if folder:
            raise GantuneError(f"--out: {args.out}: an interpolation is one file (a .png, or a .csv of 2-D points)")
        result = interpolate(Path(args.weights), args.interpolate, Path(args.out or "interpolation.png"),
                             resolve_device(args.device, "--device"), args.seed,
                             ROWS if args.rows is None else args.rows, label=args.label)
        emit(f"{result['rows']} interpolations of {result['interpolate']} steps -> {result['out']}", args.json)
        return result
    if args.rows is not None:
        raise GantuneError("--rows: only with --interpolate (the number of its walks)")
    if args.out is None:
        raise GantuneError("--out: required (a .png, a .csv of 2-D points or a directory)")
    result = generate(Path(args.weights), SAMPLES if args.n is None else args.n, Path(args.out),
                      resolve_device(args.device, "--device"), args.seed, label=args.label, folder=folder)
    emit(f"{result['n']} samples -> {result['out']}", args.json)
    return result


COMMANDS.add("generate", Command("sample from exported generator weights", _generate_args, _generate,
                                 stores=False))


# --- report ------------------------------------------------------------------------------------------

def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("search", help="search name (the study name in --storage)")
    p.add_argument("--out", type=_file, default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--storage", default="sqlite:///optuna.db", help="Optuna storage of the search")
    p.add_argument("--top", type=_bounded(0, 10_000), default=4, help="sample grids of this many top trials")


def _report(args: argparse.Namespace) -> dict[str, Any]:
    from gantune.report import build_report

    result = build_report(args.search, args.storage, Path(args.out), args.top)
    if result.get("note"):
        print(f"note: {result['note']}", file=sys.stderr)
    emit(f"report of {result['trials']} trials -> {result['out']}", args.json)
    return result


COMMANDS.add("report", Command("write a self-contained HTML report of a search", _report_args, _report))


# --- ui ------------------------------------------------------------------------------------------------

def _ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("search", nargs="?", help="print the page of this search's runs (default: every experiment's)")
    _tracking_uri_arg(p)
    p.add_argument("--port", type=_bounded(1, 65535), default=5000)  # 0: the port it printed was not the one served


def _port_free(port: int) -> bool:
    """Whether a server could bind ``port`` on the loopback interface now. SO_REUSEADDR as the server sets it: a
    port a stopped server left in TIME_WAIT is free to it, one something listens on is not."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _off_the_import_path(cmd: list[str], empty: str) -> tuple[list[str], dict[str, str]]:
    """``mlflow ui``'s command and environment with the working folder off its import path: ``python -m`` and
    uvicorn (its app folder, default ".") put it first, so a yaml.py or mlflow.py beside the user's files hid the
    library and the server never started. ``PYTHONSAFEPATH`` (Python 3.11+) keeps ``-m`` from adding it, uvicorn's
    app folder is ``empty``; the server still runs in the working folder (relative stores, artifact folders and
    MLflow's variables mean what they meant). gunicorn, MLflow's server before 3.3 (which has no --uvicorn-opts)
    or one ``$MLFLOW_GUNICORN_OPTS`` asks for, puts its working folder on the path whatever is done here."""
    from importlib.metadata import version

    environ = {**os.environ, "PYTHONSAFEPATH": "1"}
    if os.environ.get("MLFLOW_GUNICORN_OPTS") or tuple(map(int, re.findall(r"\d+", version("mlflow"))[:2])) < (3, 3):
        return cmd, environ
    opts = f"{os.environ.get('MLFLOW_UVICORN_OPTS', '')} --app-dir {shlex.quote(empty)}".strip()
    return [*cmd, "--uvicorn-opts", opts], environ


def _ui(args: argparse.Namespace) -> dict[str, Any]:
    from gantune.dburl import no_stray_folders, sqlite_file
    from gantune.tracking import experiment_urls, resolve_tracking_uri

    if not _port_free(args.port):  # MLflow's server would say so 10 s later, after the pages were printed
        raise GantuneError(f"--port: {args.port} is in use on 127.0.0.1: stop what serves it or pick another port")
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise GantuneError(f"--tracking-uri: {uri} is a tracking server already: open it in a browser")
    if (db := sqlite_file(uri)) is not None and not db.exists():
        raise GantuneError(f"--tracking-uri: {uri} does not exist yet (run a search first)")
    url = f"http://127.0.0.1:{args.port}"
    pages = experiment_urls(uri, url, args.search)  # each opens on the runs table (``ui_url``)
    # said with --json too (as review says its URL): the JSON summary comes only once the server has stopped
    print(f"MLflow UI for {uri} at {url} (Ctrl-C to stop)", flush=True)
    for name, page in pages.items():
        print(f"  {name}: {page}", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    try:
        with no_stray_folders(uri), tempfile.TemporaryDirectory(prefix="gantune-ui-") as empty:
            code = env.call_group(*_off_the_import_path(cmd, empty))  # Ctrl-C or SIGTERM stops its workers too
    except KeyboardInterrupt:
        code = 0
    if code not in (0, -2, 130):  # (the port was free a moment ago: its own lines above say why)
        raise GantuneError(f"mlflow ui exited with code {code}")
    return {"url": url, "tracking_uri": uri, "experiments": pages}


COMMANDS.add("ui", Command("start the MLflow UI on the tracking store, bound to 127.0.0.1", _ui_args, _ui))


# --- entry point ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gantune", description=__doc__)
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="a .py file or module registering losses, metrics, datasets... (gantune.registry), "
                             "imported before the command runs; repeatable (also $GANTUNE_PLUGINS)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        cmd = COMMANDS.get(name)
        p = parser.commands[name] = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
        # after the command too (`gantune train cfg.yaml --plugin x.py` was "unrecognized arguments")
        p.add_argument("--plugin", dest="plugin_after", action="append", default=[], metavar="FILE_OR_MODULE",
                       help="as gantune --plugin")
    return parser


def database_failure(err: BaseException) -> str | None:
    """The line for a database that opened but fails on reading (a damaged sqlite file: "database disk image is
    malformed"), on writing (its disk full) or stays locked by another process: Optuna's ``StorageInternalError``,
    or SQLAlchemy's own error where MLflow's store raised it, also as the cause of another error (Ray Tune's
    ``TuneError`` around a failure in the driver's callbacks). ``None`` for anything else. Only modules already
    imported are asked: an error from one never imported is not theirs."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if (line := _database_line(err)) is not None:
            return line
        # the cause, else the error being handled when it was raised (unless it was raised ``from None``)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)  # type: ignore[assignment]
    return None


def plugin_failure(err: BaseException) -> str | None:
    """The line for an error a loaded plugin's own code raised (``plugins.raised_in``): the user's code, said
    where, as a plugin that fails to import is. ``None`` for any other error."""
    where = plugins.raised_in(err)
    return None if where is None else f"a plugin raised {type(err).__name__}: {first_line(err)} ({where})"


def _database_line(err: BaseException) -> str | None:
    optuna, sqlalchemy_exc = sys.modules.get("optuna"), sys.modules.get("sqlalchemy.exc")
    ours = optuna is not None and isinstance(err, optuna.exceptions.StorageInternalError)
    if ours:
        err = err.__cause__ or err
    if sqlalchemy_exc is not None and isinstance(err, sqlalchemy_exc.SQLAlchemyError):
        err = getattr(err, "orig", None) or err
    elif not ours:
        return None
    text = str(err).strip().splitlines()
    first = text[0] if text else type(err).__name__
    if "database or disk is full" in first:  # SQLITE_FULL: the file is sound, its disk is not
        return f"the database could not be written ({first}): free space on its disk, then run the command again"
    if "database is locked" in first:  # another process held it past the wait (dburl.patient_sqlite)
        return (f"the database stayed locked by another process for {BUSY_TIMEOUT_S} s ({first}): let it finish, "
                "then run the command again (a search: with --resume)")
    return f"the database failed on reading ({first}): a damaged file? Restore it from a copy"


def _printable_output() -> None:
    """Print what the console cannot encode as escapes (``\\xfc``), as stderr does: on an ASCII console
    (``PYTHONIOENCODING=ascii``, a non-UTF-8 locale) a path with an ``ü`` in it ended a finished run with a
    UnicodeEncodeError traceback and exit 1."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):  # replaced, or closed
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


def main(argv: Sequence[str] | None = None) -> int:
    _printable_output()
    with outliving():  # | head, >&-: the command goes on without the reader
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # a usage error (its line printed, code 2) or --help (0): the code, as returned
        return stop.code if isinstance(stop.code, int) else 2
    env.configure()
    env.terminate_as_interrupt()
    command = COMMANDS.get(args.command)
    if command.stores:
        patient_sqlite()
    try:
        plugins.load([*args.plugin, *args.plugin_after])
        summary = command.run(args)
        if args.json:  # NaN and infinities as null: Python's NaN/Infinity are not JSON (jq refused the line)
            from gantune.rundir import strict_json

            # (in here: a stdout that cannot be written, a full disk, is one line as for the lines without --json)
            print(json.dumps(strict_json(summary, lambda _: None), default=str, allow_nan=False), flush=True)
    except GantuneError as err:  # a name a plugin of an earlier command registered: every command says so
        print(f"gantune {args.command}: error: {one_line(plugin_hint(str(err)))}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in MACHINE_ERRNOS | IN_THE_WAY:
            if (failed := plugin_failure(err)) is None:
                raise
            print(f"gantune {args.command}: error: {one_line(failed)}", file=sys.stderr)
            return 2
        name = str(err.filename or "")
        what = (f"file name too long ({len(name)} characters: {name[:40]}...)" if err.errno == errno.ENAMETOOLONG
                else f"{name}: {err.strerror}" if name else str(err.strerror or err))
        if err.errno in IN_THE_WAY:
            what += " (a file where a folder goes, or a folder where a file goes: move it, or choose another path)"
        print(f"gantune {args.command}: error: {one_line(what)}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"gantune {args.command}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"gantune {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if (failed := plugin_failure(err) or database_failure(err)) is None:
            raise
        print(f"gantune {args.command}: error: {one_line(failed)}", file=sys.stderr)
        return 2
    if summary.get("error"):  # it ran and did nothing it was asked (every trial of a search failed, a run diverged)
        print(f"gantune {args.command}: error: {one_line(summary['error'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
