"""The learned optimizer and its gradient preprocessing."""

from __future__ import annotations

import math

import pytest
import torch

from l2l.learned.lstm import LSTMOptimizer
from l2l.preprocessing import preprocess


def test_paper_preprocessing_formula():
    p = 10.0
    x = torch.tensor([1.0, -2.0, 1e-3, -1e-6, 1e-5, 0.0], dtype=torch.float64)
    out = preprocess(x, "log_sign", p)
    threshold = math.exp(-p)  # 4.54e-5
    for value, (a, b) in zip(x.tolist(), out.tolist()):
        if abs(value) >= threshold:
            assert a == pytest.approx(math.log(abs(value)) / p)
            assert b == math.copysign(1.0, value)
        else:
            assert a == -1.0
            assert b == pytest.approx(math.exp(p) * value)


def test_official_clamped_preprocessing_stays_in_unit_box():
    x = torch.logspace(-12, 4, 50, dtype=torch.float64) * torch.tensor([1.0, -1.0]).repeat(25)
    out = preprocess(x, "log_sign_clamped", 5.0)
    assert out.abs().max() <= 1.0
    assert preprocess(x, "none").shape == (50, 1)


def test_preprocessing_is_differentiable_at_zero():
    x = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    preprocess(x, "log_sign").sum().backward()
    assert torch.isfinite(x.grad).all()


def test_unknown_preprocessing_is_rejected():
    with pytest.raises(ValueError, match="unknown preprocessing 'log'.*log_sign"):
        LSTMOptimizer(preprocessing="log")
    with pytest.raises(ValueError, match="hidden_size"):
        LSTMOptimizer(hidden_size=0)
    with pytest.raises(ValueError, match="output_scale"):
        LSTMOptimizer(output_scale=-0.1)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_frozen_fast_path_equals_the_differentiable_path(dtype, tol):
    torch.manual_seed(0)
    net = LSTMOptimizer(hidden_size=12, num_layers=3).to(dtype)
    g = torch.randn(3, 40, dtype=dtype)
    params = torch.zeros(3, 40, dtype=dtype)
    frozen, live = net.init(params), net.init(params)
    for t in range(6):
        with torch.no_grad():
            u_frozen, frozen = net.update(g * (t + 1), frozen, params)
        u_live, live = net.update(g * (t + 1), live, params)
        assert u_live.requires_grad and not u_frozen.requires_grad
        torch.testing.assert_close(u_frozen, u_live.detach(), rtol=tol, atol=tol)
        for key in live:
            torch.testing.assert_close(frozen[key], live[key].detach(), rtol=tol, atol=10 * tol)


def test_coordinatewise_and_instance_independent():
    torch.manual_seed(1)
    net = LSTMOptimizer().double()
    g = torch.randn(4, 30, dtype=torch.float64)
    params = torch.zeros(4, 30, dtype=torch.float64)
    state = net.init(params)
    batch, _ = net.update(g, state, params)
    alone, _ = net.update(g[2:3, 5:6], net.init(params[2:3, 5:6]), params[2:3, 5:6])
    torch.testing.assert_close(batch[2:3, 5:6], alone, rtol=0, atol=1e-15)


def test_meta_gradient_finite_from_fresh_state_with_zero_gradients():
    """Second-order paths differentiate through the preprocessing of exactly-zero gradients."""
    torch.manual_seed(2)
    net = LSTMOptimizer().double()
    params = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)
    grads = 2 * params  # zero, but a function of the parameters
    update, _ = net.update(grads, net.init(params), params)
    update.sum().backward()
    assert torch.isfinite(params.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_untrained_optimizer_is_the_no_op_but_still_learns():
    """The zero-initialised head: no update before training, a non-zero head gradient."""
    torch.manual_seed(3)
    net = LSTMOptimizer()
    g = torch.randn(2, 10)
    update, _ = net.update(g, net.init(g), g)
    assert torch.equal(update, torch.zeros_like(update))
    update.sum().backward()
    assert net.head.weight.grad.abs().sum() > 0
    random_head = LSTMOptimizer(zero_head=False)
    assert random_head.update(g, random_head.init(g), g)[0].abs().sum() > 0
