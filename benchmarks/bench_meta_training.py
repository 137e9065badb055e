"""Meta-training throughput on the paper's MNIST setup, ours against a straightforward loop.

Setup: the MNIST MLP (784-20-10, 15,910 parameters), a 2x20 coordinatewise LSTM, unrolls of 20
steps, minibatches of 128. One *meta-iteration* is one unroll of 20 optimizee steps plus the
meta-gradient and one Adam meta-step. Throughput counts inner optimizee steps per second
(times B instances), the backward pass included.

* ``l2l``: ``MetaTrainer.unroll`` (first-order "surrogate" path: each inner gradient w.r.t. the
  current parameters only, the LSTM graph alone kept for the meta-backward), for B = 1 and more.
* ``l2l autograd``: the same trainer with ``estimator=autograd`` (optimizee graphs kept).
* ``l2l compiled``: the surrogate path with ``meta.compile=true`` (``torch.compile`` of the
  LSTM update: fused elementwise gate kernels).
* ``l2l sequence``: ``estimator=sequence`` (the ``auto`` default for LSTM cores): frozen
  rollout, then one fused LSTM-sequence backward over the unroll (``l2l.learned.fused_lstm``);
  ``eager`` / ``compiled`` = its pointwise gate-derivative step run eagerly or torch.compile-d
  (``L2L_FUSED_COMPILE=0/1``).
* ``naive``: the way public reproductions do it: parameters kept as a list of tensors, the LSTM
  applied per parameter tensor, and at every inner step ``loss.backward(retain_graph=True)``
  through the whole window so far (cost quadratic in the unroll length).

The machine's sgemm rate is measured in the same run (a ``(K*N, 80) x (80, 20)`` product, the
shape of the LSTM's matmuls), and the sequence path's matmul work (FLOPs of forward rollout plus
backward) is divided by it: the fraction of the machine's matmul rate that path reaches. Rows are
measured in rounds (every row once per round) with the load average printed, since shared
machines are noisy.

Usage: ``python benchmarks/bench_meta_training.py [--batch-sizes 1 8 32] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import l2l  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model, sgemm_rate  # noqa: E402  (benchmarks/machine.py, beside this script)

from l2l.learned.lstm import LSTMOptimizer  # noqa: E402
from l2l.meta_training import MetaConfig, MetaTrainer  # noqa: E402
from l2l.preprocessing import preprocess  # noqa: E402
from l2l.tasks import build_task  # noqa: E402

UNROLL = 20


def machine() -> str:
    cpu = cpu_model()
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def sequence_flops(n: int, batch_size: int) -> float:
    """Matmul FLOPs of one sequence-path meta-iteration of the 2x20 LSTM (F=2 inputs): rollout
    (input + recurrent products), backward (gate recompute, recurrence, weight gradients, the
    gradient into layer 0's inputs)."""
    N, H = n * batch_size, 20
    per = {0: 2 + H, 1: 2 * H}
    forward = sum(2 * N * f * 4 * H for f in per.values())
    backward = sum(2 * N * f * 4 * H * 2 + 2 * N * 4 * H * H for f in per.values())
    backward += 2 * N * 4 * H * H  # layer 1 -> layer 0
    return UNROLL * (forward + backward)


def time_ours(task, batch_size: int, mode: str, repeats: int, device: torch.device,
              compile: bool = False, fused_compile: bool = True) -> float:
    """Median seconds per meta-iteration of MetaTrainer (one unroll + one meta-step); the
    first two iterations (compilation, warm-up) are not timed."""
    os.environ["L2L_FUSED_COMPILE"] = "1" if fused_compile else "0"
    torch.manual_seed(0)
    net = LSTMOptimizer()
    config = MetaConfig(estimator=mode, val_instances=1, compile=compile)
    trainer = MetaTrainer(net, task, config, device=device)
    instances = task.sample(batch_size, 0, "train", device=device)
    params = instances.init_params
    state = trainer.optimizer.init(params)
    _, grads = instances.loss_and_grad(params, 0)
    times = []
    for r in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        trainer.meta_optimizer.zero_grad()
        out = trainer.unroll(instances, params, grads, state, r * UNROLL, UNROLL)
        trainer.meta_optimizer.step()
        sync(device)
        if r > 1:
            times.append(time.perf_counter() - start)
        params, grads, state = out.params, out.grads, out.state
    return statistics.median(times)


def time_naive(task, repeats: int, device: torch.device) -> float:
    """Median seconds per meta-iteration of the per-tensor, backward-through-window loop."""
    torch.manual_seed(0)
    net = LSTMOptimizer().to(device)
    meta_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    instances = task.sample(1, 0, "train", device=device)
    shapes = [(784, 20), (20,), (20, 10), (10,)]
    flat = instances.init_params[0]
    tensors, at = [], 0
    for shape in shapes:
        size = torch.Size(shape).numel()
        tensors.append(flat[at:at + size].view(shape).clone())
        at += size
    cfg = net.config
    H = cfg["hidden_size"]
    times = []
    for r in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        params = [t.detach().requires_grad_(True) for t in tensors]
        hidden = [[(torch.zeros(p.numel(), H, device=device),) * 2 for _ in net.core.cells]
                  for p in params]
        meta_loss = 0.0
        for k in range(UNROLL):
            loss = instances.loss(torch.cat([p.reshape(-1) for p in params])[None], k)[0]
            for p in params:
                p.retain_grad()
            loss.backward(retain_graph=True)  # through the whole window so far
            new_params = []
            for i, p in enumerate(params):  # the LSTM, one parameter tensor at a time
                x = preprocess(p.grad.detach().reshape(-1), cfg["preprocessing"],
                               cfg["preprocess_p"])
                for layer, cell in enumerate(net.core.cells):
                    hidden[i][layer] = cell(x, hidden[i][layer])
                    x = hidden[i][layer][0]
                update = net.head(x).view_as(p) * cfg["output_scale"]
                new_params.append(p + update)
            params = new_params
            meta_loss = meta_loss + loss
        meta_loss = meta_loss + instances.loss(
            torch.cat([p.reshape(-1) for p in params])[None], UNROLL)[0]
        meta_opt.zero_grad()
        meta_loss.backward()
        meta_opt.step()
        sync(device)
        if r:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile rows")
    ap.add_argument("--rounds", type=int, default=2, help="measure every row this many times")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    task = build_task("mnist_mlp", data_dir=args.data_dir)
    print(f"machine: {machine()}; device {device}")
    print(f"MNIST MLP ({task.num_params} params), 2x20 LSTM, unroll {UNROLL}, minibatch 128; "
          f"median of {args.repeats} meta-iterations\n")
    print(f"{'implementation':<22}{'B':>4}{'s / meta-iter':>15}{'inner steps/s':>15}"
          f"{'vs naive':>10}")
    naive = None
    if not args.skip_naive:
        naive = time_naive(task, args.repeats, device)
        print(f"{'naive per-tensor loop':<22}{1:>4}{naive:>15.3f}{UNROLL / naive:>15.1f}"
              f"{1.0:>10.2f}")
    runs = [("surrogate", False, True, "l2l surrogate", args.batch_sizes[:1]),
            ("autograd", False, True, "l2l autograd", args.batch_sizes[:1]),
            ("sequence", False, False, "l2l sequence eager", args.batch_sizes[:1])]
    if not args.skip_compile:
        runs += [("surrogate", True, True, "l2l surr. compiled", args.batch_sizes[:1]),
                 ("sequence", False, True, "l2l sequence comp.", args.batch_sizes)]
    best: dict[int, float] = {}
    for round_ in range(args.rounds):
        print(f"-- round {round_ + 1} ({load()})")
        for mode, compile, fused, label, sizes in runs:
            for b in sizes:
                seconds = time_ours(task, b, mode, args.repeats, device, compile, fused)
                ratio = f"{naive / seconds * b:>10.1f}" if naive else f"{'—':>10}"
                print(f"{label:<22}{b:>4}{seconds:>15.3f}{UNROLL * b / seconds:>15.1f}{ratio}"
                      f"   {load()}", flush=True)
                if mode == "sequence" and (fused or args.skip_compile):
                    best[b] = min(best.get(b, float("inf")), seconds)
    rate = sgemm_rate(task.num_params * UNROLL, 80, 20)
    print(f"\nsgemm on this machine now: {rate / 1e9:.1f} GFLOP/s ({load()})")
    for b, seconds in sorted(best.items()):
        flops = sequence_flops(task.num_params, b)
        print(f"sequence path B={b}: {flops / 1e9:.1f} GFLOP of matmuls in {seconds:.3f} s = "
              f"{flops / seconds / rate:.0%} of the sgemm rate "
              f"(matmul-bound time {flops / rate:.3f} s)")
    print("\n'vs naive' compares inner steps per second (B instances per step count B times).")


if __name__ == "__main__":
    main()
