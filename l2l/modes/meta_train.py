"""``mode=meta_train``: meta-train the learned optimizer ``optimizer=`` on ``task=``.

    python train.py mode=meta_train optimizer=lstm task=quadratic run_name=lstm1

The best validated weights go to ``<run>/checkpoints/best.pt`` (``latest.pt`` resumes a killed
run: rerun the same command), the curves to ``meta_training.png``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from l2l.meta_run import check_resume, meta_train
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger


def check(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path) -> None:
    """Refuse now a run directory this run could not resume from (e.g. ``seed=`` changed)."""
    if cfg.checkpoint is None:
        check_resume(cfg, task, device, run_dir)


def run(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
        logger: RunLogger, checked: None = None) -> None:
    meta_train(cfg, task, device, run_dir, logger)
    return None
