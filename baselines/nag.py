"""Nesterov momentum, equal to ``torch.optim.SGD`` with ``nesterov=True``.

Update rule (torch.optim.SGD's documented algorithm), ``t`` counting from 1::

    g_t = -grad if maximize else grad
    g_t = g_t + weight_decay * theta_{t-1}                    (if weight_decay != 0)
    b_t = g_t                                                  (t = 1)
    b_t = momentum * b_{t-1} + g_t                             (t > 1)
    theta_t = theta_{t-1} - lr * (g_t + momentum * b_t)

Like torch, Nesterov momentum requires ``momentum > 0`` and ``dampening = 0``; the field is kept
so that the hyperparameters read exactly as torch.optim.SGD's. The heavy-ball machinery is
shared with :class:`baselines.Momentum`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.momentum import heavy_ball_update
from l2l.interface import BatchedOptimizer, Hyper, State, check_range, step_counter


@dataclass(frozen=True)
class NAG(BatchedOptimizer):
    lr: Hyper = 1e-3
    momentum: Hyper = 0.9
    dampening: Hyper = 0.0
    weight_decay: Hyper = 0.0
    maximize: bool = False

    name = "nag"

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_range("momentum", self.momentum, 0.0, low_inclusive=False)
        check_range("dampening", self.dampening, 0.0, 0.0)  # torch: nesterov needs dampening 0
        check_range("weight_decay", self.weight_decay, 0.0)

    def init(self, params: Tensor) -> State:
        return {"step": step_counter(params), "momentum_buffer": torch.zeros_like(params)}

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        return heavy_ball_update(
            grads,
            state,
            params,
            lr=self.lr,
            momentum=self.momentum,
            dampening=self.dampening,
            weight_decay=self.weight_decay,
            maximize=self.maximize,
            nesterov=True,
        )
