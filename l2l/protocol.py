"""The fair-comparison protocol every mode follows: tune a baseline, evaluate an optimizer.

* test problems are ``eval.instances`` instances of ``(eval.seed, "test")``; tuning and
  meta-training validation use ``(eval.seed, "valid")``; meta-training draws its tasks from
  ``(seed, "train")``. So a sweep over ``seed`` changes the meta-training, never the test set;
* every optimizer starts from a fresh state on the same instances and minibatches;
* baselines get their learning rate tuned on validation problems of the same task; a learned
  optimizer is meta-trained (or loaded) with the run's settings.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from omegaconf import DictConfig

from l2l.evaluation import (
    EvaluationRecord,
    TuneResult,
    evaluate_optimizer,
    tune_learning_rate,
)
from l2l.interface import BatchedOptimizer
from l2l.learned.base import LearnedOptimizer
from l2l.progress import progress_bar
from l2l.registry import build_optimizer
from l2l.report.cells import fmt
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")

UNTRAINED_NOTE = ("untrained: meta-training never beat the initial optimizer, so this row is the "
                  "untrained {name}")


def lr_grid(low: float = 1e-4, high: float = 10.0, per_decade: int = 3) -> list[float]:
    """The tuning grid (``tune.low``, ``tune.high``, ``tune.per_decade``): log-spaced learning
    rates ``low .. high`` with ``per_decade`` values per factor of 10."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high for the lr grid, got low={low}, high={high}")
    if per_decade < 1:
        raise ValueError(f"per_decade must be >= 1, got {per_decade}")
    count = round(math.log10(high / low) * per_decade)
    return [low * 10 ** (k / per_decade) for k in range(count + 1)]


class TuningFailed(ValueError):
    """A baseline diverged at every learning rate of the grid; ``result`` keeps the grid."""

    def __init__(self, message: str, result: TuneResult) -> None:
        super().__init__(message)
        self.result = result


def tune(cfg: DictConfig, baseline: BatchedOptimizer, task: TaskFamily, device: torch.device,
         logger: RunLogger) -> TuneResult:
    """The best learning rate of ``baseline`` on validation problems (all lrs as one batch).
    The whole grid's scores go to the logger. Raises :class:`TuningFailed` if it diverged at
    every learning rate of the grid."""
    grid = lr_grid(cfg.tune.low, cfg.tune.high, cfg.tune.per_decade)
    with progress_bar(cfg.tune.steps, f"tune {baseline.name}", enabled=cfg.progress,
                      leave=False) as bar:
        result = tune_learning_rate(baseline, task, grid=grid, num_instances=cfg.tune.instances,
                                    steps=cfg.tune.steps, seed=cfg.eval.seed, device=device,
                                    progress=bar.step)
    logger.log_tuning(baseline.name, result)
    if not math.isfinite(min(result.scores)):
        raise TuningFailed(f"{baseline.name} diverged at every learning rate in the grid "
                           f"{cfg.tune.low}..{cfg.tune.high}: widen tune.low/tune.high", result)
    log.info("tuned %s: lr=%.3g (validation final loss %.4g)", baseline.name, result.best_lr,
             min(result.scores))
    return result


def edge_notes(cfg: DictConfig, result: TuneResult) -> list[str]:
    """A caveat when the best learning rate is an end of the grid: the optimum may lie beyond
    it, and the baseline may be under-tuned, an unfair comparison. Names the override to widen."""
    if result.edge is None:
        return []
    side, bound = ("high", cfg.tune.high * 10) if result.edge == "high" else ("low",
                                                                             cfg.tune.low / 10)
    return [f"the best learning rate {fmt(result.best_lr, 3)} is the {side}est value of "
            f"the tuning grid, so the optimum may lie beyond it; widen the grid with "
            f"tune.{side}={fmt(bound, 3)}"]


def evaluate(cfg: DictConfig, optimizer: BatchedOptimizer, task: TaskFamily,
             device: torch.device, *, name: str, tuned_lr: float | None) -> EvaluationRecord:
    """Run ``optimizer`` on the run's held-out test problems (the same for every optimizer)."""
    learned = isinstance(optimizer, LearnedOptimizer)
    with progress_bar(cfg.eval.steps, f"evaluate {name}", enabled=cfg.progress,
                      leave=False) as bar:
        record = evaluate_optimizer(optimizer, task, instances=cfg.eval.instances,
                                    seed=cfg.eval.seed, steps=cfg.eval.steps, name=name,
                                    learned=learned, tuned_lr=tuned_lr,
                                    threshold=cfg.eval.threshold, device=device,
                                    progress=bar.step)
    if learned and optimizer.meta_trained_iterations == 0:
        record.notes.append(UNTRAINED_NOTE.format(name=optimizer.name))
        record.status = "untrained"
        log.warning("%s: %s", name, record.notes[-1])
    log.info("%-9s final loss %.4g ± %.2g (%d diverged)", name, record.final_loss_mean,
             record.final_loss_ci95, record.diverged)
    return record


def tune_and_evaluate(cfg: DictConfig, name: str, task: TaskFamily, device: torch.device,
                      logger: RunLogger, hyperparameters: dict[str, Any] | None = None,
                      ) -> EvaluationRecord:
    """Tune a baseline's learning rate on validation problems, then evaluate it on the test
    problems. A baseline that cannot be tuned becomes a failed row, not a failed run."""
    baseline = build_optimizer(name, **(hyperparameters or {}))
    try:
        result = tune(cfg, baseline, task, device, logger)
    except ValueError as error:
        log.warning("%s", error)
        record = EvaluationRecord.failed(name, baseline.name, False, f"failed to tune: {error}")
        if isinstance(error, TuningFailed):
            record.tuning = error.result
        return record
    record = evaluate(cfg, baseline.with_hyperparameters(lr=result.best_lr), task, device,
                      name=name, tuned_lr=result.best_lr)
    record.tuning = result
    for note in edge_notes(cfg, result):
        log.warning("%s: %s", name, note)
        record.notes.append(note)
    return record


def check_task_data(task: TaskFamily, device: torch.device) -> None:
    """Sample one validation problem now, so that a task whose data is missing (MNIST not in
    ``data_dir`` and not downloadable) fails before a run directory's logger or wandb run is
    started, rather than leaving an empty wandb run behind. A mixture checks every component
    (one sample of a mixture would only touch one)."""
    components = getattr(task, "components", None)
    if components:
        for component in components:
            check_task_data(component, device)
    else:
        task.sample(1, 0, "valid", device=device)
