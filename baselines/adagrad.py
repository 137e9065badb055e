"""AdaGrad, equal to ``torch.optim.Adagrad`` step by step.

Update rule (torch.optim.Adagrad's documented algorithm), ``t`` counting from 1::

    g_t = -grad if maximize else grad
    g_t = g_t + weight_decay * theta_{t-1}                    (if weight_decay != 0)
    lr_t = lr / (1 + (t - 1) * lr_decay)
    s_t = s_{t-1} + g_t**2                                     (s_0 = initial_accumulator_value)
    theta_t = theta_{t-1} - lr_t * g_t / (sqrt(s_t) + eps)

``lr_t`` is computed in float64 (torch uses a Python float) and then cast to the parameters'
dtype. Unlike torch, ``eps`` must be positive: with ``eps = 0`` a coordinate whose gradient has
always been zero divides 0 by 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.adam import as_float64, inplace_ok
from l2l.interface import (
    BatchedOptimizer,
    Hyper,
    State,
    addcdiv_,
    apply_weight_decay,
    check_params,
    coefficient,
    decayed_grad,
    is_zero,
    safe_sqrt,
    step_counter,
    step_value,
)
from l2l.range_checks import check_range


@dataclass(frozen=True)
class AdaGrad(BatchedOptimizer):
    lr: Hyper = 1e-2
    lr_decay: Hyper = 0.0
    weight_decay: Hyper = 0.0
    initial_accumulator_value: Hyper = 0.0
    eps: Hyper = 1e-10
    maximize: bool = False

    name = "adagrad"
    multi_tensor_step = True  # _step_ runs on TensorLists (l2l.tensor_list)

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_range("lr_decay", self.lr_decay, 0.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("initial_accumulator_value", self.initial_accumulator_value, 0.0)
        check_range("eps", self.eps, 0.0, low_inclusive=False)

    def init(self, params: Tensor) -> State:
        check_params(params, type(self).__name__)
        total = torch.zeros_like(params)
        if not is_zero(self.initial_accumulator_value):
            total = total + self.initial_accumulator_value
        return {"step": step_counter(params), "sum": total}

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        self.check_shapes(grads, state, params)
        g = apply_weight_decay(grads, params, self.weight_decay, self.maximize)
        step = state["step"] + 1
        total = torch.addcmul(state["sum"], g, g)
        if is_zero(self.lr_decay):
            neg_lr = -self.lr
        else:
            t = step.to(torch.float64)
            neg_lr = (-as_float64(self.lr) / (1 + (t - 1) * as_float64(self.lr_decay))).to(
                params.dtype
            )
        std = safe_sqrt(total)
        if inplace_ok(total, g, neg_lr, self.eps):
            update = (g * neg_lr).div_(std.add_(self.eps))
        else:
            update = g * neg_lr / (std + self.eps)
        return update, {"step": step, "sum": total}

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        # torch.optim._single_tensor_adagrad (dense), op for op
        step_t, total = state["step"], state["sum"]
        step_t.add_(1)
        t = step_value(step_t)
        g = decayed_grad(grads, params, self.weight_decay, self.maximize)
        clr = as_float64(self.lr) / (1 + (t - 1) * as_float64(self.lr_decay))
        total.addcmul_(g, g, value=1)
        std = total.sqrt().add_(self.eps)
        addcdiv_(params, g, std, coefficient(-clr, params.dtype))
