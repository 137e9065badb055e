"""A checkpoint brings its task: what ``checkpoint=`` was meta-trained on decides the default.

Without this, ``python train.py mode=evaluate checkpoint=lstm-mnist`` would evaluate the MNIST
optimizer on the default quadratics, a number that means nothing. A checkpoint records its
training task (``identity.task``: name, family, kwargs), so when the command line names no
task, the run takes the checkpoint's and says so; when it does name one,
the log says whether the checkpoint saw that task in meta-training, and warns if the task is
one a pretrained entry is documented to fail on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("l2l")

#: overrides that choose the task (an experiment preset sets one too)
TASK_KEYS = ("task", "experiment")


def training_record(checkpoint: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """The optimizer name and the training task identity a checkpoint file or zoo name
    records (None where it records none)."""
    from l2l.checkpoint import load
    from l2l.loading import resolve

    _, file = resolve(checkpoint)
    if file is None:  # a hand-designed optimizer's name: no training
        return None, None
    payload = load(file)
    for key in ("optimizer", "best"):
        if isinstance(payload.get(key), dict):
            name = payload[key].get("name")
            break
    else:
        name = None
    return name, (payload.get("identity") or {}).get("task")


def task_given(overrides: Sequence[str]) -> bool:
    """Does the command line choose the task (``task=``, ``task.kwargs...=``, ``experiment=``)?"""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0].split("@", 1)[0] in TASK_KEYS:
            return True
    return False


def _task_config(trained_on: dict[str, Any], current: DictConfig) -> DictConfig:
    """The task config of a recorded identity: its conf/task preset with the recorded kwargs
    (where the data lives stays the run's ``data_dir``), or the identity itself."""
    from l2l.presets import task_preset
    from l2l.tasks.base import without_data_location

    try:
        node = task_preset(str(trained_on.get("name")))
    except ValueError:  # not a preset (an edited config): the identity, the run's threshold
        node = OmegaConf.create({"name": trained_on.get("name"), "family": None, "kwargs": {},
                                 "threshold": current.get("threshold")})
    node.family = trained_on.get("family")
    with open_dict(node):
        for key, value in (trained_on.get("kwargs") or {}).items():
            # where the data lives is this run's data_dir, at every depth (older checkpoints
            # recorded the training machine's path in a mixture's components)
            node.kwargs[key] = without_data_location(value, data_dir="${data_dir}")
    return node


def describe_task(trained_on: dict[str, Any]) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in (trained_on.get("kwargs") or {}).items()
                       if k != "components")
    return f"task={trained_on.get('name')} ({trained_on.get('family')}{': ' if kwargs else ''}" \
           f"{kwargs})"


def seen(trained_on: dict[str, Any], task: DictConfig) -> str:
    """``yes``, ``component of the mixture`` or ``no``: did meta-training see ``task``?"""
    from l2l.run_config import in_mixture, plain, task_identity

    target = task_identity(plain(task))
    if task_identity(trained_on) == target:
        return "yes"
    return "component of the mixture" if in_mixture(trained_on, target) else "no"


def adopt(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """For a run that loads ``checkpoint=`` (evaluate, compare): take the checkpoint's training
    task when the command line names none, else say whether the checkpoint saw the given one.
    Logs one line either way; a checkpoint that records no task leaves the config alone."""
    from l2l.registry import is_learned

    if cfg.get("checkpoint") is None or cfg.get("mode") not in ("evaluate", "compare"):
        return
    name = OmegaConf.select(cfg, "optimizer.name")
    if name is not None and not is_learned(name):
        return  # checkpoint= with a hand-designed optimizer= is refused by train.py's checks
    _, trained_on = training_record(cfg.checkpoint)
    if not trained_on:
        log.info("checkpoint %s does not record its training task: evaluating on task=%s",
                 cfg.checkpoint, cfg.task.name)
        return
    if not task_given(overrides):
        with open_dict(cfg):
            cfg.task = _task_config(trained_on, cfg.task)
        log.info("task= not given: evaluating on the checkpoint's training task, %s",
                 describe_task(trained_on))
        return
    answer = seen(trained_on, cfg.task)
    log.info("checkpoint %s was meta-trained on %s; task=%s seen in training: %s",
             cfg.checkpoint, describe_task(trained_on), cfg.task.name, answer)
    from l2l.pretrained import warn_task

    warn_task(cfg.checkpoint, str(cfg.task.name))
