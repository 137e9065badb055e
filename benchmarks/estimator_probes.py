"""What ``bench_estimators.py`` measures outside its own timing loop: the bytes autograd saves,
the peak RSS of one estimate in a fresh process, and one rank of a multi-process run.

Kept apart so that the benchmark reads as its tables; see its docstring for what each number
means and why it is measured this way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from trainer_timing import time_training  # benchmarks/trainer_timing.py

ROOT = Path(__file__).resolve().parents[1]
#: glibc maps every allocation above this many bytes on its own and unmaps it when freed (a
#: fixed threshold: glibc's adaptive one rises after the first large free, after which freed
#: tensors may stay in the heap and the RSS need not follow what is alive)
MMAP_THRESHOLD = 65536


class _Saved:
    """A tensor autograd saved for a backward; counted as alive until autograd drops it."""

    def __init__(self, tensor: torch.Tensor, meter: dict[str, int]) -> None:
        self.tensor, self.meter = tensor, meter
        self.bytes = tensor.numel() * tensor.element_size()
        meter["alive"] += self.bytes
        meter["peak"] = max(meter["peak"], meter["alive"])

    def __del__(self) -> None:
        self.meter["alive"] -= self.bytes


def saved_bytes(run: Callable[[], Any]) -> int:
    """The peak bytes autograd holds for backward passes while ``run`` executes (the optimizee
    gradients' own short-lived graphs included)."""
    meter = {"alive": 0, "peak": 0}
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Saved(t, meter),
                                                  lambda saved: saved.tensor):
        run()
    return meter["peak"]


def rss_status(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process from ``/proc/self/status``, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (``VmHWM``) to the current RSS; False where the
    kernel does not allow it (not Linux, or before 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(script: str, spec: dict[str, Any]) -> int | None:
    """How far the RSS rose during one estimate (``script --probe-memory spec`` in a fresh
    process); None where the high-water mark cannot be reset."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, script, "--probe-memory", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the memory probe {spec} failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return None if result is None else max(0, result["peak"] - result["before"])


def processes_worker(spec: dict[str, Any], build_preset: Callable[..., Any]) -> None:
    """One rank of a ``torchrun`` run (or the only process): meta-train, time the loop after
    one warm-up iteration; rank 0 prints the inner steps per second of all ranks together."""
    from l2l.env import distributed
    from l2l.meta_training import MetaConfig, MetaTrainer
    from l2l.registry import build_optimizer

    torch.set_num_threads(1)
    sync = distributed.init_group()
    torch.manual_seed(0)
    estimator, P = spec["estimator"], spec["particles"]
    K, H, iterations = spec["unroll"], spec["horizon"], spec["iterations"]
    if estimator in ("pes", "es"):  # one truncation of every particle per iteration
        steps = P * K
    elif estimator == "full_es":  # one whole episode per iteration
        steps, iterations = P * H, max(1, iterations * K // H)
    else:  # TBPTT: one task of H steps of a batch of P per iteration
        steps, iterations = P * H, max(1, iterations * K // H)
    config = MetaConfig(iterations=iterations + 1, horizon=H, unroll=K, batch_size=P,
                        particles=P, estimator=estimator, val_every=10**9, val_instances=1,
                        compile=False)
    trainer = MetaTrainer(build_optimizer(spec["optimizer"]),
                          build_preset(spec["preset"], spec["data_dir"]), config, sync=sync)
    seconds = time_training(trainer, sync)
    if sync.is_writer:
        print(json.dumps({"steps_per_s": iterations * steps / seconds}), flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def ranks_steps_per_s(script: str, processes: int, spec: dict[str, Any]) -> float:
    """Inner steps per second of ``script --worker spec`` in ``processes`` processes (torchrun
    if more than one). A failed launch is tried once more (a rendezvous can lose a race for
    its port on a busy machine); a second failure raises with the ranks' output."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                 "--standalone"] if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for _ in range(2):
        proc = subprocess.run([*launcher, script, "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])["steps_per_s"]
    raise RuntimeError(f"{processes} process(es), {spec['estimator']} failed twice: "
                       f"{proc.stderr[-3000:]}")
