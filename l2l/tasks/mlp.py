"""Batched MLPs on flat parameter vectors: the layout every MLP task family shares.

An MLP with layer sizes ``(d_0, ..., d_L)`` stores, for each layer ``k`` in order, its weight
``W_k`` of shape ``(d_k, d_{k+1})`` in row-major order (the layer computes ``h @ W_k + b_k``, so
``W_k`` is the transpose of ``nn.Linear.weight``), then its bias ``b_k`` of shape
``(d_{k+1},)``. ``B`` instances are a ``(B, n)`` batch, and the forward pass of the batch is one
``torch.baddbmm`` per layer. The MNIST MLPs, the teacher-student regression and the autoencoder
all use this module, so their layouts and ``layout`` cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from l2l.layout import ParamLayout

Shapes = list[tuple[int, int]]


def layer_shapes(sizes: Sequence[int]) -> Shapes:
    """``[(in, out), ...]`` of the layers of an MLP with layer sizes ``sizes``."""
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def count_params(shapes: Shapes) -> int:
    """The length of the flat parameter vector of layers ``shapes``."""
    return sum(i * o + o for i, o in shapes)


def layout(shapes: Shapes) -> ParamLayout:
    """The tensors of the flat vector in order: ``W0 (in, out)``, ``b0 (out,)``, ``W1``, ...;
    weights are stored ``(in, out)``, so a weight's fan-in is its first dimension."""
    names, dims, fan_ins = [], [], []
    for k, (i, o) in enumerate(shapes):
        names += [f"W{k}", f"b{k}"]
        dims += [(i, o), (o,)]
        fan_ins += [i, 1]
    return ParamLayout(tuple(names), tuple(dims), tuple(fan_ins))


def unflatten(params: Tensor, shapes: Shapes) -> list[tuple[Tensor, Tensor]]:
    """Views ``[(W (B, in, out), b (B, out)), ...]`` of flat ``params (B, n)``."""
    B = params.shape[0]
    layers, off = [], 0
    for i, o in shapes:
        W = params[:, off : off + i * o].reshape(B, i, o)
        off += i * o
        layers.append((W, params[:, off : off + o]))
        off += o
    return layers


def flatten(layers: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """Inverse of ``unflatten``: ``(B, n)`` from ``[(W (B, in, out), b (B, out)), ...]``."""
    parts = []
    for W, b in layers:
        parts += [W.reshape(W.shape[0], -1), b]
    return torch.cat(parts, dim=1)


def forward(
    layers: Sequence[tuple[Tensor, Tensor]], x: Tensor, act: Callable[[Tensor], Tensor]
) -> Tensor:
    """Outputs ``(B, m, d_L)`` of every instance on its own inputs ``x (B, m, d_0)``; ``act``
    follows every layer but the last."""
    h = x
    for k, (W, b) in enumerate(layers):
        h = torch.baddbmm(b.unsqueeze(1), h, W)
        if k < len(layers) - 1:
            h = act(h)
    return h


def fan_in_scale(shapes: Shapes, activation: str) -> Tensor:
    """Per-parameter init std ``(n,)`` in float64: every hidden weight ``gain / sqrt(fan_in)``
    (``torch.nn.init.calculate_gain`` of ``activation``: He for ReLU), the output layer's weights
    ``1 / sqrt(fan_in)``, every bias 0; so signals neither vanish nor explode with depth."""
    gain = torch.nn.init.calculate_gain(activation)
    parts = []
    for k, (i, o) in enumerate(shapes):
        g = gain if k < len(shapes) - 1 else 1.0
        parts += [torch.full((i * o,), g / math.sqrt(i), dtype=torch.float64),
                  torch.zeros(o, dtype=torch.float64)]
    return torch.cat(parts)
