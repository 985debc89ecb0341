"""Speed options of the training step: what ``train.tf32 / cudnn_benchmark / channels_last / precision /
compile`` do. Each is measured off and on by ``benchmarks/speed_options.py``.

TF32, cuDNN autotuning, channels_last and bf16 autocast only exist to feed a GPU's tensor cores, so they act on
CUDA devices only and a CPU run gives the same numbers with or without them. ``compile`` is an explicit
opt-in and acts on every device (inductor's kernels round differently from eager ones).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from gantune.config import TrainConfig

#: the ``train`` keys that act on CUDA devices only (``Speed.resolve``): a search on the CPU that samples one
#: trains its draws alike
CUDA_ONLY = ("tf32", "cudnn_benchmark", "channels_last", "precision")


@dataclass(frozen=True)
class Speed:
    """The options resolved for one device."""

    tf32: bool = False
    cudnn_benchmark: bool = False
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    @classmethod
    def resolve(cls, tc: TrainConfig, device: torch.device) -> Speed:
        """With ``compile``, channels_last is the compiler's to choose (inductor lays out convolutions itself):
        NHWC nets compiled failed their first generator step on an H200 (torch 2.11, inductor's
        convolution-backward stride check), while each option alone trained."""
        cuda = device.type == "cuda"
        return cls(tf32=cuda and tc.tf32, cudnn_benchmark=cuda and tc.cudnn_benchmark,
                   channels_last=cuda and tc.channels_last and not tc.compile, bf16=cuda and tc.precision == "bf16",
                   compile=tc.compile)

    def set_backends(self, device: torch.device) -> None:
        """Process-wide CUDA flags (a trial owns its process), each set either way: ``tf32: false`` must switch off
        cuDNN's TF32, which PyTorch enables by default. Nothing to set off CUDA."""
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
            torch.backends.cudnn.benchmark = self.cudnn_benchmark

    def layout(self, net: nn.Module, images: bool) -> nn.Module:
        """``net`` in the chosen memory format (NHWC for image nets with ``channels_last``)."""
        if self.channels_last and images:
            return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return net

    def compiled(self, *nets: nn.Module, stages: int = 1) -> list[nn.Module]:
        """Each net's compiled twin with ``compile`` (the nets themselves without): it shares the net's parameters
        and buffers, so training through it trains the net, whose state_dict keys stay the same. The nets stay
        eager: a penalty's gradient (WGAN-GP, R1) needs a double backward, which a compiled graph does not support.

        ``stages``: the shapes the nets take (a progressive net's resolutions and fades). Each needs graphs of its
        own, two a stage (with and without gradients to its input or weights: D in its own step and in G's, G in
        the critic steps and the last; a third kept to spare), and the compiler keeps at most ``recompile_limit``
        (8) per function before it runs the net eagerly, quietly: a net grown from 8 to 32 px trained its longest,
        last stage uncompiled. The limit counts every net of the process (a Ray worker trains trial after trial):
        the compiler starts afresh for each trainer, or the next trial's nets ran eagerly from their start."""
        if not self.compile:
            return list(nets)
        torch._dynamo.reset()
        _allow_recompiles(3 * stages)
        return [torch.compile(net) for net in nets]  # type: ignore[misc]

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """bf16 autocast of a forward pass, or nothing."""
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _allow_recompiles(graphs: int) -> None:
    """Raise the compiler's per-function graph limit to ``graphs`` (never lower it): ``recompile_limit`` since
    torch 2.7, ``cache_size_limit`` before."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(int(getattr(config, name)), graphs))
