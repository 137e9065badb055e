"""Meta-train, tune, evaluate and compare optimizers: every experiment of l2l is one command.

    python train.py                                   # the demo: compare on quadratics (README)
    python train.py experiment=paper_mnist run_name=mnist1   # the paper's MNIST setup
    python train.py mode=evaluate optimizer=adam optimizer.hyperparameters.lr=0.03 task=mnist
    python train.py -m optimizer=sgd,adam seed=0,1,2 mode=tune    # a sweep
    python train.py experiment=generalization checkpoints=[a.pt,b.pt]   # the generalization study
    python train.py experiment=suite checkpoints=[a.pt,rnnprop-mnist-mixture]   # held-out suite

Configs live in conf/ (see conf/config.yaml for every option); outputs in runs/ (see
runs/README.md). A named run (run_name=...) that was killed resumes when the same command runs
again.
"""

# ruff: noqa: E402 - the --help check runs before the heavy imports below
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from l2l.app_help import exit_with_help_if_asked

if __name__ == "__main__":  # the page comes from conf/ alone: no torch, no config composition
    exit_with_help_if_asked(sys.argv[1:], Path(__file__).resolve().parent / "conf")

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from l2l import checkpoint_task, job_status
from l2l.checkpoint import CheckpointError
from l2l.checkpoint import load as load_checkpoint_file
from l2l.config_checks import check_config
from l2l.config_store import register_configs
from l2l.env import distributed
from l2l.env.run_dir import RunDirInUse, refuse_existing_results, save_run_config
from l2l.env.runtime import available_cpus, problem_size, resolve_device, resolve_threads
from l2l.loading import resolve as resolve_checkpoint
from l2l.meta_run import MetaTrainingFailed
from l2l.meta_training import MetaTrainingDiverged, MetaTrainingInterrupted
from l2l.modes import MODES
from l2l.presets import checkpoint_specs
from l2l.protocol import check_task_data
from l2l.registry import is_learned
from l2l.run_config import meta_config, plain, study_optimizer
from l2l.silent_logger import SilentLogger
from l2l.tasks import MNISTChecksumError, MNISTDownloadError, MNISTNotFoundError, build_task
from l2l.tracking import RunLogger

register_configs()  # every optimizer's defaults for conf/optimizer/*.yaml (l2l/config_store.py)
log = logging.getLogger("l2l")
#: errors that are the user's input or environment, not a bug in l2l: one line, no traceback
#: (``debug=true`` shows the traceback anyway)
USER_ERRORS = (ValueError, CheckpointError, MNISTNotFoundError, MNISTChecksumError,
               MNISTDownloadError, MetaTrainingDiverged, MetaTrainingFailed, RunDirInUse,
               FileExistsError, OSError, distributed.DistributedTimeout)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        result = run(cfg)
    except MetaTrainingInterrupted as stop:
        log.warning("%s. Rerun the same command to resume.", stop)
        distributed.pass_on_signal(stop.signal_number)  # submitit: requeue the job
        code = 128 + (stop.signal_number or 15)
        if in_multirun():  # the signal is for the whole process: the sweep stops too
            record_failure(stop, code, status="interrupted")
        sys.exit(code)
    except USER_ERRORS as error:
        if cfg.get("debug"):
            raise
        log.error("%s: %s", type(error).__name__, error)
        return job_failed(error)
    except Exception as error:  # a bug in l2l: a traceback, but the sweep goes on
        if not in_multirun() or cfg.get("debug"):
            raise
        log.exception("the job failed: %s: %s", type(error).__name__, error)
        return job_failed(error)
    if distributed.is_writer():
        job_status.clear_failure(HydraConfig.get().runtime.output_dir)
    return result


def in_multirun() -> bool:
    mode = HydraConfig.get().mode
    return mode is not None and mode.name == "MULTIRUN"


def job_failed(error: BaseException) -> None:
    """A single run exits 1; a sweep job records its failure and lets the sweep go on (the
    sweep exits 1 at its end, see ``__main__``)."""
    if not in_multirun():
        sys.exit(1)
    record_failure(error, 1)
    return None


