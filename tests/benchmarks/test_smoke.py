"""A smoke run of every benchmark script, so that a change that breaks one fails the suite the day it breaks.

Each case runs ``benchmarks/<script>`` as the docs do (a subprocess from the repository root) at its smallest sizes
(a few steps, a few trials of a search on a local Ray, one thread outside the trials), and checks its exit code and
the table it prints: the header and every row it must have, with a number in each numeric cell. The figures
themselves are not checked: at these sizes they mean nothing; the full runs measure them. Nothing is downloaded:
every benchmark here scores with the digits classifier or on points, never with Inception.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from gantune.metrics import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
#: a benchmark's whole run, on a loaded 2-core machine with room to spare (the slowest takes about a minute)
TIMEOUT_S = 400
#: benchmarks run at a time (each on one thread)
PARALLEL = 2
NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
#: ``{N}`` a finite number as the tables print one (no nan, no inf), ``{P}`` one above zero, ``{C}`` a number or
#: '-' (a cell left empty), ``{*}`` any text
PLACEHOLDERS = {"{N}": NUMBER, "{P}": r"(?=[\d.]*[1-9])" + NUMBER.removeprefix("-?"), "{C}": f"(?:{NUMBER}|-)",
                "{*}": ".*"}


def line(template: str) -> re.Pattern[str]:
    """The pattern of a printed line with its runs of whitespace collapsed: the template's text, placeholders read
    as ``PLACEHOLDERS`` says."""
    pattern = re.escape(" ".join(template.split()))
    for holder, regex in PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape(holder), regex)
    return re.compile(pattern)


@dataclass(frozen=True)
class Smoke:
    """One benchmark's smoke run: its arguments and the lines its output must contain (templates for ``line``)."""

    script: str
    args: tuple[str, ...]
    lines: tuple[str, ...]
    seconds: float  # its wall time on a 2-core CPU, about (the longest start first)
    slow: str = ""  # why it cannot be made cheap (then marked slow)
    mode: str = ""  # a second case of one script (its other mode): told apart by this

    @property
    def name(self) -> str:
        return self.script.removesuffix(".py") + (f"-{self.mode}" if self.mode else "")


