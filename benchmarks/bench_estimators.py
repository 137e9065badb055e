"""Meta-gradient estimators side by side: inner steps per second at equal particle counts, each
as a multiple of the bare frozen rollout of the same particles, and memory per particle as the
truncation grows.

For each task (a 10-D quadratic; the paper's MNIST MLP when the data is found) and learned
optimizer, ``P`` particles run truncations of ``K`` steps:

* ``frozen``: the population's forward-only rollout at the unperturbed weights
  (``TruncatedStep.unroll``), the bound every forward-only estimator pays at least;
* ``pes``, ``es``: one estimate (one truncation of every particle, perturbations, gradient);
* ``full_es``: one whole episode of ``--horizon`` steps, counted per inner step;
* ``tbptt`` (``auto``) and ``autograd``: one ``Unroll`` of ``P`` instances through the
  back-propagating estimators, meta-gradient included.

The default path (``--default-path``): a user gets what ``train.py``'s defaults do, not what a
benchmark flag does. For every estimator, one meta-iteration (TBPTT: one task of ``meta.horizon``
steps, ``horizon / unroll`` meta-steps; pes/es: one truncation of every particle; full_es: one
whole episode) of the paper's setup (``meta=paper``, the 2x20 LSTM) is timed

* through ``train.py`` itself, as a user runs it (``threads=auto``, ``meta.compile=auto``):
  two runs of ``N`` and ``N + k`` meta-iterations, whose wall times differ by ``k`` iterations
  (start-up, data loading, the first and last validations and checkpoints cancel);
* in this process with every setting the benchmark can choose (1 or 2 threads, compiled or not
  for the back-propagating estimators; the population ones never compile), keeping the best;

and the ratio printed (goal <= 1.1: the defaults pick the fastest path).

Memory per particle: the peak bytes autograd holds for backward passes during an estimate
(counted with ``torch.autograd.graph.saved_tensors_hooks``), besides the particles' own state.
The back-propagating estimators keep ``K`` steps of graph alive until the meta-backward, so
theirs grows with ``K``; the forward-only ones hold only one optimizee gradient's graph at a
time, so theirs is flat in ``K``.

Usage: ``python benchmarks/bench_estimators.py [--particles 8] [--truncation 20]
[--repeats 3] [--tasks quadratic mnist] [--default-path [--default-tasks mnist quadratic]
[--default-estimators auto pes es full_es]]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    import l2l  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

from l2l.estimators import choose_estimator, estimator_classes  # noqa: E402
from l2l.estimators.base import Unroll  # noqa: E402
from l2l.meta_training import MetaConfig, MetaTrainer  # noqa: E402
from l2l.objectives import build_objective  # noqa: E402
from l2l.registry import build_optimizer  # noqa: E402
from l2l.tasks import build_task  # noqa: E402
from l2l.truncated_step import TruncatedStep  # noqa: E402
from l2l.unroll_lengths import LengthSchedule  # noqa: E402

POPULATION = ("pes", "es", "full_es")


def _population(task, opt, particles: int, horizon: int, offsets: bool) -> TruncatedStep:
    return TruncatedStep(task, opt, build_objective("sum"), pairs=particles // 2,
                         lengths=LengthSchedule("constant", horizon), seed=0,
                         random_offsets=offsets)


def _time(run, repeats: int) -> float:
    run()  # warm-up (first-call allocations, lazy data)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _tbptt(name: str, task, opt, particles: int, steps: int):
    """A closure running one back-propagating unroll of ``steps`` and its meta-gradient."""
    cls = choose_estimator(name, opt, second_order=False)
    est = cls(opt.update, build_objective("sum"), optimizer=opt)
    instances = task.sample(particles, 0, "train")
    params = instances.init_params
    initial, grads = instances.loss_and_grad(params, 0)
    state = opt.init(params)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        est.estimate(Unroll(instances, params, grads, state, 0, steps, initial, steps))

    return cls.name, run


class _Saved:
    """A tensor autograd saved for a backward; counted as alive until autograd drops it."""

    def __init__(self, tensor: torch.Tensor, meter: dict[str, int]) -> None:
        self.tensor, self.meter = tensor, meter
        self.bytes = tensor.numel() * tensor.element_size()
        meter["alive"] += self.bytes
        meter["peak"] = max(meter["peak"], meter["alive"])

    def __del__(self) -> None:
        self.meter["alive"] -= self.bytes


def _saved_bytes(run) -> int:
    """The peak bytes autograd holds for backward passes while ``run`` executes (the optimizee
    gradients' own short-lived graphs included)."""
    meter = {"alive": 0, "peak": 0}
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Saved(t, meter),
                                                  lambda saved: saved.tensor):
        run()
    return meter["peak"]


