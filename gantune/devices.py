"""Where a search's trials run: the GPU share each gets, its device, and the memory it may take.

Ray accounts GPUs only for what a trial asks for: a trial that asks for none but picks ``cuda:0`` anyway
would share the device unaccounted, and further GPUs would sit idle. So in a search the share decides the
device: no share, CPU; a share, the GPU Ray assigned (``cuda``, made visible as device 0), with a per-process
memory cap equal to the share so that co-tenant trials cannot starve each other.
"""

from __future__ import annotations

import torch

from gantune.config import DataConfig
from gantune.data import is_points

#: trials per GPU for ``resources.gpu: auto``, by model size class (largest image side; 0 = 2-D points):
#: small MLPs and DCGANs up to 32 px leave most of an accelerator idle on their own
TRIALS_PER_GPU = ((0, 8), (16, 8), (32, 4), (64, 2))


def auto_gpu_share(data: DataConfig | None, gpus: float) -> float:
    """The GPU share of ``resources.gpu: auto``: none without a GPU, else 1/k by the model's size class."""
    if gpus <= 0:
        return 0.0
    side = 0 if data is None or is_points(data) else data.resolution
    per_gpu = next((k for limit, k in TRIALS_PER_GPU if side <= limit), 1)
    return 1.0 / per_gpu


def trial_device(gpu_share: float) -> str:
    """The device of a trial with this GPU share (``train.device`` is overridden in a search)."""
    return "cuda" if gpu_share > 0 else "cpu"


def memory_fraction(gpu_share: float) -> float | None:
    """The share of the device's memory a trial may allocate (``None``: a whole GPU or more, no cap)."""
    return gpu_share if 0 < gpu_share < 1 else None


#: the fraction ``cap_memory`` set in this process (torch before 2.6 cannot be asked for it)
_capped = 1.0


def cap_memory(gpu_share: float) -> None:
    """Cap this process's CUDA allocations at its share of the GPU (``memory_fraction``); nothing for a whole GPU."""
    global _capped
    if (fraction := memory_fraction(gpu_share)) is not None:
        torch.cuda.set_per_process_memory_fraction(fraction)
        _capped = fraction


def memory_share(device: torch.device) -> float:
    """The fraction of ``device``'s memory this process may allocate: torch's record where it keeps one (2.6 on),
    else what ``cap_memory`` set (``torch.cuda.get_per_process_memory_fraction`` is not in torch 2.3, the oldest
    gantune takes)."""
    ask = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    return float(ask(device)) if ask is not None else _capped


#: the part of a trial's GPU memory a feature extractor may fill with one chunk: the rest holds G, D, their
#: optimiser states, the data and the allocator's slack
EXTRACTION_SHARE = 0.25


def chunk_size(budget_bytes: float, per_sample_bytes: float, cap: int) -> int:
    """Samples per chunk so that a chunk's activations fit ``budget_bytes`` (at least 1, at most ``cap``)."""
    return max(1, min(cap, int(budget_bytes // per_sample_bytes)))


def extraction_chunk(device: torch.device, per_sample_bytes: float, cap: int = 500) -> int:
    """Samples per feature-extraction chunk on ``device``: sized to the trial's memory share on a GPU."""
    if device.type != "cuda":
        return cap
    total = torch.cuda.get_device_properties(device).total_memory
    share = memory_share(device)
    return chunk_size(total * share * EXTRACTION_SHARE, per_sample_bytes, cap)
