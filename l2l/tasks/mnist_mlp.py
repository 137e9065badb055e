"""Small fully connected MNIST classifiers as optimizees (the paper's section 3.2).

A batch of ``B`` instances is trained at once: every instance has its own flat parameter vector
(a row of ``params (B, n)``) and its own minibatch at every step, and the forward pass of the
whole batch is one ``torch.baddbmm`` per layer.

Minibatches come from a counter-based hash: the ``j``-th example of instance ``i`` at step ``t``
is ``hash(key(seed, split), i, t, j)`` scaled to the split's size, computed on the data's device
for all instances at once. So an instance sees the same minibatches whatever optimizer runs it
and whatever batch it is sampled in. Examples are drawn with replacement, independently at every
step and position, as in the official code (``tf.random_uniform`` indices).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from l2l.tasks.base import Instances, TaskFamily, check_sample
from l2l.tasks.mnist_data import IMAGE_SIZE, MNIST, NUM_CLASSES, load_mnist
from l2l.tasks.seeding import instance_generator, stream_key

# ---------------------------------------------------------------------------------------------
# Counter-based hashing in int64 (any device).

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31: a 32-bit value times one stays below 2**63, so int64 products
# never overflow and masking keeps exactly the low 32 bits of the 32-bit product.
_C1 = 0x045D9F3B
_C2 = 0x2C1B3C6D
_MAX_COUNTER = 2**32


def mix32(x: Tensor) -> Tensor:
    """A bijective xorshift-multiply mixer on 32-bit values held in int64 (elementwise)."""
    x = x ^ (x >> 16)
    x = (x * _C1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _C2) & _MASK32
    return x ^ (x >> 16)


def counter_hash(key: int, ids: Tensor, steps: Tensor | int, positions: Tensor) -> Tensor:
    """Uniform 32-bit hashes (int64 in ``[0, 2**32)``) of ``(key, id, step, position)``.

    ``ids``, ``steps`` and ``positions`` are non-negative int64 values below ``2**32`` that
    broadcast together; the result has their broadcast shape and lives on their device.
    """
    h = mix32((ids ^ (key & _MASK32)) & _MASK32)
    h = mix32(h ^ steps)
    h = mix32(h ^ positions)
    return mix32(h ^ ((key >> 32) & _MASK32))


def hash_indices(
    key: int, ids: Tensor, steps: Tensor | int, batch_size: int, n: int
) -> Tensor:
    """Indices in ``[0, n)`` of shape ``broadcast(ids, steps) + (batch_size,)``.

    ``ids`` and ``steps`` are int64 tensors (or ``steps`` an int); position ``j`` of the result
    is example ``j`` of that (instance, step)'s minibatch.
    """
    if not 0 < n < 2**31:
        raise ValueError(f"the number of examples must lie in [1, 2**31), got {n}")
    positions = torch.arange(batch_size, device=ids.device, dtype=torch.int64)
    if isinstance(steps, Tensor):
        steps = steps.to(device=ids.device, dtype=torch.int64).unsqueeze(-1)
    h = counter_hash(key, ids.to(torch.int64).unsqueeze(-1), steps, positions)
    return (h * n) >> 32  # multiply-shift: the high bits of the hash pick the index


# ---------------------------------------------------------------------------------------------
# The MLP family.

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}

#: the paper's generalisation variants (the 200-step horizon is a run setting, not a task one)
MNIST_VARIANTS: dict[str, dict] = {
    "mnist": {},
    "mnist_40": {"hidden_sizes": (40,)},
    "mnist_2layer": {"hidden_sizes": (20, 20)},
    "mnist_relu": {"activation": "relu"},
}

_EVAL_BUDGET = 2**24  # activations (elements) per evaluation chunk


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class MNISTMLPFamily(TaskFamily):
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
    ignore ``activation`` and give a convex problem, softmax regression, which is not one of the
    paper's tasks; a config typo should not turn into a different experiment).

    The data (``l2l.tasks.mnist_data``) is loaded on first use, once per device and dtype, from
    ``data_dir`` (else ``$L2L_DATA_DIR``, else the user cache), downloading it if ``download``.
    """

    name = "mnist"
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
                "(softmax regression without hidden layers is not supported by this family)"
            )
        for h in hidden:
            _positive_int("every hidden size", h)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
            )
        _positive_int("batch_size", batch_size)
        if not (isinstance(init_std, (int, float)) and 0.0 <= init_std < math.inf):
            raise ValueError(f"init_std must be a finite number >= 0, got {init_std!r}")
        self.hidden_sizes = hidden
        self.activation = activation
        self.batch_size = batch_size
        self.init_std = float(init_std)
        self.data_dir = data_dir
        self.download = download
        self.layer_sizes = (IMAGE_SIZE, *hidden, NUM_CLASSES)
        self.shapes = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True))
        self._num_params = sum(i * o + o for i, o in self.shapes)
        self._data: dict[tuple[str, torch.dtype], MNIST] = {}

    def __repr__(self) -> str:
        return (
            f"MNISTMLPFamily(hidden_sizes={self.hidden_sizes}, activation={self.activation!r}, "
            f"batch_size={self.batch_size}, init_std={self.init_std})"
        )

    @property
    def num_params(self) -> int:
        return self._num_params

    # -- parameters ---------------------------------------------------------------------------

    def unflatten(self, params: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Views ``[(W (B, in, out), b (B, out)), ...]`` of flat ``params (B, n)``, per layer."""
        if params.dim() != 2 or params.shape[1] != self._num_params:
            raise ValueError(
                f"params must have shape (B, {self._num_params}), got {tuple(params.shape)}"
            )
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

    def forward(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on its own inputs ``x (B, m, 784)``."""
        act = ACTIVATIONS[self.activation]
        layers = self.unflatten(params)
        h = x
        for k, (W, b) in enumerate(layers):
            h = torch.baddbmm(b.unsqueeze(1), h, W)
            if k < len(layers) - 1:
                h = act(h)
        return h

    def forward_shared(self, params: Tensor, x: Tensor) -> Tensor:
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

    # -- data and sampling --------------------------------------------------------------------

    def dataset(self, device: torch.device | str | None = None, dtype=torch.float32) -> MNIST:
        """The MNIST tensors on ``device`` with images in ``dtype`` (loaded once, then cached)."""
        dev = torch.device("cpu" if device is None else device)
        key = (str(dev), dtype)
        data = self._data.get(key)
        if data is None:
            data = load_mnist(self.data_dir, download=self.download, device=dev)
            if dtype != data.train_images.dtype:
                data = MNIST(
                    data.train_images.to(dtype),
                    data.train_labels,
                    data.test_images.to(dtype),
                    data.test_labels,
                )
            self._data[key] = data
        return data

    def minibatch_key(self, seed: int, split: str) -> int:
        return stream_key(self._namespace, seed, split, "minibatch")

    def sample(
        self,
        batch_size: int,
        seed: int,
        split: str = "train",
        *,
        offset: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> MNISTMLPInstances:
        check_sample(batch_size, seed, split, offset, dtype)
        if offset + batch_size > _MAX_COUNTER:
            raise ValueError(f"instance ids must stay below 2**32, got offset={offset}")
        dev = torch.device("cpu" if device is None else device)
        images, labels = self.dataset(dev, dtype).split(split)
        rows = []
        for i in range(offset, offset + batch_size):
            g = instance_generator(self._namespace, seed, split, i)
            rows.append(torch.randn(self._num_params, generator=g, dtype=torch.float64))
        init = (torch.stack(rows) * self.init_std).to(device=dev, dtype=dtype)
        ids = torch.arange(offset, offset + batch_size, device=dev, dtype=torch.int64)
        return MNISTMLPInstances(
            self, images, labels, ids, self.minibatch_key(seed, split), init, split
        )


class MNISTMLPInstances(Instances):
    """``B`` MLPs sharing a split of MNIST; ``ids`` are their instance ids (``offset + i``)."""

    def __init__(
        self,
        family: MNISTMLPFamily,
        images: Tensor,
        labels: Tensor,
        ids: Tensor,
        key: int,
        init_params: Tensor,
        split: str,
    ) -> None:
        self.family = family
        self.images = images
        self.labels = labels
        self.ids = ids
        self.key = key
        self.init_params = init_params
        self.split = split

    def repeat(self, times: int) -> MNISTMLPInstances:
        return MNISTMLPInstances(
            self.family, self.images, self.labels, self.ids.repeat(times), self.key,
            self.init_params.repeat(times, 1), self.split,
        )

    def minibatch_indices(self, step: int) -> Tensor:
        """Indices ``(B, batch_size)`` into this split's images for optimization step ``step``."""
        step = int(step)
        if not 0 <= step < _MAX_COUNTER:
            raise ValueError(f"step must lie in [0, 2**32), got {step}")
        return hash_indices(
            self.key, self.ids, step, self.family.batch_size, self.images.shape[0]
        )

    def minibatch(self, step: int) -> tuple[Tensor, Tensor]:
        """Images ``(B, batch_size, 784)`` and labels ``(B, batch_size)`` of step ``step``."""
        idx = self.minibatch_indices(step)
        return self.images[idx], self.labels[idx]

    def loss(self, params: Tensor, step: int) -> Tensor:
        x, y = self.minibatch(step)
        logits = self.family.forward(params, x.to(params.dtype))
        ce = F.cross_entropy(logits.reshape(-1, NUM_CLASSES), y.reshape(-1), reduction="none")
        return ce.view(y.shape).mean(dim=1)

    @torch.no_grad()
    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        """Mean cross-entropy ``"loss"`` and ``"accuracy"`` ``(B,)`` on the whole split."""
        params = params.detach()
        B, n = params.shape[0], self.images.shape[0]
        width = max(self.family.layer_sizes[1:])
        chunk = max(1, _EVAL_BUDGET // (B * width))
        loss_sum = params.new_zeros(B)
        correct = params.new_zeros(B)
        for start in range(0, n, chunk):
            x = self.images[start : start + chunk].to(params.dtype)
            y = self.labels[start : start + chunk]
            logits = self.family.forward_shared(params, x)  # (B, m, 10)
            ce = F.cross_entropy(
                logits.reshape(-1, NUM_CLASSES), y.repeat(B), reduction="none"
            ).view(B, -1)
            loss_sum += ce.sum(dim=1)
            correct += (logits.argmax(dim=-1) == y).to(params.dtype).sum(dim=1)
        return {"loss": loss_sum / n, "accuracy": correct / n}
