"""What every MNIST task family shares: data, splits, minibatches, the loss and evaluation.

A family (``MNISTFamily`` subclass) defines only its parameter layout, its initialisation and
``logits(params, images)``; this module owns the rest, so the MLP, CNN and logistic-regression
families cannot drift apart in how they pick data:

- **Splits.** ``"train"`` = MNIST's first 50,000 training images (meta-training), ``"valid"`` =
  the other 10,000 (tuning, validation), ``"test"`` = the 10,000 test images (evaluation).
- **Minibatches.** The ``j``-th example of instance ``i`` at step ``t`` is
  ``hash(key(seed, split), i, t, j)`` scaled to the split's size (a counter-based hash computed
  on the data's device for all instances at once). So an instance sees the same minibatches
  whatever optimizer runs it and whatever batch it is sampled in. Examples are drawn with
  replacement, independently at every step and position, as in the official code
  (``tf.random_uniform`` indices).
- **Loss.** Mean softmax cross-entropy of the minibatch's logits.
- **Evaluation.** Loss and accuracy of the final parameters on the whole split, in chunks of
  images sized to bound the activations' memory.
- **Initialisation.** Instance ``i`` draws ``randn(n)`` in float64 from its own generator seeded
  by ``(namespace, seed, split, i)``; the family scales it (a scalar or one std per parameter).
- **Resolution.** Families that take ``resolution=r`` (the MLPs, the autoencoder) see every image
  average-pooled from 28 x 28 to ``r x r`` (``adaptive_avg_pool2d``: exact 2 x 2 means at 14,
  area-weighted means at 8), flattened to ``r * r`` inputs: the small images that Celo's and
  VeLO's task suites train on, at a fraction of the cost.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from l2l.tasks.base import Instances, TaskFamily, check_sample
from l2l.tasks.mnist_data import MNIST, NUM_CLASSES, load_mnist
from l2l.tasks.seeding import instance_generator, stream_key

#: the side of MNIST's images
SIDE = 28

# ---------------------------------------------------------------------------------------------
# Counter-based hashing in int64 (any device).

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31: a 32-bit value times one stays below 2**63, so int64 products
# never overflow and masking keeps exactly the low 32 bits of the 32-bit product.
_C1 = 0x045D9F3B
_C2 = 0x2C1B3C6D
MAX_COUNTER = 2**32


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
# Argument checks shared by the families (each raises ValueError naming the argument).

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}

#: activations (elements) per evaluation chunk: bounds evaluate()'s memory (64 MiB in float32)
EVAL_BUDGET = 2**24


def positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive int (not a bool), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_activation(activation: object) -> str:
    """``activation`` if it names one of ``ACTIVATIONS``, else a ValueError listing them."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
        )
    return activation  # type: ignore[return-value]


def check_init_std(init_std: object) -> float:
    """``init_std`` as a float if it is a finite number >= 0, else a ValueError."""
    if (
        isinstance(init_std, bool)
        or not isinstance(init_std, (int, float))
        or not 0.0 <= init_std < math.inf
    ):
        raise ValueError(f"init_std must be a finite number >= 0, got {init_std!r}")
    return float(init_std)


def check_resolution(resolution: object) -> int:
    """``resolution`` if it is an int in ``[1, 28]`` (the side of the pooled images), else a
    ValueError."""
    if (isinstance(resolution, bool) or not isinstance(resolution, int)
            or not 1 <= resolution <= SIDE):
        raise ValueError(f"resolution must be an int in [1, {SIDE}] (the side of the pooled "
                         f"images), got {resolution!r}")
    return resolution


