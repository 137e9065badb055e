"""Where a run executes: device selection with clear errors."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, refusing an accelerator that is not there (so a run fails at
    once with a fix, not later with a CUDA stack trace)."""
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise ValueError(f"device={name} is not a device: use cpu, cuda, cuda:<index> or "
                         "mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no CUDA GPU is visible: use device=cpu")
    count = torch.cuda.device_count()
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise ValueError(f"device={name} but only {count} CUDA GPU(s) are visible: "
                         "use device=cuda:0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name} but MPS is not available: use device=cpu")
    return device


def resolve_threads(threads: object) -> int | None:
    """``threads=`` as a positive int (None: leave torch's default)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive integer (or null for torch's "
                         "default)")
    return threads
