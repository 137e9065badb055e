"""AdaDelta, equal to ``torch.optim.Adadelta`` step by step.

Update rule (torch.optim.Adadelta's documented algorithm)::

    g_t = -grad if maximize else grad
    g_t = g_t + weight_decay * theta_{t-1}                    (if weight_decay != 0)
    v_t = rho * v_{t-1} + (1 - rho) * g_t**2
    dx_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t
    u_t = rho * u_{t-1} + (1 - rho) * dx_t**2
    theta_t = theta_{t-1} - lr * dx_t

(``dx_t`` is computed in torch's order: ``(sqrt(u + eps) / sqrt(v + eps)) * g``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.adam import ema_square, inplace_ok
from l2l.interface import (
    BatchedOptimizer,
    Hyper,
    State,
    add_scaled_,
    addcmul_,
    apply_weight_decay,
    check_params,
    coefficient,
    decayed_grad,
    safe_sqrt,
    step_counter,
)
from l2l.range_checks import check_range


@dataclass(frozen=True)
class AdaDelta(BatchedOptimizer):
    lr: Hyper = 1.0
    rho: Hyper = 0.9
    eps: Hyper = 1e-6
    weight_decay: Hyper = 0.0
    maximize: bool = False

    name = "adadelta"
    multi_tensor_step = True  # _step_ runs on TensorLists (l2l.tensor_list)

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_range("rho", self.rho, 0.0, 1.0)
        check_range("eps", self.eps, 0.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)

    def init(self, params: Tensor) -> State:
        check_params(params, type(self).__name__)
        return {
            "step": step_counter(params),
            "square_avg": torch.zeros_like(params),
            "acc_delta": torch.zeros_like(params),
        }

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        self.check_shapes(grads, state, params)
        g = apply_weight_decay(grads, params, self.weight_decay, self.maximize)
        square_avg = ema_square(state["square_avg"], g, self.rho)
        acc = state["acc_delta"]
        if inplace_ok(square_avg, acc, g, self.eps):
            std = (square_avg + self.eps).sqrt_()
            delta = (acc + self.eps).sqrt_().div_(std).mul_(g)
        else:
            std = safe_sqrt(square_avg + self.eps)
            delta = safe_sqrt(acc + self.eps) / std * g
        new_acc = ema_square(acc, delta, self.rho)
        new_state = {"step": state["step"] + 1, "square_avg": square_avg, "acc_delta": new_acc}
        return delta * -self.lr, new_state

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        # torch.optim._single_tensor_adadelta, op for op
        dtype = params.dtype
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        state["step"].add_(1)
        g = decayed_grad(grads, params, self.weight_decay, self.maximize)
        rho, one_minus_rho = coefficient(self.rho, dtype), coefficient(1 - self.rho, dtype)
        eps = coefficient(self.eps, dtype)
        addcmul_(square_avg.mul_(rho), g, g, one_minus_rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(g)
        addcmul_(acc_delta.mul_(rho), delta, delta, one_minus_rho)
        add_scaled_(params, delta, coefficient(-self.lr, dtype))
