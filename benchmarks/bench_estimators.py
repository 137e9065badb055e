"""Meta-gradient estimators side by side: inner steps per second at equal particle counts, each
as a multiple of the bare frozen rollout of the same particles, memory per particle as the
truncation grows, 1 against 2 processes, and train.py's default path against the best.

The tasks (``--tasks``): ``quadratic`` (the paper's 10-D quadratics, a small task) and ``mnist``
(the paper's 784-20-10 sigmoid MLP on MNIST minibatches of 128, ``task=mnist``; the data from
``--data-dir`` or ``$L2L_DATA_DIR``). For each task and learned optimizer, ``P`` particles run
truncations of ``K`` steps:

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
  the median of the ``meta/seconds`` its metrics.jsonl records for the ``k`` meta-iterations
  after the first (which compiles); start-up, validation and checkpoints are not in it. (The
  difference of two runs' wall times was tried first: compilation's variation between runs,
  seconds, swamped it);
* in this process with every setting the benchmark can choose (1 or 2 threads, compiled or not
  for the back-propagating estimators; the population ones never compile), keeping the best;

and the ratio printed (goal <= 1.1: the defaults pick the fastest path).

Memory per particle (``--memory-optimizer``, learnable_adam by default: an LSTM's autograd
graph on MNIST runs to gigabytes), two measures per estimator and truncation ``K``:

* saved: the peak bytes autograd holds for backward passes during an estimate (counted with
  ``torch.autograd.graph.saved_tensors_hooks``): the cause, exact, in this process;
* peak RSS: what the operating system sees, in a fresh subprocess per cell: after a one-step
  warm-up the kernel's high-water mark is reset (``/proc/self/clear_refs``, Linux), one
  estimate of ``K`` steps runs, and ``VmHWM - VmRSS`` before it is its transient memory. glibc's
  mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so that tensors are mapped and unmapped
  as they live and die and the RSS follows them. tracemalloc would see none of this (tensor
  storage is not allocated through Python), and torch has no CPU allocator statistics
  beside the profiler's memory events. The quadratic's graph is a few KiB, below the RSS's
  page-level noise: its growth shows in the saved column, and its RSS is measured only if
  asked (``--rss-tasks quadratic mnist``).

The back-propagating estimators keep ``K`` steps of graph alive until the meta-backward, so
theirs grows with ``K``; the forward-only ones hold only one optimizee gradient's graph at a
time, so theirs is flat in ``K``.

Processes (``--processes 1 2``): ``pes`` and TBPTT (``--process-estimators``) meta-train ``P``
particles (TBPTT: a batch of ``P`` instances) in one process and under ``torchrun
--nproc_per_node=2 --standalone`` (each rank owns half, one thread each), validation off; the
total inner steps per second. On a 2-core machine under other load the two processes compete
for the cores: the numbers say what a second process buys here, not on a cluster.

The full run (on a quiet machine; measured in parts on the 2-core EPYC: the default path about
25 minutes for MNIST and 3 for the quadratic; ``--quick`` is the smoke run, about 40 s at load
5 on 2 cores)::

    OMP_NUM_THREADS=1 python benchmarks/bench_estimators.py --data-dir /work/shared/data/mnist \\
        --tasks quadratic mnist --default-path --default-tasks mnist quadratic

One part alone: ``--tables processes`` (or ``speed``, ``memory``) prints only those tables for
each of ``--tasks``; ``--tasks`` with no task skips them all (with ``--default-path``: only the
default path).

Options: ``[--particles 8] [--truncation 20] [--horizon 100] [--repeats 3]
[--tables speed memory processes] [--optimizers learnable_adam lstm]
[--memory-truncations 5 10 20 40] [--processes 1 2]
[--default-estimators auto sequence pes es full_es] [--default-extra N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

from estimator_probes import (  # noqa: E402  (benchmarks/estimator_probes.py)
    peak_rss_bytes,
    processes_worker,
    ranks_steps_per_s,
    saved_bytes,
)
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

from l2l.estimators import choose_estimator, estimator_classes  # noqa: E402
from l2l.estimators.base import Unroll  # noqa: E402
from l2l.meta_training import MetaConfig, MetaTrainer  # noqa: E402
from l2l.objectives import build_objective  # noqa: E402
from l2l.registry import build_optimizer  # noqa: E402
from l2l.tasks import build_task  # noqa: E402
from l2l.tasks.base import TaskFamily  # noqa: E402
from l2l.truncated_step import TruncatedStep  # noqa: E402
from l2l.unroll_lengths import LengthSchedule  # noqa: E402

POPULATION = ("pes", "es", "full_es")
ROOT = Path(__file__).resolve().parents[1]
#: the tasks (conf/task/<name>.yaml) and their families' kwargs: the paper's settings
PRESETS = {"mnist": ("mnist_mlp", {"hidden_sizes": (20,), "activation": "sigmoid",
                                   "batch_size": 128, "init_std": 0.01}),
           "quadratic": ("quadratic", {"dim": 10, "w_dist": "normal", "y_dist": "normal",
                                       "init_std": 0.01})}
#: train.py's meta-iterations timed after the first, which compiles (``--default-extra``), per
#: task: their median is train.py's time per meta-iteration
DEFAULT_EXTRA = {"mnist": 6, "quadratic": 50}
#: the tables printed per task (``--tables``)
TABLES = ("speed", "memory", "processes")
#: ``--quick``: every table at smoke size (well under a minute on 2 cores)
QUICK = {"particles": 4, "truncation": 4, "horizon": 12, "repeats": 1,
         "optimizers": ["learnable_adam"], "memory_truncations": [2, 8],
         "process_estimators": ["pes"], "process_iterations": 2}


def build_preset(preset: str, data_dir: str | None) -> TaskFamily:
    """The task ``task=<preset>`` builds (MNIST's data from ``data_dir`` if given)."""
    family, kwargs = PRESETS[preset]
    if family.startswith("mnist") and data_dir:
        kwargs = {**kwargs, "data_dir": data_dir}
    return build_task(family, **kwargs)


def population(task, opt, particles: int, horizon: int, offsets: bool) -> TruncatedStep:
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


def tbptt(name: str, task, opt, particles: int):
    """A closure running one back-propagating unroll of ``steps`` and its meta-gradient."""
    cls = choose_estimator(name, opt, second_order=False)
    est = cls(opt.update, build_objective("sum"), optimizer=opt)
    instances = task.sample(particles, 0, "train")
    params = instances.init_params
    initial, grads = instances.loss_and_grad(params, 0)
    state = opt.init(params)

    def run(steps: int) -> None:
        opt.zero_grad(set_to_none=True)
        est.estimate(Unroll(instances, params, grads, state, 0, steps, initial, steps))

    return cls.name, run


def bench(preset: str, task, opt_name: str, particles: int, K: int, horizon: int,
          repeats: int) -> None:
    opt = build_optimizer(opt_name)
    steps = particles * K
    pop = population(task, opt, particles, horizon, offsets=True)
    theta = pop.weights.vector().expand(particles, -1).clone()
    frozen = _time(lambda: pop.unroll(theta, K), repeats)
    rows = [("frozen", frozen, steps)]
    for name in POPULATION:
        cls = estimator_classes()[name]
        est = cls(opt.update, build_objective("sum"), optimizer=opt, sigma=0.01)
        own = population(task, opt, particles, horizon, offsets=cls.random_offsets)

        def run(est=est, own=own) -> None:
            opt.zero_grad(set_to_none=True)
            est.estimate_population(own, K)

        n = particles * horizon if name == "full_es" else steps
        rows.append((name, _time(run, 1 if name == "full_es" else repeats), n))
    for name in ("auto", "autograd"):
        label, run_steps = tbptt(name, task, opt, particles)
        rows.append((f"tbptt ({label})" if name == "auto" else label,
                     _time(lambda r=run_steps: r(K), repeats), steps))
    print(f"\ntask={preset}, {opt_name}: {particles} particles, truncation {K}, "
          f"full_es episode {horizon}")
    print(f"{'estimator':<22} {'s / call':>9} {'inner steps/s':>14} {'x frozen':>9}")
    for label, seconds, n in rows:
        rate = n / seconds
        goal = "  (goal <= 1.3)" if label == "pes" else ""
        print(f"{label:<22} {seconds:9.4f} {rate:14.1f} {(steps / frozen) / rate:9.2f}{goal}")


def _state_bytes(pop: TruncatedStep) -> int:
    tensors = [pop.params, pop.grads, *pop.state.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


MEMORY_ESTIMATORS = ("pes", "es", "surrogate", "autograd")


def memory(preset: str, task, opt_name: str, particles: int, truncations: list[int],
           data_dir: str | None, rss: bool) -> None:
    opt = build_optimizer(opt_name)
    state = _state_bytes(population(task, opt, particles, 4 * max(truncations), False))
    print(f"\nmemory per particle (KiB), task={preset}, {opt_name}, {particles} particles "
          f"(state: {state / particles / 1024:.1f} KiB, held by every estimator)")
    head = "".join(f" {name + ' saved':>15} {name + ' RSS':>13}" for name in MEMORY_ESTIMATORS)
    print(f"{'K':>4}{head}")
    for K in truncations:
        cells = []
        for name in MEMORY_ESTIMATORS:
            if name in POPULATION:
                est = estimator_classes()[name](opt.update, build_objective("sum"),
                                                optimizer=opt)
                pop = population(task, opt, particles, 4 * K, offsets=False)
                saved = saved_bytes(lambda est=est, pop=pop, K=K: est.estimate_population(pop, K))
            else:
                _, run = tbptt(name, task, opt, particles)
                saved = saved_bytes(lambda run=run, K=K: run(K))
            peak = peak_rss_bytes(__file__, {"preset": preset, "optimizer": opt_name,
                                             "estimator": name, "particles": particles,
                                             "steps": K, "data_dir": data_dir}) if rss else None
            rss_cell = "-" if peak is None else f"{peak / particles / 1024:.0f}"
            cells.append(f" {saved / particles / 1024:15.1f} {rss_cell:>13}")
        print(f"{K:4d}{''.join(cells)}")


def probe_memory(spec: dict) -> None:
    """In a fresh process (``--probe-memory``): one estimate of ``steps`` after a one-step
    warm-up; prints the RSS before it and the high-water mark during it."""
    from estimator_probes import reset_peak_rss, rss_status

    torch.set_num_threads(1)
    task = build_preset(spec["preset"], spec["data_dir"])
    opt = build_optimizer(spec["optimizer"])
    name, steps = spec["estimator"], spec["steps"]
    if name in POPULATION:
        est = estimator_classes()[name](opt.update, build_objective("sum"), optimizer=opt)
        pop = population(task, opt, spec["particles"], 4 * steps, offsets=False)

        def run(k: int) -> None:
            opt.zero_grad(set_to_none=True)
            est.estimate_population(pop, k)
    else:
        _, run = tbptt(name, task, opt, spec["particles"])
    run(1)
    before = rss_status("VmRSS")
    if not reset_peak_rss():
        print(json.dumps(None))
        return
    run(steps)
    print(json.dumps({"before": before, "peak": rss_status("VmHWM")}))


def processes(preset: str, opt_name: str, estimators: list[str], counts: list[int],
              particles: int, K: int, horizon: int, iterations: int,
              data_dir: str | None) -> None:
    print(f"\nprocesses, task={preset}, {opt_name}: {particles} particles in all (TBPTT: a "
          f"batch of {particles}), truncation {K}, horizon {horizon}, 1 thread per process, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"{'estimator':<10}" + "".join(f" {f'{n} proc. steps/s':>17}" for n in counts)
          + "  ratio")
    for estimator in estimators:
        spec = {"preset": preset, "optimizer": opt_name, "estimator": estimator,
                "particles": particles, "unroll": K, "horizon": horizon,
                "iterations": iterations, "data_dir": data_dir}
        rates = [ranks_steps_per_s(__file__, n, spec) for n in counts]
        cells = "".join(f" {rate:17.1f}" for rate in rates)
        print(f"{estimator:<10}{cells}  {rates[-1] / rates[0]:5.2f}x")


def _train_py_seconds(preset: str, estimator: str, iterations: int,
                      data_dir: str | None) -> tuple[float, str]:
    """Seconds per meta-iteration of ``train.py`` with its defaults: the median of the
    ``meta/seconds`` its metrics.jsonl records for each meta-iteration after the first (which
    compiles), validation and checkpoints excluded; and the threads its ``threads=auto`` chose
    (its log line)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, str(ROOT / "train.py"), "mode=meta_train", f"task={preset}",
                "meta=paper", "optimizer=lstm", f"meta.estimator={estimator}",
                f"meta.iterations={iterations}", "meta.val_every=1000000",
                "meta.checkpoint_every=1000000", "meta.val_instances=1", "logger=none",
                "progress=false", f"hydra.run.dir={tmp}/run"]
        if data_dir:
            args.append(f"data_dir={data_dir}")
        proc = subprocess.run(args, cwd=tmp, capture_output=True, text=True)
        metrics = Path(tmp) / "run" / "metrics.jsonl"
        rows = ([json.loads(line) for line in metrics.read_text().splitlines()]
                if metrics.exists() else [])
    seconds = [r["meta/seconds"] for r in rows if "meta/seconds" in r][1:]
    if "meta-training done" not in proc.stderr or not seconds:
        raise RuntimeError(f"train.py failed: {proc.stderr[-2000:]}")
    chose = re.search(r"threads: auto: (\d+)", proc.stderr)
    return statistics.median(seconds), f"{chose.group(1)} thread(s)" if chose else "?"


def _train_py_lstm(preset: str) -> dict:
    """The LSTM's hyperparameters ``train.py task=<preset> optimizer=lstm`` uses (composed by
    Hydra as train.py composes them: per task, e.g. no preprocessing on the quadratic)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from l2l.config_store import register_configs

    register_configs()  # conf/optimizer/*.yaml take their defaults from the classes
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={preset}", "optimizer=lstm"])
    return OmegaConf.to_container(cfg.optimizer.hyperparameters, resolve=True)


def _in_process_seconds(preset: str, estimator: str, threads: int, compile_: bool,
                        repeats: int, data_dir: str | None) -> float:
    """Seconds per meta-iteration of a ``MetaTrainer`` with the given settings (median)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    trainer = MetaTrainer(build_optimizer("lstm", **_train_py_lstm(preset)),
                          build_preset(preset, data_dir),
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
          f"train.py: median of its {extra} meta-iterations after the first; in-process: median of "
          f"{max(repeats, 5)}), "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'estimator':<10} {'train.py':>9} {'its threads':<12} {'best':>8} "
          f"{'best setting':<22} {'ratio':>6}  every in-process setting")
    for estimator in estimators:
        default, threads = _train_py_seconds(preset, estimator, 1 + extra, data_dir)
        is_population = estimator in POPULATION
        settings = [(t, c) for t in (1, 2) for c in ((False,) if is_population
                                                     else (False, True))]
        timed = {s: _in_process_seconds(preset, estimator, *s, max(repeats, 5), data_dir)
                 for s in settings}
        (best_threads, compile_), best = min(timed.items(), key=lambda kv: kv[1])
        label = _label(best_threads, compile_)
        every = ", ".join(f"{_label(*s)} {t:.3f}" for s, t in timed.items())
        print(f"{estimator:<10} {default:9.3f} {threads:<12} {best:8.3f} {label:<22} "
              f"{default / best:6.2f}  {every}  (goal <= 1.1)")
    torch.set_num_threads(1)


def _label(threads: int, compile_: bool) -> str:
    return f"{threads} thread(s){', compiled' if compile_ else ''}"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="every table at smoke size: " + ", ".join(f"{k}={v}" for k, v in
                                                                      QUICK.items()))
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per setting (median); --default-path: at least 5")
    parser.add_argument("--tasks", "--task", nargs="*", default=["quadratic", "mnist"],
                        choices=list(PRESETS), help="the tables' tasks (none: only --default-path)")
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES),
                        help="which tables to print for each of --tasks")
    parser.add_argument("--optimizers", nargs="+", default=["learnable_adam", "lstm"])
    parser.add_argument("--memory-optimizer", default="learnable_adam")
    parser.add_argument("--memory-truncations", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--rss-tasks", nargs="*", default=["mnist"], choices=list(PRESETS),
                        help="tasks whose memory table also measures peak RSS (subprocesses)")
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2],
                        help="process counts to compare (none: skip)")
    parser.add_argument("--process-estimators", nargs="+", default=["pes", "auto"])
    parser.add_argument("--process-optimizer", default="lstm")
    parser.add_argument("--process-iterations", type=int, default=20,
                        help="pes truncations timed per run (TBPTT: as many inner steps)")
    parser.add_argument("--default-path", action="store_true",
                        help="time train.py's defaults beside the best in-process setting")
    parser.add_argument("--default-tasks", nargs="+", default=["mnist"], choices=list(PRESETS))
    parser.add_argument("--default-estimators", nargs="+",
                        default=["auto", "sequence", "pes", "es", "full_es"])
    parser.add_argument("--default-extra", type=int, default=None,
                        help="train.py: the median of this many meta-iterations after the "
                        "first (default: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_EXTRA.items()) + ")")
    parser.add_argument("--data-dir", default=os.environ.get("L2L_DATA_DIR"))
    parser.add_argument("--probe-memory", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main() -> None:
    args = _arguments()
    if args.probe_memory:
        probe_memory(json.loads(args.probe_memory))
        return
    if args.worker:
        processes_worker(json.loads(args.worker), build_preset)
        return
    torch.set_num_threads(1)
    print(f"{cpu_model()}, {os.cpu_count()} cores, 1 torch thread, torch {torch.__version__}, "
          f"load {os.getloadavg()[0]:.2f}")
    for preset in args.tasks:
        task = build_preset(preset, args.data_dir)
        for opt in args.optimizers if "speed" in args.tables else ():
            bench(preset, task, opt, args.particles, args.truncation, args.horizon,
                  args.repeats)
        if "memory" in args.tables:
            memory(preset, task, args.memory_optimizer, args.particles, args.memory_truncations,
                   args.data_dir, rss=preset in args.rss_tasks)
        if args.processes and "processes" in args.tables:
            processes(preset, args.process_optimizer, args.process_estimators, args.processes,
                      args.particles, args.truncation, args.horizon, args.process_iterations,
                      args.data_dir)
    if args.default_path:
        for preset in args.default_tasks:
            extra = args.default_extra or DEFAULT_EXTRA[preset]
            default_path(preset, args.default_estimators, extra, args.repeats, args.data_dir)


if __name__ == "__main__":
    main()
