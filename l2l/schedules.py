"""Learning-rate schedules that wrap any :class:`~l2l.interface.BatchedOptimizer`.

A schedule maps the number ``t`` of steps already taken (a ``(B, 1)`` tensor, so every instance
of a batch may be at its own step) to a multiplicative factor on the learning rate::

    Constant()                          factor(t) = 1
    ExponentialDecay(decay, decay_steps) factor(t) = decay ** (t / decay_steps)

``Scheduled(optimizer, schedule)`` is itself a BatchedOptimizer. Every update rule in
``baselines`` is linear in its current learning rate, so scaling the *update* by the factor is
the same as running the optimizer with learning rate ``lr * factor(t)``: the first step uses
``factor(0) = 1``. ``Scheduled(Adam(lr), ExponentialDecay(decay, decay_steps))`` equals
``torch.optim.Adam(lr=lr)`` with ``torch.optim.lr_scheduler.ExponentialLR(gamma=decay ** (1 /
decay_steps))`` stepped after every optimizer step.

The wrapper keeps the inner optimizer's state keys as they are and adds its own ``(B, 1)`` step
counter under ``"schedule_step"`` (``"schedule_step_2"``, ... when schedules are nested).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2l.interface import BatchedOptimizer, Hyper, State, step_counter
from l2l.range_checks import check_range

STEP_KEY = "schedule_step"


class Schedule(abc.ABC):
    """A learning-rate factor as a function of the number of steps already taken."""

    name: str = "schedule"

    @abc.abstractmethod
    def factor(self, t: Tensor) -> Tensor:
        """The factor for steps ``t`` (shape ``(B, 1)``), in ``t``'s dtype."""

    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Constant(Schedule):
    """``factor(t) = 1``: the wrapped optimizer unchanged."""

    name = "constant"

    def factor(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """``factor(t) = decay ** (t / decay_steps)``: the learning rate is multiplied by ``decay``
    every ``decay_steps`` steps, smoothly (``decay_steps`` need not be an integer)."""

    decay: Hyper
    decay_steps: Hyper

    name = "exponential"

    def __post_init__(self) -> None:
        check_range("decay", self.decay, 0.0, 1.0, low_inclusive=False)
        check_range("decay_steps", self.decay_steps, 0.0, low_inclusive=False)

    def factor(self, t: Tensor) -> Tensor:
        # in float64, then cast: a float32 exponent t / decay_steps loses digits for large t
        decay, decay_steps = (
            v.to(torch.float64) if isinstance(v, Tensor) else v
            for v in (self.decay, self.decay_steps)
        )
        return (decay ** (t.to(torch.float64) / decay_steps)).to(t.dtype)


SCHEDULES: dict[str, type[Schedule]] = {"constant": Constant, "exponential": ExponentialDecay}


def build_schedule(name: str, **kwargs: Any) -> Schedule:
    """A schedule by name (``"constant"`` or ``"exponential"``) and its hyperparameters."""
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"unknown schedule {name!r}: choose one of {', '.join(sorted(SCHEDULES))}"
        ) from None
    try:
        return cls(**kwargs)
    except TypeError as error:  # an unexpected keyword: say which schedule rejected it
        raise ValueError(f"bad arguments for schedule {name!r}: {error}") from None


@dataclass(frozen=True)
class Scheduled(BatchedOptimizer):
    """``optimizer`` with its learning rate multiplied by ``schedule.factor(t)`` at step ``t``."""

    optimizer: BatchedOptimizer
    schedule: Schedule = dataclasses.field(default_factory=Constant)

    name = "scheduled"

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, BatchedOptimizer):
            raise ValueError(f"optimizer must be a BatchedOptimizer, got {self.optimizer!r}")
        if not isinstance(self.schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, got {self.schedule!r}")

    @property
    def step_key(self) -> str:
        """This wrapper's state key: one per nesting level, so nested schedules never clash."""
        depth, inner = 1, self.optimizer
        while isinstance(inner, Scheduled):
            depth, inner = depth + 1, inner.optimizer
        return STEP_KEY if depth == 1 else f"{STEP_KEY}_{depth}"

    def init(self, params: Tensor) -> State:
        state = dict(self.optimizer.init(params))
        if self.step_key in state:
            raise ValueError(f"the wrapped optimizer's state already has a {self.step_key!r} key")
        state[self.step_key] = step_counter(params)
        return state

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        key = self.step_key
        inner_state = {k: v for k, v in state.items() if k != key}
        update, new_inner = self.optimizer.update(grads, inner_state, params)
        t = state[key]
        new_state = dict(new_inner)
        new_state[key] = t + 1
        if isinstance(self.schedule, Constant):
            return update, new_state
        return update * self.schedule.factor(t), new_state

    def with_layout(self, layouts: Any) -> Scheduled:
        """The wrapped rule bound to ``layouts`` (see ``BatchedOptimizer.with_layout``)."""
        inner = self.optimizer.with_layout(layouts)
        return self if inner is self.optimizer else Scheduled(inner, self.schedule)

    def hyperparameters(self) -> dict[str, Any]:
        """The wrapped optimizer's hyperparameters, plus ``schedule.<name>`` entries."""
        hypers = dict(self.optimizer.hyperparameters())
        hypers.update({f"schedule.{k}": v for k, v in self.schedule.hyperparameters().items()})
        return hypers

    def with_hyperparameters(self, **overrides: Any) -> Scheduled:
        """Replace inner hyperparameters by name and the schedule's as ``schedule.<name>``."""
        prefix = "schedule."
        schedule_overrides = {
            k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)
        }
        inner_overrides = {k: v for k, v in overrides.items() if not k.startswith(prefix)}
        optimizer = self.optimizer
        if inner_overrides:
            optimizer = optimizer.with_hyperparameters(**inner_overrides)
        schedule = self.schedule
        if schedule_overrides:
            schedule = dataclasses.replace(schedule, **schedule_overrides)  # type: ignore[type-var]
        return Scheduled(optimizer, schedule)
