"""Small statistics helpers for reporting results with honest uncertainty."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Two-sided 95% Student-t quantiles t_{0.975, df} for small df; larger df use a series in 1/df.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df in _T975:
        return _T975[df]
    z = 1.959964
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def mean_ci95(values: Tensor | Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t), ignoring NaNs.

    Returns ``(nan, nan)`` if nothing finite is left and a half-width of ``nan`` for one value.
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return math.nan, math.nan
    mean = x.mean().item()
    if x.numel() == 1:
        return mean, math.nan
    sem = x.std(unbiased=True).item() / math.sqrt(x.numel())
    return mean, t_quantile_975(x.numel() - 1) * sem


def separated_winner(rows: Sequence[tuple[str, float, float]]) -> tuple[str | None, str | None]:
    """``(winner, lowest)`` among ``(name, mean, ci95)`` rows, lower is better: ``lowest`` is the
    row with the lowest finite mean, ``winner`` the same name only if its 95% interval lies
    entirely below every other finite row's (an unknown interval never separates), else None.
    A claim of "better" needs the separation, not just the lower mean."""
    finite = [(n, m, c) for n, m, c in rows if m is not None and math.isfinite(m)]
    if not finite:
        return None, None
    name, mean, ci = min(finite, key=lambda r: r[1])
    others = [(m, c) for n, m, c in finite if n != name]
    if not others:  # the only finite row (the others diverged): it wins
        return name, name
    if ci is None or not math.isfinite(ci):
        return None, name
    for m, c in others:
        if c is None or not math.isfinite(c) or mean + ci >= m - c:
            return None, name
    return name, name
