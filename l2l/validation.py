"""Validation and best-model selection during meta-training.

The frozen optimizer is run on fixed validation instances (the same at every validation, drawn
from the ``valid`` split: never the test problems) for the task's horizon; its score is the mean
final loss (infinite if any instance diverged), the paper's criterion. For a task mixture every
component is validated and the score is the mean of the components' log mean final losses, so a
component with large losses does not decide alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from l2l.evaluation import final_loss_score, run_optimizer
from l2l.interface import BatchedOptimizer
from l2l.progress import progress_bar
from l2l.tasks.base import Instances, TaskFamily
from l2l.tasks.mixture import MixtureFamily


class Validator:
    """Scores an optimizer on fixed validation problems and remembers the best weights."""

    def __init__(self, task: TaskFamily, *, instances: int, seed: int, horizon: int,
                 device: torch.device) -> None:
        components = task.components if isinstance(task, MixtureFamily) else [task]
        self.sets: list[Instances] = [c.sample(instances, seed, "valid", device=device)
                                      for c in components]
        self.horizon = horizon
        #: scores are mean log losses (a mixture), so a blow-up shows as a difference, not a ratio
        self.log_scale = len(self.sets) > 1
        self.best_val = math.inf
        self.best_weights: dict[str, Tensor] | None = None
        self.best_iteration: int | None = None
        #: show a progress bar while validating (a validation can take as long as many
        #: meta-iterations); off by default so that library use stays quiet
        self.show_progress = False

    def score(self, optimizer: BatchedOptimizer) -> float:
        with progress_bar(self.horizon * len(self.sets), "validate",
                          enabled=self.show_progress, leave=False) as bar:
            scores = [final_loss_score(run_optimizer(optimizer, s, self.horizon,
                                                     with_metrics=False, progress=bar.step))
                      for s in self.sets]
        if len(scores) == 1:
            return scores[0]
        if not all(math.isfinite(s) and s > 0 for s in scores):
            return math.inf
        return sum(math.log(s) for s in scores) / len(scores)

    def blew_up(self, untrained: float, worst: float, factor: float = 100.0) -> bool:
        """Did a validation ``worst`` lose more than ``factor`` times the untrained optimizer's
        loss? On log-scale scores (mixtures: negative once they beat the start) that is
        ``worst > untrained + log(factor)``; a ratio of two such scores would mean nothing."""
        if not (math.isfinite(untrained) and math.isfinite(worst)):
            return False
        if self.log_scale:
            return worst > untrained + math.log(factor)
        return untrained > 0 and worst > factor * untrained

    def best_or(self, current: dict[str, Tensor]) -> dict[str, Tensor]:
        """The best weights, or ``current`` (copied) before any finite validation."""
        if self.best_weights is None:
            return {k: v.detach().clone() for k, v in current.items()}
        return self.best_weights

    def offer(self, score: float, weights: dict[str, Tensor], iteration: int) -> bool:
        """Keep ``weights`` if ``score`` is finite and the best so far; say whether it was."""
        if not math.isfinite(score) or score >= self.best_val:
            return False
        self.best_val = score
        self.best_weights = {k: v.detach().clone() for k, v in weights.items()}
        self.best_iteration = iteration
        return True
