"""Heavy-ball momentum, equal to ``torch.optim.SGD`` with ``momentum > 0`` (``nesterov=False``).

Update rule (torch.optim.SGD's documented algorithm), ``t`` counting from 1::

    g_t = -grad if maximize else grad
    g_t = g_t + weight_decay * theta_{t-1}                    (if weight_decay != 0)
    b_t = g_t                                                  (t = 1: no dampening)
    b_t = momentum * b_{t-1} + (1 - dampening) * g_t           (t > 1)
    d_t = g_t + momentum * b_t    if nesterov    else    b_t
    theta_t = theta_{t-1} - lr * d_t

With ``dampening = momentum = beta`` the buffer is the exponential moving average
``m = beta * m + (1 - beta) * g`` (apart from the first step, which torch sets to ``g``).

The default ``momentum=0.9`` differs from torch's ``0``: ``momentum=0`` is plain SGD (use
:class:`baselines.SGD`), so this class requires ``momentum > 0``.

The first-step special case is computed exactly and differentiably from the ``(B, 1)`` step
counter: the old buffer is scaled by ``momentum * [t > 1]`` and the gradient by
``1 - dampening * [t > 1]``, both per-instance scalars, which equal torch's ``momentum`` and
``1 - dampening`` bit for bit when ``t > 1`` and ``0`` and ``1`` when ``t = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from baselines.adam import as_float64, inplace_ok
from l2l.interface import (
    BatchedOptimizer,
    Hyper,
    State,
    add_scaled_,
    apply_weight_decay,
    check_params,
    coefficient,
    decayed_grad,
    is_zero,
    step_counter,
)
from l2l.range_checks import check_range


def heavy_ball_update(
    grads: Tensor,
    state: State,
    params: Tensor,
    *,
    lr: Hyper,
    momentum: Hyper,
    dampening: Hyper,
    weight_decay: Hyper,
    maximize: bool,
    nesterov: bool,
) -> tuple[Tensor, State]:
    """One step of torch.optim.SGD with momentum (heavy ball or Nesterov), out of place."""
    g = apply_weight_decay(grads, params, weight_decay, maximize)
    step = state["step"]
    later = (step != 0).to(torch.float64)  # 0 on the first step, 1 afterwards
    buf_coef = (as_float64(momentum) * later).to(params.dtype)
    fresh = inplace_ok(grads, params, state["momentum_buffer"], lr, momentum, dampening)
    if is_zero(dampening):
        # torch: buf * momentum + g, in one pass (same two roundings)
        buf = torch.addcmul(g, state["momentum_buffer"], buf_coef)
    else:
        grad_coef = (1 - as_float64(dampening) * later).to(params.dtype)
        buf = state["momentum_buffer"] * buf_coef
        buf = buf.addcmul_(g, grad_coef) if fresh else torch.addcmul(buf, g, grad_coef)
    if not nesterov:
        return buf * -lr, {"step": step + 1, "momentum_buffer": buf}
    if isinstance(momentum, Tensor):
        direction = g + momentum * buf
    else:
        direction = torch.add(g, buf, alpha=momentum)
    update = direction.mul_(-lr) if fresh else direction * -lr
    return update, {"step": step + 1, "momentum_buffer": buf}


@dataclass(frozen=True)
class Momentum(BatchedOptimizer):
    lr: Hyper = 1e-3
    momentum: Hyper = 0.9
    dampening: Hyper = 0.0
    weight_decay: Hyper = 0.0
    maximize: bool = False

    name = "momentum"
    multi_tensor_step = True  # _step_ runs on TensorLists (l2l.tensor_list)
    nesterov = False  # a class constant: baselines.NAG is this class with Nesterov's look-ahead

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_range("momentum", self.momentum, 0.0, low_inclusive=False)
        check_range("dampening", self.dampening, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0)

    def init(self, params: Tensor) -> State:
        check_params(params, type(self).__name__)
        return {"step": step_counter(params), "momentum_buffer": torch.zeros_like(params)}

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        self.check_shapes(grads, state, params)
        return heavy_ball_update(
            grads,
            state,
            params,
            lr=self.lr,
            momentum=self.momentum,
            dampening=self.dampening,
            weight_decay=self.weight_decay,
            maximize=self.maximize,
            nesterov=self.nesterov,
        )

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        # torch.optim._single_tensor_sgd with momentum, op for op
        dtype = params.dtype
        g = decayed_grad(grads, params, self.weight_decay, self.maximize)
        buf, step = state["momentum_buffer"], state["step"]
        momentum = coefficient(self.momentum, dtype)
        if step.numel() == 1:  # torch's case: the first step copies the gradient
            if step.item() == 0:
                buf.copy_(g)
            else:
                buf.mul_(momentum)
                add_scaled_(buf, g, coefficient(1 - self.dampening, dtype))
        else:  # a batch: the first-step switch per instance, as in ``update``
            later = (step != 0).to(torch.float64)
            buf.mul_((as_float64(self.momentum) * later).to(dtype))
            buf.addcmul_(g, (1 - as_float64(self.dampening) * later).to(dtype))
        step.add_(1)
        neg_lr = coefficient(-self.lr, dtype)
        if self.nesterov:
            if isinstance(momentum, Tensor):
                direction = torch.addcmul(g, buf, momentum)
            else:
                direction = g.add(buf, alpha=momentum)
            add_scaled_(params, direction, neg_lr)
        else:
            add_scaled_(params, buf, neg_lr)

    def torch_group_constants(self) -> dict[str, Any]:
        return {"nesterov": self.nesterov}

    def to_torch_state(self, state: State, param: Tensor) -> dict[str, Tensor]:
        """torch.optim.SGD keeps only ``momentum_buffer`` (its absence marks the first step)."""
        return {"momentum_buffer": state["momentum_buffer"].reshape(param.shape)}

    def from_torch_state(self, torch_state: dict[str, Tensor], param: Tensor) -> State:
        if "momentum_buffer" not in torch_state:
            return self.init(param.detach().reshape(1, -1))
        buf = torch_state["momentum_buffer"]
        return {"step": buf.new_ones(1, 1), "momentum_buffer": buf.reshape(1, -1)}
