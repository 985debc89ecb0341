"""Where trials run: the GPU share of ``resources.gpu: auto``, the device a share means, the memory cap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from gantune.config import DataConfig
from gantune.devices import (
    EXTRACTION_SHARE,
    auto_gpu_share,
    chunk_size,
    extraction_chunk,
    memory_fraction,
    trial_device,
)
from gantune.errors import ConfigError
from gantune.sampling.space import load_space
from gantune.search import SearchOptions, run_search


def test_auto_share_by_model_size() -> None:
    assert auto_gpu_share(DataConfig(name="grid25"), gpus=0) == 0.0  # no GPU: CPU trials
    assert auto_gpu_share(DataConfig(name="grid25"), gpus=1) == 1 / 8
    assert auto_gpu_share(DataConfig(name="digits", resolution=16), gpus=1) == 1 / 8
    assert auto_gpu_share(DataConfig(name="digits", resolution=32), gpus=2) == 1 / 4
    assert auto_gpu_share(DataConfig(name="digits", resolution=64), gpus=1) == 1 / 2
    assert auto_gpu_share(None, gpus=1) == 1 / 8  # data sampled by the space: the smallest class


def test_the_share_decides_device_and_memory_cap() -> None:
    assert trial_device(0.0) == "cpu" and memory_fraction(0.0) is None
    assert trial_device(0.25) == "cuda" and memory_fraction(0.25) == 0.25
    assert trial_device(1.0) == "cuda" and memory_fraction(1.0) is None


def test_extraction_chunks_fit_the_trials_memory_share() -> None:
    from gantune.metrics.features import INCEPTION_BYTES

    h100 = 80 * 2**30
    # an eighth of an H100, a quarter of that for one chunk, 16 MiB per Inception image
    assert chunk_size(h100 / 8 * EXTRACTION_SHARE, INCEPTION_BYTES, cap=500) == 160
    assert chunk_size(h100 * EXTRACTION_SHARE, INCEPTION_BYTES, cap=500) == 500  # a whole GPU: the cap
    assert chunk_size(1e6, INCEPTION_BYTES, cap=500) == 1  # never zero
    assert extraction_chunk(torch.device("cpu"), INCEPTION_BYTES) == 500


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_extraction_chunk_reads_the_memory_fraction() -> None:
    from gantune.metrics.features import INCEPTION_BYTES

    dev = torch.device("cuda", 0)
    total = torch.cuda.get_device_properties(dev).total_memory
    torch.cuda.set_per_process_memory_fraction(0.125, dev)
    try:
        assert extraction_chunk(dev, INCEPTION_BYTES) == chunk_size(total * 0.125 * EXTRACTION_SHARE,
                                                                    INCEPTION_BYTES, 500)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)


@pytest.mark.parametrize(("gpu", "needle"), [(-1, "must be a number of 0 or more"), ("lots", "search.resources.gpu")])
def test_bad_gpu_share_is_rejected(tmp_path: Path, gpu: object, needle: str) -> None:
    (tmp_path / "s.yaml").write_text(f"search: {{resources: {{gpu: {gpu}}}}}\ndata: {{name: grid25}}\n")
    with pytest.raises(ConfigError, match=needle):
        load_space(tmp_path / "s.yaml")


def test_the_gpu_share_places_a_trial_and_a_space_cannot_say_otherwise(tmp_path: Path, ray_session: object,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial's device is its GPU share's: ``gpu: auto`` on a machine without a GPU gives none, so the trial
    runs on the CPU. A space's ``train.device`` would be overwritten by that, so it is refused at load (it was
    ignored without a word: ``cuda`` ran on the CPU, ``cpu`` on a GPU machine took a GPU share)."""
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "cuda.yaml"
    text = """
name: cuda
search: {trials: 1, max_steps: 20, eval_every: 10, sampler: random}
data: {name: grid25}
model: {z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}
train: {batch_size: 32, log_every: 10, device: cuda}
eval: {n_samples: 200}
"""
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"train.device \(set by the GPU share: search.resources.gpu\)"):
        load_space(path)
    path.write_text(text.replace(", device: cuda", ""))
    assert load_space(path).settings.resources.gpu == "auto"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = run_search(load_space(path), SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"),
                                                         quiet=True))
    assert summary["counts"]["completed"] == 1, optuna.load_study(study_name="cuda", storage=storage).trials