def record_failure(error: BaseException, code: int, status: str = "failed") -> None:
    if distributed.is_writer():
        hydra_cfg = HydraConfig.get()
        job_status.record_failure(hydra_cfg.runtime.output_dir, error, code,
                                  list(hydra_cfg.overrides.task), status=status)


def run(cfg: DictConfig) -> float | None:
    # ---- check everything before any work starts -------------------------------------------
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # checkpoint= without task=: the checkpoint's training task, before the run is recorded
    checkpoint_task.adopt(cfg, list(HydraConfig.get().overrides.task))
    distributed.setup(cfg)  # several processes (torchrun, srun): join them; rank 0 writes
    with distributed.run_dir_lock(run_dir):  # RunDirLock on rank 0 (released even by kill -9)
        return checked_run(cfg, run_dir)


def checked_run(cfg: DictConfig, run_dir: Path) -> float | None:
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}: choose one of {', '.join(MODES)}")
    check_config(cfg)  # sizes, tuning grid, threshold, baselines, meta keys (l2l/config_checks)
    device = resolve_device(cfg.device)
    task = build_task(cfg.task.family, **plain(cfg.task.kwargs))
    task.name = cfg.task.name
    threads, why = resolve_threads(cfg.threads, problem_size=problem_size(task),
                                   parallel_jobs=parallel_jobs())
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
        log.info("threads: %s", why)
    study = cfg.optimizer.name
    learned = is_learned(study)
    study_optimizer(cfg)  # validates the hyperparameters now, not after an hour
    for name in cfg.eval.baselines:
        if is_learned(name):
            raise ValueError(f"eval.baselines lists the learned optimizer {name!r}: list only "
                             "hand-designed ones there, and study a learned one with optimizer=")
    if cfg.mode in ("meta_train", "compare") and learned:
        meta_config(cfg)  # validates meta.*
    if cfg.mode == "meta_train" and not learned:
        raise ValueError(f"mode=meta_train needs a learned optimizer, got optimizer={study}")
    if cfg.checkpoint is not None and not learned:
        raise ValueError(f"checkpoint= was given but optimizer={study} is hand-designed: "
                         "pass the learned optimizer's name (optimizer=lstm, ...)")
    # checkpoint=: a file, a run directory or a zoo name, else a CheckpointError
    if cfg.checkpoint is not None and resolve_checkpoint(cfg.checkpoint)[0] == "baseline":
        raise ValueError(f"checkpoint={cfg.checkpoint} names a hand-designed optimizer, "
                         f"which has no checkpoint: use optimizer={cfg.checkpoint} and no "
                         "checkpoint=")
    if cfg.get("resume_from") is not None:
        if cfg.mode not in ("meta_train", "compare") or not learned:
            raise ValueError("resume_from= resumes meta-training: use it with mode=meta_train "
                             "(or compare) and a learned optimizer=")
        carried = load_checkpoint_file(cfg.resume_from)  # exists, l2l's, no code inside
        if "meta_config" not in carried or "best" not in carried:
            raise CheckpointError(f"resume_from={cfg.resume_from} is not a resumable checkpoint: "
                                  "point it to a run's checkpoints/latest.pt")
    if cfg.mode == "evaluate" and learned and cfg.checkpoint is None:
        raise ValueError(f"mode=evaluate with optimizer={study} needs checkpoint=<path to "
                         "best.pt>")
    if cfg.mode != "meta_train":
        refuse_existing_results(run_dir)
    check_task_data(task, device)  # e.g. MNIST present, before wandb starts
    mode = MODES[cfg.mode]
    checked = mode.check(cfg, task, device, run_dir)  # e.g. seed= changed on resume: refused
    if distributed.is_writer():  # the record of what ran, once nothing refused it
        save_run_config(run_dir, cfg, list(HydraConfig.get().overrides.task))
    if cfg.checkpoint is not None:  # the log names what runs: the checkpoint's optimizer
        study = checkpoint_task.training_record(cfg.checkpoint)[0] or study
    elif cfg.get("checkpoints"):  # generalization, suite: the checkpoints' optimizers
        stored = {checkpoint_task.training_record(spec)[0]
                  for spec, _ in checkpoint_specs(cfg)} - {None}
        study = ",".join(sorted(stored)) or study
    log.info("run %s: mode=%s task=%s optimizer=%s device=%s", run_dir, cfg.mode,
             cfg.task.name, study, device)

    # ---- the run -------------------------------------------------------------------------------
    tags = [cfg.mode, cfg.task.name, study, *cfg.logger.tags]
    group = cfg.logger.group or sweep_group()
    tracker = RunLogger if distributed.is_writer() else SilentLogger
    with tracker(run_dir, OmegaConf.to_container(cfg, resolve=True), backend=cfg.logger.backend,
                   mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                   group=group, tags=tags, job_type=cfg.mode, name=str(cfg.run_name),
                   init_timeout=cfg.logger.init_timeout) as logger:
        if cfg.mode != "meta_train":  # a rerun after an interruption tunes (and logs) anew
            logger.drop_events("tune")
        return mode.run(cfg, task, device, run_dir, logger, checked)


