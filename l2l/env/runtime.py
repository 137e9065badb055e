"""Where a run executes: device selection with clear errors."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

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


#: ``threads=N`` above this many per CPU is refused: oversubscribing CPU-bound kernels only
#: slows them down, and tens of thousands of threads crash torch (a segfault)
MAX_THREADS_PER_CPU = 4


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from Linux's ``/proc/stat`` (None
    elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cpus(window: float = 0.2) -> float:
    """How many CPUs other processes keep busy: the smaller of the 1-minute load average and
    the CPUs busy during the next ``window`` seconds (this process sleeps meanwhile).

    The load average alone remembers the last minute: a job that has just ended (a benchmark's
    previous measurement, the run before in a script) still counts as a busy core for a minute
    after, and ``threads=auto`` would then give up a free core. The short sample alone misses a
    job between bursts; a CPU-bound job shows in both, so the smaller is taken. Under half a
    core of load no sample is taken (the run does not wait): no smaller value could change
    the threads :func:`resolve_threads` chooses."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load = 0.0
    before = _cpu_times() if load >= 0.5 else None
    if before is None:
        return load
    time.sleep(window)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return load
    now = (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)
    return min(load, now)


def resolve_threads(threads: object, *, problem_size: int | None = None,
                    parallel_jobs: int = 1) -> tuple[int | None, str]:
    """How many torch CPU threads to use, and why (a line for the log).

    ``threads=auto`` (the default) picks: 1 for small problems (the quadratics: thread start-up
    costs more than the arithmetic); otherwise the cores left by other processes
    (:func:`busy_cpus`) -- on a 2-core machine another CPU-bound job makes 2 threads ten times
    slower than 1 -- divided among the sweep's parallel jobs. A positive int is used as given;
    ``null`` leaves torch's default.
    """
    if threads is None:
        return None, "torch's default"
    if threads == "auto":
        if problem_size is not None and problem_size < SMALL_PROBLEM:
            return 1, f"auto: 1 (a small problem: {problem_size} parameters)"
        cpus = available_cpus()
        share = max(1, cpus // max(1, parallel_jobs))
        busy = busy_cpus()
        free = max(1, min(share, int(cpus - busy + 0.5)))
        reason = f"auto: {free} of {cpus} cores"
        if parallel_jobs > 1:
            reason += f" ({parallel_jobs} parallel jobs)"
        if busy >= 1 and free < share:
            reason += (f"; the machine is busy ({busy:.1f} cores in use), so fewer threads: "
                       "pass threads=N to override")
        return free, reason
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive integer, auto, or null "
                         "(torch's default)")
    limit = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    if threads > limit:
        raise ValueError(f"threads={threads} is more than {MAX_THREADS_PER_CPU}x this machine's "
                         f"{os.cpu_count() or 1} CPUs (extra threads only slow torch down, and "
                         f"very many crash its thread pool): use threads=auto or at most {limit}")
    return threads, "as given"


#: fewer coordinates than this run eagerly, both for ``meta.compile=auto`` and for the fused
#: frozen LSTM kernels (``l2l.learned.fused_lstm``): below it a step is a few small kernels and
#: compiling (seconds, once per shape and machine thanks to the cache) does not pay back
COMPILE_MIN_COORDS = 4_096

#: the C++ compilers inductor can use on a CPU
CXX_COMPILERS = ("c++", "g++", "clang++", "cc")


def compiler_missing(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device`` here (``None``: it can)."""
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "triton is not installed"
    if device.type != "cpu":
        return f"torch.compile is not used on {device.type}"
    if not any(shutil.which(name) for name in CXX_COMPILERS):
        return "no C++ compiler (c++, g++, clang++ or cc) is on the PATH"
    return None


def resolve_compile(setting: object, *, problem_size: int, device: torch.device) -> bool:
    """Whether meta-training compiles the learned optimizer's update.

    ``true``/``false`` are obeyed; ``auto`` (the default) compiles wherever it pays and works:
    problems of at least :data:`COMPILE_MIN_COORDS` coordinates on a device with a compiler
    (about 2x on CPU for MNIST; kernels cached per user, see ``l2l.env.runtime_cache``). Where no
    compiler exists, ``auto`` runs eager with one warning that says how to get the fast path.
    """
    if setting is True or setting is False:
        return setting
    if setting != "auto":
        raise ValueError(f"meta.compile must be true, false or auto, got {setting!r}")
    if problem_size < COMPILE_MIN_COORDS:
        return False
    reason = compiler_missing(device)
    if reason is not None:
        warnings.warn(f"meta.compile=auto: {reason}, so meta-training runs uncompiled (about 2x "
                      "slower); install one, or set meta.compile=false to silence this",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


def problem_size(task: object) -> int:
    """Coordinates per instance (the largest component's for a mixture of sizes)."""
    components = getattr(task, "components", None)
    if components:
        return max(problem_size(c) for c in components)
    return int(task.num_params)


@contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """Let a command-line listing be cut short (``| head``) as Unix tools are: when the reader
    closes the pipe, stop printing and exit 0 without a traceback. Output still pending is
    flushed inside, and stdout is pointed at /dev/null so that the interpreter's own final
    flush does not raise again."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
