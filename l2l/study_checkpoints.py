"""The learned optimizers a study runs on, shared by the generalization study and the held-out
suite: each ``checkpoints=`` entry loaded once with its provenance, named by group and seed,
and a run logger that keeps one study's records per task apart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from l2l.learned.base import LearnedOptimizer
from l2l.loading import Provenance, load_optimizer
from l2l.presets import checkpoint_specs
from l2l.tracking import RunLogger


@dataclass
class Checkpoint:
    """One learned optimizer to study: where it came from and what it knows of its training."""

    group: str  #: the label given, else the optimizer's name
    optimizer: LearnedOptimizer
    provenance: Provenance  #: where it came from, what it records of its meta-training

    spec = property(lambda self: self.provenance.spec)  #: as given (a path or a zoo name)
    path = property(lambda self: self.provenance.path)
    seed = property(lambda self: self.provenance.seed)
    trained_on = property(lambda self: self.provenance.trained_on)
    horizon = property(lambda self: self.provenance.horizon)
    iteration = property(lambda self: self.provenance.iteration)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "path": str(self.path), "group": self.group,
                "optimizer": self.optimizer.name, "seed": self.seed,
                "trained_on": self.trained_on, "horizon": self.horizon,
                "iteration": self.iteration}


def by_group(checkpoints: Sequence[Checkpoint]) -> dict[str, list[Checkpoint]]:
    """The checkpoints per group (an optimizer's meta-training seeds), in the order given."""
    out: dict[str, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        out.setdefault(checkpoint.group, []).append(checkpoint)
    return out


def refuse_duplicates(checkpoints: Sequence[Checkpoint]) -> None:
    """Raise if two entries of ``checkpoints=`` are the same file by content (sha256), however
    they are named (a zoo name and its path, a copy): a duplicate would count as another seed
    and narrow the confidence interval without any new evidence."""
    by_hash: dict[str | None, list[str]] = {}
    for checkpoint in checkpoints:
        by_hash.setdefault(checkpoint.provenance.sha256, []).append(checkpoint.spec)
    same = [names for names in by_hash.values() if len(names) > 1]
    if same:
        shown = "; ".join(", ".join(names) for names in same)
        raise ValueError(f"checkpoints= lists the same checkpoint more than once (identical "
                         f"content: {shown}); list each meta-training seed's checkpoint once, "
                         "a duplicate would count as another seed")


def load_checkpoints(cfg: DictConfig, device: torch.device) -> list[Checkpoint]:
    """Every entry of ``checkpoints=`` loaded (a file, a run directory or a zoo name), each a
    learned optimizer, none twice."""
    checkpoints = []
    for spec, label in checkpoint_specs(cfg):
        learned, where = load_optimizer(spec, device)
        if not isinstance(learned, LearnedOptimizer):
            raise ValueError(f"checkpoints= lists {spec}, a hand-designed optimizer: list "
                             "learned optimizers' checkpoints there (baselines go in "
                             "eval.baselines)")
        checkpoints.append(Checkpoint(label or learned.name, learned, where))
    refuse_duplicates(checkpoints)
    return checkpoints


def checkpoint_name(checkpoint: Checkpoint, index: int) -> str:
    seed = f"seed {checkpoint.seed}" if checkpoint.seed is not None else f"#{index}"
    return f"{checkpoint.group} ({seed})"


def trained_on_text(members: Sequence[Checkpoint]) -> str:
    """What the checkpoints of a group were meta-trained on, as a phrase (``unknown`` when a
    checkpoint does not record it)."""
    seen = []
    for checkpoint in members:
        task = checkpoint.trained_on
        if task is None:
            text = "unknown"
        else:
            kwargs = dict(task.get("kwargs") or {})
            if task.get("family") == "mixture":  # name the components, not their configs
                names = [str(c.get("name")) for c in kwargs.get("components") or []]
                text = f"{task.get('name')} (a mixture of {', '.join(names)})"
            else:
                listed = ", ".join(f"{k}={v}" for k, v in kwargs.items())
                text = f"{task.get('name')} ({task.get('family')}: {listed})"
            if checkpoint.horizon is not None:
                text += f", {checkpoint.horizon}-step horizon"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)


class Prefixed:
    """A run logger whose tuning records and summary keys carry the variant's name, so that the
    same baseline tuned on several variants does not overwrite itself."""

    def __init__(self, logger: RunLogger, prefix: str) -> None:
        self._logger, self._prefix = logger, prefix

    def log_tuning(self, name: str, tuning: Mapping[str, Any]) -> None:
        self._logger.log_tuning(f"{self._prefix}/{name}", tuning)

    def summary(self, values: Mapping[str, Any]) -> None:
        self._logger.summary({f"{self._prefix}/{k}": v for k, v in values.items()})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)
