"""The chained n-dimensional Rosenbrock function, batched, from random starts.

``f(x) = sum_{i<n} curvature (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``, minimum 0 at ``x = 1``.

Why in the distribution: the classic non-convex test of optimizers — a long, curved, narrow
valley whose floor is easy to find and slow to follow — the opposite of the MNIST nets' and the
quadratics' geometry; ``curvature`` sets the valley's narrowness (100 is the classic value).
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.base import Instances, TaskFamily, check_sample
from l2l.tasks.mnist_common import positive_int
from l2l.tasks.seeding import instance_generator
from l2l.tasks.synthetic_common import check_number


class RosenbrockInstances(Instances):
    """``B`` Rosenbrock problems sharing ``curvature``, each from its own ``init_params``."""

    def __init__(self, init_params: Tensor, curvature: float) -> None:
        self.init_params = init_params
        self.curvature = curvature

    def loss(self, params: Tensor, step: int) -> Tensor:
        """The chained Rosenbrock sum per instance; ``step`` is ignored."""
        head, tail = params[:, :-1], params[:, 1:]
        return (self.curvature * (tail - head * head) ** 2 + (1 - head) ** 2).sum(-1)

    def repeat(self, times: int) -> RosenbrockInstances:
        return RosenbrockInstances(self.init_params.repeat(times, 1), self.curvature)

    def minimum(self) -> Tensor:
        """The optimum's loss per instance: 0, at ``x = 1``."""
        return self.init_params.new_zeros(self.batch_size)


class RosenbrockFamily(TaskFamily):
    """Chained Rosenbrock functions of dimension ``dim >= 2``; instance ``i`` starts at
    ``x_0 ~ U[-init_radius, init_radius]^dim`` drawn in float64 from its own generator.

    The loss is the standard sum over the ``dim - 1`` terms (not their mean), so that each
    coordinate's gradient has the same scale whatever ``dim``. No minibatches: ``step`` is
    ignored. Its one tensor is ``x (dim,)`` (``param_shapes``).
    """

    name = "rosenbrock"
    _namespace = "rosenbrock"

    def __init__(self, dim: int = 10, curvature: float = 100.0, init_radius: float = 2.0) -> None:
        self.dim = positive_int("dim", dim)
        if self.dim < 2:
            raise ValueError(f"dim must be an int >= 2 (a chain needs two coordinates), got {dim}")
        self.curvature = check_number("curvature", curvature, 0.0, 1e6, open_low=True)
        self.init_radius = check_number("init_radius", init_radius, 0.0, 1e3)

    def __repr__(self) -> str:
        return (f"RosenbrockFamily(dim={self.dim}, curvature={self.curvature:g}, "
                f"init_radius={self.init_radius:g})")

    @property
    def num_params(self) -> int:
        return self.dim

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout.flat(self.dim, "x")

    def sample(self, batch_size: int, seed: int, split: str = "train", *, offset: int = 0,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> RosenbrockInstances:
        check_sample(batch_size, seed, split, offset, dtype)
        rows = [torch.rand(self.dim, generator=instance_generator(self._namespace, seed, split, i),
                           dtype=torch.float64) for i in range(offset, offset + batch_size)]
        init = (torch.stack(rows) * 2 - 1) * self.init_radius
        dev = torch.device("cpu") if device is None else torch.device(device)
        return RosenbrockInstances(init.to(device=dev, dtype=dtype), self.curvature)
