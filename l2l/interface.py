"""The one interface every optimizer in l2l implements, hand-designed or learned.

An optimizer acts on a *batch of independent optimizees*: ``params`` and ``grads`` have shape
``(B, n)`` (row ``i`` is the flat parameter vector of instance ``i``) and every state tensor has
shape ``(B, n)``, ``(B, 1)`` or ``(B, n, ...)``. Like optax's ``GradientTransformation`` the
rule is a pair of pure functions::

    state = opt.init(params)
    update, state = opt.update(grads, state, params)
    params = params + update

``update`` never mutates its inputs, so autograd can flow through an unrolled optimization back
to the parameters, the gradients, the state, and to hyperparameters passed as tensors. Any
hyperparameter may be a Python float or a tensor broadcastable to ``(B, 1)``: 16 learning rates
are tried at once as one batch of 16 optimizees.

Next to the pure pair there is one in-place, non-differentiable step, for frozen use (evaluating a
trained or hand-designed optimizer, and the ``torch.optim`` drop-in)::

    opt.step_(grads, state, params)      # params and the tensors in state updated in place

By default it is ``update`` followed by ``params.add_(update)``; the baselines override it with
torch.optim's own single-pass in-place arithmetic, which is several times cheaper for SGD-like
rules (no update tensor is allocated and then read again).
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

if TYPE_CHECKING:
    from l2l.layout import ParamLayout

State = dict[str, Tensor]
Hyper = float | Tensor


class BatchedOptimizer(abc.ABC):
    """Base class of every optimizer: a pure ``init``/``update`` pair over ``(B, n)`` batches."""

    name: str = "optimizer"

    #: State keys that hold one number per optimizee: shape ``(B, 1)`` here, a 0-dim tensor in
    #: torch.optim's per-parameter layout (see :meth:`to_torch_state`). Every other state tensor
    #: has one entry per coordinate, shape ``(B, n)`` or ``(B, n, ...)``.
    scalar_state_keys: ClassVar[frozenset[str]] = frozenset({"step"})

    #: True for a rule that reads the tensor structure of the flat vector (per-tensor
    #: normalisation, Adafactor factors, fan-ins): :meth:`with_layout` binds it to layouts.
    uses_layout: ClassVar[bool] = False
    #: True for a rule whose ``_step_`` also runs with ``l2l.tensor_list.TensorList``s for the
    #: gradients, the parameters and the per-coordinate state (a scalar state key stays one
    #: ``(1, 1)`` tensor): the drop-in then steps a param group with multi-tensor kernels on
    #: the parameters themselves instead of a flat copy (the baselines, whose steps are
    #: torch.optim's elementwise in-place ops).
    multi_tensor_step: ClassVar[bool] = False
    #: the layouts this rule is bound to, by parameter count (empty: every vector is one tensor)
    layouts: dict[int, ParamLayout] = {}

    def with_layout(self, layouts: ParamLayout | Iterable[ParamLayout] | None) -> BatchedOptimizer:
        """This rule bound to ``layouts`` (one, or several: a task mixture's), a shallow copy
        that shares every learned weight; ``self`` itself for a rule that ignores layouts.

        Why a bound copy and not an argument of ``init``/``update``: ``init`` and ``update``
        stay the pure pair every caller, estimator and ``torch.func`` transform already uses
        (and the state stays tensors only, which a layout is not), while the caller that knows
        the problems (the meta-trainer, an evaluation, the drop-in) binds once. The bound rule
        picks the layout by the vector's length ``n`` (:meth:`layout_for`); a problem of a size
        it was not told about is one flat tensor. Two different layouts of the same size (a
        mixture of architectures with equal parameter counts) cannot be told apart by the rule:
        that size is then one flat tensor too, rather than a wrong layout.
        """
        if not self.uses_layout or layouts is None:
            return self
        from l2l.layout import ParamLayout

        given = [layouts] if isinstance(layouts, ParamLayout) else list(layouts)
        by_size: dict[int, ParamLayout | None] = {}
        for layout in given:
            if not isinstance(layout, ParamLayout):
                raise ValueError(f"with_layout takes ParamLayouts, got {type(layout).__name__}")
            known = by_size.get(layout.numel, layout)
            by_size[layout.numel] = layout if known == layout else None
        bound = copy.copy(self)
        object.__setattr__(bound, "layouts",
                           {n: lay for n, lay in by_size.items() if lay is not None})
        return bound

    def layout_for(self, n: int) -> ParamLayout:
        """The bound layout of an ``n``-parameter vector, else one flat tensor ``(n,)``."""
        layout = self.layouts.get(n)
        if layout is None:
            from l2l.layout import ParamLayout

            layout = _FLAT_LAYOUTS.get(n)
            if layout is None:
                layout = _FLAT_LAYOUTS.setdefault(n, ParamLayout.flat(n))
        return layout

    @abc.abstractmethod
    def init(self, params: Tensor) -> State:
        """Fresh state for a batch of optimizees with parameters ``params`` of shape ``(B, n)``."""

    @abc.abstractmethod
    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        """Return ``(update, new_state)``; the new parameters are ``params + update``."""

    def step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        """One frozen optimization step *in place*: ``params`` and ``state`` are updated.

        The same arithmetic as ``update`` (the baselines: torch.optim's single-tensor code, op
        for op), without autograd (it runs under ``torch.no_grad()``, like
        ``torch.optim.Optimizer.step``), for loops that only evaluate an optimizer. After the
        call ``state`` holds the new state: its tensors may have been updated in place or
        replaced under the same keys, so read them from the dict again. Shapes are checked as
        for ``update``; subclasses override :meth:`_step_`, not this method.
        """
        self.check_shapes(grads, state, params)
        if torch.is_grad_enabled():
            with torch.no_grad():
                self._step_(grads, state, params)
        else:
            self._step_(grads, state, params)

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        """The in-place step behind :meth:`step_` (shapes already checked, autograd off).

        This default is the pure rule followed by ``params.add_(update)``; an override must
        compute the same update (tests hold every baseline's override to its ``update`` and to
        torch.optim).
        """
        update, new_state = self.update(grads, state, params)
        params.add_(update)
        state.clear()
        state.update(new_state)

    def check_shapes(self, grads: Tensor | None, state: State, params: Tensor) -> None:
        """Raise ``ValueError`` naming the shapes unless params (and grads) are ``(B, n)`` and
        every state tensor is ``(B, 1)`` (keys in :attr:`scalar_state_keys`) or ``(B, n, ...)``.

        Elementwise arithmetic would otherwise broadcast a mismatched tensor silently (a
        ``(5,)`` parameter against a ``(5, 1)`` step counter gives a ``(5, 5)`` update). Only
        shapes are compared, so this costs a few microseconds per call.
        """
        if params.dim() != 2:
            raise ValueError(
                f"{type(self).__name__}: params must be 2-D (B, n) (row i = instance i's flat "
                f"parameters), got shape {tuple(params.shape)}; use params.reshape(1, -1) for "
                "a single parameter tensor"
            )
        if grads is not None and grads.shape != params.shape:
            raise ValueError(
                f"{type(self).__name__}: grads of shape {tuple(grads.shape)} do not match "
                f"params of shape {tuple(params.shape)}; both must be the same (B, n)"
            )
        batch, n = params.shape
        for key, value in state.items():
            shape = value.shape
            if key in self.scalar_state_keys:
                ok = len(shape) == 2 and shape[0] == batch and shape[1] == 1
                expected = f"({batch}, 1)"
            else:
                ok = len(shape) >= 2 and shape[0] == batch and shape[1] == n
                expected = f"({batch}, {n}) or ({batch}, {n}, ...)"
            if not ok:
                raise ValueError(
                    f"{type(self).__name__}: state[{key!r}] has shape {tuple(shape)}, expected "
                    f"{expected} for params of shape {tuple(params.shape)}"
                )

    # -- torch.optim's per-parameter layout (used by l2l.TorchOptimizer) ----------------------

    def torch_group_constants(self) -> dict[str, Any]:
        """Settings that torch.optim's twin of this rule keeps in each param group but that are
        fixed here (e.g. ``nesterov=True`` for NAG). The drop-in puts them in its param groups,
        so its ``state_dict()`` loads into the torch optimizer, and checks them when loading a
        state dict, so that a different algorithm's state is refused."""
        return {}

    def to_torch_state(self, state: State, param: Tensor) -> dict[str, Tensor]:
        """This rule's state for a batch of one (``B = 1``) in torch.optim's per-parameter
        layout for the parameter tensor ``param``: per-coordinate tensors shaped like ``param``
        (plus any trailing dimensions), keys in :attr:`scalar_state_keys` as 0-dim tensors.
        Views are returned where possible, so this costs no copy; dtypes are kept."""
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            if key in self.scalar_state_keys:
                out[key] = value.reshape(())
            else:
                out[key] = value.reshape(param.shape + value.shape[2:])
        return out

    def from_torch_state(self, torch_state: dict[str, Tensor], param: Tensor) -> State:
        """The inverse of :meth:`to_torch_state`: a ``B = 1`` state whose tensors are *views* of
        ``torch_state``'s where their memory allows, so :meth:`step_` updates them in place.

        An empty ``torch_state`` (a parameter never stepped) gives :meth:`init`'s fresh state
        with its scalars in torch's scalar dtype (float32, or float64 when that is the default
        dtype), in which torch.optim keeps ``step`` and NAdam's ``mu_product`` and does their
        arithmetic from the first step on.
        """
        n = param.numel()
        if not torch_state:
            fresh = self.init(param.detach().reshape(1, n))
            default = torch.get_default_dtype()
            scalar_dtype = torch.float64 if default == torch.float64 else torch.float32
            for key in self.scalar_state_keys & fresh.keys():
                fresh[key] = fresh[key].to(scalar_dtype)
            return fresh
        out: State = {}
        for key, value in torch_state.items():
            if key in self.scalar_state_keys:
                out[key] = value.reshape(1, 1)
            else:
                out[key] = value.reshape((1, n) + value.shape[param.dim() :])
        return out

    def hyperparameters(self) -> dict[str, Any]:
        """Plain-value hyperparameters (what a config or report holds)."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {}

    def with_hyperparameters(self, **overrides: Any) -> BatchedOptimizer:
        """A copy of this optimizer with some hyperparameters replaced (validated again)."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} has no replaceable hyperparameters")
        return dataclasses.replace(self, **overrides)


