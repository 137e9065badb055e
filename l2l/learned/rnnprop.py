"""RNNprop (Lv, Chen & Zhang, 2017, arXiv:1703.03633): a coordinatewise LSTM on scale-free inputs.

The paper's LSTM sees (a log of) the raw gradient, so it learns step sizes for the gradient
scales of its training task and fails when they change (the paper's ReLU result). RNNprop feeds
Adam's normalised quantities instead, which do not change when the loss is rescaled::

    m_t = beta1 m_{t-1} + (1 - beta1) g_t          v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    m^ = m_t / (1 - beta1^t)                        v^ = v_t / (1 - beta2^t)
    x_t = ( m^ / (sqrt(v^) + eps),  g_t / (sqrt(v^) + eps) )        beta1 = beta2 = 0.95
    h_t = LSTM(ELU(Linear(x_t)))                    2 layers x 20 units
    update = -alpha * tanh(Linear(h_t))             alpha = 0.1

The output head starts at zero, so the untrained optimizer is the no-op (see ``zero_linear``).
Lv et al. also train on randomly rescaled problems (``meta.scale_range``) and rescale the
inputs; the bounded output makes the update size independent of the gradient scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from l2l.interface import State, safe_sqrt
from l2l.learned.base import LearnedOptimizer, check_int
from l2l.learned.core import CoordinatewiseLSTM, zero_linear
from l2l.range_checks import check_betas, check_range


class RNNprop(LearnedOptimizer):
    """RNNprop: LSTM over ``(m^/sqrt(v^), g/sqrt(v^))``, update ``-alpha * tanh(out)``."""

    name = "rnnprop"
    reads_params = False
    summary = "RNNprop: LSTM on Adam-normalised inputs m/sqrt(v), g/sqrt(v); bounded output"
    sequence_form = True

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        input_size: int = 20,
        alpha: float = 0.1,
        betas: tuple[float, float] = (0.95, 0.95),
        eps: float = 1e-8,
        forget_bias: float = 1.0,
        zero_head: bool = True,
    ) -> None:
        check_int("hidden_size", hidden_size, 1, 4096)
        check_int("num_layers", num_layers, 1, 16)
        check_int("input_size", input_size, 1, 4096)
        check_range("alpha", alpha, 0.0, low_inclusive=False)
        check_betas(tuple(betas))
        check_range("eps", eps, 0.0, low_inclusive=False)
        super().__init__(hidden_size=int(hidden_size), num_layers=int(num_layers),
                         input_size=int(input_size), alpha=float(alpha),
                         betas=[float(b) for b in betas], eps=float(eps),
                         forget_bias=float(forget_bias), zero_head=bool(zero_head))
        self.embed = nn.Linear(2, int(input_size))
        self.core = CoordinatewiseLSTM(int(input_size), int(hidden_size), int(num_layers),
                                       float(forget_bias))
        self.head = zero_linear(self.core.output_size, 1, bool(zero_head))

    def init(self, params: Tensor) -> State:
        B, n = params.shape
        dtype = self.head.weight.dtype
        state = self.core.init_state(B, n, params, dtype)
        state["step"] = params.new_zeros(B, 1, dtype=dtype)
        state["exp_avg"] = params.new_zeros(B, n, dtype=dtype)
        state["exp_avg_sq"] = params.new_zeros(B, n, dtype=dtype)
        return state

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        x, state = self.features(grads, state)
        update, new_state = self.from_features(x, state)
        return update.to(grads.dtype), new_state

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        """The frozen step in place: Adam's moments over all coordinates, then the embedding,
        the LSTM (chunked, overwriting ``h``/``c``) and the output per chunk of coordinates, as
        the paper's LSTM does. Same arithmetic as ``update``."""
        B, n = grads.shape
        N = B * n
        if not params.is_contiguous():
            return super()._step_(grads, state, params)
        x, moments = self.features(grads, state)
        x, flat, alpha = x.reshape(N, 2), params.view(N), self.config["alpha"]
        stepped = False
        for lo, hi, lstm_step in self.core.frozen_chunks_(state, N, grads.device):
            top = lstm_step(F.elu(self.embed(x[lo:hi])))
            flat[lo:hi] -= (alpha * torch.tanh(self.head(top).view(-1))).to(grads.dtype)
            stepped = True
        if not stepped:
            return super()._step_(grads, state, params)
        state.update(step=moments["step"], exp_avg=moments["exp_avg"],
                     exp_avg_sq=moments["exp_avg_sq"])

    def features(self, grads: Tensor, state: State) -> tuple[Tensor, State]:
        beta1, beta2 = self.config["betas"]
        g = grads.to(self.head.weight.dtype)
        step = state["step"] + 1
        m = torch.lerp(state["exp_avg"], g, 1 - beta1)
        v = torch.lerp(state["exp_avg_sq"], g * g, 1 - beta2)
        t = step.to(torch.float64)  # bias corrections in float64, as Adam's (step may be kept
        # in float32 by the drop-in, torch's scalar dtype)
        m_hat = m / (1 - beta1 ** t).to(g.dtype)
        denom = safe_sqrt(v / (1 - beta2 ** t).to(g.dtype)) + self.config["eps"]
        x = torch.stack([m_hat / denom, g / denom], dim=-1)
        return x, {**state, "step": step, "exp_avg": m, "exp_avg_sq": v}

    def from_features(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        B, n, _ = x.shape
        h, new_state = self.core(F.elu(self.embed(x.reshape(B * n, 2))), state, B, n)
        update = -self.config["alpha"] * torch.tanh(self.head(h).view(B, n))
        new_state.update(step=state["step"], exp_avg=state["exp_avg"],
                         exp_avg_sq=state["exp_avg_sq"])
        return update, new_state

    def sequence_updates(self, xs: Tensor, states: list[State]) -> Tensor:
        K, B, n, _ = xs.shape
        h = self.core.sequence(F.elu(self.embed(xs.reshape(K, B * n, 2))), states)
        return -self.config["alpha"] * torch.tanh(self.head(h).view(K, B, n))
