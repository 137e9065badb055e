"""The official code's known-answer check (see shared NOTES.md) and first-order gradient paths."""

from __future__ import annotations

import pytest
import torch

from l2l.learned.lstm import LSTMOptimizer
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.tasks.base import Instances, TaskFamily


class _SquareInstances(Instances):
    def __init__(self, x0: torch.Tensor) -> None:
        self.init_params = x0

    def loss(self, params, step):
        return (params**2).sum(dim=1)

    def repeat(self, times):
        return _SquareInstances(self.init_params.repeat(times, 1))


class Square(TaskFamily):
    """f(x) = x^2 from x_0 = 1, the official tests' problem."""

    name = "square"

    @property
    def num_params(self):
        return 1

    def sample(self, batch_size, seed, split="train", *, offset=0, device=None,
               dtype=torch.float64):
        return _SquareInstances(torch.ones(batch_size, 1, dtype=torch.float64, device=device))


@pytest.mark.parametrize("mode", ["surrogate", "autograd"])
def test_official_known_answer(mode):
    net = LSTMOptimizer(num_layers=0, preprocessing="none", output_scale=1.0).double()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    config = MetaConfig(iterations=1, horizon=10, unroll=5, meta_lr=0.01, estimator=mode,
                        val_instances=1)
    trainer = MetaTrainer(net, Square(), config)
    instances = Square().sample(1, 0)
    params = instances.init_params
    state = net.init(params)
    _, grads = instances.loss_and_grad(params, 0)
    for start in (0, 5):
        trainer.meta_optimizer.zero_grad()
        out = trainer.unroll(instances, params, grads, state, start, 5)
        trainer.meta_optimizer.step()
        params, grads, state = out.params, out.grads, out.state
        if start == 0:
            assert params.item() == 1.0
            assert net.head.weight.item() == pytest.approx(-0.01, abs=1e-9)
            assert net.head.bias.item() == pytest.approx(-0.01, abs=1e-9)
    assert params.item() == pytest.approx(0.85588, abs=5e-6)
    assert instances.loss(params, 10).item() == pytest.approx(0.7325327, abs=5e-7)


def _lstm(seed=0):
    torch.manual_seed(seed)
    # a random head, so that every weight has a non-trivial meta-gradient from the start
    return LSTMOptimizer(hidden_size=8, num_layers=2, output_scale=0.1, zero_head=False).double()


class _Quadratic(Instances):
    def __init__(self, W, y, x0):
        self.W, self.y, self.init_params = W, y, x0

    def loss(self, params, step):
        r = torch.einsum("bij,bj->bi", self.W, params) - self.y
        return (r**2).sum(1) + 0.1 * torch.sin(3 * params).sum(1)  # non-quadratic: Hessian varies


def test_surrogate_meta_gradient_equals_autograd():
    """The fast first-order path gives the same meta-gradient as plain autograd."""
    g = torch.Generator().manual_seed(3)
    B, n = 3, 5
    inst = _Quadratic(torch.randn(B, n, n, generator=g, dtype=torch.float64),
                      torch.randn(B, n, generator=g, dtype=torch.float64),
                      torch.randn(B, n, generator=g, dtype=torch.float64))
    grads_by_mode = {}
    for mode in ("surrogate", "autograd"):
        net = _lstm()
        trainer = MetaTrainer(net, Square(), MetaConfig(estimator=mode, val_instances=1))
        params = inst.init_params
        state = net.init(params)
        _, g0 = inst.loss_and_grad(params, 0)
        out = trainer.unroll(inst, params, g0, state, 0, 7)
        # a second unroll from the carried state exercises the truncation
        net.zero_grad()
        out = trainer.unroll(inst, out.params, out.grads, out.state, 7, 6)
        grads_by_mode[mode] = ([p.grad.clone() for p in net.parameters()], out.meta_loss)
    (ga, la), (gb, lb) = grads_by_mode["surrogate"], grads_by_mode["autograd"]
    assert la == pytest.approx(lb, rel=1e-12)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert any(a.abs().sum() > 0 for a in ga)


def test_second_order_differs_from_first_order():
    """second_order=True really back-propagates through the optimizee gradients."""
    g = torch.Generator().manual_seed(4)
    B, n = 2, 4
    inst = _Quadratic(torch.randn(B, n, n, generator=g, dtype=torch.float64),
                      torch.randn(B, n, generator=g, dtype=torch.float64),
                      torch.randn(B, n, generator=g, dtype=torch.float64))
    results = []
    for second in (False, True):
        net = _lstm()
        trainer = MetaTrainer(net, Square(), MetaConfig(second_order=second, val_instances=1))
        state = net.init(inst.init_params)
        _, g0 = inst.loss_and_grad(inst.init_params, 0)
        trainer.unroll(inst, inst.init_params, g0, state, 0, 5)
        results.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.isfinite(results[1]).all()
    assert not torch.allclose(results[0], results[1])
