"""RMSProp, equal to ``torch.optim.RMSprop`` step by step.

Update rule (torch.optim.RMSprop's documented algorithm)::

    g_t = -grad if maximize else grad
    g_t = g_t + weight_decay * theta_{t-1}                    (if weight_decay != 0)
    v_t = alpha * v_{t-1} + (1 - alpha) * g_t**2
    if centered:
        a_t = alpha * a_{t-1} + (1 - alpha) * g_t
        v~_t = v_t - a_t**2
    else:
        v~_t = v_t
    if momentum > 0:
        b_t = momentum * b_{t-1} + g_t / (sqrt(v~_t) + eps)
        theta_t = theta_{t-1} - lr * b_t
    else:
        theta_t = theta_{t-1} - lr * g_t / (sqrt(v~_t) + eps)

The momentum buffer starts at zero (torch has no first-step special case here). A ``momentum``
given as a tensor always keeps a buffer (its value may be 0 for some instances, which is
equivalent to no momentum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.adam import ema, ema_square, inplace_ok
from l2l.interface import (
    BatchedOptimizer,
    Hyper,
    State,
    add_scaled_,
    addcdiv_,
    addcmul_,
    apply_weight_decay,
    check_params,
    coefficient,
    decayed_grad,
    is_zero,
    safe_sqrt,
    step_counter,
)
from l2l.range_checks import check_range


@dataclass(frozen=True)
class RMSProp(BatchedOptimizer):
    lr: Hyper = 1e-2
    alpha: Hyper = 0.99
    eps: Hyper = 1e-8
    weight_decay: Hyper = 0.0
    momentum: Hyper = 0.0
    centered: bool = False
    maximize: bool = False

    name = "rmsprop"
    multi_tensor_step = True  # _step_ runs on TensorLists (l2l.tensor_list)

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("eps", self.eps, 0.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("momentum", self.momentum, 0.0)

    def init(self, params: Tensor) -> State:
        check_params(params, type(self).__name__)
        state = {"step": step_counter(params), "square_avg": torch.zeros_like(params)}
        if self.centered:
            state["grad_avg"] = torch.zeros_like(params)
        if not is_zero(self.momentum):
            state["momentum_buffer"] = torch.zeros_like(params)
        return state

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        self.check_shapes(grads, state, params)
        g = apply_weight_decay(grads, params, self.weight_decay, self.maximize)
        square_avg = ema_square(state["square_avg"], g, self.alpha)
        new_state = {"step": state["step"] + 1, "square_avg": square_avg}
        if self.centered:
            grad_avg = ema(state["grad_avg"], g, self.alpha)
            new_state["grad_avg"] = grad_avg
            variance = torch.addcmul(square_avg, grad_avg, grad_avg, value=-1)
        else:
            variance = square_avg
        fresh = inplace_ok(variance, g, self.lr, self.eps, self.momentum)
        avg = safe_sqrt(variance)
        avg = avg.add_(self.eps) if fresh else avg + self.eps

        if is_zero(self.momentum):
            update = (g * -self.lr).div_(avg) if fresh else g * -self.lr / avg
        else:
            buf = torch.addcdiv(state["momentum_buffer"] * self.momentum, g, avg)
            new_state["momentum_buffer"] = buf
            update = buf * -self.lr
        return update, new_state

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        # torch.optim._single_tensor_rmsprop, op for op
        dtype = params.dtype
        g = decayed_grad(grads, params, self.weight_decay, self.maximize)
        square_avg = state["square_avg"]
        state["step"].add_(1)
        square_avg.mul_(coefficient(self.alpha, dtype))
        addcmul_(square_avg, g, g, coefficient(1 - self.alpha, dtype))
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(g, coefficient(1 - self.alpha, dtype))
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg.add_(coefficient(self.eps, dtype))
        neg_lr = coefficient(-self.lr, dtype)
        if is_zero(self.momentum):
            addcdiv_(params, g, avg, neg_lr)
        else:
            buf = state["momentum_buffer"]
            buf.mul_(coefficient(self.momentum, dtype)).addcdiv_(g, avg)
            add_scaled_(params, buf, neg_lr)
