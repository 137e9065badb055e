"""An Adam-anchored learned optimizer (after Harrison, Metz & Sohl-Dickstein, 2022).

A learned optimizer that starts as noise has to rediscover what Adam already does; one anchored
to Adam starts *as* Adam and only has to learn what improves on it. Per coordinate::

    a_t   = Adam(lr=1, betas, eps) update            (the nominal direction, -m^/(sqrt(v^)+eps))
    r     = sqrt(v^) + eps                             (Adam's own scale estimate)
    x_t   = ( m_k / r for each momentum decay k,  g / r,  a_t,  tanh(t / tau) for each tau )
    s, c  = heads(net(clamp(x_t, -10, 10)))            net: an MLP or a coordinatewise LSTM
    update = eta * ( exp(s) * a_t  -  correction_scale * tanh(c) )

``eta`` is a learned scalar (``lr * exp(delta)``, ``delta`` starting at 0) and both heads start
at zero, so the untrained optimizer is exactly ``baselines.Adam(lr, betas, eps)``, step for step.
Every input is scale-free (a ratio of gradient statistics), so the rule does not care whether the
loss is multiplied by 1000, and ``exp(s)`` makes the learned part a per-coordinate, per-step
multiplicative change of Adam's step plus a bounded additive correction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from baselines import Adam
from l2l.interface import State
from l2l.learned.base import LearnedOptimizer, check_int
from l2l.learned.core import CoordinatewiseLSTM, zero_linear
from l2l.range_checks import check_betas, check_range

CORES = ("mlp", "lstm")


class AdamAnchored(LearnedOptimizer):
    """Adam times a learned per-coordinate scale, plus a bounded learned correction."""

    name = "adam_anchored"
    reads_params = False
    scalar_state_keys = frozenset({"adam_step"})
    summary = "Adam x exp(learned scale) + bounded learned correction; untrained = Adam"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99),
        time_scales: tuple[float, ...] = (10.0, 100.0, 1000.0),
        core: str = "mlp",
        hidden_size: int = 32,
        num_layers: int = 1,
        correction_scale: float = 1.0,
        zero_head: bool = True,
    ) -> None:
        check_range("lr", lr, 0.0, low_inclusive=False)
        check_betas(tuple(betas))
        check_range("eps", eps, 0.0, low_inclusive=False)
        for decay in momentum_decays:
            check_range("momentum_decays[i]", decay, 0.0, 1.0, high_inclusive=False)
        for tau in time_scales:
            check_range("time_scales[i]", tau, 0.0, low_inclusive=False)
        if core not in CORES:
            raise ValueError(f"unknown core {core!r}: choose one of {', '.join(CORES)}")
        check_int("hidden_size", hidden_size, 1, 4096)
        check_int("num_layers", num_layers, 1, 16)
        check_range("correction_scale", correction_scale, 0.0)
        super().__init__(lr=float(lr), betas=[float(b) for b in betas], eps=float(eps),
                         momentum_decays=[float(d) for d in momentum_decays],
                         time_scales=[float(t) for t in time_scales], core=core,
                         hidden_size=int(hidden_size), num_layers=int(num_layers),
                         correction_scale=float(correction_scale), zero_head=bool(zero_head))
        self.num_inputs = len(momentum_decays) + 2 + len(time_scales)
        self.log_lr_delta = nn.Parameter(torch.zeros(()))
        if core == "lstm":
            self.net: nn.Module = CoordinatewiseLSTM(self.num_inputs, int(hidden_size),
                                                     int(num_layers))
            width = self.net.output_size
        else:
            layers: list[nn.Module] = []
            width = self.num_inputs
            for _ in range(int(num_layers)):
                layers += [nn.Linear(width, int(hidden_size)), nn.ReLU()]
                width = int(hidden_size)
            self.net = nn.Sequential(*layers)
        self.head = zero_linear(width, 2, bool(zero_head))
        #: the anchor, pure (its state lives in ``adam_*`` entries of ours): built once
        self._anchor = Adam(lr=1.0, betas=(float(betas[0]), float(betas[1])), eps=float(eps))

    def init(self, params: Tensor) -> State:
        B, n = params.shape
        dtype = self.head.weight.dtype
        state = {f"adam_{k}": v for k, v in self._anchor.init(params.to(dtype)).items()}
        for i, _ in enumerate(self.config["momentum_decays"]):
            state[f"m{i}"] = params.new_zeros(B, n, dtype=dtype)
        if isinstance(self.net, CoordinatewiseLSTM):
            state.update(self.net.init_state(B, n, params, dtype))
        return state

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        B, n = grads.shape
        cfg = self.config
        g = grads.to(self.head.weight.dtype)
        adam_state = {k[len("adam_"):]: v for k, v in state.items() if k.startswith("adam_")}
        direction, adam_state = self._anchor.update(g, adam_state, params.to(g.dtype))
        new_state: State = {f"adam_{k}": v for k, v in adam_state.items()}

        t = adam_state["step"].to(g.dtype)  # (B, 1), counting from 1 (the drop-in keeps it in
        # torch's scalar dtype, float32, whatever the parameters' dtype)
        beta2 = cfg["betas"][1]
        bias2 = (1 - beta2 ** t.to(torch.float64)).to(g.dtype)
        with torch.no_grad():  # features are inputs: constants for the meta-gradient
            scale = (adam_state["exp_avg_sq"] / bias2).sqrt() + cfg["eps"]
            features = []
            for i, decay in enumerate(cfg["momentum_decays"]):
                m = torch.lerp(state[f"m{i}"], g, 1 - decay)
                new_state[f"m{i}"] = m
                features.append(m / scale)
            features += [g / scale, direction]
            features += [torch.tanh(t / tau).expand(B, n) for tau in cfg["time_scales"]]
            x = torch.stack(features, dim=-1).clamp_(-10.0, 10.0).view(B * n, self.num_inputs)
        if isinstance(self.net, CoordinatewiseLSTM):
            h, core_state = self.net(x, state, B, n)
            new_state.update(core_state)
        else:
            h = self.net(x)
        out = self.head(h).view(B, n, 2)
        eta = cfg["lr"] * torch.exp(self.log_lr_delta)
        update = eta * (torch.exp(out[..., 0]) * direction
                        - cfg["correction_scale"] * torch.tanh(out[..., 1]))
        return update.to(grads.dtype), new_state

    @property
    def learning_rate(self) -> float:
        """The current learned ``eta``."""
        return self.config["lr"] * math.exp(float(self.log_lr_delta.detach()))
