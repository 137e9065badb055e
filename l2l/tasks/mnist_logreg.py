"""Multinomial logistic regression on MNIST: a convex optimizee.

Why a convex MNIST task: it has the same data, minibatches and loss as the MLP
(``l2l.tasks.mnist_common``) but a single global optimum, so a learned optimizer's behaviour on
it separates "optimizes well" from "copes with non-convexity". The whole batch's forward pass is
one ``torch.baddbmm``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.mnist_common import MNISTFamily, check_init_std
from l2l.tasks.mnist_data import IMAGE_SIZE, NUM_CLASSES


class MNISTLogRegFamily(MNISTFamily):
    """Softmax regression ``logits = x @ W + b`` on MNIST minibatches (convex).

    Flat parameter layout of an instance: ``W`` of shape ``(784, 10)`` row-major (the
    transpose of ``nn.Linear.weight``), then ``b`` of shape ``(10,)``: 7,850 parameters. Every
    parameter starts ``N(0, init_std^2)``; ``init_std=0`` starts every instance at zero (they
    then differ only in their minibatches).
    """

    name = "mnist_logreg"
    _namespace = "mnist_logreg"

    def __init__(
        self,
        batch_size: int = 128,
        init_std: float = 0.01,
        data_dir: str | Path | None = None,
        download: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, data_dir=data_dir, download=download)
        self.init_std = check_init_std(init_std)
        self._num_params = IMAGE_SIZE * NUM_CLASSES + NUM_CLASSES
        self.eval_width = NUM_CLASSES

    def __repr__(self) -> str:
        return f"MNISTLogRegFamily(batch_size={self.batch_size}, init_std={self.init_std})"

    def init_scale(self) -> float:
        return self.init_std

    @property
    def layout(self) -> ParamLayout:
        """``W (784, 10)`` (fan-in 784), then ``b (10,)``."""
        return ParamLayout(("W", "b"), ((IMAGE_SIZE, NUM_CLASSES), (NUM_CLASSES,)),
                           (IMAGE_SIZE, 1))

    def unflatten(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Views ``W (B, 784, 10)`` and ``b (B, 10)`` of flat ``params (B, 7850)``."""
        self.check_params(params)
        B, k = params.shape[0], IMAGE_SIZE * NUM_CLASSES
        return params[:, :k].reshape(B, IMAGE_SIZE, NUM_CLASSES), params[:, k:]

    def flatten(self, W: Tensor, b: Tensor) -> Tensor:
        """Inverse of ``unflatten``: ``(B, 7850)`` from ``W (B, 784, 10)`` and ``b (B, 10)``."""
        return torch.cat([W.reshape(W.shape[0], -1), b], dim=1)

    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on its own inputs ``x (B, m, 784)``."""
        W, b = self.unflatten(params)
        return torch.baddbmm(b.unsqueeze(1), x, W)

    def logits_shared(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` on the same inputs ``x (m, 784)``: one GEMM for all instances."""
        W, b = self.unflatten(params)
        B = W.shape[0]
        h = x @ W.permute(1, 0, 2).reshape(IMAGE_SIZE, B * NUM_CLASSES)
        return h.reshape(x.shape[0], B, NUM_CLASSES).permute(1, 0, 2) + b.unsqueeze(1)
