"""What the synthetic task families share: argument checks, log-spaced spectra, random
rotations, and fixed per-instance datasets read in hashed minibatches.

- **Data.** Each instance draws its own dataset (inputs ``x (N, d)``, targets ``y (N, ...)``) in
  float64 from its generator seeded by ``(namespace, seed, split, instance id)``, cast to the
  sample's dtype; so a float32 and a float64 sample hold the same problems up to rounding.
- **Minibatches.** The ``j``-th example of instance ``i`` at step ``t`` is the counter-based hash
  of ``(key(seed, split), i, t, j)`` scaled to ``N`` (``l2l.tasks.mnist_common.hash_indices``, as
  the MNIST families do): the same minibatches whatever optimizer runs the instance and whatever
  batch it is sampled in. Examples are drawn with replacement.
- **Evaluation.** The loss on the instance's whole dataset (the full-batch objective that the
  minibatch losses estimate), plus the family's metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from l2l.range_checks import check_range
from l2l.tasks.base import Instances, check_sample
from l2l.tasks.mnist_common import MAX_COUNTER, hash_indices
from l2l.tasks.seeding import instance_generator, stream_key


def check_number(name: str, value: object, low: float, high: float = math.inf, *,
                 open_low: bool = False) -> float:
    """``value`` as a float if it is a number in ``[low, high]`` (``(low, high]`` if
    ``open_low``), else a ValueError naming ``name`` and the range
    (``l2l.range_checks.check_range``)."""
    check_range(name, value, low, high, low_inclusive=not open_low)  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


def positive_ints(name: str, values: object, *, allow_empty: bool = False) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints (a sequence such as ``[32, 32]``), else a
    ValueError naming ``name``."""
    if isinstance(values, (int, str)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of positive ints such as [32], got {values!r}")
    out = tuple(values)
    if not out and not allow_empty:
        raise ValueError(f"{name} must hold at least one size, got {values!r}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"every size in {name} must be a positive int, got {values!r}")
    return out


def log_spectrum(dim: int, condition: float) -> Tensor:
    """``dim`` values log-spaced from 1 down to ``1 / condition`` (float64): a spectrum whose
    largest-to-smallest ratio is ``condition``."""
    return torch.logspace(0.0, -math.log10(condition), dim, dtype=torch.float64)


def random_rotation(dim: int, g: torch.Generator) -> Tensor:
    """A Haar-random orthogonal ``(dim, dim)`` matrix in float64 (QR of a Gaussian matrix with
    the signs of R's diagonal moved into Q, so that the distribution is uniform)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


class DatasetInstances(Instances):
    """``B`` problems, each with its own dataset ``x (B, N, d)``, ``y (B, N, ...)``; ``ids`` (the
    instance ids) and ``key`` fix the minibatches. Subclasses define ``batch_loss``."""

    def __init__(self, x: Tensor, y: Tensor, ids: Tensor, key: int, init_params: Tensor,
                 batch_size: int) -> None:
        self.x = x
        self.y = y
        self.ids = ids
        self.key = key
        self.init_params = init_params
        self.minibatch_size = batch_size

    def batch_loss(self, params: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Per-instance mean loss ``(B,)`` of ``params`` on examples ``x (B, m, d)``,
        ``y (B, m, ...)``."""
        raise NotImplementedError

    def metrics(self, params: Tensor) -> dict[str, Tensor]:
        """Extra per-instance metrics on the whole dataset (none by default)."""
        return {}

    def repeat(self, times: int) -> DatasetInstances:
        """The batch tiled ``times`` times; a subclass's own attributes (say, its family) are
        shared, the per-instance tensors tiled."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.x = self.x.repeat(times, *[1] * (self.x.dim() - 1))
        new.y = self.y.repeat(times, *[1] * (self.y.dim() - 1))
        new.ids = self.ids.repeat(times)
        new.init_params = self.init_params.repeat(times, 1)
        return new

    def minibatch_indices(self, step: int) -> Tensor:
        """Indices ``(B, batch_size)`` into each instance's dataset at step ``step``."""
        step = int(step)
        if not 0 <= step < MAX_COUNTER:
            raise ValueError(f"step must lie in [0, 2**32), got {step}")
        return hash_indices(self.key, self.ids, step, self.minibatch_size, self.x.shape[1])

    def minibatch(self, step: int) -> tuple[Tensor, Tensor]:
        """Inputs ``(B, batch_size, d)`` and targets ``(B, batch_size, ...)`` of step ``step``."""
        idx = self.minibatch_indices(step)
        rows = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1)
        return self.x[rows, idx], self.y[rows, idx]

    def loss(self, params: Tensor, step: int) -> Tensor:
        x, y = self.minibatch(step)
        return self.batch_loss(params, x.to(params.dtype), y.to(params.dtype))

    @torch.no_grad()
    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        """``"loss"`` ``(B,)`` on each instance's whole dataset, and the family's metrics."""
        params = params.detach()
        x, y = self.x.to(params.dtype), self.y.to(params.dtype)
        return {"loss": self.batch_loss(params, x, y), **self.metrics(params)}


def draw_datasets(draw: Callable[[torch.Generator], tuple[Tensor, Tensor, Tensor]],
                  namespace: str, batch_size: int, seed: int, split: str, offset: int,
                  device: torch.device | str | None, dtype: torch.dtype,
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """``(x, y, init, ids, key)`` of instances ``offset .. offset + batch_size``: each one's
    ``draw(generator) -> (x, y, init)`` from its own generator (so an instance is the same in
    any batch), stacked on ``device`` in ``dtype``; ``key`` fixes the split's minibatches."""
    check_sample(batch_size, seed, split, offset, dtype)
    dev = torch.device("cpu") if device is None else torch.device(device)
    drawn = [draw(instance_generator(namespace, seed, split, i))
             for i in range(offset, offset + batch_size)]
    x, y, init = (torch.stack(ts).to(device=dev, dtype=dtype) for ts in zip(*drawn, strict=True))
    return x, y, init, make_ids(offset, batch_size, dev), stream_key(namespace, seed, split,
                                                                      "minibatch")


def make_ids(offset: int, batch_size: int, device: torch.device) -> Tensor:
    """Instance ids ``offset .. offset + batch_size - 1`` (int64), below the hash's counter
    range."""
    if offset + batch_size > MAX_COUNTER:
        raise ValueError(f"instance ids must stay below 2**32, got offset={offset}")
    return torch.arange(offset, offset + batch_size, device=device, dtype=torch.int64)
