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
  schedule that changes ``lr`` every step does not accumulate rules.
- **Learned optimizers: step scale and weight decay.** A rule without an ``lr`` of its own (a
  learned optimizer) gets two group settings from the drop-in: ``lr``, a multiplier of its
  step (default 1: the rule as trained), and ``weight_decay``, decoupled (AdamW-style; default
  0): ``p <- (1 - lr * weight_decay) * p + lr * update``. So a ``torch.optim.lr_scheduler``
  scales the learned step (PyLO found schedules and weight decay matter for learned
  optimizers), and ``lr=1, weight_decay=0`` steps exactly as the rule does.
- **Speed.** A param group steps without a Python call per tensor (``l2l.flat_group``): a
  baseline runs its in-place ``step_`` once on lists of the group's tensors, each op one
  ``torch._foreach_*`` kernel (torch.optim's single-tensor arithmetic per tensor, bit for bit,
  nothing copied); a learned optimizer steps one flat ``(1, n)`` copy of the group (gathered and
  written back by one ``torch._foreach_copy_`` each), in chunks of whole tensors that keep its
  intermediates in cache. The state in ``self.state`` is views of the bucket's state.
- **Checked loading.** ``load_state_dict`` refuses, with a ``ValueError`` naming both
  optimizers, the state of a different algorithm (an SGD state dict for an Adam drop-in), and
  state shaped unlike the parameter it would be loaded into (naming the parameter).
- **Tensor layouts.** A rule that reads tensor structure (``uses_layout``: per-tensor
  normalisation, Adafactor factors, fan-ins; e.g. ``mlp_lopt``) is bound to the layout of the
  flat vector it steps: the group's parameters with gradients, in order (``group_layout``
  gives a whole group's).
- **Complex parameters** are stepped as their real views, as torch.optim does (real and
  imaginary parts are two coordinates), for baselines and learned optimizers alike; the
  baselines' per-coordinate state is kept complex, shaped like the parameter, as torch's is.

