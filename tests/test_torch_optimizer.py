"""The drop-in torch.optim.Optimizer wrapper against torch.optim itself."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import baselines
from l2l.lstm_optimizer import LSTMOptimizer
from l2l.torch_optimizer import TorchOptimizer

CASES = [
    (baselines.SGD, torch.optim.SGD, {"lr": 0.1}),
    (baselines.Momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (baselines.Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    (baselines.RMSProp, torch.optim.RMSprop, {"lr": 0.01, "centered": True}),
]


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(
        16, 2, generator=g, dtype=torch.float64)


def _train(model, opt, steps, scheduler=None):
    x, y = _data()
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("ours,theirs,hp", CASES, ids=[c[0].__name__ for c in CASES])
def test_matches_torch_optim_on_a_module(ours, theirs, hp):
    a, b = _model(), _model()
    _train(a, TorchOptimizer(a.parameters(), ours(**hp)), 30)
    _train(b, theirs(b.parameters(), **hp), 30)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


def test_lr_scheduler_and_param_groups_drive_the_rule():
    a, b = _model(), _model()
    groups = lambda m: [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.003}]  # noqa: E731
    oa = TorchOptimizer(groups(a), baselines.Adam(lr=0.01))
    ob = torch.optim.Adam(groups(b), lr=0.01)
    _train(a, oa, 20, torch.optim.lr_scheduler.StepLR(oa, 5, gamma=0.5))
    _train(b, ob, 20, torch.optim.lr_scheduler.StepLR(ob, 5, gamma=0.5))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", [baselines.Adam(lr=0.01), LSTMOptimizer().double()],
                         ids=["adam", "lstm"])
def test_state_dict_round_trip(rule):
    """Interrupting after 10 steps, saving and restoring gives the same as 20 straight steps."""
    straight = _model()
    _train(straight, TorchOptimizer(straight.parameters(), rule), 20)

    first = _model()
    opt = TorchOptimizer(first.parameters(), rule)
    _train(first, opt, 10)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    second = _model(seed=5)
    second.load_state_dict(saved["model"])
    opt2 = TorchOptimizer(second.parameters(), rule)
    opt2.load_state_dict(saved["opt"])
    _train(second, opt2, 10)
    for pa, pb in zip(straight.parameters(), second.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_learned_optimizer_is_frozen_and_moves_parameters():
    model = _model()
    lstm = LSTMOptimizer(zero_head=False).double()  # untrained but not the no-op
    before = [p.clone() for p in model.parameters()]
    _train(model, TorchOptimizer(model.parameters(), lstm), 3)
    assert all(p.grad is None for p in lstm.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_rejects_something_that_is_not_an_l2l_optimizer():
    with pytest.raises(TypeError, match="BatchedOptimizer"):
        TorchOptimizer(_model().parameters(), torch.optim.SGD)
