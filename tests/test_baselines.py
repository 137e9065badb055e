"""The eight baselines against torch.optim, step by step, plus purity, batching and autograd.

The problem is a batch of B = 4 Rosenbrock-like functions in n = 8 dimensions with different
random starts and targets; its gradient grows at most linearly, so none of the runs below
diverge, and the learning rates are moderate enough that the runs are not chaotic (rounding
differences of one ulp stay one ulp instead of being amplified).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re

import pytest
import torch
from problems import (
    B,
    grad_fn,
    loss_fn,
    make_problem,
    relative_errors,
    run_ours,
    run_ours_in_place,
    run_torch,
)
from torch import Tensor

import baselines
from baselines import NAG, SGD, AdaDelta, AdaGrad, Adam, Momentum, Nadam, RMSProp
from l2l.interface import BatchedOptimizer

STEPS = 200
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def test_analytic_gradient_matches_autograd() -> None:
    x0, target = make_problem(torch.float64)
    x = x0.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(loss_fn(x, target).sum(), x)
    torch.testing.assert_close(grad_fn(x0, target), expected, rtol=1e-13, atol=1e-13)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request: pytest.FixtureRequest):
    """The dtype of a run; torch's default dtype follows it, because torch.optim keeps its step
    counters and NAdam's ``mu_product`` in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(previous)


# ---------------------------------------------------------------------------------------------
# Step-by-step equality with torch.optim.


def case(cls: type, torch_cls: type, torch_extra: dict | None = None, **kwargs):
    shown = ",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
    return pytest.param(cls, torch_cls, torch_extra or {}, kwargs, id=f"{cls.name}-{shown}")


SGD_M = {"momentum": 0.9}  # torch's default momentum is 0, ours 0.9
NESTEROV = {"nesterov": True, "momentum": 0.9}

