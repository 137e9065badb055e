"""What a suite is: a named list of tasks, each a ``conf/task`` preset with its horizon.

A suite is a ``conf/suite/<name>.yaml`` (``experiment=suite`` picks ``heldout``): ``name``,
``reference`` (the tuned baseline every score is against), ``speedup_cap``, ``bootstrap_reps``,
``cache_dir`` and ``tasks``, a list of ``{name, task, horizon, kwargs}``. A suite task is a
generalization *variant* (:class:`l2l.presets.Variant`) with a required horizon, so it is
composed exactly as the generalization study composes its variants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from l2l.presets import Variant, conf_dir, task_preset, variant_config

TASK_KEYS = {"name", "task", "horizon", "kwargs"}


@dataclass
class SuiteTask:
    """One task of the suite: a ``conf/task`` preset, its horizon and kwargs overrides."""

    name: str
    task: str
    horizon: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def variant(self) -> Variant:
        return Variant(self.name, self.task, self.horizon, dict(self.kwargs))


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def suite_settings(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.suite`` as a plain mapping, or a ValueError saying how to get one."""
    settings = OmegaConf.select(cfg, "suite")
    if settings is None:
        raise ValueError("mode=suite needs a suite: run it as experiment=suite (the held-out "
                         "suite conf/suite/heldout.yaml) or add +suite=<conf/suite preset>")
    return _plain(settings)


def parse_tasks(settings: Mapping[str, Any], conf: Path | None = None) -> list[SuiteTask]:
    """The suite's tasks, checked: each a mapping with a unique name, an existing
    ``conf/task`` preset and a positive integer horizon."""
    suite = settings.get("name", "suite")
    raw_tasks = settings.get("tasks") or []
    if not raw_tasks:
        raise ValueError(f"suite {suite!r} lists no tasks: give suite.tasks=[{{name: ..., "
                         "task: <conf/task preset>, horizon: <steps>}, ...]")
    folder = (conf or conf_dir()) / "task"
    tasks = []
    for raw in raw_tasks:
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise ValueError(f"suite {suite!r}: a task must be a mapping with a name, task and "
                             f"horizon, got {raw!r}")
        name = str(raw["name"])
        unknown = sorted(set(raw) - TASK_KEYS)
        if unknown:
            raise ValueError(f"suite {suite!r} task {name!r} has unknown key(s) {unknown} "
                             f"(allowed: {sorted(TASK_KEYS)})")
        preset = raw.get("task")
        if not isinstance(preset, str) or not (folder / f"{preset}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise ValueError(f"suite {suite!r} task {name!r}: task={preset!r} is not a "
                             f"conf/task preset (they are: {known})")
        horizon = raw.get("horizon")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"suite {suite!r} task {name!r}: horizon must be a positive "
                             f"number of steps, got {horizon!r}")
        tasks.append(SuiteTask(name, preset, horizon, dict(raw.get("kwargs") or {})))
    names = [t.name for t in tasks]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"suite {suite!r} names task(s) {doubled} more than once: give each "
                         "task its own name")
    return tasks


def task_config(cfg: DictConfig, task: SuiteTask, steps: int | None = None) -> DictConfig:
    """The run's config for one suite task: its preset and kwargs, ``eval.steps`` = ``steps``
    (default: the horizon) and ``tune.steps`` = the horizon, so that a baseline is always
    tuned at the task's horizon even when it is then run longer (the speed-up needs that)."""
    vcfg = variant_config(cfg, task.variant())
    vcfg.tune.steps = task.horizon
    vcfg.eval.steps = task.horizon if steps is None else steps
    return vcfg


def families(task: Mapping[str, Any]) -> set[str]:
    """The base families a task config draws from, through ``augmented`` and ``mixture``
    wrappers: what "disjoint from the training distribution" is checked on. A family on
    another dataset than MNIST is another family (``mnist_mlp[fashion_mnist]``): the data
    distribution, not the architecture, is what is held out there (as Celo holds out tasks)."""
    family = task.get("family")
    kwargs = task.get("kwargs") or {}
    if family == "augmented":
        return families(kwargs.get("task") or {})
    if family == "mixture":
        return set().union(*(families(c) for c in kwargs.get("components") or []))
    dataset = kwargs.get("dataset", "mnist")
    return {str(family) if dataset == "mnist" else f"{family}[{dataset}]"}


def suite_families(settings: Mapping[str, Any], conf: Path | None = None) -> set[str]:
    """Every base family a suite's tasks use."""
    out: set[str] = set()
    for task in parse_tasks(settings, conf):
        preset = OmegaConf.to_container(task_preset(task.task, conf))
        preset["kwargs"] = {**(preset.get("kwargs") or {}), **task.kwargs}
        out |= families(preset)
    return out


__all__ = ["SuiteTask", "families", "parse_tasks", "suite_families", "suite_settings",
           "task_config"]
