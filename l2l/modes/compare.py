"""``mode=compare`` (the default): the optimizer under study against tuned baselines.

    python train.py                                   # lstm vs the baselines on quadratics
    python train.py optimizer=lstm checkpoint=lstm-quadratic   # a trained one: no meta-training

Every baseline of ``eval.baselines`` has its learning rate tuned on validation problems, the
learned optimizer is meta-trained with the run's settings (or loaded from ``checkpoint=``), and
all of them then meet the same held-out test problems. Writes the report.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from l2l.interface import BatchedOptimizer
from l2l.loading import load_optimizer
from l2l.meta_run import check_resume, meta_train
from l2l.progress import track
from l2l.protocol import evaluate, tune_and_evaluate
from l2l.registry import is_learned
from l2l.run_config import study_optimizer
from l2l.run_outputs import report
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger


def check(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path) -> None:
    """Refuse now a meta-training this run could not resume (e.g. ``seed=`` changed)."""
    if is_learned(cfg.optimizer.name) and cfg.checkpoint is None:
        check_resume(cfg, task, device, run_dir)


def run(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
        logger: RunLogger, checked: None = None) -> float:
    """Tune and evaluate every baseline, then meta-train (or load) the optimizer under study
    and evaluate it alike; write the report and return the best final loss."""
    records = [tune_and_evaluate(cfg, name, task, device, logger)
               for name in track(cfg.eval.baselines, "baselines", enabled=cfg.progress)]
    studied = study(cfg, task, device, run_dir, logger)
    if studied is not None:
        optimizer, name = studied
        records.append(evaluate(cfg, optimizer, task, device, name=name, tuned_lr=None))
    return report(cfg, records, run_dir, logger)


def study(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
          logger: RunLogger) -> tuple[BatchedOptimizer, str] | None:
    """The optimizer under study and its row's name: a learned one loaded from ``checkpoint=``
    or meta-trained now, a hand-designed one as configured; None when it is one of the
    baselines already evaluated (tuned)."""
    name = cfg.optimizer.name
    if is_learned(name):
        if cfg.checkpoint:
            learned = load_optimizer(cfg.checkpoint, device, expected=name).optimizer
        else:
            learned = meta_train(cfg, task, device, run_dir, logger)
        return learned, learned.name
    if name in cfg.eval.baselines:
        return None
    return study_optimizer(cfg), name
