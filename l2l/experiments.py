"""The experiment modes behind ``train.py``: meta-train, tune, evaluate, compare.

Each mode is a plain function of the resolved config (``cfg``: the tree in ``conf/``), the task,
the device and the run directory, so that ``train.py`` is only Hydra glue and the modes can be
called from notebooks and tests. Fairness rules every mode follows:

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
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from l2l import checkpoint, distributed
from l2l.checkpoint import load_learned_optimizer
from l2l.config_checks import check_meta_keys
from l2l.evaluation import (
    EvaluationRecord,
    TuneResult,
    evaluation_record,
    lr_grid,
    run_optimizer,
    tune_learning_rate,
)
from l2l.interface import BatchedOptimizer
from l2l.learned.base import LearnedOptimizer
from l2l.meta_training import Callback, MetaConfig, MetaTrainer, MetaTrainingInterrupted
from l2l.preemption import GracefulStop
from l2l.progress import Progress
from l2l.registry import build_optimizer, is_learned
from l2l.report import fmt, plot_meta_training
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")


def plain(node: Any) -> Any:
    """A config node as plain Python containers (lists stay lists; registries tuple them)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def study_optimizer(cfg: DictConfig) -> BatchedOptimizer:
    """The optimizer under study (``optimizer=``) built from its config, untrained."""
    return build_optimizer(cfg.optimizer.name, **plain(cfg.optimizer.hyperparameters))


def meta_config(cfg: DictConfig) -> MetaConfig:
    check_meta_keys(cfg.meta)  # an unknown key: one line with the closest option
    return MetaConfig(**plain(cfg.meta), seed=cfg.seed, val_seed=cfg.eval.seed)


class MetaTrainingFailed(RuntimeError):
    """Meta-training ended without ever beating the untrained optimizer."""


def task_identity(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task config as a run's identity: its name, family and kwargs, but not where its data
    lives (moving the data may not stop a resume, nor make two tasks differ)."""
    kwargs = {k: v for k, v in (task.get("kwargs") or {}).items()
              if k not in ("data_dir", "download")}
    return {"name": task.get("name"), "family": task.get("family"), "kwargs": kwargs}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What a resumed meta-training run must share with the original: the task -- the
    architecture and meta settings are checked by the trainer itself."""
    return {"task": task_identity(plain(cfg.task))}


# ---- meta-training -----------------------------------------------------------------------------


@dataclass
class LoggingCallback(Callback):
    """Meta-training events to the run logger, the progress bar and the log."""

    logger: RunLogger
    bar: Progress

    def on_task_end(self, trainer: MetaTrainer, iteration: int, meta_loss: float) -> None:
        self.logger.log({"meta/loss": meta_loss, "meta/skipped": trainer.skipped}, iteration)
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
    with bar, stop:
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MetaTrainer(study_optimizer(cfg), task, meta_config(cfg), run_dir=run_dir,
                    device=device, identity=run_identity(cfg))


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


def learned_from_checkpoint(cfg: DictConfig, device: torch.device) -> LearnedOptimizer:
    """The learned optimizer stored in ``checkpoint=``: a checkpoint file, or the name of a
    pretrained optimizer shipped in :mod:`l2l.pretrained` (``checkpoint=lstm-quadratic``)."""
    if cfg.checkpoint is None:
        raise ValueError("no checkpoint given: pass checkpoint=<run>/checkpoints/best.pt")
    return load_checkpoint(cfg.checkpoint, device, expected=cfg.optimizer.name)


def load_checkpoint(checkpoint: str | Path, device: torch.device,
                    expected: str | None = None) -> LearnedOptimizer:
    """The learned optimizer of a checkpoint file or zoo name, with the meta-training iteration
    its weights come from (so that an untrained one is flagged in reports)."""
    from l2l.pretrained import resolve

    path = resolve(checkpoint)
    learned = load_learned_optimizer(path, device)
    if expected is not None and learned.name != expected:
        log.info("checkpoint %s holds a %s optimizer (optimizer=%s ignored)", checkpoint,
                 learned.name, expected)
    log.info("loaded the learned optimizer from %s (%s: %s)", path, learned.name,
             learned.extra_repr())
    from l2l.pretrained import entry_of, suits_line

    record = entry_of(checkpoint)
    if record is not None:  # a zoo entry: what it suits and fails on, in one line
        log.info(suits_line(record))
    return learned


UNTRAINED_NOTE = ("untrained: meta-training never beat the initial optimizer, so this row is the "
                  "untrained {name}")


# ---- tuning and evaluation ---------------------------------------------------------------------


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
    with Progress(cfg.tune.steps, f"tune {baseline.name}", enabled=cfg.progress,
                  leave=False) as bar:
        result = tune_learning_rate(baseline, task, grid=grid, num_instances=cfg.tune.instances,
                                    steps=cfg.tune.steps, seed=cfg.eval.seed, device=device,
                                    progress=bar.step)
    logger.log_tuning(baseline.name, result.as_dict())
    if not math.isfinite(min(result.scores)):
        raise TuningFailed(f"{baseline.name} diverged at every learning rate in the grid "
                           f"{cfg.tune.low}..{cfg.tune.high}: widen tune.low/tune.high", result)
    log.info("tuned %s: lr=%.3g (validation final loss %.4g)", baseline.name, result.best_lr,
             min(result.scores))
    logger.summary({f"tune/{baseline.name}/lr": result.best_lr})
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
    instances = task.sample(cfg.eval.instances, cfg.eval.seed, "test", device=device)
    optimizer = optimizer.with_layout(task.layouts())  # for rules that read tensor structure
    with Progress(cfg.eval.steps, f"evaluate {name}", enabled=cfg.progress, leave=False) as bar:
        result = run_optimizer(optimizer, instances, cfg.eval.steps, progress=bar.step)
    hyper = {k: (list(v) if isinstance(v, tuple) else v)
             for k, v in optimizer.hyperparameters().items() if not isinstance(v, torch.Tensor)}
    record = evaluation_record(result, name=name, optimizer=optimizer,
                               learned=isinstance(optimizer, LearnedOptimizer),
                               tuned_lr=tuned_lr, threshold=cfg.eval.threshold,
                               hyperparameters=hyper)
    if isinstance(optimizer, LearnedOptimizer) and optimizer.meta_trained_iterations == 0:
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
            record.tuning = error.result.as_dict()
        return record
    record = evaluate(cfg, baseline.with_hyperparameters(lr=result.best_lr), task, device,
                      name=name, tuned_lr=result.best_lr)
    record.tuning = result.as_dict()
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
        learned = learned_from_checkpoint(cfg, device) if cfg.checkpoint else meta_train(
            cfg, task, device, run_dir, logger)
        records.append(evaluate(cfg, learned, task, device, name=learned.name, tuned_lr=None))
    elif study not in cfg.eval.baselines:
        records.append(evaluate(cfg, study_optimizer(cfg), task, device, name=study,
                                tuned_lr=None))
    return records