#: flat layouts by size, shared (a layout caches its index tensors)
_FLAT_LAYOUTS: dict[int, ParamLayout] = {}

# ---------------------------------------------------------------------------------------------
# Helpers shared by the update rules.


def with_horizon(state: State, horizon: int | Tensor) -> State:
    """``state`` with the run's length recorded, for a rule that reads the fraction of its run
    done (a ``horizon`` key in its state, as ``mlp_lopt``'s ``horizon_features`` have: VeLO's
    and Celo's inputs, which let a learned optimizer learn a schedule that ends with the run).
    The caller that knows the length (an evaluation, a meta-training task, a truncated step's
    particle) states it; every other state is returned as it is. ``horizon``: one length, or
    one per instance ``(B,)`` / ``(B, 1)``."""
    if "horizon" not in state:
        return state
    old = state["horizon"]
    value = torch.as_tensor(horizon, dtype=old.dtype, device=old.device).reshape(-1, 1)
    return {**state, "horizon": value.expand_as(old).clone()}


def step_counter(params: Tensor) -> Tensor:
    """A per-instance step count of shape ``(B, 1)``, starting at 0."""
    return params.new_zeros(params.shape[0], 1)


def is_zero(value: Hyper) -> bool:
    """True only for a Python number equal to 0: a tensor is always applied, so it stays
    differentiable and may hold a different value per instance."""
    return not isinstance(value, Tensor) and value == 0


