"""Persistent evolution strategies (PES; Vicol, Metz and Sohl-Dickstein, ICML 2021).

Truncated ES (``es``) perturbs the weights afresh at every truncation and credits each
perturbation with that truncation's losses only, ignoring that the state the truncation starts
from was itself produced by earlier perturbations: it is biased towards short horizons. PES keeps,
per particle, the sum ``xi`` of every perturbation its current episode has seen and credits the
truncation's loss difference to ``xi``, not to the last ``eps``:

    g = mean over pairs of  xi+ (L+ - L-) / (2 sigma^2),   xi+ <- xi+ + eps  before the unroll

(the ``-`` twin's sum is ``-xi+``). Summed over an episode's truncations this is an unbiased
estimate of the gradient of the whole episode's (Gaussian-smoothed) meta-loss. A pair that
reaches its length mid-truncation restarts: the steps of its old episode are credited to the old
sum, those of the new episode to the new ``eps`` alone, which then is the new episode's sum.
"""

from __future__ import annotations

from typing import Any

import torch

from l2l.estimators.evolution import PopulationEstimator, PopulationOutcome
from l2l.truncated_step import TruncatedStep


class PESEstimator(PopulationEstimator):
    name = "pes"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accumulator: torch.Tensor | None = None  #: ``xi+`` per pair ``(H, d)``, float64

    def estimate_population(self, population: TruncatedStep, steps: int) -> PopulationOutcome:
        H = population.pairs
        if self.accumulator is None:
            self.accumulator = torch.zeros(H, self.weights.size, dtype=torch.float64)
        eps = self.perturbations(population)
        truncation = population.unroll(self.particle_weights(eps), steps)
        eps = eps.double().cpu()
        so_far = self.accumulator + eps
        before, after = self.differences(truncation, H)
        reset = truncation.reset[:H].cpu().view(-1, 1)
        finite = truncation.finite
        self.accumulator = torch.where(reset, eps, so_far)
        meta_loss = float((truncation.before + truncation.after).sum() / finite.numel())
        if not bool(finite.all()):
            bad = ~(finite[:H] & finite[H:]).cpu()
            population.reset_pairs(bad)
            self.accumulator[bad] = 0.0
            return PopulationOutcome(meta_loss, False)
        weight = 1.0 / (2 * self.sigma**2 * H)
        gradient = (so_far * before.cpu().view(-1, 1) + eps * after.cpu().view(-1, 1)).sum(0)
        self.write_gradient(gradient * weight)
        return PopulationOutcome(meta_loss, True)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "accumulator": self.accumulator}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        super().load_state_dict(saved)
        acc = saved.get("accumulator")
        self.accumulator = None if acc is None else acc.cpu().double()
