"""Meta-train, tune, evaluate and compare optimizers: every experiment of l2l is one command.

    python train.py                                   # the demo: compare on quadratics (~3 min)
    python train.py experiment=paper_mnist run_name=mnist1   # the paper's MNIST setup
    python train.py mode=evaluate optimizer=adam optimizer.hyperparameters.lr=0.03 task=mnist
    python train.py -m optimizer=sgd,adam seed=0,1,2 mode=tune    # a sweep

Configs live in conf/ (see conf/config.yaml for every option); outputs in runs/ (see
runs/README.md). A named run (run_name=...) that was killed resumes when the same command runs
again.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from l2l.checkpoint import CheckpointError, load_learned_optimizer
from l2l.evaluation import lr_grid, run_optimizer, summarize, tune_learning_rate
from l2l.interface import BatchedOptimizer
from l2l.lstm_optimizer import LSTMOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer, MetaTrainingDiverged
from l2l.progress import Progress
from l2l.registry import BASELINES, build_optimizer
from l2l.report import markdown_table, write_report
from l2l.runtime import resolve_device
from l2l.tasks import MNISTNotFoundError, TaskFamily, build_task
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")
MODES = ("meta_train", "evaluate", "tune", "compare")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except (ValueError, CheckpointError, MNISTNotFoundError, MetaTrainingDiverged) as error:
        log.error("%s: %s", type(error).__name__, error)
        sys.exit(1)


def run(cfg: DictConfig) -> float | None:
    # ---- check everything before any work starts -------------------------------------------
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}: choose one of {', '.join(MODES)}")
    for key in ("eval.steps", "eval.instances", "tune.instances", "tune.steps", "tune.per_decade"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    task = build_task(cfg.task.family, **plain(cfg.task.kwargs))
    study = cfg.optimizer.name
    hyper = plain(cfg.optimizer.hyperparameters)
    build_optimizer(study, **hyper)  # validates the hyperparameters now, not after an hour
    for name in cfg.eval.baselines:
        build_optimizer(name)
    if cfg.mode == "meta_train" and study != "lstm":
        raise ValueError(f"mode=meta_train needs optimizer=lstm, got optimizer={study}")
    if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
        raise CheckpointError(f"checkpoint={cfg.checkpoint} does not exist")
    if cfg.mode == "evaluate" and study == "lstm" and cfg.checkpoint is None:
        raise ValueError("mode=evaluate with optimizer=lstm needs checkpoint=<path to best.pt>")
    log.info("run %s: mode=%s task=%s optimizer=%s device=%s", run_dir, cfg.mode,
             cfg.task.name, study, device)

    tags = [cfg.mode, cfg.task.name, study, *cfg.logger.tags]
    group = cfg.logger.group or sweep_group()
    with RunLogger(run_dir, OmegaConf.to_container(cfg, resolve=True), backend=cfg.logger.backend,
                   mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                   group=group, tags=tags, job_type=cfg.mode) as logger:
        if cfg.mode == "meta_train":
            meta_train(cfg, task, device, run_dir, logger)
            return None
        if cfg.mode == "tune":
            baseline = build_optimizer(study, **hyper)
            lr = tune(cfg, baseline, task, device, logger)
            entries = [evaluate(cfg, baseline.with_hyperparameters(lr=lr), task, device,
                                name=study, tuned_lr=lr)]
        elif cfg.mode == "evaluate":
            opt = learned_from(cfg, device) if study == "lstm" else build_optimizer(study, **hyper)
            entries = [evaluate(cfg, opt, task, device, name=study, tuned_lr=None)]
        else:  # compare
            entries = compare(cfg, task, device, run_dir, logger)
        return report(cfg, entries, run_dir, logger)


# ---- the modes ---------------------------------------------------------------------------------


def meta_train(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
               logger: RunLogger) -> LSTMOptimizer:
    """Meta-train the LSTM on ``task`` (resuming from run_dir if a checkpoint is there)."""
    torch.manual_seed(cfg.seed)
    learned = build_optimizer("lstm", **plain(cfg.optimizer.hyperparameters))
    assert isinstance(learned, LSTMOptimizer)
    meta = MetaConfig(**plain(cfg.meta), seed=cfg.seed)
    bar = Progress(meta.iterations, "meta-train", enabled=cfg.progress)

    def on_log(metrics: dict[str, Any], step: int) -> None:
        logger.log(metrics, step)
        if "meta/loss" in metrics:
            bar.update(1, loss=metrics["meta/loss"])
        else:
            log.info("iteration %d: validation final loss %.4g (best %.4g)", step,
                     metrics["val/final_loss"], metrics["val/best_final_loss"])

    trainer = MetaTrainer(learned, task, meta, run_dir=run_dir, device=device, log=on_log)
    if trainer.iteration:
        log.info("resuming meta-training from iteration %d (%s)", trainer.iteration,
                 trainer.latest_path)
        bar.update(trainer.iteration)
    with bar:
        result = trainer.train()
    log.info("meta-training done: %d iterations, best validation final loss %.4g, %d skipped "
             "meta-steps; best weights in %s", result["iterations"], result["best_val_loss"],
             result["skipped"], trainer.best_path)
    logger.summary({"meta/best_val_final_loss": result["best_val_loss"],
                    "meta/skipped": result["skipped"]})
    logger.log_artifact(trainer.best_path, name=f"lstm-{cfg.task.name}", type="model")
    learned.load_state_dict(trainer.best_weights)
    return learned


def tune(cfg: DictConfig, baseline: BatchedOptimizer, task: TaskFamily, device: torch.device,
         logger: RunLogger) -> float:
    """The best learning rate of ``baseline`` on validation problems (all lrs as one batch)."""
    grid = lr_grid(cfg.tune.low, cfg.tune.high, cfg.tune.per_decade)
    result = tune_learning_rate(baseline, task, grid=grid, num_instances=cfg.tune.instances,
                                steps=cfg.tune.steps, seed=cfg.seed, device=device)
    if not math.isfinite(min(result.scores)):
        raise ValueError(f"{baseline.name} diverged at every learning rate in the grid "
                         f"{cfg.tune.low}..{cfg.tune.high}: widen tune.low/tune.high")
    log.info("tuned %s: lr=%.3g (validation final loss %.4g)", baseline.name, result.best_lr,
             min(result.scores))
    logger.summary({f"tune/{baseline.name}/lr": result.best_lr})
    return result.best_lr


def evaluate(cfg: DictConfig, optimizer: BatchedOptimizer, task: TaskFamily,
             device: torch.device, *, name: str, tuned_lr: float | None) -> dict[str, Any]:
    """Run ``optimizer`` on the run's held-out test problems (the same for every optimizer)."""
    instances = task.sample(cfg.eval.instances, cfg.seed, "test", device=device)
    result = run_optimizer(optimizer, instances, cfg.eval.steps)
    entry = {"name": name, "optimizer": optimizer.name, "tuned_lr": tuned_lr,
             "learned": isinstance(optimizer, LSTMOptimizer),
             "hyperparameters": plain_hyperparameters(optimizer),
             **summarize(result, threshold=cfg.eval.threshold)}
    log.info("%-9s final loss %.4g ± %.2g (%d diverged)", name, entry["final_loss_mean"],
             entry["final_loss_ci95"], entry["diverged"])
    return entry


