from __future__ import annotations

import pytest
import torch

from l2l.tasks import QuadraticFamily, TaskFamily, build_task


def test_loss_and_grad_match_closed_form():
    inst = QuadraticFamily().sample(6, seed=3, dtype=torch.float64)
    theta = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    losses, grads = inst.loss_and_grad(theta, step=0)
    for i in range(6):
        W, y = inst.W[i], inst.y[i]
        r = W @ theta[i] - y
        assert torch.allclose(losses[i], r @ r, rtol=1e-12, atol=0)
        assert torch.allclose(grads[i], 2 * W.T @ r, rtol=1e-12, atol=1e-12)


def test_step_is_ignored():
    inst = QuadraticFamily().sample(3, seed=0)
    p = inst.init_params
    assert torch.equal(inst.loss(p, 0), inst.loss(p, 57))


def test_shapes_and_defaults():
    fam = QuadraticFamily()
    inst = fam.sample(5, seed=0)
    assert fam.num_params == 10 and inst.num_params == 10 and inst.batch_size == 5
    assert inst.W.shape == (5, 10, 10) and inst.y.shape == (5, 10)
    assert inst.init_params.dtype == torch.float32
    # paper default: standard normal W and y (some negatives); theta0 ~ N(0, 0.01^2)
    big = fam.sample(200, seed=1)
    assert (big.W < 0).any() and abs(big.W.std().item() - 1) < 0.05
    assert abs(big.init_params.std().item() - 0.01) < 0.001
    assert inst.evaluate(inst.init_params) == {}


def test_official_setting_is_uniform():
    # conf/task/quadratic_official.yaml's kwargs
    fam = build_task("quadratic", dim=10, w_dist="uniform", y_dist="uniform", init_std=0.01)
    inst = fam.sample(200, seed=0)
    assert inst.W.min() >= 0 and inst.W.max() < 1 and inst.y.min() >= 0 and inst.y.max() < 1
    assert abs(inst.W.mean().item() - 0.5) < 0.02
    assert abs(inst.init_params.std().item() - 0.01) < 0.001


def test_zero_init():
    inst = QuadraticFamily(init_std=None).sample(3, seed=0)
    assert torch.equal(inst.init_params, torch.zeros(3, 10))


def test_instance_independence():
    fam = QuadraticFamily()
    batch = fam.sample(5, seed=7, split="valid")
    for i in range(5):
        one = fam.sample(1, seed=7, split="valid", offset=i)
        assert torch.equal(one.W[0], batch.W[i])
        assert torch.equal(one.y[0], batch.y[i])
        assert torch.equal(one.init_params[0], batch.init_params[i])


def test_seed_and_split_determinism():
    fam = QuadraticFamily()
    a, b = fam.sample(4, seed=1), fam.sample(4, seed=1)
    assert torch.equal(a.W, b.W) and torch.equal(a.init_params, b.init_params)
    for other in (fam.sample(4, seed=2), fam.sample(4, seed=1, split="test")):
        assert not torch.equal(a.W, other.W)
        assert not torch.equal(a.init_params, other.init_params)
    # distinct instances within a batch
    assert not torch.equal(a.W[0], a.W[1])


def test_dtypes_hold_the_same_problem():
    fam = QuadraticFamily()
    a = fam.sample(3, seed=0, dtype=torch.float32)
    b = fam.sample(3, seed=0, dtype=torch.float64)
    assert torch.allclose(a.W.double(), b.W, atol=1e-6)


def test_build_task_and_errors():
    assert isinstance(build_task("quadratic", dim=4), TaskFamily)
    assert build_task("quadratic", dim=4).num_params == 4
    with pytest.raises(ValueError, match="valid names.*quadratic"):
        build_task("no_such_task")
    with pytest.raises(ValueError, match="w_dist"):
        QuadraticFamily(w_dist="cauchy")
    with pytest.raises(ValueError, match="dim"):
        QuadraticFamily(dim=0)
    with pytest.raises(ValueError, match="split"):
        QuadraticFamily().sample(2, seed=0, split="training")
    with pytest.raises(ValueError, match="batch_size"):
        QuadraticFamily().sample(0, seed=0)
