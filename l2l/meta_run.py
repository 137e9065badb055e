"""Meta-training a learned optimizer as a run does it: the trainer with the run's logger,
progress bar, preemption handling and resume, and the checks on what it produced.

Used by the ``meta_train`` mode and by ``compare`` (which meta-trains the optimizer it then
evaluates), so it sits below both.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import closing
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
from l2l.run_config import meta_config, run_identity, study_optimizer
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")


class MetaTrainingFailed(RuntimeError):
    """Meta-training ended without ever beating the untrained optimizer."""


@dataclass
class LoggingCallback(Callback):
    """Meta-training events to the run logger, the progress bar and the log."""

    logger: RunLogger
    bar: Progress

    def on_task_end(self, trainer: MetaTrainer, iteration: int, meta_loss: float) -> None:
        self.logger.log({"meta/loss": meta_loss, "meta/skipped": trainer.skipped,
                         "meta/seconds": trainer.seconds}, iteration)
        self.bar.update(1, loss=meta_loss)

    def on_validation(self, trainer: MetaTrainer, iteration: int, val_loss: float,
                      improved: bool) -> None:
        self.logger.log({"val/final_loss": val_loss,
                         "val/best_final_loss": trainer.validator.best_val}, iteration)
        log.info("iteration %d: validation final loss %.4g (best %.4g)%s", iteration, val_loss,
                 trainer.validator.best_val, " *" if improved else "")


def meta_train(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
               logger: RunLogger) -> LearnedOptimizer:
    """Meta-train the learned optimizer ``optimizer=`` on ``task`` (resuming from ``run_dir``
    if it holds a checkpoint); returns it with its best validated weights."""
    torch.manual_seed(cfg.seed)
    learned = study_optimizer(cfg)
    assert isinstance(learned, LearnedOptimizer)
    meta = meta_config(cfg)
    bar = Progress(meta.iterations, "meta-train", enabled=cfg.progress)
    stop = GracefulStop()
    if cfg.get("resume_from") is not None and distributed.is_writer():
        log.info(checkpoint.carry_in(cfg.resume_from, run_dir / "checkpoints" / "latest.pt",
                                     run_dir / "checkpoints" / "best.pt"))
    distributed.current().any(False)  # a collective: the other ranks wait for the file
    trainer = MetaTrainer(learned, task, meta, run_dir=run_dir, device=device,
                          callbacks=[LoggingCallback(logger, bar), stop],
                          identity=run_identity(cfg), sync=distributed.current())
    trainer.validator.show_progress = cfg.progress
    if trainer.resumed_from is not None:
        dropped = logger.drop_steps_after(trainer.iteration)
        log.info("resuming meta-training from iteration %d (%s%s)", trainer.iteration,
                 trainer.resumed_from, f"; {dropped} replayed metric rows dropped"
                 if dropped else "")
        bar.update(trainer.iteration)
    log.info("meta-training %s with the %s estimator%s", learned.name, trainer.estimator.name,
             ", compiled" if trainer.compiled else "")
    with closing(bar), stop:
        try:
            result = trainer.train()
        except MetaTrainingInterrupted as interrupted:
            interrupted.signal_number = stop.signal_number
            raise
    log.info("meta-training done: %d iterations, best validation final loss %.4g (iteration "
             "%s), %d skipped meta-steps; best weights in %s", result["iterations"],
             result["best_val_loss"], result["best_iteration"], result["skipped"],
             trainer.best_path)
    logger.summary({"meta/best_val_final_loss": result["best_val_loss"],
                    "meta/best_iteration": result["best_iteration"],
                    "meta/skipped": result["skipped"]})
    logger.log_artifact(trainer.best_path, name=f"{learned.name}-{cfg.task.name}", type="model")
    if trainer.sync.is_writer:
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
    if not result["best_iteration"] and meta.iterations > 0:
        message = (f"meta-training never beat the untrained {learned.name} optimizer (its "
                   f"validation {untrained:.4g}; later ones {_range(history[1:])}), so the best "
                   f"checkpoint {trainer.best_path} is the untrained optimizer. "
                   + ("" if meta.second_order else "Try exact meta-gradients "
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
            MetaTrainer(study_optimizer(cfg), task, meta_config(cfg), run_dir=run_dir,
                        device=device, identity=run_identity(cfg))
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
