"""Time one step of each baseline against torch.optim on a (1, 1_000_000) float32 vector.

One step of ours is ``update, state = opt.update(grads, state, params); params = params +
update`` (the update rule *and* applying it, since torch's ``step()`` does both); one step of
torch is ``opt.step()`` with the same gradient. Both run under ``torch.no_grad()`` in the same
process with torch's default thread count. Each timing is the median of many repeats after a
warm-up, ours and torch's interleaved so that drift affects both alike.

torch.optim's *default* implementation on CPU is the single-tensor for-loop (``foreach`` is only
chosen automatically on accelerators); the ``foreach=True`` implementation is timed as well.
The time of our update rule alone (without ``params + update``) is shown too.

Being pure, our rules allocate their results (new state, update, new parameters) where torch
updates in place. With glibc's default malloc settings, freed 4 MB blocks are often returned to
the kernel and every new tensor page-faults its memory in again, which can cost more than the
arithmetic (badly so in sandboxed kernels). A second table is therefore printed after
``mallopt`` keeps freed memory in the heap (the behaviour of jemalloc or tcmalloc), which shows
the cost of the arithmetic and memory traffic alone.

Usage: ``python benchmarks/bench_baselines.py [--numel 1000000] [--repeats 60]``
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import NAG, SGD, AdaDelta, AdaGrad, Adam, Momentum, Nadam, RMSProp  # noqa: E402

# (name, ours, torch class, torch kwargs): each pair the same update rule
PAIRS = [
    ("SGD", SGD(), torch.optim.SGD, {}),
    ("Momentum", Momentum(), torch.optim.SGD, {"momentum": 0.9}),
    ("NAG", NAG(), torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    ("AdaGrad", AdaGrad(), torch.optim.Adagrad, {}),
    ("RMSProp", RMSProp(), torch.optim.RMSprop, {}),
    ("AdaDelta", AdaDelta(), torch.optim.Adadelta, {}),
    ("Adam", Adam(), torch.optim.Adam, {}),
    ("Nadam", Nadam(), torch.optim.NAdam, {}),
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def ours_stepper(opt, params: torch.Tensor, grads: torch.Tensor, rule_times: list[float]):
    """One step of ours; the time of ``opt.update`` alone is appended to ``rule_times``."""
    box = {"params": params.clone(), "state": opt.init(params)}

    def step() -> None:
        start = time.perf_counter()
        update, box["state"] = opt.update(grads, box["state"], box["params"])
        rule_times.append(time.perf_counter() - start)
        box["params"] = box["params"] + update

    return step


def torch_stepper(cls, kwargs, params: torch.Tensor, grads: torch.Tensor, foreach: bool):
    param = torch.nn.Parameter(params.clone())
    param.grad = grads.clone()
    opt = cls([param], foreach=foreach, **kwargs)
    return opt.step


def median_ms(steppers: list[Callable[[], None]], warmup: int, repeats: int) -> list[float]:
    times: list[list[float]] = [[] for _ in steppers]
    for _ in range(warmup):
        for step in steppers:
            step()
    for _ in range(repeats):
        for i, step in enumerate(steppers):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def table(numel: int, warmup: int, repeats: int) -> float:
    """Print one table; return the worst ratio of ours (update + apply) to torch's default."""
    header = (
        f"{'optimizer':<10} {'ours ms':>8} {'torch ms':>9} {'ratio':>6}"
        f" {'rule ms':>8} {'ratio':>6} {'foreach ms':>11} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(1, numel, generator=gen)
    grads = torch.randn(1, numel, generator=gen)
    worst = 0.0
    with torch.no_grad():
        for name, ours, cls, kwargs in PAIRS:
            rule_times: list[float] = []
            steppers = [
                ours_stepper(ours, params, grads, rule_times),
                torch_stepper(cls, kwargs, params, grads, foreach=False),
                torch_stepper(cls, kwargs, params, grads, foreach=True),
            ]
            t_ours, t_torch, t_foreach = median_ms(steppers, warmup, repeats)
            t_rule = 1e3 * statistics.median(rule_times[warmup:])
            worst = max(worst, t_ours / t_torch)
            print(
                f"{name:<10} {t_ours:8.3f} {t_torch:9.3f} {t_ours / t_torch:6.2f}"
                f" {t_rule:8.3f} {t_rule / t_torch:6.2f} {t_foreach:11.3f}"
                f" {t_ours / t_foreach:6.2f}"
            )
    return worst


def tune_glibc_malloc() -> bool:
    """Keep freed 4 MB blocks in the heap instead of returning them to the kernel, so that a new
    tensor does not page-fault all of its memory in again (what jemalloc/tcmalloc do anyway)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(
            libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
            and libc.mallopt(m_trim_threshold, 1 << 30)
        )
    except (OSError, AttributeError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--no-tuned-malloc", action="store_true", help="skip the second, tuned-malloc table"
    )
    args = parser.parse_args()

    print(f"CPU: {cpu_model()}  cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}")
    print(f"torch {torch.__version__}  python {platform.python_version()}")
    print(f"one step on a (1, {args.numel:_}) float32 vector, median of {args.repeats} repeats")
    print("ours = update + apply (params + update); rule = update alone; ratios are to torch's")
    print("default (for-loop) step, except the last, which is ours to torch foreach=True")
    print()
    print("glibc malloc with its default settings:")
    worst = table(args.numel, args.warmup, args.repeats)
    print(f"worst ratio (ours / torch default): {worst:.2f}")
    if not args.no_tuned_malloc and tune_glibc_malloc():
        print()
        print("after mallopt(M_MMAP_THRESHOLD=32 MiB, M_TRIM_THRESHOLD=1 GiB):")
        worst = table(args.numel, args.warmup, args.repeats)
        print(f"worst ratio (ours / torch default): {worst:.2f}")


if __name__ == "__main__":
    main()
