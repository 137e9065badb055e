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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from l2l.estimators.base import MetaGradientEstimator, Unroll, UnrollOutcome, Update
from l2l.learned.base import LearnedOptimizer
from l2l.objectives import MetaObjective
from l2l.range_checks import check_range
from l2l.tasks.seeding import stream_key
from l2l.truncated_step import FlatWeights, TruncatedStep
from l2l.unroll_lengths import SCHEDULES

#: how the antithetic loss differences ``L+ - L-`` enter the gradient (``meta.es_difference``):
#: as they are, by their sign alone (sign-ES: robust to heavy-tailed differences, a meta-loss
#: that blows up counts as much as a small one), or divided by their root mean square over the
#: pairs (normalised: the step size no longer follows the loss's scale)
DIFFERENCES = ("plain", "sign", "normalized")


def check_population_settings(config: Any) -> None:
    """The population estimators' ``meta.*`` settings (a ``MetaConfig``), one line each."""
    check_range("meta.sigma", config.sigma, 0.0, low_inclusive=False)
    particles = config.particles
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 2 \
            or particles % 2:
        raise ValueError(f"meta.particles={particles!r} must be an even integer >= 2 (the "
                         "particles are antithetic pairs): set meta.particles=8, say")
    if config.lengths not in SCHEDULES:
        raise ValueError(f"unknown meta.lengths {config.lengths!r}: choose one of "
                         f"{', '.join(SCHEDULES)}")
    for name in ("min_length", "max_length"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"meta.{name} must be a positive integer, got {value!r}")
    if config.lengths == "log_uniform":
        if config.min_length > config.max_length:
            raise ValueError(f"meta.min_length={config.min_length} exceeds meta.max_length="
                             f"{config.max_length}: set min_length <= max_length")
        if config.unroll > config.min_length:
            raise ValueError(f"meta.unroll={config.unroll} is longer than the shortest unroll "
                             f"length meta.min_length={config.min_length}: set meta.unroll <= "
                             "meta.min_length")
    if config.es_difference not in DIFFERENCES:
        raise ValueError(f"unknown meta.es_difference {config.es_difference!r}: choose one of "
                         f"{', '.join(DIFFERENCES)}")


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
                 seed: int = 0, difference: str = "plain") -> None:
        super().__init__(update, objective, second_order=second_order, optimizer=optimizer)
        if optimizer is None:
            raise ValueError(f"the {self.name} estimator needs the optimizer (optimizer=...)")
        reason = self.unsupported(optimizer, second_order=second_order)
        if reason:
            raise ValueError(f"meta.estimator={self.name} cannot be used here: {reason}")
        check_range("meta.sigma", sigma, 0.0, low_inclusive=False)
        self.sigma = float(sigma)
        if difference not in DIFFERENCES:
            raise ValueError(f"unknown meta.es_difference {difference!r}: choose one of "
                             f"{', '.join(DIFFERENCES)}")
        self.difference = difference
        #: True on every process if true on any (``Synchronizer.any``): a population split over
        #: processes agrees on how long an episode runs
        self.any: Callable[[bool], bool] = bool
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

    def perturbations(self, population: TruncatedStep) -> Tensor:
        """``(H, d)`` draws of ``N(0, sigma^2 I)`` for the population's pairs, from the
        estimator's own generator: every process draws those of the whole population (in the
        same order, so the same ones) and keeps its own pairs'."""
        eps = torch.randn(population.total_pairs, self.weights.size, generator=self.generator,
                          dtype=torch.float64) * self.sigma
        eps = eps[population.first_pair:population.first_pair + population.pairs]
        reference = next(self.optimizer.parameters())
        return eps.to(device=reference.device, dtype=reference.dtype)

    def particle_weights(self, eps: Tensor) -> Tensor:
        """``(2 H, d)``: pair ``j``'s ``+`` twin at row ``j``, its ``-`` twin at ``j + H``."""
        theta = self.weights.vector()
        return torch.cat([theta + eps, theta - eps])

    def differences(self, truncation: Any, pairs: int) -> tuple[Tensor, Tensor]:
        """``L+ - L-`` per pair of the truncation's two parts, shaped by ``meta.es_difference``."""
        before, after = antithetic_differences(truncation, pairs)
        if self.difference == "sign":
            return torch.sign(before), torch.sign(after)
        if self.difference == "normalized":
            scale = (before + after).square().mean().sqrt().clamp(min=1e-30)
            return before / scale, after / scale
        return before, after

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
