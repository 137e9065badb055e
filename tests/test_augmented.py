"""Task augmentation (``family: augmented``): the base problem's trajectories and optimum under
per-tensor parameter scales and a loss scale, deterministic per instance."""

from __future__ import annotations

import math

import pytest
import torch

from l2l.tasks import AugmentedFamily, build_task
from l2l.tasks.scaled import ScaledInstances

TS = {"family": "teacher_student",
      "kwargs": {"input_dim": 3, "hidden_sizes": [4], "num_examples": 20, "batch_size": 5}}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _aug(task=TS, **kwargs) -> AugmentedFamily:
    return build_task("augmented", task=task, **kwargs)


def test_the_base_problem_is_visited_and_gradients_scale_per_tensor():
    fam = _aug(param_scale_range=1.5, loss_scale_range=1.0)
    base = build_task(TS["family"], **TS["kwargs"])
    aug, ref = fam.sample(3, seed=2, dtype=torch.float64), base.sample(3, seed=2,
                                                                       dtype=torch.float64)
    c, a = fam.factors(3, 2, "train", 0)
    assert torch.allclose(aug.init_params * c, ref.init_params, rtol=1e-12)
    theta = ref.init_params + 0.3
    la, ga = aug.loss_and_grad(theta / c, 4)
    lb, gb = ref.loss_and_grad(theta, 4)
    assert torch.allclose(la, a * lb, rtol=1e-12)
    assert torch.allclose(ga, a.unsqueeze(1) * c * gb, rtol=1e-10)
    assert torch.allclose(aug.evaluate(theta / c)["loss"], ref.evaluate(theta)["loss"])
    # one factor per tensor of param_shapes, in range, and not all equal
    off = 0
    factors = []
    for _, shape in fam.param_shapes:
        k = math.prod(shape)
        block = c[:, off : off + k]
        assert torch.equal(block, block[:, :1].expand_as(block))
        factors.append(block[:, 0])
        off += k
    factors = torch.stack(factors, 1)
    assert (factors.log().abs() <= 1.5).all() and factors.std() > 0.1
    assert (a.log().abs() <= 1.0).all() and a.std() > 0


@pytest.mark.parametrize("task", [{"family": "conditioned_quadratic", "kwargs": {"dim": 5}},
                                  {"family": "rosenbrock", "kwargs": {"dim": 4}}])
def test_the_optimum_loss_is_unchanged(task):
    fam = _aug(task, param_scale_range=2.0, loss_scale_range=0.0)
    inst = fam.sample(4, seed=0, dtype=torch.float64)
    c, _ = fam.factors(4, 0, "train", 0)
    base = fam.base.sample(4, seed=0, dtype=torch.float64)
    optimum = base.target if task["family"] == "conditioned_quadratic" else torch.ones(4, 4)
    assert torch.allclose(inst.loss(optimum / c, 0), base.minimum(), atol=1e-12)
    assert (inst.loss(inst.init_params, 0) > 0).all()
    # a loss scale multiplies the optimum's loss, here 0, by a: still 0
    scaled = _aug(task, param_scale_range=2.0, loss_scale_range=2.0).sample(4, 0,
                                                                            dtype=torch.float64)
    assert torch.allclose(scaled.loss(optimum / c, 0), base.minimum(), atol=1e-12)


def test_instances_are_deterministic_and_repeatable():
    fam = _aug(param_scale_range=1.0, loss_scale_range=0.5)
    batch = fam.sample(3, seed=1, split="valid")
    p = batch.init_params + 0.1
    for i in range(3):
        one = fam.sample(1, seed=1, split="valid", offset=i)
        assert torch.equal(one.init_params[0], batch.init_params[i])
        assert torch.allclose(one.loss(p[i : i + 1], 2)[0], batch.loss(p, 2)[i], rtol=1e-6)
    twice = batch.repeat(2)
    assert torch.equal(twice.loss(p.repeat(2, 1), 3)[3:], batch.loss(p, 3))
    assert not torch.equal(fam.sample(3, seed=2, split="valid").init_params, batch.init_params)


def test_zero_ranges_leave_the_base_family_and_one_tensor_fallback():
    fam = _aug(param_scale_range=0.0)
    inst = fam.sample(2, seed=0)
    assert type(inst) is type(fam.base.sample(2, seed=0))
    assert _aug({"family": "quadratic", "kwargs": {"dim": 4}}).param_shapes == [("theta", (4,))]
    # a mixture has its components' layout when they agree, else its whole vector is one
    quad = _aug({"family": "mixture", "kwargs": {"components": [
        {"family": "quadratic", "kwargs": {"dim": 4}}]}}, param_scale_range=1.0)
    assert quad.param_shapes == [("theta", (4,))]
    mixed = _aug({"family": "mixture", "kwargs": {"components": [
        {"family": "quadratic", "kwargs": {"dim": 4}},
        {"family": "rosenbrock", "kwargs": {"dim": 4}}]}}, param_scale_range=1.0)
    assert mixed.param_shapes == [("params", (4,))]
    inst = quad.sample(2, seed=0)
    assert isinstance(inst, ScaledInstances)
    assert torch.equal(inst.scale[:, :1].expand(2, 4), inst.scale)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"param_scale_range": -1.0}, "param_scale_range must lie in"),
    ({"loss_scale_range": 11.0}, "loss_scale_range must lie in"),
    ({"task": {"kwargs": {}}}, "needs a `family:`"),
    ({"task": "teacher_student"}, "task must be a task family or a mapping"),
    ({"task": {"family": "no_such"}}, "unknown task family 'no_such'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_task("augmented", **{"task": TS, **kwargs})
