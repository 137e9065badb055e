"""What a suite run is checked to need before any work, and how a tuned baseline's long run is
read at a task's horizon: shared by the run and its report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from l2l.study_checkpoints import Checkpoint, by_group
from l2l.suite.spec import SuiteTask
from l2l.tasks.base import TaskFamily


@dataclass
class SuitePlan:
    """Everything a suite run needs, checked before any work (:func:`l2l.suite.run.prepare`)."""

    name: str
    reference: str
    speedup_cap: int
    bootstrap_reps: int
    cache_dir: Path
    tasks: list[tuple[SuiteTask, DictConfig, TaskFamily]]
    checkpoints: list[Checkpoint]
    skipped: list[tuple[SuiteTask, str]] = field(default_factory=list)

    @property
    def groups(self) -> dict[str, list[Checkpoint]]:
        return by_group(self.checkpoints)


def _curve(values: list[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def at_horizon(entry: dict[str, Any], horizon: int) -> tuple[float, float]:
    """A long baseline run's mean test loss and its 95% CI at step ``horizon``."""
    mean, ci = _curve(entry.get("mean_curve") or []), _curve(entry.get("ci_curve") or [])
    if len(mean) <= horizon:
        return math.nan, math.nan
    return mean[horizon], ci[horizon] if len(ci) > horizon else math.nan
