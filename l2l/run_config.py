"""The run's resolved config (``cfg``: the tree in ``conf/``) as the objects the modes use.

Everything here reads the config and builds plain things from it (the optimizer under study,
the meta-training settings, the run's identity); nothing runs. It sits below every mode, so
that the modes share it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from l2l.config_checks import check_meta_keys
from l2l.interface import BatchedOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.registry import build_optimizer
from l2l.tasks.base import TaskFamily, without_data_location


def plain(node: Any) -> Any:
    """A config node (mapping or list) as plain Python containers; anything else as it is
    (lists stay lists: the registries tuple them)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def study_optimizer(cfg: DictConfig) -> BatchedOptimizer:
    """The optimizer under study (``optimizer=``) built from its config, untrained."""
    return build_optimizer(cfg.optimizer.name, **plain(cfg.optimizer.hyperparameters))


def meta_config(cfg: DictConfig) -> MetaConfig:
    check_meta_keys(cfg.meta)  # an unknown key: one line with the closest option
    return MetaConfig(**plain(cfg.meta), seed=cfg.seed, val_seed=cfg.eval.seed)


def meta_trainer(cfg: DictConfig, task: TaskFamily, device: torch.device, run_dir: Path,
                 **options: Any) -> MetaTrainer:
    """The :class:`MetaTrainer` a run's config asks for: the optimizer under study, untrained,
    with the run's meta settings and identity (``options``: callbacks, sync)."""
    return MetaTrainer(study_optimizer(cfg), task, meta_config(cfg), run_dir=run_dir,
                       device=device, identity=run_identity(cfg), **options)


def task_identity(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task config as a run's identity: its name, family and kwargs, but not where its data
    lives (moving the data may not stop a resume, nor make two tasks differ), at any depth."""
    kwargs = {k: without_data_location(v) for k, v in (task.get("kwargs") or {}).items()
              if k not in ("data_dir", "download")}
    return {"name": task.get("name"), "family": task.get("family"), "kwargs": kwargs}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What a resumed meta-training run must share with the original: the task -- the
    architecture and meta settings are checked by the trainer itself."""
    return {"task": task_identity(plain(cfg.task))}


def in_mixture(trained_on: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether a ``family: mixture`` training task has ``target`` (a task identity) among its
    components: same family, and every kwarg the component sets equal to the target's."""
    if trained_on.get("family") != "mixture":
        return False
    for component in (trained_on.get("kwargs") or {}).get("components") or []:
        ident = task_identity(component)
        if ident["family"] == target["family"] and all(
                target["kwargs"].get(k) == v for k, v in ident["kwargs"].items()):
            return True
    return False
