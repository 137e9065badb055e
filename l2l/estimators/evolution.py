"""What the evolution-strategies estimators share: antithetic perturbations of the learned weights
and a population of inner trainings, forward only.

An ES estimator never back-propagates: it evaluates the meta-loss at ``theta + eps`` and
``theta - eps`` (``eps ~ N(0, sigma^2 I)``, one per antithetic pair) and estimates the gradient of
the Gaussian-smoothed meta-loss as the mean over pairs of ``eps (L+ - L-) / (2 sigma^2)``. It
therefore applies to every learned optimizer (no derivative of the optimizer or the optimizee is
taken, so second-order terms are included automatically), costs no memory per unroll step, and
its particles are independent. The population (parameters, states, episode lengths, resets) is
:class:`l2l.truncated_step.TruncatedStep`; an estimator draws the perturbations, runs the
population and turns its meta-losses into a gradient in the learned weights' ``.grad``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from l2l.estimators.base import MetaGradientEstimator, Unroll, UnrollOutcome, Update
from l2l.interface import check_range
from l2l.learned.base import LearnedOptimizer
from l2l.objectives import MetaObjective
from l2l.tasks.seeding import stream_key
from l2l.truncated_step import FlatWeights, TruncatedStep


@dataclass
class PopulationOutcome:
    meta_loss: float  #: mean over particles of the meta-loss this estimate covered
    finite: bool  #: False: some particle's meta-loss was not finite; no gradient was written


class PopulationEstimator(MetaGradientEstimator):
    """An estimator that runs a :class:`TruncatedStep` instead of one unroll."""

    #: MetaTrainer builds a population for these (and calls :meth:`estimate_population`)
    population: ClassVar[bool] = True
    #: whether the population's first episodes start at random offsets (not in lockstep)
    random_offsets: ClassVar[bool] = True

    def __init__(self, update: Update, objective: MetaObjective, *, second_order: bool = False,
                 optimizer: LearnedOptimizer | None = None, sigma: float = 0.01,
                 seed: int = 0) -> None:
        super().__init__(update, objective, second_order=second_order, optimizer=optimizer)
        if optimizer is None:
            raise ValueError(f"the {self.name} estimator needs the optimizer (optimizer=...)")
        reason = self.unsupported(optimizer, second_order=second_order)
        if reason:
            raise ValueError(f"meta.estimator={self.name} cannot be used here: {reason}")
        check_range("meta.sigma", sigma, 0.0, low_inclusive=False)
        self.sigma = float(sigma)
        self.weights = FlatWeights(optimizer)
        self.generator = torch.Generator().manual_seed(
            stream_key("estimator", seed, "train", self.name) & (2**63 - 1))

    @classmethod
    def unsupported(cls, optimizer: LearnedOptimizer, *, second_order: bool) -> str | None:
        if second_order:
            return ("it is forward-only and already includes every order of derivative: drop "
                    "meta.second_order=true")
        return None

    def estimate(self, unroll: Unroll) -> UnrollOutcome:
        raise TypeError(f"the {self.name} estimator runs a population of inner trainings "
                        "(l2l.truncated_step.TruncatedStep), not one unroll: call "
                        "estimate_population")

    def perturbations(self, pairs: int) -> Tensor:
        """``(pairs, d)`` draws of ``N(0, sigma^2 I)`` from the estimator's own generator."""
        eps = torch.randn(pairs, self.weights.size, generator=self.generator,
                          dtype=torch.float64) * self.sigma
        reference = next(self.optimizer.parameters())
        return eps.to(device=reference.device, dtype=reference.dtype)

    def particle_weights(self, eps: Tensor) -> Tensor:
        """``(2 H, d)``: pair ``j``'s ``+`` twin at row ``j``, its ``-`` twin at ``j + H``."""
        theta = self.weights.vector()
        return torch.cat([theta + eps, theta - eps])

    def write_gradient(self, gradient: Tensor) -> None:
        self.weights.add_to_grad(gradient)

    @abc.abstractmethod
    def estimate_population(self, population: TruncatedStep, steps: int) -> PopulationOutcome:
        """Run ``population`` (``steps`` per truncation) and accumulate the meta-gradient."""

    def state_dict(self) -> dict[str, Any]:
        """What a bit-for-bit resume needs besides the population."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.generator.set_state(saved["generator"].cpu())


def antithetic_differences(truncation: Any, pairs: int) -> tuple[Tensor, Tensor]:
    """``L+ - L-`` per pair ``(H,)`` of the truncation's two parts (before and after a reset)."""
    before, after = truncation.before.double(), truncation.after.double()
    return before[:pairs] - before[pairs:], after[:pairs] - after[pairs:]
