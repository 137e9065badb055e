"""The task interface: a *family* of optimization problems sampled many at a time.

``TaskFamily.sample(B, seed, split)`` draws ``B`` independent problem instances. Instance ``i`` of
a sample is determined by ``(seed, split, offset + i)`` alone, so row ``i`` of a batch equals the
same instance sampled on its own, and every optimizer run on the same sample sees the same
problems and, step for step, the same minibatches.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from l2l.layout import ParamLayout

SPLITS = ("train", "valid", "test")


def without_data_location(value: Any, data_dir: Any = None) -> Any:
    """A task config (or any part of one) with where its data lives taken out, at every depth
    (a mixture's components, an augmented task's ``task``): each ``data_dir`` set to
    ``data_dir`` (the key stays: that task reads data) and each ``download`` dropped. With the
    default None, two runs on the same tasks with their data in different places have the same
    identity, and a checkpoint records no machine's paths; ``"${data_dir}"`` points a recorded
    task at the reading run's own."""
    if isinstance(value, Mapping):
        return {k: data_dir if k == "data_dir" else without_data_location(v, data_dir)
                for k, v in value.items() if k != "download"}
    if isinstance(value, (list, tuple)):
        return [without_data_location(v, data_dir) for v in value]
    return value


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")


def check_sample(
    batch_size: int, seed: int, split: str, offset: int, dtype: torch.dtype
) -> None:
    """The arguments of ``TaskFamily.sample``, checked once for every family."""
    check_split(split)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point dtype, got {dtype}")


class Instances(abc.ABC):
    """A batch of ``B`` sampled problems with flat parameters of shape ``(B, n)``."""

    #: initial parameters, shape ``(B, n)``
    init_params: Tensor

    @property
    def batch_size(self) -> int:
        return self.init_params.shape[0]

    @property
    def num_params(self) -> int:
        return self.init_params.shape[1]

    @abc.abstractmethod
    def loss(self, params: Tensor, step: int) -> Tensor:
        """Per-instance losses ``(B,)`` at optimization step ``step`` (which picks the minibatch),
        computed for the whole batch at once."""

    def loss_and_grad(
        self, params: Tensor, step: int, *, create_graph: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Losses ``(B,)`` and each instance's gradient w.r.t. its own parameters ``(B, n)``.

        One backward pass of the summed losses gives all gradients (instances are independent).
        The gradient is taken w.r.t. ``params`` only, never through their history, so an unrolled
        optimization costs linear, not quadratic, time in its length. If ``params`` is part of an
        autograd graph the returned losses stay attached to it (for a meta-loss); the gradient is a
        constant unless ``create_graph`` (second-order meta-gradients).
        """
        attached = params.requires_grad
        with torch.enable_grad():
            p = params if attached else params.detach().requires_grad_(True)
            losses = self.loss(p, step)
            (grads,) = torch.autograd.grad(
                losses.sum(), p, create_graph=create_graph, retain_graph=attached or create_graph
            )
        return (losses if attached else losses.detach()), grads

    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        """Extra per-instance end-of-run metrics ``{name: (B,)}`` (e.g. accuracy); none by
        default."""
        return {}

    def held_out(self) -> Instances:
        """The same problems (same parameters, same instance ids) with their losses measured on
        minibatches of held-out data the optimizee never trains on: the meta-objective of
        ``meta.objective_split=valid``, which meta-trains an optimizer to generalize rather than
        to fit. Families without a data split (quadratics, Rosenbrock, ...) have none."""
        raise NotImplementedError(f"{type(self).__name__} has no held-out data")

    def repeat(self, times: int) -> Instances:
        """The batch tiled ``times`` times (rows ``[0..B-1, 0..B-1, ...]``), each copy the same
        problems with the same minibatches: one batched run then tries ``times`` settings (say,
        learning rates) on identical instances. Needed for batched learning-rate tuning."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement repeat(), which batched learning-rate "
            "tuning needs"
        )

    @classmethod
    def concat(cls, parts: list[Instances]) -> Instances:
        """The instances of ``parts`` (all of this class) as one batch, rows in order: lets a
        population of inner trainings that reset at different times (``l2l.truncated_step``)
        stay one batched problem. Families that cannot merge raise NotImplementedError (the
        population then evaluates its parts one by one)."""
        raise NotImplementedError(f"{cls.__name__} does not implement concat()")


class TaskFamily(abc.ABC):
    """A distribution over problems; ``sample`` draws a batch of them."""

    name: str = "task"

    @property
    @abc.abstractmethod
    def num_params(self) -> int:
        """Length ``n`` of each instance's flat parameter vector."""

    @property
    def layout(self) -> ParamLayout:
        """Which tensors an instance's flat parameter vector holds (``l2l.layout``), for the
        optimizers that read tensor structure; the default is one flat tensor ``(n,)``."""
        return ParamLayout.flat(self.num_params)

    @property
    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """``[(name, shape), ...]`` of the layout's tensors in flat order (per-tensor views
        such as augmentation's factors)."""
        layout = self.layout
        return list(zip(layout.names, layout.shapes))

    def layouts(self) -> tuple[ParamLayout, ...]:
        """Every layout an instance of this family can have (a mixture: its components'):
        what the meta-trainer binds its optimizer to (``BatchedOptimizer.with_layout``)."""
        return (self.layout,)

    @abc.abstractmethod
    def sample(
        self,
        batch_size: int,
        seed: int,
        split: str = "train",
        *,
        offset: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Instances:
        """Draw instances ``offset .. offset + batch_size - 1`` of ``(seed, split)``."""
