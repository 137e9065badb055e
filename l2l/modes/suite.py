"""The held-out suite in one command (``mode=suite``, with ``experiment=suite``).

    python train.py experiment=suite checkpoints=[a.pt,rnnprop-mnist-mixture]

Learned optimizers scored as the field scores them: every checkpoint on every task of the
suite (``conf/suite/*.yaml``), against baselines tuned per task at its horizon and cached, with
the IQM over tasks x meta-training seeds and its stratified-bootstrap interval. The work lives
in :mod:`l2l.suite`; this module is the mode's two steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from l2l.suite import SuitePlan, prepare, run_suite
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger


def check(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path) -> SuitePlan:
    """The whole suite checked before any work (every checkpoint loads, every task builds)."""
    return prepare(cfg, device)


def run(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
        logger: RunLogger, checked: SuitePlan) -> None:
    run_suite(cfg, device, run_dir, logger, checked)
    return None
