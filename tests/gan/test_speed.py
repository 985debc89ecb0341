"""Speed options: the CUDA-only ones leave CPU results bit for bit; compile keeps weights interchangeable."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from conftest import tiny_images

from gantune.gan import GANTrainer
from gantune.gan.speed import CUDA_ONLY, Speed
from gantune.trial import train

CPU = torch.device("cpu")
FAST = {"tf32": True, "cudnn_benchmark": True, "channels_last": True, "precision": "bf16"}




def _trained(train_options: dict[str, object], steps: int = 6, **sections: dict[str, object]) -> GANTrainer:
    cfg = tiny_images(train={"steps": steps, **train_options}, optim={"ema": 0.9}, **sections)
    torch.manual_seed(0)
    real = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    trainer = GANTrainer(cfg, CPU, lambda n: real[torch.randint(len(real), (n,))])
    for _ in range(steps):
        trainer.step(measure=True)
    return trainer


def test_cuda_only_options_leave_cpu_results_unchanged() -> None:
    from gantune.config import TrainConfig

    # the keys a search on the CPU is warned of searching: those the config documents as CUDA only, all of them here
    fields = TrainConfig.__pydantic_fields__.items()  # type: ignore[attr-defined]
    documented = {k for k, f in fields if (f.description or "").startswith("CUDA only")}
    assert set(FAST) == set(CUDA_ONLY) == documented
    plain, fast = _trained({}), _trained(FAST)
    assert fast.speed == Speed(compile=False)  # nothing resolved on the CPU
    for (k, a), b in zip(plain.G.state_dict().items(), fast.G.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert plain.read_stats() == fast.read_stats()


def test_options_resolve_on_a_cuda_device() -> None:
    from gantune.config import TrainConfig

    speed = Speed.resolve(TrainConfig(**FAST), torch.device("cuda"))  # type: ignore[arg-type]
    assert speed == Speed(tf32=True, cudnn_benchmark=True, channels_last=True, bf16=True, compile=False)
    with pytest.warns(UserWarning, match="CUDA is not available") if not torch.cuda.is_available() else nullcontext():
        assert isinstance(speed.autocast(), torch.autocast)
    assert Speed.resolve(TrainConfig(tf32=False, cudnn_benchmark=False), torch.device("cuda")) == Speed()
    # compiled, the layout is inductor's: NHWC nets compiled failed their first generator step on an H200
    both = Speed.resolve(TrainConfig(**FAST, compile=True), torch.device("cuda"))  # type: ignore[arg-type]
    assert both == Speed(tf32=True, cudnn_benchmark=True, channels_last=False, bf16=True, compile=True)


def test_compiled_nets_train_and_keep_their_weight_names() -> None:
    """``train.compile`` on the CPU (inductor): the same weight names, so exports and resumes still load."""
    plain, compiled = _trained({}, steps=3), _trained({"compile": True}, steps=3)
    assert compiled.speed.compile
    assert list(compiled.G.state_dict()) == list(plain.G.state_dict())
    assert list(compiled.D.state_dict()) == list(plain.D.state_dict())
    stats = compiled.read_stats()
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert stats["loss_d"] == pytest.approx(plain.read_stats()["loss_d"], rel=1e-3)


@pytest.mark.parametrize("penalties", [{"name": "wgan-gp"}, {"name": "nonsaturating", "r1_weight": 1.0}])
def test_compiled_nets_train_with_gradient_penalties(penalties: dict[str, object]) -> None:
    """WGAN-GP and R1 differentiate D's input gradient (a double backward), which a compiled graph does not
    support: the penalties run through the eager D, which shares its weights with the compiled one."""
    plain, compiled = _trained({}, steps=3, loss=penalties), _trained({"compile": True}, steps=3, loss=penalties)
    stats = compiled.read_stats()
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert stats["loss_d"] == pytest.approx(plain.read_stats()["loss_d"], rel=1e-3)  # the penalties are in it
    # the eager D trained as the compiled one did. Not every element: Adam's first steps move each weight by about
    # lr * sign(gradient), so a gradient within rounding of 0 (compiled kernels round differently on other CPUs)
    # may move one weight the other way; a D trained otherwise differs almost everywhere
    close = [torch.isclose(a, b, atol=1e-5).flatten()
             for a, b in zip(plain.D.state_dict().values(), compiled.D.state_dict().values(), strict=True)]
    assert torch.cat(close).float().mean() > 0.98  # another step's D: under 1% of its weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_option_on_cuda_trains() -> None:
    cfg = tiny_images(train={"steps": 20, "device": "cuda", **FAST},
                      eval={"every": 20, "n_samples": 200, "metrics": ["default"]})
    result = train(cfg)
    assert result.status == "completed" and result.last_eval["fid"] == result.last_eval["fid"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_option_with_compile_on_cuda_trains() -> None:
    """What benchmarks/speed_options.py's "all on" row trains: on an H200 it failed in inductor's stride check of
    the convolution backward while NHWC nets were compiled."""
    cfg = tiny_images(train={"steps": 20, "device": "cuda", **FAST, "compile": True},
                      eval={"every": 20, "n_samples": 200, "metrics": ["default"]})
    result = train(cfg)
    assert result.status == "completed" and result.last_eval["fid"] == result.last_eval["fid"]


def test_tf32_off_switches_cudnn_tf32_off_too() -> None:
    """PyTorch enables cuDNN's TF32 by default: ``tf32: false`` on CUDA must turn it off, not leave it."""
    from gantune.config import TrainConfig

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    cuda = torch.device("cuda")  # the flags are plain settings: they can be set and read without a GPU
    try:
        torch.backends.cudnn.allow_tf32 = True
        Speed.resolve(TrainConfig(tf32=False, cudnn_benchmark=False), cuda).set_backends(cuda)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.benchmark
        Speed.resolve(TrainConfig(), CPU).set_backends(CPU)  # nothing is set off CUDA
        assert not torch.backends.cudnn.allow_tf32
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def test_a_compiled_progressive_net_is_compiled_at_its_last_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stage of a growing net (resolution or fade) needs its own graphs, two a stage (D with and without
    gradients to its input or weights, G in the critic steps and the last): past the compiler's limit of 8 it
    ran the net eagerly without a word, and a net grown 4 -> 16 px trained its last, longest stage uncompiled. The
    eager backend (no code generation) keeps this cheap; which graphs are made is the compiler's, as inductor's."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compile_(net, backend="eager"))
    real = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for width in (8, 12):  # one trial after another in one process, as a Ray worker runs them: the limit counted both
        cfg = tiny_images(data={"resolution": 16}, train={"steps": 12, "compile": True}, optim={"n_critic": 2},
                          model={"progressive": {"start": 4, "fade_steps": 2, "stage_steps": 2}, "g_width": width})
        trainer = GANTrainer(cfg, CPU, lambda n: real[torch.randint(len(real), (n,))])
        made: dict[tuple[int, bool], int] = {}
        for step in range(1, 13):
            trainer.schedule(step)
            before = counters["stats"]["unique_graphs"]
            trainer.step()
            stage = (trainer.D.level, trainer.D.fading)
            made[stage] = made.get(stage, 0) + counters["stats"]["unique_graphs"] - before
        assert list(made) == [(0, False), (1, True), (1, False), (2, True), (2, False)]
        assert made[(2, False)] >= 4, (width, made)  # G's two graphs and D's two, at the full resolution too
