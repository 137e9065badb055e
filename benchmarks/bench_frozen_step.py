"""Frozen learned-optimizer steps against Adam: the ``torch.optim`` drop-in and a batched eval.

* drop-in: a 1M-parameter ``nn.Linear(1000, 1000)`` stepped by ``l2l.TorchOptimizer`` with the
  paper's 2x20 LSTM, against ``torch.optim.Adam`` on the same module;
* eval batch: 100 MNIST-MLP problems at once (``(100, 15910)``), the LSTM's in-place ``step_``
  against the batched Adam baseline's.

The LSTM step is timed on the new frozen path (``LSTMOptimizer._step_``: in place, over
coordinate chunks, ``addmm`` + compiled fused cell per chunk and layer) and on the previous one
(the pure ``update`` with one ``torch.lstm`` call over all coordinates, then ``add_``),
interleaved with Adam in the same loop, and reported as ratios to Adam's step with the
load average beside them. The bound: the step's matmul FLOPs (``2 * (22 + 40) * 80`` per
coordinate) at this machine's sgemm rate, measured in the same run, also as a ratio to Adam;
then that plus the measured time of the compiled gate math alone (the ~100 sigmoid/tanh per
coordinate and layer, which no matmul rate covers): what the step costs with zero overhead.

Usage: ``python benchmarks/bench_frozen_step.py [--repeats 10] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

try:
    import l2l  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import sgemm_rate  # noqa: E402  (benchmarks/machine.py, beside this script)

from l2l import TorchOptimizer  # noqa: E402
from l2l.interface import BatchedOptimizer  # noqa: E402
from l2l.learned import fused_lstm  # noqa: E402
from l2l.registry import build_optimizer  # noqa: E402


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, called in turn (one warm-up each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    default = fused_lstm.COMPILE_MIN_COORDS
    for r in range(repeats + 1):
        for name, fn in fns.items():
            if name == "lstm previous":
                fused_lstm.COMPILE_MIN_COORDS = 1 << 62  # one torch.lstm call per step
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            fused_lstm.COMPILE_MIN_COORDS = default
            if r:
                times[name].append(elapsed)
    return {k: statistics.median(v) for k, v in times.items()}


def previous(rule: BatchedOptimizer) -> BatchedOptimizer:
    """``rule`` with the default ``_step_`` (pure ``update`` + ``add_``), as before this path."""
    rule._step_ = types.MethodType(BatchedOptimizer._step_, rule)
    return rule


def drop_in(repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    models = {k: torch.nn.Linear(1000, 1000) for k in ("adam", "lstm", "lstm previous")}
    for m in models.values():
        for p in m.parameters():
            p.grad = torch.randn_like(p) * 1e-3
    opts = {"adam": torch.optim.Adam(models["adam"].parameters(), lr=1e-3)}
    opts["lstm"] = TorchOptimizer(models["lstm"].parameters(), build_optimizer("lstm"))
    opts["lstm previous"] = TorchOptimizer(models["lstm previous"].parameters(),
                                           previous(build_optimizer("lstm")))
    return interleaved({k: (lambda o=o: o.step()) for k, o in opts.items()}, repeats)


def eval_batch(repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    B, n = 100, 15910
    grads = torch.randn(B, n) * 1e-3
    rules = {"adam": build_optimizer("adam"), "lstm": build_optimizer("lstm"),
             "lstm previous": previous(build_optimizer("lstm"))}
    params = {k: torch.zeros(B, n) for k in rules}
    states = {k: r.init(params[k]) for k, r in rules.items()}

    def step(k: str) -> None:
        with torch.no_grad():
            rules[k].step_(grads, states[k], params[k])

    return interleaved({k: (lambda k=k: step(k)) for k in rules}, repeats)


COORDS = {"drop_in": 1_001_000, "eval_batch": 1_591_000}


def pointwise_time(coords: int) -> float:
    """Seconds of the fused gate math alone (the compiled cell: 60 sigmoid, 40 tanh and the
    products per coordinate and layer) over ``coords`` coordinates and both layers, measured
    chunk by chunk as the step runs it: the part of the bound that is not a matmul."""
    chunk = fused_lstm.FROZEN_CHUNK
    gates, c = torch.randn(chunk, 80), torch.randn(chunk, 20)
    fused_lstm.cell_forward(gates, c)  # compile (or load the cached kernel)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        for _ in range(8):
            fused_lstm.cell_forward(gates, c)
        times.append((time.perf_counter() - start) / 8)
    return min(times[1:]) * 2 * -(-coords // chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for label, bench in (("drop-in, 1M-param nn.Linear", drop_in),
                         ("eval batch, 100 MNIST MLPs (1.59M coords)", eval_batch)):
        load = os.getloadavg()[0]
        t = bench(args.repeats)
        print(f"\n{label}  (load {load:.1f} -> {os.getloadavg()[0]:.1f})")
        for k, v in t.items():
            print(f"  {k:<16}{v * 1e3:>10.1f} ms   {v / t['adam']:>7.1f}x Adam")
        rate = sgemm_rate(65536, 40, 80)  # the chunked gate matmul
        bound = 2 * (22 + 40) * 80 * COORDS[bench.__name__] / rate
        print(f"  {'matmul bound':<16}{bound * 1e3:>10.1f} ms   {bound / t['adam']:>7.1f}x Adam")
        full = bound + pointwise_time(COORDS[bench.__name__])
        print(f"  {'+ gate math':<16}{full * 1e3:>10.1f} ms   {full / t['adam']:>7.1f}x Adam")
        print(f"  lstm / matmul bound {t['lstm'] / bound:.2f}, "
              f"lstm / (matmul + gate math) {t['lstm'] / full:.2f}")


if __name__ == "__main__":
    main()
