"""Small convolutional MNIST classifiers as optimizees, batched over instances.

Why: the paper tests its optimizer on MLPs only; a CNN has differently structured parameters
(small shared filters next to a large linear head) and checks whether a learned optimizer
transfers across architectures. Data, splits, minibatches, the loss and evaluation are shared
with the other MNIST families (``l2l.tasks.mnist_common``).

Batching: the ``B`` instances are stacked along the channel axis and each convolution is one
grouped ``F.conv2d`` call (``groups=B``), so a layer of all instances costs one call, as the
MLP's ``baddbmm`` does. ``benchmarks/bench_cnn_batching.py`` compares this with
``torch.func.vmap`` over a per-instance ``F.conv2d`` (docs/speed.md quotes the result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.mnist_common import (
    ACTIVATIONS,
    MNISTFamily,
    check_activation,
    check_init_std,
    positive_int,
)
from l2l.tasks.mnist_data import NUM_CLASSES

SIDE = 28  # MNIST images are 28 x 28
INITS = ("fan_in", "normal")


class MNISTCNNFamily(MNISTFamily):
    """CNNs: ``len(channels)`` blocks of [3x3 conv ('same' padding) -> activation -> 2x2 max
    pool], then a linear head to 10 classes, with softmax cross-entropy on MNIST minibatches.

    With the defaults ``channels=(4, 8)``: 28x28x1 -> conv 4 -> pool 14x14 -> conv 8 -> pool
    7x7 -> linear 392 -> 10, 4,266 parameters.

    Flat parameter layout of an instance (row of ``params (B, n)``): for each conv block, its
    weight ``(c_out, c_in, k, k)`` row-major (exactly ``nn.Conv2d.weight``) then its bias
    ``(c_out,)``; then the head's ``W (F, 10)`` row-major (the transpose of
    ``nn.Linear.weight``; features in ``nn.Flatten``'s (channel, row, column) order) and its
    bias ``(10,)``. ``unflatten`` / ``flatten`` convert between the two forms.

    Initialisation: ``init="fan_in"`` (default) draws every weight ``N(0, gain^2 / fan_in)``
    (He for ReLU, ``torch.nn.init.calculate_gain`` of the activation; gain 1 for the head) and
    starts the biases at zero, so that signals neither vanish nor explode through the blocks;
    ``init="normal"`` draws every parameter ``N(0, init_std^2)`` as the paper's MLP does.
    """

    name = "mnist_cnn"
    _namespace = "mnist_cnn"

    def __init__(
        self,
        channels: Sequence[int] = (4, 8),
        kernel_size: int = 3,
        activation: str = "relu",
        batch_size: int = 128,
        init: str = "fan_in",
        init_std: float = 0.01,
        data_dir: str | Path | None = None,
        download: bool = True,
    ) -> None:
        if isinstance(channels, (int, str)):
            raise ValueError(
                f"channels must be a sequence of ints such as (4, 8), got {channels!r}"
            )
        chans = tuple(channels)
        if not chans:
            raise ValueError("channels is empty: MNISTCNNFamily needs at least one conv block")
        for c in chans:
            positive_int("every channel count", c)
        positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd ('same' padding keeps the image size), got {kernel_size}"
            )
        check_activation(activation)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")
        super().__init__(batch_size=batch_size, data_dir=data_dir, download=download)
        self.channels = chans
        self.kernel_size = kernel_size
        self.activation = activation
        self.init = init
        self.init_std = check_init_std(init_std)
        # spatial side before each block's pooling, and after the last one
        sides = [SIDE]
        for _ in chans:
            sides.append(sides[-1] // 2)
        if sides[-1] < 1:
            raise ValueError(
                f"{len(chans)} conv blocks pool a 28x28 image to nothing: use at most 4"
            )
        self.sides = tuple(sides)
        self.features = chans[-1] * sides[-1] ** 2
        ins = (1, *chans[:-1])
        self.conv_shapes = [(co, ci, kernel_size, kernel_size) for ci, co in zip(ins, chans,
                                                                                 strict=True)]
        self._num_params = sum(math.prod(s) + s[0] for s in self.conv_shapes) + (
            self.features * NUM_CLASSES + NUM_CLASSES
        )
        self.eval_width = max(c * s * s for c, s in zip(chans, sides, strict=False))

    def __repr__(self) -> str:
        return (
            f"MNISTCNNFamily(channels={self.channels}, kernel_size={self.kernel_size}, "
            f"activation={self.activation!r}, batch_size={self.batch_size}, "
            f"init={self.init!r}, init_std={self.init_std})"
        )

    # -- parameters ---------------------------------------------------------------------------

    @property
    def layout(self) -> ParamLayout:
        """``conv0.weight (co, ci, k, k), conv0.bias, ..., head.W (F, 10), head.b``; the
        head's fan-in is its first dimension, the convolutions' torch's."""
        names, shapes, fan_ins = [], [], []
        for k, shape in enumerate(self.conv_shapes):
            names += [f"conv{k}.weight", f"conv{k}.bias"]
            shapes += [shape, (shape[0],)]
            fan_ins += [math.prod(shape[1:]), 1]
        names += ["head.W", "head.b"]
        shapes += [(self.features, NUM_CLASSES), (NUM_CLASSES,)]
        fan_ins += [self.features, 1]
        return ParamLayout(tuple(names), tuple(shapes), tuple(fan_ins))

    def init_scale(self) -> float | Tensor:
        if self.init == "normal":
            return self.init_std
        gain = torch.nn.init.calculate_gain(self.activation)
        parts = []
        for shape in self.conv_shapes:
            fan_in = math.prod(shape[1:])
            parts += [torch.full((math.prod(shape),), gain / math.sqrt(fan_in)),
                      torch.zeros(shape[0])]
        parts += [torch.full((self.features * NUM_CLASSES,), 1.0 / math.sqrt(self.features)),
                  torch.zeros(NUM_CLASSES)]
        return torch.cat(parts).to(torch.float64)

    def unflatten(self, params: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor, Tensor]:
        """Views ``([(W (B, co, ci, k, k), b (B, co)), ...], W_head (B, F, 10), b_head (B, 10))``
        of flat ``params (B, n)``."""
        self.check_params(params)
        B, off = params.shape[0], 0
        convs = []
        for shape in self.conv_shapes:
            size = math.prod(shape)
            W = params[:, off : off + size].reshape(B, *shape)
            off += size
            convs.append((W, params[:, off : off + shape[0]]))
            off += shape[0]
        size = self.features * NUM_CLASSES
        W_head = params[:, off : off + size].reshape(B, self.features, NUM_CLASSES)
        return convs, W_head, params[:, off + size :]

    def flatten(
        self, convs: Sequence[tuple[Tensor, Tensor]], W_head: Tensor, b_head: Tensor
    ) -> Tensor:
        """Inverse of ``unflatten``."""
        B = W_head.shape[0]
        parts = []
        for W, b in convs:
            parts += [W.reshape(B, -1), b]
        return torch.cat([*parts, W_head.reshape(B, -1), b_head], dim=1)

    # -- forward ------------------------------------------------------------------------------

    def _logits(self, params: Tensor, h: Tensor, shared: bool) -> Tensor:
        """Logits ``(B, m, 10)``; ``h (m, C, 28, 28)`` holds the images, with ``C = B`` (one
        channel per instance) unless ``shared`` (``C = 1``, every instance sees them)."""
        act = ACTIVATIONS[self.activation]
        convs, W_head, b_head = self.unflatten(params)
        B, m, pad = params.shape[0], h.shape[0], self.kernel_size // 2
        # channels-last: oneDNN's grouped convolutions and the pooling run ~1.6x faster on CPU
        # in this layout than in the default one (benchmarks/bench_cnn_batching.py)
        h = h.contiguous(memory_format=torch.channels_last)
        for k, (W, b) in enumerate(convs):
            co = W.shape[1]
            # instance i owns channels [i*co, (i+1)*co): one grouped conv for all instances; the
            # first layer on shared images is a plain conv with every instance's filters
            groups = 1 if shared and k == 0 else B
            h = F.conv2d(h, W.reshape(B * co, *W.shape[2:]), b.reshape(B * co),
                         padding=pad, groups=groups)
            h = F.max_pool2d(act(h), 2)
        h = h.reshape(m, B, self.features).transpose(0, 1)  # (B, m, F)
        return torch.baddbmm(b_head.unsqueeze(1), h, W_head)

    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on its own images ``x (B, m, 784)``."""
        B, m = x.shape[:2]
        return self._logits(params, x.transpose(0, 1).reshape(m, B, SIDE, SIDE), shared=False)

    def logits_shared(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on the same images ``x (m, 784)``."""
        return self._logits(params, x.reshape(x.shape[0], 1, SIDE, SIDE), shared=True)
