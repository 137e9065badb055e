"""The exact first-order meta-gradient with the learned network run as one sequence model.

In the first-order setting the optimizer's inputs (preprocessed gradients for the LSTM,
``m^/sqrt(v^), g/sqrt(v^)`` for RNNprop) are constants of the learned weights, and the surrogate's
cotangents ``w_t = sum_{s>t} phi'(f_s) g_s / B`` (see :mod:`l2l.estimators.surrogate`) are known
once the unroll ends. So:

1. the rollout runs the optimizer *frozen* (no autograd graph: the fast ``torch.lstm`` kernel)
   and stores its inputs ``x_t`` and the states it went through;
2. after the unroll, ``optimizer.sequence_updates`` replays all K updates as one differentiable
   sequence evaluation (for the LSTM cores: :mod:`l2l.learned.fused_lstm`, whose hand-written
   backward computes each weight gradient as one matmul over all steps), and one backward of
   ``sum_t <u_t, w_t>`` leaves the meta-gradient in ``.grad``.

Same meta-gradient as ``surrogate`` and ``autograd`` (tested to float64 rounding), for optimizers
that declare ``sequence_form`` and do not read their parameters.
"""

from __future__ import annotations

import torch

from l2l.estimators.base import MetaGradientEstimator, Unroll, UnrollOutcome, Update
from l2l.estimators.surrogate import SurrogateEstimator, update_cotangents
from l2l.learned.base import LearnedOptimizer
from l2l.objectives import MetaObjective


class SequenceEstimator(MetaGradientEstimator):
    name = "sequence"

    def __init__(self, update: Update, objective: MetaObjective, *, second_order: bool = False,
                 optimizer: LearnedOptimizer | None = None) -> None:
        super().__init__(update, objective, second_order=second_order, optimizer=optimizer)
        if self.optimizer is None:
            owner = getattr(update, "__self__", None)
            if not isinstance(owner, LearnedOptimizer):
                raise ValueError("the sequence estimator needs the optimizer (optimizer=...)")
            self.optimizer = owner
        reason = self.unsupported(self.optimizer, second_order=second_order)
        if reason:
            raise ValueError(f"meta.estimator=sequence cannot be used here: {reason}")

    @classmethod
    def unsupported(cls, optimizer: LearnedOptimizer, *, second_order: bool) -> str | None:
        reason = SurrogateEstimator.unsupported(optimizer, second_order=second_order)
        if reason:  # the same first-order identity as the surrogate's
            return reason
        if not optimizer.sequence_form:
            return f"the {optimizer.name} optimizer declares no sequence form"
        return None

    def estimate(self, unroll: Unroll) -> UnrollOutcome:
        opt = self.optimizer
        assert opt is not None
        params, grads, state = unroll.params, unroll.grads, unroll.state
        xs, states, later_grads, losses = [], [state], [], []
        with torch.no_grad():  # the frozen rollout: no graph, the optimizee outside autograd
            for k in range(unroll.steps):
                x, state = opt.features(grads, state)
                update, state = opt.from_features(x, state)
                params = params + update.to(params.dtype)
                loss, grads = unroll.instances.loss_and_grad(params, unroll.start + k + 1)
                meta, meta_grads = unroll.meta_loss_and_grad(params, unroll.start + k + 1, loss,
                                                             grads)
                xs.append(x)
                states.append(state)
                later_grads.append(meta_grads)
                losses.append(meta)
        meta_loss, weights = update_cotangents(self.objective, unroll, losses, later_grads)
        finite = weights is not None
        if finite:
            updates = opt.sequence_updates(torch.stack(xs), states)
            updates.backward(weights.to(updates.dtype))
        return UnrollOutcome(meta_loss.item(), params, grads, state, finite)
