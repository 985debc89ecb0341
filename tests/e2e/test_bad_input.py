"""Bad input is caught before anything starts: one line on stderr, exit code 2, no traceback and nothing written.

``test_bad_input_is_one_line_exit_2_and_writes_nothing`` is the table: a new case is one row. Every row must be
refused at load, so none starts Ray or trains (a row that did would write optuna.db, runs/ or mlflow.db, which
the test sees: it compares every file under the test's folder before and after).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gantune.cli import main
from gantune.errors import ConfigError, DataError
from gantune.sampling.space import load_space

SPACE = {
    "name": "ok",
    "search": {"trials": 2, "max_steps": 20, "eval_every": 10, "sampler": "random", "concurrency": 1,
               "pruning": {"asha": False}},
    "data": {"name": "grid25"},
    "model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "none"},
    "train": {"batch_size": 16, "log_every": 10},
    "eval": {"n_samples": 100},
}
CONFIG = {
    "name": "ok",
    "data": {"name": "grid25"},
    "model": {"z_dim": 4, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "none"},
    "train": {"steps": 10, "batch_size": 16, "log_every": 5, "device": "cpu"},
    "eval": {"every": 10, "n_samples": 100, "metrics": []},
}
IMAGES = {"data": {"name": "folder", "path": "{in}/images", "resolution": 8}, "model": {"arch": "dcgan"}}


def _with(base: dict, **changes: object) -> dict:
    """``base`` with top-level keys replaced (a ``None`` value removes the key)."""
    out = {k: v for k, v in base.items() if k not in changes}
    out.update({k: v for k, v in changes.items() if v is not None})
    return out


#: input files of the table, written to ``{in}`` (``{in}`` inside them is that folder)
FILES: dict[str, dict | str] = {
    "space.yaml": SPACE,
    "config.yaml": CONFIG,
    "dotdot.yaml": _with(SPACE, name="../x"),
    "absolute.yaml": _with(SPACE, name="{in}/abs"),
    "slash.yaml": _with(SPACE, name="a/b"),
    "tiny-cpu.yaml": _with(SPACE, search={**SPACE["search"], "resources": {"cpu": 0.00001}}),
    "pbt-concurrency.yaml": _with(SPACE, search={**SPACE["search"], "pruning": {"scheduler": "pbt"}}),
    "no-folder.yaml": _with(SPACE, **{**IMAGES, "data": {"name": "folder", "path": "{in}/nope"}}),
    "no-images.yaml": _with(SPACE, **{**IMAGES, "data": {"name": "folder", "path": "{in}/empty"}}),
    "bad-image.yaml": _with(SPACE, **{**IMAGES, "data": {"name": "folder", "path": "{in}/broken"}}),
    "bad-last-image.yaml": _with(SPACE, **{**IMAGES, "data": {"name": "folder", "path": "{in}/broken_last",
                                                              "resolution": 8, "channels": 1},
                                          "eval": {"extractor": "digits"}}),
    "one-choice-missing.yaml": _with(SPACE, **{**IMAGES, "data": {
        "name": "folder", "path": {"categorical": ["{in}/images", "{in}/nope"]}, "resolution": 8}}),
    "classes-on-points.yaml": _with(SPACE, eval={"n_samples": 100, "metrics": ["classes", "modes"]},
                                    search={**SPACE["search"], "objective": "mode_coverage"}),
    "torchvision.yaml": _with(SPACE, data={"name": "torchvision", "dataset": "MNIST", "path": "{in}/tv"},
                              model={"arch": "dcgan"}),
    "huge-power.yaml": _with(SPACE, optim={"lr_d": {"expr": "optim.lr_g * 9**9**9"}}),
    "invert.yaml": _with(SPACE, optim={"lr_d": {"expr": "~optim.lr_g"}}),
    "repeat.yaml": _with(SPACE, optim={"lr_d": {"expr": "optim.lr_g * min([1] * 3)"}}),
    "sampler-option.yaml": _with(SPACE, search={**SPACE["search"], "sampler_options": {"n_startup_trials": 3}}),
    # valid at the file's 20 steps (decay from step 10), not at --max-steps 5 (from step 10 of 5)
    "decay-steps.yaml": _with(SPACE, optim={"decay": "linear", "decay_start": {"expr": "10 / train.steps"}}),
    "train-dotdot.yaml": _with(CONFIG, name="../x"),
    "train-no-folder.yaml": _with(CONFIG, **{**IMAGES, "data": {"name": "folder", "path": "{in}/nope"}}),
    "one-image.yaml": _with(SPACE, **{**IMAGES, "data": {"name": "folder", "path": "{in}/one", "resolution": 8}},
                            eval={"n_samples": 100, "metrics": ["fid"], "extractor": "digits"}),
    "train-one-image.yaml": _with(CONFIG, **{**IMAGES, "data": {"name": "folder", "path": "{in}/one",
                                                                "resolution": 8}},
                                  eval={**CONFIG["eval"], "metrics": ["fid"], "extractor": "digits"}),
    "deep.yaml": "a: " + "[" * 5000 + "]" * 5000 + "\n",
    # an objective the evaluations do not report: no best weights were kept and the rise check never fired
    "train-objective.yaml": _with(CONFIG, eval={**CONFIG["eval"], "metrics": ["diversity"]},
                                  health={"objective": "nonsense"}),
    # nothing evaluated at all: it trained without a word and kept no best weights
    "train-objective-unevaluated.yaml": _with(CONFIG, health={"objective": "coverage", "mode": "max"}),
    # found by a probe of user spaces: a file that is not weights (every trial failed), a traceback, and a
    # parameter no expression can read
    "init-text.yaml": _with(SPACE, model={**SPACE["model"], "init_from": {"categorical": [
        "{in}/space.yaml", "{in}/inception.pth"]}}),
    "no-objective.yaml": _with(SPACE, search={**SPACE["search"], "objective": []}),
    "keyword-param.yaml": _with(SPACE, search={**SPACE["search"], "params": {"lambda": {"float": [0.1, 1.0]}}},
                                optim={"lr_d": {"expr": "optim.lr_g * lambda"}}),
    # a conditional run on a folder with its images at the top (no class subfolders): it failed when the data was
    # loaded, leaving an empty run folder (train) or a search of failed trials
    "train-cond-loose.yaml": _with(CONFIG, **{**IMAGES, "model": {"arch": "dcgan", "conditional": True}}),
    "cond-loose.yaml": _with(SPACE, **{**IMAGES, "model": {"arch": "dcgan", "conditional": True}},
                             eval={"n_samples": 100, "inception_weights": "{in}/inception.pth"}),
    # half its trials conditional: those failed on the data while the rest ran (the check read the schema's false)
    "cond-half-loose.yaml": _with(SPACE, **{**IMAGES, "model": {"arch": "dcgan", "conditional": {
        "categorical": [False, True]}}}, eval={"n_samples": 100, "inception_weights": "{in}/inception.pth"}),
    # a max_images subset that left a class out: the generator learnt that class from nothing (class indices came
    # from the subset, so the classes after it were renumbered too)
    "train-cond-subset.yaml": _with(CONFIG, data={"name": "folder", "path": "{in}/classes", "resolution": 8,
                                                  "max_images": 1}, model={"arch": "dcgan", "conditional": True}),
    "cond-subset.yaml": _with(SPACE, data={"name": "folder", "path": "{in}/classes", "resolution": 8, "max_images": 1},
                              model={"arch": "dcgan", "conditional": True},
                              eval={"n_samples": 100, "inception_weights": "{in}/inception.pth"}),
    "inception.pth": "weights a trial would read (the load-time checks look for the file)",
    "no-inception.yaml": _with(SPACE, **IMAGES, eval={"n_samples": 100, "metrics": ["fid"],
                                                      "inception_weights": "{in}/nope.pth"}),
    # search.defaults' data and eval values are what the trials evaluate with: checked as the space's own
    "defaults-no-inception.yaml": _with(SPACE, **IMAGES, eval={"n_samples": 100, "metrics": ["fid"]}, search={
        **SPACE["search"], "defaults": {"eval.inception_weights": "{in}/nope.pth"}}),
    "defaults-metrics.yaml": _with(SPACE, search={**SPACE["search"], "objective": "modes",
                                                  "defaults": {"eval.metrics": ["prdc"]}}),
    "train-no-inception.yaml": _with(CONFIG, **IMAGES, eval={"every": 10, "n_samples": 100, "metrics": ["fid"],
                                                             "inception_weights": "{in}/nope.pth"}),
    # values no run can use: found by a fuzz of the command line, each a traceback, a hang or a search of failures
    "empty.yaml": "# nothing but a comment\n",
    "tpu.yaml": _with(CONFIG, train={**CONFIG["train"], "device": "tpu"}),
    "seed.yaml": _with(CONFIG, train={**CONFIG["train"], "seed": 2**70}),
    "deep-net.yaml": _with(CONFIG, model={**CONFIG["model"], "g_depth": 10**9}),
    "lr-inf.yaml": _with(CONFIG, optim={"lr_g": float("inf")}),
    "health-nan.yaml": _with(CONFIG, health={"max_grad_norm": float("nan")}),
    "z-huge.yaml": _with(CONFIG, model={**CONFIG["model"], "z_dim": 10**12}),
    "mbd-huge.yaml": _with(CONFIG, model={**CONFIG["model"], "minibatch_disc": 10**6}),  # killed by the OS
    "range-inf.yaml": _with(SPACE, optim={"lr_g": {"float": [1e-4, float("inf")]}}),
    "long-expr.yaml": _with(SPACE, optim={"lr_d": {"expr": "1" + "+1" * 50_000}}),
    "off-step.yaml": _with(SPACE, model={**SPACE["model"], "g_width": {"int": [8, 16], "step": 100}}),
    "cycle.yaml": _with(SPACE, optim={"lr_g": {"expr": "optim.lr_d * 2"}, "lr_d": {"expr": "optim.lr_g * 2"}}),
    "self-when.yaml": _with(SPACE, optim={"lr_g": {"float": [1e-4, 1e-3], "when": "optim.lr_g > 0"}}),
    "div-zero.yaml": _with(SPACE, optim={"lr_g": {"float": [1e-4, 1e-3]}, "lr_d": {"expr": "optim.lr_g / 0"}}),
    "text-lr.yaml": _with(SPACE, optim={"lr_d": {"expr": "'abc'"}}),
    "never-fits.yaml": _with(SPACE, loss={"name": {"categorical": ["wgan-gp"]}},
                             model={**SPACE["model"], "d_norm": "batch"}),
    "many-cpus.yaml": _with(SPACE, search={**SPACE["search"], "resources": {"cpu": 100_000}}),
    "steps-true.yaml": _with(CONFIG, train={**CONFIG["train"], "steps": True}),
    "switch-word.yaml": _with(SPACE, search={**SPACE["search"], "warm_start": "yes"}),
    "switch-number.yaml": _with(SPACE, model={**SPACE["model"], "minibatch_std": {"categorical": [0, 1]}}),
    "log-word.yaml": _with(SPACE, optim={"lr_g": {"float": [1e-4, 1e-3], "log": "on"}}),
    "seed-negative.yaml": _with(SPACE, search={**SPACE["search"], "seed": -1}),
    "search-sets.yaml": _with(SPACE, train={**SPACE["train"], "steps": 5000, "device": "cuda"},
                              health={"objective": "fid"}),
    "search-sets-default.yaml": _with(SPACE, search={**SPACE["search"], "defaults": {"eval.every": 5}}),
    "objective-twice.yaml": _with(SPACE, search={**SPACE["search"], "objective": ["coverage", "coverage"],
                                                 "direction": ["maximize", "minimize"]}),
    # a search for the worst: one minimize for both objectives minimised coverage, and FID maximised
    "fid-coverage-min.yaml": _with(SPACE, search={**SPACE["search"], "objective": ["fid", "coverage"],
                                                  "direction": "minimize"}),
    "diversity-no-direction.yaml": _with(SPACE, search={**SPACE["search"], "objective": "diversity"}),
    "fid-max.yaml": _with(SPACE, search={**SPACE["search"], "objective": "fid", "direction": "maximize"}),
    "train-coverage-min.yaml": _with(CONFIG, eval={**CONFIG["eval"], "metrics": ["prdc"]},
                                     health={"objective": "coverage"}),
    # settings read by nothing: ASHA's beside asha: false, the margin without noise_aware
    "asha-off-keys.yaml": _with(SPACE, search={**SPACE["search"], "pruning": {"asha": False, "grace_evals": 3}}),
    "margin-alone.yaml": _with(SPACE, search={**SPACE["search"], "pruning": {"asha": True, "noise_margin": 2.0}}),
    "pbt-two.yaml": _with(SPACE, search={**SPACE["search"], "concurrency": 0, "pruning": {"scheduler": "pbt"}},
                          optim={"lr_g": {"float": [1e-4, 1e-3], "log": True}}),
    # quick checks score the cheap metrics only: beside FID alone each one measured nothing, without a word
    "quick-fid.yaml": _with(SPACE, search={**SPACE["search"], "quick_every": 5, "objective": "fid"},
                            eval={"n_samples": 100, "metrics": ["fid"]}),
    "train-quick-fid.yaml": _with(CONFIG, eval={**CONFIG["eval"], "metrics": ["fid"], "quick_every": 5}),
    # settings of the scheduler the space does not run: PBT's ran ASHA, ASHA's under PBT were read by nothing
    "pbt-unchosen.yaml": _with(SPACE, search={**SPACE["search"], "pruning": {"pbt": {"interval_evals": 1}}}),
    "asha-under-pbt.yaml": _with(SPACE, search={**SPACE["search"], "concurrency": 0, "pruning": {
        "scheduler": "pbt", "grace_evals": 3, "reduction_factor": 4}}),
    "unread-param.yaml": _with(SPACE, search={**SPACE["search"], "params": {"ttur": {"float": [0.5, 2.0]}}}),
    "pbt-of-one.yaml": _with(SPACE, search={**SPACE["search"], "trials": 1, "pruning": {"scheduler": "pbt"}},
                             optim={"lr_g": {"float": [1e-4, 1e-3]}}),
    "twice.yaml": yaml.safe_dump(SPACE) + "optim:\n  lr_g: {float: [1.0e-4, 1.0e-3]}\n  lr_g: 0.01\n",
}

ROWS: list[tuple[list[str], str]] = [
    # names become paths
    (["search", "{in}/dotdot.yaml"], r"dotdot.yaml: name: '\.\./x' is not a usable search name"),
    (["search", "{in}/absolute.yaml"], r"absolute.yaml: name: '/.*/abs' is not a usable search name"),
    (["search", "{in}/slash.yaml"], r"name: 'a/b' is not a usable"),
    (["search", "{in}/space.yaml", "--name", "a/../../b"], r"--name: 'a/\.\./\.\./b' is not a usable"),
    (["search", "{in}/space.yaml", "--name", ".."], r"--name: '\.\.' is not a usable"),
    (["search", "{in}/space.yaml", "--name", "x" * 101], r"--name: 'x+' is not a usable"),
    (["train", "{in}/train-dotdot.yaml"], r"train-dotdot.yaml: name: '\.\./x' is not a usable run name .*under "
                                          r"runs/ \(or give --out\)"),
    # data that is not there
    (["search", "{in}/no-folder.yaml"], r"no-folder.yaml: data.path: image folder .*/nope does not exist"),
    (["search", "{in}/no-images.yaml"], r"data.path: no images \(.*\) under .*/empty"),
    (["search", "{in}/bad-image.yaml"], r"data.path: cannot read image .*/broken/a.png"),
    # the load's check decodes the first image: the last one failed each trial (a search of all-failed trials)
    (["search", "{in}/bad-last-image.yaml"], r"bad-last-image.yaml: data.path: cannot read image .*/broken_last/b.jpg"),
    (["search", "{in}/one-choice-missing.yaml"], r"data.path: image folder .*/nope does not exist"),
    (["search", "{in}/torchvision.yaml"], r"data.(name: torchvision datasets need torchvision|path: MNIST not found)"),
    (["train", "{in}/train-no-folder.yaml", "--out", "run"], r"data.path: image folder .*/nope does not exist"),
    # evaluation weights that are not there (nothing downloads): FID on a folder reads Inception-v3's features
    (["search", "{in}/no-inception.yaml"], r"no-inception.yaml: eval.inception_weights: Inception-v3 weights not "
                                            r"found at .*/nope\.pth.*\(eval.metrics: fid read"),
    (["search", "{in}/defaults-no-inception.yaml"], r"defaults-no-inception.yaml: eval.inception_weights: "
                                                     r"Inception-v3 weights not found at .*/nope\.pth"),
    (["search", "{in}/defaults-metrics.yaml"], r"defaults-metrics.yaml: search.objective: 'modes' is not reported by "
                                               r"this space's evaluations \(available: precision, recall, density, "
                                               r"coverage\)$"),
    (["train", "{in}/train-no-inception.yaml", "--out", "run"], r"eval.inception_weights: Inception-v3 weights not"),
    (["train", "{in}/train-objective.yaml"], r"health.objective: 'nonsense' is not reported by this config's "
                                             r"evaluations \(they report: diversity\)"),
    (["train", "{in}/train-objective-unevaluated.yaml"], r"health.objective: 'coverage' is not reported by this "
                                                         r"config's evaluations \(eval.metrics is \[\], so nothing "
                                                         r"is evaluated\): no best weights are kept"),
    (["search", "{in}/init-text.yaml"], r"init-text.yaml: model.init_from: .*space.yaml: not a readable weights "
                                        r"file \(UnpicklingError\)"),
    (["search", "{in}/no-objective.yaml"], r"no-objective.yaml: search: objective: empty; name the metric"),
    (["search", "{in}/keyword-param.yaml"], r"search.params.lambda: a parameter name must be a plain identifier, "
                                            r"not a section or a Python word"),
    (["train", "{in}/train-cond-loose.yaml"], r"model.conditional: data 'folder' has no class labels; .*subfolder"),
    (["search", "{in}/cond-loose.yaml"], r"cond-loose.yaml: model.conditional: data 'folder' has no class labels"),
    (["train", "{in}/train-cond-subset.yaml"], r"data.max_images: its subset of 1 leaves out 1 of the folder's 2 "
                                               r"classes \((cat|dog)\), and a conditional GAN needs images of every "
                                               r"class; raise data.max_images$"),
    (["search", "{in}/cond-subset.yaml"], r"cond-subset.yaml: data.max_images: its subset of 1 leaves out 1 of "),
    (["search", "{in}/cond-half-loose.yaml"], r"cond-half-loose.yaml: model.conditional: data 'folder' has no class "
                                              r"labels.* \(with model.conditional true\)$"),
    # the expression language
    (["search", "{in}/huge-power.yaml"], r"optim.lr_d.expr: .*9 \*\* 387420489 is too large"),
    (["search", "{in}/invert.yaml"], r"optim.lr_d.expr: .*the operator ~ is not allowed"),
    (["search", "{in}/repeat.yaml"], r"optim.lr_d.expr: .*\* takes numbers, not list and int"),
    # an option the space's sampler does not take
    (["search", "{in}/sampler-option.yaml"], r"sampler-option.yaml: search: sampler_options: RandomSampler has no "
                                             r"option 'n_startup_trials' a space can set; it takes none$"),
    # an override the load's draws did not see: Ray, the study and the stores were made, then every trial failed
    (["search", "{in}/decay-steps.yaml", "--max-steps", "5"],
     r"--max-steps 5: .*decay-steps.yaml: none of 32 random draws .*optim.decay_start: Input should be less than 1"),
    # tracebacks instead of a line
    (["search", "{in}/space.yaml", "--storage", "nosuchdb://x"], r"--storage nosuchdb://x: not a database URL"),
    (["search", "{in}/space.yaml", "--storage", "sqlite:///{tmp}/nodir/o.db"], r"folder .*/nodir does not exist"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:///{tmp}/nodir/m.db"], r"--tracking-uri: .* does not"),
    (["search", "{in}/space.yaml", "--runs-dir", "/proc/gantune-runs"], r"--runs-dir: cannot write /proc/gantune"),
    (["train", "{in}/config.yaml", "--out", "/proc/gantune-run"], r"--out: cannot write /proc/gantune-run"),
    (["search", "{in}/deep.yaml"], r"deep.yaml: invalid YAML \(nested too deeply\)"),
    (["train", "{in}/deep.yaml"], r"deep.yaml: invalid YAML \(nested too deeply\)"),
    # a share of a resource below Ray's precision (a 64-line traceback from inside Tune, the study left behind)
    (["search", "{in}/tiny-cpu.yaml"], r"search.resources.cpu: must be 0 or at least 0.0001 \(Ray's resource "),
    (["search", "{in}/space.yaml", "--gpus-per-trial", "0.00001"], r"--gpus-per-trial: 0.00001 is not a GPU share "
                                                                    r"\(e.g. 0.25\): it must be 0 or at least 0.0001"),
    # PBT starts its whole population: a concurrency (SPACE's 1) was dropped without a word, as --concurrent was
    (["search", "{in}/pbt-concurrency.yaml"], r"pbt-concurrency.yaml: search.concurrency: PBT starts its whole "
                                              r"population at once"),
    # a Ray address where nothing listens: refused at once, not after minutes of retries
    (["search", "{in}/space.yaml", "--ray-address", "127.0.0.1:1"], r"--ray-address 127.0.0.1:1: no Ray cluster"),
    # reading a search creates no storage
    (["export", "nosuch"], r"no search named 'nosuch' in sqlite:///optuna.db"),
    # flags only the seed re-runs read, without --seeds: they were ignored (exit 0)
    (["export", "x", "--concurrent", "3"], r"--concurrent: for the seed re-runs \(--seeds N\), which this export"),
    (["export", "x", "--top-k", "2", "--runs-dir", "r"], r"--top-k, --runs-dir: for the seed re-runs"),
    (["report", "nosuch"], r"no search named 'nosuch' in sqlite:///optuna.db"),
    (["review", "nosuch", "--no-browser"], r"no search named 'nosuch' in sqlite:///optuna.db"),
    (["export", "nosuch", "--storage", "nosuchdb://x"], r"--storage nosuchdb://x: not a database URL"),
    (["generate", "{in}/nosuch.pt", "--out", "x.png"], r"nosuch.pt"),
    (["generate", "{in}/nosuch.pt", "--out", ""], r"--out: empty; name a .png"),  # it wrote into the working folder
    # a file that is not weights: torch's own advice was to load it with weights_only=False (running its code)
    (["generate", "{in}/space.yaml", "--out", "x.png"], r"space.yaml is unreadable \(not a file torch saved\)$"),
    # found by a fuzz of the command line (each a traceback, a hang, a half-written store or a search of failures)
    (["train", "{in}/binary.yaml"], r"binary.yaml: not UTF-8 text"),
    (["search", "{in}/binary.yaml"], r"binary.yaml: not UTF-8 text"),
    (["train", "{in}/" + "a" * 5000 + ".yaml"], r"file name too long \(5\d{3} characters"),
    # found by a review: refused, and the folders made above the long name were left behind
    (["train", "{in}/config.yaml", "--out", "a1/a2/" + "b" * 256], r"file name too long \(262 characters"),
    (["search", "{in}/space.yaml", "--runs-dir", "r1/r2/" + "b" * 256], r"file name too long"),
    (["train", "{in}/empty.yaml"], r"empty.yaml: empty config"),
    (["train", "{in}/config.yaml", "--device", "tpu"], r"--device: 'tpu' is not a device: auto, cpu, cuda or cuda:N"),
    # found by a review: an empty --device trained on the config's device without a word
    (["train", "{in}/config.yaml", "--device", ""], r"--device: '' is not a device: auto, cpu, cuda or cuda:N"),
    (["train", "{in}/tpu.yaml"], r"tpu.yaml: train.device: 'tpu' is not a device"),
    (["train", "{in}/seed.yaml"], r"train.seed: Input should be less than or equal to 4294967295"),
    (["train", "{in}/deep-net.yaml"], r"model.g_depth: Input should be less than or equal to 64"),
    (["train", "{in}/lr-inf.yaml"], r"optim.lr_g: Input should be a finite number"),
    # a bound checked first said "Input should be greater than 0", which NaN is not, nor less
    # the advice named the batch, the widths and the samples, not the latent that took the memory
    (["train", "{in}/z-huge.yaml"], r"out of memory: .*\(lower train.batch_size, model.z_dim, the model widths"),
    # a port nothing listens on: urllib3's whole retry paragraph around "Connection refused"
    (["train", "{in}/config.yaml", "--tracking-uri", "http://127.0.0.1:1"],
     r"--tracking-uri: cannot use MLflow at http://127.0.0.1:1: no MLflow server answers \(\[Errno \d+\] [^()]+\)$"),
    (["train", "{in}/health-nan.yaml"], r"health.max_grad_norm: Input should be a finite number, not nan$"),
    (["train", "{in}/mbd-huge.yaml"], r"model.minibatch_disc: Input should be less than or equal to 4096"),
    (["train", "{in}/config.yaml", "--tracking-uri", "sqlite:///{in}/config.yaml"],
     r"--tracking-uri: cannot use MLflow at .*config.yaml: .*file is not a database"),
    (["search", "{in}/range-inf.yaml"], r"optim.lr_g.float.1: Input should be a finite number"),
    # a folder of one image: every trial failed (exit 1), and the advice was to raise data.max_images, a cap
    (["search", "{in}/one-image.yaml"], r"one-image.yaml: eval.metrics: the metrics \(fid\) compare samples "
                                        r"with the real data, which has one sample here; add images \(data.max_images, "
                                        r"where set, caps them\), or eval.metrics: \[\]$"),
    (["train", "{in}/train-one-image.yaml"], r"which has one sample here; add images \(data.max_images, where set"),
    (["search", "{in}/long-expr.yaml"], r"optim.lr_d.expr: '1\+1\+.*\.\.\.': nested too deeply"),
    (["search", "{in}/off-step.yaml"], r"model.g_width: range \[8, 16\] is not a whole number of steps of 100"),
    (["search", "{in}/cycle.yaml"], r"none of 32 random draws .* the first: optim.lr_\w: circular reference"),
    (["search", "{in}/self-when.yaml"], r"none of 32 random draws .* optim.lr_g: circular reference"),
    (["search", "{in}/div-zero.yaml"], r"none of 32 random draws .* ZeroDivisionError"),
    (["search", "{in}/text-lr.yaml"], r"none of 32 random draws .* optim.lr_d: Input should be a valid number"),
    (["search", "{in}/never-fits.yaml"], r"none of 32 random draws .* model.d_norm: batch"),
    (["search", "{in}/many-cpus.yaml"], r"a trial asks for 100000 CPU but this machine has"),
    (["search", "{in}/twice.yaml"], r"twice.yaml: line \d+: invalid YAML \(duplicate key 'lr_g'\)"),
    (["search", "{in}/space.yaml", "--gpus-per-trial", "nan"], r"--gpus-per-trial: nan is not a GPU share"),
    (["search", "{in}/space.yaml", "--ray-address", "::::"], r"--ray-address ::::: expected auto or the head"),
    (["search", "{in}/space.yaml", "--storage", "sqlite://"], r"--storage sqlite://: an in-memory database"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite://"], r"--tracking-uri: sqlite://: names no database"),
    # an empty or encoded in-memory name was made a path in the working directory: the directory itself, or a
    # file named ':memory:' that a whole search was written to
    (["search", "{in}/space.yaml", "--storage", "sqlite:///"], r"--storage sqlite:///: an in-memory database"),
    (["search", "{in}/space.yaml", "--storage", "sqlite:///%3Amemory%3A"], r"an in-memory database ends"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:///?timeout=5"], r"sqlite:///\?timeout=5: names no "),
    (["export", "x", "--storage", "sqlite:///{in}/space.yaml"], r"cannot open it as an Optuna storage \(file is not"),
    (["report", "x", "--storage", "sqlite:///{in}/space.yaml"], r"cannot open it as an Optuna storage"),
    (["review", "x", "--no-browser", "--storage", "sqlite:///{in}/space.yaml"], r"cannot open it as an Optuna"),
    (["report", "x", "--top", "-5"], r"argument --top: -5 is not between 0 and"),
    # an --out that is no file to write: refused before the page is built (`--out .` was a traceback after it)
    (["report", "x", "--out", "{in}"], r"--out: cannot write \S+ \(it is a directory\)$"),
    (["report", "x", "--out", "."], r"argument --out: '\.' names a folder"),
    (["report", "x", "--out", "/dev/null"], r"--out: cannot write /dev/null \(not a regular file: a device, pipe "
                                              r"or socket\)$"),
    (["ui", "--port", "70000"], r"argument --port: 70000 is not between 1 and 65535"),
    (["ui", "--port", "0"], r"argument --port: 0 is not between 1 and 65535"),  # its pages named port 0
    # Path drops a trailing slash: each wrote a file named d where a folder was meant
    (["init", "grid25", "--out", "d/"], r"argument --out: 'd/' names a folder \(it ends in a slash or a dot\); name"),
    (["init", "grid25", "--out", "d/."], r"argument --out: 'd/.' names a folder"),
    (["init", "grid25", "--out", " "], r"argument --out: ' ' names a blank file name; name a file"),  # it wrote " "
    (["init", "grid25", "--out", "d/ "], r"argument --out: 'd/ ' names a blank file name"),
    (["export", "x", "--out", "d/"], r"argument --out: 'd/' names a folder"),
    # an empty folder: --weights '' copied nothing without a word, --runs-dir '' wrote into the working folder
    (["export", "x", "--weights", ""], r"argument --weights: empty; name a folder \(see --help\)$"),
    (["export", "x", "--seeds", "1", "--runs-dir", ""], r"argument --runs-dir: empty; name a folder \(see --help\)$"),
    (["search", "{in}/space.yaml", "--runs-dir", ""], r"argument --runs-dir: empty; name a folder \(see --help\)$"),
    (["report", "x", "--out", "d/"], r"argument --out: 'd/' names a folder"),
    (["report", "x", "--out", "-"], r"argument --out: '-': this writes a file, not standard output; name a file"),
    (["export", "x", "--out", "-"], r"argument --out: '-': this writes a file, not standard output"),
    (["generate", "{in}/nosuch.pt", "--out", "x.png", "--seed", str(10**24)], r"argument --seed: \d+ is not between"),
    # switches and numbers read as each other (pydantic's lax mode: `steps: true` trained 1 step)
    (["train", "{in}/steps-true.yaml"], r"steps-true.yaml: train.steps: must be a number, not true or false"),
    (["search", "{in}/switch-word.yaml"], r"switch-word.yaml: search.*warm_start: must be true or false"),
    (["search", "{in}/switch-number.yaml"], r"switch-number.yaml: model.minibatch_std: must be true or false"),
    (["search", "{in}/log-word.yaml"], r"optim.lr_g.*log: must be true or false"),
    (["search", "{in}/seed-negative.yaml"], r"search.*seed: Input should be greater than or equal to 0"),
    # keys the search overwrote in every trial without a word
    (["search", "{in}/search-sets.yaml"],
     r"search-sets.yaml: health.objective \(set by search.objective\), train.device \(set by the GPU share: .*\), "
     r"train.steps \(set by search.max_steps\): a search sets these in every trial; remove them from the space$"),
    (["search", "{in}/search-sets-default.yaml"], r"search.defaults: eval.every \(set by search.eval_every\)"),
    (["search", "{in}/objective-twice.yaml"], r"search: objective: coverage given twice"),
    (["search", "{in}/fid-coverage-min.yaml"], r"fid-coverage-min.yaml: search.direction: 'coverage' is better "
     r"higher: minimize would search for the worst \(direction: \[minimize, maximize\], or leave direction out"),
    (["search", "{in}/diversity-no-direction.yaml"], r"search.direction: 'diversity' has no better side gantune "
     r"knows \(the diversity ratio and density are best near the data's 1\): give direction: minimize or maximize$"),
    (["search", "{in}/fid-max.yaml"], r"search.direction: 'fid' is better lower: maximize would search for the "
     r"worst \(direction: minimize,"),
    (["search", "{in}/asha-off-keys.yaml"], r"asha-off-keys.yaml: search.pruning: grace_evals: read by ASHA, which "
     r"asha: false turns off: remove it$"),
    (["search", "{in}/margin-alone.yaml"], r"search.pruning: noise_margin: read with noise_aware: true only: set it, "
     r"or remove noise_margin$"),
    # PBT starts its whole population at once: the flag was dropped without a word
    (["search", "{in}/pbt-two.yaml", "--concurrent", "1"], r"--concurrent: PBT starts its whole population at once "
     r"\(the resources decide how many train together\); leave it out$"),
    (["search", "{in}/quick-fid.yaml"], r"quick-fid.yaml: search.quick_every: the quick checks between evaluations "
     r"measure the cheap metrics \(modes, .*\), and eval.metrics \(fid\) holds none: add one, or set quick_every "
     r"to 0$"),
    (["train", "{in}/train-quick-fid.yaml"], r"train-quick-fid.yaml: eval.quick_every: the quick checks .* holds none"),
    (["train", "{in}/train-coverage-min.yaml"], r"health.mode: the objective 'coverage' is better higher: maximise "
     r"it \(health.mode: max; in a search space, search.direction: maximize\)"),
    (["search", "{in}/pbt-unchosen.yaml"], r"pbt-unchosen.yaml: search.pruning: pbt: read by scheduler: pbt only, "
     r"and this space's scheduler is asha \(the default\): set scheduler: pbt, or remove it$"),
    (["search", "{in}/asha-under-pbt.yaml"], r"search.pruning: grace_evals, reduction_factor: read by scheduler: asha "
     r"only, and this space's scheduler is pbt: remove them$"),
    (["search", "{in}/unread-param.yaml"], r"search.params.ttur: no expression or condition reads it"),
    (["export", "x", "--steps", "0"], r"^gantune export: error: --steps: must be at least 1$"),
    (["export", "x", "--seeds", "-1"], r"^gantune export: error: --seeds: must be at least 0$"),
    # 10**23 listed its seeds until memory ran out, printing nothing
    (["export", "x", "--seeds", "100000000000000000000000"],
     r"^gantune export: error: --seeds: at most 1,000 \(one training run each, per trial re-run\)$"),
    # every trial failed as its reference was built (exit 1, a study and runs left)
    (["search", "{in}/classes-on-points.yaml"], r"eval.metrics: the classes metric needs a classifier extractor"),
    (["search", "{in}/pbt-of-one.yaml"], r"search: pruning.scheduler: pbt needs a population of 2 trials or more"),
    # a flag the command would ignore (each ran and did not do what it said)
    (["train", "{in}/config.yaml", "--no-tracking", "--tracking-uri", "sqlite:///m.db"],
     r"argument --tracking-uri: not allowed with argument --no-tracking"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:///m.db", "--no-tracking"],
     r"argument --no-tracking: not allowed with argument --tracking-uri"),
    (["generate", "{in}/nosuch.pt", "--out", "x.png", "--rows", "3"], r"--rows: only with --interpolate"),
    # a tracking store in a folder no file can be made in: MLflow retried it for about 100 s (the run folder made)
    (["train", "{in}/config.yaml", "--tracking-uri", "sqlite:////proc/gantune-m.db"],
     r"--tracking-uri: cannot write /proc/gantune-m.db \(making a folder in /proc fails"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:////proc/gantune-m.db"],
     r"--tracking-uri: cannot write /proc/gantune-m.db"),
    # one sqlite file for Optuna and MLflow: each migrated its schema into it, then Optuna called it too new
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:///optuna.db"],
     r"--tracking-uri sqlite:///.*/optuna.db: the file of the Optuna storage \(.*optuna.db\); give MLflow a"),
    (["export", "x", "--seeds", "1", "--storage", "sqlite:///{tmp}/s.db", "--tracking-uri", "sqlite:///{tmp}/s.db"],
     r"--tracking-uri sqlite:///.*s.db: the file of the Optuna storage"),
    # --storage at the default tracking store: it blamed --tracking-uri, not given, and named its default
    (["search", "{in}/space.yaml", "--storage", "sqlite:///mlflow.db"],
     r"--storage sqlite:///mlflow.db: the file of MLflow's tracking store \(.*mlflow.db\); give the Optuna study a "
     r"database of its own, e.g. sqlite:///optuna.db"),
    (["generate", "{in}/nosuch.pt", "--interpolate", "4", "--n", "10"], r"--n: not with --interpolate"),
    # a '?' in a file name: SQLAlchemy opened (and the search wrote) the file q, dropping the rest as an option
    (["search", "{in}/space.yaml", "--storage", "sqlite:///q?x/o.db"],
     r"--storage sqlite:///.*q\?x/o.db: '\?x/o.db' reads as the URL's options, not as part of the file name \(sqlite"),
    # an option with '=' that sqlite does not read was dropped with a warning, and the file 'runs' opened
    (["search", "{in}/space.yaml", "--storage", "sqlite:///runs?v=2/o.db"], r"'\?v=2/o.db' reads as the URL's options"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:///m?x.db"], r"--tracking-uri .*m\?x.db: '\?x.db' reads"),
    (["report", "x", "--storage", "sqlite:///q?x/o.db"], r"'\?x/o.db' reads as the URL's options"),
    # an option's value SQLAlchemy cannot read: its traceback (46 lines) when the store opened; a new search left
    # runs/<name>/ claimed, and train trained untracked, warning that the store was "gone"
    (["search", "{in}/space.yaml", "--storage", "sqlite:///x.db?timeout=abc"],
     r"--storage sqlite:///.*x.db\?timeout=abc: an option's value is not one sqlite takes \(could not convert string "
     r"to float: 'abc'\)$"),
    (["report", "x", "--storage", "sqlite:///x.db?check_same_thread=maybe"], r"an option's value is not one sqlite"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:///m.db?timeout=abc"],
     r"--tracking-uri .*m.db\?timeout=abc: an option's value"),
    # an in-memory database behind sqlite's own URI: the search ran and its summary named a study gone with it
    (["search", "{in}/space.yaml", "--storage", "sqlite:///file:mem1?mode=memory&uri=true"],
     r"an in-memory database \(mode=memory, vfs=memdb\) is gone when the connection closes: nothing of the search "
     r"would be kept; name a file$"),
    (["search", "{in}/space.yaml", "--storage", "sqlite:///x.db?uri=true&vfs=memdb"], r"an in-memory database"),
]


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The table's input files in ``tmp/in``; the command runs in ``tmp/work`` with its cache in ``tmp/cache``."""
    from PIL import Image

    folder = tmp_path / "in"
    for sub in ("images", "empty", "broken", "one"):
        (folder / sub).mkdir(parents=True)
    for i in range(2):  # a folder of one image is data no metric can compare with (the "one" folder's case)
        Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(folder / "one" / "0.png")
    (folder / "broken" / "a.png").write_text("not an image")
    (folder / "broken_last").mkdir()
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(folder / "broken_last" / "a.png")
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(folder / "broken_last" / "b.jpg")
    cut = (folder / "broken_last" / "b.jpg").read_bytes()
    (folder / "broken_last" / "b.jpg").write_bytes(cut[:len(cut) // 2])  # truncated: its header opens
    for cls in ("cat", "dog"):
        (folder / "classes" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(folder / "classes" / cls / f"{i}.png")
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage\x80\n")
    for name, content in FILES.items():
        text = content if isinstance(content, str) else yaml.safe_dump(content)
        (folder / name).write_text(text.replace("{in}", str(folder)))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root``: a file with its modification time, a folder with -1 (a check that a folder is
    writable makes and removes a folder in it, which changes its time and nothing else)."""
    return {str(p.relative_to(root)): -1 if p.is_dir() else p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize(("args", "expected"), ROWS, ids=[" ".join(a)[:60] for a, _ in ROWS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, inputs: Path, args: list[str],
                                                         expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{in}", str(inputs)).replace("{tmp}", str(tmp_path)) for a in args]
    before = _tree(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert re.search(expected, lines[0]), lines[0]
    assert lines[0].startswith(f"gantune {argv[0]}: error: ")
    assert _tree(tmp_path) == before  # no runs/, optuna.db, mlflow.db, mlartifacts/, cache or folder beside them


def test_an_address_where_another_server_listens_is_one_line_not_minutes_of_retries(
        tmp_path: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a review: the TCP check passed the dashboard's HTTP port, a server that never speaks, and ``auto``
    where the last cluster started here had died (its address left behind, another program's now): ray.init
    retried its GCS for about 14 minutes. A Ray head's GCS speaks gRPC (HTTP/2); the others are refused at once
    (the silent one after ``CONNECT_TIMEOUT_S``). A real head passes: test_search_on_a_separately_started_cluster."""
    import http.server
    import socket
    import threading
    import time

    from gantune.search import runner

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # the server's stderr is the test's
            pass

    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 1.0)
    web = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Quiet)  # auto reads 127.0.0.1 as the node's own IP
    threading.Thread(target=web.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("0.0.0.0", 0))
    silent.listen()
    drip = socket.socket()  # answers a byte every 0.4 s: each read within the timeout, the whole frame not
    drip.bind(("0.0.0.0", 0))
    drip.listen()

    def dripping() -> None:
        with contextlib.suppress(OSError):
            conn, _ = drip.accept()
            for byte in bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]):
                time.sleep(0.4)
                conn.sendall(bytes([byte]))
            conn.close()

    threading.Thread(target=dripping, daemon=True).start()
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    try:
        http_port, quiet_port = web.server_address[1], silent.getsockname()[1]
        for address in (f"127.0.0.1:{http_port}", f"127.0.0.1:{quiet_port}", "auto",
                        f"127.0.0.1:{drip.getsockname()[1]}"):
            monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{http_port}")  # what auto finds first, as ray.init does
            assert main(["search", str(inputs / "space.yaml"), "--ray-address", address]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "not a Ray head's GCS (it does not speak gRPC" in err, err
        assert _tree(tmp_path) == before
    finally:
        web.shutdown()
        silent.close()
        drip.close()


def test_a_databricks_uri_without_credentials_is_one_line(inputs: Path) -> None:
    """Found by a probe: MLflow's warning about the Databricks SDK came first, a second line of stderr."""
    done = subprocess.run([sys.executable, "-m", "gantune.cli", "train", str(inputs / "config.yaml"), "--out",
                           str(inputs / "o")], capture_output=True, text=True, timeout=300, cwd=inputs,
                          env={**os.environ, "MLFLOW_TRACKING_URI": "databricks"})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("gantune train: error: --tracking-uri: cannot use MLflow at databricks")


@pytest.mark.parametrize("where", ["TMPDIR a file", "RAY_TMPDIR a file", "HOME a file",
                                   "TMPDIR too long for a socket"])
def test_a_ray_that_cannot_start_is_one_line_and_leaves_no_search(inputs: Path, tmp_path: Path, where: str) -> None:
    """Found by a probe: $TMPDIR (or $RAY_TMPDIR, or $HOME) a file, or a $TMPDIR whose path leaves Ray's Unix
    sockets over 107 bytes, ended the search in Ray's traceback, exit 1. With $HOME a file matplotlib's two-line
    warning of a temporary cache came first."""
    (tmp_path / "file").touch()
    deep = tmp_path / ("x" * max(1, 120 - len(str(tmp_path))))  # Ray's socket paths in it pass 107 bytes
    deep.mkdir()
    var, value = {"TMPDIR a file": ("TMPDIR", tmp_path / "file"),
                  "RAY_TMPDIR a file": ("RAY_TMPDIR", tmp_path / "file"),
                  "HOME a file": ("HOME", tmp_path / "file"),
                  "TMPDIR too long for a socket": ("TMPDIR", deep)}[where]
    # matplotlib's cache goes where $HOME says only without these
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_TMPDIR", "MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    work = tmp_path / "here"
    work.mkdir()
    done = subprocess.run([sys.executable, "-m", "gantune.cli", "search", str(inputs / "space.yaml"), "--no-tracking"],
                          capture_output=True, text=True, timeout=300, cwd=work, env={**env, var: str(value)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert done.stderr.startswith("gantune search: error: cannot start Ray on this machine: "), done.stderr
    assert "$TMPDIR" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in work.iterdir()) == []  # no study, no runs folder


def test_a_search_under_an_address_space_limit_runs(inputs: Path, tmp_path: Path) -> None:
    """Found by a probe: under ``ulimit -v 8000000`` Ray sized its object store at 30% of the machine's memory,
    which its workers could not map: they died at start and the search waited for ever (killed at 300 s)."""
    work = tmp_path / "here"
    work.mkdir()
    limit = "ulimit -v 8000000 && exec \"$0\" -m gantune.cli search \"$1\" --no-tracking"
    done = subprocess.run(["bash", "-c", limit, sys.executable, str(inputs / "space.yaml")], capture_output=True,
                          text=True, timeout=240, cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2/2 done" in done.stderr


def test_the_object_store_is_capped_only_under_a_limit_too_small_for_rays_own_size() -> None:
    """Found by a review: any finite ``ulimit -v`` set the store to an eighth of it, so a limit past the machine's
    memory gave a store Ray refused ("memory available for tasks and actors (-9.85 GB)")."""
    from gantune.search.runner import _object_store

    gib = 2**30
    assert _object_store(None, 23 * gib) is None  # no limit: Ray's own size
    assert _object_store(8 * gib, 23 * gib) == gib  # Ray's 30% (6.9 GiB) would not fit: an eighth of the limit
    assert _object_store(256 * gib, 23 * gib) is None  # an eighth (32 GiB) would pass the machine's memory
    assert _object_store(400 * 2**20, 23 * gib) == 75 * 2**20  # never below Ray's minimum


def _stores(folder: Path) -> None:
    """``study.db`` holding an Optuna study, ``mlflow.db`` MLflow's store and ``empty.db`` nothing (0 bytes)."""
    import optuna
    from mlflow import MlflowClient

    from gantune.sampling.settings import SearchSettings

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{folder / 'study.db'}")
    study.set_user_attr("settings", SearchSettings().model_dump())  # what every gantune search records
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").create_experiment("x")
    (folder / "empty.db").touch()


@pytest.mark.parametrize(("args", "expected"), [
    # MLflow migrated its tables into the study's file, then refused it (the study then read as too new for Optuna)
    (["export", "s", "--storage", "sqlite:///{in}/study.db", "--tracking-uri", "sqlite:///{in}/other.db",
      "--seeds", "1"], None),
    (["export", "s", "--storage", "sqlite:///{in}/other.db", "--tracking-uri", "sqlite:///{in}/study.db",
      "--seeds", "1"], r"--tracking-uri sqlite:///.*study.db: .*study.db is an Optuna study database; name a file"),
    (["search", "{in}/space.yaml", "--tracking-uri", "sqlite:///{in}/study.db"],
     r"--tracking-uri sqlite:///.*study.db: .*study.db is an Optuna study database"),
    # and Optuna did the same to MLflow's store
    (["search", "{in}/space.yaml", "--storage", "sqlite:///{in}/mlflow.db"],
     r"--storage sqlite:///.*mlflow.db: .*mlflow.db is MLflow's tracking store; name a file of its own"),
    (["report", "x", "--storage", "sqlite:///{in}/mlflow.db"], r"mlflow.db is MLflow's tracking store"),
    # a 0-byte file read as a study database got Optuna's schema while the command refused it
    (["report", "x", "--storage", "sqlite:///{in}/empty.db"],
     r"no search named 'x' in .*empty.db \(.*empty.db is empty\)"),
    (["export", "x", "--storage", "sqlite:///{in}/empty.db"], r"empty.db is empty"),
], ids=["study-kept", "tracking-at-study", "search-tracking-at-study", "storage-at-mlflow", "report-at-mlflow",
        "report-empty", "export-empty"])
def test_a_store_of_the_other_kind_or_an_empty_file_is_refused_untouched(
        tmp_path: Path, inputs: Path, args: list[str], expected: str | None,
        capsys: pytest.CaptureFixture[str]) -> None:
    _stores(inputs)
    argv = [a.replace("{in}", str(inputs)) for a in args]
    before = _tree(tmp_path)
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "Traceback" not in line, line
    if expected is None:  # the study's own file, read as the study (it has no trial to export), unchanged
        assert line == "gantune export: error: search 's' has no completed trial to export", line
    else:
        assert re.search(expected, line), line
    assert _tree(tmp_path) == before


# -- data checks of a space whose data is searched ------------------------------------------------------------

def test_data_checks_cover_what_a_space_can_sample_and_skip_what_it_cannot_know(inputs: Path) -> None:
    import shutil

    good, missing = str(inputs / "images"), str(inputs / "nope")
    other = shutil.copytree(inputs / "images", inputs / "images2")  # a choice is listed once
    base = {**SPACE, "model": {"arch": "dcgan"}}

    def space(data: dict) -> Path:
        path = inputs / "searched.yaml"
        path.write_text(yaml.safe_dump({**base, "data": {**data, "resolution": 8}}))
        return path

    # (the folders' FID reads Inception-v3, whose weights are not here: weights=False)
    load_space(space({"name": "folder", "path": {"categorical": [good, str(other)]}}), weights=False)
    with pytest.raises(DataError, match=f"{missing} does not exist"):  # the choice every trial drawing it would fail
        load_space(space({"name": "folder", "path": {"categorical": [good, missing]}}))
    with pytest.raises(DataError, match=f"{missing} does not exist"):  # the value a `when` may switch on
        load_space(space({"name": {"categorical": ["folder", "digits"]},
                          "path": {"value": missing, "when": "model.z_dim > 1"}}))
    # what search.defaults gives a key the space leaves unset, or a `when` switches off, is checked too
    def defaulted(data: dict) -> Path:
        path = inputs / "defaulted.yaml"
        search = {**SPACE["search"], "defaults": {"data.path": missing}}
        path.write_text(yaml.safe_dump({**base, "search": search, "data": {**data, "resolution": 8}}))
        return path

    with pytest.raises(DataError, match=f"{missing} does not exist"):
        load_space(defaulted({"name": "folder"}))
    with pytest.raises(DataError, match=f"{missing} does not exist"):
        load_space(defaulted({"name": "folder", "path": {"value": good, "when": "model.z_dim > 4"}}))
    load_space(defaulted({"name": "folder", "path": {"categorical": [good, str(other)]}}), weights=False)  # its own
    # a switched value beside the default its off trials take: stacked digits are 3-channel, the default says 1
    space_file = inputs / "stacked.yaml"
    space_file.write_text(yaml.safe_dump({**SPACE, "search": {**SPACE["search"], "defaults": {"data.channels": 1}},
                                          "data": {"name": "stacked_digits", "channels": {
                                              "value": 3, "when": "model.z_dim > 4"}}}))
    with pytest.raises(DataError, match=r"data\.channels"):
        load_space(space_file)
    # a path computed by an expression is not known before a trial: nothing to check at load
    load_space(space({"name": "folder", "path": {"expr": f"'{missing}' if model.z_dim > 1 else '{good}'"}}),
               weights=False)


def test_trains_objective_left_to_the_schemas_fid_that_is_not_measured_is_a_warning(
        inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that names a metric set without fid and leaves health.objective out trains (with a warning that
    nothing is followed); one that names an objective its evaluations do not report is refused (above)."""
    config = _with(CONFIG, eval={**CONFIG["eval"], "metrics": ["diversity"]})
    (inputs / "left-out.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(inputs / "left-out.yaml"), "--no-tracking"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "health.objective: 'fid' is not reported by this config's evaluations (they " \
        "report: diversity): no best weights are kept and the rise check never fires; set health.objective" in err


def test_a_search_named_after_its_file_needs_a_usable_file_name(inputs: Path) -> None:
    odd = inputs / "my space.yaml"
    odd.write_text(yaml.safe_dump(_with(SPACE, name=None)))
    with pytest.raises(ConfigError, match="'my space' is not a usable search name"):
        load_space(odd)
    assert load_space(odd, name="my-space").name == "my-space"


def test_ui_on_a_port_in_use_is_refused_before_it_prints_a_page(inputs: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow's server printed "Address already in use" 10 s later and gantune ui exited 0, after printing the
    pages as if it served them."""
    import socket

    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(store).create_experiment("x")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = _tree(tmp_path)
        assert main(["ui", "--tracking-uri", store, "--port", str(port)]) == 2
        out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"gantune ui: error: --port: {port} is in use on 127.0.0.1: stop what serves it or pick " \
                          "another port"
    assert _tree(tmp_path) == before


def test_a_refusal_found_as_the_reference_is_built_is_not_preceded_by_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``eval.metrics: [is]`` on 2-D points was refused once the evaluation's reference was built (a cache written);
    the load's warning (health.objective fid is not reported) came first, and the refusal was two lines. It is
    refused at load now, and warnings wait until the run is under way."""
    import yaml

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "is.yaml"
    path.write_text(yaml.safe_dump(_with(CONFIG, eval={**CONFIG["eval"], "metrics": ["is"]})))
    assert main(["train", str(path), "--no-tracking", "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "the is metric needs class posteriors, which the coords extractor" in lines[0], lines
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    path.write_text(yaml.safe_dump(_with(CONFIG, eval={**CONFIG["eval"], "metrics": ["modes"]})))
    assert main(["train", str(path), "--no-tracking", "--out", str(tmp_path / "run")]) == 0
    assert "warning: " in capsys.readouterr().err  # said, once the run was under way


def test_a_deleted_mlflow_experiment_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An experiment deleted in the MLflow UI takes no runs: ``train`` ended in a traceback at its first report,
    its folder half written (then neither a new run nor ``--resume`` would take it), and a search went on
    untracked after a warning. Both say so in one line, before anything is written."""
    import yaml
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    for name in ("ok", "space"):
        client.delete_experiment(client.create_experiment(name))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**SPACE, "name": "space"}))
    before = _tree(tmp_path)
    for argv in (["train", "c.yaml", "--out", "run"], ["search", "space.yaml"]):
        assert main([*argv, "--tracking-uri", uri]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and re.search(r"MLflow experiment '(ok|space)' in sqlite:.* is deleted: restore it "
                                             r"\(MLFLOW_TRACKING_URI=.* mlflow experiments restore --experiment-id "
                                             r"\d+\)", lines[0]), lines
        assert _tree(tmp_path) == before


def test_a_config_from_a_pipe_is_checked_as_a_file_is(tmp_path: Path) -> None:
    """``gantune train`` read its file twice (the config, then the keys the file itself sets): from a pipe the
    second read was empty, and a ``health.objective`` its evaluations do not report, refused from a file, became
    a warning; the run trained and exited 0 without best weights."""
    text = yaml.safe_dump(_with(CONFIG, eval={**CONFIG["eval"], "metrics": ["diversity"]},
                                health={"objective": "nonsense"}))
    proc = subprocess.run([sys.executable, "-m", "gantune.cli", "train", "/dev/stdin", "--no-tracking", "--out",
                           str(tmp_path / "run")], input=text, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("gantune train: error: /dev/stdin: health.objective: 'nonsense' is not "
                                          "reported"), proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["report", "nosuch"], ["export", "nosuch"], ["review", "nosuch", "--no-browser"],
                                  ["search", "{in}/space.yaml", "--resume", "--no-tracking"]])
@pytest.mark.parametrize("content", ["foreign", "empty"])
def test_a_refusal_leaves_a_sqlite_file_optuna_did_not_make_as_it_was(inputs: Path, args: list[str], content: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Looking for a search in another program's sqlite file (or, for a search, an empty one) opened it as an
    Optuna storage, which wrote Optuna's 14 tables into it (8 KB -> 116 KB) before the refusal's one line."""
    import sqlite3

    db = Path("other.db")
    if content == "foreign":
        with contextlib.closing(sqlite3.connect(db)) as con:
            con.execute("CREATE TABLE notes (x TEXT)")
            con.commit()
    else:
        db.touch()
    before = db.read_bytes()
    argv = [a.replace("{in}", str(inputs)) for a in args]
    assert main([*argv, "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ("no search named" in err), err
    assert db.read_bytes() == before


@pytest.mark.parametrize("where", ["search", "train"])
def test_a_file_where_gantune_makes_a_folder_is_one_line(inputs: Path, where: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``runs/<name>`` a file (a search) or a run's ``samples`` a file (a train): FileExistsError tracebacks."""
    if where == "search":
        Path("runs").mkdir()
        Path("runs/ok").write_text("mine")
        argv = ["search", str(inputs / "space.yaml"), "--no-tracking", "--trials", "1", "--max-steps", "20"]
        blocked = Path("runs/ok").resolve()
    else:
        Path("d").mkdir()
        Path("d/samples").write_text("mine")
        argv = ["train", "grid25", "--no-tracking", "--steps", "2", "--out", "d"]
        blocked = Path("d/samples")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"gantune {where}: error: {blocked}: File exists (a file where a folder goes, or a folder where a "
                   "file goes: move it, or choose another path)"), err
    assert blocked.read_text() == "mine"
    if where == "train":
        assert sorted(p.name for p in Path("d").iterdir()) == ["samples"]
