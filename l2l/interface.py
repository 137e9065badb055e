"""The one interface every optimizer in l2l implements, hand-designed or learned.

An optimizer acts on a *batch of independent optimizees*: ``params`` and ``grads`` have shape
``(B, n)`` (row ``i`` is the flat parameter vector of instance ``i``) and every state tensor has
shape ``(B, n)``, ``(B, 1)`` or ``(B, n, ...)``. Like optax's ``GradientTransformation`` the
rule is a pair of pure functions::

    state = opt.init(params)
    update, state = opt.update(grads, state, params)
    params = params + update

``update`` never mutates its inputs, so autograd can flow through an unrolled optimization back
to the parameters, the gradients, the state, and to hyperparameters passed as tensors. Any
hyperparameter may be a Python float or a tensor broadcastable to ``(B, 1)``: 16 learning rates
are tried at once as one batch of 16 optimizees.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

State = dict[str, Tensor]
Hyper = float | Tensor


class BatchedOptimizer(abc.ABC):
    """Base class of every optimizer: a pure ``init``/``update`` pair over ``(B, n)`` batches."""

    name: str = "optimizer"

    @abc.abstractmethod
    def init(self, params: Tensor) -> State:
        """Fresh state for a batch of optimizees with parameters ``params`` of shape ``(B, n)``."""

    @abc.abstractmethod
    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        """Return ``(update, new_state)``; the new parameters are ``params + update``."""

    def hyperparameters(self) -> dict[str, Any]:
        """Plain-value hyperparameters (what a config or report holds)."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {}

    def with_hyperparameters(self, **overrides: Any) -> BatchedOptimizer:
        """A copy of this optimizer with some hyperparameters replaced (validated again)."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} has no replaceable hyperparameters")
        return dataclasses.replace(self, **overrides)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the update rules.


def step_counter(params: Tensor) -> Tensor:
    """A per-instance step count of shape ``(B, 1)``, starting at 0."""
    return params.new_zeros(params.shape[0], 1)


def is_zero(value: Hyper) -> bool:
    """True only for a Python number equal to 0: a tensor is always applied, so it stays
    differentiable and may hold a different value per instance."""
    return not isinstance(value, Tensor) and value == 0


def apply_weight_decay(
    grads: Tensor, params: Tensor, weight_decay: Hyper, maximize: bool
) -> Tensor:
    """torch.optim's common gradient preamble: negate for ``maximize``, then add L2 decay."""
    if maximize:
        grads = -grads
    if not is_zero(weight_decay):
        grads = grads + weight_decay * params
    return grads


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` whose derivative at 0 is 0 instead of infinity.

    A fresh optimizer state holds all-zero second moments; plain ``sqrt`` there gives an infinite
    derivative and hence NaN meta-gradients. The forward value is bit-identical to ``x.sqrt()``.
    The double ``where`` keeps the unused branch finite, so it also works for higher-order grads.
    """
    if not x.requires_grad:
        return x.sqrt()
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0)


def check_range(
    name: str,
    value: Hyper,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise ``ValueError`` naming ``name`` and its allowed range unless ``value`` lies in it.

    Works for Python numbers and for tensors of per-instance hyperparameters (every element is
    checked). NaN is never in range.
    """
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    if isinstance(value, Tensor):
        values = value.detach()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        values = torch.tensor(float(value))
    else:
        raise ValueError(
            f"invalid {name}={value!r}: {name} must be a number in {left}{low}, {high}{right}"
        )
    ok_low = values >= low if low_inclusive else values > low
    ok_high = values <= high if high_inclusive else values < high
    if not bool(torch.all(ok_low & ok_high)):
        shown = value if not isinstance(value, Tensor) else value.detach().flatten()[:8].tolist()
        raise ValueError(
            f"invalid {name}={shown}: {name} must lie in {left}{low}, {high}{right}"
        )


def check_betas(betas: tuple[Hyper, Hyper]) -> None:
    """Both Adam-style betas must lie in [0, 1)."""
    if len(betas) != 2:
        raise ValueError(f"invalid betas={betas}: betas must be a pair (beta1, beta2)")
    check_range("betas[0]", betas[0], 0.0, 1.0, high_inclusive=False)
    check_range("betas[1]", betas[1], 0.0, 1.0, high_inclusive=False)
