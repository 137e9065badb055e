"""``experiment=suite``: every checkpoint on every suite task against the cached tuned baseline.

For each task of the suite (:mod:`l2l.suite.spec`), each baseline of ``eval.baselines`` has its
learning rate tuned on validation problems of that task at its horizon, then runs
``speedup_cap x horizon`` steps on the test problems; the result is cached
(:mod:`l2l.suite.cache`). Each checkpoint (a file or a zoo name; files of the same optimizer
are meta-training seeds of one group, a zoo name or a ``label`` is its own group) runs the
horizon on the same test problems and minibatches, from a fresh state. The scores
(:mod:`l2l.suite.scoring`) are against the suite's ``reference`` baseline (tuned Adam).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from l2l.presets import checkpoint_specs
from l2l.progress import progress_bar
from l2l.protocol import check_task_data, evaluate, tune_and_evaluate
from l2l.registry import build_optimizer, is_learned
from l2l.run_config import plain, task_identity
from l2l.study_checkpoints import (
    Prefixed,
    checkpoint_name,
    load_checkpoints,
    trained_on_text,
)
from l2l.suite import cache
from l2l.suite.plan import SuitePlan
from l2l.suite.report import summarize, text_summary, write_outputs
from l2l.suite.spec import SuiteTask, parse_tasks, suite_settings, task_config
from l2l.tasks import MNISTNotFoundError, build_task
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")
#: data that may be absent offline: the task is skipped with a note, never the whole suite
MISSING_DATA = (MNISTNotFoundError,)


def _positive_int(settings: dict[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"suite.{key} must be a positive integer, got {value!r}")
    return value


def prepare(cfg: DictConfig, device: torch.device) -> SuitePlan:
    """Check the whole suite run before any work: the suite's settings and tasks, every
    checkpoint loads, every task builds and has its data (a task whose data is missing is
    skipped with a note; a typo is a one-line error)."""
    settings = suite_settings(cfg)
    name = str(settings.get("name", "suite"))
    reference = str(settings.get("reference", "adam"))
    baselines = list(cfg.eval.baselines)
    if reference not in baselines:
        raise ValueError(f"suite.reference={reference} is not among eval.baselines "
                         f"{baselines}: add it there (every score is against it)")
    for baseline in baselines:
        if is_learned(baseline):
            raise ValueError(f"eval.baselines lists the learned optimizer {baseline!r}: pass "
                             "learned optimizers as checkpoints=")
        build_optimizer(baseline)  # an unknown name fails now
    if OmegaConf.select(cfg, "checkpoints") in (None, [], ""):
        raise ValueError("experiment=suite needs checkpoints=[<best.pt or zoo name>, ...] "
                         "(several meta-training seeds of one optimizer are aggregated)")
    from l2l.pretrained import is_zoo_name

    checkpoints = load_checkpoints(cfg, device)
    for checkpoint, (spec, label) in zip(checkpoints, checkpoint_specs(cfg), strict=True):
        if label is None and is_zoo_name(spec):  # a zoo entry is its own group
            checkpoint.group = spec
    tasks, skipped = [], []
    for task_spec in parse_tasks(settings):
        vcfg = task_config(cfg, task_spec)
        try:
            task = build_task(vcfg.task.family, **plain(vcfg.task.kwargs))
        except ValueError as error:
            raise ValueError(f"suite {name!r} task {task_spec.name!r}: {error}") from error
        task.name = task_spec.name
        try:
            check_task_data(task, device)
        except MISSING_DATA as error:
            reason = str(error).splitlines()[0]
            log.warning("suite task %s skipped: its data is missing (%s)", task_spec.name, reason)
            skipped.append((task_spec, reason))
            continue
        tasks.append((task_spec, vcfg, task))
    if not tasks:
        raise ValueError(f"no task of suite {name!r} has its data here: point data_dir= to "
                         "the datasets")
    return SuitePlan(name, reference, _positive_int(settings, "speedup_cap", 4),
                     _positive_int(settings, "bootstrap_reps", 2000),
                     Path(str(settings.get("cache_dir") or "runs/suite_cache")), tasks,
                     checkpoints, skipped)


def baseline_key(cfg: DictConfig, plan: SuitePlan, task_spec: SuiteTask, vcfg: DictConfig,
                 task: TaskFamily, name: str, device: torch.device) -> dict[str, Any]:
    """What a tuned baseline's result depends on (:mod:`l2l.suite.cache`)."""
    return {"baseline": name, "hyperparameters": {},
            "task": task_identity(plain(vcfg.task)),
            "horizon": task_spec.horizon, "steps": plan.speedup_cap * task_spec.horizon,
            "tune": {k: cfg.tune[k] for k in ("low", "high", "per_decade", "instances")},
            "eval": {"seed": cfg.eval.seed, "instances": cfg.eval.instances},
            "threshold": vcfg.eval.threshold, "device": device.type,
            "code": cache.code_version(build_optimizer(name), task)}


