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

from l2l.evaluation import EvaluationRecord
from l2l.loading import load_optimizer
from l2l.meta_run import check_resume, meta_train
from l2l.progress import Progress
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
    return report(cfg, compare(cfg, task, device, run_dir, logger), run_dir, logger)


def compare(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
            logger: RunLogger) -> list[EvaluationRecord]:
    """Tune every baseline, meta-train (or load) the learned optimizer, evaluate all alike."""
    records = []
    with Progress(len(cfg.eval.baselines), "baselines", enabled=cfg.progress) as bar:
        for name in cfg.eval.baselines:
            records.append(tune_and_evaluate(cfg, name, task, device, logger))
            bar.update(1)
    study = cfg.optimizer.name
    if is_learned(study):
        if cfg.checkpoint:
            learned = load_optimizer(cfg.checkpoint, device, expected=study).optimizer
        else:
            learned = meta_train(cfg, task, device, run_dir, logger)
        records.append(evaluate(cfg, learned, task, device, name=learned.name, tuned_lr=None))
    elif study not in cfg.eval.baselines:
        records.append(evaluate(cfg, study_optimizer(cfg), task, device, name=study,
                                tuned_lr=None))
    return records
