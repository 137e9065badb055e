"""Meta-objectives: what a learned optimizer is trained to minimise over a trajectory.

The meta-loss of one unroll is ``mean over instances of sum_t  phi(f(theta_t))``:

* ``sum`` (the paper's): ``phi(f) = f``, the plain sum of the losses after every step. Tasks with
  large losses dominate, and late steps of a converging run contribute little.
* ``log_relative``: ``phi(f) = log(f / f_0) / horizon``, the mean log loss relative to the task's
  starting loss ``f_0``. Scale-free: multiplying the loss by ``c`` changes nothing, so tasks of
  different scales (a mixture) weigh alike, and progress late in a run -- from 1e-3 to 1e-4 --
  counts as much as early progress (as in learned_optimization's log-loss objectives).

``phi`` must be differentiable in ``f``; the surrogate estimator uses its derivative.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

#: keeps log() finite at a loss of exactly zero (a solved quadratic)
TINY = 1e-12


class MetaObjective(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, losses: Tensor, initial: Tensor, horizon: int) -> Tensor:
        """Per-instance contribution ``phi(f)`` of losses ``(B,)``; ``initial`` is ``f_0 (B,)``."""

    def derivative(self, losses: Tensor, initial: Tensor, horizon: int) -> Tensor:
        """``d phi / d f`` at ``losses`` (constants), ``(B,)``."""
        with torch.enable_grad():
            f = losses.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self(f, initial.detach(), horizon).sum(), f)
        return grad


class SumLoss(MetaObjective):
    name = "sum"

    def __call__(self, losses: Tensor, initial: Tensor, horizon: int) -> Tensor:
        return losses

    def derivative(self, losses: Tensor, initial: Tensor, horizon: int) -> Tensor:
        return torch.ones_like(losses)


class MeanLoss(MetaObjective):
    """``f / horizon``: the mean loss over the episode, comparable across horizons (a population
    of per-particle lengths weighs a long episode like a short one)."""

    name = "mean"

    def __call__(self, losses: Tensor, initial: Tensor, horizon: int) -> Tensor:
        return losses / horizon

    def derivative(self, losses: Tensor, initial: Tensor, horizon: int) -> Tensor:
        return torch.ones_like(losses) / horizon


class MeanLogRelative(MetaObjective):
    name = "log_relative"

    def __call__(self, losses: Tensor, initial: Tensor, horizon: int) -> Tensor:
        return (torch.log(losses.clamp(min=0) + TINY) - torch.log(initial + TINY)) / horizon


OBJECTIVES: dict[str, type[MetaObjective]] = {cls.name: cls for cls in (SumLoss, MeanLoss,
                                                                       MeanLogRelative)}


def build_objective(name: str) -> MetaObjective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown meta.objective {name!r}: choose one of "
                         f"{', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