TORCH_CASES = [
    case(SGD, torch.optim.SGD),
    case(SGD, torch.optim.SGD, lr=0.02),
    case(SGD, torch.optim.SGD, lr=0.02, weight_decay=0.1),
    case(SGD, torch.optim.SGD, lr=0.01, maximize=True),
    case(Momentum, torch.optim.SGD, SGD_M),
    case(Momentum, torch.optim.SGD, SGD_M, lr=0.01),
    case(Momentum, torch.optim.SGD, lr=0.01, momentum=0.8, dampening=0.3, weight_decay=0.05),
    case(Momentum, torch.optim.SGD, lr=0.005, momentum=0.9, dampening=0.9, maximize=True),
    case(NAG, torch.optim.SGD, NESTEROV),
    case(NAG, torch.optim.SGD, NESTEROV, lr=0.01),
    case(NAG, torch.optim.SGD, {"nesterov": True}, lr=0.005, momentum=0.95, weight_decay=0.05),
    case(NAG, torch.optim.SGD, NESTEROV, lr=0.005, maximize=True),
    case(AdaGrad, torch.optim.Adagrad),
    case(AdaGrad, torch.optim.Adagrad, lr=0.1, lr_decay=0.01),
    case(AdaGrad, torch.optim.Adagrad, lr=0.1, initial_accumulator_value=0.5, eps=1e-4),
    case(AdaGrad, torch.optim.Adagrad, lr=0.05, weight_decay=0.05, maximize=True),
    case(RMSProp, torch.optim.RMSprop),
    case(RMSProp, torch.optim.RMSprop, lr=0.003, centered=True),
    case(RMSProp, torch.optim.RMSprop, lr=0.001, momentum=0.5),
    case(RMSProp, torch.optim.RMSprop, lr=0.003, alpha=0.95, centered=True),
    case(RMSProp, torch.optim.RMSprop, lr=0.001, centered=True, momentum=0.9, eps=1e-4),
    case(RMSProp, torch.optim.RMSprop, lr=0.003, weight_decay=0.05, maximize=True),
    case(AdaDelta, torch.optim.Adadelta),
    case(AdaDelta, torch.optim.Adadelta, lr=0.5, rho=0.95, weight_decay=0.05),
    case(AdaDelta, torch.optim.Adadelta, rho=0.95, eps=1e-5),
    case(AdaDelta, torch.optim.Adadelta, maximize=True),
    case(Adam, torch.optim.Adam),
    case(Adam, torch.optim.Adam, lr=0.01),
    case(Adam, torch.optim.Adam, lr=0.01, amsgrad=True),
    case(Adam, torch.optim.Adam, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
    case(Adam, torch.optim.Adam, lr=0.01, amsgrad=True, maximize=True),
    case(Nadam, torch.optim.NAdam),
    case(Nadam, torch.optim.NAdam, lr=0.01, momentum_decay=0.02),
    case(Nadam, torch.optim.NAdam, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
    case(Nadam, torch.optim.NAdam, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    case(Nadam, torch.optim.NAdam, lr=0.01, maximize=True),
]


@pytest.mark.parametrize(("cls", "torch_cls", "torch_extra", "kwargs"), TORCH_CASES)
def test_equals_torch_optim_every_step(cls, torch_cls, torch_extra, kwargs, dtype) -> None:
    x0, target = make_problem(dtype)
    ours = run_ours(cls(**kwargs), x0, target, STEPS)
    reference = run_torch(torch_cls, {**kwargs, **torch_extra}, x0, target, STEPS)
    assert ours.dtype == dtype
    errors = relative_errors(ours, reference)
    worst = int(errors.argmax())
    assert errors.max() <= TOL[dtype], f"step {worst + 1}: relative error {errors.max():.3g}"
    # the run must actually go somewhere, or equality would prove little
    assert (reference[-1] - x0).abs().max() > 0.1


@pytest.mark.parametrize(("cls", "torch_cls", "torch_extra", "kwargs"), TORCH_CASES)
def test_in_place_step_equals_torch_optim(cls, torch_cls, torch_extra, kwargs, dtype) -> None:
    """``step_`` is torch.optim's single-tensor arithmetic, op for op: on one optimizee (all of
    torch's parameter tensor as one row) bit for bit; as a batch of B rows, whose step counts
    give per-row tensor scalars, to 1e-12 in float64 (``beta ** t`` by torch.pow, not libm)."""
    x0, target = make_problem(dtype)
    reference = run_torch(torch_cls, {**kwargs, **torch_extra}, x0, target, STEPS)
    flat = run_ours_in_place(cls(**kwargs), x0, target, STEPS, flat=True)
    assert torch.equal(flat, reference), relative_errors(flat, reference).max()
    batched = run_ours_in_place(cls(**kwargs), x0, target, STEPS)
    tol = 1e-12 if dtype == torch.float64 else TOL[dtype]
    assert relative_errors(batched, reference).max() <= tol


# ---------------------------------------------------------------------------------------------
# Every optimizer with every option switched on, for the structural tests.

FULL = {
    "sgd": SGD(lr=0.02, weight_decay=0.05, maximize=True),
    "momentum": Momentum(lr=0.01, momentum=0.8, dampening=0.3, weight_decay=0.05),
    "nag": NAG(lr=0.01, momentum=0.9, weight_decay=0.05),
    "adagrad": AdaGrad(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1),
    "rmsprop": RMSProp(lr=0.003, alpha=0.9, weight_decay=0.05, momentum=0.5, centered=True),
    "adadelta": AdaDelta(lr=0.5, rho=0.95, eps=1e-4, weight_decay=0.05),
    "adam": Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True),
    "adam-plain": Adam(lr=0.01),
    "nadam": Nadam(lr=0.01, weight_decay=0.05, momentum_decay=0.02),
    "nadam-decoupled": Nadam(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "rmsprop-plain": RMSProp(lr=0.003),
    "adagrad-plain": AdaGrad(lr=0.1),
}
FULL_PARAMS = [pytest.param(opt, id=key) for key, opt in FULL.items()]


def test_exports() -> None:
    assert set(baselines.__all__) == {
        "SGD",
        "Momentum",
        "NAG",
        "AdaGrad",
        "RMSProp",
        "AdaDelta",
        "Adam",
        "Nadam",
    }
    names = [getattr(baselines, name).name for name in baselines.__all__]
    assert sorted(names) == sorted(
        ["sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam", "nadam"]
    )


@pytest.mark.parametrize(
    ("cls", "torch_cls"),
    [
        (SGD, torch.optim.SGD),
        (Momentum, torch.optim.SGD),
        (NAG, torch.optim.SGD),
        (AdaGrad, torch.optim.Adagrad),
        (RMSProp, torch.optim.RMSprop),
        (AdaDelta, torch.optim.Adadelta),
        (Adam, torch.optim.Adam),
        (Nadam, torch.optim.NAdam),
    ],
    ids=lambda x: getattr(x, "name", x.__name__),
)
def test_hyperparameters_named_and_defaulted_as_torch(cls, torch_cls) -> None:
    signature = inspect.signature(torch_cls.__init__).parameters
    for field in dataclasses.fields(cls):
        assert field.name in signature, f"{cls.__name__}.{field.name} is not a torch name"
        if cls in (Momentum, NAG) and field.name == "momentum":
            assert field.default == 0.9  # documented departure: momentum=0 is plain SGD
            continue
        assert field.default == signature[field.name].default, field.name


@pytest.mark.parametrize("opt", FULL_PARAMS)
def test_update_is_linear_in_lr(opt: BatchedOptimizer) -> None:
    """The learning-rate schedule scales updates, so every update must be linear in lr."""
    x0, target = make_problem(torch.float64)
    params, state = x0.clone(), opt.init(x0)
    for _ in range(3):
        update, state = opt.update(grad_fn(params, target), state, params)
        params = params + update
    grads = grad_fn(params, target)
    lr = opt.hyperparameters()["lr"]
    one, _ = opt.update(grads, state, params)
    triple, _ = opt.with_hyperparameters(lr=3 * lr).update(grads, state, params)
    torch.testing.assert_close(triple, 3 * one, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("opt", FULL_PARAMS)
def test_autograd_path_equals_no_grad_path(opt: BatchedOptimizer) -> None:
    """Without autograd the rules finish fresh intermediates in place; with it they do not. Both
    paths must compute the same trajectory (the torch comparison above runs the first)."""
    x0, target = make_problem(torch.float64)
    with torch.no_grad():
        fast = run_ours(opt, x0, target, 50)
    tracked = run_ours(opt, x0.clone().requires_grad_(True), target, 50)
    assert tracked.requires_grad
    assert relative_errors(tracked.detach(), fast).max() <= 1e-13


@pytest.mark.parametrize("opt", FULL_PARAMS)
@pytest.mark.parametrize("which", ["float", "tensor"])
def test_in_place_step_equals_update(opt: BatchedOptimizer, which: str) -> None:
    """``step_`` and ``update`` agree over 50 steps, also with per-instance tensor
    hyperparameters (the in-place path's tensor-coefficient branch), and ``step_`` mutates
    only ``params`` and the state (never ``grads``)."""
    x0, target = make_problem(torch.float64)
    if which == "tensor":
        hypers = opt.hyperparameters()
        opt = opt.with_hyperparameters(**{k: tensorize(v, SCALES) for k, v in hypers.items()})
    pure = run_ours(opt, x0, target, 50)
    in_place = run_ours_in_place(opt, x0, target, 50)
    assert relative_errors(in_place, pure).max() <= 1e-12
    params, state = x0.clone(), opt.init(x0)
    grads = grad_fn(params, target)
    saved = grads.clone()
    opt.step_(grads, state, params)
    assert torch.equal(grads, saved)
    assert not torch.equal(params, x0)


def test_in_place_step_works_on_parameters_that_require_grad() -> None:
    """Like torch.optim.Optimizer.step: runs under no_grad, so leaves can be updated."""
    x0, target = make_problem(torch.float64)
    params = x0.clone().requires_grad_(True)
    opt = Adam(lr=0.01)
    state = opt.init(params)
    opt.step_(grad_fn(x0, target), state, params)
    assert params.requires_grad and params.grad_fn is None
    assert not torch.equal(params.detach(), x0)


# ---------------------------------------------------------------------------------------------
# Batching: row i of a batched run with per-instance tensor hyperparameters equals instance i
# run alone with float hyperparameters.

SCALES = torch.tensor([[1.0], [0.7], [0.85], [0.95]], dtype=torch.float64)


def tensorize(value, batch_scales: Tensor):
    if isinstance(value, bool):
        return value
    if isinstance(value, tuple):
        return tuple(tensorize(v, batch_scales) for v in value)
    return value * batch_scales


@pytest.mark.parametrize("opt", FULL_PARAMS)
@pytest.mark.parametrize("which", ["lr", "all"])
def test_instances_are_independent(opt: BatchedOptimizer, which: str) -> None:
    x0, target = make_problem(torch.float64)
    hypers = opt.hyperparameters()
    names = ["lr"] if which == "lr" else list(hypers)
    batched_hypers = {k: tensorize(hypers[k], SCALES) for k in names}
    batched = run_ours(opt.with_hyperparameters(**batched_hypers), x0, target, 50)
    for i in range(B):
        single_hypers = {k: tensorize(hypers[k], SCALES[i, 0].item()) for k in names}
        alone = run_ours(
            opt.with_hyperparameters(**single_hypers), x0[i : i + 1], target[i : i + 1], 50
        )
        errors = relative_errors(batched[:, i : i + 1], alone)
        assert errors.max() <= 1e-12, f"instance {i}: {errors.max():.3g}"


def test_tensor_lr_runs_several_learning_rates_at_once() -> None:
    x0, target = make_problem(torch.float64)
    lrs = torch.tensor([[1e-3], [3e-3], [1e-2], [3e-2]], dtype=torch.float64)
    batched = run_ours(Adam(lr=lrs), x0, target, 20)
    for i, lr in enumerate(lrs.flatten().tolist()):
        alone = run_ours(Adam(lr=lr), x0[i : i + 1], target[i : i + 1], 20)
        assert relative_errors(batched[:, i : i + 1], alone).max() <= 1e-12
    # and the four rows really differ
    assert (batched[-1, 0] - batched[-1, 3]).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Purity.


@pytest.mark.parametrize("opt", FULL_PARAMS)
@pytest.mark.parametrize("mode", ["no_grad", "autograd"])
def test_update_does_not_mutate_inputs(opt: BatchedOptimizer, mode: str) -> None:
    x0, target = make_problem(torch.float64)
    params, state = x0.clone(), opt.init(x0)
    for _ in range(3):  # a non-trivial state
        update, state = opt.update(grad_fn(params, target), state, params)
        params = params + update
    grads = grad_fn(params, target)
    if mode == "autograd":  # every input a leaf that requires grad: the non-fresh path
        params = params.clone().requires_grad_(True)
        grads = grads.clone().requires_grad_(True)
        state = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    keys = list(state)
    saved_state = {k: v.detach().clone() for k, v in state.items()}
    saved_grads, saved_params = grads.detach().clone(), params.detach().clone()
    if mode == "no_grad":
        with torch.no_grad():
            update, new_state = opt.update(grads, state, params)
    else:
        update, new_state = opt.update(grads, state, params)
        assert update.requires_grad
    assert list(state) == keys and new_state is not state
    for k, v in saved_state.items():
        assert torch.equal(state[k].detach(), v), f"state[{k!r}] was mutated"
    assert torch.equal(grads.detach(), saved_grads), "grads were mutated"
    assert torch.equal(params.detach(), saved_params), "params were mutated"
    for k, v in new_state.items():
        assert v.shape[0] == B and v.dtype == params.dtype, k
    assert list(new_state) == keys


# ---------------------------------------------------------------------------------------------
# Differentiability from a fresh state.


@pytest.mark.parametrize("opt", FULL_PARAMS)
def test_differentiable_from_fresh_state(opt: BatchedOptimizer) -> None:
    """d(sum of params after 3 steps)/d(params0, lr) is finite although the last coordinate's
    gradient is exactly 0 at every step: it starts at 0 and its loss term is x^2, so its
    second moment stays 0, where sqrt has an infinite derivative, while its gradient still
    depends on the parameter (d g / d x = 2), so a NaN there would reach d/d(params0)."""
    x0, target = make_problem(torch.float64)
    x0[:, -1] = 0.0
    lr = torch.tensor(opt.hyperparameters()["lr"], dtype=torch.float64, requires_grad=True)
    opt = opt.with_hyperparameters(lr=lr)
    p0 = x0.clone().requires_grad_(True)
    params, state = p0, opt.init(p0)
    for _ in range(3):
        loss = (loss_fn(params[:, :-1], target) + params[:, -1] ** 2).sum()
        (grads,) = torch.autograd.grad(loss, params, create_graph=True)
        assert torch.all(grads[:, -1] == 0)
        update, state = opt.update(grads, state, params)
        params = params + update
    d_p0, d_lr = torch.autograd.grad(params.sum(), (p0, lr))
    assert torch.isfinite(d_p0).all() and torch.isfinite(d_lr).all()
    assert d_lr.abs() > 0


# ---------------------------------------------------------------------------------------------
# Validation.

BAD = [
    (SGD, {"lr": -0.1}, "lr"),
    (SGD, {"weight_decay": -1.0}, "weight_decay"),
    (Momentum, {"lr": -0.1}, "lr"),
    (Momentum, {"momentum": 0.0}, "momentum"),
    (Momentum, {"momentum": -0.5}, "momentum"),
    (Momentum, {"dampening": 1.5}, "dampening"),
    (Momentum, {"weight_decay": -1.0}, "weight_decay"),
    (NAG, {"lr": -1e-3}, "lr"),
    (NAG, {"momentum": 0.0}, "momentum"),
    (NAG, {"dampening": 0.1}, "dampening"),
    (AdaGrad, {"lr": -1.0}, "lr"),
    (AdaGrad, {"lr_decay": -0.1}, "lr_decay"),
    (AdaGrad, {"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    (AdaGrad, {"eps": 0.0}, "eps"),
    (RMSProp, {"lr": -1.0}, "lr"),
    (RMSProp, {"alpha": 1.5}, "alpha"),
    (RMSProp, {"alpha": -0.1}, "alpha"),
    (RMSProp, {"eps": -1e-8}, "eps"),
    (RMSProp, {"momentum": -0.1}, "momentum"),
    (AdaDelta, {"lr": -1.0}, "lr"),
    (AdaDelta, {"rho": 1.1}, "rho"),
    (AdaDelta, {"eps": 0.0}, "eps"),
    (Adam, {"lr": -1e-3}, "lr"),
    (Adam, {"lr": math.nan}, "lr"),
    (Adam, {"lr": torch.tensor([[1e-3], [-1e-3]])}, "lr"),
    (Adam, {"betas": (1.0, 0.999)}, "betas[0]"),
    (Adam, {"betas": (-0.1, 0.999)}, "betas[0]"),
    (Adam, {"betas": (0.9, 1.0)}, "betas[1]"),
    (Adam, {"betas": (0.9,)}, "betas"),
    (Adam, {"eps": 0.0}, "eps"),
    (Adam, {"weight_decay": -0.1}, "weight_decay"),
    (Nadam, {"lr": -1e-3}, "lr"),
    (Nadam, {"betas": (0.9, 1.5)}, "betas[1]"),
    (Nadam, {"eps": -1.0}, "eps"),
    (Nadam, {"momentum_decay": -1e-3}, "momentum_decay"),
    (Nadam, {"weight_decay": -0.1}, "weight_decay"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [pytest.param(*b, id=f"{b[0].name}-{b[2]}-{list(b[1].values())[0]}") for b in BAD],
)
def test_bad_hyperparameters_raise(cls, kwargs, name) -> None:
    with pytest.raises(ValueError, match=rf"invalid {re.escape(name)}="):
        cls(**kwargs)


def test_bad_hyperparameters_raise_on_replace() -> None:
    with pytest.raises(ValueError, match=r"invalid lr="):
        Adam().with_hyperparameters(lr=-1.0)


def test_optimizers_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Adam().lr = 0.1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Shapes: params, grads and state must agree on (B, n); nothing is broadcast silently.

ALL_DEFAULTS = [pytest.param(cls(), id=cls.name) for cls in (
    SGD, Momentum, NAG, AdaGrad, RMSProp, AdaDelta, Adam, Nadam)]


@pytest.mark.parametrize("opt", ALL_DEFAULTS)
def test_one_dimensional_params_are_refused(opt: BatchedOptimizer) -> None:
    """A (5,) parameter used to give Momentum a (5, 5) update."""
    x = torch.randn(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"2-D \(B, n\).*\(5,\)"):
        opt.init(x)
    state = opt.init(x[None])
    with pytest.raises(ValueError, match=r"2-D \(B, n\).*\(5,\)"):
        opt.update(x, {k: v[0] for k, v in state.items()}, x)
    with pytest.raises(ValueError, match=r"2-D \(B, n\).*\(5,\)"):
        opt.step_(x, {k: v[0] for k, v in state.items()}, x)


@pytest.mark.parametrize("opt", ALL_DEFAULTS)
@pytest.mark.parametrize("entry", ["update", "step_"])
def test_grads_must_match_params(opt: BatchedOptimizer, entry: str) -> None:
    """A (2, 1) gradient used to broadcast against (2, 5) state without an error."""
    params = torch.randn(2, 5, dtype=torch.float64)
    state = opt.init(params)
    bad = torch.randn(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"grads of shape \(2, 1\).*params of shape \(2, 5\)"):
        getattr(opt, entry)(bad, state, params)


@pytest.mark.parametrize("opt", [p for p in ALL_DEFAULTS if p.id != "sgd"])
@pytest.mark.parametrize("entry", ["update", "step_"])
def test_state_must_match_params(opt: BatchedOptimizer, entry: str) -> None:
    params = torch.randn(2, 5, dtype=torch.float64)
    grads = torch.randn(2, 5, dtype=torch.float64)
    for key, value in opt.init(params).items():
        state = opt.init(params)
        wrong = value[:, :1] if value.shape[1] == 5 else value.expand(2, 5)  # (2, 1) <-> (2, 5)
        state[key] = wrong.clone()
        with pytest.raises(ValueError, match=rf"state\['{key}'\] has shape"):
            getattr(opt, entry)(grads, state, params)
        state[key] = value[:1].clone()  # the wrong batch size
        with pytest.raises(ValueError, match=rf"state\['{key}'\] has shape \(1, "):
            getattr(opt, entry)(grads, state, params)
