"""How to batch the MNIST CNN over instances: grouped convolutions against ``torch.func.vmap``.

Times one forward + backward (mean cross-entropy, gradient w.r.t. every instance's flat
parameters) of ``B`` CNN instances (default: the ``mnist_cnn`` preset, channels 4 and 8), each
on its own minibatch, in these ways:

* ``grouped``: what ``l2l.tasks.MNISTCNNFamily`` does: instances stacked along the channel
  axis (channels-last layout), one ``F.conv2d(..., groups=B)`` per layer for all instances;
* ``vmap``: ``torch.func.vmap`` over a per-instance function calling ``F.conv2d`` (default
  layout: in torch 2.13 vmap refuses channels-last, "NYI: querying is_contiguous inside of
  vmap for memory_format other than torch.contiguous_format");
* ``loop`` / ``loop_cl``: a Python loop over instances (the reference point), likewise.

Random images stand in for MNIST (the timing does not depend on pixel values), so the script
needs no data. It checks that all of them give the same gradients before timing them.

Usage: ``python benchmarks/bench_cnn_batching.py [--instances 16] [--minibatch 128]
[--repeats 20] [--device cpu] [--threads 0]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    import l2l  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

from l2l.tasks import MNISTCNNFamily  # noqa: E402
from l2l.tasks.mnist_common import ACTIVATIONS  # noqa: E402


def machine(device: torch.device) -> str:
    cpu = cpu_model()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return (f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
            f"device {where}")


def one_instance_logits(
    fam: MNISTCNNFamily, row: Tensor, x: Tensor, channels_last: bool = False
) -> Tensor:
    """Logits ``(m, 10)`` of one instance (flat ``row (n,)``) on its images ``x (m, 784)``."""
    act = ACTIVATIONS[fam.activation]
    convs, W_head, b_head = fam.unflatten(row.unsqueeze(0))
    h = x.reshape(x.shape[0], 1, 28, 28)
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    for W, b in convs:
        h = F.max_pool2d(act(F.conv2d(h, W[0], b[0], padding=fam.kernel_size // 2)), 2)
    return torch.addmm(b_head[0], h.reshape(x.shape[0], -1), W_head[0])


def make_runs(fam: MNISTCNNFamily) -> dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]]:
    """name -> f(params (B, n), x (B, m, 784), y (B, m)) returning grads (B, n)."""

    def ce(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum") / y.shape[-1]

    def grouped(p: Tensor, x: Tensor, y: Tensor) -> Tensor:
        p = p.detach().requires_grad_(True)
        return torch.autograd.grad(ce(fam.logits(p, x), y), p)[0]

    batched = torch.func.vmap(lambda row, xi: one_instance_logits(fam, row, xi))

    def vmapped(p: Tensor, x: Tensor, y: Tensor) -> Tensor:
        p = p.detach().requires_grad_(True)
        return torch.autograd.grad(ce(batched(p, x), y), p)[0]

    def looped(channels_last: bool) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        def run(p: Tensor, x: Tensor, y: Tensor) -> Tensor:
            p = p.detach().requires_grad_(True)
            loss = sum(ce(one_instance_logits(fam, p[i], x[i], channels_last), y[i])
                       for i in range(p.shape[0]))
            return torch.autograd.grad(loss, p)[0]

        return run

    return {"grouped": grouped, "vmap": vmapped, "loop": looped(False), "loop_cl": looped(True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=16)
    ap.add_argument("--minibatch", type=int, default=128)
    ap.add_argument("--channels", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fam = MNISTCNNFamily(channels=args.channels, batch_size=args.minibatch)
    B, m = args.instances, args.minibatch
    g = torch.Generator().manual_seed(0)
    params = (torch.randn(B, fam.num_params, generator=g) * fam.init_scale()).float().to(device)
    x = torch.rand(B, m, 784, generator=g).to(device)
    y = torch.randint(0, 10, (B, m), generator=g).to(device)
    runs = make_runs(fam)

    ref = runs["loop"](params, x, y)
    for name, fn in runs.items():
        err = (fn(params, x, y) - ref).abs().max().item()
        assert err < 1e-4, f"{name} disagrees with the loop: max |diff| {err:.3g}"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in runs.values():  # warm-up
        for _ in range(3):
            fn(params, x, y)
    # interleaved rounds, so that load from other processes hits every method alike
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn(params, x, y)
            sync()
            samples[name].append(time.perf_counter() - t0)
    times = {name: statistics.median(s) for name, s in samples.items()}
    best = {name: min(s) for name, s in samples.items()}

    print(f"machine: {machine(device)}")
    print(f"{fam!r}: {fam.num_params} params; B={B} instances, minibatch {m}; forward+backward, "
          f"median (and min) of {args.repeats} interleaved rounds\n")
    print(f"{'batching':<10}{'median ms':>11}{'min ms':>9}{'median vs grouped':>19}")
    for name, t in times.items():
        print(f"{name:<10}{t * 1e3:>11.2f}{best[name] * 1e3:>9.2f}{t / times['grouped']:>19.2f}")
    print(f"\nvmap / grouped time ratio: {times['vmap'] / times['grouped']:.2f} (median), "
          f"{best['vmap'] / best['grouped']:.2f} (min)")


if __name__ == "__main__":
    main()
