"""``mode=tune``: tune a hand-designed optimizer's learning rate, then evaluate it.

    python train.py mode=tune optimizer=adam task=quadratic

The learning rate is the best of ``tune.low..tune.high`` on validation problems; the test
problems are then the run's held-out ones (``eval.*``). Writes the run's report.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from l2l.protocol import tune_and_evaluate
from l2l.run_config import plain
from l2l.run_outputs import report
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger


def check(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path) -> None:
    return None


def run(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
        logger: RunLogger, checked: None = None) -> float:
    hyper = plain(cfg.optimizer.hyperparameters)
    records = [tune_and_evaluate(cfg, cfg.optimizer.name, task, device, logger, hyper)]
    return report(cfg, records, run_dir, logger)
