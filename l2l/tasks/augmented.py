"""Task augmentation: any family under a random per-tensor reparametrisation and loss scale.

Why in the distribution: a learned optimizer meta-trained on a few families learns their
gradient scales by heart; Celo's and VeLO's augmentations redraw those scales for every
trajectory so that it has to adapt to them instead. Here instance ``i`` of ``(seed, split)``
optimizes

    g(theta) = a * f(c ⊙ theta)   from   theta_0 = theta_0^f / c,

with ``c`` constant on each tensor of the base family's ``param_shapes`` (one factor per weight
matrix and per bias, as in Celo), ``c_k = exp(U[-param_scale_range, param_scale_range])``, and
``a = exp(U[-loss_scale_range, loss_scale_range])``. The trajectory visits the base problem's
points, the optimum's loss is ``a`` times the base optimum's (unchanged for ``a = 1``), but
every tensor's gradient is scaled by ``a * c_k`` and every step's effect by ``c_k``. End-of-run
metrics (``evaluate``) are the base problem's at ``c ⊙ theta``, unscaled. A base family without
``param_shapes`` is one tensor (one ``c`` per instance).

Horizon variation is a meta-training setting, not a property of a task: ``meta.lengths=log_uniform``
draws each episode's length (per particle for PES and ES, per task for TBPTT).
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.base import Instances, TaskFamily, check_sample
from l2l.tasks.scaled import ScaledInstances
from l2l.tasks.seeding import instance_generator
from l2l.tasks.synthetic_common import check_number


class LossScaledInstances(Instances):
    """``a * f(theta)`` with a per-instance factor ``a (B,)``; metrics stay ``f``'s."""

    def __init__(self, inner: Instances, factor: Tensor) -> None:
        if factor.shape != (inner.batch_size,):
            raise ValueError(f"factor must have shape ({inner.batch_size},), got "
                             f"{tuple(factor.shape)}")
        self.inner = inner
        self.factor = factor
        self.init_params = inner.init_params

    def loss(self, params: Tensor, step: int) -> Tensor:
        return self.factor * self.inner.loss(params, step)

    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        return self.inner.evaluate(params)

    def held_out(self) -> LossScaledInstances:
        return LossScaledInstances(self.inner.held_out(), self.factor)

    def repeat(self, times: int) -> LossScaledInstances:
        return LossScaledInstances(self.inner.repeat(times), self.factor.repeat(times))


class AugmentedFamily(TaskFamily):
    """The family ``task`` (a family, or from a config a mapping ``{family, kwargs, name}``)
    with a random per-tensor parameter scale and a random loss scale per instance (see the
    module's docstring). Both ranges 0: the base family unchanged."""

    def __init__(self, task: TaskFamily, param_scale_range: float = 1.0,
                 loss_scale_range: float = 0.0) -> None:
        self.base = task
        if not isinstance(self.base, TaskFamily):
            raise ValueError(f"task must be a task family or a mapping {{family, kwargs, name}} "
                             f"(which l2l.tasks.build_task builds), got {task!r}")
        self.param_scale_range = check_number("param_scale_range", param_scale_range, 0.0, 10.0)
        self.loss_scale_range = check_number("loss_scale_range", loss_scale_range, 0.0, 10.0)
        self.name = f"augmented({self.base.name})"

    def __repr__(self) -> str:
        return (f"AugmentedFamily({self.base!r}, param_scale_range={self.param_scale_range:g}, "
                f"loss_scale_range={self.loss_scale_range:g})")

    @property
    def num_params(self) -> int:
        return self.base.num_params

    @property
    def layout(self) -> ParamLayout:
        """The base family's tensors; one flat tensor for a mixture whose components' layouts
        differ (it has no single layout)."""
        try:
            return self.base.layout
        except ValueError:
            return ParamLayout.flat(self.base.num_params)

    def tensor_sizes(self) -> list[int]:
        sizes = [int(torch.Size(shape).numel()) for _, shape in self.param_shapes]
        if sum(sizes) != self.num_params:
            raise ValueError(f"{self.base.name}'s param_shapes hold {sum(sizes)} parameters, "
                             f"not its {self.num_params}")
        return sizes

    def factors(self, batch_size: int, seed: int, split: str, offset: int
                ) -> tuple[Tensor, Tensor]:
        """Per-coordinate parameter scales ``c (B, n)`` and loss scales ``a (B,)`` in float64:
        instance ``i``'s depend on ``(seed, split, offset + i)`` only."""
        sizes = self.tensor_sizes()
        counts = torch.tensor(sizes)
        cs, As = [], []
        for i in range(offset, offset + batch_size):
            g = instance_generator("augment/" + self.base.name, seed, split, i)
            u = torch.rand(len(sizes) + 1, generator=g, dtype=torch.float64) * 2 - 1
            cs.append(torch.repeat_interleave((u[:-1] * self.param_scale_range).exp(), counts))
            As.append((u[-1] * self.loss_scale_range).exp())
        return torch.stack(cs), torch.stack(As)

    def sample(self, batch_size: int, seed: int, split: str = "train", *, offset: int = 0,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Instances:
        check_sample(batch_size, seed, split, offset, dtype)
        inner = self.base.sample(batch_size, seed, split, offset=offset, device=device,
                                 dtype=dtype)
        c, a = self.factors(batch_size, seed, split, offset)
        out: Instances = inner
        if self.param_scale_range:
            out = ScaledInstances(out, c.to(inner.init_params))
        if self.loss_scale_range:
            out = LossScaledInstances(out, a.to(inner.init_params))
        return out
