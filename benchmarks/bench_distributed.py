"""Data-parallel meta-training throughput against the number of processes (l2l/env/distributed.py).

Meta-trains the LSTM optimizer on quadratics (batch ``--batch-size`` split over the processes,
horizon 20, unrolls of 5, no validation or checkpoint in the timed part) in one process and
under ``torchrun --nproc_per_node=N --standalone`` (gloo), and prints inner optimizee steps per
second: iterations x horizon x batch size / wall time of the meta-training loop (start-up,
imports and a warm-up task are not counted).

On a machine with few cores the processes compete for them: the numbers show the cost of the
communication, not a speed-up. Each process gets one thread.

Usage: ``python benchmarks/bench_distributed.py [--processes 1 2] [--iterations 150]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

try:
    import l2l  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_timing import time_training  # noqa: E402  (benchmarks/trainer_timing.py)

from l2l.env import distributed  # noqa: E402
from l2l.learned.lstm import LSTMOptimizer  # noqa: E402
from l2l.meta_training import MetaConfig, MetaTrainer  # noqa: E402
from l2l.tasks import build_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def worker(iterations: int, batch_size: int, horizon: int) -> None:
    """One rank: meta-train, time the loop (after one warm-up task), rank 0 prints the rate."""
    torch.set_num_threads(1)
    sync = distributed.init_group()
    torch.manual_seed(0)
    config = MetaConfig(iterations=iterations + 1, batch_size=batch_size, horizon=horizon,
                        unroll=5, meta_lr=0.01, val_every=10**9, val_instances=1)
    trainer = MetaTrainer(LSTMOptimizer(), build_task("quadratic", dim=10), config, sync=sync)
    seconds = time_training(trainer, sync)
    if sync.is_writer:
        print(json.dumps({"steps_per_s": iterations * horizon * batch_size / seconds}),
              flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def measure(processes: int, iterations: int, batch_size: int, horizon: int) -> float:
    """Inner optimizee steps per second with ``processes`` processes (torchrun if more than 1)."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                 "--standalone"] if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([*launcher, __file__, "--worker", f"--iterations={iterations}",
                          f"--batch-size={batch_size}", f"--horizon={horizon}"], check=True,
                         env=env, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.iterations, args.batch_size, args.horizon)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, Python {platform.python_version()}; quadratic task, "
          f"batch {args.batch_size}, horizon {args.horizon}, unroll 5, 1 thread per process")
    base = None
    for n in args.processes:
        rate = measure(n, args.iterations, args.batch_size, args.horizon)
        base = base or rate
        print(f"{n} process(es): {rate:10.0f} inner steps/s  ({rate / base:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
