"""The exact first-order meta-gradient through the optimizer's graph alone (the fast default).

With the optimizee gradient treated as a constant (the paper's first-order setting) and an
update ``u_t`` that does not read the parameters, the parameters are ``theta_t = theta_0 +
sum_{s<t} u_s`` and

    d meta-loss / d u_t = sum_{s>t} phi'(f_s) g_s / B

where ``g_s`` is the gradient at ``theta_s`` and ``phi`` the meta-objective: gradients the rollout
computes anyway. So the rollout runs with the optimizee outside autograd, and one backward of
``sum_t <u_t, w_t>`` with those weights ``w_t`` gives the same meta-gradient as plain autograd
(tested to 1e-9) without keeping ``steps`` optimizee graphs alive: meta-training costs time and
memory linear in the unroll, and the optimizee's backward is never differentiated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2l.estimators.base import MetaGradientEstimator, Unroll, UnrollOutcome
from l2l.learned.base import LearnedOptimizer
from l2l.objectives import MetaObjective


def update_cotangents(objective: MetaObjective, unroll: Unroll, losses: list[Tensor],
                      later_grads: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """The unroll's meta-loss and ``d meta-loss / d u_t`` for every update ``u_t`` (``(K, B, n)``;
    None when the meta-loss is not finite), from the losses and gradients after each step:
    ``sum_{s >= t} phi'(f_{s+1}) g_{s+1} / B``, a reversed cumulative sum."""
    loss_stack = torch.stack(losses)  # (K, B)
    step = torch.arange(unroll.start + 1, unroll.start + len(losses) + 1).view(-1, 1)
    meta_loss = objective(loss_stack, unroll.initial_loss, unroll.horizon,
                          step=step).sum(0).mean()
    if not bool(meta_loss.isfinite()):
        return meta_loss, None
    slope = objective.derivative(loss_stack, unroll.initial_loss, unroll.horizon, step=step)
    g = torch.stack(later_grads) * slope.unsqueeze(-1)  # (K, B, n)
    return meta_loss, g.flip(0).cumsum(0).flip(0) / g.shape[1]


class SurrogateEstimator(MetaGradientEstimator):
    name = "surrogate"

    @classmethod
    def unsupported(cls, optimizer: LearnedOptimizer, *, second_order: bool) -> str | None:
        if second_order:
            return "it is first-order only (second_order=true needs estimator=autograd)"
        if optimizer.reads_params:
            return (f"the {optimizer.name} optimizer's update reads the parameters "
                    "(use estimator=autograd)")
        return None

    def estimate(self, unroll: Unroll) -> UnrollOutcome:
        params, grads, state = unroll.params, unroll.grads, unroll.state
        updates, later_grads, losses = [], [], []
        for k in range(unroll.steps):
            update, state = self.update(grads, state, params)
            params = params + update.detach()
            loss, grads = unroll.instances.loss_and_grad(params, unroll.start + k + 1)
            meta, meta_grads = unroll.meta_loss_and_grad(params, unroll.start + k + 1, loss,
                                                         grads)
            updates.append(update)
            later_grads.append(meta_grads)
            losses.append(meta)
        meta_loss, weights = update_cotangents(self.objective, unroll, losses, later_grads)
        finite = weights is not None
        if finite:
            surrogate = sum((u * w).sum() for u, w in zip(updates, weights))
            surrogate.backward()
        return UnrollOutcome(meta_loss.item(), params.detach(), grads.detach(),
                             {k: v.detach() for k, v in state.items()}, finite)