CASES: list[Smoke] = [
    Smoke("digits_floor.py", ("--n", "100", "--resolution", "8"), (
        "digits classifier: held-out accuracy {P}% (360 digits)",
        "px n ref n floor FID floor KID noise FID one class FID",
        "8 100 {P} {N} {N} {P} {P}",
    ), 7),
    Smoke("gpu_throughput.py", ("--cpu", "--concurrency", "1", "--steps", "10", "--batch", "8"), (
        "device: CPU x{P} DCGAN-32 (3x32x32), batch 8, 10 steps per trial",
        "trials per trial aggregate img/s end-to-end img/s vs bare together",
        "bare {P} {P} 1.00x",
        "1 {P} {P} {P} {N}x {N}%",
    ), 45),
    Smoke("is_floor.py", ("--n", "100", "--resolution", "8"), (
        "data px n ceiling ref n held-out is is_std train is is_std s",
        "digits 8 1000 10 360 {P} {N} {P} {N} {N}",
        "stacked_digits 8 100 10 {P} {P} {N} {P} {N} {N}",
    ), 6),
    Smoke("loop_overhead.py", ("--preset", "mlp", "--warmup", "2", "--steps", "2", "--log-every", "2",
                               "--repeats", "1", "--device", "cpu"), (
        "device: CPU ({P} threads) config: preset mlp batch: 512",
        "repeat gantune it/s bare it/s ratio",
        "1 {P} {P} {P}",
        "median {P} {P} {P}",
        "ratio gantune/bare steps/s: {P} (median of 1 per-repeat ratios; target >= 0.95; only 1 repeat(s): "
        "not a figure to quote)",
    ), 8),
    Smoke("kid_std.py", ("--draws", "3"), (
        "draws per case: 3",
        "case reals fakes spread of kid rms kid_std median kid_std spread/rms",
        "digits features 360 500 {P} {P} {P} {P}",
        "Student-t 64-D 360 500 {P} {P} {P} {P}",
        "Student-t shifted 360 1000 {P} {P} {P} {P}",
        "Student-t 64-D 1000 1000 {P} {P} {P} {P}",
    ), 5),
    # every family measured on some case (stacked_modes, conditional and is were on none)
    Smoke("metric_cost.py", ("--device", "cpu", "--max-n", "300"), (
        "case extractor n extract " + " ".join(FAMILIES.names()),
        "grid25 coords 300 {N} {N} - - - {N} {N} {N} - -",
        "ring8 coords 300 {N} {N} - - - {N} {N} {N} - -",
        "digits16 digits 300 {N} - {N} - - {N} {N} {N} {N} -",
        "digits32 cond digits 300 {N} - {N} - {N} {N} {N} {N} {N} {N}",
        "stacked stacked_digits 300 {N} - - {N} - {N} {N} {N} - {N}",
    ), 6),
    Smoke("pacgan_table.py", ("--trials", "2", "--max-steps", "40", "--n", "500"), (
        "search {*}/search_spaces/grid25.yaml: 2 trials in {N}s ({*}); recipe trials {*}; exported trial {N}; "
        "500 fresh samples (seed 2718)",
        "modes HQ % rev. KL",
        "PacGAN Table 1: GAN 17.30 94.80 0.70",
        "real-vs-real floor {P} {P} {N}",
        "gantune (plain GAN) {N} {N} {N}",
        "target 25 modes, HQ >= 95.0%, KL <= 0.03: {*}met",
    ), 40),
    Smoke("pacgan_table.py", ("--config", "ring8", "--reruns", "2", "--steps", "40", "--n", "500"), (
        "config ring8: 2 training runs; 500 fresh samples (seed 2718)",
        "modes HQ % rev. KL",
        "PacGAN Table 1: PacGAN2 7.90 95.60 0.07",
        "gantune run, train.seed 1 {N} {N} {N}",
        "gantune run, train.seed 2 {N} {N} {N}",
        "gantune, mean of 2 runs {N} {N} {N}",
        "standard error {N} {N} {N}",
        "gantune run, train.seed 2: target 8 modes, HQ >= 98.0%, KL <= 0.05: {*}met",
    ), 10, mode="reruns"),
    Smoke("remedies.py", ("--only", "unroll", "init_from", "progressive", "--seeds", "1", "--steps-scale", "0.01"), (
        "seeds per arm: 1; steps scale 0.01",
        "| technique | knob | setting | metric | off | on |",
        "| unroll | `loss.unroll: 5` | ring8-small-d | modes | {N} ± {N} | {N} ± {N} |",
        "| init_from | `model.init_from: a run on the other 1,293 digits` | digits-10pct | fid | "
        "{P} ± {N} | {P} ± {N} |",
        "| progressive | `model.progressive: {start: 8, fade_steps: 500}` | digits-full | fid | "
        "{P} ± {N} | {P} ± {N} |",
    ), 15),
    Smoke("remedies.py", ("--cost", "--only", "unroll", "minibatch_disc", "--cost-steps", "10", "--repeats", "1"), (
        "ms per training step on the CPU (1 threads), best of 1 windows of 10 steps after 10 warm-up steps; "
        "evaluation off",
        "| technique | knob | setting | off ms/step | on ms/step | on / off |",
        "| unroll | `loss.unroll: 5` | ring8-small-d | {P} | {P} | {P}x |",
        "| minibatch_disc | `model.minibatch_disc: 32` | stacked-small-d | {P} | {P} | {P}x |",
    ), 8, mode="cost"),
    Smoke("search_defaults.py", ("--space", "tests/fixtures/user_ring8.yaml", "--arms", "none", "both", "--trials",
                                 "2", "--max-steps", "30"), (
        "user_ring8.yaml: objective mode_kl (minimize), 2 configs (random sampler, seed 0), unpruned, no warm start",
        "arm defaults median best better than none wall s best config's metrics",
        "none (schema's) {N} {N} - {N} {*}",
        "both optim.ema 0.999, optim.decay linear {N} {N} {N}/2 {N} {*}",
    ), 35),
    Smoke("speed_options.py", ("--preset", "mlp", "--steps", "10", "--repeats", "1", "--device", "cpu",
                               "--no-compile"), (
        "device: cpu preset mlp, batch 512, 10 steps, best of 1",
        "option img/s vs off",
        "all off {P} 1.00x",
        "tf32 n/a (CUDA only: no effect on cpu)",
        "compile skipped (--no-compile)",
    ), 8),
    Smoke("tf32_metrics.py", ("--n", "300"), (
        "device: cpu; 300 exact samples a side, the reference drawn as a trial draws it",
        "data distances hq modes precision recall density coverage",
        *(f"{data} {row} {{N}} {{P}} {{N}} {{N}} {{N}} {{N}}" for data in ("grid25", "ring8")
          for row in ("float64 (gantune's)", "float32", "TF32 simulated", "evaluator, trial's TF32 set")),
        *(f"{data} float32 k-NN radii against float64: {{N}}% off at most, {{N}}% the median"
          for data in ("grid25", "ring8")),
    ), 5),
    Smoke("stacked_floor.py", ("--n", "300", "--resolution", "8"), (
        "uniform over 1000 modes, n = 300: expected KL {P} (first order 999/(2n) = 1.6650)",
        "px split digit acc triples right modes KL chan. KL conf. true modes true KL",
        "8 train {P}% {P}% {P} {P} {P} {P} {P} {P}",
        "8 heldout {P}% {P}% {P} {P} {P} {P} {P} {P}",
    ), 7),
]


