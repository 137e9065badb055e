"""Antithetic truncated evolution strategies: each truncation's own perturbation, no memory.

Every truncation draws ``eps`` per pair, runs the ``+`` and ``-`` twins ``K`` steps from their
persistent states and estimates ``mean eps (L+ - L-) / (2 sigma^2)``. Forward-only and cheap,
but the credit stops at the truncation: the effect of ``eps`` on later truncations (through the
parameters and optimizer state it leaves behind) is never seen, so like truncated
back-propagation it is biased towards greedy, short-horizon behaviour. It is the baseline PES
(``pes``) corrects.
"""

from __future__ import annotations

from l2l.estimators.evolution import PopulationEstimator, PopulationOutcome
from l2l.truncated_step import TruncatedStep


class TruncatedESEstimator(PopulationEstimator):
    name = "es"

    def estimate_population(self, population: TruncatedStep, steps: int) -> PopulationOutcome:
        H = population.pairs
        eps = self.perturbations(population)
        truncation = population.unroll(self.particle_weights(eps), steps)
        before, after = self.differences(truncation, H)
        finite = truncation.finite
        meta_loss = float((truncation.before + truncation.after).sum() / finite.numel())
        if not bool(finite.all()):
            population.reset_pairs(~(finite[:H] & finite[H:]).cpu())
            return PopulationOutcome(meta_loss, False)
        difference = (before + after).cpu().view(-1, 1)
        self.write_gradient((eps.double().cpu() * difference).sum(0) / (2 * self.sigma**2 * H))
        return PopulationOutcome(meta_loss, True)

