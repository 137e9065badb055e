"""Learning-rate schedules: equal to torch.optim.lr_scheduler.ExponentialLR, and well formed."""

from __future__ import annotations

import math

import pytest
import torch
from problems import grad_fn, make_problem, relative_errors, run_ours, run_torch
from torch import Tensor

from baselines import SGD, Adam, Momentum, Nadam, RMSProp
from l2l.schedules import (
    Constant,
    ExponentialDecay,
    Scheduled,
    build_schedule,
)

B, STEPS = 3, 200


def relative_error(ours: Tensor, reference: Tensor) -> float:
    return float(relative_errors(ours, reference).max())


@pytest.mark.parametrize(
    ("opt", "torch_cls", "torch_kwargs"),
    [
        pytest.param(SGD(lr=0.05), torch.optim.SGD, {"lr": 0.05}, id="sgd"),
        pytest.param(
            Momentum(lr=0.01), torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, id="momentum"
        ),
        pytest.param(Adam(lr=0.02), torch.optim.Adam, {"lr": 0.02}, id="adam"),
        pytest.param(
            Adam(lr=0.02, amsgrad=True),
            torch.optim.Adam,
            {"lr": 0.02, "amsgrad": True},
            id="adam-amsgrad",
        ),
        pytest.param(RMSProp(lr=0.003), torch.optim.RMSprop, {"lr": 0.003}, id="rmsprop"),
        pytest.param(Nadam(lr=0.01), torch.optim.NAdam, {"lr": 0.01}, id="nadam"),
    ],
)
@pytest.mark.parametrize(("decay", "decay_steps"), [(0.5, 50.0), (0.1, 300.0)])
def test_exponential_decay_equals_torch_exponential_lr(
    opt, torch_cls, torch_kwargs, decay, decay_steps
) -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch's step counters follow the default dtype
    try:
        x0, target = make_problem(torch.float64, batch=B, seed=1)
        scheduled = Scheduled(opt, ExponentialDecay(decay=decay, decay_steps=decay_steps))
        ours = run_ours(scheduled, x0, target, STEPS)
        gamma = decay ** (1 / decay_steps)

        def exponential(optimizer):
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)

        reference = run_torch(torch_cls, torch_kwargs, x0, target, STEPS, exponential)
        assert relative_error(ours, reference) <= 1e-10
        # the schedule matters: without it the runs differ
        unscheduled = run_ours(opt, x0, target, STEPS)
        assert relative_error(unscheduled, reference) > 1e-4
    finally:
        torch.set_default_dtype(previous)


def test_constant_schedule_is_the_inner_optimizer() -> None:
    x0, target = make_problem(torch.float64, batch=B, seed=1)
    inner = Adam(lr=0.02)
    assert torch.equal(
        run_ours(Scheduled(inner, Constant()), x0, target, 20), run_ours(inner, x0, target, 20)
    )


def test_factor_values() -> None:
    t = torch.tensor([[0.0], [1.0], [10.0], [25.0]], dtype=torch.float64)
    factor = ExponentialDecay(decay=0.5, decay_steps=10.0).factor(t)
    expected = torch.tensor([[1.0], [0.5**0.1], [0.5], [0.5**2.5]], dtype=torch.float64)
    torch.testing.assert_close(factor, expected, rtol=1e-15, atol=0.0)
    assert torch.equal(Constant().factor(t), torch.ones_like(t))
    # float32 steps get a float32 factor, computed accurately
    t32 = torch.tensor([[1e6]], dtype=torch.float32)
    factor32 = ExponentialDecay(decay=0.9, decay_steps=1e5).factor(t32)
    assert factor32.dtype == torch.float32
    assert math.isclose(factor32.item(), 0.9**10, rel_tol=1e-6)


def test_per_instance_steps_and_tensor_hyperparameters() -> None:
    decay = torch.tensor([[0.5], [0.9], [0.1]], dtype=torch.float64)
    t = torch.tensor([[3.0], [7.0], [0.0]], dtype=torch.float64)
    factor = ExponentialDecay(decay=decay, decay_steps=2.0).factor(t)
    expected = torch.tensor([[0.5**1.5], [0.9**3.5], [1.0]], dtype=torch.float64)
    torch.testing.assert_close(factor, expected, rtol=1e-15, atol=0.0)


