"""Teacher-student regression: a student MLP fits a random teacher MLP's outputs (plus noise)
on Gaussian inputs, in minibatches.

Why in the distribution: a non-convex neural-network training problem of any width, depth and
activation that needs no dataset, whose best loss is known (the noise's variance), so a suite
can vary the architecture freely and still say how close an optimizer got.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks import mlp
from l2l.tasks.base import TaskFamily
from l2l.tasks.mnist_common import ACTIVATIONS, check_activation, check_init_std, positive_int
from l2l.tasks.synthetic_common import (
    DatasetInstances,
    check_number,
    draw_datasets,
    positive_ints,
)

INITS = ("fan_in", "normal")


class TeacherStudentInstances(DatasetInstances):
    """``B`` regressions: inputs ``x (B, N, input_dim)``, targets ``y (B, N, output_dim)``."""

    def __init__(self, family: TeacherStudentFamily, x: Tensor, y: Tensor, ids: Tensor,
                 key: int, init_params: Tensor) -> None:
        super().__init__(x, y, ids, key, init_params, family.batch_size)
        self.family = family

    def batch_loss(self, params: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Mean squared error over the examples and outputs, per instance."""
        err = self.family.predict(params, x) - y
        return (err * err).flatten(1).mean(dim=1)


class TeacherStudentFamily(TaskFamily):
    """A student MLP ``input_dim -> hidden_sizes... -> output_dim`` (``activation`` after every
    hidden layer) trained with the mean squared error on ``num_examples`` points per instance,
    in minibatches of ``batch_size``.

    Instance ``i`` draws, in float64 from its own generator and in this order: inputs
    ``x ~ N(0, I)``, the teacher MLP ``input_dim -> teacher_sizes... -> output_dim``
    (``teacher_activation``; weights ``N(0, 1/fan_in)``, biases ``N(0, 0.1^2)``), the noise
    ``eps ~ N(0, I)`` and the student's start. The targets are the teacher's outputs
    standardised over the instance's dataset (zero mean, unit variance per output), plus
    ``noise * eps``: a constant predictor's loss is about ``1 + noise^2`` and the best is about
    ``noise^2``. The student starts from ``init="fan_in"`` (``l2l.tasks.mlp.fan_in_scale``) or
    ``init="normal"`` (every parameter ``N(0, init_std^2)``). ``evaluate`` gives the loss on the
    whole dataset. Flat layout and ``param_shapes``: ``l2l.tasks.mlp`` (``W0, b0, W1, ...``).
    """

    name = "teacher_student"
    _namespace = "teacher_student"

    def __init__(self, input_dim: int = 16, hidden_sizes: Sequence[int] = (32,),
                 activation: str = "tanh", output_dim: int = 1,
                 teacher_sizes: Sequence[int] = (32,), teacher_activation: str = "tanh",
                 num_examples: int = 1024, batch_size: int = 32, noise: float = 0.1,
                 init: str = "fan_in", init_std: float = 0.01) -> None:
        self.input_dim = positive_int("input_dim", input_dim)
        self.hidden_sizes = positive_ints("hidden_sizes", hidden_sizes, allow_empty=True)
        self.activation = check_activation(activation)
        self.output_dim = positive_int("output_dim", output_dim)
        self.teacher_sizes = positive_ints("teacher_sizes", teacher_sizes, allow_empty=True)
        self.teacher_activation = check_activation(teacher_activation)
        self.num_examples = positive_int("num_examples", num_examples)
        if self.num_examples < 2:
            raise ValueError(f"num_examples must be >= 2 (targets are standardised), got "
                             f"{num_examples}")
        self.batch_size = positive_int("batch_size", batch_size)
        self.noise = check_number("noise", noise, 0.0, 1e3)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")
        self.init = init
        self.init_std = check_init_std(init_std)
        self.shapes = mlp.layer_shapes((self.input_dim, *self.hidden_sizes, self.output_dim))
        self.teacher_shapes = mlp.layer_shapes(
            (self.input_dim, *self.teacher_sizes, self.output_dim))

    def __repr__(self) -> str:
        return (f"TeacherStudentFamily(input_dim={self.input_dim}, "
                f"hidden_sizes={self.hidden_sizes}, activation={self.activation!r}, "
                f"output_dim={self.output_dim}, teacher_sizes={self.teacher_sizes}, "
                f"teacher_activation={self.teacher_activation!r}, "
                f"num_examples={self.num_examples}, batch_size={self.batch_size}, "
                f"noise={self.noise:g}, init={self.init!r}, init_std={self.init_std})")

    @property
    def num_params(self) -> int:
        return mlp.count_params(self.shapes)

    @property
    def layout(self) -> ParamLayout:
        return mlp.layout(self.shapes)

    def predict(self, params: Tensor, x: Tensor) -> Tensor:
        """Student outputs ``(B, m, output_dim)`` on each instance's inputs ``x (B, m, d)``."""
        if params.dim() != 2 or params.shape[1] != self.num_params:
            raise ValueError(f"params must have shape (B, {self.num_params}), got "
                             f"{tuple(params.shape)}")
        return mlp.forward(mlp.unflatten(params, self.shapes), x, ACTIVATIONS[self.activation])

    def _draw(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        N = self.num_examples
        x = torch.randn(N, self.input_dim, generator=g, dtype=torch.float64)
        parts = []
        for i, o in self.teacher_shapes:
            parts += [torch.randn(i * o, generator=g, dtype=torch.float64) / i**0.5,
                      torch.randn(o, generator=g, dtype=torch.float64) * 0.1]
        teacher = mlp.unflatten(torch.cat(parts).unsqueeze(0), self.teacher_shapes)
        t = mlp.forward(teacher, x.unsqueeze(0), ACTIVATIONS[self.teacher_activation])[0]
        t = (t - t.mean(dim=0)) / t.std(dim=0).clamp_min(1e-12)
        y = t + self.noise * torch.randn(t.shape, generator=g, dtype=torch.float64)
        scale = (mlp.fan_in_scale(self.shapes, self.activation) if self.init == "fan_in"
                 else self.init_std)
        init = torch.randn(self.num_params, generator=g, dtype=torch.float64) * scale
        return x, y, init

    def sample(self, batch_size: int, seed: int, split: str = "train", *, offset: int = 0,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> TeacherStudentInstances:
        x, y, init, ids, key = draw_datasets(self._draw, self._namespace, batch_size, seed,
                                             split, offset, device, dtype)
        return TeacherStudentInstances(self, x, y, ids, key, init)
