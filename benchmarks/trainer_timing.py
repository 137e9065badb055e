"""Time a meta-training loop the same way on every rank (for the benchmarks run under torchrun).

One warm-up iteration first (compilation, first-touch allocation), validation switched off
(it runs on the writer alone and would time one rank's extra work), and every rank meets before
the clock starts and after it stops, so the time is the slowest rank's.
"""

from __future__ import annotations

import time
from typing import Any


def time_training(trainer: Any, sync: Any) -> float:
    """Seconds for ``trainer.train()`` after one warm-up iteration."""
    trainer.validate = lambda: 0.0
    trainer.train(stop_after=1)
    sync.any(False)
    start = time.perf_counter()
    trainer.train()
    sync.any(False)
    return time.perf_counter() - start
