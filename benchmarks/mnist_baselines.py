"""Adam and SGD on sampled MNIST-MLP instances: a sanity benchmark of the task and the baselines.

Runs each optimizer on the same ``--instances`` instances (test split, seed 0 by default) for
``--steps`` steps, one batched update per step (``l2l.evaluation.run_optimizer``), and prints,
per optimizer, the mean over instances with a 95% confidence interval (Student t with n - 1
degrees of freedom) of: the final minibatch loss
``f_T(theta_T)`` (final parameters on the minibatch of step ``T``), the loss and the accuracy of
the final parameters on the whole split, and the wall time.

Usage: ``python benchmarks/mnist_baselines.py [--steps 100] [--instances 32] [--task mnist_mlp]``
(data: ``--data-dir``, else ``$L2L_DATA_DIR``, else ``../shared/data/mnist`` if present, else
the user cache).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

try:
    import l2l  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import SGD, Adam  # noqa: E402
from l2l.evaluation import run_optimizer  # noqa: E402
from l2l.stats import mean_ci95  # noqa: E402
from l2l.tasks import build_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="mnist_mlp", help="a task family (l2l.tasks.FAMILIES)")
    ap.add_argument("--instances", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    data_dir = args.data_dir
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if data_dir is None and not os.environ.get("L2L_DATA_DIR") and shared.is_dir():
        data_dir = shared  # this checkout's shared copy, else the library's default lookup
    family = build_task(args.task, data_dir=data_dir)
    t0 = time.perf_counter()
    instances = family.sample(args.instances, args.seed, args.split, device=args.device)
    print(
        f"{family!r}: {args.instances} instances ({args.split} split, seed {args.seed}), "
        f"{args.steps} steps, {family.num_params} params each, device {args.device}, "
        f"{torch.get_num_threads()} CPU threads; "
        f"sampling took {time.perf_counter() - t0:.2f} s"
    )
    with torch.no_grad():
        init = instances.loss(instances.init_params, 0)
    m, h = mean_ci95(init)
    print(f"initial minibatch loss {m:.4f} +- {h:.4f}")
    for label, opt in (("Adam lr=0.01", Adam(lr=0.01)), ("SGD lr=1.0", SGD(lr=1.0))):
        t0 = time.perf_counter()
        result = run_optimizer(opt, instances, args.steps)
        elapsed = time.perf_counter() - t0
        out = {"final minibatch loss": result.final_loss,
               **{f"split {k}": v for k, v in result.metrics.items()}}
        parts = []
        for name, values in out.items():
            m, h = mean_ci95(values)
            parts.append(f"{name} {m:.4f} +- {h:.4f}")
        print(f"{label:>13}: " + ", ".join(parts) + f"  [{elapsed:.1f} s]")
    print("(+- is the 95% CI half-width over instances: Student t quantile x sd / sqrt(n))")


if __name__ == "__main__":
    main()
