"""The drop-in's optimizer step on real ``nn.Module``s: every zoo entry against torch.optim.Adam.

A user who puts ``l2l.TorchOptimizer(model.parameters(), l2l.pretrained.load(name))`` on their
own model pays for ``optimizer.step()`` alone; forward and backward are the same whatever the
optimizer. So only ``step()`` is timed, on gradients made once by one backward pass, and every
optimizer is timed in turn inside the same loop (interleaved, one thread), so that a neighbour's
load hits them all alike. Two models with many parameter tensors, as real models have:

* ``cnn``: a small ResNet-style CNN for 32x32 images (~0.7M parameters, 40+ tensors: convs,
  batch norms, a linear head);
* ``transformer``: a stack of 4 ``nn.TransformerEncoderLayer`` (d_model 128, 4 heads; ~0.8M
  parameters, 48 tensors).

Each row gives ms per step, ns per parameter per step, and the ratio to ``torch.optim.Adam``
with its defaults (the for-loop kernel at one thread) and with ``foreach=True``. The header
gives the machine and this run's sgemm rate, so the numbers can be scaled to another machine.
``l2l/pretrained/index.json``'s ``cost`` fields are this script's ``--json`` output.

Usage: ``python benchmarks/bench_dropin.py [--repeats 20] [--models cnn,transformer]
[--entries all] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

try:
    import l2l  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model, sgemm_rate  # noqa: E402

import baselines  # noqa: E402
import l2l.pretrained as zoo  # noqa: E402
from l2l import TorchOptimizer  # noqa: E402


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout)) if stride != 1 or cin != cout
                     else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


def resnet_cnn() -> nn.Module:
    """A small ResNet (3 stages of 2 blocks, 32-64-128 channels) for 3x32x32 inputs."""
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    cin = 32
    for cout, stride in ((32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
        layers.append(_Block(cin, cout, stride))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


def transformer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(128, 4, dim_feedforward=512, batch_first=True)
    return nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "cnn": (resnet_cnn, lambda: torch.randn(8, 3, 32, 32)),
    "transformer": (transformer, lambda: torch.randn(8, 32, 128)),
}


def with_grads(name: str) -> nn.Module:
    """The model ``name`` (seed 0) with the gradients of one backward pass on random inputs."""
    torch.manual_seed(0)
    build, inputs = MODELS[name]
    model = build()
    model(inputs()).square().mean().backward()
    return model


def optimizers(name: str, entries: list[str]) -> dict[str, torch.optim.Optimizer]:
    """Each contender on its own copy of the model (same weights, same gradients)."""
    opts: dict[str, torch.optim.Optimizer] = {
        "torch Adam": torch.optim.Adam(with_grads(name).parameters(), lr=1e-3),
        "torch Adam foreach": torch.optim.Adam(with_grads(name).parameters(), lr=1e-3,
                                               foreach=True),
    }
    # the drop-in's own overhead: torch's arithmetic (bit for bit) through TorchOptimizer
    opts["l2l baselines.Adam"] = TorchOptimizer(with_grads(name).parameters(), baselines.Adam())
    for entry in entries:
        opts[entry] = TorchOptimizer(with_grads(name).parameters(), zoo.load(entry))
    return opts


def timed(opts: dict[str, torch.optim.Optimizer], repeats: int) -> dict[str, dict[str, float]]:
    """Median and min seconds of ``step()`` per optimizer, called in turn; the first call of each
    (state allocation, compilation) is timed apart as ``first``."""
    times: dict[str, list[float]] = {k: [] for k in opts}
    first: dict[str, float] = {}
    for r in range(repeats + 1):
        for key, opt in opts.items():
            start = time.perf_counter()
            opt.step()
            elapsed = time.perf_counter() - start
            if r:
                times[key].append(elapsed)
            else:
                first[key] = elapsed
    return {k: {"median": statistics.median(v), "min": min(v), "first": first[k]}
            for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--models", default="cnn,transformer")
    ap.add_argument("--entries", default="all", help="zoo names, comma-separated, or all")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    entries = list(zoo.names()) if args.entries == "all" else args.entries.split(",")
    gflops = sgemm_rate(512, 512, 512, repeats=8) / 1e9  # a square product: the dense rate
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()}, "
               f"torch {torch.__version__}, 1 thread")
    print(f"machine: {machine}")
    print(f"sgemm: {gflops:.1f} GFLOP/s (512x512 float32, this run); "
          f"load average {os.getloadavg()[0]:.1f}")
    results: dict = {"machine": machine, "sgemm_gflops": round(gflops, 2),
                     "date": time.strftime("%Y-%m-%d"), "models": {}}
    for name in args.models.split(","):
        opts = optimizers(name, entries)
        params = list(opts["torch Adam"].param_groups[0]["params"])
        n = sum(p.numel() for p in params)
        t = timed(opts, args.repeats)
        adam, foreach = t["torch Adam"]["median"], t["torch Adam foreach"]["median"]
        print(f"\n{name}: {n:,} parameters in {len(params)} tensors "
              f"(load {os.getloadavg()[0]:.1f})")
        print(f"  {'optimizer':<26}{'ms/step':>9}{'ns/param':>10}{'x Adam':>8}"
              f"{'x foreach':>10}{'1st step s':>11}")
        rows = {}
        for key, v in t.items():
            med = v["median"]
            rows[key] = {"ms_per_step": round(med * 1e3, 3),
                         "ns_per_param_step": round(med / n * 1e9, 2),
                         "x_adam": round(med / adam, 2), "x_adam_foreach": round(med / foreach, 2),
                         "first_step_s": round(v["first"], 3)}
            print(f"  {key:<26}{med * 1e3:>9.2f}{med / n * 1e9:>10.1f}{med / adam:>8.1f}"
                  f"{med / foreach:>10.1f}{v['first']:>11.2f}")
        results["models"][name] = {"parameters": n, "tensors": len(params), "rows": rows}
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