def compare(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
            logger: RunLogger) -> list[dict[str, Any]]:
    """Tune every baseline, meta-train (or load) the learned optimizer, evaluate all alike."""
    entries = []
    with Progress(len(cfg.eval.baselines), "baselines", enabled=cfg.progress) as bar:
        for name in cfg.eval.baselines:
            baseline = build_optimizer(name)  # torch.optim's defaults, then the tuned lr
            lr = tune(cfg, baseline, task, device, logger)
            entries.append(evaluate(cfg, baseline.with_hyperparameters(lr=lr), task, device,
                                    name=name, tuned_lr=lr))
            bar.update(1)
    study = cfg.optimizer.name
    if study == "lstm":
        learned = learned_from(cfg, device) if cfg.checkpoint else meta_train(
            cfg, task, device, run_dir, logger)
        entries.append(evaluate(cfg, learned, task, device, name="lstm", tuned_lr=None))
    elif study not in BASELINES or study not in cfg.eval.baselines:
        entries.append(evaluate(cfg, build_optimizer(study, **plain(cfg.optimizer.hyperparameters)),
                                task, device, name=study, tuned_lr=None))
    return entries


def report(cfg: DictConfig, entries: list[dict[str, Any]], run_dir: Path,
           logger: RunLogger) -> float:
    """Write summary.json, report.md and curves.png; log them; return the best final loss."""
    paths = write_report(run_dir, entries, task=cfg.task.name, steps=cfg.eval.steps)
    logger.log_curves(entries)
    for entry in entries:
        logger.summary({f"eval/{entry['name']}/final_loss": entry["final_loss_mean"],
                        f"eval/{entry['name']}/final_loss_ci95": entry["final_loss_ci95"]})
    print(f"\n{markdown_table(entries)}\n\nreport: {paths['report']}", flush=True)
    finite = [e["final_loss_mean"] for e in entries if math.isfinite(e["final_loss_mean"])]
    return min(finite) if finite else math.inf


# ---- small helpers -----------------------------------------------------------------------------


def learned_from(cfg: DictConfig, device: torch.device) -> LSTMOptimizer:
    if cfg.checkpoint is None:
        raise ValueError("no checkpoint given: pass checkpoint=<run>/checkpoints/best.pt")
    learned = load_learned_optimizer(cfg.checkpoint, device)
    log.info("loaded the learned optimizer from %s (%s)", cfg.checkpoint, learned.extra_repr())
    return learned


def plain(node: Any) -> Any:
    """A config node as plain Python containers (lists stay lists; registries tuple them)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def plain_hyperparameters(optimizer: BatchedOptimizer) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in optimizer.hyperparameters().items() if not isinstance(v, torch.Tensor)}


def sweep_group() -> str | None:
    """Runs of one sweep share a wandb group: the sweep's directory name."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        return Path(hydra_cfg.sweep.dir).name
    return None


if __name__ == "__main__":
    main()
