"""The shared test problem: a batch of Rosenbrock-like non-convex functions, their analytic
gradient, and runners for our update rules and for torch.optim on them.

f(x) = sum_i log(1 + 4 (x_{i+1} - x_i^2)^2) + 0.5 log(1 + (x_i - a)^2) + 0.3 sin(2 x_i)

Its gradient grows at most linearly, so the runs do not diverge, and at moderate learning rates
they are not chaotic (a one-ulp rounding difference stays one ulp instead of being amplified).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from l2l.interface import BatchedOptimizer

B, N = 4, 8


def make_problem(
    dtype: torch.dtype = torch.float64, batch: int = B, seed: int = 0
) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, N, generator=gen, dtype=torch.float64) * 3 - 1.5
    target = torch.rand(batch, 1, generator=gen, dtype=torch.float64) + 0.5
    return x0.to(dtype), target.to(dtype)


def loss_fn(x: Tensor, target: Tensor) -> Tensor:
    r = x[:, 1:] - x[:, :-1] ** 2
    d = x - target
    return (
        torch.log1p(4 * r**2).sum(1)
        + 0.5 * torch.log1p(d**2).sum(1)
        + 0.3 * torch.sin(2 * x).sum(1)
    )


def grad_fn(x: Tensor, target: Tensor) -> Tensor:
    """The analytic gradient of ``loss_fn`` (checked against autograd below)."""
    r = x[:, 1:] - x[:, :-1] ** 2
    h = 8 * r / (1 + 4 * r**2)
    d = x - target
    g = d / (1 + d**2) + 0.6 * torch.cos(2 * x)
    g[:, 1:] += h
    g[:, :-1] -= 2 * x[:, :-1] * h
    return g


def run_ours(opt: BatchedOptimizer, x0: Tensor, target: Tensor, steps: int) -> Tensor:
    params, state, trajectory = x0.clone(), opt.init(x0), []
    for _ in range(steps):
        update, state = opt.update(grad_fn(params, target), state, params)
        params = params + update
        trajectory.append(params)
    return torch.stack(trajectory)


def run_ours_in_place(
    opt: BatchedOptimizer, x0: Tensor, target: Tensor, steps: int, flat: bool = False
) -> Tensor:
    """Like :func:`run_ours` through the in-place ``step_``; ``flat`` runs the whole batch as
    one optimizee of ``B * n`` coordinates (torch.optim's view of the same tensor)."""
    params = x0.clone().reshape(1, -1) if flat else x0.clone()
    state, trajectory = opt.init(params), []
    for _ in range(steps):
        opt.step_(grad_fn(params.view_as(x0), target).reshape(params.shape), state, params)
        trajectory.append(params.view_as(x0).clone())
    return torch.stack(trajectory)


def run_torch(
    torch_cls: type,
    kwargs: dict,
    x0: Tensor,
    target: Tensor,
    steps: int,
    scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
) -> Tensor:
    """torch.optim's trajectory on the same problem (a scheduler is stepped after each step)."""
    param = torch.nn.Parameter(x0.clone())
    opt = torch_cls([param], **kwargs)
    schedule = scheduler(opt) if scheduler is not None else None
    trajectory = []
    for _ in range(steps):
        param.grad = grad_fn(param.detach(), target)
        opt.step()
        if schedule is not None:
            schedule.step()
        trajectory.append(param.detach().clone())
    return torch.stack(trajectory)


def relative_errors(ours: Tensor, reference: Tensor) -> Tensor:
    """Per step: max |ours - reference| / max |reference| over the whole batch."""
    return (ours - reference).abs().amax((1, 2)) / reference.abs().amax((1, 2))
