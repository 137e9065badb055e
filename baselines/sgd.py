"""Plain stochastic gradient descent, equal to ``torch.optim.SGD`` with ``momentum=0``.

Update rule (torch.optim.SGD's documented algorithm without momentum)::

    g_t = -grad if maximize else grad
    g_t = g_t + weight_decay * theta_{t-1}          (if weight_decay != 0)
    theta_t = theta_{t-1} - lr * g_t
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from l2l.interface import (
    BatchedOptimizer,
    Hyper,
    State,
    add_scaled_,
    apply_weight_decay,
    check_params,
    coefficient,
    decayed_grad,
)
from l2l.range_checks import check_range


@dataclass(frozen=True)
class SGD(BatchedOptimizer):
    lr: Hyper = 1e-3
    weight_decay: Hyper = 0.0
    maximize: bool = False

    name = "sgd"
    multi_tensor_step = True  # _step_ runs on TensorLists (l2l.tensor_list)

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0.0)
        check_range("weight_decay", self.weight_decay, 0.0)

    def init(self, params: Tensor) -> State:
        check_params(params, type(self).__name__)
        return {}

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        self.check_shapes(grads, state, params)
        g = apply_weight_decay(grads, params, self.weight_decay, self.maximize)
        return -self.lr * g, {}

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        # torch.optim._single_tensor_sgd without momentum: one pass over the parameters
        g = decayed_grad(grads, params, self.weight_decay, self.maximize)
        add_scaled_(params, g, coefficient(-self.lr, params.dtype))

    def torch_group_constants(self) -> dict[str, Any]:
        return {"momentum": 0, "dampening": 0, "nesterov": False}
