"""Meta-gradient estimators, one module each; found by name like the optimizers."""

from __future__ import annotations

import functools

from l2l.estimators.base import MetaGradientEstimator, Unroll, UnrollOutcome
from l2l.learned.base import LearnedOptimizer


@functools.cache
def estimator_classes() -> dict[str, type[MetaGradientEstimator]]:
    from l2l.registry import discover

    return discover("l2l.estimators", MetaGradientEstimator)


def choose_estimator(name: str, optimizer: LearnedOptimizer, *,
                     second_order: bool) -> type[MetaGradientEstimator]:
    """The estimator called ``name``, or for ``"auto"`` (alias ``"tbptt"``) the fastest exact
    one that applies: ``surrogate`` unless the optimizer reads its parameters or second order
    is asked for.
    (``sequence``, the fused whole-unroll path, is exact too but measured no faster than
    ``surrogate`` with ``meta.compile=true`` on 2-core CPUs; see docs/speed.md.)"""
    classes = estimator_classes()
    if name in ("auto", "tbptt"):  # tbptt: today's truncated back-propagation, auto's choice
        fast = classes["surrogate"]
        if fast.unsupported(optimizer, second_order=second_order) is None:
            return fast
        return classes["autograd"]
    if name not in classes:
        raise ValueError(f"unknown meta.estimator {name!r}: choose auto, tbptt or one of "
                         f"{', '.join(classes)}")
    reason = classes[name].unsupported(optimizer, second_order=second_order)
    if reason:
        raise ValueError(f"meta.estimator={name} cannot be used here: {reason}")
    return classes[name]


__all__ = ["MetaGradientEstimator", "Unroll", "UnrollOutcome", "choose_estimator",
           "estimator_classes"]
