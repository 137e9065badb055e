"""The drop-in's optimizer step on real ``nn.Module``s: every baseline against its torch.optim twin,
``mlp_lopt``, the LSTM and every zoo entry against torch.optim.Adam and their FLOP bounds.

A user who puts ``l2l.TorchOptimizer(model.parameters(), rule)`` on their own model pays for
``optimizer.step()`` alone; forward and backward are the same whatever the optimizer. So only
``step()`` is timed, on gradients made once by one backward pass, and every optimizer is timed
in turn inside the same loop (interleaved, one thread), so that a neighbour's load hits them all
alike; the load average is printed beside each model's numbers. Two models with many parameter
tensors, as real models have:

* ``cnn``: a small ResNet-style CNN for 32x32 images (3 stages of 2 blocks, 40-80-160
  channels: ~1.1M parameters in 47 tensors: convs, batch norms, a linear head);
* ``transformer``: a stack of 4 ``nn.TransformerEncoderLayer`` (d_model 128, 4 heads; ~0.8M
  parameters, 48 tensors).

Each row gives ms per step, ns per parameter per step, the ratio to ``torch.optim.Adam`` with
its defaults (the for-loop kernel at one thread) and with ``foreach=True``; a baseline's row also
its ratio to its torch.optim twin (same hyperparameters), a learned optimizer's its FLOP bound:
its FLOPs per parameter per step (:func:`flops_per_param`, from its architecture) times the
parameters, at this run's sgemm rate (``benchmarks/machine.py``, 512x512x512 float32: the dense
rate, so the bound is optimistic for the small, skinny products these networks make). The goals
of issue 21 are checked at the end. ``l2l/pretrained/index.json``'s ``cost`` fields are this
script's ``--json`` output (rows named by zoo entry).

Usage: ``nice python benchmarks/bench_dropin.py [--repeats 3] [--fast-repeats 40]
[--models cnn,transformer] [--entries all] [--json docs/results/dropin.json]
[--zoo-index l2l/pretrained/index.json]`` (the last writes the measured entries' ``cost``).
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
from l2l.learned.mlp_lopt import MLPLOpt  # noqa: E402


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
    """A small ResNet (3 stages of 2 blocks, 40-80-160 channels) for 3x32x32 inputs."""
    layers: list[nn.Module] = [nn.Conv2d(3, 40, 3, 1, 1, bias=False), nn.BatchNorm2d(40), nn.ReLU()]
    cin = 40
    for cout, stride in ((40, 1), (40, 1), (80, 2), (80, 1), (160, 2), (160, 1)):
        layers.append(_Block(cin, cout, stride))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(160, 10)]
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


#: each baseline and its torch.optim twin (called with the rule's hyperparameters and the
#: settings it fixes, ``BatchedOptimizer.torch_group_constants``)
TWINS = {"SGD": torch.optim.SGD, "Momentum": torch.optim.SGD, "NAG": torch.optim.SGD,
         "AdaGrad": torch.optim.Adagrad, "RMSProp": torch.optim.RMSprop,
         "AdaDelta": torch.optim.Adadelta, "Adam": torch.optim.Adam, "Nadam": torch.optim.NAdam}
#: the learned optimizers of the goals, besides the zoo: (row name, how to build it)
LEARNED = {"mlp_lopt w4": lambda: MLPLOpt(hidden_size=4),
           "mlp_lopt w32": lambda: MLPLOpt(hidden_size=32),
           "lstm (lstm-mnist)": lambda: zoo.load("lstm-mnist")}


def flops_per_param(rule: object) -> float | None:
    """Estimated FLOPs per parameter per step of a learned optimizer, from its architecture
    (``None`` for others). A multiply-add counts 2.

    * ``mlp_lopt``: its network on ``F`` features (13 with the default 3 momenta), ``L``
      layers of ``H`` units and a 2-unit head: ``2 (F H + (L - 1) H^2 + 2 H)`` plus ~100 for
      the features and the step (momenta, RMS, Adafactor factors, per-tensor normalisation of
      13 features, the Adam term, the exp): ~3.1 kFLOP at ``H = 32``, ~250 at ``H = 4``.
    * the LSTM (and RNNprop, its cells): per layer ``l`` of ``H`` units on ``in_l`` inputs,
      ``2 * 4H (in_l + H)`` for the gates plus ~17 H elementwise (two bias adds of 4H, five
      nonlinearities and the cell update of 4H), and ``2 H`` for the head: ~10.6 kFLOP for
      the paper's 2x20 on 2 preprocessed features.
    """
    if isinstance(rule, MLPLOpt):
        cfg = rule.config
        H, L, F = cfg["hidden_size"], cfg["hidden_layers"], rule.num_features
        return 2 * (F * H + (L - 1) * H * H + 2 * H) + 100.0
    core = getattr(rule, "core", None)
    if core is not None and hasattr(core, "cells") and len(core.cells):
        total = 0.0
        for cell in core.cells:
            H, inputs = cell.hidden_size, cell.input_size
            total += 2 * 4 * H * (inputs + H) + 17 * H
        return total + 2 * core.output_size
    return None


def optimizers(name: str, entries: list[str]) -> dict[str, torch.optim.Optimizer]:
    """Each contender on its own copy of the model (same weights, same gradients)."""
    opts: dict[str, torch.optim.Optimizer] = {
        "torch Adam": torch.optim.Adam(with_grads(name).parameters(), lr=1e-3),
        "torch Adam foreach": torch.optim.Adam(with_grads(name).parameters(), lr=1e-3,
                                               foreach=True),
    }
    for base, twin in TWINS.items():
        rule = getattr(baselines, base)()
        hp = {**rule.hyperparameters(), **rule.torch_group_constants()}
        opts[f"torch {twin.__name__} ({base})"] = twin(with_grads(name).parameters(), **hp)
        opts[f"l2l baselines.{base}"] = TorchOptimizer(with_grads(name).parameters(), rule)
    for key, build in LEARNED.items():
        opts[key] = TorchOptimizer(with_grads(name).parameters(), build())
    for entry in entries:
        opts[entry] = TorchOptimizer(with_grads(name).parameters(), zoo.load(entry))
    return opts


def timed(opts: dict[str, torch.optim.Optimizer], repeats: int,
          first: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Median and min seconds of ``step()`` per optimizer, called in turn; the first call of each
    (state allocation, compilation) is timed apart as ``first`` (unless ``first`` already has
    it: a second pass)."""
    times: dict[str, list[float]] = {k: [] for k in opts}
    first = {} if first is None else first
    for r in range(repeats + 1):
        for key, opt in opts.items():
            start = time.perf_counter()
            opt.step()
            elapsed = time.perf_counter() - start
            if r:
                times[key].append(elapsed)
            else:
                first.setdefault(key, elapsed)
    return {k: {"median": statistics.median(v), "min": min(v), "first": first[k],
                "repeats": len(v)} for k, v in times.items()}


