"""The paper's learned optimizer: a coordinatewise LSTM (Andrychowicz et al., 2016).

    features = preprocess(grad)                       (see l2l.preprocessing)
    h        = CoordinatewiseLSTM(features)           num_layers x hidden_size
    update   = output_scale * Linear(h)

``num_layers = 0`` leaves only the linear map of the (preprocessed) gradient, which is what the
official code's known-answer test uses. The output layer starts at zero (``zero_head``), so an
untrained optimizer makes no update at all (see :func:`l2l.learned.core.zero_linear`).

Paper settings: quadratics ``preprocessing=none, output_scale=1``; MNIST ``log_sign``, ``p=10``,
``output_scale=0.1`` (official code: ``log_sign_clamped``, ``p=5``, ``0.01``).
"""

from __future__ import annotations

from torch import Tensor

from l2l.interface import State
from l2l.learned.base import LearnedOptimizer, check_int
from l2l.learned.core import CoordinatewiseLSTM, per_row, per_row_linear, zero_linear
from l2l.preprocessing import check_preprocessing, num_features, preprocess
from l2l.range_checks import check_range


class LSTMOptimizer(LearnedOptimizer):
    """Coordinatewise LSTM optimizer; an ``nn.Module`` whose parameters are meta-learned."""

    name = "lstm"
    reads_params = False
    summary = "the paper's coordinatewise 2x20 LSTM on log/sign-preprocessed gradients"
    sequence_form = True

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        preprocessing: str = "log_sign",
        preprocess_p: float = 10.0,
        output_scale: float = 0.1,
        forget_bias: float = 1.0,
        zero_head: bool = True,
    ) -> None:
        check_preprocessing(preprocessing)
        check_int("hidden_size", hidden_size, 1, 4096)
        check_int("num_layers", num_layers, 0, 16)
        check_range("preprocess_p", preprocess_p, 0.0, low_inclusive=False)
        check_range("output_scale", output_scale, 0.0, low_inclusive=False)
        super().__init__(hidden_size=int(hidden_size), num_layers=int(num_layers),
                         preprocessing=preprocessing, preprocess_p=float(preprocess_p),
                         output_scale=float(output_scale), forget_bias=float(forget_bias),
                         zero_head=bool(zero_head))
        self.core = CoordinatewiseLSTM(num_features(preprocessing), int(hidden_size),
                                       int(num_layers), float(forget_bias))
        self.head = zero_linear(self.core.output_size, 1, bool(zero_head))

    def init(self, params: Tensor) -> State:
        B, n = params.shape
        return self.core.init_state(B, n, params, self.head.weight.dtype)

    def update(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        x, state = self.features(grads, state)
        update, new_state = self.from_features(x, state)
        return update.to(grads.dtype), new_state

    def _step_(self, grads: Tensor, state: State, params: Tensor) -> None:
        """The frozen step in place, over coordinate chunks: the new ``h``/``c`` overwrite the
        state (no state-sized allocation per step: a 1M-parameter step allocated ~0.5 GB of
        fresh, page-faulted memory before). Same arithmetic as ``update``."""
        B, n = grads.shape
        N = B * n
        if not params.is_contiguous():
            return super()._step_(grads, state, params)
        flat, g, cfg = params.view(N), grads.reshape(N), self.config
        stepped = False
        for lo, hi, lstm_step in self.core.frozen_chunks_(state, N, grads.device):
            x = preprocess(g[lo:hi], cfg["preprocessing"], cfg["preprocess_p"])
            top = lstm_step(x.to(self.head.weight.dtype))
            flat[lo:hi] += (self.head(top).view(-1) * cfg["output_scale"]).to(grads.dtype)
            stepped = True
        if not stepped:
            super()._step_(grads, state, params)

    def features(self, grads: Tensor, state: State) -> tuple[Tensor, State]:
        cfg = self.config
        x = preprocess(grads, cfg["preprocessing"], cfg["preprocess_p"])
        return x.to(self.head.weight.dtype), state

    def from_features(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        B, n, F = x.shape
        h, new_state = self.core(x.reshape(B * n, F), state, B, n)
        if per_row(self.head.weight):  # a population's particles, one per row
            out = per_row_linear(self.head, h.view(B, n, -1)).view(B, n)
        else:
            out = self.head(h).view(B, n)
        return out * self.config["output_scale"], new_state

    def particle_axis(self) -> bool:
        return True  # the core and the head take per-row weights (l2l.learned.core.per_row)

    def sequence_updates(self, xs: Tensor, states: list[State]) -> Tensor:
        K, B, n, F = xs.shape
        h = self.core.sequence(xs.reshape(K, B * n, F), states)
        return self.head(h).view(K, B, n) * self.config["output_scale"]
