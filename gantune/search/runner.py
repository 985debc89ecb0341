"""``run_search``: one search from a validated space to a summary.

Local Ray by default (sized to this machine), a cluster when an address is given (gantune's code travels as
a runtime-env module: nothing gantune-specific is installed on the cluster). The Optuna study is the source of
truth for resume: finished trials are kept, trials left RUNNING by a killed search run again under their own
numbers, and only the rest are asked anew, so the study ends with exactly the requested number of trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantune import env, provenance
from gantune.config import TrainConfig, dotted, format_validation_error
from gantune.data import data_label, data_listing, decode_ahead, measured_on
from gantune.dburl import absolute_sqlite, redacted
from gantune.devices import auto_gpu_share
from gantune.errors import MACHINE_ERRNOS, ConfigError, DataError, GantuneError, Interrupted
from gantune.events import REASON_KEY, STATUSES, ObserverThread, Status, first_line, warn
from gantune.rundir import OWNER, atomic_write, check_free, check_writable, exclusive, trial_dirname
from gantune.sampling.artifacts import artifact_dir, dashboard_command
from gantune.sampling.checks import idle_on_cpu
from gantune.sampling.settings import Resources, SearchSettings
from gantune.sampling.space import SearchSpace, check_draws
from gantune.sampling.specs import CategoricalSpec, ValueSpec
from gantune.sampling.study import (
    DEFAULT_STORAGE,
    FINISHED,
    STUDY_UID,
    best_trial,
    check_study,
    continued,
    earlier_walls,
    find_study,
    finished_count,
    interrupted_trials,
    open_study,
    queued_problems,
    ranked,
    record_files,
    record_wall,
    trained_params,
    trained_steps,
    trial_status,
    trial_value,
)
from gantune.sampling.warm import RECIPE_KEY, named_but_skipped, warm_start


@dataclass
class SearchOptions:
    """Command-line overrides and where things are kept."""

    trials: int | None = None
    max_steps: int | None = None
    concurrent: int | None = None
    gpus_per_trial: float | None = None
    ray_address: str | None = None
    storage: str | None = None
    runs_dir: str = "runs"
    resume: bool = False
    quiet: bool = False
    observers: list[Any] = field(default_factory=list)


def apply_overrides(settings: SearchSettings, opts: SearchOptions) -> SearchSettings:
    from pydantic import ValidationError

    if opts.concurrent is not None and settings.pruning.scheduler == "pbt":  # dropped without a word
        raise GantuneError("--concurrent: PBT starts its whole population at once (the resources decide how many "
                           "train together); leave it out")
    raw = settings.model_dump()
    for key, value in (("trials", opts.trials), ("max_steps", opts.max_steps), ("concurrency", opts.concurrent)):
        if value is not None:
            raw[key] = value
    if opts.gpus_per_trial is not None:
        raw["resources"]["gpu"] = opts.gpus_per_trial
    if opts.max_steps is not None:
        raw["eval_every"] = min(raw["eval_every"], opts.max_steps)
    try:
        return SearchSettings.model_validate(raw)
    except ValidationError as err:
        raise GantuneError(format_validation_error(err, "command line", "search")) from None


#: seconds a cluster's head may take to accept a connection (ray.init would retry a dead address for minutes)
CONNECT_TIMEOUT_S = 5.0
#: the package folder, shipped to the workers of a cluster joined by address
PACKAGE = Path(__file__).resolve().parents[1]


def check_address(address: str | None) -> None:
    """``ray://`` (Ray Client) would move Tune's driver loop, and with it the searcher, the Optuna study and the
    MLflow logging, onto the cluster's head node; gantune runs its driver here, on a node of the cluster.

    A ``HOST:PORT`` where nothing accepts a TCP connection is refused within ``CONNECT_TIMEOUT_S``."""
    if address and address.startswith("ray://"):
        raise GantuneError(f"--ray-address {address}: Ray Client would run the search's driver (searcher, Optuna "
                           "study, MLflow logging) on the head node, not here; run gantune search on a node of "
                           "the cluster with --ray-address auto (or HEAD_IP:6379)")
    where = _host_port(address)
    shown = address
    if address == "auto" and (found := _auto_address()) is not None:  # as ray.init would find it
        where, shown = _host_port(found), f"auto (found {found}: RAY_ADDRESS, or the last cluster started here)"
    if where is None:
        if address and address not in ("auto", "local"):
            raise GantuneError(f"--ray-address {address}: expected auto or the head node's HOST:PORT (e.g. "
                               "10.0.0.5:6379, what `ray start --head` prints)")
        return
    try:
        with socket.create_connection(where, timeout=CONNECT_TIMEOUT_S) as conn:
            speaks = _speaks_grpc(conn)
    except OSError as err:
        raise GantuneError(f"--ray-address {shown}: no Ray cluster answers there ({err.strerror or err}); start "
                           "one with `ray start --head` and pass the address it prints") from None
    if not speaks:
        raise GantuneError(f"--ray-address {shown}: something listens there, but not a Ray head's GCS (it does "
                           "not speak gRPC: the dashboard's port, 8265?); pass the address `ray start --head` "
                           "prints (HEAD_IP:6379 by default)")


def _auto_address() -> str | None:
    """The HOST:PORT ``ray.init(address="auto")`` would join (``RAY_ADDRESS``, else the cluster Ray last started on
    this machine: a head that died leaves its address behind); ``None`` where Ray finds none, which ray.init says."""
    logging.disable(logging.CRITICAL)  # a malformed RAY_ADDRESS is logged with its traceback: ray.init says it
    try:
        from ray._private.services import canonicalize_bootstrap_address  # Ray's own lookup (private: guarded)

        return canonicalize_bootstrap_address("auto")
    except Exception:  # not found, or another Ray's API: ray.init looks and says
        return None
    finally:
        logging.disable(logging.NOTSET)


#: an HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5)
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_grpc(conn: socket.socket) -> bool:
    """Whether the server on ``conn`` answers as an HTTP/2 server (what a Ray head's GCS is, a gRPC server),
    whose first frame is its SETTINGS (type 4), within ``CONNECT_TIMEOUT_S``. ray.init on an address where
    another server listens (the dashboard's HTTP port, a stale ``auto`` address now another program's) retried
    for about 14 minutes. A cluster on TLS (``RAY_USE_TLS``) is not probed: its GCS wants a TLS hello first."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    deadline = time.monotonic() + CONNECT_TIMEOUT_S  # the whole answer: a byte every few seconds is no head
    try:
        conn.sendall(_H2_HELLO)
        head = b""
        while len(head) < 9 and (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:  # no answer within the timeout, or the connection reset
        return False
    return len(head) == 9 and head[3] == 4


def _host_port(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` (or ``[IPv6]:PORT``) address; ``None`` for ``auto`` and the like."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return (host, int(port)) if port.isdigit() and host else None


def _on_this_machine(host: str) -> bool:
    """Whether ``host`` is one of this machine's addresses (a socket can be bound to it)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind((sockaddr[0], 0))
            return True
        except OSError:
            continue
    return False


def _use_local_token(address: str) -> bool:
    """Join a cluster on this machine with the token ``ray start`` left here: Ray 2.60's ``ray start`` turns
    token authentication on, and ``ray.init`` only uses the token by itself for ``auto``, not for an address.

    Only when ``RAY_AUTH_MODE`` is unset (the user's choice stands), a token is found where Ray looks for one
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) and the address is this machine's (a
    token is not sent to other machines unasked). A cluster without authentication accepts a driver that sends
    one. Returns whether token mode was switched on."""
    where = _host_port(address)
    if os.environ.get("RAY_AUTH_MODE") is not None or where is None or not _on_this_machine(where[0]):
        return False
    from gantune.search.ray_private import has_local_token, reload_config  # Ray: imported once a search runs

    if not has_local_token():
        return False
    os.environ["RAY_AUTH_MODE"] = "token"  # also for the processes this driver starts
    reload_config()  # Ray read its config at import: let it see the mode (what Ray does itself for auto)
    return True


def _measured_on(space: SearchSpace) -> list[str]:
    """The data the space's trials can be measured on (``measured_on``), for a resume to compare with its trials';
    none (no comparison) where a data key is drawn from a range or an expression (``possible_data`` then reads
    its default, which the trials need not have)."""
    if any(path.startswith("data.") and not isinstance(spec, (ValueSpec, CategoricalSpec))
           for path, spec in space.leaves.items()):
        return []
    return list(dict.fromkeys(measured_on(c) for c in space.datas))


def _listings(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """The files of each image folder the space trains on (``data_listing``), by ``data_label``."""
    return {data_label(c): listing for c in space.datas if (listing := data_listing(c)) is not None}


def trial_resources(space: SearchSpace, wanted: Resources, nodes: list[dict[str, float]],
                    where: str) -> dict[str, float]:
    """The resources of one trial (``gpu: auto`` resolved against the GPUs of the node with most,
    ``gantune.devices``); ``nodes``: each node's resources (this machine: one).

    A trial runs on one node: one asking for more CPUs or GPUs than any node of ``where`` (this machine, or a
    cluster) has would wait forever, without a word from Ray (which compares with the cluster's totals: two
    2-CPU nodes passed a 4-CPU trial). That is refused here."""
    most_gpus = max((node.get("GPU", 0.0) for node in nodes), default=0.0)
    # the largest share any of its trials' data needs (the smallest class where the space's data is unknown)
    datas = [cfg.data for _, cfg in space.sections] if space.sections is not None else \
        space.datas  # an expression sets an eval key, say
    shares = [auto_gpu_share(data, most_gpus) for data in datas]
    gpu = (max(shares) if shares else auto_gpu_share(None, most_gpus)) if wanted.gpu == "auto" else wanted.gpu
    resources = {"cpu": wanted.cpu, "gpu": gpu}

    def fits(node: dict[str, float]) -> bool:
        return all(need <= node.get(key.upper(), 0.0) for key, need in resources.items())

    if not any(fits(node) for node in nodes):
        most = {key: max((node.get(key.upper(), 0.0) for node in nodes), default=0.0) for key in resources}
        short = [key for key, need in resources.items() if need > most[key]] or \
            [key for key, need in resources.items() if need > 0]  # each on some node, not both on one
        asked = " and ".join(f"{resources[key]:g} {key.upper()}" for key in short)
        held = "; ".join(f"{node.get('CPU', 0):g} CPU and {node.get('GPU', 0):g} GPU" for node in nodes[:8])
        has = f"{where} has {held}" if len(nodes) == 1 else \
            f"no node of {where} has that (its nodes: {held}{'; ...' if len(nodes) > 8 else ''})"
        raise GantuneError(f"search.resources: a trial asks for {asked} but {has}: no trial could ever start")
    return resources


def trial_slots(resources: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many trials of ``resources`` each the cluster's ``nodes`` (each node's resources) run at once (at
    least 1): counted node by node, as a trial runs on one (two nodes of 3 CPUs hold two 2-CPU trials, not 3)."""
    def fits(have: dict[str, float]) -> int:
        counts = [have.get(key.upper(), 0.0) / need for key, need in resources.items() if need > 0]
        return math.floor(min(counts) + 1e-9) if counts else 1

    return max(1, sum(fits(node) for node in nodes))


def local_resources() -> dict[str, float]:
    """What the local Ray ``_init_ray`` starts will have: every CPU this process may run on (``taskset``, a
    container's CPU set) and every CUDA GPU of this machine."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def check_run(space: SearchSpace, opts: SearchOptions) -> tuple[SearchSettings, list[str]]:
    """The checks of a run's inputs that need no study, before anything is written: the command line's
    overrides, --runs-dir, --ray-address and (on a local Ray) what a trial asks for. Returns the settings and the
    warnings to say once every check has passed (said before a refusal, they buried its one line)."""
    settings, notes, _ = _checked(space, opts)
    return settings, notes


def _checked(space: SearchSpace, opts: SearchOptions) -> tuple[SearchSettings, list[str], bool]:
    """``check_run``, and whether a resume has nothing left to run (``_nothing_left``: a read of the study that
    ``run_search`` needs too)."""
    settings = apply_overrides(space.settings, opts)
    if opts.resume and opts.trials is None:  # before the warnings, which count the trials
        settings = continued(space.name, absolute_sqlite(opts.storage or DEFAULT_STORAGE), settings)
    if (settings.max_steps, settings.eval_every) != (space.settings.max_steps, space.settings.eval_every):
        try:  # what an expression reads of train.steps changed: the load's draws were of the file's steps
            check_draws(dataclasses.replace(space, settings=settings))
        except ConfigError as err:
            raise ConfigError(f"--max-steps {settings.max_steps}: {err}") from None
    check_writable(Path(opts.runs_dir), "--runs-dir", is_dir=True)
    # another storage's search in <runs-dir>/<name>: before anything is written (claimed in run_search, locked)
    _runs_owner((Path(opts.runs_dir) / space.name).resolve(), space.name,
                absolute_sqlite(opts.storage or DEFAULT_STORAGE))
    check_address(opts.ray_address)
    # on a cluster, whether gpu: auto gives the trials a GPU is Ray's to say
    gpu = settings.resources.gpu if opts.ray_address else \
        trial_resources(space, settings.resources, [local_resources()], "this machine")["gpu"]
    cpu_only = [f"{space.source}: {n}" for n in idle_on_cpu(space.leaves)] if gpu == 0 else []
    idle = _nothing_left(space.name, opts, settings)
    if not idle:
        for data in space.datas:  # a folder's broken file failed each trial, the check having decoded one file
            try:
                decode_ahead(data)
            except DataError as err:
                raise DataError(f"{space.source}: {err}") from None
    if not space.warns or idle:  # a finished search resumed draws nothing
        return settings, [], idle
    warnings = settings.warnings()
    if opts.max_steps is not None:  # what only the shortened run warns of: the flag's doing, not the file's
        own = set(settings.model_copy(update={"max_steps": space.settings.max_steps,
                                              "eval_every": space.settings.eval_every}).warnings())
        lowered = (f", which lowered eval_every to {settings.eval_every}"
                   if settings.eval_every != space.settings.eval_every else "")
        warnings = [w if w in own else f"{w} (with --max-steps {settings.max_steps}{lowered})" for w in warnings]
    warnings += _log_every_note(space, settings)
    if space.samples_nothing:  # one config and seed: counted with the run's trials (--trials, a resume's); the
        # sampler's random start is no news when it draws nothing
        warnings = [w for w in warnings if w != settings.random_only()]
        if settings.trials > 1:
            warnings.insert(0, f"this space samples nothing (no range, no categorical of two choices or more): its "
                               f"{settings.trials} trials train one config; give a key a range, or search.trials: 1")
    return settings, [*space.notes, *cpu_only, *named_but_skipped(space), *warnings], idle


def _log_every_note(space: SearchSpace, settings: SearchSettings) -> list[str]:
    """A fixed ``train.log_every`` at or past ``max_steps``: each trial logs once, at its last step, so the health
    verdicts (read from the logged losses and gradient norms) see nothing before it ends."""
    spec = space.leaves.get("train.log_every")
    log_every = spec.value if isinstance(spec, ValueSpec) else None if spec is not None else \
        settings.defaults.get("train.log_every", TrainConfig().log_every)
    if not isinstance(log_every, int) or log_every < settings.max_steps:
        return []
    flag = f" (with --max-steps {settings.max_steps})" if log_every < space.settings.max_steps else ""
    return [f"train.log_every {log_every} is not below max_steps {settings.max_steps}: each trial logs its losses "
            f"once, at its last step, so the health verdicts see nothing before it ends; lower train.log_every"
            f"{flag}"]


def _nothing_left(name: str, opts: SearchOptions, settings: SearchSettings) -> bool:
    """Whether this is a resume of a search whose every trial has finished and none was left running: it runs no
    trial, so it starts no Ray (seconds), and the warnings about how the space draws ("every trial is a random
    draw") said nothing of it."""
    if not opts.resume:
        return False
    study = find_study(name, absolute_sqlite(opts.storage or DEFAULT_STORAGE))
    return study is not None and finished_count(study) >= settings.trials and not interrupted_trials(study)


def _object_store(limit: int | None = None, memory: int | None = None) -> int | None:
    """Ray sizes its object store at 30% of the machine's memory and every worker maps all of it: under an
    address-space limit (``ulimit -v``) too small for that, its workers died at start and the search waited for
    ever. There it gets an eighth of the limit (at least Ray's minimum, 75 MiB): a search passes results and small
    configs through it, never tensors. Ray's own size otherwise (``None``): a limit larger than the machine's
    memory gave a store Ray refused. ``limit`` and ``memory`` (bytes) default to this process's and machine's."""
    import resource

    if limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        limit = None if soft == resource.RLIM_INFINITY else soft
    if memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if limit is None or limit // 8 >= 0.3 * memory:
        return None
    return max(75 * 2**20, limit // 8)


def stop_ray() -> None:
    """``ray.shutdown()``, then SIGTERM read as Ctrl-C again: the shutdown resets its C-level handler to the
    default (Python's ``signal.getsignal`` still names gantune's), so a SIGTERM while the search closed (its
    summary, its wall time, the MLflow parent run) killed it silently, exit 143, the parent left RUNNING."""
    import ray

    try:
        ray.shutdown()
    finally:
        env.terminate_as_interrupt()


def _cannot_start_ray(err: Exception) -> None:
    """The one line for a local Ray that would not start: its folders ($HOME or $TMPDIR a file, a $TMPDIR too long
    for the Unix sockets Ray makes in it) or its startup (too little memory) gave a traceback. A file the system
    refused (read-only, full) stays the CLI's line naming the file."""

    with contextlib.suppress(Exception):  # what did start is stopped
        stop_ray()
    if isinstance(err, OSError) and err.errno in MACHINE_ERRNOS:
        raise err
    raise GantuneError(f"cannot start Ray on this machine: {first_line(err)} (Ray writes its session under "
                       "$RAY_TMPDIR, else $TMPDIR, else /tmp, a path short enough for its sockets (107 bytes), and "
                       "its token under $HOME/.ray)") from None


def _init_ray(address: str | None, space: SearchSpace, run_root: Path) -> tuple[bool, dict[str, float]]:
    """Start (or join) Ray; returns whether this process started it (and must shut it down) and the resources
    of one trial (``trial_resources``, against what the cluster has). PBT on a cluster: ``check_shared``."""
    import ray

    started = False
    if not ray.is_initialized():
        if address:
            token = _use_local_token(address)
            try:
                ray.init(address=address, runtime_env={"py_modules": [str(PACKAGE)]},
                         log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, ValueError, RuntimeError) as err:
                hint = ("the token in ~/.ray/auth_token (or RAY_AUTH_TOKEN) is not this cluster's" if token else
                        "a cluster started with token authentication, `ray start`'s default, needs "
                        "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
                raise GantuneError(f"--ray-address {address}: cannot join the Ray cluster: {first_line(err)} "
                                   f"({hint})") from None
        else:
            have = local_resources()
            try:  # "local": a Ray of our own, even where `ray start` left a cluster that a bare ray.init() joins
                ray.init(address="local", num_cpus=int(have["CPU"]), num_gpus=int(have["GPU"]),
                         include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                         configure_logging=True, object_store_memory=_object_store())
            except Interrupted:
                raise
            except Exception as err:
                _cannot_start_ray(err)
        started = True
        env.configure()  # ray.init resets the levels of Ray's loggers
        env.terminate_as_interrupt()  # and sets its own SIGTERM handler
    try:
        where = f"the Ray cluster at {address}" if address else "this machine"
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        resources = trial_resources(space, space.settings.resources, nodes, where)
        if address and space.settings.pruning.scheduler == "pbt":
            check_shared(run_root, where)
        return started, resources
    except GantuneError:
        if started:
            stop_ray()
        raise


def check_shared(run_root: Path, where: str) -> None:
    """PBT on a cluster: every node must see ``run_root``'s disk at the same path. Ray keeps PBT's checkpoints
    under it (a member cloned on one node trains on another from its donor's checkpoint) and the members write
    their run folders there; on a node's own disk each member placed there failed at its first checkpoint ("Unable
    to set up cluster storage"). Asked of each live node with a file made for it, before anything is written."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    base = next(p for p in (run_root, *run_root.parents) if p.is_dir())  # run_root itself is made later

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.isfile(path)

    blind: list[str] = []
    with tempfile.NamedTemporaryFile(dir=base, prefix=".gantune-shared-") as marker:
        for node in [n for n in ray.nodes() if n["Alive"]]:
            asked = sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                                 ).remote(marker.name)
            try:
                seen = ray.get(asked, timeout=120)
            except (ray.exceptions.RayError, TimeoutError) as err:  # gone since it was listed, or no worker came
                with contextlib.suppress(Exception):
                    ray.cancel(asked, force=True)
                if not any(n["NodeID"] == node["NodeID"] and n["Alive"] for n in ray.nodes()):
                    continue  # it left the cluster: no trial goes there
                raise GantuneError(f"pruning.scheduler pbt on {where}: node {node['NodeManagerAddress']} could not "
                                   f"be asked whether it sees {base} (--runs-dir): {type(err).__name__}: "
                                   f"{first_line(err)}") from None
            if not seen:
                blind.append(node["NodeManagerAddress"])
    if blind:
        raise GantuneError(f"pruning.scheduler pbt on {where}: node {blind[0]}"
                           + (f" (and {len(blind) - 1} more)" if len(blind) > 1 else "")
                           + f" does not see {base} (--runs-dir): PBT's members clone each other's checkpoints "
                           "across nodes through it; put --runs-dir on a disk every node mounts at the same path")


def claim_runs(run_root: Path, name: str, storage: str) -> None:
    """Make ``run_root`` this storage's search's: refused while it holds the trial folders of a search of the same
    name in another storage that still has it. Two such searches shared ``runs/<name>/``: the later one's trial
    folders replaced the earlier one's, whose export then copied the wrong generator."""
    if _runs_owner(run_root, name, storage) != storage:
        atomic_write(run_root / OWNER, json.dumps({"storage": storage, "study": name}).encode())


def _runs_owner(run_root: Path, name: str, storage: str) -> str | None:
    """The storage ``run_root`` says it holds the trials of (``claim_runs``); a ``GantuneError`` when that is
    another storage that still has the search."""
    try:
        other = json.loads((run_root / OWNER).read_text())["storage"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(other, str) and other != storage:
        try:  # the same study under another spelling of its URL (options, a symlinked folder) has the same uid
            theirs = find_study(name, other)
            mine = None if theirs is None else find_study(name, storage)
        except GantuneError:  # a server that does not answer: the folder is not known to be another's
            theirs = mine = None
        if theirs is not None and (mine is None or mine.user_attrs.get(STUDY_UID) != theirs.user_attrs.get(STUDY_UID)):
            raise GantuneError(f"--runs-dir: {run_root} holds the trials of search {name!r} in {other}; a search of "
                               f"that name in {storage} would replace them: give it another --runs-dir or --name")
    return other if isinstance(other, str) else None


def run_search(space: SearchSpace, opts: SearchOptions) -> dict[str, Any]:
    """Run (or resume) the search and return the summary dict the CLI prints.

    The process must have been set up with ``gantune.env.configure()``. Every input is checked (flags, study
    name, tracking URI, Ray address and resources) before anything is written. Ctrl-C raises ``Interrupted``
    once the running trials' MLflow runs are marked KILLED; their Optuna trials stay RUNNING, so ``--resume``
    runs them again.
    """
    if not env.configured():
        raise GantuneError("call gantune.env.configure() once before run_search (the gantune command does)")
    t0 = time.monotonic()
    settings, notes, idle = _checked(space, opts)
    from gantune.search.carry import pack

    carried, left_out = pack(space.text)  # what the user's modules registered, for the trials' processes
    notes = [*notes, *left_out]
    storage = absolute_sqlite(opts.storage or DEFAULT_STORAGE)
    space.settings = settings
    run_root = (Path(opts.runs_dir) / space.name).resolve()
    what = f"search {space.name!r} (its folder {run_root})"
    check_free(run_root, what)
    measured = _measured_on(space)
    listings = _listings(space) if measured else {}
    check_study(space.name, storage, settings, opts.resume, space.distributions(), measured, listings,
                space.fixed_measure())
    for obs in opts.observers:
        obs.connect()
    started_ray, resources = (False, None) if idle else _init_ray(opts.ray_address, space, run_root)
    try:
        # held while the trials run: a second search of this name checked the study before this one made it
        with exclusive(run_root, what, "search"):
            check_study(space.name, storage, settings, opts.resume, space.distributions(), measured, listings,
                        space.fixed_measure())
            claim_runs(run_root, space.name, storage)
            for note in notes:  # every input checked: what is left to say about the space
                warn(note)
            observers = [ObserverThread(obs) for obs in opts.observers]
            study = open_study(space.name, storage, settings)  # check_study said it may
            study.set_user_attr("space_text", space.text)
            study.set_user_attr("settings", settings.model_dump())
            record_files(study, listings)
            projections = warm_start(study, space)  # a new study's first trials: known-good recipes
            for problem in queued_problems(study, space.distributions()) if space.warns else []:
                warn(f"{space.name}: {problem}")  # not for export's re-runs, which queue their own points
            resumed = interrupted_trials(study)
            done_before = finished_count(study)
            to_create = max(0, settings.trials - done_before - len(resumed))
            for obs in observers:
                obs.search_started(study, space, [t.number for t in resumed])
            earlier = earlier_walls(study)
            if resumed or to_create:
                try:
                    if resources is None:  # another search of this name ran trials since check_run looked
                        started_ray, resources = _init_ray(opts.ray_address, space, run_root)
                    _fit(space, study, resumed, to_create, done_before, run_root, resources, opts, observers,
                         artifact_dir(storage), carried)
                except Interrupted:  # the time it ran is the search's too
                    record_wall(study, earlier, time.monotonic() - t0)
                    raise
                except BaseException:  # the search itself failed (Ray, the study's storage): its MLflow runs
                    for obs in observers:  # stayed RUNNING for good; they end KILLED, as after a Ctrl-C
                        obs.search_interrupted([])
                    raise
    finally:
        if started_ray:
            stop_ray()
    try:
        summary = summarize(study, space, settings, storage, run_root, time.monotonic() - t0, earlier)
        record_wall(study, earlier, summary["invocation_wall_s"])
        summary["recipes_skipped"] = {p.recipe: p.skipped for p in projections if p.skipped}
        for obs in observers:
            summary = obs.search_ended(summary)
    except BaseException as err:  # a Ctrl-C, or the summary failed (the study's storage locked or full): every
        for obs in observers:  # trial had ended; the parent run would stay RUNNING
            obs.search_interrupted([])
        if isinstance(err, KeyboardInterrupt):
            raise Interrupted("interrupted while closing the search: every trial had ended; continue with --resume "
                              "to close it") from None
        raise
    return summary


def _fit(space: SearchSpace, study: Any, resumed: list[Any], to_create: int, done_before: int, run_root: Path,
         resources: dict[str, float], opts: SearchOptions, observers: list[ObserverThread], grids_dir: Path,
         carried: bytes | None = None) -> None:
    """Run the trials through Ray Tune; ``Interrupted`` when the search did not get to end every trial. Each
    trial's sample grids become Optuna artifacts in ``grids_dir``; ``carried``: the registrations made outside
    gantune (``gantune.search.carry``), registered in each trial's process."""
    import ray
    from ray import tune
    from ray.tune import FailureConfig

    from gantune.search.book import SearchBook
    from gantune.search.scheduler import AshaStop, Exploit, RecordingPBT, Rescue, make_scheduler
    from gantune.search.searcher import OptunaStudySearcher
    from gantune.search.trainable import run_trial

    settings = space.settings
    pbt = settings.pruning.scheduler == "pbt"
    asha_stopped: dict[str, AshaStop] = {}
    exploits: list[Exploit] = []
    rescues: list[tuple[str, Rescue]] = []
    # PBT on a cluster runs on a disk the nodes share (``check_shared``): nothing to ship
    searcher = OptunaStudySearcher(space, study, to_create, resumed, run_root,
                                   ship_files=bool(opts.ray_address) and not pbt,
                                   gpu_share=resources["gpu"])
    book = SearchBook(study, searcher.trials, asha_stopped, settings.objectives, settings.directions,
                      settings.trials, done_before, observers=observers, quiet=opts.quiet, exploits=exploits,
                      grids_dir=grids_dir, max_steps=settings.max_steps, rescues=rescues, label=space.label)
    scheduler = make_scheduler(space, asha_stopped, exploits, rescues, study,
                               slots=trial_slots(resources, [n["Resources"] for n in ray.nodes() if n["Alive"]])
                               if pbt else 0)
    tuner = tune.Tuner(
        tune.with_resources(run_trial if carried is None else tune.with_parameters(run_trial, carried=carried),
                            resources),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=to_create + len(resumed),
                                    # PBT: every member is created (one pending at a time, as for any
                                    # searcher); members beyond the slots wait paused and take turns
                                    max_concurrent_trials=None if pbt else settings.concurrency or None,
                                    # every trial starts in a live actor: a fresh one costs a process start
                                    # and torch's import, seconds a trial on a CPU (Tune's default is off)
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"{space.name}-{int(time.time())}", storage_path=str(run_root / "ray"),
                                  verbose=0, callbacks=[book], log_to_file=False,
                                  # PBT: each evaluation saves a checkpoint; keep enough for a donor to be cloned
                                  checkpoint_config=tune.CheckpointConfig(
                                      num_to_keep=4 if pbt else None),
                                  failure_config=FailureConfig(max_failures=0, fail_fast=False)),
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the check below sees the trials that did not end
            tuner.fit()
    except (EOFError, OSError, pickle.UnpicklingError) as err:
        # Tune reads its own files back once every trial has ended (its result grid): on a full disk it wrote an
        # empty error.pkl and failed there (EOFError, or a truncated pickle), after the book had recorded every
        # outcome. Anything else, or a file error before then, is not that and propagates.
        if len(book.outcomes) < to_create + len(resumed):
            raise
        warn(f"Ray Tune failed after every trial ended ({type(err).__name__}: {first_line(err)}); the study "
             "and MLflow hold every trial's outcome")
    finally:
        if isinstance(scheduler, RecordingPBT):
            scheduler.drop_copies()  # a resumed search starts its members again: no clone restores from one
    if len(book.outcomes) < to_create + len(resumed):
        running = sorted(book.running)
        for obs in observers:
            obs.search_interrupted(running)
        raise Interrupted(f"interrupted: {done_before + len(book.outcomes)} of {settings.trials} trials finished "
                          f"({_left(interrupted_trials(study), book.running)}); continue with --resume")


def _left(again: list[Any], running: set[int]) -> str:
    """What ``--resume`` runs again (the study's RUNNING trials): those Ray had started, and those asked from the
    study that had not started (a PBT member waiting for the CPUs, the next trial queued), each counted as what
    it was ("2 were running" named a trial that had not started)."""
    started = sum(t.number in running for t in again)
    waiting = len(again) - started
    parts = [f"{started} {'was' if started == 1 else 'were'} running"] * bool(started) + [
        f"{waiting} {'was' if waiting == 1 else 'were'} waiting to start"] * bool(waiting)
    if not parts:
        return "none had started"
    return " and ".join(parts) + (": it will run again" if len(again) == 1 else ": they will run again")


def _no_result(study: Any, started: list[Any], failed: list[Any], counts: dict[str, int], name: str) -> str | None:
    """Why the search found nothing, else ``None``: every trial failed (the first one's reason), or none completed
    (each stopped early): ``search && export`` went on to an export that failed with "no completed trial"."""
    from optuna.trial import TrialState

    if not started:
        return None
    if len(failed) == len(started):  # a config error names its trial itself
        reason = str(failed[0].user_attrs.get(REASON_KEY) or "?").removeprefix(f"trial {failed[0].number}: ")
        return f"every trial failed (trial {failed[0].number}: {reason})"
    if any(t.state == TrialState.COMPLETE for t in started):
        return None
    ended = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    # a stopped trial with an evaluation has a best one to export (one stopped before its first has none; a
    # completed one whose objective is not finite is a FAIL in Optuna)
    stopped = [t for t in started if t.state == TrialState.PRUNED]
    evaluated = any(trial_value(study, t) is not None for t in stopped)
    return (f"no trial ended with a result ({ended}): nothing to export as the best"
            + (f"; `gantune export {name} --trial N` exports a stopped trial's best evaluation" if evaluated
               else "; none was evaluated before it stopped" if stopped else ""))


def _other_defaults(started: list[Any], space: SearchSpace) -> dict[str, list[tuple[Any, list[int]]]]:
    """The ``search.defaults`` of keys the space leaves unset that some trials trained with another value of
    (a resume with edited defaults): per key, each other value and its trials. The summary stated the new default
    beside a best trial that had trained the old one."""
    other: dict[str, dict[str, tuple[Any, list[int]]]] = {}
    defaults = space.search_defaults()
    for t in started if defaults else ():
        trained = dotted(t.user_attrs.get("config") or {})
        for key, value in defaults.items():
            if (held := trained.get(key, value)) != value:
                other.setdefault(key, {}).setdefault(repr(held), (held, []))[1].append(t.number)
    return {key: list(by.values()) for key, by in other.items()}


def front_note(study: Any, best: Any, objectives: list[str]) -> str | None:
    """A multi-objective search's best is one trial of its Pareto front: which one, and the others (export said
    so; the summary named a best alone)."""
    if best is None or len(objectives) < 2:
        return None
    others = [t.number for t in study.best_trials if t.number != best.number]
    return (f"{len(objectives)} objectives: trial {best.number} is the Pareto front's best on {objectives[0]}"
            + (f"; the front also holds {provenance.trial_numbers(others)} (export one with --trial N)" if others
               else ""))


def storage_shown(storage: str) -> dict[str, str]:
    """The summary's study storage and dashboard command, with a password in the URI shown as ``***``: the summary
    is printed and logged to MLflow as summary.json, which every reader of the tracking server sees."""
    return {"study_storage": redacted(storage),
            "dashboard": dashboard_command(redacted(storage), artifact_dir(storage))}


def summarize(study: Any, space: SearchSpace, settings: SearchSettings, storage: str, run_root: Path,
              wall_s: float, earlier: Sequence[float] = ()) -> dict[str, Any]:
    """The summary the CLI prints and MLflow's parent run keeps. ``wall_s``: this invocation's seconds;
    ``earlier``: those of the invocations before it (``earlier_walls``), so ``wall_s`` in the summary is the
    search's (a resume that trained nothing said "4 trials in 5s")."""
    counts = dict.fromkeys(STATUSES, 0)
    steps = failed_steps = 0
    from optuna.trial import TrialState

    started = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    failed = [t for t in started if trial_status(t).startswith(str(Status.FAILED))]  # running ones too
    for t in started:
        status = trial_status(t)
        counts[status] = counts.get(status, 0) + 1
        steps += trained_steps(t)
    failed_steps = sum(int(t.user_attrs.get("steps", 0)) for t in failed)
    best = best_trial(study)
    best_info: dict[str, Any] | None = None
    if best is not None:
        samples = sorted((run_root / trial_dirname(best.number) / "samples").glob("*.png"))
        best_info = {"trial": best.number, "values": dict(zip(settings.objectives, best.values, strict=True)),
                     "metrics": best.user_attrs.get("metrics", {}), "params": trained_params(best),
                     "config": best.user_attrs.get("config"), "floor": provenance.floor(best),
                     "recipe": best.user_attrs.get(RECIPE_KEY),
                     "provenance": provenance.of(best), "samples": str(samples[-1]) if samples else None}
    return {
        "search": space.name, "best": best_info, "counts": counts, "trials": len(started),
        "note": "; ".join(n for n in (ranked(study)[1], front_note(study, best, settings.objectives)) if n) or None,
        "recipe_trials": {t.number: t.user_attrs[RECIPE_KEY] for t in started if t.user_attrs.get(RECIPE_KEY)},
        "search_defaults": space.search_defaults(switched=True),
        "search_defaults_other": _other_defaults(started, space),
        "trial_steps": steps, "budget_steps": max(settings.trials, len(started)) * settings.max_steps,
        # what pruning saved is counted over the trials that did not fail: a failed trial's steps were not saved
        "max_steps": settings.max_steps, "failed_trials": len(failed), "failed_steps": failed_steps,
        # a search whose every trial failed searched nothing: its command fails, naming the first reason
        "error": _no_result(study, started, failed, counts, space.name),
        "wall_s": round(sum(earlier) + wall_s, 2), "invocation_wall_s": round(wall_s, 2),
        "invocations": len(earlier) + 1, "study_name": space.name,
        "runs_dir": str(run_root), "artifact_dir": str(artifact_dir(storage)), **storage_shown(storage),
    }
