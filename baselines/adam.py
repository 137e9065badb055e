"""Adam, equal to ``torch.optim.Adam`` step by step (``decoupled_weight_decay=False``).

Update rule (torch.optim.Adam's documented algorithm), ``t`` counting from 1::

    g_t = -grad if maximize else grad
    g_t = g_t + weight_decay * theta_{t-1}                    (if weight_decay != 0)
    m_t = beta1 * m_{t-1} + (1 - beta1) * g_t
    v_t = beta2 * v_{t-1} + (1 - beta2) * g_t**2
    vmax_t = max(vmax_{t-1}, v_t)                              (if amsgrad; used instead of v_t)
    theta_t = theta_{t-1} - lr / (1 - beta1**t) * m_t / (sqrt(v_t) / sqrt(1 - beta2**t) + eps)

As in torch, the bias corrections ``1 - beta**t`` and the step size ``lr / (1 - beta1**t)`` are
computed in float64 (torch uses Python floats) and only then cast to the parameters' dtype: in
float32, ``1 - beta2**t`` at ``t = 1`` would otherwise lose five significant digits.

This module also holds the small numerical helpers shared by the adaptive rules (RMSProp,
AdaDelta, NAdam).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2l.interface import (
    BatchedOptimizer,
    Hyper,
    State,
    addcdiv_,
    addcmul_,
    apply_weight_decay,
    check_params,
    coefficient,
    decayed_grad,
    safe_sqrt,
    step_counter,
    step_value,
)
from l2l.range_checks import check_betas, check_range

# ---------------------------------------------------------------------------------------------
# Helpers shared by the adaptive rules.


def as_float64(value: Hyper) -> Hyper:
    """A hyperparameter ready for per-instance scalar arithmetic in float64 (Python floats are
    already double precision; tensors are cast, which autograd follows)."""
    return value.to(torch.float64) if isinstance(value, Tensor) else value


def ema_square(avg: Tensor, g: Tensor, beta: Hyper) -> Tensor:
    """``beta * avg + (1 - beta) * g * g`` in torch.optim's operation order
    (``avg.mul_(beta).addcmul_(g, g, value=1 - beta)``), out of place: the in-place
    ``addcmul_`` acts on the fresh product ``avg * beta``, which ``mul`` does not save for its
    backward, so this is safe under autograd too."""
    scaled = avg * beta
    if isinstance(beta, Tensor):
        return scaled.addcmul_(g * (1 - beta), g)
    return scaled.addcmul_(g, g, value=1 - beta)


def ema(avg: Tensor, g: Tensor, beta: Hyper) -> Tensor:
    """``beta * avg + (1 - beta) * g`` as torch.optim computes it: ``avg.lerp_(g, 1 - beta)``."""
    return torch.lerp(avg, g, 1 - beta)


def inplace_ok(*values: object) -> bool:
    """True when autograd records nothing for these values (tensors, or hyperparameters that may
    be floats), so that a *fresh intermediate* computed from them may be finished in place: this
    saves a temporary and never touches an input."""
    if not torch.is_grad_enabled():
        return True
    return not any(isinstance(v, Tensor) and v.requires_grad for v in values)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adam(BatchedOptimizer):
    lr: Hyper = 1e-3
    betas: tuple[Hyper, Hyper] = (0.9, 0.999)
    eps: Hyper = 1e-8
    weight_decay: Hyper = 0.0
    amsgrad: bool = False
    maximize: bool = False

    name = "adam"
    multi_tensor_step = True  # _step_ runs on TensorLists (l2l.tensor_list)

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_betas(self.betas)
        check_range("eps", self.eps, 0.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)

    def init(self, params: Tensor) -> State:
        check_params(params, type(self).__name__)
        state = {
            "step": step_counter(params),
            "exp_avg": torch.zeros_like(params),
            "exp_avg_sq": torch.zeros_like(params),
        }
        if self.amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(params)
        return state

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        self.check_shapes(grads, state, params)
        beta1, beta2 = self.betas
        g = apply_weight_decay(grads, params, self.weight_decay, self.maximize)
        step = state["step"] + 1
        exp_avg = ema(state["exp_avg"], g, beta1)
        exp_avg_sq = ema_square(state["exp_avg_sq"], g, beta2)
        new_state = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        if self.amsgrad:
            second = torch.maximum(state["max_exp_avg_sq"], exp_avg_sq)
            new_state["max_exp_avg_sq"] = second
        else:
            second = exp_avg_sq

        # Per-instance scalars, (B, 1), in float64 like torch's Python floats.
        t = step.to(torch.float64)
        bias_correction1 = 1 - as_float64(beta1) ** t
        bias_correction2 = 1 - as_float64(beta2) ** t
        neg_step_size = (-as_float64(self.lr) / bias_correction1).to(params.dtype)
        bias_correction2_sqrt = (bias_correction2**0.5).to(params.dtype)

        fresh = inplace_ok(second, exp_avg, neg_step_size, self.eps)
        denom = safe_sqrt(second)
        if fresh:
            denom.div_(bias_correction2_sqrt).add_(self.eps)
            update = (exp_avg * neg_step_size).div_(denom)
        else:
            denom = denom / bias_correction2_sqrt + self.eps
            update = exp_avg * neg_step_size / denom
        return update, new_state

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        # torch.optim._single_tensor_adam (not capturable, not differentiable), op for op,
        # except that ``denom`` divides in place instead of allocating a second temporary
        dtype = params.dtype
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        step_t.add_(1)
        g = decayed_grad(grads, params, self.weight_decay, self.maximize)
        exp_avg.lerp_(g, coefficient(1 - beta1, dtype))
        addcmul_(exp_avg_sq.mul_(coefficient(beta2, dtype)), g, g, coefficient(1 - beta2, dtype))
        t = step_value(step_t)
        bias_correction1 = 1 - as_float64(beta1) ** t
        bias_correction2 = 1 - as_float64(beta2) ** t
        step_size = as_float64(self.lr) / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if self.amsgrad:
            second = state["max_exp_avg_sq"]
            torch.maximum(second, exp_avg_sq, out=second)
        else:
            second = exp_avg_sq
        denom = second.sqrt().div_(coefficient(bias_correction2_sqrt, dtype))
        denom.add_(coefficient(self.eps, dtype))
        addcdiv_(params, exp_avg, denom, coefficient(-step_size, dtype))

    def torch_group_constants(self) -> dict[str, Any]:
        # torch.optim.Adam(decoupled_weight_decay=True) is AdamW, a different algorithm
        return {"decoupled_weight_decay": False}
