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

from baselines.momentum import Momentum
from l2l.range_checks import check_range


@dataclass(frozen=True)
class NAG(Momentum):
    """torch.optim.SGD(nesterov=True): :class:`Momentum` with the look-ahead step."""

    name = "nag"
    nesterov = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("dampening", self.dampening, 0.0, 0.0)  # torch: nesterov needs dampening 0
