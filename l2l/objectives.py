"""Meta-objectives: what a learned optimizer is trained to minimise over a trajectory.

The meta-loss of one unroll is ``mean over instances of sum_t  phi(f(theta_t))``:

* ``sum`` (the paper's): ``phi(f) = f``, the plain sum of the losses after every step. Tasks with
  large losses dominate, and late steps of a converging run contribute little.
* ``mean``: ``phi(f) = f / horizon``, the mean loss over the episode.
* ``log_relative``: ``phi(f) = log(f / f_0) / horizon``, the mean log loss relative to the task's
  starting loss ``f_0``. Scale-free: multiplying the loss by ``c`` changes nothing, so tasks of
  different scales (a mixture) weigh alike, and progress late in a run -- from 1e-3 to 1e-4 --
  counts as much as early progress (as in learned_optimization's log-loss objectives).
* ``final``: ``phi(f_t) = f_t`` at the episode's last step (``t == horizon``) and 0 before it:
  the meta-loss of an episode is the optimizee's loss where the episode ends. Why choose it: it
  is the quantity evaluation reports (validation and the benchmarks score the final loss), so
  meta-training optimizes what is measured, with no short-horizon reward for fast early
  progress that ends worse. The price is sparse signal: a truncated estimator (``surrogate``,
  ``autograd``, ``sequence``, ``pes``, ``es``) gets a nonzero meta-gradient only from the
  truncation holding an episode's last step; every other truncation contributes exactly 0 (the
  meta-optimizer still steps on it, with Adam's momentum alone). ``full_es`` sees every
  episode's end. Under TBPTT an unroll sees only its own steps, so the last unroll's gradient
  ignores how the earlier unrolls' weights shaped the final loss; PES credits it to them.
  The meta-loss a TBPTT meta-iteration logs (the mean over its unrolls) is therefore the final
  loss divided by the number of unrolls.

An objective is called per step as ``objective(losses, initial, horizon, step=step)``: ``step``
is the step of the episode the losses were measured after (1-based: ``step == horizon`` is the
episode's last step). Only ``final`` reads it; for the others it is optional, so callers that
do not know it keep working and give the same numbers.

``phi`` must be differentiable in ``f``; the surrogate estimator uses its derivative.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

#: an episode's step or length: one for every instance (int), or per instance / per step
#: (a tensor broadcasting against the losses)
Steps = int | Tensor

#: keeps log() finite at a loss of exactly zero (a solved quadratic)
TINY = 1e-12


class MetaObjective(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, losses: Tensor, initial: Tensor, horizon: Steps,
                 step: Steps | None = None) -> Tensor:
        """Per-instance contribution ``phi(f)`` of losses ``(B,)``; ``initial`` is ``f_0 (B,)``,
        ``step`` the episode step the losses were measured after (1-based)."""

    def derivative(self, losses: Tensor, initial: Tensor, horizon: Steps,
                   step: Steps | None = None) -> Tensor:
        """``d phi / d f`` at ``losses`` (constants), ``(B,)``."""
        with torch.enable_grad():
            f = losses.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self(f, initial.detach(), horizon, step).sum(), f)
        return grad


class SumLoss(MetaObjective):
    name = "sum"

    def __call__(self, losses: Tensor, initial: Tensor, horizon: Steps,
                 step: Steps | None = None) -> Tensor:
        return losses

    def derivative(self, losses: Tensor, initial: Tensor, horizon: Steps,
                   step: Steps | None = None) -> Tensor:
        return torch.ones_like(losses)


class MeanLoss(MetaObjective):
    """``f / horizon``: the mean loss over the episode, comparable across horizons (a population
    of per-particle lengths weighs a long episode like a short one)."""

    name = "mean"

    def __call__(self, losses: Tensor, initial: Tensor, horizon: Steps,
                 step: Steps | None = None) -> Tensor:
        return losses / horizon

    def derivative(self, losses: Tensor, initial: Tensor, horizon: Steps,
                   step: Steps | None = None) -> Tensor:
        return torch.ones_like(losses) / horizon


class MeanLogRelative(MetaObjective):
    name = "log_relative"

    def __call__(self, losses: Tensor, initial: Tensor, horizon: Steps,
                 step: Steps | None = None) -> Tensor:
        return (torch.log(losses.clamp(min=0) + TINY) - torch.log(initial + TINY)) / horizon


class FinalLoss(MetaObjective):
    """The loss at the episode's last step (``step == horizon``), 0 at every step before it (see
    the module docstring for why, and for its sparse signal under truncation).

    The earlier steps are weighted by 0 rather than dropped, so a loss that is not finite at
    any step still makes the meta-loss non-finite and the meta-step is skipped, as with
    ``sum``: a diverged inner training is noticed where it diverges, not at its end."""

    name = "final"

    @staticmethod
    def _last(losses: Tensor, horizon: Steps, step: Steps | None) -> Tensor:
        """1.0 where ``step == horizon``, else 0.0, broadcasting against ``losses``."""
        if step is None:
            raise ValueError("meta.objective=final needs the step of the episode each loss was "
                             "measured after: call the objective with step=...")
        step = torch.as_tensor(step, device=losses.device)
        horizon = torch.as_tensor(horizon, device=losses.device)
        return (step == horizon).to(losses.dtype)

    def __call__(self, losses: Tensor, initial: Tensor, horizon: Steps,
                 step: Steps | None = None) -> Tensor:
        return losses * self._last(losses, horizon, step)

    def derivative(self, losses: Tensor, initial: Tensor, horizon: Steps,
                   step: Steps | None = None) -> Tensor:
        return torch.ones_like(losses) * self._last(losses, horizon, step)


OBJECTIVES: dict[str, type[MetaObjective]] = {cls.name: cls for cls in (SumLoss, MeanLoss,
                                                                       MeanLogRelative, FinalLoss)}


def build_objective(name: str) -> MetaObjective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown meta.objective {name!r}: choose one of "
                         f"{', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