A learned optimizer is used frozen (``step`` runs under ``torch.no_grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from l2l.flat_group import FlatBucket, bucket_key
from l2l.flat_group import real_view as _real_view
from l2l.interface import BatchedOptimizer
from l2l.layout import ParamLayout
from l2l.range_checks import check_range

#: what the drop-in adds to the groups of a rule without an ``lr`` (see the module docstring)
LEARNED_GROUP_DEFAULTS = {"lr": 1.0, "weight_decay": 0.0}


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


def _real_state(torch_state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: _real_view(v) for k, v in torch_state.items()}


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
        # per param group (by position): (how many parameters had gradients, the flat buckets
        # that step them with their positions among those); rebuilt whenever they change
        self._flat: dict[int, tuple[int, list[tuple[FlatBucket, list[int]]]]] = {}
        defaults = {**rule.torch_group_constants(), **rule.hyperparameters()}
        self._extras = self._extra_settings()
        defaults.update({k: LEARNED_GROUP_DEFAULTS[k] for k in self._extras})
        super().__init__(params, defaults=defaults)
        zoo_name = getattr(rule, "pretrained_name", None)  # set by l2l.pretrained.load
        if zoo_name is not None:  # one log line where the entry is documented to fail
            from l2l.pretrained import warn_drop_in

            warn_drop_in(zoo_name, [p for g in self.param_groups for p in g["params"]])

    def _extra_settings(self) -> tuple[str, ...]:
        """The drop-in's own group settings: for a rule without ``lr``, those of
        ``LEARNED_GROUP_DEFAULTS`` that are not the rule's hyperparameters."""
        if self._has_lr:
            return ()
        return tuple(k for k in LEARNED_GROUP_DEFAULTS if k not in self._names)

    def __getstate__(self) -> dict[str, Any]:
        """torch.optim pickles defaults, state and groups only; the rule must come along."""
        return {**super().__getstate__(), "rule": self.rule}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "rule" in state:  # unpickling (load_state_dict passes state and groups only)
            self._names = tuple(self.rule.hyperparameters())
            self._has_lr = "lr" in self._names
            self._extras = self._extra_settings()
        self._cache = {}
        self._flat = {}

    def __repr__(self) -> str:
        return f"TorchOptimizer({self.rule!r}, {len(self.param_groups)} param group(s))"

    # -- param groups -------------------------------------------------------------------------

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
        """One step of every parameter that has a gradient, in place (like torch.optim); a
        parameter without one (``grad is None``) is neither moved nor has its state advanced.
        Each param group steps as one flat vector per :class:`~l2l.flat_group.FlatBucket`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("l2l optimizers do not support sparse gradients")
            if [g.shape for g in grads] != [p.shape for p in params]:
                bad = next(i for i, (g, p) in enumerate(zip(grads, params)) if g.shape != p.shape)
                raise ValueError(f"gradient of shape {tuple(grads[bad].shape)} for a parameter "
                                 f"of shape {tuple(params[bad].shape)}")
            rule = self._rule_for(index, group)
            scale, decay = self._scale_and_decay(group)
            for bucket, members in self._buckets(index, rule, params):
                bucket.step(rule, [grads[i] for i in members] if len(members) != len(params)
                            else grads, self.state, scale, decay)
        return loss

    def _buckets(self, index: int, rule: BatchedOptimizer,
                 params: list[Tensor]) -> list[tuple[FlatBucket, list[int]]]:
        """The flat buckets stepping ``params`` (param group ``index``'s parameters that have
        a gradient), each with the positions of its parameters in ``params``: the cached ones
        while they still hold ``params`` and the state, else built again from ``self.state``
        (a first step, a loaded state dict, another set of parameters with gradients)."""
        cached = self._flat.get(index)
        if cached is not None and cached[0] == len(params):
            buckets = cached[1]
            if len(buckets) == 1:  # the usual case: no index juggling
                if buckets[0][0].current(params, self.state):
                    return buckets
            elif all(b.current([params[i] for i in m], self.state) for b, m in buckets):
                return buckets
        keep = {id(p) for p in params}
        if cached is not None:
            for bucket, _ in cached[1]:
                bucket.detach(self.state, keep)
        groups: dict[tuple, list[int]] = {}
        rows = []
        for i, p in enumerate(params):
            real = _real_view(p)
            own = rule.from_torch_state(_real_state(self.state.get(p) or {}), real)
            rule.check_shapes(None, own, real.new_empty((1, real.numel()), device="meta"))
            rows.append(own)
            groups.setdefault(bucket_key(p, own, rule.scalar_state_keys), []).append(i)
        buckets = [(FlatBucket([params[i] for i in m], [rows[i] for i in m], rule, self.state),
                    m) for m in groups.values()]
        self._flat[index] = (len(params), buckets)
        return buckets

    def _scale_and_decay(self, group: dict[str, Any]) -> tuple[float, float]:
        """The group's step multiplier and decoupled weight decay (a learned optimizer's; 1 and
        0 for rules with their own ``lr``); a ValueError unless both are numbers >= 0."""
        values = []
        for key in ("lr", "weight_decay"):
            if key not in self._extras:
                values.append(LEARNED_GROUP_DEFAULTS[key] if key == "lr" else 0.0)
                continue
            value = _plain(group.get(key, LEARNED_GROUP_DEFAULTS[key]))
            check_range(f"param_group[{key!r}] of TorchOptimizer({_rule_name(self.rule)})",
                        value, 0.0)
            values.append(float(value))
        return values[0], values[1]

    def group_layout(self, index: int = 0) -> ParamLayout:
        """The layout of param group ``index``'s parameters flattened and concatenated in
        order (what a rule stepping the group as one flat buffer is bound to)."""
        return ParamLayout.from_tensors(self.param_groups[index]["params"])

    # -- state dicts --------------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's ``load_state_dict``, after checking that the state is this rule's: a
        state dict of another algorithm, or state shaped unlike its parameter, is a
        ``ValueError`` naming both."""
        self._check_compatible(state_dict)
        self._check_state_shapes(state_dict)
        super().load_state_dict(state_dict)

    def _check_state_shapes(self, state_dict: dict[str, Any]) -> None:
        """Refuse, with a ``ValueError`` naming the parameter and both shapes, saved state that
        is not shaped like the parameter it would be loaded into. The rule's ``(1, n)`` views
        would otherwise reshape the state of a ``(2, 3)`` parameter into a ``(3, 2)`` one and
        step silently (torch.optim fails at the first step), or fail at the first step with a
        bare reshape error (another size). Group sizes that differ are torch's own error."""
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups) or any(
            len(a.get("params", [])) != len(b["params"])
            for a, b in zip(saved_groups, self.param_groups)
        ):
            return  # super().load_state_dict raises torch's ValueError for this
        saved = state_dict.get("state", {})
        trailing = {k: tuple(v.shape[2:]) for k, v in self.rule.init(torch.zeros(1, 2)).items()}
        ids = (pid for group in saved_groups for pid in group["params"])
        params = (p for group in self.param_groups for p in group["params"])
        for index, (pid, p) in enumerate(zip(ids, params)):
            for key, value in saved.get(pid, {}).items():
                if not isinstance(value, Tensor):
                    continue
                if key in self.rule.scalar_state_keys:
                    ok, expected = value.numel() == 1, "one number"
                else:
                    extra = trailing.get(key, ())
                    shape = tuple(p.shape) + ((2, *extra) if p.is_complex() and extra else extra)
                    ok, expected = tuple(value.shape) == shape, f"shape {shape}"
                if not ok:
                    raise ValueError(
                        f"cannot load this state dict into TorchOptimizer({_rule_name(self.rule)})"
                        f": parameter {index} has shape {tuple(p.shape)} but its saved state "
                        f"{key!r} has shape {tuple(value.shape)} (expected {expected}); load it "
                        "into the model (and parameter order) it was saved from")

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
