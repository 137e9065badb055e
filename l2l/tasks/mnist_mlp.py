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
from l2l.tasks import mlp
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
from l2l.tasks.mnist_data import NUM_CLASSES

#: the instances of every MNIST family are ``MNISTInstances``; this name is kept for old imports
MNISTMLPInstances = MNISTInstances

__all__ = ["ACTIVATIONS", "MNISTMLPFamily", "MNISTMLPInstances", "hash_indices", "mix32"]


class MNISTMLPFamily(MNISTFamily):
    """MLPs ``784 -> hidden_sizes... -> 10`` with softmax cross-entropy on MNIST minibatches
    (``resolution**2 -> ...`` on images pooled to ``resolution x resolution``).

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

    ``resolution`` (default 28, the full images) average-pools every image to ``resolution x
    resolution`` first (``l2l.tasks.mnist_common``): 8 x 8 and 14 x 14 MLPs are the cheap
    small-image nets of learned-optimizer task suites (Celo trains on 8 x 8 MNIST). It is a
    keyword of this family, not a family of its own, because nothing else changes: data,
    splits, minibatches, layout and evaluation are the same, only the input size shrinks.
    ``dataset`` (default ``mnist``) trains on Fashion-MNIST, KMNIST or grey CIFAR-10 instead
    (``l2l.tasks.image_data``), the same way.

    The paper's generalisation variants (40 units, 2 layers, ReLU) and the small-image MLPs are
    presets in ``conf/task/mnist_*.yaml``, not names known to this module.
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
        resolution: int = 28,
        dataset: str = "mnist",
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
        super().__init__(batch_size=batch_size, data_dir=data_dir, download=download,
                         resolution=resolution, dataset=dataset)
        self.hidden_sizes = hidden
        self.activation = activation
        self.init_std = check_init_std(init_std)
        self.layer_sizes = (self.input_size, *hidden, NUM_CLASSES)
        self.shapes = mlp.layer_shapes(self.layer_sizes)
        self._num_params = mlp.count_params(self.shapes)
        self.eval_width = max(self.layer_sizes[1:])

    def __repr__(self) -> str:
        return (
            f"MNISTMLPFamily(hidden_sizes={self.hidden_sizes}, activation={self.activation!r}, "
            f"batch_size={self.batch_size}, init_std={self.init_std}, "
            f"resolution={self.resolution}"
            + (f", dataset={self.dataset_name!r})" if self.dataset_name != "mnist" else ")")
        )

    def init_scale(self) -> float:
        return self.init_std

    # -- parameters ---------------------------------------------------------------------------

    @property
    def layout(self) -> ParamLayout:
        """``W0 (in, out), b0, W1, b1, ...`` (``l2l.tasks.mlp``)."""
        return mlp.layout(self.shapes)

    def unflatten(self, params: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Views ``[(W (B, in, out), b (B, out)), ...]`` of flat ``params (B, n)``, per layer."""
        self.check_params(params)
        return mlp.unflatten(params, self.shapes)

    def flatten(self, layers: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        """Inverse of ``unflatten``: ``(B, n)`` from ``[(W (B, in, out), b (B, out)), ...]``."""
        return mlp.flatten(layers)

    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on its own inputs ``x (B, m, input_size)``."""
        return mlp.forward(self.unflatten(params), x, ACTIVATIONS[self.activation])

    def logits_shared(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on the same inputs ``x (m, input_size)``."""
        act = ACTIVATIONS[self.activation]
        layers = self.unflatten(params)
        (W0, b0), rest = layers[0], layers[1:]
        B, i0, o0 = W0.shape
        # one GEMM for all instances' first layer: (m, input_size) @ (input_size, B * o0)
        h = x @ W0.permute(1, 0, 2).reshape(i0, B * o0)
        h = h.reshape(x.shape[0], B, o0).permute(1, 0, 2) + b0.unsqueeze(1)
        for W, b in rest:
            h = torch.baddbmm(b.unsqueeze(1), act(h), W)
        return h