def test_auto_share_of_a_space_sampling_the_data_is_its_largest_trials(tmp_path: Path) -> None:
    """A space sampling ``data.resolution: [16, 64]`` took the smallest class's 1/8 of a GPU for every trial: eight
    64-px trials shared a GPU sized for two. The share is now the largest its data's combinations need."""
    from gantune.search.runner import trial_resources

    path = tmp_path / "s.yaml"
    path.write_text("data: {name: digits, resolution: {categorical: [16, 64]}}\nmodel: {arch: dcgan}\n"
                    "eval: {metrics: [fid]}\n")
    space = load_space(path)
    have = {"CPU": 2.0, "GPU": 1.0}
    assert trial_resources(space, space.settings.resources, [have], "this machine")["gpu"] == 1 / 2
    path.write_text("data: {name: digits, resolution: 16}\nmodel: {arch: dcgan}\neval: {metrics: [fid]}\n")
    space = load_space(path)
    assert trial_resources(space, space.settings.resources, [have], "this machine")["gpu"] == 1 / 8
    # an expression in eval leaves the combinations unknown: the data's own values still decide the share
    path.write_text("data: {name: digits, resolution: 64}\nmodel: {arch: dcgan}\n"
                    "eval: {metrics: [fid], n_samples: {expr: \"1000 + 0\"}}\n")
    space = load_space(path)
    assert space.sections is None
    assert trial_resources(space, space.settings.resources, [have], "this machine")["gpu"] == 1 / 2


def test_the_memory_share_is_known_on_a_torch_that_cannot_be_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by an audit: ``torch.cuda.get_per_process_memory_fraction`` is newer than torch 2.3, the oldest
    gantune takes; there the share ``cap_memory`` set is used. A whole GPU sets no cap."""
    from gantune import devices

    set_to: list[float] = []
    monkeypatch.delattr(torch.cuda, "get_per_process_memory_fraction", raising=False)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_to.append)  # no CUDA needed here
    monkeypatch.setattr(devices, "_capped", 1.0)
    dev = torch.device("cuda", 0)
    devices.cap_memory(1.0)
    assert set_to == [] and devices.memory_share(dev) == 1.0
    devices.cap_memory(0.25)
    assert set_to == [0.25] and devices.memory_share(dev) == 0.25


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_the_local_ray_takes_the_cpus_the_process_may_run_on() -> None:
    """``taskset -c 0 gantune search`` (or a container's CPU set) started a local Ray with every CPU of the machine:
    trials beyond the CPUs it could use ran at once and shared them."""
    code = ("import os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from gantune.search.runner import local_resources\nprint(local_resources()['CPU'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["1.0"], done.stderr[-2000:]


def test_a_trial_must_fit_on_one_node_of_a_cluster(tmp_path: Path) -> None:
    """A trial runs on one node: the check compared its ask with the cluster's totals, so 4 CPUs on two 2-CPU
    nodes (or 1 CPU and 1 GPU on a CPU node and a GPU node without a free CPU) passed, and the search waited
    forever, Ray's own warning silenced. Each node is asked; a trial that fits one passes."""
    from gantune.errors import GantuneError
    from gantune.search.runner import trial_resources

    path = tmp_path / "s.yaml"
    path.write_text("data: {name: grid25}\nsearch: {resources: {cpu: 4, gpu: 0}}\n")
    space = load_space(path)
    two = [{"CPU": 2.0, "GPU": 0.0}, {"CPU": 2.0, "GPU": 0.0}]
    with pytest.raises(GantuneError, match=r"asks for 4 CPU but no node of the Ray cluster at x has that \(its "
                                           r"nodes: 2 CPU and 0 GPU; 2 CPU and 0 GPU\)"):
        trial_resources(space, space.settings.resources, two, "the Ray cluster at x")
    assert trial_resources(space, space.settings.resources, [*two, {"CPU": 8.0}], "x") == {"cpu": 4, "gpu": 0}
    path.write_text("data: {name: grid25}\nsearch: {resources: {cpu: 2, gpu: 1}}\n")
    space = load_space(path)
    apart = [{"CPU": 2.0, "GPU": 0.0}, {"CPU": 0.0, "GPU": 1.0}]  # each on some node, never both on one
    with pytest.raises(GantuneError, match=r"asks for 2 CPU and 1 GPU but no node of x has that"):
        trial_resources(space, space.settings.resources, apart, "x")
    with pytest.raises(GantuneError, match=r"asks for 1 GPU but this machine has 2 CPU and 0 GPU: no trial"):
        trial_resources(space, space.settings.resources, [{"CPU": 2.0, "GPU": 0.0}], "this machine")
