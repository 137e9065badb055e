"""Binary logistic regression on synthetic Gaussian data with a controlled conditioning.

Why in the distribution: a convex, stochastic (minibatched) problem like a real model's
training, whose Hessian's conditioning is set by ``condition`` (the feature covariance's
spectrum), so a suite can vary how hard the problem is without any dataset download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.base import TaskFamily
from l2l.tasks.mnist_common import check_init_std, positive_int
from l2l.tasks.synthetic_common import (
    DatasetInstances,
    check_number,
    draw_datasets,
    log_spectrum,
    random_rotation,
)


class GaussianLogRegInstances(DatasetInstances):
    """``B`` logistic regressions: features ``x (B, N, d)``, labels ``y (B, N)`` in {0, 1};
    parameters ``[w (d), b]``."""

    def __init__(self, x: Tensor, y: Tensor, ids: Tensor, key: int, init_params: Tensor,
                 batch_size: int, l2: float) -> None:
        super().__init__(x, y, ids, key, init_params, batch_size)
        self.l2 = l2

    def batch_loss(self, params: Tensor, x: Tensor, y: Tensor) -> Tensor:
        w, b = params[:, :-1], params[:, -1:]
        logits = torch.baddbmm(b.unsqueeze(1), x, w.unsqueeze(-1)).squeeze(-1)
        ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)
        return ce + 0.5 * self.l2 * (w * w).sum(dim=1) if self.l2 else ce

    def metrics(self, params: Tensor) -> dict[str, Tensor]:
        w, b = params[:, :-1], params[:, -1:]
        x = self.x.to(params.dtype)
        logits = torch.baddbmm(b.unsqueeze(1), x, w.unsqueeze(-1)).squeeze(-1)
        return {"accuracy": ((logits > 0) == (self.y > 0.5)).to(params.dtype).mean(dim=1)}


class GaussianLogRegFamily(TaskFamily):
    """Logistic regression ``p(y=1|x) = sigmoid(w . x + b)`` on ``num_examples`` Gaussian points
    per instance, minibatches of ``batch_size``.

    Instance ``i`` draws, in float64 from its own generator and in this order: the rotation
    ``Q`` (only if ``rotate``), the features ``x = Q diag(sqrt(lambda)) z`` with ``z ~ N(0, I)``
    and variances ``lambda`` log-spaced from 1 down to ``1 / condition``, a teacher ``w*`` and
    the label noise ``eps ~ N(0, 1)``; the label is ``y = 1[x . w* / s + noise * eps > 0]`` where
    ``s`` is the teacher logit's root mean square (so ``noise`` is relative to the signal and
    the data is not separable for ``noise > 0``), and the start ``theta_0 ~ N(0, init_std^2)``
    (``init_std=0``: the origin, loss ``log 2``). The loss is the minibatch's mean binary
    cross-entropy plus ``l2 / 2 * ||w||^2``; ``evaluate`` gives the loss and accuracy on the
    instance's whole dataset. Tensors in flat order (``param_shapes``): ``w (dim,)``, ``b (1,)``.
    """

    name = "gaussian_logreg"
    _namespace = "gaussian_logreg"

    def __init__(self, dim: int = 20, condition: float = 100.0, rotate: bool = True,
                 num_examples: int = 1024, batch_size: int = 32, noise: float = 0.5,
                 l2: float = 0.0, init_std: float = 0.0) -> None:
        self.dim = positive_int("dim", dim)
        self.condition = check_number("condition", condition, 1.0, 1e8)
        if not isinstance(rotate, bool):
            raise ValueError(f"rotate must be true or false, got {rotate!r}")
        self.rotate = rotate
        self.num_examples = positive_int("num_examples", num_examples)
        self.batch_size = positive_int("batch_size", batch_size)
        self.noise = check_number("noise", noise, 0.0, 1e3)
        self.l2 = check_number("l2", l2, 0.0, 1e3)
        self.init_std = check_init_std(init_std)

    def __repr__(self) -> str:
        return (f"GaussianLogRegFamily(dim={self.dim}, condition={self.condition:g}, "
                f"rotate={self.rotate}, num_examples={self.num_examples}, "
                f"batch_size={self.batch_size}, noise={self.noise:g}, l2={self.l2:g}, "
                f"init_std={self.init_std})")

    @property
    def num_params(self) -> int:
        return self.dim + 1

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(("w", "b"), ((self.dim,), (1,)))

    def _draw(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        d, N = self.dim, self.num_examples
        Q = random_rotation(d, g) if self.rotate else None
        x = torch.randn(N, d, generator=g, dtype=torch.float64) * log_spectrum(
            d, self.condition).sqrt()
        if Q is not None:
            x = x @ Q.T
        teacher = torch.randn(d, generator=g, dtype=torch.float64)
        eps = torch.randn(N, generator=g, dtype=torch.float64)
        logit = x @ teacher
        scale = logit.pow(2).mean().sqrt().clamp_min(1e-12)
        y = (logit / scale + self.noise * eps > 0).to(torch.float64)
        init = torch.randn(d + 1, generator=g, dtype=torch.float64) * self.init_std
        return x, y, init

    def sample(self, batch_size: int, seed: int, split: str = "train", *, offset: int = 0,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> GaussianLogRegInstances:
        x, y, init, ids, key = draw_datasets(self._draw, self._namespace, batch_size, seed,
                                             split, offset, device, dtype)
        return GaussianLogRegInstances(x, y, ids, key, init, self.batch_size, self.l2)

