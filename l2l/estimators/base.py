"""The interface of a meta-gradient estimator: one truncated unroll in, a meta-gradient out.

The meta-trainer owns the outer loop (tasks, meta-optimizer steps, validation, checkpoints); an
estimator owns one question: given the optimizer, a batch of problem instances and where they
stand (parameters, gradient, optimizer state, step), run ``steps`` optimizee steps and leave
``d meta-loss / d weights`` in the learned optimizer's ``.grad``. A new estimator (PES, ES, ...)
is one new module in ``l2l/estimators/`` defining a subclass with its own ``name``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from l2l.interface import State
from l2l.learned.base import LearnedOptimizer
from l2l.objectives import MetaObjective
from l2l.tasks.base import Instances

Update = Callable[[Tensor, State, Tensor], tuple[Tensor, State]]


@dataclass
class Unroll:
    """Where a truncated unroll starts."""

    instances: Instances
    params: Tensor  #: (B, n) at optimizee step ``start``
    grads: Tensor  #: gradient at ``params``
    state: State  #: the optimizer's state at ``start``
    start: int  #: optimizee step of ``params``
    steps: int  #: optimizee steps in this unroll
    initial_loss: Tensor  #: (B,) meta-objective loss at the task's theta_0 (relative ones)
    horizon: int  #: optimizee steps per task
    #: where the meta-objective's losses are measured when not on the training minibatches:
    #: the same problems on held-out data (``meta.objective_split=valid``, ``Instances.held_out``)
    held_out: Instances | None = None

    def meta_loss_and_grad(self, params: Tensor, step: int, loss: Tensor,
                           grads: Tensor) -> tuple[Tensor, Tensor]:
        """The loss the meta-objective reads at ``params`` and its gradient: the training
        minibatch's ``loss`` and ``grads`` themselves, or the held-out ones."""
        if self.held_out is None:
            return loss, grads
        return self.held_out.loss_and_grad(params, step)


@dataclass
class UnrollOutcome:
    meta_loss: float  #: mean over instances of the unroll's summed objective
    params: Tensor  #: where the unroll ended (detached)
    grads: Tensor  #: gradient at ``params`` (the next unroll's first input)
    state: State  #: the optimizer's state at the end (detached)
    finite: bool  #: False: the meta-loss was not finite and no gradient was produced


class MetaGradientEstimator(abc.ABC):
    """Estimates the meta-gradient of one unroll into ``optimizer``'s ``.grad`` fields."""

    name: ClassVar[str]

    def __init__(self, update: Update, objective: MetaObjective, *,
                 second_order: bool = False, optimizer: LearnedOptimizer | None = None) -> None:
        self.update = update  #: the optimizer's update (possibly compiled)
        self.objective = objective
        self.second_order = second_order
        #: the optimizer itself, for estimators that need more than ``update`` (``sequence``)
        self.optimizer = optimizer

    @classmethod
    def unsupported(cls, optimizer: LearnedOptimizer, *, second_order: bool) -> str | None:
        """Why this estimator cannot serve ``optimizer`` (None if it can)."""
        return None

    @abc.abstractmethod
    def estimate(self, unroll: Unroll) -> UnrollOutcome:
        """Run the unroll and accumulate the meta-gradient (unless the meta-loss is not finite)."""
