"""The fused sequence path: same meta-gradient as surrogate/autograd, a correct hand-written
backward (gradcheck), and meta-training with it learns."""

from __future__ import annotations

import pytest
import torch

from l2l.estimators import choose_estimator, estimator_classes
from l2l.estimators.base import Unroll
from l2l.learned.fused_lstm import lstm_sequence
from l2l.meta_training import MetaConfig, MetaTrainer
from l2l.objectives import build_objective
from l2l.registry import build_optimizer
from l2l.tasks import build_task


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    """Tests run the eager kernels (compiling would take longer than the tests)."""
    monkeypatch.setenv("L2L_FUSED_COMPILE", "0")


def _meta_gradient(name: str, estimator: str, objective: str, problems):
    torch.manual_seed(0)
    opt = build_optimizer(name).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random weights everywhere, so that every weight matters
        for p in opt.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    est = estimator_classes()[estimator](opt.update, build_objective(objective), optimizer=opt)
    params = problems.init_params
    initial, grads = problems.loss_and_grad(params, 0)
    state = opt.init(params)
    outs = []
    for start in (0, 5):  # two consecutive unrolls: the state is carried
        out = est.estimate(Unroll(problems, params, grads, state, start, 5, initial, 10))
        params, grads, state = out.params, out.grads, out.state
        outs.append(out)
    return [p.grad.clone() for p in opt.parameters()], outs


@pytest.mark.parametrize("objective", ["sum", "log_relative"])
@pytest.mark.parametrize("name", ["lstm", "rnnprop"])
def test_sequence_equals_surrogate_and_autograd(name, objective):
    problems = build_task("quadratic").sample(3, 0, "train", dtype=torch.float64)
    fused, outs = _meta_gradient(name, "sequence", objective, problems)
    assert all(g.abs().sum() > 0 for g in fused)
    for reference in ("surrogate", "autograd"):
        expected, ref_outs = _meta_gradient(name, reference, objective, problems)
        for out, ref in zip(outs, ref_outs):
            assert out.meta_loss == pytest.approx(ref.meta_loss, rel=1e-12)
            torch.testing.assert_close(out.params, ref.params, rtol=1e-12, atol=1e-14)
        for a, b in zip(fused, expected):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_fused_lstm_passes_gradcheck():
    torch.manual_seed(0)
    K, N, F, H, L = 3, 4, 2, 3, 2
    x = torch.randn(K, N, F, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L, N, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(L, N, H, dtype=torch.float64, requires_grad=True)
    reference = torch.nn.LSTM(F, H, L).double()
    weights = [w.detach().clone().requires_grad_(True) for w in reference._flat_weights]

    def fused(x, h0, c0, *weights):
        return lstm_sequence(x, h0, c0, weights)

    torch.testing.assert_close(fused(x, h0, c0, *weights), reference(x, (h0, c0))[0])
    assert torch.autograd.gradcheck(fused, (x, h0, c0, *weights))


def test_sequence_applies_to_lstm_cores_only_and_first_order_only():
    cls = estimator_classes()["sequence"]
    for name in ("lstm", "rnnprop"):
        opt = build_optimizer(name)
        assert cls.unsupported(opt, second_order=False) is None
        assert "first-order" in cls.unsupported(opt, second_order=True)
        assert choose_estimator("sequence", opt, second_order=False) is cls
    assert "no sequence form" in cls.unsupported(build_optimizer("learnable_adam"),
                                                 second_order=False)


@pytest.mark.slow
def test_meta_training_with_the_sequence_estimator_lowers_validation_loss():
    torch.manual_seed(0)
    config = MetaConfig(iterations=30, horizon=20, unroll=10, batch_size=4, meta_lr=3e-3,
                        val_every=30, val_instances=8, estimator="sequence")
    opt = build_optimizer("lstm", preprocessing="none", output_scale=1.0)
    trainer = MetaTrainer(opt, build_task("quadratic"), config)
    assert trainer.estimator.name == "sequence"
    before = trainer.validate()
    trainer.train()
    assert trainer.validate() < before


@pytest.mark.slow  # compiles the cell: seconds of inductor time
def test_frozen_step_equals_torch_lstm_over_chunks(monkeypatch):
    """The chunked addmm + compiled-cell frozen step (forced on for a small problem)."""
    from l2l.learned import fused_lstm

    monkeypatch.setenv("L2L_FUSED_COMPILE", "1")
    monkeypatch.setattr(fused_lstm, "COMPILE_MIN_COORDS", 1)
    monkeypatch.setattr(fused_lstm, "FROZEN_CHUNK", 300)
    torch.manual_seed(0)
    N, L = 1000, 2
    lstm = torch.nn.LSTM(2, 20, L)
    weights = [w.detach() for w in lstm._flat_weights]
    x, h0, c0 = torch.randn(N, 2), torch.randn(L, N, 20), torch.randn(L, N, 20)
    out, h, c = fused_lstm.frozen_lstm_step(x, h0, c0, weights)
    _, h_ref, c_ref = torch.lstm(x[None], (h0, c0), weights, True, L, 0.0, False, False, False)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, h_ref[-1], rtol=1e-5, atol=1e-6)


def test_a_second_replay_before_backward_is_refused_not_wrong():
    torch.manual_seed(0)
    opt = build_optimizer("lstm")
    params = torch.zeros(2, 6)
    states = [opt.init(params)]
    xs = []
    with torch.no_grad():
        for _ in range(3):
            x, state = opt.features(torch.randn(2, 6), states[-1])
            states.append(opt.from_features(x, state)[1])
            xs.append(x)
    first = opt.sequence_updates(torch.stack(xs), states)
    opt.sequence_updates(torch.stack(xs), states).sum().backward()
    with pytest.raises(RuntimeError, match="refilled"):
        first.sum().backward()


@pytest.mark.parametrize("name", ["lstm", "rnnprop"])
@pytest.mark.parametrize("fresh", [True, False])
@pytest.mark.parametrize("chunk", [7, 65536])
def test_in_place_lstm_step_equals_update(monkeypatch, chunk, fresh, name):
    """The LSTM-core optimizers' chunked in-place step_ (evaluation, validation, drop-in) is
    their update: parameters and every state entry, over chunks that split instances."""
    from l2l.learned import core

    monkeypatch.setattr(core, "FROZEN_CHUNK", chunk)
    torch.manual_seed(0)
    opt = build_optimizer(name, zero_head=False)
    params, grads = torch.randn(3, 10), torch.randn(3, 10)
    state = opt.init(params)
    with torch.no_grad():
        if not fresh:  # a non-zero state (a fresh one shares one zeros tensor among its keys)
            state = opt.update(grads, state, params)[1]
        update, expected = opt.update(grads, state, params)
    inplace_params = params.clone()
    inplace_state = opt.init(params) if fresh else {k: v.clone() for k, v in state.items()}
    opt.step_(grads, inplace_state, inplace_params)
    torch.testing.assert_close(inplace_params, params + update)
    assert set(inplace_state) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(inplace_state[k], v)
