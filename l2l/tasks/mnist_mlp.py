"""Small fully connected MNIST classifiers as optimizees (the paper's section 3.2).

A batch of ``B`` instances is trained at once: every instance has its own flat parameter vector
(a row of ``params (B, n)``) and its own minibatch at every step, and the forward pass of the
whole batch is one ``torch.baddbmm`` per layer. Data, splits, minibatches, the loss and
evaluation are shared with the other MNIST families (``l2l.tasks.mnist_common``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.mnist_common import (
    ACTIVATIONS,
    MNISTFamily,
    MNISTInstances,
    check_activation,
    check_init_std,
    hash_indices,
    mix32,
    positive_int,
)
from l2l.tasks.mnist_data import IMAGE_SIZE, NUM_CLASSES

#: the instances of every MNIST family are ``MNISTInstances``; this name is kept for old imports
MNISTMLPInstances = MNISTInstances

__all__ = ["ACTIVATIONS", "MNISTMLPFamily", "MNISTMLPInstances", "hash_indices", "mix32"]


class MNISTMLPFamily(MNISTFamily):
    """MLPs ``784 -> hidden_sizes... -> 10`` with softmax cross-entropy on MNIST minibatches.

    The loss at step ``t`` is the mean cross-entropy over a minibatch of ``batch_size`` images
    drawn (with replacement) from the split the instances were sampled from. Every weight and
    bias starts ``N(0, init_std^2)`` (official code; the paper gives no initialisation). The
    hidden activation is applied after every hidden layer, never after the output layer.

    Flat parameter layout of an instance (row of ``params (B, n)``): for each layer ``k`` in
    order, its weight matrix ``W_k`` of shape ``(in_k, out_k)`` in row-major order (so the layer
    computes ``h @ W_k + b_k``; ``W_k`` is the transpose of ``nn.Linear.weight``), then its bias
    ``b_k`` of shape ``(out_k,)``. ``unflatten`` / ``flatten`` convert between the two forms.
    With the default ``(20,)``: 784*20 + 20 + 20*10 + 10 = 15,910 parameters.

    ``hidden_sizes`` must hold at least one layer: an empty list is rejected (it would silently
    ignore ``activation`` and give a convex problem, softmax regression, which is its own family,
    ``mnist_logreg``; a config typo should not turn into a different experiment).

    The paper's generalisation variants (40 units, 2 layers, ReLU) are presets in
    ``conf/task/mnist_*.yaml``, not names known to this module.
    """

    name = "mnist_mlp"
    #: seeding namespace, fixed for the class: all variants share init seeds and minibatches
    _namespace = "mnist_mlp"

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (20,),
        activation: str = "sigmoid",
        batch_size: int = 128,
        init_std: float = 0.01,
        data_dir: str | Path | None = None,
        download: bool = True,
    ) -> None:
        if isinstance(hidden_sizes, (int, str)):
            raise ValueError(
                f"hidden_sizes must be a sequence of ints such as (20,), got {hidden_sizes!r}"
            )
        hidden = tuple(hidden_sizes)
        if not hidden:
            raise ValueError(
                "hidden_sizes is empty: MNISTMLPFamily needs at least one hidden layer "
                "(for softmax regression without hidden layers use the mnist_logreg family)"
            )
        for h in hidden:
            positive_int("every hidden size", h)
        check_activation(activation)
        super().__init__(batch_size=batch_size, data_dir=data_dir, download=download)
        self.hidden_sizes = hidden
        self.activation = activation
        self.init_std = check_init_std(init_std)
        self.layer_sizes = (IMAGE_SIZE, *hidden, NUM_CLASSES)
        self.shapes = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True))
        self._num_params = sum(i * o + o for i, o in self.shapes)
        self.eval_width = max(self.layer_sizes[1:])

    def __repr__(self) -> str:
        return (
            f"MNISTMLPFamily(hidden_sizes={self.hidden_sizes}, activation={self.activation!r}, "
            f"batch_size={self.batch_size}, init_std={self.init_std})"
        )

    def init_scale(self) -> float:
        return self.init_std

    # -- parameters ---------------------------------------------------------------------------

    @property
    def layout(self) -> ParamLayout:
        """``W0 (in, out), b0, W1, b1, ...``; a weight's fan-in is its first dimension."""
        names, shapes, fan_ins = [], [], []
        for k, (i, o) in enumerate(self.shapes):
            names += [f"W{k}", f"b{k}"]
            shapes += [(i, o), (o,)]
            fan_ins += [i, 1]
        return ParamLayout(tuple(names), tuple(shapes), tuple(fan_ins))

    def unflatten(self, params: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Views ``[(W (B, in, out), b (B, out)), ...]`` of flat ``params (B, n)``, per layer."""
        self.check_params(params)
        B = params.shape[0]
        layers, off = [], 0
        for i, o in self.shapes:
            W = params[:, off : off + i * o].reshape(B, i, o)
            off += i * o
            b = params[:, off : off + o]
            off += o
            layers.append((W, b))
        return layers

    def flatten(self, layers: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        """Inverse of ``unflatten``: ``(B, n)`` from ``[(W (B, in, out), b (B, out)), ...]``."""
        parts = []
        for W, b in layers:
            parts += [W.reshape(W.shape[0], -1), b]
        return torch.cat(parts, dim=1)

    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on its own inputs ``x (B, m, 784)``."""
        act = ACTIVATIONS[self.activation]
        layers = self.unflatten(params)
        h = x
        for k, (W, b) in enumerate(layers):
            h = torch.baddbmm(b.unsqueeze(1), h, W)
            if k < len(layers) - 1:
                h = act(h)
        return h

    def logits_shared(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on the same inputs ``x (m, 784)``."""
        act = ACTIVATIONS[self.activation]
        layers = self.unflatten(params)
        (W0, b0), rest = layers[0], layers[1:]
        B, i0, o0 = W0.shape
        # one GEMM for all instances' first layer: (m, 784) @ (784, B * o0)
        h = x @ W0.permute(1, 0, 2).reshape(i0, B * o0)
        h = h.reshape(x.shape[0], B, o0).permute(1, 0, 2) + b0.unsqueeze(1)
        for W, b in rest:
            h = torch.baddbmm(b.unsqueeze(1), act(h), W)
        return h
