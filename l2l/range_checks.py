"""Range checks for hyperparameters, numbers or per-instance tensors alike.

Every optimizer, schedule, task and meta-setting validates its inputs with these, so a bad value
fails at construction in one line naming the setting and its allowed range, not as a NaN later.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from l2l.interface import Hyper


def _compiling() -> bool:
    """True while torch.compile traces (torch >= 2.3 names it torch.compiler.is_compiling)."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


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
        if _compiling():
            # A learned optimizer builds its rule at every step from meta-learned tensors that
            # lie in range by construction (exp, 1 - exp); inside torch.compile the check's
            # host sync would only break the graph (and warn) at every call.
            return
        values = value.detach()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        # plain Python comparisons (NaN fails both): no tensor, so no host sync that would
        # break a torch.compile graph building a rule from fixed numbers
        values = float(value)
    else:
        raise ValueError(
            f"invalid {name}={value!r}: {name} must be a number in {left}{low}, {high}{right}"
        )
    ok_low = values >= low if low_inclusive else values > low
    ok_high = values <= high if high_inclusive else values < high
    ok = bool(torch.all(ok_low & ok_high)) if isinstance(values, Tensor) else ok_low and ok_high
    if not ok:
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
