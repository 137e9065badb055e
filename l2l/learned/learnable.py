"""Classic rules whose hyperparameters are meta-trained: the honest yardstick for learned ones.

A learned optimizer that beats Adam with a tuned learning rate may only have learned a better
learning rate, momentum or schedule. These optimizers meta-learn exactly that -- the learning
rate, the betas / momentum, epsilon and, optionally, a learning-rate schedule over the horizon
-- with the same meta-trainer, budget and problems, and nothing else. Two schedules:

- ``schedule_steps=T``: a free multiplier per step (``T`` meta-parameters; for meta-gradients
  by back-propagation, where each step's entry gets its own exact gradient);
- ``schedule_degree=d`` with ``schedule_horizon=T``: ``log lr`` a polynomial of degree ``d`` in
  the fraction of the run ``f = min(t / T, 1)``, ``log lr0 + c_0 + c_1 f + ... + c_d f^d`` (every
  ``c`` starting at 0): warm-ups, decays and both, in ``d`` meta-parameters, few enough for the
  evolution-strategies estimators (PES's variance grows with the dimension), which a per-step
  table of 1,000 entries is not. A win over them is a
win over "just a tuned schedule" (learned_optimization's ``LearnableAdam`` plays this role).

Parametrisation: every hyperparameter is its initial value times ``exp(delta)`` (for betas:
``1 - (1 - beta0) * exp(delta)``, clamped at 0), with every ``delta`` starting at 0, so the
untrained optimizer is exactly ``baselines.Adam`` / ``baselines.Momentum`` with the initial
values; and positivity (and beta < 1) hold whatever the meta-optimizer does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from baselines import Adam, Momentum
from l2l.interface import BatchedOptimizer, State
from l2l.learned.base import LearnedOptimizer, check_int
from l2l.range_checks import check_betas, check_range


class _Learnable(LearnedOptimizer):
    """Shared machinery: a learning rate with an optional per-step schedule."""

    reads_params = False

    #: checkpoints from before the polynomial schedule have none
    added_fields = {"schedule_degree": 0, "schedule_horizon": 0}

    def _init_schedule(self, lr: float, schedule_steps: int, schedule_degree: int,
                       schedule_horizon: int) -> None:
        check_range("lr", lr, 0.0, low_inclusive=False)
        check_int("schedule_steps", schedule_steps, 0, 100_000)
        check_int("schedule_degree", schedule_degree, 0, 8)
        check_int("schedule_horizon", schedule_horizon, 0, 10_000_000)
        if schedule_degree and schedule_steps:
            raise ValueError(f"schedule_steps={schedule_steps} and schedule_degree="
                             f"{schedule_degree} are two schedules: choose one (set the other "
                             "to 0)")
        if schedule_degree and not schedule_horizon:
            raise ValueError(f"schedule_degree={schedule_degree} needs schedule_horizon, the "
                             "steps over which the run's fraction goes from 0 to 1: set it to "
                             "the run's length (e.g. schedule_horizon=1000)")
        self.log_lr_delta = nn.Parameter(torch.zeros(()))
        # no parameter at all without a schedule (an empty one would never get a gradient)
        self.log_schedule = nn.Parameter(torch.zeros(schedule_steps)) if schedule_steps else None
        self.schedule_coefs = (nn.Parameter(torch.zeros(schedule_degree)) if schedule_degree
                               else None)

    def learning_rate(self, step: Tensor) -> Tensor:
        """Per-instance learning rate ``(B, 1)`` at ``step`` (0-based, one per instance); a
        per-step schedule's last entry, and the polynomial's value at ``f = 1``, hold beyond
        the schedule's end."""
        log_lr = self.log_lr_delta.expand_as(step)
        if self.log_schedule is not None:
            index = step.long().clamp(max=self.log_schedule.numel() - 1)
            log_lr = log_lr + self.log_schedule[index]
        if self.schedule_coefs is not None:
            log_lr = log_lr + self._poly(step.to(self.schedule_coefs.dtype), self.schedule_coefs)
        return self.config["lr"] * torch.exp(log_lr)

    def _poly(self, step: Tensor, coefs: Tensor) -> Tensor:
        """``c_1 f + ... + c_d f^d`` at ``f = min(step / schedule_horizon, 1)`` (Horner), for
        ``coefs`` of shape ``(d,)`` or, with a particle axis, ``(d, B, 1)``."""
        f = (step / self.config["schedule_horizon"]).clamp(max=1.0)
        total = torch.zeros_like(f)
        for k in range(coefs.shape[0] - 1, -1, -1):
            total = (total + coefs[k]) * f
        return total

    def particle_axis(self) -> bool:
        # every weight enters as a scalar (or a polynomial's coefficients) broadcast over
        # (B, 1); a per-step schedule is indexed by step
        return self.log_schedule is None

    @staticmethod
    def _beta(beta0: float, delta: Tensor) -> Tensor:
        return (1 - (1 - beta0) * torch.exp(delta)).clamp(min=0.0)

    def _rule(self, state: State) -> BatchedOptimizer:
        raise NotImplementedError

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        return self._rule(state).update(grads, state, params)

    def _frozen_values(self) -> dict[str, object]:
        """The hyperparameters as Python floats (``lr``: a list, one per step of the schedule),
        recomputed only when a learned weight changed: the frozen step then runs the
        baseline's own float kernels, as cheap as ``torch.optim``'s, instead of building tensor
        hyperparameters and a fresh rule per call."""
        # the learned weights are this module's own (no submodules): its _parameters dict
        key = tuple((p.data_ptr(), p._version) for p in self._parameters.values()
                    if p is not None)
        cached = getattr(self, "_frozen_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            values = self._float_values()
            log_lr = self.log_lr_delta
            if self.log_schedule is not None:  # one lr per step, the last one held beyond
                log_lr = log_lr + self.log_schedule
            if self.schedule_coefs is not None:  # one per step to the horizon, then held
                steps = torch.arange(self.config["schedule_horizon"] + 1,
                                     dtype=self.schedule_coefs.dtype)
                log_lr = log_lr + self._poly(steps, self.schedule_coefs)
            values["lr"] = (self.config["lr"] * torch.exp(log_lr)).reshape(-1).tolist()
        self._frozen_cache = (key, values)
        return values

    def _float_values(self) -> dict[str, object]:
        raise NotImplementedError

    def _float_rule(self, values: dict[str, object], lr: float) -> BatchedOptimizer:
        raise NotImplementedError

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        if state["step"].numel() != 1:  # a batch: per-instance steps index the schedule
            super()._step_(grads, state, params)
            return
        values = self._frozen_values()
        lrs = values["lr"]
        lr = lrs[min(int(state["step"].item()), len(lrs) - 1)]
        rules = values.setdefault("rules", {})  # one per distinct lr (one without a schedule)
        rule = rules.get(lr)
        if rule is None:
            rule = rules[lr] = self._float_rule(values, lr)
        rule._step_(grads, state, params)


class LearnableAdam(_Learnable):
    """Adam with meta-learned ``lr`` (and schedule), ``betas`` and ``eps``."""

    name = "learnable_adam"
    summary = "Adam whose lr, betas, eps (and optional lr schedule) are meta-trained"

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, schedule_steps: int = 0, schedule_degree: int = 0,
                 schedule_horizon: int = 0) -> None:
        check_betas(tuple(betas))
        check_range("eps", eps, 0.0, low_inclusive=False)
        super().__init__(lr=float(lr), betas=[float(b) for b in betas], eps=float(eps),
                         schedule_steps=int(schedule_steps), schedule_degree=schedule_degree,
                         schedule_horizon=schedule_horizon)
        self._init_schedule(lr, schedule_steps, schedule_degree, schedule_horizon)
        self.beta_deltas = nn.Parameter(torch.zeros(2))
        self.log_eps_delta = nn.Parameter(torch.zeros(()))

    def init(self, params: Tensor) -> State:
        return Adam().init(params)

    def _rule(self, state: State) -> Adam:
        b1, b2 = self.config["betas"]
        return Adam(lr=self.learning_rate(state["step"]),
                    betas=(self._beta(b1, self.beta_deltas[0]),
                           self._beta(b2, self.beta_deltas[1])),
                    eps=self.config["eps"] * torch.exp(self.log_eps_delta))

    def _float_values(self) -> dict[str, object]:
        b1, b2 = self.config["betas"]
        return {"betas": (float(self._beta(b1, self.beta_deltas[0])),
                          float(self._beta(b2, self.beta_deltas[1]))),
                "eps": float(self.config["eps"] * torch.exp(self.log_eps_delta))}

    def _float_rule(self, values: dict[str, object], lr: float) -> Adam:
        return Adam(lr=lr, betas=values["betas"], eps=values["eps"])


