"""Drive any ``nn.Module`` with any l2l optimizer through the ``torch.optim.Optimizer`` API.

``TorchOptimizer(model.parameters(), baselines.Adam(lr=1e-3))`` *is* a ``torch.optim`` optimizer:

- **State in torch.optim's layout.** Each parameter's state is the rule's state for a batch of
  one, stored shaped like the parameter under the rule's keys, which for the baselines are
  torch.optim's own (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``[, ``max_exp_avg_sq``]; SGD with
  momentum: ``momentum_buffer``; ...), with ``step`` a 0-dim float tensor as torch keeps it
  (see ``BatchedOptimizer.to_torch_state``). Param groups hold the rule's hyperparameters under
  torch's names, plus the settings torch keeps there and the rule fixes (NAG: ``nesterov=True``).
  So ``state_dict()``s move between ``torch.optim.Adam`` and ``TorchOptimizer(baselines.Adam())``
  in both directions, and training continues identically.
- **Schedulers.** ``torch.optim.lr_scheduler`` writes ``group["lr"]``; the next ``step`` uses
  the rule with that group's hyperparameters. Only the latest rule per group is cached, so a
  schedule that changes ``lr`` every step does not accumulate rules. A learned optimizer has no
  ``lr``: reading or writing ``group["lr"]`` (what every scheduler does first) raises a
  ``TypeError`` that says so.
- **Speed.** ``step`` calls the rule's in-place ``step_`` on views of the parameter, its
  gradient and its state, which for the baselines is torch.optim's single-tensor arithmetic:
  no update tensor is allocated and read again.
- **Checked loading.** ``load_state_dict`` refuses, with a ``ValueError`` naming both
  optimizers, the state of a different algorithm (an SGD state dict for an Adam drop-in).

A learned optimizer is used frozen (``step`` runs under ``torch.no_grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from l2l.interface import BatchedOptimizer


class _NoLearningRateGroup(dict):
    """A param group of a rule without a learning rate (a learned optimizer).

    ``torch.optim.lr_scheduler`` starts with ``group["lr"]``; a plain dict would raise a bare
    ``KeyError: 'lr'``. This one raises a ``TypeError`` that names the problem, and refuses to
    have an ``lr`` set (which the rule would silently ignore).
    """

    rule_name = "a learned optimizer"

    def _refuse(self) -> TypeError:
        return TypeError(
            f"TorchOptimizer({self.rule_name}) has no learning rate 'lr': the rule's step size "
            "is learned, so torch.optim.lr_scheduler cannot schedule it and param_group['lr'] "
            "cannot be set; its hyperparameters are "
            f"{sorted(k for k in self if k != 'params')}"
        )

    def __missing__(self, key: str) -> Any:
        if key == "lr":
            raise self._refuse()
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "lr":
            raise self._refuse()
        super().__setitem__(key, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key == "lr" and key not in self:
            raise self._refuse()
        return super().setdefault(key, default)

    def __reduce__(self) -> tuple:
        return (_no_lr_group, (self.rule_name, dict(self)))


def _no_lr_group(rule_name: str, items: dict) -> _NoLearningRateGroup:
    group = _NoLearningRateGroup(items)
    group.rule_name = rule_name
    return group


def _rule_name(rule: BatchedOptimizer) -> str:
    return type(rule).__name__


def _same(a: Any, b: Any) -> bool:
    """Equal hyperparameter values, without ever asking a tensor for its truth value."""
    if a is b:
        return True
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - exotic values: treat as changed, which is always safe
        return False


def _plain(value: Any) -> Any:
    """A one-element tensor hyperparameter (torch allows ``lr=torch.tensor(0.01)``) as a
    float, so the rule runs torch's scalar kernels; anything else unchanged."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        return value.item()
    return value


