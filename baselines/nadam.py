"""NAdam (Adam with Nesterov momentum), equal to ``torch.optim.NAdam`` step by step.

Update rule (torch.optim.NAdam's documented algorithm), ``t`` counting from 1::

    g_t = -grad if maximize else grad
    if weight_decay != 0:
        theta_{t-1} = theta_{t-1} * (1 - lr * weight_decay)    if decoupled_weight_decay
        g_t = g_t + weight_decay * theta_{t-1}                  otherwise
    mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))
    mu_{t+1} = beta1 * (1 - 0.5 * 0.96**((t + 1) * momentum_decay))
    P_t = mu_1 * mu_2 * ... * mu_t                              (the running product "mu_product")
    m_t = beta1 * m_{t-1} + (1 - beta1) * g_t
    v_t = beta2 * v_{t-1} + (1 - beta2) * g_t**2
    d_t = sqrt(v_t / (1 - beta2**t)) + eps
    theta_t = theta_{t-1} - (lr * (1 - mu_t) / (1 - P_t) * g_t
                             + lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m_t) / d_t

The running product ``P_t`` lives in the state as a ``(B, 1)`` tensor of the parameters' dtype
(torch keeps it as a 0-dim tensor of the default dtype). The per-instance scalars ``mu_t``,
``mu_{t+1}``, the bias correction and both step sizes are computed in float64, as torch computes
them with Python floats, and cast to the parameters' dtype only when applied.

With decoupled weight decay the update returned contains ``theta * (1 - lr * weight_decay) -
theta``, so that ``theta + update`` reproduces torch's multiplicative decay as closely as
floating point allows (in float32 the factor ``1 - lr * weight_decay`` is rounded exactly as
torch rounds it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.adam import as_float64, ema, ema_square, inplace_ok
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
    is_zero,
    safe_sqrt,
    step_counter,
    step_value,
)
from l2l.range_checks import check_betas, check_range


@dataclass(frozen=True)
class Nadam(BatchedOptimizer):
    lr: Hyper = 2e-3
    betas: tuple[Hyper, Hyper] = (0.9, 0.999)
    eps: Hyper = 1e-8
    weight_decay: Hyper = 0.0
    momentum_decay: Hyper = 4e-3
    decoupled_weight_decay: bool = False
    maximize: bool = False

    name = "nadam"
    multi_tensor_step = True  # _step_ runs on TensorLists (l2l.tensor_list)
    scalar_state_keys = frozenset({"step", "mu_product"})

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_betas(self.betas)
        check_range("eps", self.eps, 0.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("momentum_decay", self.momentum_decay, 0.0)

    def init(self, params: Tensor) -> State:
        check_params(params, type(self).__name__)
        return {
            "step": step_counter(params),
            "mu_product": params.new_ones(params.shape[0], 1),
            "exp_avg": torch.zeros_like(params),
            "exp_avg_sq": torch.zeros_like(params),
        }

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        self.check_shapes(grads, state, params)
        beta1, beta2 = self.betas
        dtype = params.dtype
        decoupled = self.decoupled_weight_decay and not is_zero(self.weight_decay)
        if decoupled:
            g = -grads if self.maximize else grads
        else:
            g = apply_weight_decay(grads, params, self.weight_decay, self.maximize)
        step = state["step"] + 1

        # Per-instance scalars, (B, 1), in float64 like torch's Python floats.
        t = step.to(torch.float64)
        b1, lr, decay = as_float64(beta1), as_float64(self.lr), as_float64(self.momentum_decay)
        bias_correction2 = (1 - as_float64(beta2) ** t).to(dtype)
        mu = b1 * (1.0 - 0.5 * (0.96 ** (t * decay)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * decay)))
        # torch: ``mu_product *= mu`` on a tensor of the parameters' precision
        mu_product = state["mu_product"] * mu.to(dtype)
        mu_product_next = mu_product.to(torch.float64) * mu_next
        grad_coef = (-lr * (1.0 - mu) / (1.0 - mu_product.to(torch.float64))).to(dtype)
        avg_coef = ((-lr * mu_next) / (1.0 - mu_product_next)).to(dtype)

        exp_avg = ema(state["exp_avg"], g, beta1)
        exp_avg_sq = ema_square(state["exp_avg_sq"], g, beta2)
        new_state = {
            "step": step,
            "mu_product": mu_product,
            "exp_avg": exp_avg,
            "exp_avg_sq": exp_avg_sq,
        }

        # torch adds grad_coef * g / denom and avg_coef * m / denom to the parameters one after
        # the other; one division of their sum is the same up to rounding and saves a pass
        if inplace_ok(exp_avg_sq, exp_avg, g, grad_coef, avg_coef, self.eps):
            denom = (exp_avg_sq / bias_correction2).sqrt_().add_(self.eps)
            update = (g * grad_coef).addcmul_(exp_avg, avg_coef).div_(denom)
        else:
            denom = safe_sqrt(exp_avg_sq / bias_correction2) + self.eps
            update = torch.addcmul(g * grad_coef, exp_avg, avg_coef) / denom
        if decoupled:
            shrink = torch.as_tensor(1 - lr * as_float64(self.weight_decay), dtype=dtype)
            update = update + (params * shrink - params)
        return update, new_state

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        # torch.optim._single_tensor_nadam (not capturable), op for op: two addcdiv_ passes
        # where ``update`` divides once (see the module docstring)
        dtype = params.dtype
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        step_t, mu_product = state["step"], state["mu_product"]
        step_t.add_(1)
        t = step_value(step_t)
        b1, lr, decay = as_float64(beta1), as_float64(self.lr), as_float64(self.momentum_decay)
        bias_correction2 = 1 - as_float64(beta2) ** t
        g = -grads if self.maximize else grads
        if not is_zero(self.weight_decay):
            if self.decoupled_weight_decay:
                params.mul_(coefficient(1 - lr * as_float64(self.weight_decay), dtype))
            else:
                g = decayed_grad(g, params, self.weight_decay, False)
        mu = b1 * (1.0 - 0.5 * (0.96 ** (t * decay)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * decay)))
        mu_product.mul_(coefficient(mu, mu_product.dtype))  # torch: ``mu_product *= mu``
        exp_avg.lerp_(g, coefficient(1 - beta1, dtype))
        addcmul_(exp_avg_sq.mul_(coefficient(beta2, dtype)), g, g, coefficient(1 - beta2, dtype))
        denom = exp_avg_sq.div(coefficient(bias_correction2, dtype)).sqrt_()
        denom.add_(coefficient(self.eps, dtype))
        product = step_value(mu_product)
        mu_product_next = product * mu_next
        grad_coef = -lr * (1.0 - mu) / (1.0 - product)
        avg_coef = (-lr * mu_next) / (1.0 - mu_product_next)
        addcdiv_(params, g, denom, coefficient(grad_coef, dtype))
        addcdiv_(params, exp_avg, denom, coefficient(avg_coef, dtype))