def check_params(params: Tensor, who: str) -> None:
    """``init``'s shape check: ``params`` must be ``(B, n)`` (see ``check_shapes``)."""
    if params.dim() != 2:
        raise ValueError(
            f"{who}: params must be 2-D (B, n) (row i = instance i's flat parameters), got "
            f"shape {tuple(params.shape)}; use params.reshape(1, -1) for a single tensor"
        )


# In-place helpers for ``_step_``: a coefficient is a Python float (torch.optim's case: one
# optimizee and float hyperparameters, so torch's own scalar kernels run, bit for bit) or a
# per-instance ``(B, 1)`` tensor (a batch, or tensor hyperparameters), for which the same
# products are formed with the tensor in the same order.


def step_value(step: Tensor) -> float | Tensor:
    """The step count for scalar arithmetic: a Python float for a batch of one (torch.optim
    computes bias corrections with Python floats), else the ``(B, 1)`` counts in float64."""
    return step.item() if step.numel() == 1 else step.to(torch.float64)


def coefficient(value: Hyper, dtype: torch.dtype) -> Hyper:
    """A per-instance scalar ready for an in-place op on ``dtype`` tensors: floats stay Python
    floats (the kernel rounds them to ``dtype`` exactly as torch.optim's do), tensors are cast."""
    return value.to(dtype) if isinstance(value, Tensor) else value