class TorchOptimizer(torch.optim.Optimizer):
    """``TorchOptimizer(model.parameters(), baselines.Adam(lr=1e-3))``: any l2l optimizer as a
    ``torch.optim.Optimizer`` (see the module docstring)."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], rule: BatchedOptimizer) -> None:
        if not isinstance(rule, BatchedOptimizer):
            raise TypeError(f"rule must be an l2l BatchedOptimizer, got {type(rule).__name__}")
        self.rule = rule
        self._names = tuple(rule.hyperparameters())
        self._has_lr = "lr" in self._names
        # per param group (by position): (the group's hyperparameter values, the rule for them)
        self._cache: dict[int, tuple[tuple, BatchedOptimizer]] = {}
        # per parameter: (its torch-layout state tensors, the rule-layout views of them)
        self._views: dict[Tensor, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        defaults = {**rule.torch_group_constants(), **rule.hyperparameters()}
        super().__init__(params, defaults=defaults)
        zoo_name = getattr(rule, "pretrained_name", None)  # set by l2l.pretrained.load
        if zoo_name is not None:  # one log line where the entry is documented to fail
            from l2l.pretrained import warn_drop_in

            warn_drop_in(zoo_name, [p for g in self.param_groups for p in g["params"]])

    def __getstate__(self) -> dict[str, Any]:
        """torch.optim pickles defaults, state and groups only; the rule must come along."""
        return {**super().__getstate__(), "rule": self.rule}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "rule" in state:  # unpickling (load_state_dict passes state and groups only)
            self._names = tuple(self.rule.hyperparameters())
            self._has_lr = "lr" in self._names
        self._cache = {}
        self._views = {}

    def __repr__(self) -> str:
        return f"TorchOptimizer({self.rule!r}, {len(self.param_groups)} param group(s))"

    # -- param groups -------------------------------------------------------------------------

    def _wrap_group(self, group: dict) -> dict:
        if self._has_lr or isinstance(group, _NoLearningRateGroup):
            return group
        if "lr" in group:
            raise TypeError(
                f"TorchOptimizer({_rule_name(self.rule)}) has no learning rate 'lr' (its step "
                "size is learned): remove 'lr' from the param group"
            )
        return _no_lr_group(_rule_name(self.rule), group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(self._wrap_group(param_group))

    def _rule_for(self, index: int, group: dict[str, Any]) -> BatchedOptimizer:
        """The rule with this group's hyperparameters; only the latest one per group is kept."""
        values = tuple(group[k] for k in self._names)
        cached = self._cache.get(index)
        if cached is not None and all(map(_same, cached[0], values)):
            return cached[1]
        base = self.rule.hyperparameters()
        changed = {
            k: _plain(v) for k, v in zip(self._names, values) if not _same(v, base[k])
        }
        rule = self.rule.with_hyperparameters(**changed) if changed else self.rule
        self._cache[index] = (values, rule)
        return rule

    # -- the step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step of every parameter that has a gradient, in place (like torch.optim)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            rule = self._rule_for(index, group)
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("l2l optimizers do not support sparse gradients")
                self._step_param(rule, p, grad)
        return loss

    def _step_param(self, rule: BatchedOptimizer, p: Tensor, grad: Tensor) -> None:
        """``rule.step_`` on ``(1, numel)`` views of ``p``, its gradient and its state.

        The rule-layout views of a parameter's state are kept between steps for as long as the
        state dict holds the very tensors they view (an in-place rule never replaces them), so
        a step costs no layout conversion; anything else (a first step, a loaded state dict, a
        rule that returns new tensors) converts again, and checks the shapes then.
        """
        flat = p.view(1, -1) if p.is_contiguous() else p.reshape(1, -1)
        torch_state = self.state.get(p)  # no entry for a stateless rule, as in torch
        cached = self._views.get(p)
        if (
            cached is not None
            and torch_state is not None
            and len(cached[0]) == len(torch_state)
            and all(torch_state.get(k) is v for k, v in cached[0].items())
        ):
            rows = cached[1]
            known = dict(rows)
        else:
            rows = rule.from_torch_state(torch_state or {}, p)
            rule.check_shapes(None, rows, flat)
            known = None
        g = grad.view(1, -1) if grad.is_contiguous() else grad.reshape(1, -1)
        if g.shape != flat.shape:
            raise ValueError(f"gradient of shape {tuple(grad.shape)} for a parameter of shape "
                             f"{tuple(p.shape)}")
        rule._step_(g, rows, flat)  # shapes checked above; autograd is off (step is no_grad)
        if flat.data_ptr() != p.data_ptr():  # a non-contiguous parameter: write back
            p.copy_(flat.view(p.shape))
        if known is not None and len(known) == len(rows) and all(
            rows.get(k) is v for k, v in known.items()
        ):
            return  # updated in place: the state dict's tensors already hold the new state
        new = rule.to_torch_state(rows, p)
        if torch_state is not None:
            torch_state.clear()
            torch_state.update(new)
        elif new:
            self.state[p] = new
        if new:
            self._views[p] = (dict(new), {k: v for k, v in rows.items()})

    # -- state dicts --------------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's ``load_state_dict``, after checking that the state is this rule's: a
        state dict of another algorithm is a ``ValueError`` naming both."""
        self._check_compatible(state_dict)
        super().load_state_dict(state_dict)
        self.param_groups = [self._wrap_group(g) for g in self.param_groups]

    def _check_compatible(self, state_dict: dict[str, Any]) -> None:
        ours = _rule_name(self.rule)
        groups = state_dict.get("param_groups", [])
        saved_state = state_dict.get("state", {})
        constants = self.rule.torch_group_constants()
        for group in groups:
            problems = [f"it has no {k!r}" for k in self._names if k not in group]
            problems += [
                f"it has {k}={group[k]!r} where {ours} needs {v!r}"
                for k, v in constants.items()
                if k in group and not _same(group[k], v)
            ]
            rule = self.rule
            if not problems:
                base = self.rule.hyperparameters()
                changed = {k: _plain(group[k]) for k in self._names if not _same(group[k], base[k])}
                try:
                    rule = self.rule.with_hyperparameters(**changed) if changed else self.rule
                except (ValueError, TypeError) as error:
                    problems.append(str(error))
            if not problems:
                expected = set(rule.to_torch_state(rule.init(torch.zeros(1, 2)), torch.zeros(2)))
                for pid in group.get("params", []):
                    keys = set(saved_state.get(pid, {}))
                    if keys and keys != expected:
                        problems.append(
                            f"its state holds {sorted(keys)} where {ours} keeps {sorted(expected)}"
                        )
                        break
            if problems:
                raise ValueError(
                    f"cannot load this state dict into TorchOptimizer({ours}): it looks like the "
                    f"state of {_guess(group)}, not {ours}'s ({'; '.join(problems)})"
                )


def _guess(group: dict[str, Any]) -> str:
    """Which optimizer a saved param group belongs to, for error messages: the l2l baseline
    (and its torch.optim twin) whose hyperparameter names and fixed settings it has."""
    import baselines  # here, not at the top: baselines import l2l

    twins = {
        "SGD": "SGD", "Momentum": "SGD", "NAG": "SGD", "AdaGrad": "Adagrad",
        "RMSProp": "RMSprop", "AdaDelta": "Adadelta", "Adam": "Adam", "Nadam": "NAdam",
    }
    matches = []
    for name in baselines.__all__:
        rule = getattr(baselines, name)()
        names = set(rule.hyperparameters())
        constants = rule.torch_group_constants()
        if not names <= set(group):
            continue
        if any(k not in group or not _same(group[k], v) for k, v in constants.items()):
            continue
        try:
            rule.with_hyperparameters(**{k: _plain(group[k]) for k in names})
        except (ValueError, TypeError):
            continue
        matches.append((len(names) + len(constants), name))
    if not matches:
        keys = sorted(k for k in group if k != "params")
        return f"an unknown optimizer (param group keys {keys})"
    name = max(matches)[1]
    return f"torch.optim.{twins[name]} / l2l {name}"