def parallel_jobs() -> int:
    """How many sweep jobs share this machine (the joblib launcher's n_jobs; -1: all cores)."""
    launcher = OmegaConf.select(HydraConfig.get(), "launcher") or {}
    n_jobs = launcher.get("n_jobs") if hasattr(launcher, "get") else None
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return available_cpus() if n_jobs < 0 else n_jobs


def sweep_group() -> str | None:
    """Runs of one sweep share a wandb group: the sweep's directory name."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        return Path(hydra_cfg.sweep.dir).name
    return None


def preflight(argv: list[str]) -> None:
    """Fail with one line, before Hydra does, if a single run's directory cannot be created
    (Hydra would print a traceback), or if ``run_name=`` is longer than a file name may be (a
    sweep's too). Silent when the check itself cannot be made."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "run_name":
            for name in value.split(",") if multirun else [value]:
                refuse_long_name(name, "run_name", "run_name")
    if any(a.startswith("-") for a in argv):
        return
    try:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(str(Path(__file__).parent / "conf"), version_base="1.3"):
            run_dir = Path(compose("config", overrides=argv, return_hydra_config=True)
                           .hydra.run.dir)
    except Exception:  # noqa: BLE001 - Hydra reports config errors better itself
        return
    for part in run_dir.parts:
        refuse_long_name(part, "the run directory's folder", "run_name or hydra.run.dir")
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        print(f"[l2l] error: cannot create the run directory {run_dir} ({existing} is not a "
              "writable directory): choose another hydra.run.dir or run_name", file=sys.stderr)
        sys.exit(1)


def refuse_long_name(name: str, what: str, setting: str) -> None:
    """Exit with one line if ``name`` is longer than this file system allows a file name to be
    (255 bytes on most): Hydra would fail creating the run directory with a traceback."""
    try:
        limit = os.pathconf(".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    size = len(os.fsencode(name))
    if size > limit:
        print(f"[l2l] error: {what} {name[:40]}... is {size} bytes long, more than the {limit} "
              f"this file system allows a file name: choose a shorter {setting}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    try:
        sys.argv[1:] = distributed.agree_on_argv(sys.argv[1:])  # one run_name for all ranks
    except (ValueError, distributed.DistributedTimeout) as error:
        print(f"[l2l] error: {error}", file=sys.stderr)
        sys.exit(1)
    preflight(sys.argv[1:])
    main()
    if job_status.any_failed():  # a multirun whose failed jobs were recorded, not fatal
        print("[l2l] error: some jobs of the sweep failed (each job folder's failed.json says "
              "why; the sweep's aggregate.md lists them): fix them and rerun those jobs",
              file=sys.stderr)
        sys.exit(1)
