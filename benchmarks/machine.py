"""What the benchmarks print about the machine they ran on (their numbers mean nothing without)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sgemm_rate(m: int, k: int, n: int, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (FLOP/s) on an ``(m, k) x (k, n)`` product, now, on
    the current threads: the best of ``repeats`` timings after one warm-up. Each benchmark
    passes the shape its arithmetic bound is about, since the rate depends on the shape."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / min(times[1:])