def test_state_keys_and_purity() -> None:
    x0, target = make_problem(torch.float64, batch=B, seed=1)
    scheduled = Scheduled(Adam(lr=0.02), ExponentialDecay(0.5, 10.0))
    state = scheduled.init(x0)
    assert set(state) == set(Adam().init(x0)) | {"schedule_step"}
    assert state["schedule_step"].shape == (B, 1)
    saved = {k: v.clone() for k, v in state.items()}
    grads = grad_fn(x0, target)
    _, new_state = scheduled.update(grads, state, x0)
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert torch.equal(new_state["schedule_step"], torch.ones(B, 1, dtype=x0.dtype))
    assert torch.equal(new_state["step"], torch.ones(B, 1, dtype=x0.dtype))


def test_nested_schedules_do_not_clash() -> None:
    x0, target = make_problem(torch.float64, batch=B, seed=1)
    inner = Scheduled(SGD(lr=0.05), ExponentialDecay(0.5, 10.0))
    outer = Scheduled(inner, ExponentialDecay(0.25, 20.0))
    assert set(outer.init(x0)) == {"schedule_step", "schedule_step_2"}
    # 0.5 ** (t / 10) * 0.25 ** (t / 20) = 0.25 ** (t / 10)
    combined = run_ours(outer, x0, target, 30)
    single = run_ours(Scheduled(SGD(lr=0.05), ExponentialDecay(0.25, 10.0)), x0, target, 30)
    assert relative_error(combined, single) <= 1e-12


def test_scheduled_is_differentiable_in_decay() -> None:
    x0, target = make_problem(torch.float64, batch=B, seed=1)
    decay = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    opt = Scheduled(Adam(lr=0.02), ExponentialDecay(decay=decay, decay_steps=5.0))
    final = run_ours(opt, x0, target, 10)[-1]
    (d_decay,) = torch.autograd.grad(final.sum(), decay)
    assert torch.isfinite(d_decay) and d_decay != 0


def test_hyperparameters_round_trip() -> None:
    opt = Scheduled(Adam(lr=0.02), ExponentialDecay(0.5, 10.0))
    hypers = opt.hyperparameters()
    assert hypers["lr"] == 0.02 and hypers["schedule.decay"] == 0.5
    changed = opt.with_hyperparameters(lr=0.1, **{"schedule.decay_steps": 3.0})
    assert changed.optimizer.lr == 0.1 and changed.schedule.decay_steps == 3.0
    with pytest.raises(ValueError, match=r"invalid decay="):
        opt.with_hyperparameters(**{"schedule.decay": 1.5})


def test_build_schedule() -> None:
    assert build_schedule("constant") == Constant()
    assert build_schedule("exponential", decay=0.3, decay_steps=7) == ExponentialDecay(0.3, 7)
    with pytest.raises(ValueError, match=r"unknown schedule 'cosine'.*constant, exponential"):
        build_schedule("cosine")
    with pytest.raises(ValueError, match=r"bad arguments for schedule 'exponential'"):
        build_schedule("exponential", gamma=0.9)
    with pytest.raises(ValueError, match=r"bad arguments for schedule 'exponential'"):
        build_schedule("exponential", decay=0.9)  # decay_steps is required


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"decay": 0.0}, "decay"),
        ({"decay": 1.5}, "decay"),
        ({"decay": -0.5}, "decay"),
        ({"decay_steps": 0.0}, "decay_steps"),
        ({"decay_steps": -10.0}, "decay_steps"),
    ],
    ids=lambda v: str(v),
)
def test_bad_schedule_hyperparameters(kwargs, name) -> None:
    with pytest.raises(ValueError, match=rf"invalid {name}="):
        ExponentialDecay(**{"decay": 0.5, "decay_steps": 10.0, **kwargs})


def test_decay_one_is_allowed_and_constant() -> None:
    t = torch.arange(5.0).reshape(5, 1)
    assert torch.equal(ExponentialDecay(decay=1.0, decay_steps=3.0).factor(t), torch.ones(5, 1))


def test_scheduled_rejects_non_optimizers() -> None:
    with pytest.raises(ValueError, match="optimizer must be a BatchedOptimizer"):
        Scheduled("adam", Constant())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schedule must be a Schedule"):
        Scheduled(Adam(), "exponential")  # type: ignore[arg-type]
