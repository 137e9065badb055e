"""Plain truncated back-propagation through time: autograd through the whole unroll.

The parameters stay attached to the graph, so the meta-loss back-propagates through every update
and every loss. The optimizee gradient fed to the optimizer is a constant (the paper drops second
derivatives) unless ``second_order``, when it is taken with ``create_graph``. Exact, general (any
optimizer, including ones that read the parameters), and the reference the faster estimators are
tested against; its memory holds ``steps`` optimizee graphs.
"""

from __future__ import annotations

from l2l.estimators.base import MetaGradientEstimator, Unroll, UnrollOutcome


class AutogradEstimator(MetaGradientEstimator):
    name = "autograd"

    def estimate(self, unroll: Unroll) -> UnrollOutcome:
        params, grads, state = unroll.params, unroll.grads, unroll.state
        total = 0.0
        for k in range(unroll.steps):
            update, state = self.update(grads, state, params)
            params = params + update
            loss, grads = unroll.instances.loss_and_grad(params, unroll.start + k + 1,
                                                         create_graph=self.second_order)
            if unroll.held_out is not None:  # attached to params, like loss
                loss = unroll.held_out.loss(params, unroll.start + k + 1)
            total = total + self.objective(loss, unroll.initial_loss, unroll.horizon,
                                           step=unroll.start + k + 1).mean()
        finite = bool(total.isfinite())
        if finite:
            total.backward()
        return UnrollOutcome(total.item(), params.detach(), grads.detach(),
                             {k: v.detach() for k, v in state.items()}, finite)
