"""``mode=evaluate``: run one optimizer, as it is, on the run's held-out test problems.

    python train.py mode=evaluate optimizer=adam optimizer.hyperparameters.lr=0.03
    python train.py mode=evaluate checkpoint=lstm-quadratic   # a learned one: its checkpoint

No tuning: a hand-designed optimizer runs with the hyperparameters given, a learned one with
the weights of ``checkpoint=`` (a file, a run directory or a zoo name). Writes the report.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from l2l.loading import load_optimizer
from l2l.protocol import evaluate
from l2l.registry import is_learned
from l2l.run_config import study_optimizer
from l2l.run_outputs import report
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger


def check(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path) -> None:
    return None


def run(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
        logger: RunLogger, checked: None = None) -> float:
    if is_learned(cfg.optimizer.name):
        optimizer = load_optimizer(cfg.checkpoint, device, expected=cfg.optimizer.name).optimizer
    else:
        optimizer = study_optimizer(cfg)
    records = [evaluate(cfg, optimizer, task, device, name=optimizer.name, tuned_lr=None)]
    return report(cfg, records, run_dir, logger)