def pool_images(images: Tensor, resolution: int) -> Tensor:
    """Flat square images ``(N, side**2)`` (MNIST's 28 x 28, grey CIFAR-10's 32 x 32)
    average-pooled to ``(N, resolution**2)``."""
    side = math.isqrt(images.shape[1])
    if resolution == side:
        return images
    square = images.reshape(-1, 1, side, side)
    return F.adaptive_avg_pool2d(square, resolution).reshape(images.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# The shared family and instances.


class MNISTFamily(TaskFamily):
    """Base of the MNIST classifier families: softmax cross-entropy on hashed minibatches.

    Subclasses set ``_namespace`` (seeds of inits and minibatches: fixed per class, so that
    every preset of a family shares its instances), ``_num_params`` and ``eval_width`` (the
    largest activation count per image and instance, for evaluation chunking), and implement
    ``init_scale`` and ``logits``; ``logits_shared`` has a generic default. The data
    (``l2l.tasks.mnist_data``) is loaded on first use, once per device and dtype, from
    ``data_dir`` (else ``$L2L_DATA_DIR``, else the user cache), downloading it if ``download``,
    and pooled to ``resolution x resolution`` images (``input_size = resolution**2`` inputs).
    ``instances_class`` is what ``sample`` returns (a family with another loss overrides it).
    """

    _namespace: str = "mnist"
    instances_class: type[MNISTInstances]
    _num_params: int
    #: the largest number of activations per image and instance (sizes evaluation chunks)
    eval_width: int

    def __init__(
        self,
        batch_size: int = 128,
        data_dir: str | Path | None = None,
        download: bool = True,
        resolution: int = SIDE,
        dataset: str = "mnist",
    ) -> None:
        self.batch_size = positive_int("batch_size", batch_size)
        if dataset != "mnist":
            from l2l.tasks.image_data import dataset_spec

            dataset_spec(dataset)  # an unknown name fails now
        self.dataset_name = dataset
        self.resolution = check_resolution(resolution)
        self.input_size = self.resolution**2
        if not isinstance(download, bool):
            raise ValueError(f"download must be true or false, got {download!r}")
        self.data_dir = data_dir
        self.download = download
        self._data: dict[tuple[str, torch.dtype], MNIST] = {}

    @property
    def num_params(self) -> int:
        return self._num_params

    # -- what a family defines ----------------------------------------------------------------

    @abc.abstractmethod
    def init_scale(self) -> float | Tensor:
        """The std of each parameter at initialisation: a float for all, or a float64 ``(n,)``
        tensor (one per parameter; 0 for parameters that start at zero)."""

    @abc.abstractmethod
    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on its own images ``x (B, m, input_size)``."""

    def logits_shared(self, params: Tensor, x: Tensor) -> Tensor:
        """Logits ``(B, m, 10)`` of every instance on the same images ``x (m, input_size)``.

        The default expands ``x`` over instances (no copy); families override it when one
        shared computation is cheaper (say, one GEMM for every instance's first layer)."""
        return self.logits(params, x.expand(params.shape[0], *x.shape))

    def check_params(self, params: Tensor) -> None:
        """A ValueError unless ``params`` has shape ``(B, num_params)``."""
        if params.dim() != 2 or params.shape[1] != self._num_params:
            raise ValueError(
                f"params must have shape (B, {self._num_params}), got {tuple(params.shape)}"
            )

    # -- data and sampling --------------------------------------------------------------------

    def dataset(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> MNIST:
        """The MNIST tensors on ``device`` with images in ``dtype``, pooled to ``resolution``
        (loaded once, then cached)."""
        dev = torch.device("cpu" if device is None else device)
        key = (str(dev), dtype)
        data = self._data.get(key)
        if data is None:
            if self.dataset_name == "mnist":
                data = load_mnist(self.data_dir, download=self.download, device=dev)
            else:
                from l2l.tasks.image_data import load_image_dataset

                data = load_image_dataset(self.dataset_name, self.data_dir,
                                          download=self.download, device=dev)
            if dtype != data.train_images.dtype or self.input_size != data.train_images.shape[1]:
                data = dataclasses.replace(  # keeps the dataset's class and its splits
                    data,
                    train_images=pool_images(data.train_images, self.resolution).to(dtype),
                    test_images=pool_images(data.test_images, self.resolution).to(dtype),
                )
            self._data[key] = data
        return data

    def minibatch_key(self, seed: int, split: str) -> int:
        """The 64-bit key of ``(seed, split)``'s minibatch stream in this family."""
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
    ) -> MNISTInstances:
        check_sample(batch_size, seed, split, offset, dtype)
        if offset + batch_size > MAX_COUNTER:
            raise ValueError(f"instance ids must stay below 2**32, got offset={offset}")
        dev = torch.device("cpu" if device is None else device)
        images, labels = self.dataset(dev, dtype).split(split)
        rows = []
        for i in range(offset, offset + batch_size):
            g = instance_generator(self._namespace, seed, split, i)
            rows.append(torch.randn(self._num_params, generator=g, dtype=torch.float64))
        init = (torch.stack(rows) * self.init_scale()).to(device=dev, dtype=dtype)
        ids = torch.arange(offset, offset + batch_size, device=dev, dtype=torch.int64)
        return self.instances_class(
            self, images, labels, ids, self.minibatch_key(seed, split), init, split
        )


class MNISTInstances(Instances):
    """``B`` classifiers of one family sharing a split of MNIST; ``ids`` are their instance ids
    (``offset + i``), which with ``key`` fix their minibatches."""

    def __init__(
        self,
        family: MNISTFamily,
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

    def repeat(self, times: int) -> MNISTInstances:
        return type(self)(
            self.family, self.images, self.labels, self.ids.repeat(times), self.key,
            self.init_params.repeat(times, 1), self.split,
        )

    def held_out(self) -> MNISTInstances:
        """The same classifiers on minibatches of MNIST's validation images (never the test
        images), drawn from their own stream."""
        images, labels = self.family.dataset(self.images.device, self.images.dtype).split("valid")
        key = stream_key(self.family._namespace, self.key, "valid", "held_out")
        return type(self)(self.family, images, labels, self.ids, key, self.init_params, "valid")

    @classmethod
    def concat(cls, parts: list[Instances]) -> MNISTInstances:
        first = parts[0]
        if any(p.family is not first.family or p.key != first.key or p.split != first.split
               or p.images.data_ptr() != first.images.data_ptr()
               or p.images.shape != first.images.shape for p in parts):
            raise NotImplementedError("MNIST instances of different families or splits do not "
                                      "merge")
        return cls(first.family, first.images, first.labels, torch.cat([p.ids for p in parts]),
                   first.key, torch.cat([p.init_params for p in parts]), first.split)

    def minibatch_indices(self, step: int) -> Tensor:
        """Indices ``(B, batch_size)`` into this split's images for optimization step ``step``."""
        step = int(step)
        if not 0 <= step < MAX_COUNTER:
            raise ValueError(f"step must lie in [0, 2**32), got {step}")
        return hash_indices(
            self.key, self.ids, step, self.family.batch_size, self.images.shape[0]
        )

    def minibatch(self, step: int) -> tuple[Tensor, Tensor]:
        """Images ``(B, batch_size, input_size)``, labels ``(B, batch_size)`` of step ``step``."""
        idx = self.minibatch_indices(step)
        return self.images[idx], self.labels[idx]

    def loss(self, params: Tensor, step: int) -> Tensor:
        x, y = self.minibatch(step)
        logits = self.family.logits(params, x.to(params.dtype))
        ce = F.cross_entropy(logits.reshape(-1, NUM_CLASSES), y.reshape(-1), reduction="none")
        return ce.view(y.shape).mean(dim=1)

    @torch.no_grad()
    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        """Mean cross-entropy ``"loss"`` and ``"accuracy"`` ``(B,)`` on the whole split."""
        params = params.detach()
        B, n = params.shape[0], self.images.shape[0]
        chunk = max(1, EVAL_BUDGET // (B * self.family.eval_width))
        loss_sum = params.new_zeros(B)
        correct = params.new_zeros(B)
        for start in range(0, n, chunk):
            x = self.images[start : start + chunk].to(params.dtype)
            y = self.labels[start : start + chunk]
            logits = self.family.logits_shared(params, x)  # (B, m, 10)
            ce = F.cross_entropy(
                logits.reshape(-1, NUM_CLASSES), y.repeat(B), reduction="none"
            ).view(B, -1)
            loss_sum += ce.sum(dim=1)
            correct += (logits.argmax(dim=-1) == y).to(params.dtype).sum(dim=1)
        return {"loss": loss_sum / n, "accuracy": correct / n}


MNISTFamily.instances_class = MNISTInstances
