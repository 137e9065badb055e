"""Hypergradients: d(final loss)/d(lr) by autograd through 50 unrolled steps equals a central
finite difference, for all eight baselines (and a scheduled one), in float64.

The gradient fed to the optimizer at each step is ``torch.autograd.grad(loss.sum(), params,
create_graph=True)`` w.r.t. the current parameters, so the unrolled graph contains the
second-order terms the meta-gradient needs.
"""

from __future__ import annotations

import pytest
import torch
from problems import loss_fn, make_problem
from torch import Tensor

from baselines import NAG, SGD, AdaDelta, AdaGrad, Adam, Momentum, Nadam, RMSProp
from l2l.interface import BatchedOptimizer
from l2l.schedules import ExponentialDecay, Scheduled

STEPS = 50


def final_loss(opt: BatchedOptimizer, x0: Tensor, target: Tensor) -> Tensor:
    """Per-instance loss (B,) after STEPS unrolled steps of ``opt`` (differentiable)."""
    params = x0.clone().requires_grad_(True)
    state = opt.init(params)
    for _ in range(STEPS):
        (grads,) = torch.autograd.grad(loss_fn(params, target).sum(), params, create_graph=True)
        update, state = opt.update(grads, state, params)
        params = params + update
    return loss_fn(params, target)


CASES = [
    pytest.param(SGD(lr=0.02, weight_decay=0.01), id="sgd"),
    pytest.param(Momentum(lr=0.01, dampening=0.2), id="momentum"),
    pytest.param(NAG(lr=0.01), id="nag"),
    pytest.param(AdaGrad(lr=0.05, lr_decay=0.01), id="adagrad"),
    pytest.param(RMSProp(lr=0.003, centered=True, momentum=0.5), id="rmsprop"),
    pytest.param(AdaDelta(lr=0.5), id="adadelta"),
    pytest.param(Adam(lr=0.01), id="adam"),
    pytest.param(Adam(lr=0.01, weight_decay=0.01, maximize=False), id="adam-wd"),
    pytest.param(Nadam(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True), id="nadam"),
    pytest.param(Scheduled(Adam(lr=0.01), ExponentialDecay(0.5, 20.0)), id="scheduled-adam"),
]


@pytest.mark.parametrize("opt", CASES)
def test_lr_hypergradient_matches_finite_difference(opt: BatchedOptimizer) -> None:
    x0, target = make_problem(torch.float64, batch=3, seed=2)
    base = float(opt.hyperparameters()["lr"])
    # one learning rate per instance, so the B instances check B different values at once
    lr0 = base * torch.tensor([[1.0], [0.6], [1.3]], dtype=torch.float64)

    lr = lr0.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(
        final_loss(opt.with_hyperparameters(lr=lr), x0, target).sum(), lr
    )

    h = 1e-5 * lr0  # truncation error ~ (h / lr)^2, rounding ~ 1e-16 / (h / lr)
    plus = final_loss(opt.with_hyperparameters(lr=lr0 + h), x0, target).detach()
    minus = final_loss(opt.with_hyperparameters(lr=lr0 - h), x0, target).detach()
    finite_difference = ((plus - minus) / (2 * h.squeeze(1))).unsqueeze(1)

    assert torch.isfinite(autograd).all()
    assert (finite_difference.abs() > 1e-3).all(), "a flat direction proves nothing"
    torch.testing.assert_close(autograd, finite_difference, rtol=1e-6, atol=0.0)
