"""Meta-training a learned optimizer as a run does it: the trainer with the run's logger,
progress bar, preemption handling and resume, and the checks on what it produced.

Used by the ``meta_train`` mode and by ``compare`` (which meta-trains the optimizer it then
evaluates), so it sits below both.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from l2l import checkpoint
from l2l.env import distributed
from l2l.env.preemption import GracefulStop
from l2l.learned.base import LearnedOptimizer
from l2l.meta_training import Callback, MetaTrainer, MetaTrainingInterrupted
from l2l.progress import Progress
from l2l.report.figures import plot_meta_training
from l2l.run_config import meta_trainer
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")


class MetaTrainingFailed(RuntimeError):
    """Meta-training ended without ever beating the untrained optimizer."""


@dataclass
class LoggingCallback(Callback):
    """Meta-training events to the run logger, a progress bar and the log: the bar lives from
    the trainer's start (at its iteration, on a resume) to its end, and a finished run's
    summary and best weights go to the logger."""

    logger: RunLogger
    task_name: str
    show_progress: bool = True
    bar: Progress | None = None

    def on_train_begin(self, trainer: MetaTrainer) -> None:
        self.bar = Progress(trainer.config.iterations, "meta-train", enabled=self.show_progress)
        if trainer.resumed_from is not None:
            dropped = self.logger.drop_steps_after(trainer.iteration)
            log.info("resuming meta-training from iteration %d (%s%s)", trainer.iteration,
                     trainer.resumed_from, f"; {dropped} replayed metric rows dropped"
                     if dropped else "")
            self.bar.update(trainer.iteration)
        log.info("meta-training %s with the %s estimator%s", trainer.optimizer.name,
                 trainer.estimator.name, ", compiled" if trainer.compiled else "")

    def on_task_end(self, trainer: MetaTrainer, iteration: int, meta_loss: float) -> None:
        self.logger.log({"meta/loss": meta_loss, "meta/skipped": trainer.skipped,
                         "meta/seconds": trainer.seconds}, iteration)
        if self.bar is not None:
            self.bar.update(1, loss=meta_loss)

    def on_validation(self, trainer: MetaTrainer, iteration: int, val_loss: float,
                      improved: bool) -> None:
        self.logger.log({"val/final_loss": val_loss,
                         "val/best_final_loss": trainer.validator.best_val}, iteration)
        log.info("iteration %d: validation final loss %.4g (best %.4g)%s", iteration, val_loss,
                 trainer.validator.best_val, " *" if improved else "")

    def on_train_end(self, trainer: MetaTrainer, result: dict | None) -> None:
        if self.bar is not None:
            self.bar.close()
        if result is None:
            return
        log.info("meta-training done: %d iterations, best validation final loss %.4g "
                 "(iteration %s), %d skipped meta-steps; best weights in %s",
                 result["iterations"], result["best_val_loss"], result["best_iteration"],
                 result["skipped"], result["best_path"])
        self.logger.summary({"meta/best_val_final_loss": result["best_val_loss"],
                             "meta/best_iteration": result["best_iteration"],
                             "meta/skipped": result["skipped"]})
        self.logger.log_artifact(result["best_path"], type="model",
                                 name=f"{trainer.optimizer.name}-{self.task_name}")


def meta_train(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
               logger: RunLogger) -> LearnedOptimizer:
    """Meta-train the learned optimizer ``optimizer=`` on ``task`` (resuming from ``run_dir``
    if it holds a checkpoint); returns it with its best validated weights."""
    torch.manual_seed(cfg.seed)
    sync = distributed.current()
    if cfg.get("resume_from") is not None and sync.is_writer:
        log.info(checkpoint.carry_in(cfg.resume_from, run_dir / "checkpoints" / "latest.pt",
                                     run_dir / "checkpoints" / "best.pt"))
    sync.any(False)  # a collective: the other ranks wait for the file
    stop = GracefulStop()
    trainer = meta_trainer(cfg, task, device, run_dir, sync=sync,
                           callbacks=[LoggingCallback(logger, cfg.task.name, cfg.progress), stop])
    learned = trainer.optimizer
    trainer.validator.show_progress = cfg.progress
    try:
        result = trainer.train()
    except MetaTrainingInterrupted as interrupted:
        interrupted.signal_number = stop.signal_number
        raise
    if sync.is_writer:
        draw_meta_training(trainer, run_dir)
    learned.load_state_dict(trainer.validator.best_or(learned.state_dict()))
    learned.meta_trained_iterations = result["best_iteration"] or 0
    untrained = result["untrained_val_loss"]
    history = [v for v in result["history"]["val_loss"] if math.isfinite(v)]
    if untrained is not None and history and trainer.validator.blew_up(untrained, max(history)):
        scale = "log loss" if trainer.validator.log_scale else "loss"
        log.warning("validation %s rose to %.3g, over 100x the untrained optimizer's loss (its "
                    "%s %.3g): meta-training is unstable (lower meta.meta_lr or set "
                    "meta.clip_grad_norm)", scale, max(history), scale, untrained)
    if not result["best_iteration"] and trainer.config.iterations > 0:
        message = (f"meta-training never beat the untrained {learned.name} optimizer (its "
                   f"validation {untrained:.4g}; later ones {_range(history[1:])}), so the best "
                   f"checkpoint {result['best_path']} is the untrained optimizer. "
                   + ("" if trainer.config.second_order else "Try exact meta-gradients "
                      "(meta.second_order=true: the first-order ones misled every Adam-normalised "
                      "optimizer on MNIST), ")
                   + "lower meta.meta_lr, set meta.clip_grad_norm, lower the output scale, or "
                   "train longer")
        if cfg.mode == "meta_train":
            raise MetaTrainingFailed(message)
        log.warning("%s", message)
    return learned


def check_resume(cfg: DictConfig, task: TaskFamily, device: torch.device,
                 run_dir: Path) -> None:
    """Raise now, before any work and before the run's record is written, if meta-training
    could not resume from ``run_dir`` (changed settings, a best.pt of another optimizer):
    the trainer's own checks, on a trainer that is then dropped. Its warnings are the real
    trainer's to give."""
    torch.manual_seed(cfg.seed)
    level = log.level
    log.setLevel(logging.ERROR)  # what it would log, the real trainer logs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta_trainer(cfg, task, device, run_dir)
    finally:
        log.setLevel(level)


def _range(values: list[float]) -> str:
    return f"{min(values):.4g} .. {max(values):.4g}" if values else "none"


def draw_meta_training(trainer: MetaTrainer, run_dir: Path) -> Path | None:
    """``meta_training.png`` (meta-loss and validation curves) from the trainer's history, which
    a resumed run restores from its checkpoint, so the figure always covers the whole run. A
    figure that fails to draw is a warning: the weights matter more than the picture."""
    try:
        return plot_meta_training(run_dir / "meta_training.png", trainer.history,
                                  title=f"meta-training {trainer.optimizer.name}")
    except Exception as error:  # matplotlib trouble must not lose a finished meta-training
        log.warning("could not draw meta_training.png: %s", error)
        return None