class LearnableMomentum(_Learnable):
    """SGD with momentum (heavy ball) with meta-learned ``lr`` (and schedule) and ``momentum``."""

    name = "learnable_momentum"
    summary = "SGD+momentum whose lr, momentum (and optional lr schedule) are meta-trained"

    def __init__(self, lr: float = 1e-2, momentum: float = 0.9, schedule_steps: int = 0,
                 schedule_degree: int = 0, schedule_horizon: int = 0) -> None:
        check_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        super().__init__(lr=float(lr), momentum=float(momentum),
                         schedule_steps=int(schedule_steps), schedule_degree=schedule_degree,
                         schedule_horizon=schedule_horizon)
        self._init_schedule(lr, schedule_steps, schedule_degree, schedule_horizon)
        self.momentum_delta = nn.Parameter(torch.zeros(()))

    def init(self, params: Tensor) -> State:
        return Momentum().init(params)

    def _rule(self, state: State) -> Momentum:
        momentum = self._beta(self.config["momentum"], self.momentum_delta).clamp(min=1e-6)
        return Momentum(lr=self.learning_rate(state["step"]), momentum=momentum)

    def _float_values(self) -> dict[str, object]:
        momentum = self._beta(self.config["momentum"], self.momentum_delta).clamp(min=1e-6)
        return {"momentum": float(momentum)}

    def _float_rule(self, values: dict[str, object], lr: float) -> Momentum:
        return Momentum(lr=lr, momentum=values["momentum"])
