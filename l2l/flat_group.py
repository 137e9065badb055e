"""A param group's parameters stepped by one rule call: the drop-in's hot path.

Every l2l rule acts on flat ``(B, n)`` vectors, so the drop-in gives it a whole param group at
once instead of calling it once per tensor: on a real model (dozens of tensors of a few
thousand coordinates) a per-tensor loop pays the rule's fixed cost (a dozen small kernels for
Adam, a network's setup for a learned optimizer) once per tensor. A :class:`FlatBucket` is a
set of parameters that step together, in one of two forms:

- **multi-tensor** (the baselines, ``BatchedOptimizer.multi_tensor_step``): the rule's own
  ``_step_`` on ``l2l.tensor_list.TensorList``s of the parameters, their gradients and their
  state tensors, each op one ``torch._foreach_*`` call: torch.optim's single-tensor kernels
  per tensor, bit for bit, nothing copied. Scalar state (a step count) is one ``(1, 1)``
  tensor for the bucket.
- **flat** (learned optimizers): the rule's state as flat ``(1, n, ...)`` rows, and in
  ``optimizer.state`` (torch.optim's per-parameter layout, what ``state_dict()`` saves)
  *views* of those rows shaped like each parameter. The rule steps chunks of whole tensors
  (``_step_chunks``), each bound to its layout. A chunk of one contiguous tensor steps on that
  tensor's own memory; the tensors of the other chunks are copied into a flat gradient and
  parameter buffer by one ``torch._foreach_copy_`` each and written back by one more (the
  parameters stay the user's own tensors: making them views of one buffer would change their
  storage under the model; ``safetensors`` refuses to save tensors that share memory).

In both, a scalar state value is, per parameter in ``optimizer.state``, a 0-dim tensor of its
own (torch.optim steps each parameter's ``step`` in place: a shared one would advance once per
parameter), copied from the bucket's after every step by one ``torch._foreach_copy_``. What
must agree within a bucket: the device, the (real) dtype, complex or not (a complex parameter
is stepped as its real view, its state kept complex as torch's is), the state's dtypes and
every scalar state value (Adam's bias corrections use each parameter's own step count; a
parameter that skipped a step, having no gradient, steps apart from then on).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import is_

import torch
from torch import Tensor

from l2l.interface import BatchedOptimizer, State
from l2l.layout import ParamLayout
from l2l.tensor_list import TensorList

#: coordinates of whole tensors a learned optimizer steps per call (see ``_step_chunks``)
CHUNK = 1 << 16
#: coordinates of whole tensors a baseline's multi-tensor step covers per call (``_step_lists``)
LIST_CHUNK = 1 << 18


def real_view(t: Tensor) -> Tensor:
    """A complex tensor as its real view (``t.shape + (2,)``, sharing memory), else ``t``.

    torch.optim steps a complex parameter, its gradient and its state as their real views:
    the real and imaginary parts are two independent coordinates. Every l2l rule is
    coordinatewise over flat ``(B, n)`` vectors, so the drop-in does the same for the baselines
    (their arithmetic is then torch.optim's: bit for bit for Adagrad, RMSprop, Adam and NAdam;
    to one rounding per step for SGD, Momentum, NAG and Adadelta, whose updates torch adds in
    complex arithmetic) and for learned optimizers (which then treat ``Re z`` and ``Im z``
    exactly as two real parameters). Refusing complex
    parameters instead would make the drop-in less of one, and dropping to ``t.real`` (what a
    plain ``reshape`` of the state amounts to) loses the imaginary part silently.
    """
    return torch.view_as_real(t) if t.is_complex() else t


def torch_state_for(param: Tensor, state: dict[str, Tensor],
                    scalar_keys: frozenset[str]) -> dict[str, Tensor]:
    """The stored state of ``param``: for a complex one, every per-coordinate tensor shaped
    like its real view becomes a complex view shaped like ``param``, as torch.optim keeps it
    (so state dicts move between them); tensors with trailing dimensions (a learned
    optimizer's hidden state) and scalars stay real."""
    if not param.is_complex():
        return state
    shape = param.shape + (2,)
    return {k: torch.view_as_complex(v) if k not in scalar_keys and v.shape == shape else v
            for k, v in state.items()}


def bucket_key(param: Tensor, rows: State, scalar_keys: frozenset[str]) -> tuple:
    """What parameters stepping together must share (see the module docstring)."""
    scalars = tuple(sorted((k, float(v.item())) for k, v in rows.items() if k in scalar_keys))
    dtypes = tuple(sorted((k, str(v.dtype)) for k, v in rows.items()))
    return (str(param.device), real_view(param).dtype, param.is_complex(), scalars, dtypes)


class FlatBucket:
    """Parameters of one param group that step as one flat vector (module docstring)."""

    def __init__(self, params: Sequence[Tensor], rows: Sequence[State],
                 rule: BatchedOptimizer, states: dict) -> None:
        """``params`` with their rule-layout states ``rows`` (``(1, numel)`` each, as
        ``rule.from_torch_state`` gives them); ``states`` is ``optimizer.state``, into which
        the torch-layout views of the flat state are written."""
        self.params = tuple(params)
        self.shapes = [p.shape for p in self.params]
        self.complex = self.params[0].is_complex()
        reals = [real_view(p) for p in self.params]
        self.layout = ParamLayout.from_tensors(self.params)
        self.n = self.layout.numel
        self.scalar_keys = rule.scalar_state_keys
        self._rule: tuple[BatchedOptimizer, list] | None = None
        self.chunks = self._chunks()
        first = reals[0]
        #: a baseline: multi-tensor kernels on the parameters and their own state tensors
        self.multi = rule.multi_tensor_step
        #: one contiguous parameter: stepped in place through a view of it, no buffers
        self.direct = len(self.params) == 1 and first.is_contiguous() and not self.multi
        self.flat_params = self.flat_grads = None
        self.param_views: list[Tensor] = []
        self.grad_views: list[Tensor] = []
        if self.multi:
            self.list_groups = self._groups(LIST_CHUNK)
            self._publish_lists(rule, rows, reals, states)
            return
        if not self.direct:
            self.flat_params = first.new_empty(1, self.n)
            self.flat_grads = first.new_empty(1, self.n)
            self.param_views = self._split(self.flat_params, reals)
            self.grad_views = self._split(self.flat_grads, reals)
        self.rows: State = {}
        for key in rows[0]:
            if key in self.scalar_keys:
                self.rows[key] = rows[0][key].clone()
            else:
                self.rows[key] = torch.cat([r[key] for r in rows], dim=1)
        self.publish(rule, states)

    def _publish_lists(self, rule: BatchedOptimizer, rows: Sequence[State],
                       reals: Sequence[Tensor], states: dict) -> None:
        """The multi-tensor form: each parameter keeps its own torch-layout state tensors (views
        of ``rows``), which the step's ``TensorList``s hold; scalars are one ``(1, 1)`` row."""
        layouts = [rule.to_torch_state(own, real) for own, real in zip(rows, reals)]
        self.rows = {}
        mirrors_dst, mirrors_src = [], []
        for key in rows[0]:
            if key in self.scalar_keys:
                self.rows[key] = rows[0][key].clone()
                src = self.rows[key].view(())
                for torch_layout in layouts:
                    if key in torch_layout:
                        torch_layout[key] = src.clone()
                        mirrors_dst.append(torch_layout[key])
                        mirrors_src.append(src)
            else:
                self.rows[key] = TensorList([torch_layout[key] for torch_layout in layouts])
        self.dicts, self.entries = [], []
        for p, torch_layout in zip(self.params, layouts):
            self._bind_state(p, torch_layout, states)
        self.mirrors = (mirrors_dst, mirrors_src)
        self.stale_views = False
        self.row_ids = {k: id(v) for k, v in self.rows.items()}

    def _groups(self, limit: int) -> list[tuple[int, int]]:
        """Consecutive whole tensors of at most ``limit`` coordinates together (a larger tensor
        alone): ``(first, end)`` tensor indices."""
        out, start, first = [], 0, 0
        layout = self.layout
        for i, (off, size) in enumerate(zip(layout.offsets, layout.sizes)):
            if i > first and off + size - start > limit:
                out.append((first, i))
                start, first = off, i
        out.append((first, len(layout)))
        return out

    def _chunks(self) -> list[tuple[int, int, ParamLayout]]:
        """:data:`CHUNK`-sized groups of whole tensors: ``(lo, hi, their layout)``."""
        layout = self.layout
        groups = self._groups(CHUNK)
        #: the parameter a chunk of one tensor is (stepped through its own memory), else None
        self.chunk_owner = [a if b == a + 1 else None for a, b in groups]
        ends = [*layout.offsets, layout.numel]
        return [(ends[a], ends[b],
                 ParamLayout(layout.names[a:b], layout.shapes[a:b], layout.fan_ins[a:b]))
                for a, b in groups]

    @staticmethod
    def _split(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
        """Views of ``flat (1, n, ...)`` shaped like each tensor of ``like`` (plus trailing
        dimensions), in flat order."""
        trailing = tuple(flat.shape[2:])
        pieces = torch.split(flat[0], [t.numel() for t in like], dim=0)
        return [piece.view((*t.shape, *trailing)) for piece, t in zip(pieces, like)]

    # -- torch.optim's view of the state ------------------------------------------------------

    def publish(self, rule: BatchedOptimizer, states: dict) -> None:
        """Write each parameter's torch-layout state (views of the flat rows; scalars as
        tensors of their own) into ``states``, and note what a step must keep in sync."""
        self.entries: list[tuple[dict, str, Tensor]] = []
        self.dicts: list[dict | None] = []
        mirrors_dst, mirrors_src = [], []
        rows_storage = {v.untyped_storage().data_ptr() for v in self.rows.values()}
        self.stale_views = False
        for p, off, size in zip(self.params, self.layout.offsets, self.layout.sizes):
            own = {k: v if k in self.scalar_keys else v[:, off:off + size]
                   for k, v in self.rows.items()}
            torch_layout = rule.to_torch_state(own, real_view(p))
            for key in self.scalar_keys & torch_layout.keys():
                src = self.rows[key].view(())
                torch_layout[key] = src.clone()
                mirrors_dst.append(torch_layout[key])
                mirrors_src.append(src)
            for key, value in torch_layout.items():
                if key not in self.scalar_keys and (
                        value.untyped_storage().data_ptr() not in rows_storage):
                    self.stale_views = True  # a derived tensor: made again after each step
            self._bind_state(p, torch_layout, states)
        self.mirrors = (mirrors_dst, mirrors_src)
        self.row_ids = {k: id(v) for k, v in self.rows.items()}

    def _bind_state(self, p: Tensor, torch_layout: dict, states: dict) -> None:
        """Point ``optimizer.state[p]`` at the bucket's views, keeping the dict object itself
        (schedulers and user code may hold it), and note its entries for the next step."""
        new = torch_state_for(p, torch_layout, self.scalar_keys)
        old = states.get(p)
        if old is not None:
            old.clear()
            old.update(new)
            new = old
        elif new:
            states[p] = new
        else:
            new = None
        self.dicts.append(new)
        if new is not None:
            self.entries.extend((new, k, v) for k, v in new.items())

    def current(self, params: Sequence[Tensor], states: dict) -> bool:
        """Whether this bucket still describes ``params`` and ``states`` holds its views (a
        loaded state dict, or state set by hand, makes it rebuild from ``states``)."""
        return (len(params) == len(self.params) and all(map(is_, params, self.params))
                and [p.shape for p in params] == self.shapes
                and all(map(is_, map(states.get, self.params), self.dicts))
                and all(d.get(k) is v for d, k, v in self.entries))

    def detach(self, states: dict, keep: set[int]) -> None:
        """Give the parameters not in ``keep`` (by id) copies of their state, so that the flat
        rows can be freed when a new bucket takes the others over (multi-tensor state is the
        parameters' own already)."""
        if self.multi:
            return
        for p, d in zip(self.params, self.dicts):
            if d is not None and id(p) not in keep and states.get(p) is d:
                for key, value in list(d.items()):
                    d[key] = value.clone()

    # -- the step -----------------------------------------------------------------------------

    def _bound_chunks(self, rule: BatchedOptimizer) -> list:
        """``(lo, hi, rule bound to the chunk's layout)`` per chunk, kept until the group's rule
        changes."""
        if self._rule is None or self._rule[0] is not rule:
            self._rule = (rule, [(lo, hi, rule.with_layout(lay)) for lo, hi, lay in self.chunks])
        return self._rule[1]

    def step(self, rule: BatchedOptimizer, grads: Sequence[Tensor], states: dict,
             scale: float = 1.0, decay: float = 0.0) -> None:
        """One step of every parameter of the bucket, whose gradients are ``grads``:
        ``p <- (1 - scale decay) p + scale update`` (``update`` the rule's own step)."""
        if self.multi:
            self._step_lists(rule, grads)
            return
        if self.complex:
            grads = [torch.view_as_real(g) for g in grads]
            reals = [torch.view_as_real(p) for p in self.params]
        else:
            reals = self.params
        if self.direct:
            flat = reals[0].view(1, -1) if reals[0].is_contiguous() else reals[0].reshape(1, -1)
            g = grads[0]
            g = g.view(1, -1) if g.is_contiguous() else g.reshape(1, -1)
            own, copied = {}, []
        else:
            # a chunk of one contiguous tensor steps on that tensor's own memory; the others'
            # tensors go through the flat buffers
            own = {}
            for c, j in enumerate(self.chunk_owner):
                if j is not None and reals[j].is_contiguous() and grads[j].is_contiguous():
                    own[c] = (grads[j].view(1, -1), reals[j].view(1, -1))
            stepped_in_place = {self.chunk_owner[c] for c in own}
            copied = [j for j in range(len(reals)) if j not in stepped_in_place]
            if copied:
                torch._foreach_copy_([self.grad_views[j] for j in copied],
                                     [grads[j] for j in copied])
                torch._foreach_copy_([self.param_views[j] for j in copied],
                                     [reals[j] for j in copied])
            flat, g = self.flat_params, self.flat_grads
        self._step_chunks(rule, g, flat, scale, decay, own)
        if not self.direct:
            if copied:
                torch._foreach_copy_([reals[j] for j in copied],
                                     [self.param_views[j] for j in copied])
        elif flat.data_ptr() != reals[0].data_ptr():  # made non-contiguous since: write back
            reals[0].copy_(flat.view(reals[0].shape))
        if self.stale_views or any(id(v) != self.row_ids.get(k) for k, v in self.rows.items()):
            # the rule replaced its state tensors (a learned optimizer's pure update)
            if self.complex:
                self.rows = {k: v.contiguous() for k, v in self.rows.items()}
            self.publish(rule, states)
        elif self.mirrors[0]:
            torch._foreach_copy_(self.mirrors[0], self.mirrors[1])

    def _step_chunks(self, rule: BatchedOptimizer, g: Tensor, flat: Tensor, scale: float,
                     decay: float, own: dict[int, tuple[Tensor, Tensor]]) -> None:
        """The rule's ``_step_`` on each chunk of the flat vectors (whole tensors, bound to
        their layout: per-tensor features see exactly their tensor): a learned optimizer's
        intermediates (features, hidden units: tens of floats per coordinate) then stay in
        the caches, where a whole 1M-parameter group at once would stream them through
        memory. Every chunk starts from the same scalar state (a step count advances once);
        state the rule returns as new tensors is copied into the flat rows. ``own``: the
        gradient and parameter of a chunk that steps on its tensor's memory, by chunk."""
        chunks = self._bound_chunks(rule)
        scalars = {}
        for c, (lo, hi, bound) in enumerate(chunks):
            whole = len(chunks) == 1
            state = {k: (v.clone() if k in self.scalar_keys and not whole else
                         v if whole else v[:, lo:hi]) for k, v in self.rows.items()}
            given = dict(state)
            grad, p = own.get(c) or ((g, flat) if whole else (g[:, lo:hi], flat[:, lo:hi]))
            before = None if scale == 1.0 and decay == 0.0 else p.clone()
            bound._step_(grad, state, p)  # shapes checked at build
            if before is not None:  # p <- (1 - lr wd) p + lr u (see LEARNED_GROUP_DEFAULTS)
                p.sub_(before).mul_(scale).add_(before, alpha=1.0 - scale * decay)
            if whole:
                self.rows = state
                return
            for key, value in state.items():
                if key in self.scalar_keys:
                    scalars[key] = value
                elif value is not given.get(key) and key in self.rows:
                    self.rows[key][:, lo:hi].copy_(value)
        for key, value in scalars.items():
            self.rows[key].copy_(value)

    def _step_lists(self, rule: BatchedOptimizer, grads: Sequence[Tensor]) -> None:
        """The multi-tensor step: the rule's own ``_step_`` on ``TensorList``s, one call per
        :data:`LIST_CHUNK` coordinates of whole tensors. A foreach op runs over its whole list
        before the next op starts, so over a whole 1M-parameter group every op streams the
        state through memory; torch.optim's default CPU step (one tensor at a time) keeps a
        small tensor's state in cache across its ops, and for rules of many ops (Adadelta's
        ten) that is 1.2-1.4x faster. Groups of about 2^18 coordinates get most of both: of
        2^16 to 2^19 and one group, the fastest for Adadelta, Momentum and SGD together on
        ``benchmarks/bench_dropin.py``'s ResNet and transformer (fewer groups pay less Python
        per op, smaller ones stay in cache). Every group starts from the same scalar state (a
        step count advances once); the arithmetic is elementwise, so grouping changes no bit."""
        if self.complex:
            grads = [torch.view_as_real(g) for g in grads]
            reals = [torch.view_as_real(p) for p in self.params]
        else:
            reals = self.params
        groups = self.list_groups
        if len(groups) == 1:
            rule._step_(TensorList(grads), self.rows, TensorList(reals))
        else:
            scalar = [k for k in self.rows if k in self.scalar_keys]
            start = {k: self.rows[k].clone() for k in scalar}
            for a, b in groups:
                state = {k: (start[k].clone() if k in start else TensorList(v.items[a:b]))
                         for k, v in self.rows.items()}
                rule._step_(TensorList(grads[a:b]), state, TensorList(reals[a:b]))
            for k in scalar:
                self.rows[k].copy_(state[k])
        if self.mirrors[0]:
            torch._foreach_copy_(self.mirrors[0], self.mirrors[1])
