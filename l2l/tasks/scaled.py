"""Random problem scaling (Lv et al., 2017): the same function under a random per-coordinate scale.

Training on ``g(theta) = f(c * theta)`` started at ``theta_0 / c`` visits exactly the losses of
``f`` from ``theta_0``, but every gradient coordinate is multiplied by ``c_i`` and every step's
effect by ``c_i`` too. With ``c = exp(U[-s, s])`` redrawn for every task, an optimizer cannot
memorise its training task's gradient scales; it has to adapt to them, which is what transfers to
new architectures and activations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2l.tasks.base import Instances
from l2l.tasks.seeding import instance_generator


class ScaledInstances(Instances):
    """``f(scale * theta)`` from ``theta_0 / scale``; ``scale`` has the parameters' shape."""

    def __init__(self, inner: Instances, scale: Tensor) -> None:
        if scale.shape != inner.init_params.shape:
            raise ValueError(f"scale must have shape {tuple(inner.init_params.shape)}, got "
                             f"{tuple(scale.shape)}")
        self.inner = inner
        self.scale = scale
        self.init_params = inner.init_params / scale

    def loss(self, params: Tensor, step: int) -> Tensor:
        return self.inner.loss(params * self.scale, step)

    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        return self.inner.evaluate(params * self.scale)

    def held_out(self) -> ScaledInstances:
        return ScaledInstances(self.inner.held_out(), self.scale)

    def repeat(self, times: int) -> ScaledInstances:
        return ScaledInstances(self.inner.repeat(times), self.scale.repeat(times, 1))

    @classmethod
    def concat(cls, parts: list[Instances]) -> ScaledInstances:
        inners = [p.inner for p in parts]
        kinds = {type(i) for i in inners}
        if len(kinds) != 1:
            raise NotImplementedError("scaled instances of different families do not merge")
        return cls(kinds.pop().concat(inners), torch.cat([p.scale for p in parts]))


def random_scale(instances: Instances, log_range: float, seed: int, split: str,
                 offset: int) -> Instances:
    """``instances`` rescaled by ``c = exp(U[-log_range, log_range])`` per coordinate; instance
    ``i``'s scale depends on ``(seed, split, offset + i)`` only. ``log_range = 0``: unchanged."""
    if log_range < 0:
        raise ValueError(f"meta.scale_range must be >= 0, got {log_range}")
    if log_range == 0:
        return instances
    B, n = instances.init_params.shape
    rows = [torch.rand(n, generator=instance_generator("scale", seed, split, offset + i),
                       dtype=torch.float64) for i in range(B)]
    log_c = (torch.stack(rows) * 2 - 1) * log_range
    scale = log_c.exp().to(instances.init_params)
    return ScaledInstances(instances, scale)