def run_benchmark(script: str, args: tuple[str, ...], tmp: Path) -> str:
    """``python benchmarks/<script> <args>`` from the repository root, on one thread, with its own cache and
    temporary files in ``tmp`` (Ray keeps its usual place: its socket paths must stay short); its output."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # this checkout's gantune
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "GANTUNE_TEST_THREADS": "1",
           "GANTUNE_CACHE_DIR": str(tmp / "cache"), "TMPDIR": str(tmp), "RAY_TMPDIR": tempfile.gettempdir()}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(Path("benchmarks") / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    out = proc.stdout + f"\n[{script} ran {time.monotonic() - t0:.1f} s]"
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{out}\n--- stderr:\n{proc.stderr[-6000:]}"
    return out


#: benchmark scripts without a smoke run here, and why
UNCOVERED = {"search_efficiency.py": "tests/benchmarks/test_search_efficiency.py runs one arm of each kind and "
                                    "tests its analysis on built event streams",
             "health_replay.py": "tests/benchmarks/test_search_efficiency.py replays the verdicts on its smoke run"}

#: what needs a CUDA GPU, smoke-run where there is one
CUDA_CASES: list[Smoke] = [
    Smoke("gpu_throughput.py", ("--concurrency", "1", "2", "--steps", "20", "--batch", "8"), (
        "device: {*} DCGAN-32 (3x32x32), batch 8, 20 steps per trial",
        "bare {P} {P} 1.00x",
        "1 {P} {P} {P} {N}x {N}%",
        "2 {P} {P} {P} {N}x",
    ), 40),
    Smoke("speed_options.py", ("--preset", "mlp", "--steps", "10", "--repeats", "1", "--device", "cuda",
                               "--no-compile"), (
        "device: cuda preset mlp, batch 512, 10 steps, best of 1",
        "all off {P} 1.00x",
        *(f"{row} {{P}} {{N}}x" for row in ("tf32", "cudnn_benchmark", "channels_last", "bf16",
                                           "defaults (tf32 + cudnn_benchmark)")),
        "compile skipped (--no-compile)",
    ), 10),
]


def check(case: Smoke, out: str) -> None:
    """Every line the case must print is in its output ``out``."""
    printed = [" ".join(raw.split()) for raw in out.splitlines()]
    missing = [t for t in case.lines if not any(line(t).fullmatch(p) for p in printed)]
    assert not missing, (f"{case.name} printed no line like:\n  " + "\n  ".join(missing)
                         + f"\n--- its output:\n{out}")


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[str]]]:
    """The selected cases' runs, all started at the first test, ``PARALLEL`` at a time, longest first (a search
    mostly waits on Ray's start and its workers' imports, which the short runs fill); each test waits for its own."""
    selected = {item.callspec.params["case"] for item in request.session.items
                if isinstance(item, pytest.Function) and item.module is request.module
                and item.originalname == "test_benchmark_smoke"}
    chosen = [c for c in CASES if c in selected]
    pool = ThreadPoolExecutor(PARALLEL)
    try:
        yield {c.name: pool.submit(run_benchmark, c.script, c.args, tmp_path_factory.mktemp(c.name))
               for c in sorted(chosen, key=lambda c: -c.seconds)}
    finally:
        pool.shutdown(cancel_futures=True)  # after a stop (-x): none started anew


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name,
                                               marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_benchmark_smoke(case: Smoke, runs: dict[str, Future[str]]) -> None:
    out = runs[case.name].result()
    print(out.splitlines()[-1])  # its own wall time (the test's includes the wait for a free slot): shown by -rP
    check(case, out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU smoke runs above exercise "
                    "the same harnesses)")
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CUDA_CASES])
def test_benchmark_smoke_cuda(case: Smoke, tmp_path: Path) -> None:
    check(case, run_benchmark(case.script, case.args, tmp_path))


def test_every_benchmark_has_a_smoke_run() -> None:
    """A new benchmark script gets its smoke run here too (``common.py`` is the benchmarks' helper, not one)."""
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"common.py", *UNCOVERED}
    covered = {c.script for c in CASES}
    assert scripts == covered, f"no smoke run: {sorted(scripts - covered)}; no such script: {sorted(covered - scripts)}"


