"""Ill-conditioned quadratics ``f(theta) = 1/2 (theta - theta*)^T A (theta - theta*)`` with a
controlled condition number.

Why in the distribution: the paper's random quadratics (``quadratic``) have whatever spectrum a
Gaussian matrix gives; here the eigenvalues of ``A`` are log-spaced from ``condition`` down to 1,
so a suite can ask how an optimizer copes with a known conditioning, and with ``rotate=True``
the eigenbasis is a random rotation per instance, which no coordinatewise (diagonal)
preconditioner can undo.
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.base import Instances, TaskFamily, check_sample
from l2l.tasks.mnist_common import check_init_std, positive_int
from l2l.tasks.seeding import instance_generator
from l2l.tasks.synthetic_common import check_number, log_spectrum, random_rotation


class ConditionedQuadraticInstances(Instances):
    """``B`` quadratics: Hessians ``A (B, d, d)``, optima ``target (B, d)``, ``init_params``."""

    def __init__(self, A: Tensor, target: Tensor, init_params: Tensor) -> None:
        self.A = A
        self.target = target
        self.init_params = init_params

    def loss(self, params: Tensor, step: int) -> Tensor:
        """``1/2 r^T A r`` with ``r = theta - theta*`` per instance; ``step`` is ignored."""
        r = params - self.target
        return 0.5 * (r * torch.bmm(self.A, r.unsqueeze(-1)).squeeze(-1)).sum(-1)

    def repeat(self, times: int) -> ConditionedQuadraticInstances:
        return ConditionedQuadraticInstances(self.A.repeat(times, 1, 1),
                                             self.target.repeat(times, 1),
                                             self.init_params.repeat(times, 1))

    def minimum(self) -> Tensor:
        """The optimum's loss per instance: 0 (``A`` is positive definite)."""
        return self.init_params.new_zeros(self.batch_size)


class ConditionedQuadraticFamily(TaskFamily):
    """Quadratics of dimension ``dim`` whose Hessian has eigenvalues log-spaced from
    ``condition`` down to 1 (``condition`` is the condition number; 1 is a round bowl).

    Instance ``i`` draws, in float64 from its own generator and in this order: the rotation
    ``Q`` (Haar-random, only if ``rotate``; else ``A`` is diagonal with the eigenvalues in a
    random order), the optimum ``theta* ~ N(0, I)`` and the start ``theta_0 ~ N(0,
    init_std^2 I)`` (``init_std=0``: every instance starts at the origin). ``A = Q diag(lambda)
    Q^T``. No minibatches: ``step`` is ignored. The minimum loss is 0 at ``theta*``. Its one
    tensor is ``theta (dim,)`` (``param_shapes``).
    """

    name = "conditioned_quadratic"
    _namespace = "conditioned_quadratic"

    def __init__(self, dim: int = 20, condition: float = 100.0, rotate: bool = True,
                 init_std: float = 0.0) -> None:
        self.dim = positive_int("dim", dim)
        self.condition = check_number("condition", condition, 1.0, 1e8)
        if not isinstance(rotate, bool):
            raise ValueError(f"rotate must be true or false, got {rotate!r}")
        self.rotate = rotate
        self.init_std = check_init_std(init_std)

    def __repr__(self) -> str:
        return (f"ConditionedQuadraticFamily(dim={self.dim}, condition={self.condition:g}, "
                f"rotate={self.rotate}, init_std={self.init_std})")

    @property
    def num_params(self) -> int:
        return self.dim

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout.flat(self.dim, "theta")

    def eigenvalues(self) -> Tensor:
        """The Hessian's eigenvalues ``(dim,)`` in float64, from ``condition`` down to 1."""
        return log_spectrum(self.dim, self.condition) * self.condition

    def sample(self, batch_size: int, seed: int, split: str = "train", *, offset: int = 0,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> ConditionedQuadraticInstances:
        check_sample(batch_size, seed, split, offset, dtype)
        d, lam = self.dim, self.eigenvalues()
        As, targets, inits = [], [], []
        for i in range(offset, offset + batch_size):
            g = instance_generator(self._namespace, seed, split, i)
            if self.rotate:
                Q = random_rotation(d, g)
                As.append((Q * lam) @ Q.T)
            else:
                As.append(torch.diag(lam[torch.randperm(d, generator=g)]))
            targets.append(torch.randn(d, generator=g, dtype=torch.float64))
            inits.append(torch.randn(d, generator=g, dtype=torch.float64) * self.init_std)
        dev = torch.device("cpu") if device is None else torch.device(device)

        def put(ts: list[Tensor]) -> Tensor:
            return torch.stack(ts).to(device=dev, dtype=dtype)

        return ConditionedQuadraticInstances(put(As), put(targets), put(inits))