def timed_two_speeds(opts: dict[str, torch.optim.Optimizer], repeats: int,
                     fast_repeats: int) -> tuple[dict[str, dict[str, float]], ...]:
    """:func:`timed` for everything, then again for the fast contenders (the torch Adams, the
    baselines and their twins, a step under 0.2 s) with ``fast_repeats``: a loaded machine's
    noise is a larger share of a short step, and a long one (a learned net) would make those
    extra rounds take hours. Returns both passes; ratios are taken within one (each
    interleaved): a fast contender's from the second, a slow one's from the first."""
    first: dict[str, float] = {}
    slow = timed(opts, repeats, first)
    fast = {k: o for k, o in opts.items() if slow[k]["median"] < 0.2}
    return slow, timed(fast, fast_repeats, first)


def rows_for(opts: dict[str, torch.optim.Optimizer], slow: dict[str, dict[str, float]],
             fast: dict[str, dict[str, float]], n: int, gflops: float) -> dict[str, dict]:
    """Each contender's row: ms per step, ns per parameter, the ratios to torch's Adams, a
    baseline's to its twin, a learned optimizer's FLOPs per parameter and its FLOP bound; from
    the pass of :func:`timed_two_speeds` that timed it most often."""
    rows = {}
    for key in slow:
        t = fast if key in fast else slow
        v = t[key]
        adam, foreach = t["torch Adam"]["median"], t["torch Adam foreach"]["median"]
        med = v["median"]
        row = {"ms_per_step": round(med * 1e3, 3), "min_ms_per_step": round(v["min"] * 1e3, 3),
               "ns_per_param_step": round(med / n * 1e9, 2),
               "x_adam": round(med / adam, 2), "x_adam_foreach": round(med / foreach, 2),
               "first_step_s": round(v["first"], 3), "repeats": v["repeats"]}
        if key.startswith("l2l baselines."):
            base = key.removeprefix("l2l baselines.")
            twin = f"torch {TWINS[base].__name__} ({base})"
            row["twin"] = twin
            row["x_twin"] = round(med / t[twin]["median"], 3)
            # a loaded machine only adds time: the fastest of 40 steps is the least disturbed
            row["x_twin_min"] = round(v["min"] / t[twin]["min"], 3)
        rule = getattr(opts[key], "rule", None)
        flops = flops_per_param(rule) if rule is not None else None
        if flops is not None:
            bound = flops * n / (gflops * 1e9)
            row.update(flops_per_param=round(flops), flop_bound_ms=round(bound * 1e3, 3),
                       x_flop_bound=round(med / bound, 2))
        rows[key] = row
    return rows


