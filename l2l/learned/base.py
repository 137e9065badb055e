"""What every learned optimizer declares, so that nothing else in l2l needs to know its class.

A learned optimizer is a :class:`~l2l.interface.BatchedOptimizer` (pure ``init``/``update`` over
``(B, n)`` batches) that is also an ``nn.Module`` whose parameters are meta-trained. The
meta-trainer, checkpoints, configs and the ``torch.optim`` drop-in only ever use what this class
declares:

* ``name``: the registered name (``optimizer=<name>`` in configs, stored in checkpoints);
* ``config``: the plain-value architecture settings, exactly the ``__init__`` arguments, so
  ``type(opt).from_config(opt.config)`` rebuilds the same architecture;
* ``reads_params``: whether ``update`` reads the parameters (declared, never guessed): the
  meta-trainer's exact first-order "surrogate" estimator is valid only when it does not;
* ``sequence_form`` (optional): the update is ``from_features(*features(grads, state))`` with
  inputs that are constants of the learned weights, and ``sequence_updates`` recomputes a whole
  unroll's updates at once, differentiably: the fused "sequence" estimator uses it.

Adding an architecture = one module in ``l2l/learned/`` defining a subclass with a unique
``name`` (the registry finds it), one ``conf/optimizer/<name>.yaml``, and its tests.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from l2l.interface import BatchedOptimizer, State
from l2l.signatures import keyword_parameters


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """An architecture size: an int (not a float like 2.5, not a bool) in ``[low, high]``; the
    upper bound stops a typo from asking for terabytes."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"invalid {name}={value!r}: {name} must be an integer in "
                         f"[{low}, {high}]")
    return value


class LearnedOptimizer(BatchedOptimizer, nn.Module):
    """Base class of every meta-trainable optimizer."""

    name: ClassVar[str] = "learned"
    #: True if ``update`` reads ``params`` (e.g. weight decay). Subclasses must say.
    reads_params: ClassVar[bool] = True
    #: One line for ``l2l.registry`` listings and the README table.
    summary: ClassVar[str] = ""
    #: True if the optimizer implements the sequence protocol below (``features``,
    #: ``from_features``, ``sequence_updates``); the "sequence" estimator needs it.
    sequence_form: ClassVar[bool] = False

    def __init__(self, **config: Any) -> None:
        nn.Module.__init__(self)
        self.config: dict[str, Any] = dict(config)
        #: the meta-training iteration these weights come from, where known (0: untrained), so
        #: that no report presents an untrained optimizer as a result without saying so
        self.meta_trained_iterations: int | None = None

    # -- the optional sequence protocol (first-order meta-training of a whole unroll at once) ---

    def features(self, grads: Tensor, state: State) -> tuple[Tensor, State]:
        """The per-coordinate inputs ``(B, n, F)`` of the learned network at this step, and the
        state with its non-learned parts (moments, step counts) advanced. They depend on the
        gradients and the state only, never on the learned weights: that is what lets a whole
        unroll be replayed as one sequence-model evaluation over stored inputs."""
        raise NotImplementedError(f"{self.name} has no sequence form")

    def from_features(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One update ``(B, n)`` from ``features``' output; ``update`` is the composition."""
        raise NotImplementedError(f"{self.name} has no sequence form")

    def sequence_updates(self, xs: Tensor, states: list[State]) -> Tensor:
        """All updates ``(K, B, n)`` of an unroll from its inputs ``xs (K, B, n, F)`` and the
        ``K + 1`` states the (frozen) rollout went through (``states[0]``: before step 0),
        differentiable in the learned weights; equal to the K ``from_features`` calls."""
        raise NotImplementedError(f"{self.name} has no sequence form")

    # -- populations of perturbed copies (the evolution-strategies estimators) ------------------

    def particle_axis(self) -> bool:
        """Whether ``update``, run through ``torch.func.functional_call`` with every learned
        weight of shape ``S`` replaced by one of shape ``S + (B, 1)``, gives optimizee ``b`` the
        update of the weights ``w[..., b, 0]``. Then ``B`` differently perturbed copies (the
        particles of ``l2l.truncated_step``) update as one batch; otherwise they update one
        by one. Declared, never guessed; False unless a subclass says so."""
        return False

    # -- configs and checkpoints --------------------------------------------------------------

    #: fields added to the architecture after checkpoints were written without them, each with
    #: the value that rebuilds those checkpoints' rule exactly (so they keep loading); any other
    #: missing field still makes a checkpoint incomplete
    added_fields: ClassVar[dict[str, Any]] = {}

    @classmethod
    def config_fields(cls) -> dict[str, Any]:
        """The architecture's fields and their defaults (``inspect.Parameter.empty`` if none)."""
        return keyword_parameters(cls)

    @classmethod
    def check_config(cls, config: dict[str, Any], *, source: str = "config",
                     complete: bool = False) -> None:
        """Refuse unknown fields (and, if ``complete``, missing ones) with a one-line message."""
        fields = cls.config_fields()
        unknown = sorted(set(config) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown} for learned optimizer "
                             f"{cls.name!r}; valid fields are {', '.join(fields)}")
        if complete:
            missing = sorted(set(fields) - set(config) - set(cls.added_fields))
            if missing:
                raise ValueError(f"{source}: field(s) {missing} of learned optimizer {cls.name!r} "
                                 "are missing; the checkpoint is incomplete or from another "
                                 "version: re-create it with this version of l2l")

    @classmethod
    def from_config(cls, config: dict[str, Any], *, source: str = "config",
                    complete: bool = False) -> LearnedOptimizer:
        """Build the architecture ``config`` describes (unknown fields are refused)."""
        cls.check_config(config, source=source, complete=complete)
        config = {**cls.added_fields, **config}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return cls(**values)

    def payload(self, weights: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """What a checkpoint stores: the registered name, the architecture, the weights."""
        return {"name": self.name, "config": dict(self.config),
                "weights": self.state_dict() if weights is None else weights}

    # -- BatchedOptimizer's hyperparameter protocol --------------------------------------------

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.config)

    def with_hyperparameters(self, **overrides: Any) -> LearnedOptimizer:
        """A copy with some settings replaced and the learned weights kept (so the change must
        leave the weights' shapes alone, e.g. an output scale, not a hidden size)."""
        clone = type(self).from_config({**self.config, **overrides})
        try:
            clone.load_state_dict(self.state_dict())
        except RuntimeError as error:
            raise ValueError(
                f"cannot change {sorted(overrides)} of a trained {self.name} optimizer: the "
                f"learned weights would not fit; build a new one instead") from error
        reference = next(iter(self.parameters()), None)
        clone = clone if reference is None else clone.to(reference)
        if self.layouts:  # a bound rule stays bound
            clone = clone.with_layout(self.layouts.values())
        return clone

    @property
    def dtype(self) -> torch.dtype:
        reference = next(iter(self.parameters()), None)
        return torch.get_default_dtype() if reference is None else reference.dtype

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