def _state_bytes(population: TruncatedStep) -> int:
    tensors = [population.params, population.grads, *population.state.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def bench(task_name: str, opt_name: str, particles: int, K: int, horizon: int,
          repeats: int) -> None:
    task = build_task(task_name)
    opt = build_optimizer(opt_name)
    steps = particles * K
    population = _population(task, opt, particles, horizon, offsets=True)
    theta = population.weights.vector().expand(particles, -1).clone()
    frozen = _time(lambda: population.unroll(theta, K), repeats)
    rows = [("frozen", frozen, steps)]
    for name in POPULATION:
        cls = estimator_classes()[name]
        est = cls(opt.update, build_objective("sum"), optimizer=opt, sigma=0.01)
        pop = _population(task, opt, particles, horizon, offsets=cls.random_offsets)

        def run(est=est, pop=pop) -> None:
            opt.zero_grad(set_to_none=True)
            est.estimate_population(pop, K)

        n = particles * horizon if name == "full_es" else steps
        rows.append((name, _time(run, 1 if name == "full_es" else repeats), n))
    for name in ("auto", "autograd"):
        label, run = _tbptt(name, task, opt, particles, K)
        rows.append((f"tbptt ({label})" if name == "auto" else label, _time(run, repeats),
                     steps))
    print(f"\n{task_name}, {opt_name}: {particles} particles, truncation {K}, "
          f"full_es episode {horizon}")
    print(f"{'estimator':<22} {'s / call':>9} {'inner steps/s':>14} {'x frozen':>9}")
    for label, seconds, n in rows:
        rate = n / seconds
        print(f"{label:<22} {seconds:9.4f} {rate:14.1f} {(steps / frozen) / rate:9.2f}")


def memory(task_name: str, opt_name: str, particles: int, truncations: list[int]) -> None:
    task = build_task(task_name)
    opt = build_optimizer(opt_name)
    pop = _population(task, opt, particles, max(truncations), offsets=False)
    state = _state_bytes(pop) / particles
    print(f"\nmemory per particle, {task_name}, {opt_name} (state: {state / 1024:.1f} KiB, "
          "held by every estimator)")
    print(f"{'K':>5} {'pes/es saved KiB':>17} {'surrogate saved KiB':>20} "
          f"{'autograd saved KiB':>19}")
    for K in truncations:
        est = estimator_classes()["pes"](opt.update, build_objective("sum"), optimizer=opt)
        pes = _saved_bytes(lambda est=est, K=K: est.estimate_population(pop, K)) / particles
        cells = []
        for name in ("surrogate", "autograd"):
            _, run = _tbptt(name, task, opt, particles, K)
            cells.append(_saved_bytes(run) / particles / 1024)
        print(f"{K:5d} {pes / 1024:17.1f} {cells[0]:20.1f} {cells[1]:19.1f}")


ROOT = Path(__file__).resolve().parents[1]
#: the task presets of ``--default-tasks`` (conf/task/<name>.yaml) and their families' kwargs
PRESETS = {"mnist": ("mnist_mlp", {"hidden_sizes": (20,), "activation": "sigmoid",
                                   "batch_size": 128, "init_std": 0.01}),
           "quadratic": ("quadratic", {"dim": 10, "w_dist": "normal", "y_dist": "normal",
                                       "init_std": 0.01})}


def _train_py_seconds(preset: str, estimator: str, iterations: int, data_dir: str | None) -> float:
    """Wall time of ``train.py`` meta-training ``iterations`` meta-iterations with its defaults."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, str(ROOT / "train.py"), "mode=meta_train", f"task={preset}",
                "meta=paper", "optimizer=lstm", f"meta.estimator={estimator}",
                f"meta.iterations={iterations}", "meta.val_every=1000000",
                "meta.checkpoint_every=1000000", "meta.val_instances=1", "logger=none",
                "progress=false", f"hydra.run.dir={tmp}/run"]
        if data_dir:
            args.append(f"data_dir={data_dir}")
        start = time.perf_counter()
        proc = subprocess.run(args, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if "meta-training done" not in proc.stderr:
        raise RuntimeError(f"train.py failed: {proc.stderr[-2000:]}")
    return seconds


def _in_process_seconds(preset: str, estimator: str, threads: int, compile_: bool,
                        repeats: int, data_dir: str | None) -> float:
    """Seconds per meta-iteration of a ``MetaTrainer`` with the given settings (median)."""
    family, kwargs = PRESETS[preset]
    if family.startswith("mnist") and data_dir:
        kwargs = {**kwargs, "data_dir": data_dir}
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    trainer = MetaTrainer(build_optimizer("lstm"), build_task(family, **kwargs),
                          MetaConfig(estimator=estimator, compile=compile_, val_instances=1))
    step = (trainer.train_population if trainer.population is not None
            else lambda: trainer.train_task(trainer.sample_task(trainer.iteration)))
    step()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        trainer.iteration += 1
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def default_path(preset: str, estimators: list[str], extra: int, repeats: int,
                 data_dir: str | None) -> None:
    print(f"\ndefault path, task={preset} meta=paper optimizer=lstm (s per meta-iteration; "
          f"train.py: {extra} iterations' difference)")
    print(f"{'estimator':<10} {'train.py':>9} {'best':>8} {'best setting':<22} {'ratio':>6}")
    for estimator in estimators:
        default = (_train_py_seconds(preset, estimator, 1 + extra, data_dir)
                   - _train_py_seconds(preset, estimator, 1, data_dir)) / extra
        population = estimator in POPULATION
        settings = [(t, c) for t in (1, 2) for c in ((False,) if population else (False, True))]
        timed = {s: _in_process_seconds(preset, estimator, *s, repeats, data_dir)
                 for s in settings}
        (threads, compile_), best = min(timed.items(), key=lambda kv: kv[1])
        label = f"{threads} thread(s){', compiled' if compile_ else ''}"
        if default <= 0:  # the runs' start-up varied by more than the extra iterations took
            print(f"{estimator:<10} {'noise':>9} {best:8.3f} {label:<22}   n/a (raise "
                  "--default-extra)")
            continue
        print(f"{estimator:<10} {default:9.3f} {best:8.3f} {label:<22} {default / best:6.2f}")
    torch.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="*", default=["quadratic", "mnist"],
                        help="the estimator table per task (none: --tasks alone)")
    parser.add_argument("--optimizers", nargs="+", default=["learnable_adam", "lstm"])
    parser.add_argument("--default-path", action="store_true",
                        help="time train.py's defaults beside the best in-process setting")
    parser.add_argument("--default-tasks", nargs="+", default=["mnist"], choices=list(PRESETS))
    parser.add_argument("--default-estimators", nargs="+",
                        default=["auto", "sequence", "pes", "es", "full_es"])
    parser.add_argument("--default-extra", type=int, default=4,
                        help="train.py: time N + extra against N meta-iterations (the "
                        "quadratic's take ~0.1 s: use 200 there)")
    parser.add_argument("--data-dir", default=os.environ.get("L2L_DATA_DIR"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{cpu_model()}, 1 torch thread, torch {torch.__version__}, load "
          f"{os.getloadavg()[0]:.2f}")
    names = {"quadratic": "quadratic", "mnist": "mnist_mlp"}
    for task in args.tasks:
        for opt in args.optimizers:
            bench(names[task], opt, args.particles, args.truncation, args.horizon, args.repeats)
    if args.tasks:
        memory("quadratic", "learnable_adam", args.particles, [5, 10, 20, 40])
    if args.default_path:
        for preset in args.default_tasks:
            default_path(preset, args.default_estimators, args.default_extra, args.repeats,
                         args.data_dir)


if __name__ == "__main__":
    main()
