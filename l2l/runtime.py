"""Where a run executes: device selection with clear errors."""

from __future__ import annotations

import os

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


#: below this many parameters per instance, extra threads cost more than they give
SMALL_PROBLEM = 10_000


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_threads(threads: object, *, problem_size: int | None = None,
                    parallel_jobs: int = 1) -> tuple[int | None, str]:
    """How many torch CPU threads to use, and why (a line for the log).

    ``threads=auto`` (the default) picks: 1 for small problems (the quadratics: thread start-up
    costs more than the arithmetic); otherwise the cores left by other processes -- on a 2-core
    machine another CPU-bound job makes 2 threads ten times slower than 1 -- divided among the
    sweep's parallel jobs. A positive int is used as given; ``null`` leaves torch's default.
    """
    if threads is None:
        return None, "torch's default"
    if threads == "auto":
        cpus = available_cpus()
        share = max(1, cpus // max(1, parallel_jobs))
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        free = max(1, min(share, int(cpus - busy + 0.5)))
        if problem_size is not None and problem_size < SMALL_PROBLEM:
            return 1, f"auto: 1 (a small problem: {problem_size} parameters)"
        reason = f"auto: {free} of {cpus} cores"
        if parallel_jobs > 1:
            reason += f" ({parallel_jobs} parallel jobs)"
        if busy >= 1 and free < share:
            reason += (f"; the machine is busy (load {busy:.1f}), so fewer threads: pass "
                       "threads=N to override")
        return free, reason
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive integer, auto, or null "
                         "(torch's default)")
    return threads, "as given"
