"""Which segment of a flat parameter vector is which parameter tensor: a ``ParamLayout``.

Every l2l optimizer acts on flat ``(B, n)`` vectors (``l2l.interface``), which carry no tensor
structure. The small learned optimizers of the last years (small_fc_lopt / AdafacMLP, Metz et
al. 2022; muLO, 2024) need it: they normalise each input feature over its tensor, use
Adafactor's row and column statistics of matrices, and scale steps by a tensor's fan-in. A
``ParamLayout`` says, for one row of the batch, which tensors lie in it in flat order: their
names, shapes and fan-ins. Task families provide theirs (``TaskFamily.layout``), the drop-in
builds one per flat buffer it steps (``TorchOptimizer``: a param group's tensors), and an
optimizer that reads layouts is *bound* to them (``BatchedOptimizer.with_layout``);
optimizers that ignore layouts are unchanged.

Reductions over tensors are one ``mean`` per tensor's contiguous segment and one ``cat`` of the
broadcast means (see ``_reduce_mean``), a plain ``mean`` when the layout is a single tensor.
Every tensor is also seen as a matrix ``(rows, cols)``: ``shape[0]`` by the product of the rest
(torch's fan-in convention for ``nn.Linear`` and ``nn.Conv*`` weights), a vector of length ``L``
as ``(L, 1)`` and a scalar as ``(1, 1)``; ``row_mean`` / ``col_mean`` reduce over those, which is
what Adafactor's factored second moments need.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return shape[0], math.prod(shape[1:])


def default_fan_in(shape: tuple[int, ...]) -> int:
    """torch's convention (``nn.init._calculate_fan_in_and_fan_out``): the product of every
    dimension but the first for a tensor of two or more dimensions (``nn.Linear.weight`` is
    ``(out, in)``, a convolution's ``(out, in, *kernel)``); 1 for vectors and scalars (biases),
    which muP steps as it steps input weights, without a fan-in factor."""
    return max(1, math.prod(shape[1:])) if len(shape) >= 2 else 1


@dataclass(frozen=True)
class ParamLayout:
    """The tensors of one flat parameter vector, in flat order (row-major within each).

    ``fan_ins``: one per tensor; ``None`` takes :func:`default_fan_in` of each shape. A family
    whose weight matrices are stored ``(in, out)`` (l2l's MNIST MLP) says so here.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    fan_ins: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        names = tuple(self.names)
        shapes = tuple(tuple(s) for s in self.shapes)
        if len(names) != len(shapes):
            raise ValueError(f"a ParamLayout needs one name per shape, got {len(names)} names "
                             f"and {len(shapes)} shapes")
        if not names:
            raise ValueError("a ParamLayout needs at least one tensor")
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"ParamLayout names must be distinct strings, got {list(names)}")
        for name, shape in zip(names, shapes):
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise ValueError(f"shape of {name!r} must hold non-negative ints, got {shape}")
        fan_ins = (tuple(default_fan_in(s) for s in shapes) if self.fan_ins is None
                   else tuple(self.fan_ins))
        if len(fan_ins) != len(shapes) or not all(
                isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in fan_ins):
            raise ValueError(f"fan_ins must be one positive int per tensor, got {fan_ins}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "fan_ins", fan_ins)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def flat(cls, n: int, name: str = "params") -> ParamLayout:
        """One vector tensor of shape ``(n,)``: what an optimizer assumes without a layout."""
        return cls((name,), ((int(n),),))

    @classmethod
    def from_tensors(cls, tensors: Iterable[Tensor],
                     names: Sequence[str] | None = None) -> ParamLayout:
        """The layout of ``tensors`` flattened and concatenated in order (a complex tensor as
        its real view, as the drop-in steps it); names ``"0"``, ``"1"``, ... unless given."""
        shapes = []
        for t in tensors:
            shapes.append(tuple(t.shape) + ((2,) if t.is_complex() else ()))
        names = tuple(names) if names is not None else tuple(str(i) for i in range(len(shapes)))
        return cls(names, tuple(shapes))

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamLayout:
        """The layout of ``module``'s trainable parameters in ``named_parameters()`` order
        (``torch.cat([p.flatten() for p in module.parameters()])`` is the flat vector)."""
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        return cls.from_tensors([p for _, p in named], [n for n, _ in named])

    # -- sizes --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    @functools.cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @functools.cached_property
    def offsets(self) -> tuple[int, ...]:
        """The flat start of every tensor."""
        out, start = [], 0
        for size in self.sizes:
            out.append(start)
            start += size
        return tuple(out)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @functools.cached_property
    def matrix_shapes(self) -> tuple[tuple[int, int], ...]:
        """Every tensor as a matrix ``(rows, cols)`` (see the module docstring)."""
        return tuple(_matrix_shape(s) for s in self.shapes)

    def check(self, n: int, who: str = "ParamLayout") -> None:
        """A ValueError unless this layout describes exactly ``n`` parameters."""
        if self.numel != n:
            raise ValueError(f"{who}: the layout describes {self.numel} parameters "
                             f"({', '.join(self.names[:4])}{', ...' if len(self) > 4 else ''}) "
                             f"but the parameter vector has {n}")

    # -- views --------------------------------------------------------------------------------

    def split(self, x: Tensor) -> list[Tensor]:
        """Per-tensor ``(B, *shape)`` views of ``x (B, n)`` (copies only if ``x``'s rows are
        not contiguous)."""
        self.check(x.shape[1])
        B = x.shape[0]
        return [x[:, off:off + size].reshape(B, *shape)
                for off, size, shape in zip(self.offsets, self.sizes, self.shapes)]

    # -- index tensors (cached per device) ---------------------------------------------------

    @functools.cached_property
    def _cache(self) -> dict:
        return {}

    def _ids(self, kind: str, device: torch.device) -> Tensor:
        key = (kind, str(device))
        ids = self._cache.get(key)
        if ids is None:
            parts, base = [], 0
            for size, (rows, cols) in zip(self.sizes, self.matrix_shapes):
                flat = torch.arange(size)
                if kind == "segment":
                    parts.append(torch.full((size,), len(parts)))
                elif kind == "row":
                    parts.append(base + flat // max(cols, 1))
                    base += rows
                else:
                    parts.append(base + flat % max(cols, 1))
                    base += cols
            ids = torch.cat(parts).to(device) if parts else torch.zeros(0, dtype=torch.long)
            self._cache[key] = ids
        return ids

    def segment_ids(self, device: torch.device | str = "cpu") -> Tensor:
        """``(n,)`` long: the index of each coordinate's tensor."""
        return self._ids("segment", torch.device(device))

    @functools.cached_property
    def _vectors_only(self) -> bool:
        return all(c == 1 for _, c in self.matrix_shapes)

    def _reduce_mean(self, x: Tensor, kind: str) -> Tensor:
        """Mean of ``x (B, n, ...)`` over each group of coordinates (tensor, row or column),
        broadcast back to every coordinate: ``(B, n, ...)`` (or ``(B, 1, ...)`` for the
        single-tensor mean).

        Every tensor is a contiguous segment, so each is reduced on its own view (one
        ``mean`` per tensor) and the means written out by one ``cat`` of their broadcasts: a
        few small calls per tensor, but no pass of scattered reads or writes (an ``index_add``
        into the groups and an ``index_select`` back cost ~20x more on a CPU at n ~ 1M)."""
        if x.shape[1] != self.numel:
            self.check(x.shape[1])
        if kind != "segment" and self._vectors_only:  # rows of one coordinate
            return x if kind == "row" else self._reduce_mean(x, "segment")
        if kind == "segment" and len(self) == 1:
            return x.mean(dim=1, keepdim=True) if self.numel else x
        B, rest = x.shape[0], tuple(x.shape[2:])
        out = []
        for piece, (rows, cols) in zip(x.split(self.sizes, dim=1), self.matrix_shapes):
            if not piece.shape[1]:
                out.append(piece)
            elif kind == "segment":
                out.append(piece.mean(dim=1, keepdim=True).expand_as(piece))
            else:
                mat = piece.reshape(B, rows, cols, *rest)
                mean = mat.mean(dim=2 if kind == "row" else 1, keepdim=True)
                out.append(mean.expand_as(mat).reshape(piece.shape))
        return torch.cat(out, dim=1)

    def tensor_mean(self, x: Tensor) -> Tensor:
        """Each tensor's mean of ``x (B, n, ...)``, broadcastable to ``x`` (per row ``b`` and
        trailing index)."""
        return self._reduce_mean(x, "segment")

    def row_mean(self, x: Tensor) -> Tensor:
        """Each matrix row's mean of ``x (B, n, ...)`` at every coordinate of the row."""
        return self._reduce_mean(x, "row")

    def col_mean(self, x: Tensor) -> Tensor:
        """Each matrix column's mean of ``x (B, n, ...)`` at every coordinate of the column."""
        return self._reduce_mean(x, "col")

    def per_coordinate(self, values: Sequence[float], like: Tensor) -> Tensor:
        """One value per tensor (e.g. a step scale) as an ``(n,)`` tensor like ``like``."""
        if len(values) != len(self):
            raise ValueError(f"need one value per tensor ({len(self)}), got {len(values)}")
        per_tensor = torch.tensor(list(values), dtype=like.dtype, device=like.device)
        return per_tensor.index_select(0, self.segment_ids(like.device))
