"""Time one step of each baseline through the drop-in against torch.optim's default step.

On a single ``(1_000_000,)`` float32 parameter with a fixed gradient, one step of ours is
``l2l.TorchOptimizer(params, baselines.X()).step()`` (the rule's in-place ``step_``) and one
step of torch is ``torch.optim.X(params).step()`` with its default implementation, which on CPU
is the single-tensor for-loop. Both run in the same process with glibc's default allocator
(nothing is tuned), timings interleaved so that drift affects both alike; each is the median of
many repeats after a warm-up. Secondary columns: the pure rule (``opt.update`` plus ``params +
update``, what a differentiable unroll pays) and torch's ``foreach=True`` step.

Usage: ``python benchmarks/bench_baselines.py [--numel 1000000] [--repeats 60]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

from baselines import NAG, SGD, AdaDelta, AdaGrad, Adam, Momentum, Nadam, RMSProp  # noqa: E402
from l2l.torch_optimizer import TorchOptimizer  # noqa: E402

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


def drop_in_stepper(opt, params: torch.Tensor, grads: torch.Tensor):
    """One ``step()`` of ``l2l.TorchOptimizer`` on a parameter holding ``params``."""
    param = torch.nn.Parameter(params.clone())
    param.grad = grads.clone()
    return TorchOptimizer([param], opt).step


def pure_stepper(opt, params: torch.Tensor, grads: torch.Tensor):
    """One pure step: ``update, state = opt.update(...)`` then ``params = params + update``."""
    flat = params.reshape(1, -1)
    box = {"params": flat.clone(), "state": opt.init(flat)}
    g = grads.reshape(1, -1)

    def step() -> None:
        update, box["state"] = opt.update(g, box["state"], box["params"])
        box["params"] = box["params"] + update

    return step


def torch_stepper(cls, kwargs, params: torch.Tensor, grads: torch.Tensor, foreach: bool | None):
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
    """Print the table; return the worst ratio of the drop-in to torch's default step."""
    header = (
        f"{'optimizer':<10} {'ours ms':>8} {'torch ms':>9} {'ratio':>6}"
        f" {'| pure ms':>9} {'ratio':>6} {'foreach ms':>11} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(numel, generator=gen)
    grads = torch.randn(numel, generator=gen)
    worst = 0.0
    for name, ours, cls, kwargs in PAIRS:
        steppers = [
            drop_in_stepper(ours, params, grads),
            torch_stepper(cls, kwargs, params, grads, foreach=None),
            pure_stepper(ours, params, grads),
            torch_stepper(cls, kwargs, params, grads, foreach=True),
        ]
        with torch.no_grad():
            t_ours, t_torch, t_pure, t_foreach = median_ms(steppers, warmup, repeats)
        worst = max(worst, t_ours / t_torch)
        print(
            f"{name:<10} {t_ours:8.3f} {t_torch:9.3f} {t_ours / t_torch:6.2f}"
            f" {t_pure:9.3f} {t_pure / t_torch:6.2f} {t_foreach:11.3f}"
            f" {t_foreach / t_torch:6.2f}"
        )
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
        f"threads, load average {load}; torch {torch.__version__}, python "
        f"{platform.python_version()}, glibc malloc with default settings"
    )
    print(f"one step on a ({args.numel:_},) float32 parameter, median of {args.repeats} repeats")
    print("ours = l2l.TorchOptimizer(...).step() (in-place step_); torch = torch.optim default")
    print("step (single-tensor loop on CPU); ratios are to torch's default step. After '|':")
    print("pure = opt.update + params + update (the differentiable path); torch foreach=True")
    print()
    worst = table(args.numel, args.warmup, args.repeats)
    print()
    print(f"worst ratio, ours / torch default: {worst:.2f}")


if __name__ == "__main__":
    main()