def add_scaled_(out: Tensor, x: Tensor, c: Hyper) -> Tensor:
    """``out += c * x`` in place (torch: ``out.add_(x, alpha=c)``)."""
    if isinstance(c, Tensor):
        return out.addcmul_(x, c)
    return out.add_(x, alpha=c)


def addcmul_(out: Tensor, a: Tensor, b: Tensor, c: Hyper) -> Tensor:
    """``out += c * a * b`` in place, rounded as ``(c * a) * b`` like ``addcmul_(value=c)``."""
    if isinstance(c, Tensor):
        return out.addcmul_(a * c, b)
    return out.addcmul_(a, b, value=c)


def addcdiv_(out: Tensor, a: Tensor, b: Tensor, c: Hyper) -> Tensor:
    """``out += c * a / b`` in place, rounded as ``(c * a) / b`` like ``addcdiv_(value=c)``."""
    if isinstance(c, Tensor):
        return out.addcdiv_(a * c, b)
    return out.addcdiv_(a, b, value=c)


def decayed_grad(grads: Tensor, params: Tensor, weight_decay: Hyper, maximize: bool) -> Tensor:
    """:func:`apply_weight_decay` for the in-place path, with torch.optim's ops
    (``grad.add(param, alpha=weight_decay)``); never modifies ``grads``."""
    g = -grads if maximize else grads
    if is_zero(weight_decay):
        return g
    if isinstance(weight_decay, Tensor):
        return torch.addcmul(g, params, weight_decay.to(params.dtype))
    return g.add(params, alpha=weight_decay)


def apply_weight_decay(
    grads: Tensor, params: Tensor, weight_decay: Hyper, maximize: bool
) -> Tensor:
    """torch.optim's common gradient preamble: negate for ``maximize``, then add L2 decay."""
    if maximize:
        grads = -grads
    if not is_zero(weight_decay):
        grads = grads + weight_decay * params
    return grads


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` whose derivative at 0 is 0 instead of infinity.

    A fresh optimizer state holds all-zero second moments; plain ``sqrt`` there gives an infinite
    derivative and hence NaN meta-gradients. The forward value is bit-identical to ``x.sqrt()``.
    The double ``where`` keeps the unused branch finite, so it also works for higher-order grads.
    """
    if not x.requires_grad:
        return x.sqrt()
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0)