def test_a_failed_table_run_leaves_no_work_files(tmp_path: Path) -> None:
    """``pacgan_table`` keeps its work folder (search, export, weights) to look at; one whose run failed was left
    in the temporary folder too, with nothing in it worth keeping."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pacgan_table.py"), "--space",
                           str(tmp_path / "missing.yaml")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 2 and "missing.yaml" in done.stderr, done.stderr
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize(("script", "args", "says"), [
    # found by a probe: 0 meant "the default", -1 ran nothing and kept an empty plot, exit 0 either way
    ("search_efficiency.py", ["--seeds", "0"], "argument --seeds: must be a whole number of at least 1"),
    ("search_efficiency.py", ["--grace-evals", "0"], "argument --grace-evals: must be a whole number of at least 1"),
    ("remedies.py", ["--steps-scale", "0"], "argument --steps-scale: must be a number above 0"),
    ("remedies.py", ["--seeds", "-1"], "argument --seeds: must be a whole number of at least 1"),
    ("pacgan_table.py", ["--n", "0"], "argument --n: must be a whole number of at least 16"),
    # found by a review: options the run would ignore
    ("pacgan_table.py", ["--steps", "40"], "--steps sets the length of --reruns' training runs"),
    ("pacgan_table.py", ["--config", "grid25", "--reruns", "2", "--trials", "3"], "--config skips"),
    # below an evaluation's 16 it was refused by the schema after the whole search had run
    ("pacgan_table.py", ["--n", "8", "--trials", "1", "--max-steps", "20"], "argument --n: must be a whole number"),
    ("stacked_floor.py", ["--n", "0"], "argument --n: must be a whole number of at least 1"),
    # tracebacks, each: a setting the schema refuses, a device that is not one, a space that is not there
    ("digits_floor.py", ["--n", "100", "--resolution", "7"], "data.resolution"),
    ("metric_cost.py", ["--device", "bogus"], "'bogus' is not a device"),
    ("kid_std.py", ["--draws", "1"], "--draws: at least 2"),
    ("search_defaults.py", ["--space", "/nonexistent.yaml", "--trials", "1", "--max-steps", "20"],
     "/nonexistent.yaml"),
    ("health_replay.py", ["--out", "{tmp}"], "no random arm kept in"),
])
def test_bad_input_to_a_benchmark_is_one_line_and_exit_2(tmp_path: Path, script: str, args: list[str],
                                                        says: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script),
                           *(a.replace("{tmp}", str(tmp_path)) for a in args)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    # one line (after argparse's usage lines, where argparse refuses it), and no traceback
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and says in last and "Traceback" not in done.stderr, done.stderr