def goals(models: dict[str, dict]) -> dict[str, dict]:
    """Issue 21's goals on every model: met or not, with the worst value."""
    out: dict[str, dict] = {}

    def check(name: str, values: list[float], limit: float) -> None:
        worst = max(values)
        out[name] = {"limit": limit, "worst": worst, "met": worst <= limit}

    rows = [m["rows"] for m in models.values()]
    check("every baseline <= 1.1x its torch twin (medians)",
          [r[k]["x_twin"] for r in rows for k in r if "x_twin" in r[k]], 1.1)
    check("every baseline <= 1.1x its torch twin (fastest steps)",
          [r[k]["x_twin_min"] for r in rows for k in r if "x_twin_min" in r[k]], 1.1)
    check("mlp_lopt w4 <= 5x torch Adam", [r["mlp_lopt w4"]["x_adam"] for r in rows], 5.0)
    check("mlp_lopt w32 <= 2x its FLOP bound",
          [r["mlp_lopt w32"]["x_flop_bound"] for r in rows], 2.0)
    check("LSTM <= 2x its FLOP bound", [r["lstm (lstm-mnist)"]["x_flop_bound"] for r in rows],
          2.0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fast-repeats", type=int, default=40,
                    help="repeats of the fast contenders (baselines, torch's Adams)")
    ap.add_argument("--models", default="cnn,transformer")
    ap.add_argument("--entries", default="all", help="zoo names, comma-separated, all, or none")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--zoo-index", type=Path,
                    help="write each measured zoo entry's cost into this index.json "
                         "(l2l/pretrained/index.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    entries = (list(zoo.names()) if args.entries == "all" else
               [] if args.entries == "none" else args.entries.split(","))
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
        load_before = os.getloadavg()
        slow, fast = timed_two_speeds(opts, args.repeats, args.fast_repeats)
        load = [round(max(a, b), 2) for a, b in zip(load_before, os.getloadavg())]
        rows = rows_for(opts, slow, fast, n, gflops)
        print(f"\n{name}: {n:,} parameters in {len(params)} tensors (load average "
              f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})")
        print(f"  {'optimizer':<34}{'ms/step':>9}{'ns/param':>10}{'x Adam':>8}"
              f"{'x foreach':>10}{'x twin':>8}{'bound ms':>10}{'x bound':>8}{'1st s':>7}")
        for key, row in rows.items():
            print(f"  {key:<34}{row['ms_per_step']:>9.2f}{row['ns_per_param_step']:>10.1f}"
                  f"{row['x_adam']:>8.2f}{row['x_adam_foreach']:>10.2f}"
                  f"{row.get('x_twin', float('nan')):>8.2f}"
                  f"{row.get('flop_bound_ms', float('nan')):>10.1f}"
                  f"{row.get('x_flop_bound', float('nan')):>8.2f}{row['first_step_s']:>7.2f}")
        results["models"][name] = {"parameters": n, "tensors": len(params),
                                   "load_average": load, "rows": rows}
    if {"mlp_lopt w4", "lstm (lstm-mnist)"} <= set(next(iter(results["models"].values()))["rows"]):
        results["goals"] = goals(results["models"])
        print("\ngoals (issue 21):")
        for goal, v in results["goals"].items():
            print(f"  {'met    ' if v['met'] else 'NOT MET'} {goal}: worst {v['worst']}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.zoo_index is not None:
        write_costs(args.zoo_index, results)


def write_costs(index_file: Path, results: dict) -> None:
    """Each measured zoo entry's ``cost`` in the zoo's index: the machine, the date, the sgemm
    rate and, per model, what a user pays per parameter and step."""
    index = json.loads(index_file.read_text())
    for record in index["entries"]:
        measured = {name: model["rows"][record["name"]]
                    for name, model in results["models"].items()
                    if record["name"] in model["rows"]}
        if not measured:
            continue
        record["cost"] = {"machine": results["machine"], "date": results["date"],
                          "sgemm_gflops": results["sgemm_gflops"],
                          "source": "benchmarks/bench_dropin.py"}
        for name, row in measured.items():
            record["cost"][name] = {
                "parameters": results["models"][name]["parameters"],
                **{k: row[k] for k in ("ns_per_param_step", "x_adam", "x_adam_foreach",
                                       "first_step_s")}}
    index_file.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