def tuned_baseline(cfg: DictConfig, plan: SuitePlan, task_spec: SuiteTask, vcfg: DictConfig,
                   task: TaskFamily, name: str, device: torch.device, logger: RunLogger,
                   ) -> tuple[dict[str, Any], bool]:
    """The baseline tuned at the task's horizon and run ``speedup_cap`` times longer, as an
    evaluation record's dict; from the cache when it holds it (then ``True``)."""
    key = baseline_key(cfg, plan, task_spec, vcfg, task, name, device)
    cached = cache.load(plan.cache_dir, key)
    if cached is not None:
        log.info("suite task %s: tuned %s from the cache (%s)", task_spec.name, name,
                 cache.cache_path(plan.cache_dir, key).name)
        return cached, True
    long_cfg = task_config(cfg, task_spec, steps=plan.speedup_cap * task_spec.horizon)
    record = tune_and_evaluate(long_cfg, name, task, device,
                               Prefixed(logger, f"suite/{task_spec.name}"))
    entry = record.to_json()
    cache.store(plan.cache_dir, key, entry)
    return entry, False


def run_suite(cfg: DictConfig, device: torch.device, run_dir: Path, logger: RunLogger,
              plan: SuitePlan | None = None) -> dict[str, Any]:
    """Run the suite (``plan`` from :func:`prepare`, else prepared now); write suite.md,
    suite.json and suite_profile.png into ``run_dir``; log the scores; return the JSON's
    content."""
    plan = plan or prepare(cfg, device)
    measured = []
    with progress_bar(len(plan.tasks), "suite tasks", enabled=cfg.progress) as bar:
        for task_spec, vcfg, task in plan.tasks:
            log.info("suite task %s: %s, %d steps", task_spec.name, vcfg.task.name,
                     task_spec.horizon)
            baselines = {}
            for name in cfg.eval.baselines:
                entry, from_cache = tuned_baseline(cfg, plan, task_spec, vcfg, task, name,
                                                   device, logger)
                baselines[name] = {"entry": entry, "cached": from_cache}
            learned = [evaluate(vcfg, c.optimizer, task, device,
                                name=checkpoint_name(c, i), tuned_lr=None)
                       for i, c in enumerate(plan.checkpoints)]
            measured.append({"spec": task_spec, "cfg": vcfg, "baselines": baselines,
                             "learned": learned})
            bar.update(1)
    result = summarize(cfg, plan, measured, trained_on={
        group: trained_on_text(members) for group, members in plan.groups.items()})
    paths = write_outputs(run_dir, result)
    for group, agg in result["aggregates"].items():
        logger.summary({f"suite/{group}/iqm_ratio": agg["ratio"]["iqm"],
                        f"suite/{group}/iqm_ratio_ci_low": agg["ratio"]["ci_low"],
                        f"suite/{group}/iqm_ratio_ci_high": agg["ratio"]["ci_high"],
                        f"suite/{group}/iqm_speed_up": agg["speed_up"]["iqm"],
                        f"suite/{group}/worst_ratio": agg["worst_ratio"]})
    for row in result["rows"]:
        logger.summary({f"suite/{row['group']}/{row['task']}/ratio": row["ratio"],
                        f"suite/{row['group']}/{row['task']}/speed_up": row["speed_up"]})
    for kind in ("json", "md", "png"):
        if paths[kind].exists():
            logger.log_artifact(paths[kind], name=f"suite-{plan.name}-{kind}", type="result")
    print(f"\n{text_summary(result)}\nsuite: {paths['md']}", flush=True)
    return result


__all__ = ["SuitePlan", "baseline_key", "prepare", "run_suite", "tuned_baseline"]
