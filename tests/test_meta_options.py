"""Meta-training options: estimators agree for every learned optimizer and objective; random
problem scaling keeps the function; task mixtures draw deterministically from every component."""

from __future__ import annotations

import math

import pytest
import torch

from l2l.estimators import choose_estimator, estimator_classes
from l2l.estimators.base import Unroll
from l2l.objectives import build_objective
from l2l.registry import build_optimizer, learned_names
from l2l.tasks import build_task
from l2l.tasks.mixture import MixtureFamily
from l2l.tasks.scaled import ScaledInstances, random_scale
from l2l.validation import Validator


def _meta_gradient(name: str, estimator: str, objective: str, problems):
    torch.manual_seed(0)
    opt = build_optimizer(name).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random weights everywhere, so that every weight matters
        for p in opt.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    cls = estimator_classes()[estimator]
    est = cls(opt.update, build_objective(objective))
    params = problems.init_params
    initial, grads = problems.loss_and_grad(params, 0)
    state = opt.init(params)
    out = est.estimate(Unroll(problems, params, grads, state, 0, 5, initial, 10))
    out = est.estimate(Unroll(problems, out.params, out.grads, out.state, 5, 5, initial, 10))
    return [p.grad.clone() if p.grad is not None else None for p in opt.parameters()], out


@pytest.mark.parametrize("objective", ["sum", "mean", "log_relative"])
@pytest.mark.parametrize("name", learned_names())
def test_surrogate_equals_autograd_for_every_learned_optimizer(name, objective):
    problems = build_task("quadratic").sample(3, 0, "train", dtype=torch.float64)
    fast, out_fast = _meta_gradient(name, "surrogate", objective, problems)
    slow, out_slow = _meta_gradient(name, "autograd", objective, problems)
    assert out_fast.meta_loss == pytest.approx(out_slow.meta_loss, rel=1e-12)
    assert any(a is not None and a.abs().sum() > 0 for a in fast)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_auto_picks_the_fast_exact_estimator_when_it_applies():
    lstm = build_optimizer("lstm")
    assert choose_estimator("auto", lstm, second_order=False).name == "surrogate"
    assert choose_estimator("auto", lstm, second_order=True).name == "autograd"


def test_log_relative_objective_is_scale_free():
    objective = build_objective("log_relative")
    losses, initial = torch.tensor([0.5, 2.0]), torch.tensor([1.0, 4.0])
    torch.testing.assert_close(objective(losses, initial, 10),
                               objective(1000 * losses, 1000 * initial, 10))
    torch.testing.assert_close(objective.derivative(losses, initial, 10), 1 / (10 * losses))


def test_random_scaling_is_the_same_function_from_a_rescaled_start():
    problems = build_task("quadratic").sample(4, 0, "train", dtype=torch.float64)
    scaled = random_scale(problems, 2.0, seed=0, split="train", offset=0)
    assert isinstance(scaled, ScaledInstances)
    c = scaled.scale
    assert c.min() >= math.exp(-2) and c.max() <= math.exp(2) and c.std() > 0.1
    torch.testing.assert_close(scaled.loss(scaled.init_params, 0),
                               problems.loss(problems.init_params, 0))
    theta = torch.randn(4, 10, dtype=torch.float64)
    _, g_scaled = scaled.loss_and_grad(theta, 0)
    _, g = problems.loss_and_grad(theta * c, 0)
    torch.testing.assert_close(g_scaled, c * g)
    again = random_scale(problems, 2.0, seed=0, split="train", offset=0)
    assert torch.equal(again.scale, c)  # a function of (seed, split, instance) only
    assert random_scale(problems, 0.0, seed=0, split="train", offset=0) is problems


def test_mixture_draws_every_component_deterministically():
    small = build_task("quadratic", dim=3)
    big = build_task("quadratic", dim=7)
    mixture = MixtureFamily([small, big])
    sizes = [mixture.sample(2, 0, "train", offset=2 * i).num_params for i in range(40)]
    assert set(sizes) == {3, 7}
    assert sizes == [mixture.sample(2, 0, "train", offset=2 * i).num_params for i in range(40)]
    weighted = MixtureFamily([small, big], weights=[0.0, 1.0])
    assert {weighted.sample(1, 0, offset=i).num_params for i in range(20)} == {7}
    with pytest.raises(ValueError, match="different parameter counts"):
        _ = mixture.num_params
    with pytest.raises(ValueError, match="weights"):
        MixtureFamily([small, big], weights=[1.0])


def test_mixture_from_a_config_and_its_validation_covers_every_component():
    mixture = build_task("mixture", components=[
        {"family": "quadratic", "kwargs": {"dim": 3}, "name": "q3"},
        {"family": "quadratic", "kwargs": {"dim": 5}}])
    assert [c.name for c in mixture.components] == ["q3", "quadratic"]
    validator = Validator(mixture, instances=4, seed=0, horizon=5, device=torch.device("cpu"))
    assert [s.num_params for s in validator.sets] == [3, 5]
    score = validator.score(build_optimizer("sgd", lr=0.01))
    assert math.isfinite(score)
    with pytest.raises(ValueError, match="needs a `family:`"):
        build_task("mixture", components=[{"kwargs": {}}])


def test_a_blow_up_is_judged_on_the_scale_of_the_validation_score():
    """A mixture's score is a mean log loss, negative once it beats the start: 100x the loss is
    + log(100) there, and a ratio of two such scores (the old check) flagged a score that had
    merely come back to the untrained one's."""
    mixture = build_task("mixture", components=[{"family": "quadratic", "kwargs": {"dim": 3}},
                                                {"family": "quadratic", "kwargs": {"dim": 5}}])
    cpu = torch.device("cpu")
    logs = Validator(mixture, instances=2, seed=0, horizon=5, device=cpu)
    assert logs.log_scale
    assert not logs.blew_up(-1.07, -1.07) and not logs.blew_up(-1.07, 3.0)
    assert logs.blew_up(-1.07, -1.07 + math.log(100) + 0.01)
    plain = Validator(build_task("quadratic"), instances=2, seed=0, horizon=5, device=cpu)
    assert not plain.log_scale
    assert not plain.blew_up(0.3, 29.0) and plain.blew_up(0.3, 31.0)
    assert not plain.blew_up(0.3, math.inf) and not plain.blew_up(math.nan, 1.0)
