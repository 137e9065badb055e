"""Antithetic evolution strategies over whole episodes: one perturbation per inner training.

Every estimate restarts all pairs from step 0, draws one ``eps`` per pair and runs the ``+`` and
``-`` twins to the end of their episodes (each its own length from the unroll-length schedule, in
chunks of ``meta.unroll`` steps), then takes ``mean eps (L+ - L-) / (2 sigma^2)`` over the
episodes' whole meta-losses. Unbiased for the whole horizon like PES, with lower variance per
estimate, but one meta-step per episode instead of one per truncation.
"""

from __future__ import annotations

import torch

from l2l.estimators.evolution import PopulationEstimator, PopulationOutcome
from l2l.truncated_step import TruncatedStep


class FullESEstimator(PopulationEstimator):
    name = "full_es"
    random_offsets = False

    def estimate_population(self, population: TruncatedStep, steps: int) -> PopulationOutcome:
        H = population.pairs
        population.restart()
        eps = self.perturbations(population)
        weights = self.particle_weights(eps)
        running = torch.ones(H, dtype=torch.bool)  # pairs still in this estimate's episode
        total = torch.zeros(2 * H, dtype=torch.float64)
        while self.any(bool(running.any())):  # every process's share runs as long
            truncation = population.unroll(weights, steps)
            total += torch.where(population.rows(running), truncation.before.double().cpu(), 0.0)
            running &= ~truncation.reset[:H].cpu()
        difference, _ = self.differences(_Totals(total), H)
        meta_loss = float(total.mean())
        if not bool(torch.isfinite(total).all()):
            return PopulationOutcome(meta_loss, False)
        self.write_gradient((eps.double().cpu() * difference.view(-1, 1)).sum(0)
                            / (2 * self.sigma**2 * H))
        return PopulationOutcome(meta_loss, True)


class _Totals:
    """Whole-episode meta-losses in the shape :func:`antithetic_differences` reads."""

    def __init__(self, total: torch.Tensor) -> None:
        self.before = total
        self.after = torch.zeros_like(total)
