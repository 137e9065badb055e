"""A list of tensors that answers the few ``Tensor`` methods the baselines' in-place steps use,
each with one ``torch._foreach_*`` call: a multi-tensor kernel over a whole param group.

The drop-in steps a hand-designed rule over a param group this way (``l2l.flat_group``):
``rule._step_(TensorList(grads), state, TensorList(params))`` runs the very code that steps one
``(1, n)`` tensor, with every ``exp_avg.lerp_(g, w)`` becoming ``torch._foreach_lerp_`` over the
group. On a CPU a foreach kernel runs the same single-tensor kernel per tensor (in C++, without
the Python call per tensor), so the arithmetic is torch.optim's single-tensor step bit for bit,
and nothing is copied: SGD's step stays one pass over the parameters (a flat buffer would add
three: gathering the gradients and the parameters and writing the parameters back).

Only what the baselines need is here; anything else is an ``AttributeError`` (a rule whose step
needs more is stepped as a flat vector instead: ``BatchedOptimizer.multi_tensor_step``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def _items(x: Any) -> Any:
    return x.items if isinstance(x, TensorList) else x


class TensorList:
    """Tensors of matching shapes, stepped elementwise together (module docstring)."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Tensor]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dtype(self) -> torch.dtype:
        return self.items[0].dtype

    def __neg__(self) -> TensorList:
        return TensorList(torch._foreach_neg(self.items))

    def add_(self, other: Any, alpha: float | None = None) -> TensorList:
        if alpha is None:
            torch._foreach_add_(self.items, _items(other))
        else:
            torch._foreach_add_(self.items, _items(other), alpha=alpha)
        return self

    def add(self, other: Any, alpha: float | None = None) -> TensorList:
        if alpha is None:
            return TensorList(torch._foreach_add(self.items, _items(other)))
        return TensorList(torch._foreach_add(self.items, _items(other), alpha=alpha))

    def sub_(self, other: Any) -> TensorList:
        torch._foreach_sub_(self.items, _items(other))
        return self

    def mul_(self, other: Any) -> TensorList:
        torch._foreach_mul_(self.items, _items(other))
        return self

    def div_(self, other: Any) -> TensorList:
        torch._foreach_div_(self.items, _items(other))
        return self

    def div(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_div(self.items, _items(other)))

    def lerp_(self, end: TensorList, weight: float) -> TensorList:
        torch._foreach_lerp_(self.items, end.items, weight)
        return self

    def addcmul_(self, a: TensorList, b: TensorList, value: float = 1) -> TensorList:
        torch._foreach_addcmul_(self.items, a.items, b.items, value=value)
        return self

    def addcmul(self, a: TensorList, b: TensorList, value: float = 1) -> TensorList:
        return TensorList(torch._foreach_addcmul(self.items, a.items, b.items, value=value))

    def addcdiv_(self, a: TensorList, b: TensorList, value: float = 1) -> TensorList:
        torch._foreach_addcdiv_(self.items, a.items, b.items, value=value)
        return self

    def sqrt(self) -> TensorList:
        return TensorList(torch._foreach_sqrt(self.items))

    def sqrt_(self) -> TensorList:
        torch._foreach_sqrt_(self.items)
        return self

    def copy_(self, src: TensorList) -> TensorList:
        torch._foreach_copy_(self.items, src.items)
        return self

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        """``torch.maximum(a, b, out=a)`` (AMSGrad's running maximum), the one torch function
        the baselines' steps call on state tensors."""
        kwargs = kwargs or {}
        if func is torch.maximum and kwargs.get("out") is args[0]:
            torch._foreach_maximum_(args[0].items, _items(args[1]))
            return args[0]
        raise TypeError(f"TensorList does not implement {getattr(func, '__name__', func)}")
