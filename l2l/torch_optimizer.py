"""Drive any ``nn.Module`` with any l2l optimizer through the ``torch.optim.Optimizer`` API.

Each parameter tensor is treated as a batch of one optimizee, ``(1, numel)``. A param group's
plain-value hyperparameters (``lr`` and friends, from ``rule.hyperparameters()``) live in the
group like torch.optim's, so per-group settings and ``torch.optim.lr_scheduler`` work; the
per-parameter state is the rule's state dict, so ``state_dict``/``load_state_dict`` round-trip.
A learned optimizer is used frozen (``step`` runs under ``torch.no_grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from l2l.interface import BatchedOptimizer


class TorchOptimizer(torch.optim.Optimizer):
    """``TorchOptimizer(model.parameters(), baselines.Adam(lr=1e-3))``."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], rule: BatchedOptimizer) -> None:
        if not isinstance(rule, BatchedOptimizer):
            raise TypeError(f"rule must be an l2l BatchedOptimizer, got {type(rule).__name__}")
        self.rule = rule
        self._rules: dict[tuple, BatchedOptimizer] = {}
        super().__init__(params, defaults=dict(rule.hyperparameters()))

    def _rule_for(self, group: dict[str, Any]) -> BatchedOptimizer:
        base = self.rule.hyperparameters()
        changed = {k: group[k] for k in base if k in group and group[k] != base[k]}
        key = tuple(sorted((k, repr(v)) for k, v in changed.items()))
        if key not in self._rules:
            self._rules[key] = self.rule.with_hyperparameters(**changed) if changed else self.rule
        return self._rules[key]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rule = self._rule_for(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("l2l optimizers do not support sparse gradients")
                flat = p.detach().reshape(1, -1)
                state = self.state[p]
                if not state:
                    state.update(rule.init(flat))
                update, new_state = rule.update(p.grad.reshape(1, -1), dict(state), flat)
                p.add_(update.view_as(p))
                state.clear()
                state.update(new_state)
        return loss
