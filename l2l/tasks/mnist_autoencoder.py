"""A small MLP autoencoder on MNIST: reconstruct each (pooled) image through a narrow code.

Why in the distribution: an unsupervised objective with a wide output layer and a bottleneck,
so its curvature and gradient statistics differ from the classifiers' (every output unit gets
a gradient at every step, and the loss has a non-zero floor), while it shares MNIST's data,
splits and hashed minibatches with the classifier families (``l2l.tasks.mnist_common``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks import mlp
from l2l.tasks.mnist_common import (
    ACTIVATIONS,
    EVAL_BUDGET,
    MNISTFamily,
    MNISTInstances,
    check_activation,
    check_init_std,
)
from l2l.tasks.synthetic_common import positive_ints

LOSSES = ("bce", "mse")
INITS = ("fan_in", "normal")


class MNISTAutoencoderInstances(MNISTInstances):
    """``B`` autoencoders sharing a split of MNIST; the loss reads the minibatch's images only."""

    family: MNISTAutoencoderFamily

    def loss(self, params: Tensor, step: int) -> Tensor:
        x = self.images[self.minibatch_indices(step)].to(params.dtype)
        return self.family.reconstruction_loss(self.family.logits(params, x), x)

    @torch.no_grad()
    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        """Mean reconstruction ``"loss"`` and mean squared error ``"mse"`` ``(B,)`` on the whole
        split (``"mse"`` is the same as ``"loss"`` for ``loss="mse"``)."""
        params = params.detach()
        B, n = params.shape[0], self.images.shape[0]
        chunk = max(1, EVAL_BUDGET // (B * self.family.eval_width))
        loss_sum, mse_sum = params.new_zeros(B), params.new_zeros(B)
        for start in range(0, n, chunk):
            x = self.images[start : start + chunk].to(params.dtype)
            out = self.family.logits_shared(params, x)
            m = x.shape[0]
            loss_sum += self.family.reconstruction_loss(out, x) * m
            mse_sum += ((torch.sigmoid(out) - x) ** 2).mean(dim=-1).sum(dim=1)
        return {"loss": loss_sum / n, "mse": mse_sum / n}


class MNISTAutoencoderFamily(MNISTFamily):
    """MLP autoencoders ``r*r -> hidden_sizes... -> r*r`` on MNIST images pooled to ``r x r``
    (``resolution``; default 14, so 196 -> 32 -> 196 and 12,772 parameters).

    The output layer gives logits; the reconstruction is ``sigmoid(logits)``. The loss at step
    ``t`` is the minibatch's mean over images and pixels of the binary cross-entropy between
    the reconstruction and the image (``loss="bce"``, pixel intensities in [0, 1] as targets;
    its floor is the images' entropy, not 0) or their squared error (``loss="mse"``). The
    hidden ``activation`` follows every hidden layer. The parameters start from
    ``init="fan_in"`` (``l2l.tasks.mlp.fan_in_scale``) or ``"normal"`` (``N(0, init_std^2)``).
    Layout and ``param_shapes``: ``l2l.tasks.mlp``.
    """

    name = "mnist_autoencoder"
    _namespace = "mnist_autoencoder"
    instances_class = MNISTAutoencoderInstances

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        loss: str = "bce",
        resolution: int = 14,
        batch_size: int = 128,
        init: str = "fan_in",
        init_std: float = 0.01,
        data_dir: str | Path | None = None,
        download: bool = True,
    ) -> None:
        hidden = positive_ints("hidden_sizes", hidden_sizes)
        check_activation(activation)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")
        super().__init__(batch_size=batch_size, data_dir=data_dir, download=download,
                         resolution=resolution)
        self.hidden_sizes = hidden
        self.activation = activation
        self.loss = loss
        self.init = init
        self.init_std = check_init_std(init_std)
        self.layer_sizes = (self.input_size, *hidden, self.input_size)
        self.shapes = mlp.layer_shapes(self.layer_sizes)
        self._num_params = mlp.count_params(self.shapes)
        self.eval_width = max(self.layer_sizes[1:])

    def __repr__(self) -> str:
        return (f"MNISTAutoencoderFamily(hidden_sizes={self.hidden_sizes}, "
                f"activation={self.activation!r}, loss={self.loss!r}, "
                f"resolution={self.resolution}, batch_size={self.batch_size}, "
                f"init={self.init!r}, init_std={self.init_std})")

    @property
    def layout(self) -> ParamLayout:
        return mlp.layout(self.shapes)

    def init_scale(self) -> float | Tensor:
        if self.init == "normal":
            return self.init_std
        return mlp.fan_in_scale(self.shapes, self.activation)

    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Reconstruction logits ``(B, m, r*r)`` of every instance on its own images
        ``x (B, m, r*r)``."""
        self.check_params(params)
        return mlp.forward(mlp.unflatten(params, self.shapes), x, ACTIVATIONS[self.activation])

    def reconstruction_loss(self, logits: Tensor, x: Tensor) -> Tensor:
        """Per-instance mean loss ``(B,)`` of reconstruction ``logits`` of images ``x``
        (``(B, m, r*r)``, or ``x (m, r*r)`` shared by all instances)."""
        x = x.expand_as(logits)
        if self.loss == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            per_pixel = (torch.sigmoid(logits) - x) ** 2
        return per_pixel.flatten(1).mean(dim=1)
