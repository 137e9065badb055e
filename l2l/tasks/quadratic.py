"""Random quadratics ``f(theta) = ||W theta - y||^2`` (the paper's first experiment, section 3.1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.base import Instances, TaskFamily, check_sample
from l2l.tasks.seeding import instance_generator

# ---------------------------------------------------------------------------------------------
# The quadratic family.

_DISTS = ("normal", "uniform")


class QuadraticInstances(Instances):
    """``B`` quadratics: ``W (B, d, d)``, ``y (B, d)``, ``init_params (B, d)``."""

    def __init__(self, W: Tensor, y: Tensor, init_params: Tensor) -> None:
        self.W = W
        self.y = y
        self.init_params = init_params

    def residual(self, params: Tensor) -> Tensor:
        """``W theta - y`` per instance, shape ``(B, d)``."""
        return torch.bmm(self.W, params.unsqueeze(-1)).squeeze(-1) - self.y

    def loss(self, params: Tensor, step: int) -> Tensor:
        """``||W theta - y||^2`` per instance; ``step`` is ignored (no minibatches)."""
        r = self.residual(params)
        return (r * r).sum(-1)

    def repeat(self, times: int) -> QuadraticInstances:
        return QuadraticInstances(
            self.W.repeat(times, 1, 1), self.y.repeat(times, 1), self.init_params.repeat(times, 1)
        )

    @classmethod
    def concat(cls, parts: list[Instances]) -> QuadraticInstances:
        return cls(torch.cat([p.W for p in parts]), torch.cat([p.y for p in parts]),
                   torch.cat([p.init_params for p in parts]))

    def minimum(self) -> Tensor:
        """The least-squares optimum's loss per instance (0 when ``W`` is invertible)."""
        W64, y64 = self.W.double(), self.y.double()
        sol = torch.linalg.lstsq(W64, y64.unsqueeze(-1)).solution.squeeze(-1)
        r = torch.bmm(W64, sol.unsqueeze(-1)).squeeze(-1) - y64
        return (r * r).sum(-1).to(self.W.dtype)


class QuadraticFamily(TaskFamily):
    """Quadratics ``f(theta) = ||W theta - y||^2`` with ``W (dim, dim)``, ``y (dim)`` random.

    Defaults follow the paper: ``W`` and ``y`` IID standard normal (``"normal"``); ``"uniform"``
    draws them from ``U[0, 1)`` as the official code does. The paper does not say how
    ``theta_0`` is drawn; the default ``init_std=0.01`` (``theta_0 ~ N(0, 0.01^2)``) is the
    official code's choice. ``init_std=None`` (or ``0``) starts every instance at ``theta_0 = 0``.
    The official code's setting (uniform ``W`` and ``y``) is the preset
    ``conf/task/quadratic_official.yaml``.

    The loss is the plain per-instance sum of squares (the official code additionally averages
    over its batch of 128 functions, a run-level choice). There are no minibatches: ``step`` is
    ignored, so every step sees the same function.

    Each instance's data is drawn in float64 from its own generator (seeded by ``(seed, split,
    instance id)``) in the order ``W``, ``y``, ``theta_0`` and then cast to ``dtype``, so a float32
    and a float64 sample hold the same problems up to rounding.
    """

    name = "quadratic"
    #: seeding namespace, fixed for the class so that presets and names share instances' seeds
    _namespace = "quadratic"

    def __init__(
        self,
        dim: int = 10,
        w_dist: str = "normal",
        y_dist: str = "normal",
        init_std: float | None = 0.01,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        for label, dist in (("w_dist", w_dist), ("y_dist", y_dist)):
            if dist not in _DISTS:
                raise ValueError(f"unknown {label}={dist!r}: choose one of {', '.join(_DISTS)}")
        if init_std is not None and not (float(init_std) >= 0.0 and float(init_std) < float("inf")):
            raise ValueError(f"init_std must be a finite number >= 0 or None, got {init_std!r}")
        self.dim = dim
        self.w_dist = w_dist
        self.y_dist = y_dist
        self.init_std = None if init_std is None else float(init_std)

    def __repr__(self) -> str:
        return (
            f"QuadraticFamily(dim={self.dim}, w_dist={self.w_dist!r}, y_dist={self.y_dist!r}, "
            f"init_std={self.init_std!r})"
        )

    @property
    def num_params(self) -> int:
        return self.dim

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout.flat(self.dim, "theta")

    @staticmethod
    def _draw(dist: str, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
        if dist == "normal":
            return torch.randn(shape, generator=g, dtype=torch.float64)
        return torch.rand(shape, generator=g, dtype=torch.float64)

    def sample(
        self,
        batch_size: int,
        seed: int,
        split: str = "train",
        *,
        offset: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> QuadraticInstances:
        check_sample(batch_size, seed, split, offset, dtype)
        d = self.dim
        Ws, ys, thetas = [], [], []
        for i in range(offset, offset + batch_size):
            g = instance_generator(self._namespace, seed, split, i)
            Ws.append(self._draw(self.w_dist, (d, d), g))
            ys.append(self._draw(self.y_dist, (d,), g))
            if self.init_std:
                thetas.append(torch.randn(d, generator=g, dtype=torch.float64) * self.init_std)
            else:
                thetas.append(torch.zeros(d, dtype=torch.float64))
        device = torch.device("cpu") if device is None else torch.device(device)

        def put(ts: list[Tensor]) -> Tensor:
            return torch.stack(ts).to(device=device, dtype=dtype)

        return QuadraticInstances(put(Ws), put(ys), put(thetas))
